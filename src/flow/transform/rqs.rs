//! The monotone rational-quadratic spline (RQS) transform of SPEC 3.3 (Durkan et al.
//! 2019): K segments on [−a, a], identity outside, with an analytic inverse and a
//! hand-derived backward pass through softmax, cumulative sums and softplus.
//!
//! One kernel serves both float types: it is generic over the number of bins K (a const
//! parameter, so every per-site loop has a fixed trip count and runs on stack arrays) and
//! over [`SplineFloat`], which supplies exp and ln — the standard library's in f64, the
//! branch-free polynomials [`exp_f32`] and [`ln_f32`] in f32 so that the loops over bins
//! vectorise. The bin search is a branch-free count of the knots below the input.

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
}

/// exp(x) in f32 without library calls or branches (so loops over it vectorise): range
/// reduction x = n ln 2 + r with |r| ≤ ln 2 / 2 and a degree-6 polynomial for eʳ (Cephes
/// `expf`). Relative error below 2.5e-7 (about 2 ulp) for x ∈ [−87, 88]; the input is
/// clamped to that range, so the result is always finite and positive (NaN stays NaN).
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    er * f32::from_bits((exponent.wrapping_add(127) as u32) << 23)
}

/// ln(x) in f32 without library calls or branches: x = m·2ᵉ with m ∈ [√½, √2) and a
/// degree-9 polynomial in m − 1 (Cephes `logf`). Absolute error below 1.2e-7 · max(1, |ln x|)
/// for positive normal x; inputs below the smallest positive normal (zero, subnormals,
/// negatives) are treated as that number, so the result is always finite.
#[inline]
pub fn ln_f32(x: f32) -> f32 {
    const SQRT2: f32 = std::f32::consts::SQRT_2;
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > SQRT2;
    e += big as i32;
    let f = if big { 0.5 * m } else { m } - 1.0;
    let z = f * f;
    let p = 7.037_683_6e-2f32;
    let p = p * f - 1.151_461_1e-1;
    let p = p * f + 1.167_699_9e-1;
    let p = p * f - 1.242_014_1e-1;
    let p = p * f + 1.424_932_3e-1;
    let p = p * f - 1.666_805_8e-1;
    let p = p * f + 2.000_071_4e-1;
    let p = p * f - 2.499_999_4e-1;
    let p = p * f + 3.333_333e-1;
    let e = e as f32;
    let y = p * f * z + e * -2.121_944_4e-4 - 0.5 * z;
    f + y + e * 0.693_359_4
}

/// The float types the spline kernel reads and writes. The kernel computes knots and
/// segments in f64 (so that the bin geometry, a running sum over bins, keeps f64 accuracy)
/// and evaluates its transcendental functions at the precision of the slices: the standard
/// library's in f64, the branch-free [`exp_f32`] and [`ln_f32`] in f32, so that the loops
/// over the bins of a site vectorise.
pub trait SplineFloat: Real {
    /// eˣ in this type.
    fn exp_native(self) -> Self;
    /// eˣ at this type's precision.
    fn exp_wide(x: f64) -> f64;
    /// ln x (x > 0) at this type's precision.
    fn ln_wide(x: f64) -> f64;
    /// ln(1 + u) for u ∈ [0, 1] at this type's precision.
    fn ln_1p_wide(u: f64) -> f64;
    /// The value as f64.
    fn widen(self) -> f64;
    /// The nearest value of this type.
    fn narrow(x: f64) -> Self;

    /// Runs one batch of the spline in this type. The default is the per-site kernel with
    /// f64 knots; f32 overrides it with the kernel over groups of [`LANES`] sites.
    #[doc(hidden)]
    fn run_spline(rqs: &Rqs, batch: Batch<'_, Self>) {
        rqs.run::<Self, PerSite>(batch)
    }

    /// Length of the state a forward batch of `sites` sites saves for its backward pass
    /// (0: the per-site kernel saves nothing and recomputes).
    #[doc(hidden)]
    fn saved_len(rqs: &Rqs, sites: usize) -> usize {
        let _ = (rqs, sites);
        0
    }
}

impl SplineFloat for f64 {
    #[inline]
    fn exp_native(self) -> f64 {
        self.exp()
    }
    #[inline]
    fn exp_wide(x: f64) -> f64 {
        x.exp()
    }
    #[inline]
    fn ln_wide(x: f64) -> f64 {
        x.ln()
    }
    #[inline]
    fn ln_1p_wide(u: f64) -> f64 {
        u.ln_1p()
    }
    #[inline]
    fn widen(self) -> f64 {
        self
    }
    #[inline]
    fn narrow(x: f64) -> f64 {
        x
    }
}

impl SplineFloat for f32 {
    #[inline]
    fn exp_native(self) -> f32 {
        exp_f32(self)
    }
    #[inline]
    fn exp_wide(x: f64) -> f64 {
        exp_f32(x as f32) as f64
    }
    #[inline]
    fn ln_wide(x: f64) -> f64 {
        ln_f32(x as f32) as f64
    }
    /// ln(1 + u) = ln(w) · u / (w − 1) with w = 1 + u rounded, which cancels the rounding
    /// of w (Goldberg's trick); exactly u when w rounds to 1.
    #[inline]
    fn ln_1p_wide(u: f64) -> f64 {
        let u = u as f32;
        let w = 1.0 + u;
        let d = w - 1.0;
        (if d == 0.0 { u } else { ln_f32(w) * (u / d) }) as f64
    }
    #[inline]
    fn widen(self) -> f64 {
        self as f64
    }
    #[inline]
    fn narrow(x: f64) -> f32 {
        x as f32
    }
    fn run_spline(rqs: &Rqs, batch: Batch<'_, f32>) {
        rqs.run::<f32, LaneGroups>(batch)
    }
    fn saved_len(rqs: &Rqs, sites: usize) -> usize {
        sites.div_ceil(LANES) * LANES * lane_state_len(rqs.bins)
    }
}

/// softplus(x) = ln(1 + eˣ), without overflow, at the precision of `T`.
#[inline]
fn softplus<T: SplineFloat>(x: f64) -> f64 {
    x.max(0.0) + T::ln_1p_wide(T::exp_wide(-x.abs()))
}

