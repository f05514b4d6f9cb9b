//! [`Dual`]: a forward-mode dual number (an f64 value and one f64 tangent, around the
//! `autodiff` crate's `F1`) that implements the crate's float trait, so that the tape, the
//! networks and whole flows run on it and return exact directional derivatives along with
//! their values.
//!
//! Comparisons, classification (`is_nan`, `is_finite`, …) and conversions to primitive
//! numbers look at the value alone; arithmetic and the elementary functions carry the
//! tangent by the chain rule. Rounding functions (`floor`, `ceil`, `round`, `trunc`,
//! `signum`) have zero tangent.
//!
//! What carries tangents through a flow (`FlowModel::forward_with::<Dual>`, `forward_in`,
//! `build_forward`, `inverse_with`): φ (and z on the way back) in full, through networks,
//! coupling layers (pointwise transforms via
//! [`DualTransform`](crate::flow::transform::DualTransform), built from each transform's f64
//! version) and global scale layers, with respect to whatever was seeded: latent values,
//! parameters or both. The log-dets that `forward_with`, `forward_in` and the inverse
//! return are f64 values without tangents; the tangent of the forward log-det is the
//! log-det variable of [`FlowModel::build_forward`](crate::flow::FlowModel::build_forward) on a
//! `Tape<Dual>`. A backward pass on a `Tape<Dual>` gives gradient values, but pointwise
//! transforms give them NaN tangents.
//!
//! ```
//! use latflow::tape::Dual;
//! use num_traits::Float;
//!
//! // d/dx (x² sin x) at x = 1.5.
//! let x = Dual::variable(1.5);
//! let y = x * x * x.sin();
//! let exact = 2.0 * 1.5 * 1.5f64.sin() + 1.5 * 1.5 * 1.5f64.cos();
//! assert!((y.tangent() - exact).abs() < 1e-14);
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::num::FpCategory;
use std::ops::{
    Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Rem, RemAssign, Sub, SubAssign,
};

use autodiff::F1;
use num_traits::{Float, FromPrimitive, Num, NumCast, One, ToPrimitive, Zero};

use crate::tape::Real;

/// A dual number x + ẋ·ε (ε² = 0): the value `x` of a quantity and its derivative `ẋ`
/// along one direction, both f64.
///
/// Seeding inputs with tangents (e.g. ż = e_j) and running a computation on `Dual` gives the
/// computation's value and its exact Jacobian-vector product (∂φ/∂z_j) in one pass.
#[derive(Clone, Copy, Default)]
pub struct Dual(F1);

impl Dual {
    /// The dual number with value `value` and tangent `tangent`.
    #[inline]
    pub fn new(value: f64, tangent: f64) -> Self {
        Dual(F1::new(value, tangent))
    }

    /// A constant: tangent 0.
    #[inline]
    pub fn constant(value: f64) -> Self {
        Dual::new(value, 0.0)
    }

    /// The variable being differentiated by: tangent 1.
    #[inline]
    pub fn variable(value: f64) -> Self {
        Dual::new(value, 1.0)
    }

    /// The value.
    #[inline]
    pub fn value(self) -> f64 {
        self.0.x
    }

    /// The tangent (directional derivative).
    #[inline]
    pub fn tangent(self) -> f64 {
        self.0.dx
    }
}

impl From<F1> for Dual {
    fn from(x: F1) -> Self {
        Dual(x)
    }
}

impl From<Dual> for F1 {
    fn from(x: Dual) -> Self {
        x.0
    }
}

impl fmt::Debug for Dual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} + {:?}ε", self.value(), self.tangent())
    }
}

impl fmt::Display for Dual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {}ε", self.value(), self.tangent())
    }
}

impl PartialEq for Dual {
    /// Compares values only.
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialOrd for Dual {
    /// Orders by value only.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.value().partial_cmp(&other.value())
    }
}

