//! The monotone rational-quadratic spline (RQS) transform of SPEC 3.3 (Durkan et al.
//! 2019): K segments on [−a, a], identity outside, with an analytic inverse and a
//! hand-derived backward pass through softmax, cumulative sums and softplus.
//!
//! All spline arithmetic runs in f64 whatever the float type of the slices, on fixed stack
//! arrays: no allocation per site.

use serde::{Deserialize, Serialize};

use super::{PointwiseTransform, Real};
use crate::error::{Error, Result};

/// Largest number of segments an [`Rqs`] supports (its per-site scratch lives on the stack).
pub const MAX_BINS: usize = 32;

/// Rational-quadratic spline transform with `bins` = K segments on [−a, a] (a = `bound`).
///
/// Parameters per site: 3K − 1 raw numbers, laid out as
/// `[w_0 … w_{K−1}, h_0 … h_{K−1}, d_1 … d_{K−1}]`:
/// - bin widths `min_bin_width + (2a − K·min_bin_width) · softmax(w)`,
/// - bin heights `min_bin_height + (2a − K·min_bin_height) · softmax(h)`,
/// - interior knot derivatives `softplus(d) + min_derivative`; the end derivatives are 1.
///
/// Outside [−a, a] the transform is the identity with log-derivative 0; since the end
/// derivatives are 1 the map is C¹ there. The inverse takes the numerically stable root
/// of the quadratic in α. Any finite input (the tests go to |v| = 50) and any finite raw
/// parameters give finite outputs and gradients.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RqsConfig", into = "RqsConfig")]
pub struct Rqs {
    bins: usize,
    bound: f64,
    min_bin_width: f64,
    min_bin_height: f64,
    min_derivative: f64,
}

/// The serialised form of [`Rqs`], validated on the way in.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct RqsConfig {
    bins: usize,
    bound: f64,
    min_bin_width: f64,
    min_bin_height: f64,
    min_derivative: f64,
}

impl TryFrom<RqsConfig> for Rqs {
    type Error = Error;
    fn try_from(c: RqsConfig) -> Result<Self> {
        Rqs::new(c.bins, c.bound)?.with_minimums(
            c.min_bin_width,
            c.min_bin_height,
            c.min_derivative,
        )
    }
}

impl From<Rqs> for RqsConfig {
    fn from(r: Rqs) -> Self {
        RqsConfig {
            bins: r.bins,
            bound: r.bound,
            min_bin_width: r.min_bin_width,
            min_bin_height: r.min_bin_height,
            min_derivative: r.min_derivative,
        }
    }
}

impl Default for Rqs {
    /// K = 8 segments on [−5, 5], minimum bin size and derivative 1e-3.
    fn default() -> Self {
        Rqs {
            bins: 8,
            bound: 5.0,
            min_bin_width: Self::DEFAULT_MINIMUM,
            min_bin_height: Self::DEFAULT_MINIMUM,
            min_derivative: Self::DEFAULT_MINIMUM,
        }
    }
}

impl Rqs {
    /// Default minimum bin width, bin height and knot derivative.
    pub const DEFAULT_MINIMUM: f64 = 1e-3;

    /// A spline with `bins` segments (1 ..= [`MAX_BINS`]) on [−bound, bound], with the
    /// default minimums (1e-3, scaled down if the bins would not fit).
    pub fn new(bins: usize, bound: f64) -> Result<Self> {
        if bins == 0 || bins > MAX_BINS {
            return Err(Error::param(
                "bins",
                format!("must be between 1 and {MAX_BINS}, got {bins}"),
            ));
        }
        if !(bound.is_finite() && bound > 0.0) {
            return Err(Error::param(
                "bound",
                format!("must be finite and positive, got {bound}"),
            ));
        }
        let min_bin = Self::DEFAULT_MINIMUM.min(0.5 * bound / bins as f64);
        Ok(Rqs {
            bins,
            bound,
            min_bin_width: min_bin,
            min_bin_height: min_bin,
            min_derivative: Self::DEFAULT_MINIMUM,
        })
    }

