//! The f32 spline kernel over groups of [`LANES`] sites, one per vector lane: exponentials
//! and logarithms in f32, knot sums, y and the inverse solve in f64.

use super::segment::{Segment, SegmentMath};
use super::{Batch, BinKernel, Rqs, SplineFloat};
use crate::tape::{exp_f32, ln_f32};

/// Sites per group of the f32 kernel: one site per lane of an AVX-512 register (two AVX2
/// registers); the f64 knot sums take two 512-bit registers.
pub(super) const LANES: usize = 16;

/// One f32 per site of a group. The operations are element-wise loops of fixed length,
/// which the compiler turns into vector instructions.
#[derive(Clone, Copy)]
pub(super) struct Lanes([f32; LANES]);

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
/// widths, heights and the K − 1 interior derivatives (the last row of `d` is unused), in
/// arrays of capacity C ≥ K = `bins` (C = K where the bin count is a compile-time constant).
struct LaneParams<const C: usize> {
    bins: usize,
    w: [Lanes; C],
    h: [Lanes; C],
    d: [Lanes; C],
}

impl<const C: usize> LaneParams<C> {
    #[inline(always)]
    fn zeros(bins: usize) -> Self {
        let z = [Lanes::splat(0.0); C];
        LaneParams {
            bins,
            w: z,
            h: z,
            d: z,
        }
    }

    /// Transposes the 3K − 1 parameters per site of up to LANES consecutive sites
    /// (site-major); absent lanes get zeros.
    #[inline(always)]
    fn load(theta: &[f32], bins: usize) -> Self {
        let mut p = Self::zeros(bins);
        for (lane, raw) in theta.chunks_exact(3 * bins - 1).enumerate() {
            for i in 0..bins {
                p.w[i].0[lane] = raw[i];
                p.h[i].0[lane] = raw[bins + i];
            }
            for i in 0..bins - 1 {
                p.d[i].0[lane] = raw[2 * bins + i];
            }
        }
        p
    }

    /// Adds the transposed parameters back into up to LANES sites of `out` (site-major).
    #[inline(always)]
    fn add_to(&self, out: &mut [f32]) {
        let bins = self.bins;
        for (lane, raw) in out.chunks_exact_mut(3 * bins - 1).enumerate() {
            for i in 0..bins {
                raw[i] += self.w[i].0[lane];
                raw[bins + i] += self.h[i].0[lane];
            }
            for i in 0..bins - 1 {
                raw[2 * bins + i] += self.d[i].0[lane];
            }
        }
    }
}

