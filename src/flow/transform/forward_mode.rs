//! Pointwise transforms from a forward formula alone: a user implements [`ScalarMap`]
//! (C(v; θ) written once, generically over the float type) and [`ForwardMode`] supplies
//! the log-derivative, the backward pass (by forward-mode dual numbers of the `autodiff`
//! crate, nested once for the mixed second derivatives of log C') and the inverse (by
//! safeguarded Newton iteration on the monotone map).
//!
//! It is also the oracle the built-in transforms are checked against.

use autodiff::{F, F1};
use num_traits::Float;

use super::{PointwiseTransform, Real};
use crate::error::{Error, Result};

/// A monotone scalar map C(v; θ) written once for any float type.
///
/// `eval` must be a smooth (almost everywhere), strictly monotone function of `v` for
/// every θ, built from `num_traits::Float` operations only, so that dual numbers can flow
/// through it. Constants are written `F::from(2.0).unwrap()` or built from `F::one()`.
///
/// ```
/// use latflow::flow::PointwiseTransform;
/// use latflow::flow::transform::{ForwardMode, ScalarMap};
/// use num_traits::Float;
///
/// /// C(v; θ) = v + e^θ v³, increasing for every θ.
/// struct Cubic;
///
/// impl ScalarMap for Cubic {
///     fn params_per_site(&self) -> usize {
///         1
///     }
///     fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
///         v + theta[0].exp() * v * v * v
///     }
/// }
///
/// let cubic = ForwardMode::new(Cubic)?;
/// let (mut y, mut ld) = ([0.0f64], [0.0f64]);
/// cubic.forward(&[2.0], &[0.0], &mut y, &mut ld);
/// assert!((y[0] - 10.0).abs() < 1e-12); // 2 + 8
/// assert!((ld[0] - 13f64.ln()).abs() < 1e-12); // C' = 1 + 3 v²
/// let (mut v, mut ld_inv) = ([0.0f64], [0.0f64]);
/// cubic.inverse(&y, &[0.0], &mut v, &mut ld_inv);
/// assert!((v[0] - 2.0).abs() < 1e-12);
/// # Ok::<(), latflow::Error>(())
/// ```
pub trait ScalarMap: Send + Sync {
    /// Parameters per site, k.
    fn params_per_site(&self) -> usize;

    /// C(v; θ) with `theta.len() == params_per_site()`.
    fn eval<T: Float>(&self, v: T, theta: &[T]) -> T;
}

/// Largest `params_per_site` a [`ForwardMode`] accepts (its per-site scratch is on the stack).
pub const MAX_FORWARD_MODE_PARAMS: usize = 96;

/// Second-order dual numbers: the outer derivative is ∂/∂v, the inner one a chosen
/// direction (v or one θ_j).
type F2 = F<F1, F1>;

/// A [`PointwiseTransform`] for every float type from a [`ScalarMap`], with all
/// derivatives by forward-mode automatic differentiation in f64.
///
/// - forward: one first-order dual evaluation per site gives C and C';
/// - backward: 1 + k second-order evaluations per site give C', C'', ∂C/∂θ_j and
///   ∂C'/∂θ_j, hence ∂L/∂v = g_y C' + g_ld C''/C' and
///   ∂L/∂θ_j = g_y ∂C/∂θ_j + g_ld (∂C'/∂θ_j)/C';
/// - inverse: bracket expansion from v = y (doubling steps) then Newton steps, falling back
///   to bisection whenever a step leaves the bracket, until the bracket or the step is below
///   `tolerance · (1 + |v|)` (default 1e-13) or after 200 iterations. If no bracket exists
///   (y outside the range of C) the result is NaN.
#[derive(Clone, Debug)]
pub struct ForwardMode<M> {
    map: M,
    tolerance: f64,
}

impl<M: ScalarMap> ForwardMode<M> {
    /// Default relative tolerance of the inverse.
    pub const DEFAULT_TOLERANCE: f64 = 1e-13;

