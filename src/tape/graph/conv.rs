//! Convolutions over the sites of a lattice, channels last, given by a neighbourhood table
//! ([`ConvTaps`]): periodic convolutions (every site reads its k^d neighbourhood), strided
//! ones (only the sites of a coarser lattice are outputs) and transposed ones (a coarse
//! input spread onto a finer lattice). The forward map and both gradients run the direct
//! kernels of `conv_kernel`; the input gradient is the convolution of the output gradient
//! with the inverse table and the transposed kernel.

use std::sync::Arc;

use super::{Backward, Op, ParamSlice, Real, Tape, Var, contiguous, contiguous_mut, ensure_shape};
use crate::error::{Error, Result};
use crate::tape::conv_kernel::{self, ConvShape, NO_SITE, Start};
use crate::tape::fastmath::tanh_in_place;

/// The neighbourhood table of a convolution: `table()[s * n_taps + t]` is the input site
/// kernel tap `t` reads when the output sits at site `s`, or [`ConvTaps::NO_SITE`] (the tap
/// reads zeros).
///
/// Each tap must read distinct input sites from distinct output sites (true of periodic,
/// strided and transposed convolutions), so that the table has an inverse, which the input
/// gradient runs on. Built by [`ConvTaps::new`] from any such table; the flows' builders are
/// [`conv_taps`](crate::flow::conv_taps), [`strided_conv_taps`](crate::flow::strided_conv_taps)
/// and [`upsampling_conv_taps`](crate::flow::upsampling_conv_taps).
#[derive(Clone, Debug)]
pub struct ConvTaps {
    in_sites: usize,
    out_sites: usize,
    n_taps: usize,
    table: Arc<[u32]>,
    inverse: Arc<[u32]>,
}

impl ConvTaps {
    /// A table entry that reads no site.
    pub const NO_SITE: u32 = NO_SITE;

    /// The table of a convolution from `in_sites` input sites with `n_taps` taps per output
    /// site (`table.len() / n_taps` output sites). Refused with an error: no tap, a table
    /// that is not a whole number of sites, an entry out of range, or a tap that reads one
    /// input site from two output sites.
    pub fn new(in_sites: usize, n_taps: usize, table: Vec<u32>) -> Result<Self> {
        if n_taps == 0 || !table.len().is_multiple_of(n_taps) {
            return Err(Error::Shape(format!(
                "a convolution table of {} entries is not a whole number of sites of {n_taps} \
                 taps",
                table.len()
            )));
        }
        if in_sites >= NO_SITE as usize {
            return Err(Error::Shape(format!(
                "{in_sites} input sites do not fit a 32-bit convolution table"
            )));
        }
        let out_sites = table.len() / n_taps;
        let mut inverse = vec![NO_SITE; in_sites * n_taps];
        for (s, taps) in table.chunks_exact(n_taps).enumerate() {
            for (t, &u) in taps.iter().enumerate() {
                if u == NO_SITE {
                    continue;
                }
                let u = u as usize;
                if u >= in_sites {
                    return Err(Error::Shape(format!(
                        "tap {t} of output site {s} reads site {u} of {in_sites}"
                    )));
                }
                let slot = &mut inverse[u * n_taps + t];
                if *slot != NO_SITE {
                    return Err(Error::Shape(format!(
                        "tap {t} reads input site {u} from output sites {} and {s}: a \
                         convolution table needs distinct inputs per tap",
                        *slot
                    )));
                }
                *slot = s as u32;
            }
        }
        Ok(ConvTaps {
            in_sites,
            out_sites,
            n_taps,
            table: table.into(),
            inverse: inverse.into(),
        })
    }

    /// Sites of an input row.
    pub fn in_sites(&self) -> usize {
        self.in_sites
    }

    /// Sites of an output row.
    pub fn out_sites(&self) -> usize {
        self.out_sites
    }

    /// Kernel taps per output site.
    pub fn n_taps(&self) -> usize {
        self.n_taps
    }

    /// The table, `out_sites * n_taps` entries.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// The inverse table, `in_sites * n_taps` entries: `inverse()[u * n_taps + t]` is the
    /// output site whose tap `t` reads input site `u`, or [`ConvTaps::NO_SITE`].
    pub fn inverse(&self) -> &[u32] {
        &self.inverse
    }

    fn shape(&self, rows: usize, c_in: usize, c_out: usize) -> ConvShape<'_> {
        ConvShape {
            rows,
            in_sites: self.in_sites,
            out_sites: self.out_sites,
            n_taps: self.n_taps,
            table: &self.table,
            c_in,
            c_out,
        }
    }

    /// The shape of the transposed map (output gradient to input gradient).
    fn inverse_shape(&self, rows: usize, c_in: usize, c_out: usize) -> ConvShape<'_> {
        ConvShape {
            rows,
            in_sites: self.out_sites,
            out_sites: self.in_sites,
            n_taps: self.n_taps,
            table: &self.inverse,
            c_in: c_out,
            c_out: c_in,
        }
    }
}

