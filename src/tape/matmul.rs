//! The matrix product every dense and convolutional layer of the tape runs on:
//! c ← β·c + a·b for strided ndarray views of f32 or f64, on the calling thread (parallelism
//! comes from the callers, which split batches across threads). f32 products run a
//! 512-bit kernel of this module on processors with AVX-512 (module `avx512`); other f32
//! and all f64 products run the `gemm` crate's cache-blocked kernels, chosen at run time for
//! the processor's vector extensions (its 512-bit kernels need a nightly compiler). Other
//! float types (the forward-mode [`Dual`](super::Dual)) take a plain triple loop.

use std::any::TypeId;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::Real;

/// c ← β·c + a·b; with β = 0 the old contents of `c` are ignored (NaN included).
///
/// Panics when the shapes do not fit, `[m, k] · [k, n]` into `[m, n]`.
pub(crate) fn mat_mul<T: Real>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "mat_mul: [{m}, {k}] · [{k2}, {n}] into {:?}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.map_inplace(|x| {
            *x = if beta == T::zero() {
                T::zero()
            } else {
                beta * *x
            }
        });
        return;
    }
    if TypeId::of::<T>() != TypeId::of::<f32>() && TypeId::of::<T>() != TypeId::of::<f64>() {
        mat_mul_loop(a, b, beta, c);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && avx512::available() {
        let beta = beta.to_f64().unwrap_or(0.0) as f32;
        // SAFETY: T is f32 (checked through its TypeId) and the processor has AVX-512F
        // (`available`); the shapes were checked above.
        unsafe { avx512_product(a, b, avx512::Init::Scale(beta), c) };
        return;
    }
    let (sa, sb) = (a.strides(), b.strides());
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers address the first elements of views whose shapes were checked
    // above, the strides are the views' own (in elements), and `c` is borrowed mutably, so
    // it overlaps neither `a` nor `b`. `gemm` reads T through its TypeId (f32 or f64).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            beta != T::zero(),
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            beta,
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// c ← bias + a·b with a bias row `[1, n]`: the same numbers as filling c with the bias and
/// calling [`mat_mul`] with β = 1, without the pass that fills c (the 512-bit f32 kernel adds
/// the bias as it stores each tile).
///
/// Panics when the shapes do not fit.
pub(crate) fn mat_mul_bias<T: Real>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    bias: &ArrayView2<T>,
    c: &mut ArrayViewMut2<T>,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n) && bias.dim() == (1, n),
        "mat_mul_bias: [{m}, {k}] · [{k2}, {n}] + {:?} into {:?}",
        bias.dim(),
        c.dim()
    );
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && avx512::available()
        && m > 0
        && n > 0
        && k > 0
        && (n == 1 || bias.strides()[1] == 1)
    {
        // SAFETY: T is f32 (checked through its TypeId), the processor has AVX-512F, the
        // shapes were checked above and the bias row's n floats are contiguous.
        unsafe { avx512_product(a, b, avx512::Init::Bias(bias.as_ptr().cast()), c) };
        return;
    }
    c.assign(bias);
    mat_mul(a, b, T::one(), c);
}

/// The 512-bit f32 product of checked shapes with `init`.
///
/// # Safety
/// T must be f32, the processor must have AVX-512F, the shapes must fit (`[m, k] · [k, n]`
/// into `[m, n]`, all ≥ 1) and a bias of `init` must address n contiguous floats.
#[cfg(target_arch = "x86_64")]
unsafe fn avx512_product<T: Real>(
    a: &ArrayView2<T>,
    b: &ArrayView2<T>,
    init: avx512::Init,
    c: &mut ArrayViewMut2<T>,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    let (c_rs, c_cs) = (sc[0], sc[1]);
    // SAFETY: the pointers address f32 elements (the caller's T), the strides are the
    // views' own, and `c` is borrowed mutably, so it overlaps neither `a` nor `b`.
    unsafe {
        avx512::gemm(
            avx512::Operands {
                m,
                n,
                k,
                a: a.as_ptr().cast(),
                a_strides: (sa[0], sa[1]),
                b: b.as_ptr().cast(),
                b_strides: (sb[0], sb[1]),
                c: c.as_mut_ptr().cast(),
                c_strides: (c_rs, c_cs),
            },
            init,
        )
    }
}

