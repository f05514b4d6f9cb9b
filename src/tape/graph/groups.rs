//! Maps over runs of consecutive columns (the last axis of a `[rows, cols / group, group]`
//! view): softmax and cumulative sums, as a spline's bin widths and knots need them.

use super::{Backward, Op, Real, Tape, Var, contiguous, contiguous_mut};

/// A per-group node.
pub(super) enum GroupOp {
    Softmax { x: usize, group: usize },
    CumSum { x: usize, group: usize },
}

impl<T: Real> Tape<T> {
    /// Softmax over each run of `group` consecutive columns (the last axis of a
    /// `[rows, cols / group, group]` view).
    pub fn softmax(&mut self, x: Var, group: usize) -> Var {
        let shape = self.shape(x);
        assert!(
            group > 0 && shape.1.is_multiple_of(group),
            "softmax: group {group}"
        );
        let ng = self.needs(x.0);
        let i = self.push(Op::Group(GroupOp::Softmax { x: x.0, group }), shape, ng);
        let (prev, node) = self.split(i);
        let xs = contiguous(&prev[x.0].value);
        let ys = contiguous_mut(&mut node.value);
        for (xg, yg) in xs.chunks_exact(group).zip(ys.chunks_exact_mut(group)) {
            let m = xg.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
            let mut sum = T::zero();
            for (y, &x) in yg.iter_mut().zip(xg) {
                *y = (x - m).exp();
                sum = sum + *y;
            }
            let inv = T::one() / sum;
            yg.iter_mut().for_each(|y| *y = *y * inv);
        }
        Var(i)
    }

    /// Cumulative sum over each run of `group` consecutive columns.
    pub fn cumsum(&mut self, x: Var, group: usize) -> Var {
        let shape = self.shape(x);
        assert!(
            group > 0 && shape.1.is_multiple_of(group),
            "cumsum: group {group}"
        );
        let ng = self.needs(x.0);
        let i = self.push(Op::Group(GroupOp::CumSum { x: x.0, group }), shape, ng);
        let (prev, node) = self.split(i);
        let xs = contiguous(&prev[x.0].value);
        let ys = contiguous_mut(&mut node.value);
        for (xg, yg) in xs.chunks_exact(group).zip(ys.chunks_exact_mut(group)) {
            let mut acc = T::zero();
            for (y, &x) in yg.iter_mut().zip(xg) {
                acc = acc + x;
                *y = acc;
            }
        }
        Var(i)
    }
}

impl GroupOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        let gs = contiguous(ctx.grad);
        match *self {
            GroupOp::Softmax { x, group } => {
                let ys = contiguous(ctx.value);
                let gxs = contiguous_mut(&mut ctx.prev[x].grad);
                for ((gg, yg), gxg) in gs
                    .chunks_exact(group)
                    .zip(ys.chunks_exact(group))
                    .zip(gxs.chunks_exact_mut(group))
                {
                    let dot = gg.iter().zip(yg).fold(T::zero(), |a, (&g, &y)| a + g * y);
                    for ((gx, &g), &y) in gxg.iter_mut().zip(gg).zip(yg) {
                        *gx = *gx + y * (g - dot);
                    }
                }
            }
            GroupOp::CumSum { x, group } => {
                let gxs = contiguous_mut(&mut ctx.prev[x].grad);
                for (gg, gxg) in gs.chunks_exact(group).zip(gxs.chunks_exact_mut(group)) {
                    let mut acc = T::zero();
                    for (gx, &g) in gxg.iter_mut().zip(gg).rev() {
                        acc = acc + g;
                        *gx = *gx + acc;
                    }
                }
            }
        }
    }
}
