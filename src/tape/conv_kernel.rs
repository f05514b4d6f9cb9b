//! The inner loops of the tape's convolutions, evaluated directly from a neighbourhood table
//! (no unrolled im2col matrix): the forward map y = b + Σ_taps x·W, which with the inverse
//! table and the transposed kernel is also the gradient of the input, and the gradient of
//! the kernel, a sum of outer products over every output site.
//!
//! Channels are last: a row of `x` holds `in_sites × c_in` values, site by site. The kernel
//! is a `[n_taps · c_in, c_out]` row-major block. A table entry [`NO_SITE`] reads zeros (a
//! strided or upsampling convolution has taps that fall between its sites).
//!
//! f32 on processors with AVX-512 runs the 512-bit kernels of module `avx512`, vectorised
//! over the output channels (or, for the few outputs of a net's last layer, over the input
//! channels) with several sites per register block; everything else runs the portable
//! loops here, which are also the reference the 512-bit kernels are tested against.

use std::any::TypeId;

use super::Real;

/// A table entry that reads no site (its contribution is zero).
pub const NO_SITE: u32 = u32::MAX;

/// The shapes of one convolution over a batch of rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape<'a> {
    /// Rows of the batch.
    pub rows: usize,
    /// Sites per input row.
    pub in_sites: usize,
    /// Sites per output row.
    pub out_sites: usize,
    /// Taps per output site.
    pub n_taps: usize,
    /// `table[s * n_taps + t]`: the input site tap t of output site s reads, or
    /// [`NO_SITE`].
    pub table: &'a [u32],
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
}

impl ConvShape<'_> {
    fn check<T>(&self, x: &[T], w: &[T], y: &[T]) {
        assert_eq!(
            x.len(),
            self.rows * self.in_sites * self.c_in,
            "conv: input"
        );
        assert_eq!(
            w.len(),
            self.n_taps * self.c_in * self.c_out,
            "conv: kernel"
        );
        assert_eq!(
            y.len(),
            self.rows * self.out_sites * self.c_out,
            "conv: output"
        );
        assert_eq!(
            self.table.len(),
            self.out_sites * self.n_taps,
            "conv: table"
        );
        assert!(
            self.table
                .iter()
                .all(|&u| u == NO_SITE || (u as usize) < self.in_sites),
            "conv: table entry out of range"
        );
    }
}

/// What the output starts from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start<'a, T> {
    /// y = Σ …
    Zero,
    /// y = b + Σ … with a bias per output channel.
    Bias(&'a [T]),
    /// y += Σ …
    Accumulate,
}

/// y = start + Σ_t Σ_ci x[r, table[s, t], ci] · w[t·c_in + ci, co] for every row r, output
/// site s and output channel co.
pub(crate) fn forward<T: Real>(
    shape: ConvShape<'_>,
    x: &[T],
    w: &[T],
    start: Start<'_, T>,
    y: &mut [T],
) {
    shape.check(x, w, y);
    if let Start::Bias(b) = start {
        assert_eq!(b.len(), shape.c_out, "conv: bias");
    }
    if shape.rows == 0 || shape.out_sites == 0 || shape.c_out == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && avx512::available() {
        // SAFETY: T is f32 (checked through its TypeId), so the slices hold f32 values;
        // the lengths and the table's range were checked above; the processor has
        // AVX-512F.
        unsafe {
            let cast = |s: &[T]| std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len());
            let start = match start {
                Start::Zero => Start::Zero,
                Start::Bias(b) => Start::Bias(cast(b)),
                Start::Accumulate => Start::Accumulate,
            };
            let y = std::slice::from_raw_parts_mut(y.as_mut_ptr().cast::<f32>(), y.len());
            avx512::forward(shape, cast(x), cast(w), start, y);
        }
        return;
    }
    forward_portable(shape, x, w, start, y);
}

