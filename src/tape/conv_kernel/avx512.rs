//! 512-bit f32 convolution kernels. Wide outputs (more than [`FEW_OUTPUTS`] channels, or
//! inputs too narrow for a vector) are vectorised over the output channels: a register block
//! of several sites × one or two 16-lane vectors of channels accumulates Σ x·W, each input
//! value broadcast from its place in the row. The last layer of a net (a few outputs from
//! many inputs) first multiplies every site by every tap's kernel (wide again, n_taps ·
//! c_out outputs) and then sums the products along the table. Weight gradients accumulate outer products over every site in registers the
//! same two ways. Thread-local buffers hold zeros (what an empty tap reads), a rearranged
//! kernel and the few-output pass's products; they are allocated once per thread and size.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{ConvShape, NO_SITE, Start};

/// Output channels up to which the kernels vectorise over the input channels.
const FEW_OUTPUTS: usize = 4;

/// Input channels from which the few-output kernels pay.
const MANY_INPUTS: usize = 8;

/// Kernel rows (tap, input channel) per register block of the wide weight gradient.
const KB: usize = 16;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            zeros: Vec::new(),
            transposed: Vec::new(),
            identity: Vec::new(),
            products: Vec::new(),
        })
    };
}

struct Scratch {
    /// At least as many zeros as a site has channels (rounded up to whole vectors).
    zeros: Vec<f32>,
    /// The kernel rearranged for the few-output pass, `[c_in, n_taps · c_out]`.
    transposed: Vec<f32>,
    /// The one-tap table of the sites in order.
    identity: Vec<u32>,
    /// The few-output pass's per-tap products of a block of rows.
    products: Vec<f32>,
}

/// Whether the processor runs these kernels (AVX-512F; the answer is cached by std).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether a convolution of these channel counts runs the few-output kernels.
fn few_outputs(shape: &ConvShape<'_>) -> bool {
    shape.c_out <= FEW_OUTPUTS && shape.c_in >= MANY_INPUTS
}

/// A mask of the first `n` (≤ 16) lanes.
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// Sizes the zero buffer for sites of `channels` channels.
fn zeros_for(scratch: &mut Scratch, channels: usize) -> *const f32 {
    let len = channels.div_ceil(16) * 16 + 16;
    if scratch.zeros.len() < len {
        scratch.zeros.resize(len, 0.0);
    }
    scratch.zeros.as_ptr()
}

/// The addresses of the input sites `N` table entries read (the zero buffer for an empty
/// tap): for i < N, `entry(i)` gives the input row and the table entry.
///
/// # Safety
/// Every table entry must lie inside the table; its entries must be sites of the row given
/// with it or [`NO_SITE`].
#[inline(always)]
unsafe fn table_sites<const N: usize>(
    shape: &ConvShape<'_>,
    zeros: *const f32,
    entry: impl Fn(usize) -> (*const f32, usize),
) -> [*const f32; N] {
    let mut p = [zeros; N];
    for (i, p) in p.iter_mut().enumerate() {
        let (row, e) = entry(i);
        // SAFETY: forwarded from the caller.
        let u = unsafe { *shape.table.get_unchecked(e) };
        if u != NO_SITE {
            *p = row.wrapping_add(u as usize * shape.c_in);
        }
    }
    p
}

/// y = start + Σ x·W (see [`super::forward`]).
///
/// # Safety
/// The slices must have the lengths [`ConvShape`] gives (checked by the caller), the table
/// entries must be in range, and the processor must have AVX-512F.
pub(crate) unsafe fn forward(
    shape: ConvShape<'_>,
    x: &[f32],
    w: &[f32],
    start: Start<'_, f32>,
    y: &mut [f32],
) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let zeros = zeros_for(&mut scratch, shape.c_in);
        // SAFETY: forwarded from the caller.
        unsafe {
            if few_outputs(&shape) {
                forward_few(&shape, x, w, start, y, &mut scratch);
            } else {
                forward_wide(&shape, x.as_ptr(), w.as_ptr(), start, y.as_mut_ptr(), zeros);
            }
        }
    })
}

