//! The reusable buffers of a [`FlowModel`]'s passes: one tape and gradient buffer per batch
//! chunk ([`Workspace`]), what a training pass's gradient seed sees per chunk
//! ([`ChunkSeed`]) and what the pass returns ([`BatchOutput`]).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use super::FlowModel;
use crate::action::Action;
use crate::flow::layers::{FlowFloat, InvertScratch, ScoreScratch};
use crate::flow::prior::Prior;
use crate::tape::{Tape, Var, ensure_shape};

/// What the gradient seed of [`FlowModel::forward_backward`] sees and writes for one chunk of
/// the batch.
pub struct ChunkSeed<'a, T> {
    /// φ of the chunk's rows, `[rows, volume]`.
    pub phi: ArrayView2<'a, T>,
    /// log|det ∂φ/∂z| of the chunk's rows.
    pub logdet: ArrayView1<'a, f64>,
    /// ∂L/∂φ to be written (zero on entry).
    pub grad_phi: ArrayViewMut2<'a, T>,
    /// ∂L/∂logdet to be written (zero on entry).
    pub grad_logdet: ArrayViewMut1<'a, T>,
    /// One free f64 per row (zero on entry), returned in [`BatchOutput::record`], e.g. S(φ).
    pub record: ArrayViewMut1<'a, f64>,
    /// The score ∇_φ log p̃(φ) of the chunk's rows at fixed parameters, `[rows, volume]`,
    /// when the pass was asked for it (path gradients), else `None`.
    pub score: Option<ArrayView2<'a, T>>,
    /// The index of the chunk's first row in the batch (0 for a batch in one chunk), so
    /// that a seed can give every row a random stream of its own whatever the chunking.
    pub first_row: usize,
}

/// What the map between layer groups of [`FlowModel::forward_backward_interleaved_with`] sees
/// and writes for one chunk of the batch at one cut.
pub struct InterleaveSeed<'a, T> {
    /// The cut: j before the (j + 1)-th of the interleaved groups.
    pub cut: usize,
    /// φ of the chunk's rows at the cut on entry; on exit, the field the next group starts
    /// from. The pass treats the change as a shift that does not depend on φ
    /// (∂φ_out/∂φ_in = 1).
    pub phi: ArrayViewMut2<'a, T>,
    /// ∂L/∂φ at the cut of the terms the map adds to the loss, to be written (zero on
    /// entry); the pass adds what flows back from the later groups.
    pub grad_phi: ArrayViewMut2<'a, T>,
    /// One f64 per row, zero before the first cut and carried from cut to cut on to
    /// [`ChunkSeed::record`].
    pub record: ArrayViewMut1<'a, f64>,
    /// The index of the chunk's first row in the batch.
    pub first_row: usize,
}