/// [`forward`] by plain loops (any float type).
pub(crate) fn forward_portable<T: Real>(
    shape: ConvShape<'_>,
    x: &[T],
    w: &[T],
    start: Start<'_, T>,
    y: &mut [T],
) {
    let ConvShape {
        in_sites,
        out_sites,
        n_taps,
        table,
        c_in,
        c_out,
        ..
    } = shape;
    for (xr, yr) in x
        .chunks_exact(in_sites * c_in)
        .zip(y.chunks_exact_mut(out_sites * c_out))
    {
        for (taps, out) in table.chunks_exact(n_taps).zip(yr.chunks_exact_mut(c_out)) {
            match start {
                Start::Zero => out.fill(T::zero()),
                Start::Bias(b) => out.copy_from_slice(b),
                Start::Accumulate => {}
            }
            for (&u, wt) in taps.iter().zip(w.chunks_exact(c_in * c_out)) {
                if u == NO_SITE {
                    continue;
                }
                let xs = &xr[u as usize * c_in..(u as usize + 1) * c_in];
                for (&xv, wrow) in xs.iter().zip(wt.chunks_exact(c_out)) {
                    for (o, &wv) in out.iter_mut().zip(wrow) {
                        *o = *o + xv * wv;
                    }
                }
            }
        }
    }
}

/// gw[t·c_in + ci, co] += Σ_r Σ_s x[r, table[s, t], ci] · g[r, s, co]: the gradient of the
/// kernel given the gradient `g` of the output.
pub(crate) fn weight_grad<T: Real>(shape: ConvShape<'_>, x: &[T], g: &[T], gw: &mut [T]) {
    shape.check(x, gw, g);
    if shape.rows == 0 || shape.out_sites == 0 || shape.c_out == 0 || shape.c_in == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && avx512::available() {
        // SAFETY: as in `forward`.
        unsafe {
            let cast = |s: &[T]| std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len());
            let gw = std::slice::from_raw_parts_mut(gw.as_mut_ptr().cast::<f32>(), gw.len());
            avx512::weight_grad(shape, cast(x), cast(g), gw);
        }
        return;
    }
    weight_grad_portable(shape, x, g, gw);
}

/// [`weight_grad`] by plain loops (any float type).
pub(crate) fn weight_grad_portable<T: Real>(shape: ConvShape<'_>, x: &[T], g: &[T], gw: &mut [T]) {
    let ConvShape {
        in_sites,
        out_sites,
        n_taps,
        table,
        c_in,
        c_out,
        ..
    } = shape;
    for (xr, gr) in x
        .chunks_exact(in_sites * c_in)
        .zip(g.chunks_exact(out_sites * c_out))
    {
        for (taps, gs) in table.chunks_exact(n_taps).zip(gr.chunks_exact(c_out)) {
            for (&u, gwt) in taps.iter().zip(gw.chunks_exact_mut(c_in * c_out)) {
                if u == NO_SITE {
                    continue;
                }
                let xs = &xr[u as usize * c_in..(u as usize + 1) * c_in];
                for (&xv, grow) in xs.iter().zip(gwt.chunks_exact_mut(c_out)) {
                    for (o, &gv) in grow.iter_mut().zip(gs) {
                        *o = *o + xv * gv;
                    }
                }
            }
        }
    }
}