/// σ(x) = 1/(1 + e⁻ˣ), the derivative of softplus, at the precision of `T`.
#[inline]
fn sigmoid<T: SplineFloat>(x: f64) -> f64 {
    let e = T::exp_wide(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// One axis (widths or heights) of one site with K bins: the softmax p of the raw numbers,
/// bin sizes `min + scale · p` and lower knots laid end to end from −a.
struct Axis<const K: usize> {
    p: [f64; K],
    lower: [f64; K],
    size: [f64; K],
    scale: f64,
}

impl<const K: usize> Axis<K> {
    #[inline(always)]
    fn new<T: SplineFloat>(raw: &[T], min: f64, bound: f64) -> Self {
        // The exponentials in T, over a fixed-size array (vectorised), then widened.
        let mut e = [T::zero(); K];
        e.copy_from_slice(&raw[..K]);
        let max = e.iter().fold(e[0], |m, &r| m.max(r));
        for ei in e.iter_mut() {
            *ei = (*ei - max).exp_native();
        }
        let mut p = [0.0; K];
        let mut sum = 0.0;
        for (pi, &ei) in p.iter_mut().zip(&e) {
            *pi = ei.widen();
            sum += *pi;
        }
        let inv = 1.0 / sum;
        let scale = 2.0 * bound - K as f64 * min;
        let mut size = [0.0; K];
        for (si, pi) in size.iter_mut().zip(p.iter_mut()) {
            *pi *= inv;
            *si = min + scale * *pi;
        }
        let mut lower = [0.0; K];
        let mut knot = -bound;
        for (li, &si) in lower.iter_mut().zip(&size) {
            *li = knot;
            knot += si;
        }
        Axis {
            p,
            lower,
            size,
            scale,
        }
    }

    /// The bin containing `x` ∈ (−a, a): the number of interior knots at or below x.
    #[inline(always)]
    fn locate(&self, x: f64) -> usize {
        self.lower[1..].iter().map(|&k| (k <= x) as usize).sum()
    }

    /// Adds to `graw` the gradient through this axis given ∂L/∂(lower knot of bin l) and
    /// ∂L/∂(size of bin l): the bin sizes' gradient is g_j = g_knot [j < l] + g_size [j = l],
    /// and softmax backprop gives scale · p_j (g_j − Σ_i g_i p_i).
    #[inline(always)]
    fn backward<T: SplineFloat>(&self, l: usize, g_knot: f64, g_size: f64, graw: &mut [T]) {
        let mut g = [0.0; K];
        let mut mean = 0.0;
        for (j, (gj, &pj)) in g.iter_mut().zip(&self.p).enumerate() {
            *gj = if j < l {
                g_knot
            } else if j == l {
                g_size
            } else {
                0.0
            };
            mean += *gj * pj;
        }
        for ((out, &gj), &pj) in graw[..K].iter_mut().zip(&g).zip(&self.p) {
            *out = T::narrow(out.widen() + self.scale * pj * (gj - mean));
        }
    }
}

/// The spline of one site with K bins: both axes and the raw knot derivatives.
struct SiteSpline<'a, T, const K: usize> {
    xs: Axis<K>,
    ys: Axis<K>,
    raw_derivatives: &'a [T],
    min_derivative: f64,
}

impl<'a, T: SplineFloat, const K: usize> SiteSpline<'a, T, K> {
    #[inline(always)]
    fn new(rqs: &Rqs, raw: &'a [T]) -> Self {
        SiteSpline {
            xs: Axis::new(&raw[..K], rqs.min_bin_width, rqs.bound),
            ys: Axis::new(&raw[K..2 * K], rqs.min_bin_height, rqs.bound),
            raw_derivatives: &raw[2 * K..3 * K - 1],
            min_derivative: rqs.min_derivative,
        }
    }

    /// Knot derivative k (1 at both ends).
    #[inline(always)]
    fn derivative(&self, k: usize) -> f64 {
        if k == 0 || k == K {
            1.0
        } else {
            softplus::<T>(self.raw_derivatives[k - 1].widen()) + self.min_derivative
        }
    }

    /// The segment of bin `l`.
    #[inline(always)]
    fn segment(&self, l: usize) -> Segment<f64> {
        let l = l.min(K - 1);
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

/// The arithmetic a segment evaluation needs: f64 for one site, [`Lanes`] for a group of
/// f32 sites, so that both kernels share one set of formulas.
trait SegmentMath:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// The constant `x` in this type.
    fn constant(x: f64) -> Self;
    /// The value clamped to [0, 1].
    fn clamp01(self) -> Self;
    /// √max(x, 0).
    fn sqrt_nonneg(self) -> Self;
    /// `yes` where the value is positive, else `no`.
    fn if_positive(self, yes: Self, no: Self) -> Self;
}

impl SegmentMath for f64 {
    #[inline(always)]
    fn constant(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn clamp01(self) -> f64 {
        self.clamp(0.0, 1.0)
    }
    #[inline(always)]
    fn sqrt_nonneg(self) -> f64 {
        self.max(0.0).sqrt()
    }
    #[inline(always)]
    fn if_positive(self, yes: f64, no: f64) -> f64 {
        if self > 0.0 { yes } else { no }
    }
}

/// One rational-quadratic segment: lower knot (x0, y0), width w, height h, slope s = h/w
/// and knot derivatives d0 (lower), d1 (upper).
struct Segment<N> {
    x0: N,
    w: N,
    y0: N,
    h: N,
    s: N,
    d0: N,
    d1: N,
}

/// ∂L/∂(α, s, d0, d1, y0, h) of one segment evaluation, h taken at fixed s.
struct LocalGradients<N> {
    alpha: N,
    s: N,
    d0: N,
    d1: N,
    y0: N,
    h: N,
}

impl<N: SegmentMath> Segment<N> {
    /// The denominator s + (d0 + d1 − 2s) α(1−α), written as a sum of positive terms.
    #[inline(always)]
    fn denominator(&self, alpha: N) -> N {
        let beta = N::constant(1.0) - alpha;
        self.s * (alpha * alpha + beta * beta) + (self.d0 + self.d1) * alpha * beta
    }

    /// R(α) with C = y0 + h R.
    #[inline(always)]
    fn ratio(&self, alpha: N) -> N {
        let q = alpha * (N::constant(1.0) - alpha);
        (self.s * alpha * alpha + self.d0 * q) / self.denominator(alpha)
    }

    /// ∂C/∂v = (s/D)² [d1 α² + 2s α(1−α) + d0 (1−α)²], the argument of the one logarithm
    /// per site (D ≥ s/2, so s/D ≤ 2 and the product cannot overflow).
    #[inline(always)]
    fn slope(&self, alpha: N) -> N {
        let beta = N::constant(1.0) - alpha;
        let two_s = self.s + self.s;
        let m = self.d1 * alpha * alpha + two_s * alpha * beta + self.d0 * beta * beta;
        let ratio = self.s / self.denominator(alpha);
        ratio * ratio * m
    }

    /// The α ∈ [0, 1] with R(α) = ξ: the root of A α² + B α − ξ s = 0 with
    /// A = s − d0 + ξδ, B = d0 − ξδ, δ = d0 + d1 − 2s, written as 2ξs / (B + √(B² + 4Aξs))
    /// (no cancellation: the denominator is positive on the whole segment).
    #[inline(always)]
    fn solve(&self, xi: N) -> N {
        let delta = self.d0 + self.d1 - (self.s + self.s);
        let a = self.s - self.d0 + xi * delta;
        let b = self.d0 - xi * delta;
        let disc = b * b + N::constant(4.0) * a * xi * self.s;
        let denom = b + disc.sqrt_nonneg();
        // Denominator ≤ 0 is unreachable in exact arithmetic (B > 0 wherever A < 0); ξ = 1
        // is then the only remaining root. The quotient is only used where denom > 0.
        let safe = denom.if_positive(denom, N::constant(1.0));
        denom.if_positive(((xi + xi) * self.s / safe).clamp01(), N::constant(1.0))
    }

    /// Chain rule through one segment for upstream ∂L/∂y = gy and ∂L/∂ld = gld.
    #[inline(always)]
    fn gradients(&self, alpha: N, gy: N, gld: N) -> LocalGradients<N> {
        let (s, d0, d1) = (self.s, self.d0, self.d1);
        let one = N::constant(1.0);
        let two = N::constant(2.0);
        let beta = one - alpha;
        let q = alpha * beta;
        let dq = one - two * alpha;
        let delta = d0 + d1 - two * s;
        let den = self.denominator(alpha);
        let inv_den = one / den;
        let r = (s * alpha * alpha + d0 * q) * inv_den;
        let m = d1 * alpha * alpha + two * s * q + d0 * beta * beta;
        let inv_m = one / m;

        // R = N/D with N = sα² + d0 q, D = s + δ q.
        let dr_dalpha = (two * s * alpha + d0 * dq - r * delta * dq) * inv_den;
        let dr_ds = (alpha * alpha - r * (one - two * q)) * inv_den;
        let dr_dd0 = q * (one - r) * inv_den;
        let dr_dd1 = (N::constant(0.0) - r) * q * inv_den;
        // ld = 2 ln s + ln M − 2 ln D.
        let dm_dalpha = two * d1 * alpha + two * s * dq - two * d0 * beta;
        let dld_dalpha = dm_dalpha * inv_m - two * delta * dq * inv_den;
        let dld_ds = two / s + two * q * inv_m - two * (one - two * q) * inv_den;
        let dld_dd0 = beta * beta * inv_m - two * q * inv_den;
        let dld_dd1 = alpha * alpha * inv_m - two * q * inv_den;

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

/// The work of one call on a batch of sites.
pub enum Batch<'a, T> {
    /// y = C(v), ld = log C'(v); `saved` (empty, or as long as [`SplineFloat::saved_len`]
    /// says) receives what the backward pass needs.
    Forward {
        v: &'a [T],
        theta: &'a [T],
        y: &'a mut [T],
        ld: &'a mut [T],
        saved: &'a mut [T],
    },
    /// v = C⁻¹(y), ld = −log C'(v).
    Inverse {
        y: &'a [T],
        theta: &'a [T],
        v: &'a mut [T],
        ld: &'a mut [T],
    },
    /// Adds ∂L/∂v to gv and ∂L/∂θ to gtheta, from `saved` when it is not empty (it then
    /// holds what a forward batch on the same v and θ saved).
    Backward {
        v: &'a [T],
        theta: &'a [T],
        saved: &'a [T],
        gy: &'a [T],
        gld: &'a [T],
        gv: &'a mut [T],
        gtheta: &'a mut [T],
    },
}

/// A kernel that runs a batch with the bin count K as a compile-time constant.
trait BinKernel<T> {
    /// Runs `batch` for K bins.
    fn run<const K: usize>(rqs: &Rqs, batch: Batch<'_, T>);
}

/// One site at a time, knots in f64 (any [`SplineFloat`]).
struct PerSite;

/// Groups of [`LANES`] f32 sites, one per vector lane.
struct LaneGroups;

impl<T: SplineFloat> BinKernel<T> for PerSite {
    #[inline(always)]
    fn run<const K: usize>(rqs: &Rqs, batch: Batch<'_, T>) {
        rqs.run_bins::<T, K>(batch)
    }
}

impl BinKernel<f32> for LaneGroups {
    #[inline(always)]
    fn run<const K: usize>(rqs: &Rqs, batch: Batch<'_, f32>) {
        rqs.run_lanes::<K>(batch)
    }
}

impl Rqs {
    /// Runs `batch` with kernel `B` and the bin count as a compile-time constant.
    fn run<T, B: BinKernel<T>>(&self, batch: Batch<'_, T>) {
        macro_rules! dispatch {
            ($($k:literal)*) => {
                match self.bins {
                    $($k => self.run_bins_dispatch::<T, B, $k>(batch),)*
                    // `new` admits 1 ..= MAX_BINS only.
                    _ => unreachable!("bins out of range"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
    }

    /// Runs `batch` compiled for AVX2 + FMA when the processor has them (8 f32 / 4 f64
    /// lanes), else for the baseline target.
    fn run_bins_dispatch<T, B: BinKernel<T>, const K: usize>(&self, batch: Batch<'_, T>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor supports the features `run_bins_avx2` is compiled for.
            unsafe { self.run_bins_avx2::<T, B, K>(batch) };
            return;
        }
        B::run::<K>(self, batch)
    }

    /// `B::run` compiled with AVX2 and FMA enabled.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_bins_avx2<T, B: BinKernel<T>, const K: usize>(&self, batch: Batch<'_, T>) {
        B::run::<K>(self, batch)
    }

    #[inline(always)]
    fn run_bins<T: SplineFloat, const K: usize>(&self, batch: Batch<'_, T>) {
        let k = 3 * K - 1;
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
                        self.forward_site::<T, K>(vi, raw)
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
                        self.inverse_site::<T, K>(yi, raw)
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
                        self.backward_site::<T, K>(vi, raw, gyi, gldi, gvi, graw);
                    } else {
                        *gvi = *gvi + gyi;
                    }
                }
            }
        }
    }

    /// C and log C' of one site inside (−a, a).
    #[inline(always)]
    fn forward_site<T: SplineFloat, const K: usize>(&self, v: T, raw: &[T]) -> (T, T) {
        let v = v.widen();
        let spline = SiteSpline::<T, K>::new(self, raw);
        let seg = spline.segment(spline.xs.locate(v));
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        (
            T::narrow(seg.y0 + seg.h * seg.ratio(alpha)),
            T::narrow(T::ln_wide(seg.slope(alpha))),
        )
    }

    /// C⁻¹ and log |∂C⁻¹/∂y| of one site inside (−a, a).
    #[inline(always)]
    fn inverse_site<T: SplineFloat, const K: usize>(&self, y: T, raw: &[T]) -> (T, T) {
        let y = y.widen();
        let spline = SiteSpline::<T, K>::new(self, raw);
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
    fn backward_site<T: SplineFloat, const K: usize>(
        &self,
        v: T,
        raw: &[T],
        gy: T,
        gld: T,
        gv: &mut T,
        graw: &mut [T],
    ) {
        let v = v.widen();
        let spline = SiteSpline::<T, K>::new(self, raw);
        let l = spline.xs.locate(v).min(K - 1);
        let seg = spline.segment(l);
        let alpha = ((v - seg.x0) / seg.w).clamp(0.0, 1.0);
        let local = seg.gradients(alpha, gy.widen(), gld.widen());

        *gv = T::narrow(gv.widen() + local.alpha / seg.w);
        // α = (v − X_l)/w_l and s = h_l/w_l.
        let g_x0 = -local.alpha / seg.w;
        let g_w = -(local.alpha * alpha + local.s * seg.s) / seg.w;
        let g_h = local.h + local.s / seg.w;
        // X_l = −a + Σ_{j<l} w_j, likewise Y_l: the lower knot collects from every earlier bin.
        spline.xs.backward(l, g_x0, g_w, &mut graw[..K]);
        spline.ys.backward(l, local.y0, g_h, &mut graw[K..2 * K]);
        let d = spline.raw_derivatives;
        let gd = &mut graw[2 * K..];
        if l >= 1 {
            gd[l - 1] = T::narrow(gd[l - 1].widen() + local.d0 * sigmoid::<T>(d[l - 1].widen()));
        }
        if l + 1 < K {
            gd[l] = T::narrow(gd[l].widen() + local.d1 * sigmoid::<T>(d[l].widen()));
        }
    }
}

/// Sites per group of the f32 kernel: one site per lane of an AVX2 register.
const LANES: usize = 8;

/// One f32 per site of a group. The operations are element-wise loops of fixed length,
/// which the compiler turns into single vector instructions.
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

/// Lane-wise +, −, ×, ÷ for a one-value-per-lane type ([`Lanes`], [`Wide`]).
macro_rules! lanewise_binary_ops {
    ($ty:ident: $($trait:ident $method:ident $op:tt),*) => {$(
        impl std::ops::$trait for $ty {
            type Output = $ty;
            #[inline(always)]
            fn $method(self, other: $ty) -> $ty {
                let mut out = self.0;
                for ((o, &x), &y) in out.iter_mut().zip(&self.0).zip(&other.0) {
                    *o = x $op y;
                }
                $ty(out)
            }
        }
    )*};
}
lanewise_binary_ops!(Lanes: Add add +, Sub sub -, Mul mul *, Div div /);

impl Lanes {
    #[inline(always)]
    fn splat(x: f32) -> Lanes {
        Lanes([x; LANES])
    }

    /// The first `x.len()` (≤ LANES) lanes from `x`, zeros after.
    #[inline(always)]
    fn load(x: &[f32]) -> Lanes {
        let mut out = [0.0; LANES];
        out[..x.len()].copy_from_slice(x);
        Lanes(out)
    }

    /// Writes the first `out.len()` lanes.
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        out.copy_from_slice(&self.0[..out.len()]);
    }

    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Lanes {
        let mut out = self.0;
        for x in out.iter_mut() {
            *x = f(*x);
        }
        Lanes(out)
    }

    #[inline(always)]
    fn zip(self, other: Lanes, f: impl Fn(f32, f32) -> f32) -> Lanes {
        let mut out = self.0;
        for (x, &y) in out.iter_mut().zip(&other.0) {
            *x = f(*x, y);
        }
        Lanes(out)
    }

    /// `yes` in the lanes where `mask(lane)` holds, else `no`.
    #[inline(always)]
    fn select(mask: impl Fn(usize) -> bool, yes: Lanes, no: Lanes) -> Lanes {
        let mut out = no.0;
        for (lane, (x, &y)) in out.iter_mut().zip(&yes.0).enumerate() {
            *x = if mask(lane) { y } else { *x };
        }
        Lanes(out)
    }

    #[inline(always)]
    fn max(self, other: Lanes) -> Lanes {
        self.zip(other, |a, b| if a > b { a } else { b })
    }

    #[inline(always)]
    fn min(self, other: Lanes) -> Lanes {
        self.zip(other, |a, b| if a < b { a } else { b })
    }

    #[inline(always)]
    fn exp(self) -> Lanes {
        self.map(exp_f32)
    }

    #[inline(always)]
    fn ln(self) -> Lanes {
        self.map(ln_f32)
    }
}

impl SegmentMath for Lanes {
    #[inline(always)]
    fn constant(x: f64) -> Lanes {
        Lanes::splat(x as f32)
    }
    #[inline(always)]
    fn clamp01(self) -> Lanes {
        self.max(Lanes::splat(0.0)).min(Lanes::splat(1.0))
    }
    #[inline(always)]
    fn sqrt_nonneg(self) -> Lanes {
        self.max(Lanes::splat(0.0)).map(f32::sqrt)
    }
    #[inline(always)]
    fn if_positive(self, yes: Lanes, no: Lanes) -> Lanes {
        Lanes::select(|j| self.0[j] > 0.0, yes, no)
    }
}

/// softplus(x) = ln(1 + e⁻|ˣ|) + max(x, 0) and its derivative σ(x), lane-wise; ln(1 + u)
/// as ln(w) · u / (w − 1) with w = 1 + u rounded (exactly u where w rounds to 1).
#[inline(always)]
fn softplus_and_sigmoid(x: Lanes) -> (Lanes, Lanes) {
    let zero = Lanes::splat(0.0);
    let one = Lanes::splat(1.0);
    let u = (zero - x.zip(x, |a, _| a.abs())).exp();
    let w = one + u;
    let dw = w - one;
    let ratio = u / Lanes::select(|j| dw.0[j] == 0.0, one, dw);
    let log1p = Lanes::select(|j| dw.0[j] == 0.0, u, w.ln() * ratio);
    let r = one / w;
    let sigmoid = Lanes::select(|j| x.0[j] >= 0.0, r, u * r);
    (x.max(zero) + log1p, sigmoid)
}

/// The raw parameters of a group of sites, transposed to one [`Lanes`] per parameter:
/// widths, heights and the K − 1 interior derivatives (the last row of `d` is unused).
struct LaneParams<const K: usize> {
    w: [Lanes; K],
    h: [Lanes; K],
    d: [Lanes; K],
}

impl<const K: usize> LaneParams<K> {
    #[inline(always)]
    fn zeros() -> Self {
        let z = [Lanes::splat(0.0); K];
        LaneParams { w: z, h: z, d: z }
    }

    /// Transposes the 3K − 1 parameters per site of up to LANES consecutive sites
    /// (site-major); absent lanes get zeros.
    #[inline(always)]
    fn load(theta: &[f32]) -> Self {
        let mut p = Self::zeros();
        for (lane, raw) in theta.chunks_exact(3 * K - 1).enumerate() {
            for i in 0..K {
                p.w[i].0[lane] = raw[i];
                p.h[i].0[lane] = raw[K + i];
            }
            for i in 0..K - 1 {
                p.d[i].0[lane] = raw[2 * K + i];
            }
        }
        p
    }

    /// Adds the transposed parameters back into up to LANES sites of `out` (site-major).
    #[inline(always)]
    fn add_to(&self, out: &mut [f32]) {
        for (lane, raw) in out.chunks_exact_mut(3 * K - 1).enumerate() {
            for i in 0..K {
                raw[i] += self.w[i].0[lane];
                raw[K + i] += self.h[i].0[lane];
            }
            for i in 0..K - 1 {
                raw[2 * K + i] += self.d[i].0[lane];
            }
        }
    }
}

/// Softmax over the bins, lane-wise. The exponentials are f32; the normalisation and the bin sizes `min + scale · p` are f64,
/// so that the knots, running sums of the sizes, keep f64 accuracy as in the per-site kernel.
/// Returns p in f32 (for the backward pass) and the sizes in f64.
#[inline(always)]
fn softmax_lanes<const K: usize>(
    raw: &[Lanes; K],
    min: f64,
    scale: f64,
) -> ([Lanes; K], [Wide; K]) {
    let max = raw[1..].iter().fold(raw[0], |m, &r| m.max(r));
    let mut e = [Lanes::splat(0.0); K];
    let mut sum = Wide::splat(0.0);
    for (ei, &ri) in e.iter_mut().zip(raw) {
        *ei = (ri - max).exp();
        sum = sum.add(*ei);
    }
    let mut inv = sum;
    for x in inv.0.iter_mut() {
        *x = 1.0 / *x;
    }
    let mut p = [Lanes::splat(0.0); K];
    let mut sizes = [Wide::splat(0.0); K];
    for ((pi, si), ei) in p.iter_mut().zip(sizes.iter_mut()).zip(&e) {
        for lane in 0..LANES {
            let p64 = f64::from(ei.0[lane]) * inv.0[lane];
            pi.0[lane] = p64 as f32;
            si.0[lane] = min + scale * p64;
        }
    }
    (p, sizes)
}

/// The bin and segment of each lane of a group in f32, with the softmaxes and sigmoids
/// that the backward pass needs.
struct SplineCore<const K: usize> {
    /// Softmax of the raw widths and heights.
    pw: [Lanes; K],
    ph: [Lanes; K],
    /// The bin of each lane, as a float (0 ..= K − 1).
    bin: Lanes,
    segment: Segment<Lanes>,
    /// σ of the raw lower and upper knot derivatives (their softplus derivatives).
    sigmoid0: Lanes,
    sigmoid1: Lanes,
}

/// The segment of each lane of a group, with its knots in f64.
struct LaneSpline<const K: usize> {
    core: SplineCore<K>,
    /// The lower knots of each lane's bin in f64 (the running sums over the bins keep f64
    /// accuracy, so that α = (v − x0)/w stays accurate in narrow bins).
    x0: Wide,
    y0: Wide,
    /// The bin width and height of each lane in f64.
    w: Wide,
    h: Wide,
}

impl<const K: usize> LaneSpline<K> {
    /// The segment of every lane in f64, with its f64 knots, bin width and height.
    #[inline(always)]
    fn wide_segments(&self) -> Segment<Wide> {
        let seg = &self.core.segment;
        let widen = |x: Lanes| Wide::splat(0.0).add(x);
        Segment {
            x0: self.x0,
            w: self.w,
            y0: self.y0,
            h: self.h,
            s: self.h / self.w,
            d0: widen(seg.d0),
            d1: widen(seg.d1),
        }
    }
}

/// One f64 per site of a group: the knot sums.
#[derive(Clone, Copy)]
struct Wide([f64; LANES]);

lanewise_binary_ops!(Wide: Add add +, Sub sub -, Mul mul *, Div div /);

impl SegmentMath for Wide {
    #[inline(always)]
    fn constant(x: f64) -> Wide {
        Wide::splat(x)
    }
    #[inline(always)]
    fn clamp01(self) -> Wide {
        let mut out = self.0;
        for x in out.iter_mut() {
            *x = x.clamp(0.0, 1.0);
        }
        Wide(out)
    }
    #[inline(always)]
    fn sqrt_nonneg(self) -> Wide {
        let mut out = self.0;
        for x in out.iter_mut() {
            *x = x.max(0.0).sqrt();
        }
        Wide(out)
    }
    #[inline(always)]
    fn if_positive(self, yes: Wide, no: Wide) -> Wide {
        let mut out = no.0;
        for ((o, &c), &y) in out.iter_mut().zip(&self.0).zip(&yes.0) {
            if c > 0.0 {
                *o = y;
            }
        }
        Wide(out)
    }
}

impl Wide {
    #[inline(always)]
    fn splat(x: f64) -> Wide {
        Wide([x; LANES])
    }

    /// self + x, lane-wise.
    #[inline(always)]
    fn add(self, x: Lanes) -> Wide {
        let mut out = self.0;
        for (o, &b) in out.iter_mut().zip(&x.0) {
            *o += f64::from(b);
        }
        Wide(out)
    }

    /// self + x, lane-wise.
    #[inline(always)]
    fn plus(self, x: Wide) -> Wide {
        let mut out = self.0;
        for (o, &b) in out.iter_mut().zip(&x.0) {
            *o += b;
        }
        Wide(out)
    }

    /// `yes` in the lanes where `mask(lane)` holds, else `self`.
    #[inline(always)]
    fn select(self, mask: impl Fn(usize) -> bool, yes: Wide) -> Wide {
        let mut out = self.0;
        for (lane, (x, &y)) in out.iter_mut().zip(&yes.0).enumerate() {
            *x = if mask(lane) { y } else { *x };
        }
        Wide(out)
    }

    /// The nearest f32 of every lane.
    #[inline(always)]
    fn narrow(self) -> Lanes {
        let mut out = [0.0; LANES];
        for (o, &x) in out.iter_mut().zip(&self.0) {
            *o = x as f32;
        }
        Lanes(out)
    }

    /// ((key − self) / size) per lane, computed in f64, clamped to [0, 1], as f32.
    #[inline(always)]
    fn fraction(self, key: Lanes, size: Wide) -> Lanes {
        let mut out = [0.0; LANES];
        for (lane, o) in out.iter_mut().enumerate() {
            let f = (f64::from(key.0[lane]) - self.0[lane]) / size.0[lane];
            *o = f.clamp(0.0, 1.0) as f32;
        }
        Lanes(out)
    }
}

/// Lanes of state per group that the backward pass of a forward group needs: the softmax
/// of widths and heights (K each), the bin, the segment (7), α and the two sigmoids.
const fn lane_state_len(bins: usize) -> usize {
    2 * bins + 11
}

/// What the backward pass of a group needs from its forward pass, saved by a training
/// forward pass so that the backward pass does not rebuild the spline.
struct LaneState<const K: usize> {
    core: SplineCore<K>,
    /// Position inside the bin, (v − x0)/w computed in f64.
    alpha: Lanes,
}

impl<const K: usize> LaneState<K> {
    #[inline(always)]
    fn new(spline: LaneSpline<K>, alpha: Lanes) -> Self {
        LaneState {
            core: spline.core,
            alpha,
        }
    }

    /// The lanes after the two softmaxes, in their saved order.
    #[inline(always)]
    fn fixed(&self) -> [Lanes; 11] {
        let core = &self.core;
        let seg = &core.segment;
        [
            core.bin,
            seg.x0,
            seg.w,
            seg.y0,
            seg.h,
            seg.s,
            seg.d0,
            seg.d1,
            self.alpha,
            core.sigmoid0,
            core.sigmoid1,
        ]
    }

    /// Writes the state (`lane_state_len(K)` lanes, one after the other) into `out`.
    #[inline(always)]
    fn store(&self, out: &mut [f32]) {
        let fixed = self.fixed();
        let lanes = self.core.pw.iter().chain(&self.core.ph).chain(&fixed);
        for (x, o) in lanes.zip(out.chunks_exact_mut(LANES)) {
            o.copy_from_slice(&x.0);
        }
    }

    /// Reads a state written by [`LaneState::store`].
    #[inline(always)]
    fn load(saved: &[f32]) -> Self {
        let lane = |i: usize| {
            let mut x = [0.0; LANES];
            x.copy_from_slice(&saved[i * LANES..(i + 1) * LANES]);
            Lanes(x)
        };
        let f = 2 * K;
        LaneState {
            core: SplineCore {
                pw: std::array::from_fn(lane),
                ph: std::array::from_fn(|j| lane(K + j)),
                bin: lane(f),
                segment: Segment {
                    x0: lane(f + 1),
                    w: lane(f + 2),
                    y0: lane(f + 3),
                    h: lane(f + 4),
                    s: lane(f + 5),
                    d0: lane(f + 6),
                    d1: lane(f + 7),
                },
                sigmoid0: lane(f + 9),
                sigmoid1: lane(f + 10),
            },
            alpha: lane(f + 8),
        }
    }
}

impl Rqs {
    /// The spline of each lane at `key`, which is located among the x knots (forward) or
    /// the y knots (inverse). One pass over the bins builds the knots (sizes in f32, sums in f64) and keeps,
    /// per lane, the last bin whose lower knot is at or below the key.
    #[inline(always)]
    fn lane_spline<const K: usize>(
        &self,
        params: &LaneParams<K>,
        key: Lanes,
        key_on_y: bool,
    ) -> LaneSpline<K> {
        let scale = |min: f64| 2.0 * self.bound - K as f64 * min;
        let (pw, ws) = softmax_lanes(&params.w, self.min_bin_width, scale(self.min_bin_width));
        let (ph, hs) = softmax_lanes(&params.h, self.min_bin_height, scale(self.min_bin_height));
        let zero = Lanes::splat(0.0);
        let upper_raw = |j: usize| if j + 1 < K { params.d[j] } else { zero };

        let mut x0 = Wide::splat(-self.bound);
        let mut y0 = x0;
        let (mut w, mut h) = (ws[0], hs[0]);
        let (mut raw0, mut raw1) = (zero, upper_raw(0));
        let mut bin = zero;
        let (mut xk, mut yk) = (x0.plus(w), y0.plus(h));
        for j in 1..K {
            let knot = if key_on_y { yk } else { xk };
            let at_or_below = |l: usize| knot.0[l] <= f64::from(key.0[l]);
            let take = |new: Lanes, old: Lanes| Lanes::select(at_or_below, new, old);
            x0 = x0.select(at_or_below, xk);
            y0 = y0.select(at_or_below, yk);
            w = w.select(at_or_below, ws[j]);
            h = h.select(at_or_below, hs[j]);
            raw0 = take(params.d[j - 1], raw0);
            raw1 = take(upper_raw(j), raw1);
            bin = take(Lanes::splat(j as f32), bin);
            xk = xk.plus(ws[j]);
            yk = yk.plus(hs[j]);
        }
        let (w32, h32) = (w.narrow(), h.narrow());
        let (softplus0, sigmoid0) = softplus_and_sigmoid(raw0);
        let (softplus1, sigmoid1) = softplus_and_sigmoid(raw1);
        let one = Lanes::splat(1.0);
        let min_d = Lanes::splat(self.min_derivative as f32);
        let last = (K - 1) as f32;
        let d0 = Lanes::select(|l| bin.0[l] == 0.0, one, softplus0 + min_d);
        let d1 = Lanes::select(|l| bin.0[l] == last, one, softplus1 + min_d);
        LaneSpline {
            core: SplineCore {
                pw,
                ph,
                bin,
                segment: Segment {
                    x0: x0.narrow(),
                    w: w32,
                    y0: y0.narrow(),
                    h: h32,
                    s: h32 / w32,
                    d0,
                    d1,
                },
                sigmoid0,
                sigmoid1,
            },
            x0,
            y0,
            w,
            h,
        }
    }

    /// Lanes strictly inside (−a, a).
    #[inline(always)]
    fn lanes_inside(&self, x: Lanes) -> impl Fn(usize) -> bool {
        let bound = self.bound as f32;
        move |l| x.0[l] > -bound && x.0[l] < bound
    }

    /// C and log C' of a group (identity outside (−a, a)), with the state its backward pass
    /// needs.
    #[inline(always)]
    fn forward_lanes<const K: usize>(
        &self,
        v: Lanes,
        params: &LaneParams<K>,
    ) -> (Lanes, Lanes, LaneState<K>) {
        let spline = self.lane_spline(params, v, false);
        let seg = &spline.core.segment;
        let alpha = spline.x0.fraction(v, spline.w);
        // y = y0 + h R(α) in f64, rounded once: an f32 R would carry a relative error that
        // the inverse amplifies by 1/R'(α) where the spline is flat.
        let seg64 = spline.wide_segments();
        let v64 = Wide::splat(0.0).add(v);
        let alpha64 = ((v64 - seg64.x0) / seg64.w).clamp01();
        let y = (seg64.y0 + seg64.h * seg64.ratio(alpha64)).narrow();
        let ld = seg.slope(alpha).ln();
        let inside = self.lanes_inside(v);
        (
            Lanes::select(&inside, y, v),
            Lanes::select(&inside, ld, Lanes::splat(0.0)),
            LaneState::new(spline, alpha),
        )
    }

    /// C⁻¹ and log |∂C⁻¹/∂y| of a group (identity outside (−a, a)).
    #[inline(always)]
    fn inverse_lanes<const K: usize>(&self, y: Lanes, params: &LaneParams<K>) -> (Lanes, Lanes) {
        let spline = self.lane_spline(params, y, true);
        // The root of the quadratic loses digits to cancellation in f32 where the slope is
        // steep, so each lane solves in f64 (the inverse is off the training path).
        let seg64 = spline.wide_segments();
        let xi = ((Wide::splat(0.0).add(y) - seg64.y0) / seg64.h).clamp01();
        let alpha = seg64.solve(xi);
        let v = (seg64.x0 + alpha * seg64.w).narrow();
        let slope = seg64.slope(alpha);
        let mut ld = Lanes::splat(0.0);
        for (l, &s) in ld.0.iter_mut().zip(&slope.0) {
            *l = -(s.ln()) as f32;
        }
        let inside = self.lanes_inside(y);
        (
            Lanes::select(&inside, v, y),
            Lanes::select(&inside, ld, Lanes::splat(0.0)),
        )
    }

    /// The state of a group that the backward pass needs, recomputed from the parameters.
    #[inline(always)]
    fn lane_state<const K: usize>(&self, v: Lanes, params: &LaneParams<K>) -> LaneState<K> {
        let spline = self.lane_spline(params, v, false);
        let alpha = spline.x0.fraction(v, spline.w);
        LaneState::new(spline, alpha)
    }

    /// ∂L/∂v and ∂L/∂θ of a group given ∂L/∂y and ∂L/∂ld and the group's state.
    #[inline(always)]
    fn backward_lanes<const K: usize>(
        &self,
        v: Lanes,
        state: &LaneState<K>,
        gy: Lanes,
        gld: Lanes,
    ) -> (Lanes, LaneParams<K>) {
        let seg = &state.core.segment;
        let alpha = state.alpha;
        let local = seg.gradients(alpha, gy, gld);
        let inside = self.lanes_inside(v);
        let zero = Lanes::splat(0.0);
        let masked = |g: Lanes| Lanes::select(&inside, g, zero);
        let inv_w = Lanes::splat(1.0) / seg.w;

        let gv = Lanes::select(&inside, local.alpha * inv_w, gy);
        // α = (v − X_l)/w_l and s = h_l/w_l.
        let g_x0 = masked(zero - local.alpha * inv_w);
        let g_w = masked(zero - (local.alpha * alpha + local.s * seg.s) * inv_w);
        let g_y0 = masked(local.y0);
        let g_h = masked(local.h + local.s * inv_w);
        let g_d0 = masked(local.d0 * state.core.sigmoid0);
        let g_d1 = masked(local.d1 * state.core.sigmoid1);

        let bound = self.bound as f32;
        let scale_w = 2.0 * bound - K as f32 * self.min_bin_width as f32;
        let scale_h = 2.0 * bound - K as f32 * self.min_bin_height as f32;
        let mut grad = LaneParams::<K>::zeros();
        let core = &state.core;
        let bin = core.bin;
        self.axis_backward_lanes(&core.pw, bin, g_x0, g_w, scale_w, &mut grad.w);
        self.axis_backward_lanes(&core.ph, bin, g_y0, g_h, scale_h, &mut grad.h);
        // Knot derivative j + 1 is the upper end of bin j and the lower end of bin j + 1.
        for (j, gd) in grad.d[..K - 1].iter_mut().enumerate() {
            let upper = j as f32;
            let lower = (j + 1) as f32;
            *gd = Lanes::select(|l| bin.0[l] == upper, g_d1, zero)
                + Lanes::select(|l| bin.0[l] == lower, g_d0, zero);
        }
        (gv, grad)
    }

    /// The gradient through one axis of a group, given ∂L/∂(lower knot of the bin) and
    /// ∂L/∂(size of the bin): the bin sizes get g_j = g_knot [j < l] + g_size [j = l],
    /// and softmax backprop gives scale · p_j (g_j − Σ_i g_i p_i).
    #[inline(always)]
    fn axis_backward_lanes<const K: usize>(
        &self,
        p: &[Lanes; K],
        bin: Lanes,
        g_knot: Lanes,
        g_size: Lanes,
        scale: f32,
        out: &mut [Lanes; K],
    ) {
        let zero = Lanes::splat(0.0);
        let mut mean = zero;
        for (j, (gj, &pj)) in out.iter_mut().zip(p).enumerate() {
            let j = j as f32;
            *gj = Lanes::select(
                |l| j < bin.0[l],
                g_knot,
                Lanes::select(|l| j == bin.0[l], g_size, zero),
            );
            mean = mean + *gj * pj;
        }
        let scale = Lanes::splat(scale);
        for (gj, &pj) in out.iter_mut().zip(p) {
            *gj = scale * pj * (*gj - mean);
        }
    }

    /// The f32 kernel: the batch in groups of LANES sites (the last one padded).
    #[inline(always)]
    fn run_lanes<const K: usize>(&self, batch: Batch<'_, f32>) {
        let group = LANES * (3 * K - 1);
        let state_len = LANES * lane_state_len(K);
        match batch {
            Batch::Forward {
                v,
                theta,
                y,
                ld,
                saved,
            } => {
                debug_assert_eq!(theta.len(), v.len() * (3 * K - 1));
                debug_assert!(saved.is_empty() || saved.len() == f32::saved_len(self, v.len()));
                // An empty `saved` yields no chunk: nothing is saved.
                let mut saved = saved.chunks_mut(state_len);
                for (((v, theta), y), ld) in v
                    .chunks(LANES)
                    .zip(theta.chunks(group))
                    .zip(y.chunks_mut(LANES))
                    .zip(ld.chunks_mut(LANES))
                {
                    let (yg, ldg, state) =
                        self.forward_lanes(Lanes::load(v), &LaneParams::<K>::load(theta));
                    yg.store(y);
                    ldg.store(ld);
                    if let Some(out) = saved.next() {
                        state.store(out);
                    }
                }
            }
            Batch::Inverse { y, theta, v, ld } => {
                debug_assert_eq!(theta.len(), y.len() * (3 * K - 1));
                for (((y, theta), v), ld) in y
                    .chunks(LANES)
                    .zip(theta.chunks(group))
                    .zip(v.chunks_mut(LANES))
                    .zip(ld.chunks_mut(LANES))
                {
                    let (vg, ldg) =
                        self.inverse_lanes(Lanes::load(y), &LaneParams::<K>::load(theta));
                    vg.store(v);
                    ldg.store(ld);
                }
            }
            Batch::Backward {
                v,
                theta,
                saved,
                gy,
                gld,
                gv,
                gtheta,
            } => {
                debug_assert_eq!(theta.len(), v.len() * (3 * K - 1));
                debug_assert_eq!(gtheta.len(), theta.len());
                debug_assert!(saved.is_empty() || saved.len() == f32::saved_len(self, v.len()));
                let mut saved = saved.chunks(state_len);
                for ((((v, theta), (gy, gld)), gv), gtheta) in v
                    .chunks(LANES)
                    .zip(theta.chunks(group))
                    .zip(gy.chunks(LANES).zip(gld.chunks(LANES)))
                    .zip(gv.chunks_mut(LANES))
                    .zip(gtheta.chunks_mut(group))
                {
                    let v = Lanes::load(v);
                    let state = match saved.next() {
                        Some(state) => LaneState::load(state),
                        None => self.lane_state(v, &LaneParams::<K>::load(theta)),
                    };
                    let (gvg, grad) =
                        self.backward_lanes(v, &state, Lanes::load(gy), Lanes::load(gld));
                    (Lanes::load(gv) + gvg).store(gv);
                    grad.add_to(gtheta);
                }
            }
        }
    }
}

impl<T: SplineFloat> PointwiseTransform<T> for Rqs {
    fn params_per_site(&self) -> usize {
        3 * self.bins - 1
    }

    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]) {
        self.forward_saving(v, theta, y, ld, &mut []);
    }

    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]) {
        T::run_spline(self, Batch::Inverse { y, theta, v, ld });
    }

    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        self.backward_saved(v, theta, &[], gy, gld, gv, gtheta);
    }

    fn saved_len(&self, sites: usize) -> usize {
        T::saved_len(self, sites)
    }

    fn forward_saving(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T], saved: &mut [T]) {
        let batch = Batch::Forward {
            v,
            theta,
            y,
            ld,
            saved,
        };
        T::run_spline(self, batch);
    }

    fn backward_saved(
        &self,
        v: &[T],
        theta: &[T],
        saved: &[T],
        gy: &[T],
        gld: &[T],
        gv: &mut [T],
        gtheta: &mut [T],
    ) {
        let batch = Batch::Backward {
            v,
            theta,
            saved,
            gy,
            gld,
            gv,
            gtheta,
        };
        T::run_spline(self, batch);
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
            let (mut y, mut ld) = ([0.0], [0.0]);
            r.forward(&[x], &raw, &mut y, &mut ld);
            let y = y[0];
            assert!((y - x).abs() < 1e-12, "knot {k}: {y} vs {x}");
        }
    }
}