/// The map between layer groups of an interleaved pass and the number of groups it
/// precedes (the last ones).
pub(super) type Interleave<'a, T> = (usize, &'a (dyn Fn(InterleaveSeed<'_, T>) + Sync));

/// The whole batch after [`FlowModel::forward_backward`] (views into the workspace).
pub struct BatchOutput<'w, T> {
    /// φ = f(z), `[n, volume]`.
    pub phi: ArrayView2<'w, T>,
    /// log|det ∂φ/∂z| per row.
    pub logdet: ArrayView1<'w, f64>,
    /// The values the seed recorded per row.
    pub record: ArrayView1<'w, f64>,
}

pub(super) struct ChunkWork<T: FlowFloat> {
    pub(super) tape: Tape<T>,
    /// The chunk's rows during an inverse pass.
    pub(super) x: Array2<T>,
    pub(super) invert_scratch: InvertScratch<T>,
    pub(super) grad: Vec<T>,
    pub(super) logdet: Array1<f64>,
    pub(super) grad_logdet: Array1<T>,
    pub(super) record: Array1<f64>,
    pub(super) phi_var: Option<Var>,
    /// ∇_φ log p̃(φ) of the chunk's rows after [`ChunkWork::record_forward_scored`].
    pub(super) score: Array2<T>,
    pub(super) score_scratch: ScoreScratch<T>,
    /// One row and the free field's force, for a free-field prior's score.
    pub(super) prior_row: Vec<f64>,
    pub(super) prior_force: Vec<f64>,
    /// The field at a cut of an interleaved pass, then its shift.
    pub(super) cut_phi: Array2<T>,
    /// ∂L/∂φ of each cut's own terms, and the φ variable they seed.
    pub(super) cut_grads: Vec<Array2<T>>,
    pub(super) cut_vars: Vec<Var>,
}

impl<T: FlowFloat> ChunkWork<T> {
    /// [`ChunkWork::record_forward`] for a backward pass that also carries the score from
    /// the prior's ∇_z log r(z) into `score` = ∇_φ log p̃(φ) (see [`Layer::build_scored`]).
    pub(super) fn record_forward_scored(
        &mut self,
        model: &FlowModel,
        params: &[T],
        z: ArrayView2<T>,
    ) -> (Var, Var) {
        self.tape.reset();
        self.tape.set_save_for_backward(true);
        ensure_shape(&mut self.score, z.dim());
        match &model.prior {
            Prior::StandardNormal => self.score.zip_mut_with(&z, |w, &x| *w = -x),
            Prior::FreeField(field) => {
                self.prior_row.resize(z.ncols(), 0.0);
                self.prior_force.resize(z.ncols(), 0.0);
                for (row, mut w) in z.outer_iter().zip(self.score.outer_iter_mut()) {
                    for (a, &b) in self.prior_row.iter_mut().zip(row.iter()) {
                        *a = b.to_f64().unwrap_or(f64::NAN);
                    }
                    field.force(&self.prior_row, &mut self.prior_force);
                    for (w, &f) in w.iter_mut().zip(&self.prior_force) {
                        *w = T::from_f64(-f).unwrap_or_else(T::nan);
                    }
                }
            }
        }
        let n = z.nrows();
        let mut x = self.tape.input_with_grad(z);
        let mut ld = self.tape.zeros(n, 1);
        for layer in &model.layers {
            (x, ld) = layer.build_scored(
                &mut self.tape,
                params,
                x,
                ld,
                &mut self.score,
                &mut self.score_scratch,
            );
        }
        if self.logdet.len() != n {
            self.logdet = Array1::zeros(n);
        }
        for (o, &l) in self.logdet.iter_mut().zip(self.tape.value(ld).iter()) {
            *o = l.to_f64().unwrap_or(f64::NAN);
        }
        (x, ld)
    }

    /// Records z → φ of the chunk's rows `z` on the chunk's tape and stores the log-det of
    /// each row, summed in f64 from the per-site terms, in `logdet`; returns the φ and
    /// log-det variables (the latter in `T`, for the backward pass).
    /// `for_backward` keeps the state pointwise transforms save for a backward pass.
    pub(super) fn record_forward(
        &mut self,
        model: &FlowModel,
        params: &[T],
        z: ArrayView2<T>,
        for_backward: bool,
    ) -> (Var, Var) {
        self.tape.reset();
        self.tape.set_save_for_backward(for_backward);
        let n = z.nrows();
        if self.logdet.len() != n {
            self.logdet = Array1::zeros(n);
        }
        self.logdet.fill(0.0);
        let mut x = self.tape.input(z);
        if for_backward {
            // Training needs the log-det only through its gradient and the loss: the tape's
            // own sum serves, and the pass stays as lean as it can be.
            let ld;
            (x, ld) = model.build_forward(&mut self.tape, params, x);
            for (o, &l) in self.logdet.iter_mut().zip(self.tape.value(ld).iter()) {
                *o = l.to_f64().unwrap_or(f64::NAN);
            }
            return (x, ld);
        }
        // The graph of `build_forward`, with the log-det also summed in f64 per layer, so
        // that log p̃ of a drawn φ matches the inverse path's (the bound on `FlowModel`).
        let mut ld = self.tape.zeros(n, 1);
        for layer in &model.layers {
            (x, ld) = layer.build_exact(&mut self.tape, params, x, ld, &mut self.logdet);
        }
        (x, ld)
    }

    /// [`ChunkWork::record_forward`] for a backward pass, calling `between` before each of
    /// the model's last `k` layer groups: the field it leaves in [`InterleaveSeed::phi`]
    /// enters the graph as φ + (a constant shift), and its gradient seed is kept in
    /// `cut_grads` for the φ variable kept in `cut_vars`. `record` must be zeroed (and sized
    /// for the chunk's rows) before; the cuts add to it.
    pub(super) fn record_forward_interleaved(
        &mut self,
        model: &FlowModel,
        params: &[T],
        z: ArrayView2<T>,
        (k, between): Interleave<'_, T>,
        first_row: usize,
    ) -> (Var, Var) {
        self.tape.reset();
        self.tape.set_save_for_backward(true);
        let n = z.nrows();
        let mut x = self.tape.input(z);
        let mut ld = self.tape.zeros(n, 1);
        let groups = model.groups.len();
        self.cut_vars.clear();
        if self.cut_grads.len() < k {
            self.cut_grads.resize_with(k, || Array2::zeros((0, 0)));
        }
        for (g, span) in model.groups.iter().enumerate() {
            if g + k >= groups {
                let cut = g + k - groups;
                ensure_shape(&mut self.cut_phi, z.dim());
                self.cut_phi.assign(&self.tape.value(x));
                let grad = &mut self.cut_grads[cut];
                ensure_shape(grad, z.dim());
                grad.fill(T::zero());
                between(InterleaveSeed {
                    cut,
                    phi: self.cut_phi.view_mut(),
                    grad_phi: grad.view_mut(),
                    record: self.record.view_mut(),
                    first_row,
                });
                self.cut_phi
                    .zip_mut_with(&self.tape.value(x), |a, &b| *a = *a - b);
                let shift = self.tape.input(self.cut_phi.view());
                self.cut_vars.push(x);
                x = self.tape.add(x, shift);
            }
            for layer in &model.layers[span.clone()] {
                (x, ld) = layer.build(&mut self.tape, params, x, ld);
            }
        }
        if self.logdet.len() != n {
            self.logdet = Array1::zeros(n);
        }
        for (o, &l) in self.logdet.iter_mut().zip(self.tape.value(ld).iter()) {
            *o = l.to_f64().unwrap_or(f64::NAN);
        }
        (x, ld)
    }
}

/// Reusable buffers of [`FlowModel::forward_backward`]: one tape and gradient buffer per
/// batch chunk. The chunk count fixes the summation order of the gradient, so results are
/// reproducible for a given seed and chunk count.
pub struct Workspace<T: FlowFloat> {
    pub(super) chunks: Vec<ChunkWork<T>>,
    pub(super) phi: Array2<T>,
    pub(super) logdet: Array1<f64>,
    pub(super) record: Array1<f64>,
}

impl<T: FlowFloat> Workspace<T> {
    /// A workspace that splits batches into `chunks` parts (at least one).
    pub fn new(chunks: usize) -> Self {
        Workspace {
            chunks: (0..chunks.max(1))
                .map(|_| ChunkWork {
                    tape: Tape::new(),
                    x: Array2::zeros((0, 0)),
                    invert_scratch: InvertScratch::default(),
                    grad: Vec::new(),
                    logdet: Array1::zeros(0),
                    grad_logdet: Array1::zeros(0),
                    record: Array1::zeros(0),
                    phi_var: None,
                    score: Array2::zeros((0, 0)),
                    score_scratch: ScoreScratch::default(),
                    prior_row: Vec::new(),
                    prior_force: Vec::new(),
                    cut_phi: Array2::zeros((0, 0)),
                    cut_grads: Vec::new(),
                    cut_vars: Vec::new(),
                })
                .collect(),
            phi: Array2::zeros((0, 0)),
            logdet: Array1::zeros(0),
            record: Array1::zeros(0),
        }
    }

    /// One chunk per rayon thread.
    pub fn per_thread() -> Self {
        Self::new(rayon::current_num_threads())
    }

    /// Number of batch chunks.
    pub fn n_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Sizes the whole-batch buffers for a batch of `dim` = (rows, sites).
    pub(super) fn fit(&mut self, dim: (usize, usize)) {
        if self.phi.dim() != dim {
            self.phi = Array2::zeros(dim);
            self.logdet = Array1::zeros(dim.0);
            self.record = Array1::zeros(dim.0);
        }
    }
}
