//! The shift-and-scale family of pointwise transforms: [`Additive`] (shift only),
//! [`Affine`] (shift and log-scale) and [`Z2Affine`] (shift and an even log-scale |s|),
//! each generic over the float type with a hand-derived backward pass.

use serde::{Deserialize, Serialize};

use super::{PointwiseTransform, Real};

/// Checks the slice lengths shared by every method of a transform with `k` parameters per
/// site (an invariant of the calling layer, checked in debug builds).
#[inline]
fn debug_check_lengths(n: usize, theta: usize, k: usize, others: &[usize]) {
    debug_assert_eq!(theta, n * k, "theta must hold {k} parameters per site");
    debug_assert!(
        others.iter().all(|&len| len == n),
        "per-site slices must all have the same length"
    );
}

/// The additive (NICE) transform C(v; t) = v − t, with log-derivative 0.
///
/// One parameter per site: `theta = [t]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Additive;

impl<T: Real> PointwiseTransform<T> for Additive {
    fn params_per_site(&self) -> usize {
        1
    }

    fn log_derivative_depends_on_input(&self) -> bool {
        false
    }

    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
        debug_check_lengths(v.len(), theta.len(), 1, &[y.len(), ld.len()]);
        for ((yi, ldi), (&vi, &ti)) in y.iter_mut().zip(ld.iter_mut()).zip(v.iter().zip(theta)) {
            *yi = vi - ti;
            *ldi = T::zero();
        }
    }

    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
        debug_check_lengths(y.len(), theta.len(), 1, &[v.len(), ld.len()]);
        for ((vi, ldi), (&yi, &ti)) in v.iter_mut().zip(ld.iter_mut()).zip(y.iter().zip(theta)) {
            *vi = yi + ti;
            *ldi = T::zero();
        }
    }

    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        debug_check_lengths(v.len(), theta.len(), 1, &[gy.len(), gld.len(), gv.len()]);
        debug_assert_eq!(gtheta.len(), theta.len());
        for ((gvi, gti), &gyi) in gv.iter_mut().zip(gtheta.iter_mut()).zip(gy) {
            *gvi = *gvi + gyi;
            *gti = *gti - gyi;
        }
    }
}

/// The affine (Real NVP) transform C(v; s, t) = (v − t) e^{−s}, with log-derivative −s.
///
/// Two parameters per site: `theta = [s, t]` (log-scale first, then shift).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affine;

/// The Z2-equivariant affine transform C(v; s, t) = (v − t) e^{−|s|}, with log-derivative
/// −|s| (docs/flows.md#z2-equivariant-affine).
///
/// Two parameters per site: `theta = [s, t]`. With s and t from bias-free networks with an
/// odd activation, t is odd and |s| even in the passive sites, so the layer commutes with
/// φ → −φ. At s = 0, where |s| has a kink, the backward pass uses the subgradient 0 (the
/// midpoint of [−1, 1], the one that is itself odd in s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Z2Affine;

/// Shared body of [`Affine`] and [`Z2Affine`]: the log-scale used is `scale(s)`, and its
/// derivative `scale_slope(s)` enters the backward pass.
trait LogScale: Send + Sync {
    fn scale<T: Real>(s: T) -> T;
    fn scale_slope<T: Real>(s: T) -> T;
}

impl LogScale for Affine {
    #[inline]
    fn scale<T: Real>(s: T) -> T {
        s
    }
    #[inline]
    fn scale_slope<T: Real>(_s: T) -> T {
        T::one()
    }
}

impl LogScale for Z2Affine {
    #[inline]
    fn scale<T: Real>(s: T) -> T {
        s.abs()
    }
    #[inline]
    fn scale_slope<T: Real>(s: T) -> T {
        if s > T::zero() {
            T::one()
        } else if s < T::zero() {
            -T::one()
        } else {
            T::zero()
        }
    }
}