    /// The same spline with other minimums; each must be positive, and the minimum bins
    /// must leave room: K · min < 2a.
    pub fn with_minimums(
        mut self,
        min_bin_width: f64,
        min_bin_height: f64,
        min_derivative: f64,
    ) -> Result<Self> {
        let room = 2.0 * self.bound / self.bins as f64;
        for (name, value) in [
            ("min_bin_width", min_bin_width),
            ("min_bin_height", min_bin_height),
        ] {
            if !(value.is_finite() && value > 0.0 && value < room) {
                return Err(Error::param(
                    name,
                    format!("must be positive and below 2·bound/bins = {room}, got {value}"),
                ));
            }
        }
        if !(min_derivative.is_finite() && min_derivative > 0.0) {
            return Err(Error::param(
                "min_derivative",
                format!("must be finite and positive, got {min_derivative}"),
            ));
        }
        self.min_bin_width = min_bin_width;
        self.min_bin_height = min_bin_height;
        self.min_derivative = min_derivative;
        Ok(self)
    }

    /// Number of segments K.
    pub fn bins(&self) -> usize {
        self.bins
    }

    /// Half-width a of the spline interval [−a, a].
    pub fn bound(&self) -> f64 {
        self.bound
    }

    /// Minimum bin width.
    pub fn min_bin_width(&self) -> f64 {
        self.min_bin_width
    }

    /// Minimum bin height.
    pub fn min_bin_height(&self) -> f64 {
        self.min_bin_height
    }

    /// Minimum interior knot derivative.
    pub fn min_derivative(&self) -> f64 {
        self.min_derivative
    }

    /// The widths axis (raw numbers, minimum) of one site's parameters.
    fn widths<'a>(&self, raw: &'a [f64]) -> Axis<'a> {
        Axis {
            raw: &raw[..self.bins],
            min: self.min_bin_width,
            bound: self.bound,
        }
    }

    /// The heights axis of one site's parameters.
    fn heights<'a>(&self, raw: &'a [f64]) -> Axis<'a> {
        Axis {
            raw: &raw[self.bins..2 * self.bins],
            min: self.min_bin_height,
            bound: self.bound,
        }
    }

    /// Knot derivatives at the lower and upper end of bin `l`.
    fn knot_derivatives(&self, raw: &[f64], l: usize) -> (f64, f64) {
        let d = &raw[2 * self.bins..];
        let at = |k: usize| {
            if k == 0 || k == self.bins {
                1.0
            } else {
                softplus(d[k - 1]) + self.min_derivative
            }
        };
        (at(l), at(l + 1))
    }

    /// The segment of bin `l` for one site, with its knot positions.
    fn segment(&self, raw: &[f64], l: usize, px: &Softmax, py: &Softmax) -> Segment {
        let (x0, w) = self.widths(raw).bin(px, l);
        let (y0, h) = self.heights(raw).bin(py, l);
        let (d0, d1) = self.knot_derivatives(raw, l);
        Segment {
            x0,
            w,
            y0,
            h,
            s: h / w,
            d0,
            d1,
        }
    }

    /// C and log C' of one site (f64).
    fn forward_site(&self, v: f64, raw: &[f64]) -> (f64, f64) {
        if !(v > -self.bound && v < self.bound) {
            return (v, 0.0);
        }
        let xs = self.widths(raw);
        let px = Softmax::of(xs.raw);
        let l = xs.locate(&px, v);
        let py = Softmax::of(self.heights(raw).raw);
        let seg = self.segment(raw, l, &px, &py);
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        (seg.y0 + seg.h * seg.ratio(alpha), seg.log_slope(alpha))
    }

    /// C⁻¹ and log |∂C⁻¹/∂y| of one site (f64).
    fn inverse_site(&self, y: f64, raw: &[f64]) -> (f64, f64) {
        if !(y > -self.bound && y < self.bound) {
            return (y, 0.0);
        }
        let ys = self.heights(raw);
        let py = Softmax::of(ys.raw);
        let l = ys.locate(&py, y);
        let px = Softmax::of(self.widths(raw).raw);
        let seg = self.segment(raw, l, &px, &py);
        let alpha = seg.solve(((y - seg.y0) / seg.h).clamp(0.0, 1.0));
        (seg.x0 + alpha * seg.w, -seg.log_slope(alpha))
    }

    /// Adds ∂L/∂v to `gv` and ∂L/∂raw to `graw` for one site, given ∂L/∂y and ∂L/∂ld.
    fn backward_site(
        &self,
        v: f64,
        raw: &[f64],
        gy: f64,
        gld: f64,
        gv: &mut f64,
        graw: &mut [f64],
    ) {
        if !(v > -self.bound && v < self.bound) {
            *gv += gy;
            return;
        }
        let k = self.bins;
        let xs = self.widths(raw);
        let px = Softmax::of(xs.raw);
        let l = xs.locate(&px, v);
        let py = Softmax::of(self.heights(raw).raw);
        let seg = self.segment(raw, l, &px, &py);
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        let local = seg.gradients(alpha, gy, gld);

        *gv += local.alpha / seg.w;
        // α = (v − X_l)/w_l and s = h_l/w_l.
        let g_x0 = -local.alpha / seg.w;
        let g_w = -(local.alpha * alpha + local.s * seg.s) / seg.w;
        let g_h = local.h + local.s / seg.w;
        // X_l = −a + Σ_{j<l} w_j, likewise Y_l: the lower knot collects from every earlier bin.
        xs.backward(&px, l, g_x0, g_w, &mut graw[..k]);
        self.heights(raw)
            .backward(&py, l, local.y0, g_h, &mut graw[k..2 * k]);
        let d = &raw[2 * k..];
        let gd = &mut graw[2 * k..];
        if l >= 1 {
            gd[l - 1] += local.d0 * sigmoid(d[l - 1]);
        }
        if l + 1 < k {
            gd[l] += local.d1 * sigmoid(d[l]);
        }
    }
}

