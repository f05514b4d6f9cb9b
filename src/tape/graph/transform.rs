//! The fused application of a [`PointwiseTransform`] to the active sites of a coupling
//! layer: one node for the transformed values (holding the per-site log-derivatives) and
//! one for their row sums, the layer's log-determinant.

use std::sync::Arc;

use ndarray::ArrayView2;

use super::{Backward, Op, Real, Tape, Var, contiguous, contiguous_mut, ensure_shape, two_mut};
use crate::tape::PointwiseTransform;

/// A pointwise-transform node.
pub(super) enum TransformOp<T: Real> {
    /// y = C(v; θ); the node's `aux` holds the per-site log-derivatives, `aux_grad` their
    /// gradient.
    Pointwise {
        v: usize,
        theta: usize,
        transform: Arc<dyn PointwiseTransform<T>>,
    },
    /// Row sums of the log-derivatives of the pointwise node at this index.
    LogDet(usize),
}

impl<T: Real> TransformOp<T> {
    /// Whether the node keeps a gradient of its per-site log-derivatives in `aux_grad`.
    pub(super) fn keeps_log_derivative_gradient(&self) -> bool {
        matches!(self, TransformOp::Pointwise { .. })
    }
}

impl<T: Real> Tape<T> {
    /// Applies a pointwise transform: `v` is `[n, m]`, `theta` is `[n, m·k]`. Returns y
    /// (`[n, m]`) and the per-row sum of log|∂C/∂v| (`[n, 1]`).
    pub fn pointwise(
        &mut self,
        v: Var,
        theta: Var,
        transform: &Arc<dyn PointwiseTransform<T>>,
    ) -> (Var, Var) {
        let (n, m) = self.shape(v);
        let k = transform.params_per_site();
        assert_eq!(self.shape(theta), (n, m * k), "pointwise: parameter shape");
        let ng = self.needs(v.0) || self.needs(theta.0);
        let op = Op::Transform(TransformOp::Pointwise {
            v: v.0,
            theta: theta.0,
            transform: transform.clone(),
        });
        let i = self.push(op, (n, m), ng);
        let save = ng && self.save_for_backward;
        let (prev, node) = self.split(i);
        ensure_shape(&mut node.aux, (n, m));
        let saved_len = if save { transform.saved_len(n * m) } else { 0 };
        // Resized only when the length changes, so steady-state passes allocate nothing.
        if node.saved.len() != saved_len {
            node.saved.resize(saved_len, T::zero());
        }
        transform.forward_saving(
            contiguous(&prev[v.0].value),
            contiguous(&prev[theta.0].value),
            contiguous_mut(&mut node.value),
            contiguous_mut(&mut node.aux),
            &mut node.saved,
        );
        let j = self.push(Op::Transform(TransformOp::LogDet(i)), (n, 1), ng);
        let (prev, node) = self.split(j);
        for (lr, y) in prev[i].aux.outer_iter().zip(node.value.iter_mut()) {
            *y = lr.sum();
        }
        (Var(i), Var(j))
    }

    /// Per-site log-derivatives of a pointwise node (from [`Tape::pointwise`]).
    pub fn pointwise_log_derivatives(&self, y: Var) -> ArrayView2<'_, T> {
        assert!(matches!(
            self.nodes[y.0].op,
            Op::Transform(TransformOp::Pointwise { .. })
        ));
        self.nodes[y.0].aux.view()
    }

    /// The vector–Jacobian product of a pointwise node (from [`Tape::pointwise`]) on its
    /// own: given ∂L/∂y (`gy`) and ∂L/∂ld per site (`gld`), *adds* ∂L/∂v into `gv` and ∂L/∂θ
    /// into `gtheta` (flat, laid out like the node's operands), from the state the
    /// transform saved in the forward pass when there is one.
    pub fn pointwise_backward(&self, y: Var, gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        let node = &self.nodes[y.0];
        let Op::Transform(TransformOp::Pointwise {
            v,
            theta,
            transform,
        }) = &node.op
        else {
            panic!("pointwise_backward: not a pointwise node");
        };
        let (v, theta) = (
            contiguous(&self.nodes[*v].value),
            contiguous(&self.nodes[*theta].value),
        );
        if node.saved.len() == transform.saved_len(v.len()) {
            transform.backward_saved(v, theta, &node.saved, gy, gld, gv, gtheta);
        } else {
            transform.backward(v, theta, gy, gld, gv, gtheta);
        }
    }
}

impl<T: Real> TransformOp<T> {
    pub(super) fn backward(&self, ctx: &mut Backward<'_, T>) {
        match self {
            TransformOp::Pointwise {
                v,
                theta,
                transform,
            } => {
                let (nv, nt) = two_mut(ctx.prev, *v, *theta);
                transform.backward_saved(
                    contiguous(&nv.value),
                    contiguous(&nt.value),
                    ctx.saved,
                    contiguous(ctx.grad),
                    contiguous(ctx.aux_grad),
                    contiguous_mut(&mut nv.grad),
                    contiguous_mut(&mut nt.grad),
                );
            }
            TransformOp::LogDet(pw) => {
                let pwn = &mut ctx.prev[*pw];
                for (mut gl, &g) in pwn.aux_grad.outer_iter_mut().zip(ctx.grad.iter()) {
                    gl.iter_mut().for_each(|x| *x = *x + g);
                }
            }
        }
    }
}
