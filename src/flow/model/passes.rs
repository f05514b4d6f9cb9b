//! The passes of a [`FlowModel`] over batches: forward (sampling), inverse (densities of
//! given configurations), and the data-parallel forward + backward pass of training, with
//! and without the score a path gradient needs. Every pass splits the batch over the
//! chunks of a [`Workspace`] and reuses its tapes and buffers.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, s};
use rayon::prelude::*;

use super::FlowModel;
use super::workspace::{BatchOutput, ChunkSeed, Interleave, InterleaveSeed, Workspace};
use crate::error::{Error, Result};
use crate::flow::layers::FlowFloat;
use crate::flow::prior::LatentPrior;
use crate::flow::traits::FlowScratch;
use crate::tape::ensure_shape;

/// Gradient entries per parallel task of the reduction over chunks.
const REDUCE_BLOCK: usize = 8192;

impl FlowModel {
    /// z → φ with `params`; returns φ and the forward log-det per row. Panics unless `z` has
    /// one column per site and `params` the model's length (see [`FlowModel::n_params`]);
    /// [`FlowModel::forward_in`] returns an error instead and reuses its buffers.
    pub fn forward_with<T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
    ) -> (Array2<T>, Array1<f64>) {
        let mut ws = Workspace::per_thread();
        match self.forward_in(params, z, &mut ws) {
            Ok((phi, logdet)) => (phi.to_owned(), logdet.to_owned()),
            Err(e) => panic!("{e}"),
        }
    }

    /// z → (φ, log|det ∂φ/∂z| per row) with `params`, data-parallel over the workspace's
    /// batch chunks and reusing its tapes and buffers, so that repeated calls with batches of
    /// one size allocate nothing. Returns views into the workspace.
    pub fn forward_in<'w, T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
    ) -> Result<(ArrayView2<'w, T>, ArrayView1<'w, f64>)> {
        self.check_batch(&z)?;
        self.check_params(params.len())?;
        ws.fit(z.dim());
        let (n, parts) = (z.nrows(), ws.chunks.len());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            chunk.phi_var = None;
            if a == b {
                return;
            }
            let (x, _) = chunk.record_forward(self, params, z.slice(s![a..b, ..]), false);
            chunk.phi_var = Some(x);
        });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            if let Some(x) = chunk.phi_var {
                ws.phi.slice_mut(s![a..b, ..]).assign(&chunk.tape.value(x));
                ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
            }
        }
        Ok((ws.phi.view(), ws.logdet.view()))
    }

    /// φ → z with `params`; returns z and the inverse log-det per row. Panics unless `phi`
    /// has one column per site and `params` the model's length;
    /// [`FlowModel::inverse_in`] returns an error instead and reuses its buffers.
    pub fn inverse_with<T: FlowFloat>(
        &self,
        params: &[T],
        phi: ArrayView2<T>,
    ) -> (Array2<T>, Array1<f64>) {
        let mut ws = Workspace::per_thread();
        match self.inverse_in(params, phi, &mut ws) {
            Ok((z, logdet)) => (z.to_owned(), logdet.to_owned()),
            Err(e) => panic!("{e}"),
        }
    }

    /// φ → (z, log|det ∂z/∂φ| per row) with `params`, data-parallel over the workspace's
    /// batch chunks and reusing its tapes and buffers, so that repeated calls with batches of
    /// one size allocate nothing. Returns views into the workspace.
    pub fn inverse_in<'w, T: FlowFloat>(
        &self,
        params: &[T],
        phi: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
    ) -> Result<(ArrayView2<'w, T>, ArrayView1<'w, f64>)> {
        self.check_batch(&phi)?;
        self.check_params(params.len())?;
        ws.fit(phi.dim());
        let (n, parts) = (phi.nrows(), ws.chunks.len());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            let rows = phi.slice(s![a..b, ..]);
            ensure_shape(&mut chunk.x, rows.dim());
            chunk.x.assign(&rows);
            if chunk.logdet.len() != b - a {
                chunk.logdet = Array1::zeros(b - a);
            }
            chunk.logdet.fill(0.0);
            if a == b {
                return;
            }
            for layer in self.layers.iter().rev() {
                layer.invert_reusing(
                    &mut chunk.tape,
                    params,
                    &mut chunk.x,
                    &mut chunk.logdet,
                    &mut chunk.invert_scratch,
                );
            }
        });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            ws.phi.slice_mut(s![a..b, ..]).assign(&chunk.x);
            ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
        }
        Ok((ws.phi.view(), ws.logdet.view()))
    }

    /// [`Flow::log_density`](crate::flow::Flow::log_density) of every row into `out`, reusing the workspace's buffers
    /// (with the standard-normal prior, repeated calls allocate nothing but the matrix
    /// products' small flag vectors).
    pub fn log_density_in(
        &self,
        phi: ArrayView2<f32>,
        ws: &mut Workspace<f32>,
        mut out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        if out.len() != phi.nrows() {
            return Err(Error::Shape(format!(
                "{} rows need {} log-densities, got room for {}",
                phi.nrows(),
                phi.nrows(),
                out.len()
            )));
        }
        let (z, logdet) = self.inverse_in(&self.params, phi, ws)?;
        self.prior.log_density_into(z, out.view_mut())?;
        out.zip_mut_with(&logdet, |o, &l| *o += l);
        Ok(())
    }

    /// One training pass in f32 with the model's own parameters: see
    /// [`FlowModel::forward_backward_with`].
    pub fn forward_backward<'w, F>(
        &self,
        z: ArrayView2<f32>,
        ws: &'w mut Workspace<f32>,
        seed: F,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        F: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.pass(&self.params, z, ws, seed, grad, false, None)
    }

    /// [`FlowModel::forward_backward`] whose seed also receives the score ∇_φ log p̃(φ) of
    /// every row ([`ChunkSeed::score`]): see [`FlowModel::forward_backward_scored_with`].
    pub fn forward_backward_scored<'w, F>(
        &self,
        z: ArrayView2<f32>,
        ws: &'w mut Workspace<f32>,
        seed: F,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        F: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.pass(&self.params, z, ws, seed, grad, true, None)
    }

    /// [`FlowModel::forward_backward_with`] whose seed also receives, in
    /// [`ChunkSeed::score`], the score ∇_φ log p̃_θ(φ) of every row at φ = f(z) and fixed
    /// θ, which the path gradient of the reverse KL needs. It is carried forward layer by
    /// layer from the prior's ∇_z log r(z) while the forward pass is recorded, so the flow
    /// is never inverted: each coupling layer adds one vector–Jacobian product through its
    /// conditioner on the recorded graph (no parameter gradients).
    pub fn forward_backward_scored_with<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.pass(params, z, ws, seed, grad, true, None)
    }

    /// φ = f(z) and the score ∇_φ log p̃(φ) of every row with `params`, by the forward
    /// recursion of [`FlowModel::forward_backward_scored_with`].
    pub fn forward_score_with<T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
    ) -> Result<(Array2<T>, Array2<T>)> {
        self.check_batch(&z)?;
        self.check_params(params.len())?;
        let mut ws = Workspace::<T>::new(1);
        let chunk = &mut ws.chunks[0];
        let (phi, _) = chunk.record_forward_scored(self, params, z);
        Ok((chunk.tape.value(phi).to_owned(), chunk.score.clone()))
    }

    /// Forward pass z → (φ, log-det) and backward pass to the parameters, data-parallel over
    /// the workspace's fixed number of batch chunks.
    ///
    /// For each chunk, `seed` receives a [`ChunkSeed`]: φ and the log-det of the chunk's rows,
    /// where it writes ∂L/∂φ and ∂L/∂logdet (for reverse KL, ∂S/∂φ / N and −1/N) and may
    /// record one f64 per row (e.g. S(φ)). `grad` is overwritten with ∂L/∂θ, summed over
    /// chunks in chunk order, so the result depends only on the inputs and the workspace's
    /// chunk count. Returns φ, the log-det and the recorded values of the whole batch. The
    /// log-det here is the tape's own sum (what the gradient flows through), which equals the
    /// f64 per-layer sum of [`FlowModel::forward_in`] up to the rounding of the network
    /// float type.
    pub fn forward_backward_with<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.pass(params, z, ws, seed, grad, false, None)
    }

    /// [`FlowModel::forward_backward_with`] with a map between layer groups: `between` is
    /// called before each of the last `k` layer groups with the field there
    /// ([`InterleaveSeed`]); the field it leaves enters the next group as φ plus a shift that
    /// does not depend on φ, and the gradient it writes for its own terms seeds the
    /// backward pass at the cut, where the gradient flowing back from the later groups is
    /// added: ∂L/∂φ_cut = seed + ∂L/∂φ_next. The records of the cuts and of `seed` add up
    /// per row. With k = 0 this is [`FlowModel::forward_backward_with`]; more groups than
    /// the flow has is an [`Error::Incompatible`].
    ///
    /// This trains a stochastic normalizing flow whose flow layers sit between stochastic
    /// steps: `between` runs the steps of one stretch of the protocol
    /// (see [`crate::train::Snf`]).
    pub fn forward_backward_interleaved_with<'w, T, B, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        (k, between): (usize, B),
        seed: F,
        grad: &mut [T],
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        B: Fn(InterleaveSeed<'_, T>) + Sync,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.check_interleaved(k)?;
        self.pass(params, z, ws, seed, grad, false, Some((k, &between)))
    }

    /// The training pass, carrying the score of every row along when `with_score`, with
    /// the map between layer groups of [`FlowModel::forward_backward_interleaved_with`]
    /// when `interleave` is given.
    #[allow(clippy::too_many_arguments)]
    fn pass<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
        with_score: bool,
        interleave: Option<Interleave<'_, T>>,
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.check_batch(&z)?;
        let np = self.params.len();
        if params.len() != np || grad.len() != np {
            return Err(Error::Shape(format!(
                "the flow has {np} parameters, got {} values and a gradient of {}",
                params.len(),
                grad.len()
            )));
        }
        let n = z.nrows();
        let parts = ws.chunks.len();
        ws.fit(z.dim());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            chunk.grad.clear();
            chunk.grad.resize(np, T::zero());
            if a == b {
                return;
            }
            let rows = z.slice(s![a..b, ..]);
            if chunk.grad_logdet.len() != b - a {
                chunk.grad_logdet = Array1::zeros(b - a);
                chunk.record = Array1::zeros(b - a);
            }
            chunk.grad_logdet.fill(T::zero());
            chunk.record.fill(0.0);
            let (phi, ld) = match (with_score, interleave) {
                (_, Some(between)) => {
                    chunk.record_forward_interleaved(self, params, rows, between, a)
                }
                (true, None) => chunk.record_forward_scored(self, params, rows),
                (false, None) => chunk.record_forward(self, params, rows, true),
            };
            let tape = &mut chunk.tape;
            tape.zero_grads();
            if interleave.is_some() {
                for (&v, g) in chunk.cut_vars.iter().zip(&chunk.cut_grads) {
                    tape.grad_mut(v).zip_mut_with(g, |a, &b| *a = *a + b);
                }
            }
            {
                let (phi_value, phi_grad) = tape.value_and_grad_mut(phi);
                seed(ChunkSeed {
                    phi: phi_value,
                    logdet: chunk.logdet.view(),
                    grad_phi: phi_grad,
                    grad_logdet: chunk.grad_logdet.view_mut(),
                    record: chunk.record.view_mut(),
                    score: with_score.then(|| chunk.score.view()),
                    first_row: a,
                });
            }
            tape.grad_mut(ld).column_mut(0).assign(&chunk.grad_logdet);
            tape.backward(params, &mut chunk.grad);
            chunk.phi_var = Some(phi);
        });
        // Every element sums the chunks in chunk order, whichever thread adds it up.
        let chunks = &ws.chunks;
        grad.par_chunks_mut(REDUCE_BLOCK)
            .enumerate()
            .for_each(|(j, out)| {
                out.fill(T::zero());
                for chunk in chunks {
                    let part = &chunk.grad[j * REDUCE_BLOCK..j * REDUCE_BLOCK + out.len()];
                    for (g, &c) in out.iter_mut().zip(part) {
                        *g = *g + c;
                    }
                }
            });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            if let (Some(phi), true) = (chunk.phi_var, a < b) {
                ws.phi
                    .slice_mut(s![a..b, ..])
                    .assign(&chunk.tape.value(phi));
                ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
                ws.record.slice_mut(s![a..b]).assign(&chunk.record);
            }
        }
        Ok(BatchOutput {
            phi: ws.phi.view(),
            logdet: ws.logdet.view(),
            record: ws.record.view(),
        })
    }
}

/// The workspace a [`FlowScratch`] keeps for batches of `rows` rows: one chunk per rayon
/// thread, or per row when there are fewer rows than threads.
pub(super) fn scratch_workspace(scratch: &mut FlowScratch, rows: usize) -> &mut Workspace<f32> {
    let chunks = rows.clamp(1, rayon::current_num_threads());
    let ws = scratch.get_or_insert_with(|| Workspace::<f32>::new(chunks));
    if ws.n_chunks() != chunks {
        *ws = Workspace::new(chunks);
    }
    ws
}
