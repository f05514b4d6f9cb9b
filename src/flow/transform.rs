//! Pointwise monotone transforms C(v; θ) applied to the active sites of a coupling layer:
//! the [`PointwiseTransform`] trait and its implementations — [`Additive`], [`Affine`],
//! [`Z2Affine`], the rational-quadratic spline [`Rqs`], and [`ForwardMode`], which turns a
//! user's [`ScalarMap`] (the forward formula alone) into a full transform.

mod affine;
mod dual;
mod forward_mode;
mod rqs;

pub use crate::tape::{PointwiseTransform, Real, exp_f32, ln_f32};
pub use affine::{Additive, Affine, Z2Affine};
pub use dual::DualTransform;
pub use forward_mode::{ForwardMode, MAX_FORWARD_MODE_PARAMS, ScalarMap};
pub use rqs::{MAX_BINS, Rqs, SplineFloat};