/// The wide forward kernel: blocks of sites × up to 32 output channels. The output sites of
/// all rows are taken as one sequence (the output rows lie one after the other), so that
/// blocks run across the end of a row and only the batch's last few sites fall to the small
/// blocks.
#[target_feature(enable = "avx512f")]
unsafe fn forward_wide(
    shape: &ConvShape<'_>,
    x: *const f32,
    w: *const f32,
    start: Start<'_, f32>,
    y: *mut f32,
    zeros: *const f32,
) {
    let c_out = shape.c_out;
    let total = shape.rows * shape.out_sites;
    let mut col0 = 0;
    while col0 < c_out {
        let cols = (c_out - col0).min(32);
        let b = WideBlock {
            shape,
            x,
            w: w.wrapping_add(col0),
            start,
            y,
            col0,
            masks: [lanes(cols), lanes(cols.saturating_sub(16))],
            zeros,
        };
        // SAFETY: the pointers are the caller's.
        unsafe {
            if cols > 16 {
                b.run_all::<8, 2>(total);
            } else {
                b.run_all::<12, 1>(total);
            }
        }
        col0 += 32;
    }
}

/// One block of up to 32 output channels of the wide forward kernel.
struct WideBlock<'a, 's> {
    shape: &'a ConvShape<'s>,
    /// The input batch.
    x: *const f32,
    /// The kernel, offset to the block's first column.
    w: *const f32,
    start: Start<'a, f32>,
    /// The output batch.
    y: *mut f32,
    col0: usize,
    masks: [__mmask16; 2],
    zeros: *const f32,
}

impl WideBlock<'_, '_> {
    /// All `total` output sites of the batch in blocks of `M` sites, the last few in blocks
    /// of 4 and 1.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_all<const M: usize, const NV: usize>(&self, total: usize) {
        let mut f = 0;
        // SAFETY: every block lies inside the output.
        unsafe {
            while f + M <= total {
                self.run::<M, NV>(f);
                f += M;
            }
            while f + 4 <= total {
                self.run::<4, NV>(f);
                f += 4;
            }
            while f < total {
                self.run::<1, NV>(f);
                f += 1;
            }
        }
    }

    /// Output sites `f..f + M` of the batch (counted across rows), `NV` vectors of channels.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const M: usize, const NV: usize>(&self, f: usize) {
        let shape = self.shape;
        let (c_in, c_out, nt) = (shape.c_in, shape.c_out, shape.n_taps);
        // Each site's input row and its place in its row.
        let mut rows = [self.x; M];
        let mut sites = [0usize; M];
        for i in 0..M {
            let r = (f + i) / shape.out_sites;
            sites[i] = f + i - r * shape.out_sites;
            rows[i] = self.x.wrapping_add(r * shape.in_sites * c_in);
        }
        let out = |i: usize, j: usize| self.y.wrapping_add((f + i) * c_out + self.col0 + 16 * j);
        let mut acc = [[_mm512_setzero_ps(); NV]; M];
        // SAFETY (whole body): the caller's block of sites lies inside the output, the masks
        // cover only columns inside the kernel and output, and the table entries are sites
        // of the input rows.
        unsafe {
            match self.start {
                Start::Zero => {}
                Start::Bias(b) => {
                    for j in 0..NV {
                        let v = _mm512_maskz_loadu_ps(
                            self.masks[j],
                            b.as_ptr().wrapping_add(self.col0 + 16 * j),
                        );
                        for a in acc.iter_mut() {
                            a[j] = v;
                        }
                    }
                }
                Start::Accumulate => {
                    for (i, a) in acc.iter_mut().enumerate() {
                        for (j, a) in a.iter_mut().enumerate() {
                            *a = _mm512_maskz_loadu_ps(self.masks[j], out(i, j));
                        }
                    }
                }
            }
            for t in 0..nt {
                let p = table_sites::<M>(shape, self.zeros, |i| (rows[i], sites[i] * nt + t));
                let wt = self.w.wrapping_add(t * c_in * c_out);
                for ci in 0..c_in {
                    let wrow = wt.wrapping_add(ci * c_out);
                    let mut wv = [_mm512_setzero_ps(); NV];
                    for (j, wv) in wv.iter_mut().enumerate() {
                        *wv = _mm512_maskz_loadu_ps(self.masks[j], wrow.wrapping_add(16 * j));
                    }
                    for i in 0..M {
                        let xb = _mm512_set1_ps(*p[i].add(ci));
                        for j in 0..NV {
                            acc[i][j] = _mm512_fmadd_ps(xb, wv[j], acc[i][j]);
                        }
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                for (j, &a) in a.iter().enumerate() {
                    _mm512_mask_storeu_ps(out(i, j), self.masks[j], a);
                }
            }
        }
    }
}