/// The kernel of the transposed convolution: `wt[t·c_out + co, ci] = w[t·c_in + ci, co]`,
/// so that the input gradient is [`forward`] of the output gradient with the inverse table.
pub(crate) fn transpose_kernel<T: Real>(
    w: &[T],
    n_taps: usize,
    c_in: usize,
    c_out: usize,
    wt: &mut [T],
) {
    assert_eq!(w.len(), n_taps * c_in * c_out);
    assert_eq!(wt.len(), w.len());
    for (src, dst) in w
        .chunks_exact(c_in * c_out)
        .zip(wt.chunks_exact_mut(c_in * c_out))
    {
        for ci in 0..c_in {
            for co in 0..c_out {
                dst[co * c_in + ci] = src[ci * c_out + co];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic value in (−1, 1).
    fn value(i: usize, seed: u32) -> f32 {
        let h = (i as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(seed.wrapping_mul(40_503))
            .wrapping_mul(2_246_822_519);
        (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| value(i, seed)).collect()
    }

    /// A table with `n_taps` taps per output site into `in_sites` sites, every fifth entry
    /// empty, injective per tap when `in_sites ≥ out_sites`.
    fn table(out_sites: usize, in_sites: usize, n_taps: usize) -> Vec<u32> {
        let mut table = Vec::new();
        for s in 0..out_sites {
            for t in 0..n_taps {
                if (s + 2 * t) % 5 == 4 {
                    table.push(NO_SITE);
                } else {
                    table.push(((s * 7 + t * 3) % in_sites) as u32);
                }
            }
        }
        table
    }

    /// The f32 kernels (512-bit where the processor has AVX-512) against the portable
    /// loops in f64 on the same f32 inputs, for channel counts below, at and above one
    /// 16-lane vector and two, site counts below and above a register block, empty taps,
    /// and every start: agreement to 2e-6 × (1 + Σ|terms|) per element, far below any
    /// misplaced term.
    #[test]
    fn the_f32_kernels_equal_the_portable_loops_for_every_channel_count() {
        let mut checked = 0;
        for &(c_in, c_out) in &[
            (1, 16),
            (16, 16),
            (16, 1),
            (8, 1),
            (16, 2),
            (32, 3),
            (16, 4),
            (3, 5),
            (8, 8),
            (5, 17),
            (16, 33),
            (24, 23),
            (1, 1),
        ] {
            for &(rows, out_sites, in_sites, n_taps) in &[
                (1, 1, 1, 1),
                (2, 13, 13, 9),
                (3, 25, 30, 5),
                (1, 40, 40, 25),
                (2, 14, 14, 9),
            ] {
                let table = table(out_sites, in_sites, n_taps);
                let shape = ConvShape {
                    rows,
                    in_sites,
                    out_sites,
                    n_taps,
                    table: &table,
                    c_in,
                    c_out,
                };
                let x = values(rows * in_sites * c_in, 1);
                let w = values(n_taps * c_in * c_out, 2);
                let b = values(c_out, 3);
                let y0 = values(rows * out_sites * c_out, 4);
                let (x64, w64, b64, y64): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) = (
                    x.iter().map(|&v| v.into()).collect(),
                    w.iter().map(|&v| v.into()).collect(),
                    b.iter().map(|&v| v.into()).collect(),
                    y0.iter().map(|&v| v.into()).collect(),
                );
                let scale = (n_taps * c_in + 1) as f64;
                for start in 0..3 {
                    let mut y = y0.clone();
                    let mut want = y64.clone();
                    let (s32, s64) = match start {
                        0 => (Start::Zero, Start::Zero),
                        1 => (Start::Bias(&b[..]), Start::Bias(&b64[..])),
                        _ => (Start::Accumulate, Start::Accumulate),
                    };
                    forward(shape, &x, &w, s32, &mut y);
                    forward_portable(shape, &x64, &w64, s64, &mut want);
                    for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (f64::from(got) - want).abs() <= 2e-6 * scale,
                            "forward c_in {c_in} c_out {c_out} sites {out_sites} taps \
                             {n_taps} start {start} [{i}]: {got} vs {want}"
                        );
                    }
                }
                let g = values(rows * out_sites * c_out, 5);
                let g64: Vec<f64> = g.iter().map(|&v| v.into()).collect();
                let mut gw = values(n_taps * c_in * c_out, 6);
                let mut want: Vec<f64> = gw.iter().map(|&v| v.into()).collect();
                weight_grad(shape, &x, &g, &mut gw);
                weight_grad_portable(shape, &x64, &g64, &mut want);
                let scale = (rows * out_sites + 1) as f64;
                for (i, (&got, &want)) in gw.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() <= 2e-6 * scale,
                        "weight gradient c_in {c_in} c_out {c_out} sites {out_sites} taps \
                         {n_taps} [{i}]: {got} vs {want}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 65);
    }
}
