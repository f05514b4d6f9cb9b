//! The monotone rational-quadratic spline (RQS) transform (Durkan et al. 2019): K segments
//! on [−a, a], identity outside, with an analytic inverse and a hand-derived backward pass
//! through softmax, cumulative sums and softplus.
//!
//! One kernel serves both float types: it runs on stack arrays whose length C is a const
//! parameter — C = K for the common bin counts, so that every per-site loop has a fixed trip
//! count, and C = [`MAX_BINS`] with K read at run time for the others (same code, same
//! results) — and is generic over [`SplineFloat`], which supplies exp and ln — the standard
//! library's in f64, the branch-free polynomials [`exp_f32`] and [`ln_f32`] in f32 so that
//! the loops over bins vectorise. The bin search is a branch-free count of the knots below
//! the input.
//!
//! This module holds the type, its validation and serialisation, the float trait and the
//! dispatch over bin counts; `scalar` the per-site kernel (any [`SplineFloat`]), `lanes`
//! the f32 kernel over groups of sixteen sites, and `segment` the segment formulas both share.

use serde::{Deserialize, Serialize};

use super::{PointwiseTransform, Real};
use crate::error::{Error, Result};
use crate::tape::{exp_f32, ln_f32};

mod lanes;
mod scalar;
mod segment;
#[cfg(test)]
mod tests;

use lanes::{LANES, LaneGroups, lane_state_len};
use scalar::PerSite;

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

/// The float types the spline kernel reads and writes. The kernel computes knots and
/// segments in f64 (so that the bin geometry, a running sum over bins, keeps f64 accuracy)
/// and evaluates its transcendental functions at the precision of the slices: the standard
/// library's in f64, the branch-free [`exp_f32`] and [`ln_f32`] in f32, so that the loops
/// over the bins of a site vectorise. Implemented for f32 and f64 (sealed through [`Real`]).
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

/// A kernel that runs a batch of splines with `bins` = K bins on per-bin arrays of
/// capacity C ≥ K.
trait BinKernel<T> {
    /// Runs `batch` for `bins` bins with arrays of capacity C.
    fn run<const C: usize>(rqs: &Rqs, bins: usize, batch: Batch<'_, T>);
}

/// Compiles the kernels with K as a constant for the listed bin counts (fixed trip counts,
/// arrays of exactly K); every other count runs the same code on arrays of [`MAX_BINS`]
/// with K read at run time, which gives the same results bit for bit. Few specialisations
/// keep the crate's build time down: each is compiled for both float types and both targets.
macro_rules! specialise_bins {
    ($($k:literal)*) => {
        /// The bin counts with kernels compiled for K as a constant.
        #[cfg(test)]
        const SPECIALISED_BINS: &[usize] = &[$($k),*];

        impl Rqs {
            /// Runs `batch` with kernel `B`, specialised for the bin count where one is.
            fn run<T, B: BinKernel<T>>(&self, batch: Batch<'_, T>) {
                match self.bins {
                    $($k => self.run_bins_dispatch::<T, B, $k, true>(batch),)*
                    _ => self.run_general::<T, B>(batch),
                }
            }
        }
    };
}
specialise_bins!(4 6 8 10 12 16);

impl Rqs {
    /// Runs `batch` with kernel `B` on arrays of [`MAX_BINS`], the bin count read at run
    /// time (`new` admits 1 ..= MAX_BINS only).
    fn run_general<T, B: BinKernel<T>>(&self, batch: Batch<'_, T>) {
        self.run_bins_dispatch::<T, B, MAX_BINS, false>(batch)
    }

    /// Runs `batch` compiled for AVX-512 (a group's 16 f32 lanes in one register) or AVX2 +
    /// FMA when the processor has them, else for the baseline target; the arithmetic is the
    /// same in each (no contraction into fused operations but the explicit ones). With
    /// `FIXED` the bin count is C, a compile-time constant; otherwise it is `self.bins` ≤ C.
    fn run_bins_dispatch<T, B: BinKernel<T>, const C: usize, const FIXED: bool>(
        &self,
        batch: Batch<'_, T>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor supports the features `run_bins_avx512` is compiled for.
            unsafe { self.run_bins_avx512::<T, B, C, FIXED>(batch) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor supports the features `run_bins_avx2` is compiled for.
            unsafe { self.run_bins_avx2::<T, B, C, FIXED>(batch) };
            return;
        }
        B::run::<C>(self, self.bin_count::<C, FIXED>(), batch)
    }

    /// `B::run` compiled with AVX2 and FMA enabled.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_bins_avx2<T, B: BinKernel<T>, const C: usize, const FIXED: bool>(
        &self,
        batch: Batch<'_, T>,
    ) {
        B::run::<C>(self, self.bin_count::<C, FIXED>(), batch)
    }

    /// `B::run` compiled with AVX-512 (F, VL, DQ) and FMA enabled.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    fn run_bins_avx512<T, B: BinKernel<T>, const C: usize, const FIXED: bool>(
        &self,
        batch: Batch<'_, T>,
    ) {
        B::run::<C>(self, self.bin_count::<C, FIXED>(), batch)
    }

    /// The bin count as the kernels see it: the constant C when `FIXED`, else `self.bins`.
    #[inline(always)]
    fn bin_count<const C: usize, const FIXED: bool>(&self) -> usize {
        if FIXED { C } else { self.bins }
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
