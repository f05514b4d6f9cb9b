//! The flow independence proposal: proposals drawn from any [`Flow`] in batches with the
//! chain's generator and consumed one by one, accepted with min(1, w'/w), w = e^{−S}/p̃;
//! and importance reweighting of independent flow samples.

use std::sync::{Arc, Mutex};

use ndarray::{Array1, Array2, Axis};
use rand::RngExt;
use serde::Serialize;

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowScratch, ensure_same_lattice};
use crate::kernel::{MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::rng::{SimRng, rng_from_seed};
use crate::stats::{GammaEstimate, ess_fraction, reweighted_mean};

/// Independence Metropolis with a flow as the proposal distribution.
///
/// Proposals φ' ~ p̃ are generated `batch` at a time through [`Flow::forward_into`] and
/// accepted with min(1, w(φ')/w(φ)), w = e^{−S}/p̃. The log-weight of the current state is
/// cached with the state's generation and recomputed through [`Flow::log_density_into`]
/// only when another kernel has changed the state, so the proposal composes with local and
/// HMC moves. Any [`Flow`] works, also behind
/// `Arc<dyn Flow>`.
pub struct FlowProposal<F: Flow + ?Sized, A: Action + ?Sized> {
    flow: Arc<F>,
    action: Arc<A>,
    batch: usize,
    draws: FlowBatch,
    proposals: Array2<f64>,
    proposal_log_w: Vec<f64>,
    proposal_action: Vec<f64>,
    next: usize,
    /// The generation of the state `cached_log_w` belongs to (0: none).
    cached_generation: u64,
    cached_log_w: f64,
    label: MoveLabel,
    /// log p̃ of the current state, for recomputing log w after another kernel.
    density: RowDensity,
}

impl<F: Flow + ?Sized, A: Action + ?Sized> FlowProposal<F, A> {
    /// Proposals from `flow` for `action`, generated `batch` at a time; the flow must live
    /// on the action's lattice.
    pub fn new(flow: Arc<F>, action: Arc<A>, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::param("batch", "must be at least 1"));
        }
        ensure_same_lattice(&*flow, &*action)?;
        let volume = action.lattice().volume();
        Ok(FlowProposal {
            flow,
            action,
            batch,
            draws: FlowBatch::new(batch, volume),
            proposals: Array2::zeros((batch, volume)),
            proposal_log_w: vec![0.0; batch],
            proposal_action: vec![0.0; batch],
            next: batch,
            cached_generation: 0,
            cached_log_w: f64::NAN,
            label: MoveLabel::new("flow"),
            density: RowDensity::new(volume),
        })
    }

    /// Records the kernel's proposals under `label` (default `flow`).
    pub fn with_label(mut self, label: MoveLabel) -> Self {
        self.label = label;
        self
    }

    /// Runs the flow's passes for new batches in `scratch`, shared with other proposals
    /// (an ensemble's chains), instead of buffers of its own.
    pub(crate) fn share_draw_scratch(mut self, scratch: &DrawScratch) -> Self {
        self.draws.share_scratch(scratch);
        self
    }

    /// The flow.
    pub fn model(&self) -> &Arc<F> {
        &self.flow
    }

    /// Proposals generated per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Draws a new batch of proposals with a generator seeded from `rng`. Should the prior
    /// or the flow fail on the batch, it holds only proposals with log w = NaN, which are
    /// never accepted.
    fn refill(&mut self, rng: &mut SimRng) {
        self.next = 0;
        if self.draws.generate(&*self.flow, rng).is_err() {
            self.proposal_log_w.fill(f64::NAN);
            return;
        }
        for (i, (row, mut out)) in self
            .draws
            .generated
            .outer_iter()
            .zip(self.proposals.outer_iter_mut())
            .enumerate()
        {
            for (o, &x) in out.iter_mut().zip(row.iter()) {
                *o = f64::from(x);
            }
            let s = match out.as_slice() {
                Some(slice) => self.action.action(slice),
                None => f64::NAN,
            };
            self.proposal_action[i] = s;
            self.proposal_log_w[i] = -s - self.draws.log_density(i);
        }
    }

    /// Whether log w of `state` must be computed before the next step (the state changed
    /// since this proposal last saw it).
    pub(crate) fn is_stale(&self, state: &State) -> bool {
        self.cached_generation != state.generation()
    }

    /// Takes `log_w` as the log-weight of `state`, computed elsewhere (an ensemble's batched
    /// pass), so that the next step does not compute it again.
    pub(crate) fn set_current_log_weight(&mut self, state: &State, log_w: f64) {
        self.cached_generation = state.generation();
        self.cached_log_w = log_w;
    }

    /// log w of `state`, from the cache when the state has not changed since it was filled.
    fn current_log_w(&mut self, state: &State) -> f64 {
        if self.cached_generation != state.generation() {
            self.cached_log_w =
                -state.action() - self.density.log_density(&*self.flow, state.phi());
            self.cached_generation = state.generation();
        }
        self.cached_log_w
    }
}