    /// Wraps `map`; fails unless it has between 1 and [`MAX_FORWARD_MODE_PARAMS`] parameters
    /// per site (a map without parameters could not depend on the passive sites).
    pub fn new(map: M) -> Result<Self> {
        let k = map.params_per_site();
        if k == 0 || k > MAX_FORWARD_MODE_PARAMS {
            return Err(Error::param(
                "params_per_site",
                format!("forward mode supports 1 to {MAX_FORWARD_MODE_PARAMS}, got {k}"),
            ));
        }
        Ok(ForwardMode {
            map,
            tolerance: Self::DEFAULT_TOLERANCE,
        })
    }

    /// The same transform with another relative tolerance for the inverse (positive, at
    /// least 1e-15).
    pub fn with_tolerance(mut self, tolerance: f64) -> Result<Self> {
        if !(tolerance.is_finite() && tolerance >= 1e-15) {
            return Err(Error::param(
                "tolerance",
                format!("must be finite and at least 1e-15, got {tolerance}"),
            ));
        }
        self.tolerance = tolerance;
        Ok(self)
    }

    /// The wrapped map.
    pub fn map(&self) -> &M {
        &self.map
    }

    /// C(v; θ) and ∂C/∂v in f64; NaN if `theta` does not hold `params_per_site()` values.
    pub fn value_and_slope(&self, v: f64, theta: &[f64]) -> (f64, f64) {
        if theta.len() != self.map.params_per_site() {
            return (f64::NAN, f64::NAN);
        }
        let mut duals = [F1::cst(0.0); MAX_FORWARD_MODE_PARAMS];
        for (d, &t) in duals.iter_mut().zip(theta) {
            *d = F1::cst(t);
        }
        let c = self.map.eval(F1::var(v), &duals[..theta.len()]);
        (c.value(), c.deriv())
    }

    /// C⁻¹(y; θ) in f64 (see the type's documentation for the method and tolerance); NaN
    /// if `theta` does not hold `params_per_site()` values.
    pub fn solve(&self, y: f64, theta: &[f64]) -> f64 {
        let residual = |v: f64| {
            let (c, slope) = self.value_and_slope(v, theta);
            (c - y, slope)
        };
        let (f0, slope0) = residual(y);
        if f0 == 0.0 {
            return y;
        }
        if !f0.is_finite() {
            return f64::NAN;
        }
        // Walk downhill in |C − y|: for an increasing map the root lies below if f0 > 0.
        let direction = if (f0 > 0.0) == (slope0 >= 0.0) {
            -1.0
        } else {
            1.0
        };
        let (mut lo, mut f_lo) = (y, f0);
        let mut step = 1.0f64.max(y.abs() * 1e-3);
        let (mut hi, mut f_hi);
        loop {
            hi = y + direction * step;
            f_hi = residual(hi).0;
            if !hi.is_finite() || f_hi.is_nan() {
                return f64::NAN;
            }
            if (f_hi > 0.0) != (f_lo > 0.0) || f_hi == 0.0 {
                break;
            }
            lo = hi;
            f_lo = f_hi;
            step *= 2.0;
        }
        if f_hi == 0.0 {
            return hi;
        }
        // Safeguarded Newton on the bracket [lo, hi] (in either order).
        let mut x = if f_lo.abs() < f_hi.abs() { lo } else { hi };
        for _ in 0..200 {
            let (fx, slope) = residual(x);
            if fx == 0.0 {
                return x;
            }
            if (fx > 0.0) == (f_lo > 0.0) {
                lo = x;
                f_lo = fx;
            } else {
                hi = x;
            }
            let newton = x - fx / slope;
            let inside = (newton - lo) * (newton - hi) < 0.0;
            let next = if inside && newton.is_finite() {
                newton
            } else {
                0.5 * (lo + hi)
            };
            let converged = (next - x).abs() <= self.tolerance * (1.0 + next.abs())
                || (hi - lo).abs() <= self.tolerance * (1.0 + next.abs());
            x = next;
            if converged {
                break;
            }
        }
        x
    }

