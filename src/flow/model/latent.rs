//! The latent-space passes of a [`FlowModel`] that flow HMC needs: one configuration pulled
//! back through the flow with the gradient with respect to the *input* z (reverse mode on
//! the tape, no parameter gradients), and its inverse, both in any float type and, through
//! [`Flow::pull_back`] and [`Flow::inverse_f64`], in f64 with the model's parameters.
//!
//! [`Flow::pull_back`]: crate::flow::Flow::pull_back
//! [`Flow::inverse_f64`]: crate::flow::Flow::inverse_f64

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::FlowModel;
use super::workspace::{ChunkSeed, Workspace};
use crate::error::{Error, Result};
use crate::flow::layers::FlowFloat;
use crate::flow::traits::{FlowScratch, LatentPoint};
use crate::tape::ensure_shape;

/// What [`FlowModel::pull_back_with`] returns: views into the workspace.
pub struct PullBack<'w, T> {
    /// φ = f(z), `[n, volume]`.
    pub phi: ArrayView2<'w, T>,
    /// log|det ∂φ/∂z| per row (the tape's own sum).
    pub logdet: ArrayView1<'w, f64>,
    /// ∂L/∂z of every row for the seeded ∂L/∂φ and ∂L/∂logdet, `[n, volume]`.
    pub grad_z: ArrayView2<'w, T>,
    /// The values the seed recorded per row.
    pub record: ArrayView1<'w, f64>,
}

/// The f64 parameters and workspaces [`Flow::pull_back`] and [`Flow::inverse_f64`] keep in
/// their caller's [`FlowScratch`].
///
/// [`Flow::pull_back`]: crate::flow::Flow::pull_back
/// [`Flow::inverse_f64`]: crate::flow::Flow::inverse_f64
pub(super) struct LatentScratch {
    params: Vec<f64>,
    row: Array2<f64>,
    ws: Workspace<f64>,
}

impl LatentScratch {
    /// The scratch kept in `scratch`, holding `model`'s parameters in f64 and one row of
    /// `volume` sites.
    pub(super) fn of<'s>(scratch: &'s mut FlowScratch, model: &FlowModel) -> &'s mut Self {
        let latent = scratch.get_or_insert_with(|| LatentScratch {
            params: Vec::new(),
            row: Array2::zeros((1, 0)),
            ws: Workspace::new(1),
        });
        // The parameters are copied every call: a scratch may outlive a parameter update,
        // and the copy costs less than one pass through the networks.
        latent.params.clear();
        latent
            .params
            .extend(model.params.iter().map(|&p| f64::from(p)));
        ensure_shape(&mut latent.row, (1, model.lattice.volume()));
        latent
    }
}

impl FlowModel {
    /// z → φ = f(z) and log|det ∂φ/∂z| with `params`, then, with ∂L/∂φ and ∂L/∂logdet from
    /// `seed` (its [`ChunkSeed::score`] is `None`), the gradient ∂L/∂z of every row by one
    /// backward pass to the input (no parameter gradients). Runs the whole batch on the
    /// workspace's first chunk.
    pub fn pull_back_with<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
    ) -> Result<PullBack<'w, T>>
    where
        T: FlowFloat,
        F: FnOnce(ChunkSeed<'_, T>),
    {
        self.check_batch(&z)?;
        self.check_params(params.len())?;
        let n = z.nrows();
        ws.fit(z.dim());
        let chunk = &mut ws.chunks[0];
        let tape = &mut chunk.tape;
        tape.reset();
        tape.set_save_for_backward(true);
        let input = tape.input_with_grad(z);
        let (phi, ld) = self.build_forward(tape, params, input);
        ensure_shape(&mut chunk.x, z.dim());
        if chunk.logdet.len() != n {
            chunk.logdet = ndarray::Array1::zeros(n);
            chunk.grad_logdet = ndarray::Array1::zeros(n);
            chunk.record = ndarray::Array1::zeros(n);
        }
        for (o, &l) in chunk.logdet.iter_mut().zip(tape.value(ld).iter()) {
            *o = l.to_f64().unwrap_or(f64::NAN);
        }
        chunk.grad_logdet.fill(T::zero());
        chunk.record.fill(0.0);
        tape.zero_grads();
        {
            let (phi_value, phi_grad) = tape.value_and_grad_mut(phi);
            seed(ChunkSeed {
                phi: phi_value,
                logdet: chunk.logdet.view(),
                grad_phi: phi_grad,
                grad_logdet: chunk.grad_logdet.view_mut(),
                record: chunk.record.view_mut(),
                score: None,
                first_row: 0,
            });
        }
        tape.grad_mut(ld).column_mut(0).assign(&chunk.grad_logdet);
        tape.backward_to_inputs(params);
        chunk.x.assign(&tape.grad(input));
        ws.phi.assign(&tape.value(phi));
        Ok(PullBack {
            phi: ws.phi.view(),
            logdet: chunk.logdet.view(),
            grad_z: chunk.x.view(),
            record: chunk.record.view(),
        })
    }

    /// [`Flow::pull_back`](crate::flow::Flow::pull_back) in f64 with the model's parameters.
    pub(super) fn pull_back_f64(
        &self,
        z: &[f64],
        phi: &mut [f64],
        action: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
        grad_z: &mut [f64],
        scratch: &mut FlowScratch,
    ) -> Result<LatentPoint> {
        let volume = self.lattice.volume();
        check_row("z", z.len(), volume)?;
        check_row("phi", phi.len(), volume)?;
        check_row("grad_z", grad_z.len(), volume)?;
        let latent = LatentScratch::of(scratch, self);
        latent.row.iter_mut().zip(z).for_each(|(r, &x)| *r = x);
        let mut failed = None;
        let out =
            self.pull_back_with(&latent.params, latent.row.view(), &mut latent.ws, |seed| {
                let ChunkSeed {
                    phi: field,
                    grad_phi,
                    mut grad_logdet,
                    mut record,
                    ..
                } = seed;
                let (Some(field), Some(grad)) = (field.to_slice(), grad_phi.into_slice()) else {
                    failed = Some(Error::Shape("a non-contiguous row".into()));
                    return;
                };
                record[0] = action(field, grad);
                grad_logdet[0] = -1.0;
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        phi.iter_mut()
            .zip(out.phi.iter())
            .for_each(|(o, &x)| *o = x);
        grad_z
            .iter_mut()
            .zip(out.grad_z.iter())
            .for_each(|(o, &g)| *o = g);
        Ok(LatentPoint {
            action: out.record[0],
            log_det: out.logdet[0],
        })
    }

    /// [`Flow::inverse_f64`](crate::flow::Flow::inverse_f64) with the model's parameters.
    pub(super) fn inverse_f64_in(
        &self,
        phi: &[f64],
        z: &mut [f64],
        scratch: &mut FlowScratch,
    ) -> Result<f64> {
        let volume = self.lattice.volume();
        check_row("phi", phi.len(), volume)?;
        check_row("z", z.len(), volume)?;
        let latent = LatentScratch::of(scratch, self);
        latent.row.iter_mut().zip(phi).for_each(|(r, &x)| *r = x);
        let (out, logdet) = self.inverse_in(&latent.params, latent.row.view(), &mut latent.ws)?;
        z.iter_mut().zip(out.iter()).for_each(|(o, &x)| *o = x);
        Ok(logdet[0])
    }
}

fn check_row(what: &str, len: usize, volume: usize) -> Result<()> {
    if len == volume {
        Ok(())
    } else {
        Err(Error::Shape(format!(
            "{what} has {len} values, the lattice has {volume} sites"
        )))
    }
}