/// c ← β·c + a·b by a plain loop, for float types the `gemm` crate does not handle.
fn mat_mul_loop<T: Real>(a: &ArrayView2<T>, b: &ArrayView2<T>, beta: T, c: &mut ArrayViewMut2<T>) {
    let k = a.ncols();
    for ((i, j), cij) in c.indexed_iter_mut() {
        let mut acc = T::zero();
        for l in 0..k {
            acc = acc + a[[i, l]] * b[[l, j]];
        }
        *cij = if beta == T::zero() {
            acc
        } else {
            beta * *cij + acc
        };
    }
}

/// c ← β·c + a·b in f32 with 512-bit vectors: B is packed into panels of [`NR`] columns ×
/// up to [`KC`] rows (a buffer per thread, allocated once), and a micro-kernel accumulates
/// [`MR`] rows × [`NR`] columns of C in sixteen vector registers, broadcasting A's
/// elements from their strided places (no packing of A; each row of a tile is walked by
/// one shared depth index). Columns beyond `n` in a panel are zeros and are never stored;
/// rows beyond `m` take smaller kernels. Every element of C is summed over the depth in
/// order with fused multiply-adds, whatever the tile sizes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Rows of C per micro-kernel.
    pub(crate) const MR: usize = 8;
    /// Columns of C per micro-kernel: two vectors of 16 lanes.
    pub(crate) const NR: usize = 32;
    /// Rows of B per packed panel (32 KiB of f32).
    pub(crate) const KC: usize = 256;
    /// Products of at most this many rows read B in place instead of packing it.
    pub(crate) const DIRECT_ROWS: usize = 2 * MR;

    thread_local! {
        static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// Whether the processor runs this kernel (AVX-512F; the answer is cached by std).
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The operands of one product: shapes [m, k] · [k, n] into [m, n], strides (row,
    /// column) in elements.
    pub(crate) struct Operands {
        pub m: usize,
        pub n: usize,
        pub k: usize,
        pub a: *const f32,
        pub a_strides: (isize, isize),
        pub b: *const f32,
        pub b_strides: (isize, isize),
        pub c: *mut f32,
        pub c_strides: (isize, isize),
    }

    /// What the product does with C's old contents.
    #[derive(Clone, Copy)]
    pub(crate) enum Init {
        /// c ← β·c + a·b; with β = 0 the old contents of c are not read.
        Scale(f32),
        /// c ← bias + a·b with a bias row of n floats (contiguous); c is not read. Each
        /// element is rounded as bias + (a·b), exactly as β = 1 over a c filled with the
        /// bias row.
        Bias(*const f32),
    }

    /// c ← β·c + a·b or c ← bias + a·b, as `init` says.
    ///
    /// # Safety
    /// The pointers must address matrices of the given shapes and strides (a bias, n
    /// floats), `c` must overlap neither `a`, `b` nor the bias, m, n, k ≥ 1, and the
    /// processor must have AVX-512F.
    pub(crate) unsafe fn gemm(ops: Operands, init: Init) {
        PANEL.with(|panel| {
            let mut panel = panel.borrow_mut();
            if panel.len() < KC * NR {
                panel.resize(KC * NR, 0.0);
            }
            // SAFETY: forwarded from the caller; the panel holds KC × NR floats.
            unsafe { blocked(&ops, init, &mut panel) }
        })
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn blocked(ops: &Operands, init: Init, panel: &mut [f32]) {
        let Operands { m, n, k, .. } = *ops;
        let (rsa, csa) = ops.a_strides;
        let (rsb, csb) = ops.b_strides;
        let (rsc, csc) = ops.c_strides;
        // A few rows use each panel of B once or twice: they read B in place (its rows
        // are contiguous) instead of packing it first.
        let direct = csb == 1 && csa == 1 && m <= DIRECT_ROWS;
        for j0 in (0..n).step_by(NR) {
            let cols = NR.min(n - j0);
            for p0 in (0..k).step_by(KC) {
                let depth = KC.min(k - p0);
                let (b_panel, b_stride) = if direct {
                    // SAFETY: (p0, j0) lies inside B.
                    (
                        unsafe { ops.b.offset(p0 as isize * rsb + j0 as isize) },
                        rsb,
                    )
                } else {
                    // Pack B[p0.., j0..] row by row, zero-padded to NR columns.
                    for p in 0..depth {
                        let row = &mut panel[p * NR..(p + 1) * NR];
                        // SAFETY: (p0 + p, j0 + j) lies inside B for j < cols.
                        let src =
                            unsafe { ops.b.offset((p0 + p) as isize * rsb + j0 as isize * csb) };
                        let (inside, padding) = row.split_at_mut(cols);
                        for (j, x) in inside.iter_mut().enumerate() {
                            *x = unsafe { *src.offset(j as isize * csb) };
                        }
                        padding.fill(0.0);
                    }
                    (panel.as_ptr(), NR as isize)
                };
                let store = match (p0, init) {
                    (0, Init::Scale(0.0)) => Store::Overwrite,
                    (0, Init::Scale(beta)) => Store::Scale(beta),
                    // SAFETY: the bias row holds n floats and j0 < n.
                    (0, Init::Bias(bias)) => Store::Bias(unsafe { bias.add(j0) }),
                    _ => Store::Scale(1.0),
                };
                for i0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - i0);
                    // SAFETY: rows i0.., columns p0.. of A and rows i0.., columns j0.. of C
                    // lie inside their matrices for the counts passed.
                    let tile = Tile {
                        a: unsafe { ops.a.offset(i0 as isize * rsa + p0 as isize * csa) },
                        rsa,
                        csa,
                        panel: b_panel,
                        panel_stride: b_stride,
                        depth,
                        c: unsafe { ops.c.offset(i0 as isize * rsc + j0 as isize * csc) },
                        rsc,
                        csc,
                        cols,
                        store,
                    };
                    unsafe {
                        match (direct, csa == 1) {
                            (true, _) => tile_kernel::<true, true>(rows, &tile),
                            (false, true) => tile_kernel::<true, false>(rows, &tile),
                            (false, false) => tile_kernel::<false, false>(rows, &tile),
                        }
                    }
                }
            }
        }
    }

    /// The micro-kernel for `rows` (1..=MR) rows; `CONTIGUOUS`: A's rows are contiguous
    /// (column stride 1); `DIRECT`: the tile reads B in place, masking the columns beyond
    /// the tile's, rather than a zero-padded packed panel.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_kernel<const CONTIGUOUS: bool, const DIRECT: bool>(rows: usize, tile: &Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match rows {
                8 => kernel::<8, CONTIGUOUS, DIRECT>(tile),
                7 => kernel::<7, CONTIGUOUS, DIRECT>(tile),
                6 => kernel::<6, CONTIGUOUS, DIRECT>(tile),
                5 => kernel::<5, CONTIGUOUS, DIRECT>(tile),
                4 => kernel::<4, CONTIGUOUS, DIRECT>(tile),
                3 => kernel::<3, CONTIGUOUS, DIRECT>(tile),
                2 => kernel::<2, CONTIGUOUS, DIRECT>(tile),
                _ => kernel::<1, CONTIGUOUS, DIRECT>(tile),
            }
        }
    }

    /// How a micro-kernel writes its sums into C.
    #[derive(Clone, Copy)]
    enum Store {
        /// c ← sum (the old contents are not read).
        Overwrite,
        /// c ← factor·c + sum.
        Scale(f32),
        /// c ← bias + sum with the tile's first column's entry of a bias row.
        Bias(*const f32),
    }

    /// One micro-kernel's share: R rows of A from `a`, `depth` rows of B (a packed panel or B
    /// itself) `panel_stride` floats apart, and R × `cols` elements of C from `c`.
    struct Tile {
        a: *const f32,
        rsa: isize,
        csa: isize,
        panel: *const f32,
        panel_stride: isize,
        depth: usize,
        c: *mut f32,
        rsc: isize,
        csc: isize,
        cols: usize,
        store: Store,
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize, const CONTIGUOUS: bool, const DIRECT: bool>(t: &Tile) {
        // The columns of C in each half of the tile (the same for every row).
        let mask_lo: __mmask16 = if t.cols >= 16 {
            0xffff
        } else {
            (1u16 << t.cols) - 1
        };
        let mask_hi: __mmask16 = if t.cols >= NR {
            0xffff
        } else if t.cols > 16 {
            (1u16 << (t.cols - 16)) - 1
        } else {
            0
        };
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        // The rows of A, each walked by the shared depth index (no address arithmetic per
        // row inside the loop).
        let a_rows: [*const f32; R] =
            std::array::from_fn(|r| t.a.wrapping_offset(r as isize * t.rsa));
        let mut panel = t.panel;
        for p in 0..t.depth {
            // SAFETY: the panel holds `depth` rows of NR floats; A's element (r, p) lies
            // inside A for r < R (the caller's row count).
            unsafe {
                let (b_lo, b_hi) = if DIRECT {
                    // Masked-off lanes read nothing and hold zeros, as a packed panel's
                    // padding does.
                    (
                        _mm512_maskz_loadu_ps(mask_lo, panel),
                        _mm512_maskz_loadu_ps(mask_hi, panel.wrapping_add(16)),
                    )
                } else {
                    (_mm512_loadu_ps(panel), _mm512_loadu_ps(panel.add(16)))
                };
                panel = panel.wrapping_offset(t.panel_stride);
                for r in 0..R {
                    let a_rp = if CONTIGUOUS {
                        *a_rows[r].add(p)
                    } else {
                        *a_rows[r].offset(p as isize * t.csa)
                    };
                    let x = _mm512_set1_ps(a_rp);
                    lo[r] = _mm512_fmadd_ps(x, b_lo, lo[r]);
                    hi[r] = _mm512_fmadd_ps(x, b_hi, hi[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: row r of this tile of C holds `cols` elements at stride csc.
            unsafe {
                let row = t.c.offset(r as isize * t.rsc);
                if t.csc == 1 {
                    let (mut v_lo, mut v_hi) = (lo[r], hi[r]);
                    match t.store {
                        Store::Overwrite => {}
                        Store::Scale(factor) => {
                            let f = _mm512_set1_ps(factor);
                            v_lo = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(mask_lo, row), v_lo);
                            v_hi = _mm512_fmadd_ps(
                                f,
                                _mm512_maskz_loadu_ps(mask_hi, row.wrapping_add(16)),
                                v_hi,
                            );
                        }
                        Store::Bias(bias) => {
                            v_lo = _mm512_add_ps(_mm512_maskz_loadu_ps(mask_lo, bias), v_lo);
                            v_hi = _mm512_add_ps(
                                _mm512_maskz_loadu_ps(mask_hi, bias.wrapping_add(16)),
                                v_hi,
                            );
                        }
                    }
                    _mm512_mask_storeu_ps(row, mask_lo, v_lo);
                    _mm512_mask_storeu_ps(row.wrapping_add(16), mask_hi, v_hi);
                } else {
                    let mut sums = [0.0f32; NR];
                    _mm512_storeu_ps(sums.as_mut_ptr(), lo[r]);
                    _mm512_storeu_ps(sums.as_mut_ptr().add(16), hi[r]);
                    for (j, &sum) in sums.iter().enumerate().take(t.cols) {
                        let cj = row.offset(j as isize * t.csc);
                        *cj = match t.store {
                            Store::Overwrite => sum,
                            Store::Scale(factor) => factor.mul_add(*cj, sum),
                            Store::Bias(bias) => *bias.add(j) + sum,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    /// A deterministic m × n matrix of values in (−1, 1), row-major or column-major.
    fn matrix(m: usize, n: usize, seed: u32, column_major: bool) -> Array2<f32> {
        let value = |i: usize, j: usize| {
            let h = (i as u32 * 7919 + j as u32 * 104_729 + seed * 15_485_863)
                .wrapping_mul(2_654_435_761);
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        };
        if column_major {
            Array2::from_shape_fn((m, n).f(), |(i, j)| value(i, j))
        } else {
            Array2::from_shape_fn((m, n), |(i, j)| value(i, j))
        }
    }

    /// Every shape class of the blocked kernel (rows below, at and above MR, columns below,
    /// at and above NR and across the 16-lane halves, depths across KC), row- and
    /// column-major operands and outputs, transposed views and β ∈ {0, ½, 1}: each product
    /// equals the f64 triple loop on the same f32 inputs to f32 rounding (the tolerance
    /// is 1e-5 × (1 + k), far below any element's size), and β = 0 ignores NaN in c.
    #[test]
    fn the_f32_product_equals_the_triple_loop_for_every_shape_and_layout() {
        let mut checked = 0;
        for &m in &[1, 5, 8, 9, 12, 13, 17, 250] {
            for &n in &[1, 7, 16, 17, 32, 33, 70] {
                for &k in &[1, 3, 64, 257, 600] {
                    if m * n * k > 2_000_000 {
                        continue;
                    }
                    for layout in 0..4 {
                        let (a_cm, b_cm, c_cm) = (layout & 1 == 1, layout & 2 == 2, layout == 3);
                        // Layout 3 also reads A through a transposed view.
                        let a_store = if layout == 3 {
                            matrix(k, m, 1, false)
                        } else {
                            matrix(m, k, 1, a_cm)
                        };
                        let a = if layout == 3 {
                            a_store.t()
                        } else {
                            a_store.view()
                        };
                        let b = matrix(k, n, 2, b_cm);
                        for &beta in &[0.0f32, 0.5, 1.0] {
                            let mut c = matrix(m, n, 3, c_cm);
                            if beta == 0.0 {
                                c.fill(f32::NAN);
                            }
                            let c0 = c.mapv(f64::from);
                            mat_mul(&a, &b.view(), beta, &mut c.view_mut());
                            for i in 0..m {
                                for j in 0..n {
                                    let mut sum = 0.0f64;
                                    for l in 0..k {
                                        sum += f64::from(a[[i, l]]) * f64::from(b[[l, j]]);
                                    }
                                    let expected = if beta == 0.0 {
                                        sum
                                    } else {
                                        f64::from(beta) * c0[[i, j]] + sum
                                    };
                                    let got = f64::from(c[[i, j]]);
                                    assert!(
                                        (got - expected).abs() <= 1e-5 * (1.0 + k as f64),
                                        "m {m} n {n} k {k} layout {layout} beta {beta} \
                                         ({i}, {j}): {got} vs {expected}"
                                    );
                                }
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} products checked");
    }

    /// The shapes of an L = 20 flow's spline net (batch 500, width 200, 23 × 200 outputs)
    /// forward and backward, accumulating into c (β = 1) through transposed views: many
    /// panels and depth blocks at once.
    #[test]
    fn the_f32_product_equals_the_triple_loop_at_flow_sized_shapes() {
        for (m, n, k, transposed) in [(500, 4600, 200, false), (500, 200, 4600, true)] {
            let a_store = if transposed {
                matrix(k, m, 4, false)
            } else {
                matrix(m, k, 4, false)
            };
            let a = if transposed {
                a_store.t()
            } else {
                a_store.view()
            };
            let b = matrix(k, n, 5, transposed);
            let mut c = matrix(m, n, 6, false);
            let c0 = c.mapv(f64::from);
            mat_mul(&a, &b.view(), 1.0, &mut c.view_mut());
            let a64 = a.mapv(f64::from);
            let b64 = b.mapv(f64::from);
            let expected = a64.dot(&b64) + &c0;
            let worst = (&c.mapv(f64::from) - &expected)
                .iter()
                .fold(0.0f64, |w, d| w.max(d.abs()));
            assert!(worst <= 1e-5 * k as f64, "m {m} n {n} k {k}: {worst}");
        }
    }

    /// c ← bias + a·b equals filling c with the bias row and adding a·b with β = 1, to the
    /// bit, at every shape class, with A row-major (the contiguous kernel) and
    /// column-major, and with a bias row that is a strided view.
    #[test]
    fn the_biased_product_equals_bias_then_accumulate_to_the_bit() {
        for &m in &[1, 7, 12, 13, 40] {
            for &n in &[1, 15, 32, 33, 70] {
                for &k in &[1, 64, 300] {
                    for a_cm in [false, true] {
                        let a = matrix(m, k, 7, a_cm);
                        let b = matrix(k, n, 8, false);
                        let wide = matrix(2, 2 * n, 9, false);
                        for bias in [
                            wide.slice(ndarray::s![0..1, 0..n]),
                            wide.slice(ndarray::s![1..2, ..;2]),
                        ] {
                            let mut expected = Array2::from_elem((m, n), f32::NAN);
                            expected.assign(&bias);
                            mat_mul(&a.view(), &b.view(), 1.0, &mut expected.view_mut());
                            let mut got = Array2::from_elem((m, n), f32::NAN);
                            mat_mul_bias(&a.view(), &b.view(), &bias, &mut got.view_mut());
                            let same = got
                                .iter()
                                .zip(&expected)
                                .all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "m {m} n {n} k {k} column-major A {a_cm}");
                        }
                    }
                }
            }
        }
    }
}