/// Rows per block of the few-output forward pass (its per-tap products stay in cache).
const FEW_ROWS_VALUES: usize = 1 << 16;

/// The few-output forward map in two steps per block of rows: first every input site's
/// products with every tap's kernel, z[u, t·c_out + co] = Σ_ci x[u, ci] W[t·c_in + ci, co]
/// (a one-tap convolution with n_taps · c_out outputs, by the wide kernel), then
/// y[s, co] = start + Σ_t z[table[s, t], t·c_out + co].
///
/// # Safety
/// As for [`forward`].
unsafe fn forward_few(
    shape: &ConvShape<'_>,
    x: &[f32],
    w: &[f32],
    start: Start<'_, f32>,
    y: &mut [f32],
    scratch: &mut Scratch,
) {
    let (c_in, c_out, nt) = (shape.c_in, shape.c_out, shape.n_taps);
    let per_site = nt * c_out;
    // The kernel rearranged to [c_in, n_taps · c_out].
    scratch.transposed.resize(c_in * per_site, 0.0);
    for t in 0..nt {
        for ci in 0..c_in {
            for co in 0..c_out {
                scratch.transposed[ci * per_site + t * c_out + co] =
                    w[(t * c_in + ci) * c_out + co];
            }
        }
    }
    if scratch.identity.len() != shape.in_sites {
        scratch.identity.clear();
        scratch.identity.extend(0..shape.in_sites as u32);
    }
    let block = (FEW_ROWS_VALUES / (shape.in_sites * per_site).max(1)).clamp(1, shape.rows);
    scratch
        .products
        .resize(block * shape.in_sites * per_site, 0.0);
    let zeros = zeros_for(scratch, c_in);
    let (x_row, y_row) = (shape.in_sites * c_in, shape.out_sites * c_out);
    let mut r0 = 0;
    while r0 < shape.rows {
        let rows = block.min(shape.rows - r0);
        let products = ConvShape {
            rows,
            in_sites: shape.in_sites,
            out_sites: shape.in_sites,
            n_taps: 1,
            table: &scratch.identity,
            c_in,
            c_out: per_site,
        };
        let z = &mut scratch.products[..rows * shape.in_sites * per_site];
        // SAFETY: `products` describes the rows r0.. of x, the rearranged kernel and z;
        // the identity table is in range.
        unsafe {
            forward_wide(
                &products,
                x[r0 * x_row..].as_ptr(),
                scratch.transposed.as_ptr(),
                Start::Zero,
                z.as_mut_ptr(),
                zeros,
            );
        }
        for (zr, yr) in z
            .chunks_exact(shape.in_sites * per_site)
            .zip(y[r0 * y_row..(r0 + rows) * y_row].chunks_exact_mut(y_row))
        {
            for (taps, out) in shape.table.chunks_exact(nt).zip(yr.chunks_exact_mut(c_out)) {
                for (co, o) in out.iter_mut().enumerate() {
                    let mut sum = 0.0f32;
                    for (t, &u) in taps.iter().enumerate() {
                        if u != NO_SITE {
                            sum += zr[u as usize * per_site + t * c_out + co];
                        }
                    }
                    *o = match start {
                        Start::Zero => sum,
                        Start::Bias(b) => b[co] + sum,
                        Start::Accumulate => *o + sum,
                    };
                }
            }
        }
        r0 += rows;
    }
}

/// gw += Σ x ⊗ g (see [`super::weight_grad`]).
///
/// # Safety
/// As for [`forward`].
pub(crate) unsafe fn weight_grad(shape: ConvShape<'_>, x: &[f32], g: &[f32], gw: &mut [f32]) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let zeros = zeros_for(&mut scratch, shape.c_in);
        let wg = WeightGrad {
            shape: &shape,
            x: x.as_ptr(),
            g: g.as_ptr(),
            gw: gw.as_mut_ptr(),
            zeros,
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            if few_outputs(&shape) {
                match shape.c_out {
                    1 => wg.few::<8, 1>(),
                    2 => wg.few::<6, 2>(),
                    3 => wg.few::<4, 3>(),
                    _ => wg.few::<4, 4>(),
                }
            } else {
                wg.wide();
            }
        }
    })
}

