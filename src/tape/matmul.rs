//! The matrix product every dense and convolutional layer of the tape runs on:
//! c ← β·c + a·b for strided ndarray views of f32 or f64, computed by the `gemm` crate's
//! cache-blocked kernels (chosen at run time for the processor's vector extensions) on the
//! calling thread; parallelism comes from the callers, which split batches across threads.
//! Other float types (the forward-mode [`Dual`](super::Dual)) take a plain triple loop.

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
