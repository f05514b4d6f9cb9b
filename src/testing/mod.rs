//! Public test helpers for users who add their own layers, transforms or kernels:
//! gradient checks against finite differences and forward mode, invertibility and
//! log-derivative checks for pointwise transforms, and proptest strategies.
//!
//! Every check returns `Result<(), String>` with a message naming the offending site or
//! component, so it can be used with `prop_assert!`, `?` or `assert!(...is_ok())`.

pub mod gradcheck;

pub use gradcheck::{
    GradCheck, assert_gradients_close, check_transform_gradients, finite_difference_gradient,
    random_loss_weights,
};