/// softplus(x) = ln(1 + eˣ), without overflow.
#[inline]
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// σ(x) = 1/(1 + e⁻ˣ), the derivative of softplus.
#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// A softmax over at most [`MAX_BINS`] raw numbers, on the stack.
struct Softmax {
    p: [f64; MAX_BINS],
}

impl Softmax {
    fn of(raw: &[f64]) -> Self {
        let mut p = [0.0; MAX_BINS];
        let max = raw.iter().fold(f64::NEG_INFINITY, |m, &r| m.max(r));
        let mut sum = 0.0;
        for (pi, &r) in p.iter_mut().zip(raw) {
            *pi = (r - max).exp();
            sum += *pi;
        }
        p[..raw.len()].iter_mut().for_each(|pi| *pi /= sum);
        Softmax { p }
    }
}

/// One axis of the spline (the widths or the heights): bin sizes
/// `min + (2a − K·min) · softmax(raw)` laid end to end from −a.
struct Axis<'a> {
    raw: &'a [f64],
    min: f64,
    bound: f64,
}

impl Axis<'_> {
    fn scale(&self) -> f64 {
        2.0 * self.bound - self.raw.len() as f64 * self.min
    }

    /// The bin containing `x` ∈ (−a, a) (the last bin absorbs rounding at the top).
    fn locate(&self, p: &Softmax, x: f64) -> usize {
        let k = self.raw.len();
        let scale = self.scale();
        let mut upper = -self.bound;
        for (l, &pl) in p.p[..k - 1].iter().enumerate() {
            upper += self.min + scale * pl;
            if x < upper {
                return l;
            }
        }
        k - 1
    }

    /// Lower knot and size of bin `l`.
    fn bin(&self, p: &Softmax, l: usize) -> (f64, f64) {
        let scale = self.scale();
        let below: f64 = p.p[..l].iter().sum();
        (
            -self.bound + l as f64 * self.min + scale * below,
            self.min + scale * p.p[l],
        )
    }

    /// Adds to `graw` the gradient of L through this axis, given ∂L/∂(lower knot of bin l)
    /// and ∂L/∂(size of bin l): the bin sizes' gradient is g_j = g_knot [j < l] + g_size [j = l],
    /// and softmax backprop gives scale · p_i (g_i − Σ_j g_j p_j).
    fn backward(&self, p: &Softmax, l: usize, g_knot: f64, g_size: f64, graw: &mut [f64]) {
        let scale = self.scale();
        let below: f64 = p.p[..l].iter().sum();
        let mean = g_knot * below + g_size * p.p[l];
        for (j, (g, &pj)) in graw.iter_mut().zip(&p.p).enumerate() {
            let gj = match j.cmp(&l) {
                std::cmp::Ordering::Less => g_knot,
                std::cmp::Ordering::Equal => g_size,
                std::cmp::Ordering::Greater => 0.0,
            };
            *g += scale * pj * (gj - mean);
        }
    }
}

/// One rational-quadratic segment: lower knot (x0, y0), width w, height h, slope s = h/w
/// and knot derivatives d0 (lower), d1 (upper).
struct Segment {
    x0: f64,
    w: f64,
    y0: f64,
    h: f64,
    s: f64,
    d0: f64,
    d1: f64,
}

