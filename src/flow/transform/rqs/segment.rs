//! One rational-quadratic segment of the spline: its value, slope, inverse and chain rule,
//! written once over [`SegmentMath`] for the per-site kernel (f64) and the lane kernel.

/// The arithmetic a segment evaluation needs: f64 for one site, [`Lanes`](super::lanes::Lanes) for a group of
/// f32 sites, so that both kernels share one set of formulas.
pub(super) trait SegmentMath:
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
pub(super) struct Segment<N> {
    pub(super) x0: N,
    pub(super) w: N,
    pub(super) y0: N,
    pub(super) h: N,
    pub(super) s: N,
    pub(super) d0: N,
    pub(super) d1: N,
}

/// ∂L/∂(α, s, d0, d1, y0, h) of one segment evaluation, h taken at fixed s.
pub(super) struct LocalGradients<N> {
    pub(super) alpha: N,
    pub(super) s: N,
    pub(super) d0: N,
    pub(super) d1: N,
    pub(super) y0: N,
    pub(super) h: N,
}

impl<N: SegmentMath> Segment<N> {
    /// The denominator s + (d0 + d1 − 2s) α(1−α), written as a sum of positive terms.
    #[inline(always)]
    pub(super) fn denominator(&self, alpha: N) -> N {
        let beta = N::constant(1.0) - alpha;
        self.s * (alpha * alpha + beta * beta) + (self.d0 + self.d1) * alpha * beta
    }

    /// R(α) with C = y0 + h R.
    #[inline(always)]
    pub(super) fn ratio(&self, alpha: N) -> N {
        let q = alpha * (N::constant(1.0) - alpha);
        (self.s * alpha * alpha + self.d0 * q) / self.denominator(alpha)
    }

    /// ∂C/∂v = (s/D)² [d1 α² + 2s α(1−α) + d0 (1−α)²], the argument of the one logarithm
    /// per site (D ≥ s/2, so s/D ≤ 2 and the product cannot overflow).
    #[inline(always)]
    pub(super) fn slope(&self, alpha: N) -> N {
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
    pub(super) fn solve(&self, xi: N) -> N {
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
    pub(super) fn gradients(&self, alpha: N, gy: N, gld: N) -> LocalGradients<N> {
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
