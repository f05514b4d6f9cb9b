//! Matrix products: dense layers x·W (+ b), products of two nodes, and bias rows.

use super::{Backward, Op, ParamSlice, Real, Tape, Var, add_column_sums, add_into, two_mut};
use crate::tape::matmul::{mat_mul, mat_mul_bias};

/// A matrix-product node.
pub(super) enum ProductOp {
    /// x·W (+ b) with W and b from the parameters.
    Linear {
        x: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    },
    /// a·b of two nodes.
    MatMul { a: usize, b: usize },
    /// x + b with a bias row from the parameters.
    BiasAdd { x: usize, b: ParamSlice },
}

impl<T: Real> Tape<T> {
    /// x·W (+ b): a dense layer with weights `[in, out]` and an optional bias `[1, out]`.
    pub fn linear(&mut self, params: &[T], x: Var, w: ParamSlice, b: Option<ParamSlice>) -> Var {
        let (n, k) = self.shape(x);
        assert_eq!(
            k, w.rows,
            "linear: input width {k} vs weight rows {}",
            w.rows
        );
        if let Some(b) = b {
            assert_eq!((b.rows, b.cols), (1, w.cols), "linear: bias shape");
        }
        let op = Op::Product(ProductOp::Linear { x: x.0, w, b });
        let i = self.push(op, (n, w.cols), true);
        let (prev, node) = self.split(i);
        match b {
            Some(b) => mat_mul_bias(
                &prev[x.0].value.view(),
                &w.view(params),
                &b.view(params),
                &mut node.value.view_mut(),
            ),
            None => mat_mul(
                &prev[x.0].value.view(),
                &w.view(params),
                T::zero(),
                &mut node.value.view_mut(),
            ),
        }
        Var(i)
    }

    /// a·b of two nodes.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (n, k) = self.shape(a);
        let (k2, m) = self.shape(b);
        assert_eq!(k, k2, "matmul: inner dimensions {k} vs {k2}");
        let ng = self.needs(a.0) || self.needs(b.0);
        let i = self.push(
            Op::Product(ProductOp::MatMul { a: a.0, b: b.0 }),
            (n, m),
            ng,
        );
        let (prev, node) = self.split(i);
        mat_mul(
            &prev[a.0].value.view(),
            &prev[b.0].value.view(),
            T::zero(),
            &mut node.value.view_mut(),
        );
        Var(i)
    }

    /// x + b with a bias row `[1, cols]` from the parameters.
    pub fn bias_add(&mut self, params: &[T], x: Var, b: ParamSlice) -> Var {
        let shape = self.shape(x);
        assert_eq!((b.rows, b.cols), (1, shape.1), "bias_add: bias shape");
        let i = self.push(Op::Product(ProductOp::BiasAdd { x: x.0, b }), shape, true);
        let (prev, node) = self.split(i);
        node.value.assign(&prev[x.0].value);
        add_into(&mut node.value, &b.view(params));
        Var(i)
    }
}

impl ProductOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        let g = ctx.grad;
        match *self {
            ProductOp::Linear { x, w, b } => {
                let xn = &mut ctx.prev[x];
                if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
                    let mut gw = w.view_mut(param_grad);
                    mat_mul(&xn.value.t(), &g.view(), T::one(), &mut gw);
                    if let Some(b) = b {
                        add_column_sums(&g.view(), &mut b.view_mut(param_grad));
                    }
                }
                if xn.needs_grad {
                    mat_mul(
                        &g.view(),
                        &w.view(ctx.params).t(),
                        T::one(),
                        &mut xn.grad.view_mut(),
                    );
                }
            }
            ProductOp::MatMul { a, b } => {
                if a == b {
                    let xv = ctx.prev[a].value.clone();
                    let xn = &mut ctx.prev[a];
                    mat_mul(&g.view(), &xv.t(), T::one(), &mut xn.grad.view_mut());
                    mat_mul(&xv.t(), &g.view(), T::one(), &mut xn.grad.view_mut());
                } else {
                    let (na, nb) = two_mut(ctx.prev, a, b);
                    if na.needs_grad {
                        mat_mul(&g.view(), &nb.value.t(), T::one(), &mut na.grad.view_mut());
                    }
                    if nb.needs_grad {
                        mat_mul(&na.value.t(), &g.view(), T::one(), &mut nb.grad.view_mut());
                    }
                }
            }
            ProductOp::BiasAdd { x, b } => {
                if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
                    add_column_sums(&g.view(), &mut b.view_mut(param_grad));
                }
                if ctx.prev[x].needs_grad {
                    add_into(&mut ctx.prev[x].grad, &g.view());
                }
            }
        }
    }
}