/// ∂L/∂(α, s, d0, d1, y0, h) of one segment evaluation, h taken at fixed s.
struct LocalGradients {
    alpha: f64,
    s: f64,
    d0: f64,
    d1: f64,
    y0: f64,
    h: f64,
}

impl Segment {
    /// The denominator s + (d0 + d1 − 2s) α(1−α), written as a sum of positive terms.
    #[inline]
    fn denominator(&self, alpha: f64) -> f64 {
        let beta = 1.0 - alpha;
        self.s * (alpha * alpha + beta * beta) + (self.d0 + self.d1) * alpha * beta
    }

    /// R(α) with C = y0 + h R.
    #[inline]
    fn ratio(&self, alpha: f64) -> f64 {
        let q = alpha * (1.0 - alpha);
        (self.s * alpha * alpha + self.d0 * q) / self.denominator(alpha)
    }

    /// log ∂C/∂v = log((s/D)² [d1 α² + 2s α(1−α) + d0 (1−α)²]) with one logarithm per site
    /// (D ≥ s/2, so s/D ≤ 2 and the product cannot overflow).
    #[inline]
    fn log_slope(&self, alpha: f64) -> f64 {
        let beta = 1.0 - alpha;
        let m = self.d1 * alpha * alpha + 2.0 * self.s * alpha * beta + self.d0 * beta * beta;
        let ratio = self.s / self.denominator(alpha);
        (ratio * ratio * m).ln()
    }

    /// The α ∈ [0, 1] with R(α) = ξ: the root of A α² + B α − ξ s = 0 with
    /// A = s − d0 + ξδ, B = d0 − ξδ, δ = d0 + d1 − 2s, written as 2ξs / (B + √(B² + 4Aξs))
    /// (no cancellation: the denominator is positive on the whole segment).
    #[inline]
    fn solve(&self, xi: f64) -> f64 {
        let delta = self.d0 + self.d1 - 2.0 * self.s;
        let a = self.s - self.d0 + xi * delta;
        let b = self.d0 - xi * delta;
        let disc = (b * b + 4.0 * a * xi * self.s).max(0.0);
        let denom = b + disc.sqrt();
        if denom > 0.0 {
            (2.0 * xi * self.s / denom).clamp(0.0, 1.0)
        } else {
            // Unreachable in exact arithmetic (B > 0 wherever A < 0); ξ = 1 is the only
            // remaining root.
            1.0
        }
    }

    /// Chain rule through one segment for upstream ∂L/∂y = gy and ∂L/∂ld = gld.
    fn gradients(&self, alpha: f64, gy: f64, gld: f64) -> LocalGradients {
        let (s, d0, d1) = (self.s, self.d0, self.d1);
        let beta = 1.0 - alpha;
        let q = alpha * beta;
        let dq = 1.0 - 2.0 * alpha;
        let delta = d0 + d1 - 2.0 * s;
        let den = self.denominator(alpha);
        let r = (s * alpha * alpha + d0 * q) / den;
        let m = d1 * alpha * alpha + 2.0 * s * q + d0 * beta * beta;

        // R = N/D with N = sα² + d0 q, D = s + δ q.
        let dr_dalpha = (2.0 * s * alpha + d0 * dq - r * delta * dq) / den;
        let dr_ds = (alpha * alpha - r * (1.0 - 2.0 * q)) / den;
        let dr_dd0 = q * (1.0 - r) / den;
        let dr_dd1 = -r * q / den;
        // ld = 2 ln s + ln M − 2 ln D.
        let dm_dalpha = 2.0 * d1 * alpha + 2.0 * s * dq - 2.0 * d0 * beta;
        let dld_dalpha = dm_dalpha / m - 2.0 * delta * dq / den;
        let dld_ds = 2.0 / s + 2.0 * q / m - 2.0 * (1.0 - 2.0 * q) / den;
        let dld_dd0 = beta * beta / m - 2.0 * q / den;
        let dld_dd1 = alpha * alpha / m - 2.0 * q / den;

        let gyh = gy * self.h;
        LocalGradients {
            alpha: gyh * dr_dalpha + gld * dld_dalpha,
            s: gyh * dr_ds + gld * dld_ds,
            d0: gyh * dr_dd0 + gld * dld_dd0,
            d1: gyh * dr_dd1 + gld * dld_dd1,
            y0: gy,
            h: gy * r,
        }
    }
}