    /// ∂L/∂v and ∂L/∂θ for one site (written into `gtheta`, overwriting it).
    fn site_gradients(&self, v: f64, theta: &[f64], gy: f64, gld: f64, gtheta: &mut [f64]) -> f64 {
        let k = theta.len();
        let mut duals = [F2::cst(F1::cst(0.0)); MAX_FORWARD_MODE_PARAMS];
        for (d, &t) in duals.iter_mut().zip(theta) {
            *d = F2::cst(F1::cst(t));
        }
        let outer_v = |inner: f64| F2::new(F1::new(v, inner), F1::cst(1.0));
        // Inner direction v: C' and C''.
        let c = self.map.eval(outer_v(1.0), &duals[..k]);
        let slope = c.dx.x;
        let curvature = c.dx.dx;
        let gv = gy * slope + gld * curvature / slope;
        for j in 0..k {
            duals[j] = F2::cst(F1::var(theta[j]));
            let c = self.map.eval(outer_v(0.0), &duals[..k]);
            duals[j] = F2::cst(F1::cst(theta[j]));
            gtheta[j] = gy * c.x.dx + gld * c.dx.dx / slope;
        }
        gv
    }
}

#[inline]
fn to_f64<T: Real>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

#[inline]
fn from_f64<T: Real>(x: f64) -> T {
    T::from_f64(x).unwrap_or_else(T::nan)
}

/// Copies one site's parameters into f64 stack storage.
#[inline]
fn site_params<'a, T: Real>(theta: &[T], buf: &'a mut [f64; MAX_FORWARD_MODE_PARAMS]) -> &'a [f64] {
    for (b, &t) in buf.iter_mut().zip(theta) {
        *b = to_f64(t);
    }
    &buf[..theta.len()]
}

impl<T: Real, M: ScalarMap> PointwiseTransform<T> for ForwardMode<M> {
    fn params_per_site(&self) -> usize {
        self.map.params_per_site()
    }

    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
        let k = self.map.params_per_site();
        debug_assert_eq!(theta.len(), v.len() * k);
        let mut buf = [0.0; MAX_FORWARD_MODE_PARAMS];
        for (((yi, ldi), &vi), p) in y
            .iter_mut()
            .zip(ld.iter_mut())
            .zip(v)
            .zip(theta.chunks_exact(k))
        {
            let (c, slope) = self.value_and_slope(to_f64(vi), site_params(p, &mut buf));
            *yi = from_f64(c);
            *ldi = from_f64(slope.abs().ln());
        }
    }

    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
        let k = self.map.params_per_site();
        debug_assert_eq!(theta.len(), y.len() * k);
        let mut buf = [0.0; MAX_FORWARD_MODE_PARAMS];
        for (((vi, ldi), &yi), p) in v
            .iter_mut()
            .zip(ld.iter_mut())
            .zip(y)
            .zip(theta.chunks_exact(k))
        {
            let p = site_params(p, &mut buf);
            let x = self.solve(to_f64(yi), p);
            let (_, slope) = self.value_and_slope(x, p);
            *vi = from_f64(x);
            *ldi = from_f64(-slope.abs().ln());
        }
    }

    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        let k = self.map.params_per_site();
        debug_assert_eq!(theta.len(), v.len() * k);
        debug_assert_eq!(gtheta.len(), theta.len());
        let mut buf = [0.0; MAX_FORWARD_MODE_PARAMS];
        let mut g = [0.0; MAX_FORWARD_MODE_PARAMS];
        for ((((gvi, gt), &vi), p), (&gyi, &gldi)) in gv
            .iter_mut()
            .zip(gtheta.chunks_exact_mut(k))
            .zip(v)
            .zip(theta.chunks_exact(k))
            .zip(gy.iter().zip(gld))
        {
            let p = site_params(p, &mut buf);
            let dv = self.site_gradients(to_f64(vi), p, to_f64(gyi), to_f64(gldi), &mut g[..k]);
            *gvi = *gvi + from_f64(dv);
            for (gtj, &gj) in gt.iter_mut().zip(&g[..k]) {
                *gtj = *gtj + from_f64(gj);
            }
        }
    }
}