macro_rules! impl_shift_scale {
    ($ty:ty) => {
        impl<T: Real> PointwiseTransform<T> for $ty {
            fn params_per_site(&self) -> usize {
                2
            }

            fn log_derivative_depends_on_input(&self) -> bool {
                false
            }

            fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
                debug_check_lengths(v.len(), theta.len(), 2, &[y.len(), ld.len()]);
                for (((yi, ldi), &vi), p) in y
                    .iter_mut()
                    .zip(ld.iter_mut())
                    .zip(v)
                    .zip(theta.chunks_exact(2))
                {
                    let sigma = <$ty as LogScale>::scale(p[0]);
                    *yi = (vi - p[1]) * (-sigma).exp_map();
                    *ldi = -sigma;
                }
            }

            fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
                debug_check_lengths(y.len(), theta.len(), 2, &[v.len(), ld.len()]);
                for (((vi, ldi), &yi), p) in v
                    .iter_mut()
                    .zip(ld.iter_mut())
                    .zip(y)
                    .zip(theta.chunks_exact(2))
                {
                    let sigma = <$ty as LogScale>::scale(p[0]);
                    *vi = yi * sigma.exp_map() + p[1];
                    *ldi = sigma;
                }
            }

            // With σ = scale(s) and y = (v − t) e^{−σ}:
            //   ∂y/∂v = e^{−σ}, ∂y/∂t = −e^{−σ}, ∂y/∂σ = −y, ∂ld/∂σ = −1, ∂σ/∂s = scale_slope(s).
            fn backward(
                &self,
                v: &[T],
                theta: &[T],
                gy: &[T],
                gld: &[T],
                gv: &mut [T],
                gtheta: &mut [T],
            ) {
                debug_check_lengths(v.len(), theta.len(), 2, &[gy.len(), gld.len(), gv.len()]);
                debug_assert_eq!(gtheta.len(), theta.len());
                for ((((gvi, g), &vi), p), (&gyi, &gldi)) in gv
                    .iter_mut()
                    .zip(gtheta.chunks_exact_mut(2))
                    .zip(v)
                    .zip(theta.chunks_exact(2))
                    .zip(gy.iter().zip(gld))
                {
                    let sigma = <$ty as LogScale>::scale(p[0]);
                    let e = (-sigma).exp_map();
                    let yi = (vi - p[1]) * e;
                    let g_sigma = -(gyi * yi) - gldi;
                    *gvi = *gvi + gyi * e;
                    g[0] = g[0] + g_sigma * <$ty as LogScale>::scale_slope(p[0]);
                    g[1] = g[1] - gyi * e;
                }
            }
        }
    };
}

impl_shift_scale!(Affine);
impl_shift_scale!(Z2Affine);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_values_by_hand() {
        // s = ln 2, t = 1: C(3) = (3 − 1)/2 = 1, ld = −ln 2.
        let (mut y, mut ld) = ([0.0f64], [0.0f64]);
        Affine.forward(&[3.0], &[2f64.ln(), 1.0], &mut y, &mut ld);
        assert!((y[0] - 1.0).abs() < 1e-15);
        assert!((ld[0] + 2f64.ln()).abs() < 1e-15);
        // Z2Affine with s = −ln 2 scales by e^{−|s|} = 1/2 as well.
        Z2Affine.forward(&[3.0], &[-(2f64.ln()), 1.0], &mut y, &mut ld);
        assert!((y[0] - 1.0).abs() < 1e-15);
        assert!((ld[0] + 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn z2_affine_subgradient_at_zero_is_zero() {
        let mut gv = [0.0f64];
        let mut gtheta = [0.0f64; 2];
        Z2Affine.backward(&[1.5], &[0.0, 0.5], &[1.0], &[1.0], &mut gv, &mut gtheta);
        assert_eq!(gtheta[0], 0.0);
        assert_eq!(gtheta[1], -1.0);
        assert_eq!(gv[0], 1.0);
    }
}
