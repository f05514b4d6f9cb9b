//! Public test helpers for users who add their own actions, layers, transforms or kernels:
//! consistency checks of an action (force against forward mode or finite differences,
//! `delta_local`, Z2 symmetry), detailed-balance checks for kernels,
//! gradient checks against finite differences and forward mode, invertibility,
//! log-derivative and finiteness checks for pointwise transforms, flow-level checks
//! (invertibility, log-determinant against the exact forward-mode Jacobian or a
//! finite-difference one, Z2 and translation equivariance), proptest strategies, and
//! scratch folders removed when dropped ([`TempDir`]).
//!
//! Checks return `Result<(), String>` (or, for actions, a typed failure) naming the
//! offending site or component, so they can be used with `prop_assert!`, `?` or
//! `assert!(...is_ok())`. Each documents the tolerance it applies.

pub mod action;
pub mod alloc;
pub mod balance;
pub mod flow;
pub mod gradcheck;
#[cfg(feature = "proptest")]
pub mod strategies;
mod temp;
pub mod transform;

pub use action::{
    ActionCheckFailure, ActionCheckOptions, ActionCheckReport, ActionFormula, DualAction,
    ForceReference, check_action,
};
pub use flow::{
    FlowJacobian, LOG_DET_RTOL_F32, LOG_DET_RTOL_F64, check_flow_invertible,
    check_flow_log_det_bruteforce, check_flow_log_det_exact, check_flow_translation_equivariant,
    check_flow_z2_equivariant, check_log_det_against_jacobian, flow_jacobian,
    forward_mode_jacobian, jacobian_log_abs_det, log_abs_det, translate,
};
pub use gradcheck::{
    GradCheck, assert_gradients_close, check_transform_gradients, finite_difference_gradient,
    random_loss_weights,
};
pub use temp::TempDir;
pub use transform::{
    check_saved_backward, check_transform_finite, check_transform_invertible,
    check_transform_log_derivative, check_transform_matches_reference,
};

/// Converts a slice to f32, to run an f64 test case through the f32 code path.
pub fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&x| x as f32).collect()
}
