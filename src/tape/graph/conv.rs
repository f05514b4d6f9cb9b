//! Periodic convolutions over the sites of a lattice, channels last: the input rows are
//! unrolled into a matrix of neighbourhoods (im2col) and multiplied by the kernel.

use std::sync::Arc;

use super::{
    Backward, Op, ParamSlice, Real, Tape, Var, add_column_sums, contiguous, contiguous_mut,
    ensure_shape,
};
use crate::tape::matmul::mat_mul;

/// Neighbourhood table of a periodic convolution: `taps[site * n_taps + t]` is the site read
/// by kernel tap `t` when the output sits at `site`.
#[derive(Clone, Debug)]
pub struct ConvTaps {
    /// Number of sites.
    pub volume: usize,
    /// Kernel taps per site (k^d).
    pub n_taps: usize,
    /// The table, `volume * n_taps` long.
    pub taps: Arc<[u32]>,
}

/// A convolution node.
pub(super) struct ConvOp {
    x: usize,
    taps: ConvTaps,
    c_in: usize,
    w: ParamSlice,
    b: Option<ParamSlice>,
}

impl<T: Real> Tape<T> {
    /// Periodic convolution. `x` is `[n, volume * c_in]` (channels last), the kernel is a
    /// `[n_taps * c_in, c_out]` parameter block, the optional bias `[1, c_out]`; the output is
    /// `[n, volume * c_out]`.
    pub fn conv(
        &mut self,
        params: &[T],
        x: Var,
        taps: &ConvTaps,
        c_in: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    ) -> Var {
        let (n, m) = self.shape(x);
        let vol = taps.volume;
        assert_eq!(m, vol * c_in, "conv: input width");
        assert_eq!(w.rows, taps.n_taps * c_in, "conv: kernel rows");
        let c_out = w.cols;
        let op = Op::Conv(ConvOp {
            x: x.0,
            taps: taps.clone(),
            c_in,
            w,
            b,
        });
        let i = self.push(op, (n, vol * c_out), true);
        let (prev, node) = self.split(i);
        let width = taps.n_taps * c_in;
        ensure_shape(&mut node.aux, (n * vol, width));
        im2col(&prev[x.0].value, &mut node.aux, taps, c_in);
        let mut out = node
            .value
            .view_mut()
            .into_shape_with_order((n * vol, c_out))
            .expect("standard layout");
        let beta = match b {
            Some(b) => {
                out.assign(&b.view(params));
                T::one()
            }
            None => T::zero(),
        };
        mat_mul(&node.aux.view(), &w.view(params), beta, &mut out);
        Var(i)
    }
}

impl ConvOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        let ConvOp {
            x,
            taps,
            c_in,
            w,
            b,
        } = self;
        let g = ctx.grad;
        let n = g.nrows();
        let c_out = w.cols;
        let g2 = g
            .view()
            .into_shape_with_order((n * taps.volume, c_out))
            .expect("standard layout");
        if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
            let mut gw = w.view_mut(param_grad);
            mat_mul(&ctx.aux.t(), &g2.view(), T::one(), &mut gw);
            if let Some(b) = b {
                add_column_sums(&g2, &mut b.view_mut(param_grad));
            }
        }
        if ctx.prev[*x].needs_grad {
            ensure_shape(ctx.aux_grad, ctx.aux.dim());
            mat_mul(
                &g2.view(),
                &w.view(ctx.params).t(),
                T::zero(),
                &mut ctx.aux_grad.view_mut(),
            );
            col2im_add(ctx.aux_grad, &mut ctx.prev[*x].grad, taps, *c_in);
        }
    }
}

fn im2col<T: Real>(
    x: &ndarray::Array2<T>,
    col: &mut ndarray::Array2<T>,
    taps: &ConvTaps,
    c_in: usize,
) {
    let vol = taps.volume;
    let nt = taps.n_taps;
    let cs = contiguous_mut(col);
    for (r, xr) in x.outer_iter().enumerate() {
        let xr = xr.as_slice().expect("standard layout");
        for s in 0..vol {
            let row = &mut cs[(r * vol + s) * nt * c_in..(r * vol + s + 1) * nt * c_in];
            for t in 0..nt {
                let src = taps.taps[s * nt + t] as usize * c_in;
                row[t * c_in..(t + 1) * c_in].copy_from_slice(&xr[src..src + c_in]);
            }
        }
    }
}

fn col2im_add<T: Real>(
    gcol: &ndarray::Array2<T>,
    gx: &mut ndarray::Array2<T>,
    taps: &ConvTaps,
    c_in: usize,
) {
    let vol = taps.volume;
    let nt = taps.n_taps;
    let cs = contiguous(gcol);
    for (r, mut gxr) in gx.outer_iter_mut().enumerate() {
        let gxr = gxr.as_slice_mut().expect("standard layout");
        for s in 0..vol {
            let row = &cs[(r * vol + s) * nt * c_in..(r * vol + s + 1) * nt * c_in];
            for t in 0..nt {
                let dst = taps.taps[s * nt + t] as usize * c_in;
                for (o, &g) in gxr[dst..dst + c_in]
                    .iter_mut()
                    .zip(&row[t * c_in..(t + 1) * c_in])
                {
                    *o = *o + g;
                }
            }
        }
    }
}