macro_rules! binary_ops {
    ($($trait:ident $method:ident $assign_trait:ident $assign_method:ident),*) => {$(
        impl $trait for Dual {
            type Output = Dual;
            #[inline]
            fn $method(self, rhs: Dual) -> Dual {
                Dual(self.0.$method(rhs.0))
            }
        }
        impl $assign_trait for Dual {
            #[inline]
            fn $assign_method(&mut self, rhs: Dual) {
                *self = Dual(self.0.$method(rhs.0));
            }
        }
    )*};
}

binary_ops!(
    Add add AddAssign add_assign,
    Sub sub SubAssign sub_assign,
    Mul mul MulAssign mul_assign,
    Div div DivAssign div_assign,
    Rem rem RemAssign rem_assign
);

impl Neg for Dual {
    type Output = Dual;
    #[inline]
    fn neg(self) -> Dual {
        Dual(-self.0)
    }
}

impl Zero for Dual {
    #[inline]
    fn zero() -> Self {
        Dual::constant(0.0)
    }
    #[inline]
    fn is_zero(&self) -> bool {
        self.value() == 0.0
    }
}

impl One for Dual {
    #[inline]
    fn one() -> Self {
        Dual::constant(1.0)
    }
}

impl Num for Dual {
    type FromStrRadixErr = <f64 as Num>::FromStrRadixErr;
    fn from_str_radix(src: &str, radix: u32) -> Result<Self, Self::FromStrRadixErr> {
        f64::from_str_radix(src, radix).map(Dual::constant)
    }
}

impl ToPrimitive for Dual {
    fn to_i64(&self) -> Option<i64> {
        self.value().to_i64()
    }
    fn to_u64(&self) -> Option<u64> {
        self.value().to_u64()
    }
    fn to_i128(&self) -> Option<i128> {
        self.value().to_i128()
    }
    fn to_u128(&self) -> Option<u128> {
        self.value().to_u128()
    }
    fn to_f32(&self) -> Option<f32> {
        self.value().to_f32()
    }
    fn to_f64(&self) -> Option<f64> {
        Some(self.value())
    }
}

impl NumCast for Dual {
    fn from<N: ToPrimitive>(n: N) -> Option<Self> {
        n.to_f64().map(Dual::constant)
    }
}

impl FromPrimitive for Dual {
    fn from_i64(n: i64) -> Option<Self> {
        f64::from_i64(n).map(Dual::constant)
    }
    fn from_u64(n: u64) -> Option<Self> {
        f64::from_u64(n).map(Dual::constant)
    }
    fn from_i128(n: i128) -> Option<Self> {
        f64::from_i128(n).map(Dual::constant)
    }
    fn from_u128(n: u128) -> Option<Self> {
        f64::from_u128(n).map(Dual::constant)
    }
    fn from_f32(n: f32) -> Option<Self> {
        Some(Dual::constant(n.into()))
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(Dual::constant(n))
    }
}

impl std::iter::Sum for Dual {
    fn sum<I: Iterator<Item = Dual>>(iter: I) -> Self {
        iter.fold(Dual::zero(), |a, b| a + b)
    }
}

impl<'a> std::iter::Sum<&'a Dual> for Dual {
    fn sum<I: Iterator<Item = &'a Dual>>(iter: I) -> Self {
        iter.fold(Dual::zero(), |a, &b| a + b)
    }
}

/// `fn name(self) -> Self` methods of `Float` taken from `F1`.
macro_rules! unary_from_f1 {
    ($($name:ident),*) => {$(
        #[inline]
        fn $name(self) -> Self {
            Dual(Float::$name(self.0))
        }
    )*};
}

/// `fn name(self, other: Self) -> Self` methods of `Float` taken from `F1`.
macro_rules! binary_from_f1 {
    ($($name:ident),*) => {$(
        #[inline]
        fn $name(self, other: Self) -> Self {
            Dual(Float::$name(self.0, other.0))
        }
    )*};
}

/// Constants of `Float` (tangent 0).
macro_rules! constants {
    ($($name:ident),*) => {$(
        #[inline]
        fn $name() -> Self {
            Dual::constant(f64::$name())
        }
    )*};
}