/// Softmax over the bins, lane-wise. The exponentials are f32; the normalisation and the bin sizes `min + scale · p` are f64,
/// so that the knots, running sums of the sizes, keep f64 accuracy as in the per-site kernel.
/// Returns p in f32 (for the backward pass) and the sizes in f64 (the first `bins` entries).
#[inline(always)]
fn softmax_lanes<const C: usize>(
    raw: &[Lanes; C],
    bins: usize,
    min: f64,
    scale: f64,
) -> ([Lanes; C], [Wide; C]) {
    let raw = &raw[..bins];
    let max = raw[1..].iter().fold(raw[0], |m, &r| m.max(r));
    let mut e = [Lanes::splat(0.0); C];
    let e = &mut e[..bins];
    let mut sum = Wide::splat(0.0);
    for (ei, &ri) in e.iter_mut().zip(raw) {
        *ei = (ri - max).exp();
        sum = sum.add(*ei);
    }
    let mut inv = sum;
    for x in inv.0.iter_mut() {
        *x = 1.0 / *x;
    }
    let mut p = [Lanes::splat(0.0); C];
    let mut sizes = [Wide::splat(0.0); C];
    for ((pi, si), ei) in p[..bins].iter_mut().zip(sizes[..bins].iter_mut()).zip(&*e) {
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
struct SplineCore<const C: usize> {
    /// The number of bins K ≤ C.
    bins: usize,
    /// Softmax of the raw widths and heights (the first K entries).
    pw: [Lanes; C],
    ph: [Lanes; C],
    /// The bin of each lane, as a float (0 ..= K − 1).
    bin: Lanes,
    segment: Segment<Lanes>,
    /// σ of the raw lower and upper knot derivatives (their softplus derivatives).
    sigmoid0: Lanes,
    sigmoid1: Lanes,
}

/// The segment of each lane of a group, with its knots in f64.
struct LaneSpline<const C: usize> {
    core: SplineCore<C>,
    /// The lower knots of each lane's bin in f64 (the running sums over the bins keep f64
    /// accuracy, so that α = (v − x0)/w stays accurate in narrow bins).
    x0: Wide,
    y0: Wide,
    /// The bin width and height of each lane in f64.
    w: Wide,
    h: Wide,
}

impl<const C: usize> LaneSpline<C> {
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
pub(super) const fn lane_state_len(bins: usize) -> usize {
    2 * bins + 11
}

/// What the backward pass of a group needs from its forward pass, saved by a training
/// forward pass so that the backward pass does not rebuild the spline.
struct LaneState<const C: usize> {
    core: SplineCore<C>,
    /// Position inside the bin, (v − x0)/w computed in f64.
    alpha: Lanes,
}

impl<const C: usize> LaneState<C> {
    #[inline(always)]
    fn new(spline: LaneSpline<C>, alpha: Lanes) -> Self {
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
        let bins = self.core.bins;
        let (pw, ph) = (&self.core.pw[..bins], &self.core.ph[..bins]);
        let lanes = pw.iter().chain(ph).chain(&fixed);
        for (x, o) in lanes.zip(out.chunks_exact_mut(LANES)) {
            o.copy_from_slice(&x.0);
        }
    }

    /// Reads a state written by [`LaneState::store`].
    #[inline(always)]
    fn load(saved: &[f32], bins: usize) -> Self {
        let lane = |i: usize| {
            let mut x = [0.0; LANES];
            x.copy_from_slice(&saved[i * LANES..(i + 1) * LANES]);
            Lanes(x)
        };
        let first = |i: usize, j: usize| {
            if j < bins {
                lane(i + j)
            } else {
                Lanes::splat(0.0)
            }
        };
        let f = 2 * bins;
        LaneState {
            core: SplineCore {
                bins,
                pw: std::array::from_fn(|j| first(0, j)),
                ph: std::array::from_fn(|j| first(bins, j)),
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

/// Groups of [`LANES`] f32 sites, one per vector lane.
pub(super) struct LaneGroups;

impl BinKernel<f32> for LaneGroups {
    #[inline(always)]
    fn run<const C: usize>(rqs: &Rqs, bins: usize, batch: Batch<'_, f32>) {
        rqs.run_lanes::<C>(bins, batch)
    }
}

impl Rqs {
    /// The spline of each lane at `key`, which is located among the x knots (forward) or
    /// the y knots (inverse). One pass over the bins builds the knots (sizes in f32, sums in f64) and keeps,
    /// per lane, the last bin whose lower knot is at or below the key.
    #[inline(always)]
    fn lane_spline<const C: usize>(
        &self,
        params: &LaneParams<C>,
        key: Lanes,
        key_on_y: bool,
    ) -> LaneSpline<C> {
        let bins = params.bins;
        let scale = |min: f64| 2.0 * self.bound - bins as f64 * min;
        let (min_w, min_h) = (self.min_bin_width, self.min_bin_height);
        let (pw, ws) = softmax_lanes(&params.w, bins, min_w, scale(min_w));
        let (ph, hs) = softmax_lanes(&params.h, bins, min_h, scale(min_h));
        let zero = Lanes::splat(0.0);
        let upper_raw = |j: usize| if j + 1 < bins { params.d[j] } else { zero };

        let mut x0 = Wide::splat(-self.bound);
        let mut y0 = x0;
        let (mut w, mut h) = (ws[0], hs[0]);
        let (mut raw0, mut raw1) = (zero, upper_raw(0));
        let mut bin = zero;
        let (mut xk, mut yk) = (x0.plus(w), y0.plus(h));
        for j in 1..bins {
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
        let last = (bins - 1) as f32;
        let d0 = Lanes::select(|l| bin.0[l] == 0.0, one, softplus0 + min_d);
        let d1 = Lanes::select(|l| bin.0[l] == last, one, softplus1 + min_d);
        LaneSpline {
            core: SplineCore {
                bins,
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
    fn forward_lanes<const C: usize>(
        &self,
        v: Lanes,
        params: &LaneParams<C>,
    ) -> (Lanes, Lanes, LaneState<C>) {
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
    fn inverse_lanes<const C: usize>(&self, y: Lanes, params: &LaneParams<C>) -> (Lanes, Lanes) {
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
    fn lane_state<const C: usize>(&self, v: Lanes, params: &LaneParams<C>) -> LaneState<C> {
        let spline = self.lane_spline(params, v, false);
        let alpha = spline.x0.fraction(v, spline.w);
        LaneState::new(spline, alpha)
    }

    /// ∂L/∂v and ∂L/∂θ of a group given ∂L/∂y and ∂L/∂ld and the group's state.
    #[inline(always)]
    fn backward_lanes<const C: usize>(
        &self,
        v: Lanes,
        state: &LaneState<C>,
        gy: Lanes,
        gld: Lanes,
    ) -> (Lanes, LaneParams<C>) {
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
        let core = &state.core;
        let bins = core.bins;
        let scale_w = 2.0 * bound - bins as f32 * self.min_bin_width as f32;
        let scale_h = 2.0 * bound - bins as f32 * self.min_bin_height as f32;
        let mut grad = LaneParams::<C>::zeros(bins);
        let bin = core.bin;
        let (pw, ph) = (&core.pw[..bins], &core.ph[..bins]);
        self.axis_backward_lanes(pw, bin, g_x0, g_w, scale_w, &mut grad.w[..bins]);
        self.axis_backward_lanes(ph, bin, g_y0, g_h, scale_h, &mut grad.h[..bins]);
        // Knot derivative j + 1 is the upper end of bin j and the lower end of bin j + 1.
        for (j, gd) in grad.d[..bins - 1].iter_mut().enumerate() {
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
    fn axis_backward_lanes(
        &self,
        p: &[Lanes],
        bin: Lanes,
        g_knot: Lanes,
        g_size: Lanes,
        scale: f32,
        out: &mut [Lanes],
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
    pub(super) fn run_lanes<const C: usize>(&self, bins: usize, batch: Batch<'_, f32>) {
        let group = LANES * (3 * bins - 1);
        let state_len = LANES * lane_state_len(bins);
        match batch {
            Batch::Forward {
                v,
                theta,
                y,
                ld,
                saved,
            } => {
                debug_assert_eq!(theta.len(), v.len() * (3 * bins - 1));
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
                        self.forward_lanes(Lanes::load(v), &LaneParams::<C>::load(theta, bins));
                    yg.store(y);
                    ldg.store(ld);
                    if let Some(out) = saved.next() {
                        state.store(out);
                    }
                }
            }
            Batch::Inverse { y, theta, v, ld } => {
                debug_assert_eq!(theta.len(), y.len() * (3 * bins - 1));
                for (((y, theta), v), ld) in y
                    .chunks(LANES)
                    .zip(theta.chunks(group))
                    .zip(v.chunks_mut(LANES))
                    .zip(ld.chunks_mut(LANES))
                {
                    let (vg, ldg) =
                        self.inverse_lanes(Lanes::load(y), &LaneParams::<C>::load(theta, bins));
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
                debug_assert_eq!(theta.len(), v.len() * (3 * bins - 1));
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
                        Some(state) => LaneState::load(state, bins),
                        None => self.lane_state(v, &LaneParams::<C>::load(theta, bins)),
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