/// The operands of a weight gradient.
struct WeightGrad<'a, 's> {
    shape: &'a ConvShape<'s>,
    x: *const f32,
    g: *const f32,
    gw: *mut f32,
    zeros: *const f32,
}

impl WeightGrad<'_, '_> {
    /// Vectorised over the output channels (16 per pass). Nets with at least [`KB`] input
    /// channels take blocks of one tap × up to [`KB`] consecutive input channels (one table
    /// lookup per site and block); narrower inputs take blocks of [`KB`] consecutive kernel
    /// rows across taps.
    #[target_feature(enable = "avx512f")]
    unsafe fn wide(&self) {
        let sh = self.shape;
        let k = sh.n_taps * sh.c_in;
        let mut col0 = 0;
        while col0 < sh.c_out {
            let mask = lanes(sh.c_out - col0);
            // SAFETY: the blocks of kernel rows lie inside the kernel.
            unsafe {
                if sh.c_in >= KB {
                    for t in 0..sh.n_taps {
                        let mut ch0 = 0;
                        while ch0 < sh.c_in {
                            match sh.c_in - ch0 {
                                n if n >= KB => self.tap_block::<KB>(t, ch0, col0, mask),
                                n if n >= 8 => self.tap_block::<8>(t, ch0, col0, mask),
                                n if n >= 4 => self.tap_block::<4>(t, ch0, col0, mask),
                                _ => self.tap_block::<1>(t, ch0, col0, mask),
                            }
                            ch0 += match sh.c_in - ch0 {
                                n if n >= KB => KB,
                                n if n >= 8 => 8,
                                n if n >= 4 => 4,
                                _ => 1,
                            };
                        }
                    }
                } else {
                    let mut k0 = 0;
                    while k0 < k {
                        let step = match k - k0 {
                            n if n >= KB => KB,
                            n if n >= 8 => 8,
                            n if n >= 4 => 4,
                            n if n >= 2 => 2,
                            _ => 1,
                        };
                        match step {
                            KB => self.wide_block::<KB>(k0, col0, mask),
                            8 => self.wide_block::<8>(k0, col0, mask),
                            4 => self.wide_block::<4>(k0, col0, mask),
                            2 => self.wide_block::<2>(k0, col0, mask),
                            _ => self.wide_block::<1>(k0, col0, mask),
                        }
                        k0 += step;
                    }
                }
            }
            col0 += 16;
        }
    }