#[cfg(test)]
mod fast_math_tests {
    use super::*;

    /// Every 61st f32 in [lo, hi] (a few hundred thousand points spread over all exponents).
    fn floats_between(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let start = lo.to_bits();
        let end = hi.to_bits();
        (start..=end).step_by(61).map(f32::from_bits)
    }

    #[test]
    fn exp_f32_relative_error_is_within_its_stated_bound() {
        let mut worst = 0.0f64;
        // Negative and positive halves of [−87, 88] (bit patterns run in opposite orders).
        for x in floats_between(0.0, 87.0)
            .map(|x| -x)
            .chain(floats_between(0.0, 88.0))
        {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
        // Clamped outside the range: finite, positive, monotone at the ends.
        assert!(exp_f32(-1e30) > 0.0 && exp_f32(-1e30) == exp_f32(-87.0));
        assert!(exp_f32(1e30).is_finite() && exp_f32(1e30) == exp_f32(88.0));
    }

    #[test]
    fn ln_f32_error_is_within_its_stated_bound() {
        let mut worst = 0.0f64;
        for x in floats_between(f32::MIN_POSITIVE, f32::MAX) {
            let exact = (x as f64).ln();
            worst = worst.max((ln_f32(x) as f64 - exact).abs() / exact.abs().max(1.0));
        }
        assert!(worst < 1.2e-7, "max scaled error {worst:e}");
        for bad in [0.0, -1.0, 1e-45, f32::MIN_POSITIVE / 4.0] {
            assert_eq!(ln_f32(bad), ln_f32(f32::MIN_POSITIVE));
        }
    }

    #[test]
    fn f32_ln_1p_and_softplus_match_f64() {
        for i in 0..=20_000 {
            let u = i as f32 / 20_000.0 * if i % 2 == 0 { 1.0 } else { 1e-6 };
            let exact = (u as f64).ln_1p();
            let err = (f32::ln_1p_wide(u as f64) - exact).abs();
            assert!(
                err <= 2.5e-7 * exact.abs() + 1e-45,
                "ln_1p({u}): error {err:e}"
            );
        }
        for i in 0..=8000 {
            let x = -40.0 + i as f32 * 0.01;
            let exact = softplus::<f64>(x as f64);
            let err = (softplus::<f32>(x as f64) - exact).abs();
            assert!(err <= 5e-7 * exact, "softplus({x}): error {err:e}");
            let exact = sigmoid::<f64>(x as f64);
            let err = (sigmoid::<f32>(x as f64) - exact).abs();
            assert!(err <= 5e-7 * exact, "sigmoid({x}): error {err:e}");
        }
    }
}

#[cfg(test)]
mod precision_tests {
    use super::*;
    use crate::rng::rng_from_seed;
    use rand::RngExt;