impl<F: Flow + ?Sized, A: Action + ?Sized> Proposal for FlowProposal<F, A> {
    fn name(&self) -> String {
        format!("flow(batch {})", self.batch)
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if self.next >= self.batch {
            self.refill(rng);
        }
        let i = self.next;
        self.next += 1;
        let current = self.current_log_w(state);
        let proposed = self.proposal_log_w[i];
        let delta = proposed - current;
        let u: f64 = rng.random();
        // A current state the flow cannot produce (log w NaN) is left for any finite proposal.
        let accept = proposed.is_finite() && (current.is_nan() || u.ln() < delta);
        if accept {
            let row = self.proposals.index_axis(Axis(0), i);
            match row.as_slice() {
                Some(row) => state.assign(row, self.proposal_action[i]),
                None => state.assign(&row.to_vec(), self.proposal_action[i]),
            }
            self.cached_generation = state.generation();
            self.cached_log_w = proposed;
        }
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed: 1,
            accepted: u32::from(accept),
            detail: MoveDetail::Flow {
                log_weight_ratio: delta,
                log_weight: proposed,
            },
        });
    }
}

/// The buffers of a flow's forward pass, shared by the draws of several chains.
///
/// A pass over a batch of B configurations keeps every intermediate value of the flow
/// (B × sites × channels per layer): at 1000 draws on 8 × 8 sites, 16 channels, over
/// 100 MB. The chains of an ensemble draw their batches one after the other, so one set of
/// these buffers serves them all; each chain keeps only its own draws. Cloning shares.
#[derive(Clone, Default)]
pub(crate) struct DrawScratch(Arc<Mutex<FlowScratch>>);

impl DrawScratch {
    /// A new, empty set of buffers.
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

/// Batches of draws from a flow: z ~ r, log r(z), φ = f(z) and log|det ∂f/∂z|, through
/// [`Flow::forward_into`] into buffers reused from batch to batch.
pub(crate) struct FlowBatch {
    latent: Array2<f32>,
    log_prior: Array1<f64>,
    /// φ of the batch as the flow returns them, one row per draw.
    pub(crate) generated: Array2<f32>,
    log_det: Array1<f64>,
    scratch: DrawScratch,
}

impl FlowBatch {
    /// Buffers for `batch` draws on `volume` sites, with pass buffers of their own.
    pub(crate) fn new(batch: usize, volume: usize) -> Self {
        FlowBatch {
            latent: Array2::zeros((batch, volume)),
            log_prior: Array1::zeros(batch),
            generated: Array2::zeros((batch, volume)),
            log_det: Array1::zeros(batch),
            scratch: DrawScratch::new(),
        }
    }

    /// Runs the flow's passes in `scratch`, shared with other batches, from now on.
    pub(crate) fn share_scratch(&mut self, scratch: &DrawScratch) {
        self.scratch = scratch.clone();
    }

