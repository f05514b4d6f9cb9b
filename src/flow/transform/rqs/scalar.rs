//! The per-site spline kernel, generic over [`SplineFloat`]: knots and segments in f64,
//! exponentials and logarithms at the precision of the slices.

use super::segment::Segment;
use super::{Batch, BinKernel, Rqs, SplineFloat};

/// softplus(x) = ln(1 + eˣ), without overflow, at the precision of `T`.
#[inline]
pub(super) fn softplus<T: SplineFloat>(x: f64) -> f64 {
    x.max(0.0) + T::ln_1p_wide(T::exp_wide(-x.abs()))
}

/// σ(x) = 1/(1 + e⁻ˣ), the derivative of softplus, at the precision of `T`.
#[inline]
pub(super) fn sigmoid<T: SplineFloat>(x: f64) -> f64 {
    let e = T::exp_wide(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// One axis (widths or heights) of one site with `bins` bins, held in arrays of capacity C
/// (C = `bins` where the bin count is a compile-time constant): the softmax p of the raw
/// numbers, bin sizes `min + scale · p` and lower knots laid end to end from −a.
struct Axis<const C: usize> {
    bins: usize,
    p: [f64; C],
    lower: [f64; C],
    size: [f64; C],
    scale: f64,
}

impl<const C: usize> Axis<C> {
    #[inline(always)]
    fn new<T: SplineFloat>(raw: &[T], bins: usize, min: f64, bound: f64) -> Self {
        // The exponentials in T, over a fixed-size array (vectorised), then widened.
        let mut e = [T::zero(); C];
        let e = &mut e[..bins];
        e.copy_from_slice(&raw[..bins]);
        let max = e.iter().fold(e[0], |m, &r| m.max(r));
        for ei in e.iter_mut() {
            *ei = (*ei - max).exp_native();
        }
        let mut p = [0.0; C];
        let mut sum = 0.0;
        for (pi, &ei) in p[..bins].iter_mut().zip(&*e) {
            *pi = ei.widen();
            sum += *pi;
        }
        let inv = 1.0 / sum;
        let scale = 2.0 * bound - bins as f64 * min;
        let mut size = [0.0; C];
        for (si, pi) in size[..bins].iter_mut().zip(p[..bins].iter_mut()) {
            *pi *= inv;
            *si = min + scale * *pi;
        }
        let mut lower = [0.0; C];
        let mut knot = -bound;
        for (li, &si) in lower[..bins].iter_mut().zip(&size[..bins]) {
            *li = knot;
            knot += si;
        }
        Axis {
            bins,
            p,
            lower,
            size,
            scale,
        }
    }

    /// The bin containing `x` ∈ (−a, a): the number of interior knots at or below x.
    #[inline(always)]
    fn locate(&self, x: f64) -> usize {
        self.lower[1..self.bins]
            .iter()
            .map(|&k| (k <= x) as usize)
            .sum()
    }

    /// Adds to `graw` the gradient through this axis given ∂L/∂(lower knot of bin l) and
    /// ∂L/∂(size of bin l): the bin sizes' gradient is g_j = g_knot [j < l] + g_size [j = l],
    /// and softmax backprop gives scale · p_j (g_j − Σ_i g_i p_i).
    #[inline(always)]
    fn backward<T: SplineFloat>(&self, l: usize, g_knot: f64, g_size: f64, graw: &mut [T]) {
        let bins = self.bins;
        let mut g = [0.0; C];
        let mut mean = 0.0;
        for (j, (gj, &pj)) in g[..bins].iter_mut().zip(&self.p[..bins]).enumerate() {
            *gj = if j < l {
                g_knot
            } else if j == l {
                g_size
            } else {
                0.0
            };
            mean += *gj * pj;
        }
        for ((out, &gj), &pj) in graw[..bins].iter_mut().zip(&g[..bins]).zip(&self.p[..bins]) {
            *out = T::narrow(out.widen() + self.scale * pj * (gj - mean));
        }
    }
}

/// The spline of one site (arrays of capacity C): both axes and the raw knot derivatives.
struct SiteSpline<'a, T, const C: usize> {
    xs: Axis<C>,
    ys: Axis<C>,
    raw_derivatives: &'a [T],
    min_derivative: f64,
}

impl<'a, T: SplineFloat, const C: usize> SiteSpline<'a, T, C> {
    #[inline(always)]
    fn new(rqs: &Rqs, bins: usize, raw: &'a [T]) -> Self {
        SiteSpline {
            xs: Axis::new(&raw[..bins], bins, rqs.min_bin_width, rqs.bound),
            ys: Axis::new(&raw[bins..2 * bins], bins, rqs.min_bin_height, rqs.bound),
            raw_derivatives: &raw[2 * bins..3 * bins - 1],
            min_derivative: rqs.min_derivative,
        }
    }

    /// Knot derivative k (1 at both ends).
    #[inline(always)]
    fn derivative(&self, k: usize) -> f64 {
        if k == 0 || k == self.xs.bins {
            1.0
        } else {
            softplus::<T>(self.raw_derivatives[k - 1].widen()) + self.min_derivative
        }
    }

    /// The segment of bin `l`.
    #[inline(always)]
    fn segment(&self, l: usize) -> Segment<f64> {
        let l = l.min(self.xs.bins - 1);
        let (w, h) = (self.xs.size[l], self.ys.size[l]);
        Segment {
            x0: self.xs.lower[l],
            w,
            y0: self.ys.lower[l],
            h,
            s: h / w,
            d0: self.derivative(l),
            d1: self.derivative(l + 1),
        }
    }
}

/// One site at a time, knots in f64 (any [`SplineFloat`]).
pub(super) struct PerSite;

impl<T: SplineFloat> BinKernel<T> for PerSite {
    #[inline(always)]
    fn run<const C: usize>(rqs: &Rqs, bins: usize, batch: Batch<'_, T>) {
        rqs.run_bins::<T, C>(bins, batch)
    }
}

impl Rqs {
    #[inline(always)]
    pub(super) fn run_bins<T: SplineFloat, const C: usize>(
        &self,
        bins: usize,
        batch: Batch<'_, T>,
    ) {
        let k = 3 * bins - 1;
        let inside = |x: T| x.widen() > -self.bound && x.widen() < self.bound;
        match batch {
            Batch::Forward {
                v, theta, y, ld, ..
            } => {
                debug_assert_eq!(theta.len(), v.len() * k);
                for (((yi, ldi), &vi), raw) in y
                    .iter_mut()
                    .zip(ld.iter_mut())
                    .zip(v)
                    .zip(theta.chunks_exact(k))
                {
                    (*yi, *ldi) = if inside(vi) {
                        self.forward_site::<T, C>(bins, vi, raw)
                    } else {
                        (vi, T::zero())
                    };
                }
            }
            Batch::Inverse { y, theta, v, ld } => {
                debug_assert_eq!(theta.len(), y.len() * k);
                for (((vi, ldi), &yi), raw) in v
                    .iter_mut()
                    .zip(ld.iter_mut())
                    .zip(y)
                    .zip(theta.chunks_exact(k))
                {
                    (*vi, *ldi) = if inside(yi) {
                        self.inverse_site::<T, C>(bins, yi, raw)
                    } else {
                        (yi, T::zero())
                    };
                }
            }
            Batch::Backward {
                v,
                theta,
                gy,
                gld,
                gv,
                gtheta,
                ..
            } => {
                debug_assert_eq!(theta.len(), v.len() * k);
                debug_assert_eq!(gtheta.len(), theta.len());
                for ((((gvi, graw), &vi), raw), (&gyi, &gldi)) in gv
                    .iter_mut()
                    .zip(gtheta.chunks_exact_mut(k))
                    .zip(v)
                    .zip(theta.chunks_exact(k))
                    .zip(gy.iter().zip(gld))
                {
                    if inside(vi) {
                        self.backward_site::<T, C>(bins, vi, raw, gyi, gldi, gvi, graw);
                    } else {
                        *gvi = *gvi + gyi;
                    }
                }
            }
        }
    }

    /// C and log C' of one site inside (−a, a).
    #[inline(always)]
    fn forward_site<T: SplineFloat, const C: usize>(&self, bins: usize, v: T, raw: &[T]) -> (T, T) {
        let v = v.widen();
        let spline = SiteSpline::<T, C>::new(self, bins, raw);
        let seg = spline.segment(spline.xs.locate(v));
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        (
            T::narrow(seg.y0 + seg.h * seg.ratio(alpha)),
            T::narrow(T::ln_wide(seg.slope(alpha))),
        )
    }

    /// C⁻¹ and log |∂C⁻¹/∂y| of one site inside (−a, a).
    #[inline(always)]
    fn inverse_site<T: SplineFloat, const C: usize>(&self, bins: usize, y: T, raw: &[T]) -> (T, T) {
        let y = y.widen();
        let spline = SiteSpline::<T, C>::new(self, bins, raw);
        let seg = spline.segment(spline.ys.locate(y));
        let alpha = seg.solve(((y - seg.y0) / seg.h).clamp(0.0, 1.0));
        (
            T::narrow(seg.x0 + alpha * seg.w),
            T::narrow(-T::ln_wide(seg.slope(alpha))),
        )
    }

    /// Adds ∂L/∂v to `gv` and ∂L/∂raw to `graw` for one site inside (−a, a), given ∂L/∂y
    /// and ∂L/∂ld.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward_site<T: SplineFloat, const C: usize>(
        &self,
        bins: usize,
        v: T,
        raw: &[T],
        gy: T,
        gld: T,
        gv: &mut T,
        graw: &mut [T],
    ) {
        let v = v.widen();
        let spline = SiteSpline::<T, C>::new(self, bins, raw);
        let l = spline.xs.locate(v).min(bins - 1);
        let seg = spline.segment(l);
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        let local = seg.gradients(alpha, gy.widen(), gld.widen());

        *gv = T::narrow(gv.widen() + local.alpha / seg.w);
        // α = (v − X_l)/w_l and s = h_l/w_l.
        let g_x0 = -local.alpha / seg.w;
        let g_w = -(local.alpha * alpha + local.s * seg.s) / seg.w;
        let g_h = local.h + local.s / seg.w;
        // X_l = −a + Σ_{j<l} w_j, likewise Y_l: the lower knot collects from every earlier bin.
        spline.xs.backward(l, g_x0, g_w, &mut graw[..bins]);
        spline
            .ys
            .backward(l, local.y0, g_h, &mut graw[bins..2 * bins]);
        let d = spline.raw_derivatives;
        let gd = &mut graw[2 * bins..];
        if l >= 1 {
            gd[l - 1] = T::narrow(gd[l - 1].widen() + local.d0 * sigmoid::<T>(d[l - 1].widen()));
        }
        if l + 1 < bins {
            gd[l] = T::narrow(gd[l].widen() + local.d1 * sigmoid::<T>(d[l].widen()));
        }
    }
}