    /// Kernel rows of tap `t`, input channels `ch0..ch0 + R`, output channels
    /// `col0..col0 + 16` (masked).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tap_block<const R: usize>(&self, t: usize, ch0: usize, col0: usize, mask: __mmask16) {
        let sh = self.shape;
        let (c_in, c_out, nt) = (sh.c_in, sh.c_out, sh.n_taps);
        let mut acc = [_mm512_setzero_ps(); R];
        // SAFETY (whole body): rows, sites and taps stay inside the operands; channels
        // ch0..ch0 + R lie inside a site (or the zero buffer); the masked loads and stores
        // cover output channels inside g and gw only.
        unsafe {
            for r in 0..sh.rows {
                let xr = self.x.wrapping_add(r * sh.in_sites * c_in + ch0);
                let gr = self.g.wrapping_add(r * sh.out_sites * c_out + col0);
                for s in 0..sh.out_sites {
                    let u = *sh.table.get_unchecked(s * nt + t);
                    if u == NO_SITE {
                        continue;
                    }
                    let gv = _mm512_maskz_loadu_ps(mask, gr.wrapping_add(s * c_out));
                    let p = xr.add(u as usize * c_in);
                    for (kk, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*p.add(kk)), gv, *a);
                    }
                }
            }
            for (kk, &a) in acc.iter().enumerate() {
                let out = self.gw.wrapping_add((t * c_in + ch0 + kk) * c_out + col0);
                _mm512_mask_storeu_ps(
                    out,
                    mask,
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), a),
                );
            }
        }
    }

    /// Kernel rows `k0..k0 + R` (across taps), output channels `col0..col0 + 16` (masked).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn wide_block<const R: usize>(&self, k0: usize, col0: usize, mask: __mmask16) {
        let sh = self.shape;
        let (c_in, c_out, nt) = (sh.c_in, sh.c_out, sh.n_taps);
        let mut tap = [0usize; R];
        let mut channel = [0usize; R];
        for kk in 0..R {
            tap[kk] = (k0 + kk) / c_in;
            channel[kk] = (k0 + kk) % c_in;
        }
        let mut acc = [_mm512_setzero_ps(); R];
        // SAFETY (whole body): rows, sites and taps stay inside the operands; the masked
        // loads and stores cover output channels inside g and gw only.
        unsafe {
            for r in 0..sh.rows {
                let xr = self.x.wrapping_add(r * sh.in_sites * c_in);
                let gr = self.g.wrapping_add(r * sh.out_sites * c_out + col0);
                for s in 0..sh.out_sites {
                    let gv = _mm512_maskz_loadu_ps(mask, gr.wrapping_add(s * c_out));
                    let taps = sh.table.as_ptr().add(s * nt);
                    for kk in 0..R {
                        let u = *taps.add(tap[kk]);
                        let xv = if u == NO_SITE {
                            0.0
                        } else {
                            *xr.add(u as usize * c_in + channel[kk])
                        };
                        acc[kk] = _mm512_fmadd_ps(_mm512_set1_ps(xv), gv, acc[kk]);
                    }
                }
            }
            for (kk, &a) in acc.iter().enumerate() {
                let out = self.gw.wrapping_add((k0 + kk) * c_out + col0);
                _mm512_mask_storeu_ps(
                    out,
                    mask,
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), a),
                );
            }
        }
    }

    /// Vectorised over the input channels (16 per pass), `TB` taps × `CO` outputs per
    /// register block.
    #[target_feature(enable = "avx512f")]
    unsafe fn few<const TB: usize, const CO: usize>(&self) {
        let sh = self.shape;
        let mut cb = 0;
        while cb < sh.c_in {
            let mask = lanes(sh.c_in - cb);
            let mut t0 = 0;
            // SAFETY: the blocks of taps lie inside the table's rows.
            unsafe {
                while t0 + TB <= sh.n_taps {
                    self.few_block::<TB, CO>(t0, cb, mask);
                    t0 += TB;
                }
                while t0 < sh.n_taps {
                    self.few_block::<1, CO>(t0, cb, mask);
                    t0 += 1;
                }
            }
            cb += 16;
        }
    }

    /// Taps `t0..t0 + TB`, input channels `cb..cb + 16` (masked), all `CO` outputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn few_block<const TB: usize, const CO: usize>(
        &self,
        t0: usize,
        cb: usize,
        mask: __mmask16,
    ) {
        let sh = self.shape;
        let c_in = sh.c_in;
        let mut acc = [[_mm512_setzero_ps(); CO]; TB];
        // SAFETY (whole body): as in `wide_block`, with the masked loads covering input
        // channels inside a site or the zero buffer.
        unsafe {
            for r in 0..sh.rows {
                let xr = self.x.wrapping_add(r * sh.in_sites * c_in);
                let gr = self.g.wrapping_add(r * sh.out_sites * CO);
                for s in 0..sh.out_sites {
                    let mut gb = [_mm512_setzero_ps(); CO];
                    for (co, gb) in gb.iter_mut().enumerate() {
                        *gb = _mm512_set1_ps(*gr.add(s * CO + co));
                    }
                    let p = table_sites::<TB>(sh, self.zeros, |tt| (xr, s * sh.n_taps + t0 + tt));
                    for tt in 0..TB {
                        let xv = _mm512_maskz_loadu_ps(mask, p[tt].wrapping_add(cb));
                        for co in 0..CO {
                            acc[tt][co] = _mm512_fmadd_ps(xv, gb[co], acc[tt][co]);
                        }
                    }
                }
            }
            let lanes_used = (c_in - cb).min(16);
            let mut sums = [0.0f32; 16];
            for (tt, a) in acc.iter().enumerate() {
                for (co, &a) in a.iter().enumerate() {
                    _mm512_storeu_ps(sums.as_mut_ptr(), a);
                    for (lane, &v) in sums.iter().enumerate().take(lanes_used) {
                        let out = self.gw.add(((t0 + tt) * c_in + cb + lane) * CO + co);
                        *out += v;
                    }
                }
            }
        }
    }
}
