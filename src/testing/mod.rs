//! Public test helpers for users who add their own layers, transforms or kernels:
//! detailed-balance checks for kernels,
//! gradient checks against finite differences and forward mode, invertibility,
//! log-derivative and finiteness checks for pointwise transforms, flow-level checks
//! (invertibility, brute-force log-determinant, Z2 equivariance) and proptest strategies.
//!
//! Every check returns `Result<(), String>` with a message naming the offending site or
//! component, so it can be used with `prop_assert!`, `?` or `assert!(...is_ok())`. Each
//! documents the tolerance it applies.

pub mod alloc;
pub mod balance;
pub mod flow;
pub mod gradcheck;
#[cfg(feature = "proptest")]
pub mod strategies;
pub mod transform;

pub use flow::{
    check_flow_invertible, check_flow_log_det_bruteforce, check_flow_z2_equivariant, log_abs_det,
};
pub use gradcheck::{
    GradCheck, assert_gradients_close, check_transform_gradients, finite_difference_gradient,
    random_loss_weights,
};
pub use transform::{
    check_saved_backward, check_transform_finite, check_transform_invertible,
    check_transform_log_derivative, check_transform_matches_reference,
};

/// Converts a slice to f32, to run an f64 test case through the f32 code path.
pub fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&x| x as f32).collect()
}