/// `fn name(self) -> Self` with zero tangent (piecewise-constant functions).
macro_rules! piecewise_constant {
    ($($name:ident),*) => {$(
        #[inline]
        fn $name(self) -> Self {
            Dual::constant(self.value().$name())
        }
    )*};
}

impl Float for Dual {
    constants!(
        nan,
        infinity,
        neg_infinity,
        neg_zero,
        min_value,
        min_positive_value,
        max_value,
        epsilon
    );
    piecewise_constant!(floor, ceil, round, trunc, signum);
    unary_from_f1!(
        fract, abs, recip, sqrt, exp, exp2, ln, log2, log10, cbrt, sin, cos, tan, asin, acos, atan,
        exp_m1, ln_1p, sinh, cosh, tanh, asinh, acosh, atanh, to_degrees, to_radians
    );
    binary_from_f1!(powf, log, abs_sub, hypot, atan2);

    #[inline]
    fn is_nan(self) -> bool {
        self.value().is_nan()
    }
    #[inline]
    fn is_infinite(self) -> bool {
        self.value().is_infinite()
    }
    #[inline]
    fn is_finite(self) -> bool {
        self.value().is_finite()
    }
    #[inline]
    fn is_normal(self) -> bool {
        self.value().is_normal()
    }
    #[inline]
    fn classify(self) -> FpCategory {
        self.value().classify()
    }
    #[inline]
    fn is_sign_positive(self) -> bool {
        self.value().is_sign_positive()
    }
    #[inline]
    fn is_sign_negative(self) -> bool {
        self.value().is_sign_negative()
    }
    #[inline]
    fn mul_add(self, a: Self, b: Self) -> Self {
        Dual(Float::mul_add(self.0, a.0, b.0))
    }
    #[inline]
    fn powi(self, n: i32) -> Self {
        Dual(Float::powi(self.0, n))
    }
    /// The larger value with its tangent; a NaN operand loses to a number, as for f64.
    #[inline]
    fn max(self, other: Self) -> Self {
        if self.value().is_nan() || other.value() > self.value() {
            other
        } else {
            self
        }
    }
    /// The smaller value with its tangent; a NaN operand loses to a number, as for f64.
    #[inline]
    fn min(self, other: Self) -> Self {
        if self.value().is_nan() || other.value() < self.value() {
            other
        } else {
            self
        }
    }
    #[inline]
    fn sin_cos(self) -> (Self, Self) {
        (self.sin(), self.cos())
    }
    #[inline]
    fn integer_decode(self) -> (u64, i16, i8) {
        self.value().integer_decode()
    }
}

impl ndarray::ScalarOperand for Dual {}

impl crate::sealed::Float for Dual {}

impl Real for Dual {
    #[inline]
    fn exp_map(self) -> Self {
        self.exp()
    }
    #[inline]
    fn tanh_map(self) -> Self {
        self.tanh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementary_functions_carry_their_derivatives() {
        let x = 0.7;
        type Case = (fn(Dual) -> Dual, f64, f64);
        let cases: [Case; 6] = [
            (|d| d.exp(), x.exp(), x.exp()),
            (|d| d.ln(), x.ln(), 1.0 / x),
            (|d| d.tanh(), x.tanh(), 1.0 - x.tanh().powi(2)),
            (|d| d.sqrt(), x.sqrt(), 0.5 / x.sqrt()),
            (|d| d.powi(3), x.powi(3), 3.0 * x * x),
            (|d| d.recip(), 1.0 / x, -1.0 / (x * x)),
        ];
        for (f, value, slope) in cases {
            let y = f(Dual::variable(x));
            assert!((y.value() - value).abs() < 1e-15, "{y:?}");
            assert!((y.tangent() - slope).abs() < 1e-14, "{y:?} vs {slope}");
        }
        let floor = Dual::variable(2.5).floor();
        assert_eq!((floor.value(), floor.tangent()), (2.0, 0.0));
        let m = Dual::new(f64::NAN, 1.0).max(Dual::new(1.0, 2.0));
        assert_eq!((m.value(), m.tangent()), (1.0, 2.0));
    }
}