/// Copies one site's parameters into f64 stack storage.
#[inline]
fn site_params<'a, T: Real>(theta: &[T], buf: &'a mut [f64; 3 * MAX_BINS]) -> &'a [f64] {
    for (b, &t) in buf.iter_mut().zip(theta) {
        *b = to_f64(t);
    }
    &buf[..theta.len()]
}

#[inline]
fn to_f64<T: Real>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

#[inline]
fn from_f64<T: Real>(x: f64) -> T {
    T::from_f64(x).unwrap_or_else(T::nan)
}

impl<T: Real> PointwiseTransform<T> for Rqs {
    fn params_per_site(&self) -> usize {
        3 * self.bins - 1
    }

    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
        let k = 3 * self.bins - 1;
        debug_assert_eq!(theta.len(), v.len() * k);
        let mut buf = [0.0; 3 * MAX_BINS];
        for (((yi, ldi), &vi), p) in y
            .iter_mut()
            .zip(ld.iter_mut())
            .zip(v)
            .zip(theta.chunks_exact(k))
        {
            let (c, l) = self.forward_site(to_f64(vi), site_params(p, &mut buf));
            *yi = from_f64(c);
            *ldi = from_f64(l);
        }
    }

    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
        let k = 3 * self.bins - 1;
        debug_assert_eq!(theta.len(), y.len() * k);
        let mut buf = [0.0; 3 * MAX_BINS];
        for (((vi, ldi), &yi), p) in v
            .iter_mut()
            .zip(ld.iter_mut())
            .zip(y)
            .zip(theta.chunks_exact(k))
        {
            let (x, l) = self.inverse_site(to_f64(yi), site_params(p, &mut buf));
            *vi = from_f64(x);
            *ldi = from_f64(l);
        }
    }

    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        let k = 3 * self.bins - 1;
        debug_assert_eq!(theta.len(), v.len() * k);
        debug_assert_eq!(gtheta.len(), theta.len());
        let mut buf = [0.0; 3 * MAX_BINS];
        let mut graw = [0.0; 3 * MAX_BINS];
        for ((((gvi, gt), &vi), p), (&gyi, &gldi)) in gv
            .iter_mut()
            .zip(gtheta.chunks_exact_mut(k))
            .zip(v)
            .zip(theta.chunks_exact(k))
            .zip(gy.iter().zip(gld))
        {
            let raw = site_params(p, &mut buf);
            graw[..k].fill(0.0);
            let mut g = 0.0;
            self.backward_site(
                to_f64(vi),
                raw,
                to_f64(gyi),
                to_f64(gldi),
                &mut g,
                &mut graw[..k],
            );
            *gvi = *gvi + from_f64(g);
            for (gtj, &gj) in gt.iter_mut().zip(&graw[..k]) {
                *gtj = *gtj + from_f64(gj);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_rejects_bad_sizes() {
        assert!(Rqs::new(0, 5.0).is_err());
        assert!(Rqs::new(MAX_BINS + 1, 5.0).is_err());
        assert!(Rqs::new(8, 0.0).is_err());
        assert!(Rqs::new(8, f64::NAN).is_err());
        assert!(
            Rqs::new(8, 5.0)
                .unwrap()
                .with_minimums(2.0, 1e-3, 1e-3)
                .is_err()
        );
        assert!(
            Rqs::new(8, 5.0)
                .unwrap()
                .with_minimums(1e-3, 1e-3, 0.0)
                .is_err()
        );
        assert!(Rqs::new(MAX_BINS, 5.0).is_ok());
        assert_eq!(Rqs::new(8, 5.0).unwrap(), Rqs::default());
    }

    #[test]
    fn serde_round_trip_validates() {
        let r = Rqs::new(6, 3.0).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rqs>(&json).unwrap(), r);
        let bad = json.replace("\"bins\":6", "\"bins\":99");
        assert!(serde_json::from_str::<Rqs>(&bad).is_err());
    }

    #[test]
    fn zero_parameters_give_uniform_knots_and_identity() {
        // Equal widths and heights with derivative softplus(0) + min ≠ 1: the map is not the
        // identity, but it fixes every knot X_k = Y_k = −a + 2ak/K.
        let r = Rqs::default();
        let raw = vec![0.0; 23];
        for k in 0..=8 {
            let x = -5.0 + 10.0 * k as f64 / 8.0;
            let x = x.clamp(-5.0, 5.0);
            let (y, _) = r.forward_site(x, &raw);
            assert!((y - x).abs() < 1e-12, "knot {k}: {y} vs {x}");
        }
    }
}
