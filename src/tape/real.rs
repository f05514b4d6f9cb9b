//! The float trait the tape, the networks and the flows are generic over.

use super::exp_f32;

/// The float types network math runs in (f32 in production, f64 for gradient checks, and
/// [`Dual`](crate::tape::Dual) numbers for exact Jacobians). Sealed: implemented for these
/// three types only.
pub trait Real:
    crate::sealed::Float
    + num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::fmt::Debug
    + std::iter::Sum
    + Send
    + Sync
    + 'static
{
    /// eˣ as the flows' elementwise maps compute it: the branch-free [`exp_f32`] in f32
    /// (within about 2 ulp; loops over it vectorise), the standard library's in f64.
    fn exp_map(self) -> Self;

    /// tanh as the networks compute it: the branch-free
    /// [`tanh_f32`](crate::tape::tanh_f32) in f32, the standard library's in f64.
    fn tanh_map(self) -> Self;
}

impl crate::sealed::Float for f32 {}
impl crate::sealed::Float for f64 {}

impl Real for f32 {
    #[inline]
    fn exp_map(self) -> f32 {
        exp_f32(self)
    }
    #[inline]
    fn tanh_map(self) -> f32 {
        crate::tape::tanh_f32(self)
    }
}

impl Real for f64 {
    #[inline]
    fn exp_map(self) -> f64 {
        self.exp()
    }
    #[inline]
    fn tanh_map(self) -> f64 {
        self.tanh()
    }
}