/// A convolution node, optionally followed by tanh.
pub(super) struct ConvOp {
    x: usize,
    taps: ConvTaps,
    c_in: usize,
    w: ParamSlice,
    b: Option<ParamSlice>,
    tanh: bool,
}

impl<T: Real> Tape<T> {
    /// Convolution by a neighbourhood table: `x` is `[n, in_sites * c_in]` (channels last),
    /// the kernel a `[n_taps * c_in, c_out]` parameter block (tap-major), the optional bias
    /// `[1, c_out]`; the output is `[n, out_sites * c_out]` with
    /// `y[s, co] = b[co] + Σ_t Σ_ci x[table[s, t], ci] · W[t · c_in + ci, co]`.
    pub fn conv(
        &mut self,
        params: &[T],
        x: Var,
        taps: &ConvTaps,
        c_in: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    ) -> Var {
        self.record_conv(params, x, taps, c_in, (w, b), false)
    }

    /// tanh of [`Tape::conv`] in one node: the hidden layer of a convolutional net, without
    /// the values and gradient of a separate tanh node.
    pub fn conv_tanh(
        &mut self,
        params: &[T],
        x: Var,
        taps: &ConvTaps,
        c_in: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    ) -> Var {
        self.record_conv(params, x, taps, c_in, (w, b), true)
    }

    fn record_conv(
        &mut self,
        params: &[T],
        x: Var,
        taps: &ConvTaps,
        c_in: usize,
        (w, b): (ParamSlice, Option<ParamSlice>),
        tanh: bool,
    ) -> Var {
        let (n, m) = self.shape(x);
        assert_eq!(m, taps.in_sites * c_in, "conv: input width");
        assert_eq!(w.rows, taps.n_taps * c_in, "conv: kernel rows");
        let c_out = w.cols;
        if let Some(b) = b {
            assert_eq!((b.rows, b.cols), (1, c_out), "conv: bias shape");
        }
        let op = Op::Conv(ConvOp {
            x: x.0,
            taps: taps.clone(),
            c_in,
            w,
            b,
            tanh,
        });
        let i = self.push(op, (n, taps.out_sites * c_out), true);
        let (prev, node) = self.split(i);
        let start = match b {
            Some(b) => Start::Bias(&params[b.offset..b.end()]),
            None => Start::Zero,
        };
        let y = contiguous_mut(&mut node.value);
        conv_kernel::forward(
            taps.shape(n, c_in, c_out),
            contiguous(&prev[x.0].value),
            &params[w.offset..w.end()],
            start,
            y,
        );
        if tanh {
            tanh_in_place(y);
        }
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
            tanh,
        } = self;
        let (c_in, c_out) = (*c_in, w.cols);
        let rows = ctx.grad.nrows();
        let g = if *tanh {
            // The gradient before the activation: g (1 − y²).
            ensure_shape(ctx.aux, ctx.grad.dim());
            let pre = contiguous_mut(ctx.aux);
            for ((p, &g), &y) in pre
                .iter_mut()
                .zip(contiguous(ctx.grad))
                .zip(contiguous(ctx.value))
            {
                *p = g * (T::one() - y * y);
            }
            contiguous(ctx.aux)
        } else {
            contiguous(ctx.grad)
        };
        if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
            conv_kernel::weight_grad(
                taps.shape(rows, c_in, c_out),
                contiguous(&ctx.prev[*x].value),
                g,
                &mut param_grad[w.offset..w.end()],
            );
            if let Some(b) = b {
                let gb = &mut param_grad[b.offset..b.end()];
                for gs in g.chunks_exact(c_out) {
                    for (o, &v) in gb.iter_mut().zip(gs) {
                        *o = *o + v;
                    }
                }
            }
        }
        let xn = &mut ctx.prev[*x];
        if xn.needs_grad {
            ensure_shape(ctx.aux_grad, (taps.n_taps * c_out, c_in));
            conv_kernel::transpose_kernel(
                &ctx.params[w.offset..w.end()],
                taps.n_taps,
                c_in,
                c_out,
                contiguous_mut(ctx.aux_grad),
            );
            conv_kernel::forward(
                taps.inverse_shape(rows, c_in, c_out),
                g,
                contiguous(ctx.aux_grad),
                Start::Accumulate,
                contiguous_mut(&mut xn.grad),
            );
        }
    }
}
