//! Reductions: row sums and the sum of all elements.

use super::{Backward, Op, Real, Tape, Var};

/// A reduction node.
pub(super) enum ReduceOp {
    /// `[n, m]` → `[n, 1]`.
    SumRows(usize),
    /// `[n, m]` → `[1, 1]`.
    SumAll(usize),
}

impl<T: Real> Tape<T> {
    /// Row sums: `[n, m]` → `[n, 1]`.
    pub fn sum_rows(&mut self, x: Var) -> Var {
        let n = self.shape(x).0;
        let ng = self.needs(x.0);
        let i = self.push(Op::Reduce(ReduceOp::SumRows(x.0)), (n, 1), ng);
        let (prev, node) = self.split(i);
        for (xr, y) in prev[x.0].value.outer_iter().zip(node.value.iter_mut()) {
            *y = xr.sum();
        }
        Var(i)
    }

    /// Sum of all elements: `[n, m]` → `[1, 1]`.
    pub fn sum_all(&mut self, x: Var) -> Var {
        let ng = self.needs(x.0);
        let i = self.push(Op::Reduce(ReduceOp::SumAll(x.0)), (1, 1), ng);
        let (prev, node) = self.split(i);
        node.value[[0, 0]] = prev[x.0].value.sum();
        Var(i)
    }
}

impl ReduceOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        let g = ctx.grad;
        match *self {
            ReduceOp::SumRows(x) => {
                for (mut gxr, &g) in ctx.prev[x].grad.outer_iter_mut().zip(g.iter()) {
                    gxr.iter_mut().for_each(|gx| *gx = *gx + g);
                }
            }
            ReduceOp::SumAll(x) => {
                let g = g[[0, 0]];
                ctx.prev[x].grad.iter_mut().for_each(|gx| *gx = *gx + g);
            }
        }
    }
}