    fn sites(k: usize, n: usize, v_max: f32, theta_max: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = rng_from_seed(seed);
        let v = (0..n).map(|_| rng.random_range(-v_max..v_max)).collect();
        let theta = (0..n * k)
            .map(|_| rng.random_range(-theta_max..theta_max))
            .collect();
        (v, theta)
    }

    fn widen(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&x| x as f64).collect()
    }

    /// For several bin counts, the f32 kernel (f32 exponentials and logarithm) agrees with
    /// the f64 one on the same inputs: y and ld to 1e-5 (1 + |·|), the backward pass to
    /// 1e-4 (1 + |·|), the standard of `tests/transforms.rs`.
    #[test]
    fn f32_kernel_agrees_with_f64_for_all_bin_counts() {
        let close = |a: f32, b: f64, tol: f64| (a as f64 - b).abs() <= tol * (1.0 + b.abs());
        for bins in [1, 2, 3, 8, 13, 32] {
            let r = Rqs::new(bins, 4.0).unwrap();
            let k = 3 * bins - 1;
            let n = 400;
            let (v, theta) = sites(k, n, 5.0, 2.0, bins as u64);
            let (gy, gld) = sites(1, n, 1.0, 1.0, 100 + bins as u64);
            let (mut y32, mut ld32) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut y64, mut ld64) = (vec![0.0; n], vec![0.0; n]);
            r.forward(&v, &theta, &mut y32, &mut ld32);
            r.forward(&widen(&v), &widen(&theta), &mut y64, &mut ld64);
            let (mut gv32, mut gt32) = (vec![0.0f32; n], vec![0.0f32; n * k]);
            let (mut gv64, mut gt64) = (vec![0.0; n], vec![0.0; n * k]);
            r.backward(&v, &theta, &gy, &gld[..n], &mut gv32, &mut gt32);
            let (gy64, gld64) = (widen(&gy), widen(&gld[..n]));
            r.backward(
                &widen(&v),
                &widen(&theta),
                &gy64,
                &gld64,
                &mut gv64,
                &mut gt64,
            );
            for i in 0..n {
                assert!(close(y32[i], y64[i], 1e-5), "K={bins} y[{i}]");
                assert!(close(ld32[i], ld64[i], 1e-5), "K={bins} ld[{i}]");
                assert!(close(gv32[i], gv64[i], 1e-4), "K={bins} gv[{i}]");
            }
            for j in 0..n * k {
                assert!(close(gt32[j], gt64[j], 1e-4), "K={bins} gθ[{j}]");
            }
        }
    }

    /// Inputs up to |v| = 50 and raw parameters up to ±80 (softmax weights spanning e^160,
    /// knot derivatives from 1e-3 to 80) give finite f32 outputs, inverses and gradients.
    #[test]
    fn f32_kernel_is_finite_for_extreme_inputs() {
        let r = Rqs::default();
        let k = 23;
        let n = 4000;
        let (v, theta) = sites(k, n, 50.0, 80.0, 7);
        let (mut y, mut ld) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut back, mut ld_back) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut gv, mut gt) = (vec![0.0f32; n], vec![0.0f32; n * k]);
        r.forward(&v, &theta, &mut y, &mut ld);
        r.inverse(&y, &theta, &mut back, &mut ld_back);
        r.backward(&v, &theta, &y, &ld, &mut gv, &mut gt);
        let inside = v.iter().filter(|x| x.abs() < 5.0).count();
        assert!(inside > 300, "too few sites inside the spline: {inside}");
        for x in [&y, &ld, &back, &ld_back, &gv, &gt] {
            assert!(x.iter().all(|x| x.is_finite()));
        }
    }
}