    /// Draws a whole batch with `rng`.
    pub(crate) fn generate<F: Flow + ?Sized>(&mut self, flow: &F, rng: &mut SimRng) -> Result<()> {
        let prior = flow.prior();
        prior.sample_into(self.latent.view_mut(), rng)?;
        prior.log_density_into(self.latent.view(), self.log_prior.view_mut())?;
        // A pass that panicked elsewhere leaves buffers that the next pass refills anyway.
        let mut scratch = self
            .scratch
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        flow.forward_into(
            self.latent.view(),
            self.generated.view_mut(),
            self.log_det.view_mut(),
            &mut scratch,
        )
    }

    /// log p̃(φ_i) = log r(z_i) − log|det ∂f/∂z|(z_i) of draw `i`.
    pub(crate) fn log_density(&self, i: usize) -> f64 {
        self.log_prior[i] - self.log_det[i]
    }
}

/// log p̃ of single configurations through [`Flow::log_density_into`] (the inverse path),
/// with the f32 row and the flow's scratch reused from call to call.
pub(crate) struct RowDensity {
    row: Array2<f32>,
    log_p: Array1<f64>,
    scratch: FlowScratch,
}

impl RowDensity {
    /// Buffers for configurations of `volume` sites.
    pub(crate) fn new(volume: usize) -> Self {
        RowDensity {
            row: Array2::zeros((1, volume)),
            log_p: Array1::zeros(1),
            scratch: FlowScratch::new(),
        }
    }

    /// log p̃(φ) of `phi` (rounded to f32); NaN when the flow fails on it or `phi` has the
    /// wrong length (a configuration the flow cannot produce).
    pub(crate) fn log_density<F: Flow + ?Sized>(&mut self, flow: &F, phi: &[f64]) -> f64 {
        if phi.len() != self.row.len() {
            return f64::NAN;
        }
        for (o, &x) in self.row.iter_mut().zip(phi) {
            *o = x as f32;
        }
        match flow.log_density_into(self.row.view(), self.log_p.view_mut(), &mut self.scratch) {
            Ok(()) => self.log_p[0],
            Err(_) => f64::NAN,
        }
    }
}

/// A reweighted estimate from independent flow samples.
#[derive(Clone, Debug, Serialize)]
pub struct Reweighted {
    /// Σ w O / Σ w with its Γ-method error.
    pub estimate: GammaEstimate,
    /// Effective sample size fraction, in (0, 1].
    pub ess: f64,
    /// Samples drawn.
    pub n: usize,
}

/// ⟨O⟩ under e^{−S} from `n` independent samples of `flow` (drawn with a generator seeded
/// by `seed`), reweighted by w = e^{−S}/p̃: Σ w O / Σ w.
pub fn reweight<F: Flow + ?Sized, A: Action + ?Sized>(
    flow: &F,
    action: &A,
    n: usize,
    seed: u64,
    observable: &mut dyn FnMut(&[f64]) -> f64,
) -> Result<Reweighted> {
    if n < 2 {
        return Err(Error::param(
            "samples",
            format!("reweighting needs at least 2 samples, got {n}"),
        ));
    }
    ensure_same_lattice(flow, action)?;
    const BATCH: usize = 1024;
    let mut rng = rng_from_seed(seed);
    let mut values = Vec::with_capacity(n);
    let mut log_w = Vec::with_capacity(n);
    let mut row = vec![0.0; action.lattice().volume()];
    while values.len() < n {
        let m = BATCH.min(n - values.len());
        let (phi, log_p) = flow.sample(m, &mut rng)?;
        for (r, &lp) in phi.outer_iter().zip(log_p.iter()) {
            for (a, &b) in row.iter_mut().zip(r.iter()) {
                *a = f64::from(b);
            }
            log_w.push(-action.action(&row) - lp);
            values.push(observable(&row));
        }
    }
    Ok(Reweighted {
        estimate: reweighted_mean(&values, &log_w)?,
        ess: ess_fraction(&log_w)?,
        n,
    })
}
