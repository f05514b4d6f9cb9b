//! Non-equilibrium Monte Carlo: evolutions through a protocol of intermediate actions
//! S_λ = (1 − λ) S₀ + λ S from a start distribution — an exactly sampled Gaussian (a free
//! field) or a normalizing flow trained for S₀ — to the target, each step one local sweep
//! or HMC trajectory at fixed λ, optionally with flow layers between the steps (a
//! stochastic normalizing flow); the Jarzynski work W of every evolution ([`NoneqPath`]
//! also gives its gradient with respect to the field entering a stretch of steps, which
//! trains stochastic normalizing flows); the estimator of log Z and of reweighted
//! observables from independent evolutions; and the evolution as an exact independence
//! proposal ([`NoneqProposal`]).

use std::sync::Arc;

use rand::RngExt;
use serde::Serialize;

use crate::action::{Action, FreeField, FreeFieldSampler};
use crate::error::{Error, Result, ensure_finite};
use crate::flow::{Flow, InterleavedFlow, LayerMap, ensure_same_lattice};
use crate::kernel::flow::{DrawScratch, FlowBatch, RowDensity};
use crate::kernel::{MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::rng::{SimRng, rng_from_seed};
use crate::stats::{
    GammaEstimate, ess_fraction, pareto_k_hat, pareto_k_threshold, reweighted_mean,
};

mod path;

pub use path::{NoneqPath, NoneqProtocol, NoneqUpdate};

/// Where evolutions start.
enum Start {
    /// The free field q₀ ∝ e^{−S₀}, sampled exactly, log Z₀ known.
    Gaussian {
        field: Box<FreeField>,
        sampler: Box<FreeFieldSampler>,
    },
    /// A flow q with S₀ the action it was trained for.
    Flow(Box<FlowStart>),
}

/// A flow as the start distribution: starts drawn in batches, and S₀ + log q of a start.
struct FlowStart {
    flow: Arc<dyn Flow>,
    action: Arc<dyn Action>,
    draws: FlowBatch,
    next: usize,
    density: RowDensity,
}

impl FlowStart {
    /// The next start φ₀ = f(z) of the current batch (a new batch, drawn with `rng`, when
    /// it is used up) into `phi`; returns S₀(φ₀) + log q(φ₀), log q from the forward pass.
    fn draw(&mut self, rng: &mut SimRng, phi: &mut [f64]) -> Result<f64> {
        if self.next >= self.draws.generated.nrows() {
            self.draws.generate(&*self.flow, rng)?;
            self.next = 0;
        }
        let i = self.next;
        self.next += 1;
        for (o, &x) in phi.iter_mut().zip(self.draws.generated.row(i)) {
            *o = f64::from(x);
        }
        Ok(self.action.action(phi) + self.draws.log_density(i))
    }

    /// S₀(φ) + log q(φ) of a given φ, log q through the flow's inverse.
    fn offset(&mut self, phi: &[f64]) -> f64 {
        self.action.action(phi) + self.density.log_density(&*self.flow, phi)
    }
}

/// Evolutions through a [`NoneqProtocol`] from a start distribution q₀ to the target e^{−S}.
///
/// Forward ([`NoneqEvolution::forward`]): φ₀ ~ q₀, then the protocol's updates
/// ([`NoneqPath`]), with the work
///
/// W = S₀(φ₀) + log q₀(φ₀) + log Z_ref + Σ_{t=0}^{n−1} (λ_{t+1} − λ_t) [S(φ_t) − S₀(φ_t)].
///
/// Two starts: the free field of mass² m_s² (`new`), S₀ its action and q₀ = e^{−S₀}/Z₀
/// exactly, so that the first three terms cancel with log Z_ref = log Z₀ and W is the
/// protocol's sum alone; or a flow q (`from_flow`), S₀ the action it was trained for (any
/// action on the same lattice, e.g. φ⁴ at a smaller β), log Z_ref = 0. In both cases
/// Jarzynski's equality reads ⟨e^{−W}⟩ = Z / Z_ref for any n ≥ 1 and any updates leaving
/// the S_λ invariant ([`NoneqEvolution::log_z_start`] is log Z_ref), and
/// ⟨O(φ_n) e^{−W}⟩/⟨e^{−W}⟩ = ⟨O⟩ under e^{−S}; with a flow start and S₀ = S the sum
/// vanishes and W = −log w(φ₀), the flow's importance log-weight. Backward
/// ([`NoneqEvolution::backward`]): from a given φ_n, the time reversal of every update
/// (the sweep in reversed site order, the same HMC trajectory) in reversed order,
/// t = n … 1, with the work of that path (a flow start's log q₀(φ₀) then through the
/// flow's inverse, at φ₀ rounded to f32 as the flow proposal does).
///
/// A stochastic normalizing flow may place flow layers between the steps
/// ([`NoneqEvolution::from_interleaved`]): a layer g applied after step t maps φ to g(φ)
/// and adds S_{λ_t}(g(φ)) − S_{λ_t}(φ) − log|det ∂g/∂φ| to W (derivation in
/// [`crate::train::Snf`]); the backward path applies g⁻¹ there, in f64, with the same
/// term. Jarzynski's equality and the exactness of the proposal hold as before.
pub struct NoneqEvolution<A: Action + ?Sized> {
    start: Start,
    target: Arc<A>,
    path: NoneqPath,
    layers: FlowLayers,
    phi: Vec<f64>,
    phi0: Vec<f64>,
}

/// Flow layers between the protocol's steps, `maps[j]` after step `after[j]`, and the
/// whole evolution through steps and layers (none: the protocol alone).
#[derive(Default)]
pub(crate) struct FlowLayers {
    maps: Vec<LayerMap>,
    after: Vec<usize>,
}

impl FlowLayers {
    /// The layers `maps`, `maps[j]` after step `after[j]` of `protocol` (checked by
    /// [`NoneqProtocol::check_layers_after`], one position per map).
    pub(crate) fn new(
        maps: Vec<LayerMap>,
        after: &[usize],
        protocol: &NoneqProtocol,
    ) -> Result<Self> {
        protocol.check_layers_after(after)?;
        if after.len() != maps.len() {
            return Err(Error::param(
                "layers_after",
                format!(
                    "{} step positions for {} flow layers",
                    after.len(),
                    maps.len()
                ),
            ));
        }
        Ok(FlowLayers {
            maps,
            after: after.to_vec(),
        })
    }

    /// Evolves `phi` from φ₀ through the protocol of `path` from `start` to `target`, with
    /// the layers where they sit; returns W minus its start terms S₀(φ₀) + log q₀(φ₀): the
    /// protocol's sum plus S_{λ_t}(g(φ)) − S_{λ_t}(φ) − log|det ∂g/∂φ| of every layer.
    pub(crate) fn forward<S, A>(
        &mut self,
        path: &mut NoneqPath,
        start: &S,
        target: &A,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> Result<f64>
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let mut work = 0.0;
        let mut from = 0;
        for (map, &t) in self.maps.iter_mut().zip(&self.after) {
            work += path.forward_steps(start, target, from..t, phi, rng);
            let before = path.action_at(start, target, t, phi);
            let log_det = map.forward(phi)?;
            work += path.action_at(start, target, t, phi) - before - log_det;
            from = t;
        }
        let steps = path.protocol().steps;
        Ok(work + path.forward_steps(start, target, from..steps, phi, rng))
    }

    /// The backward path from `phi` (taken as the end field): the reversed updates and the
    /// layers' inverses in reversed order; leaves φ₀ in `phi` and returns the work of that
    /// path as [`FlowLayers::forward`] counts it (NaN when a layer fails).
    fn backward<S, A>(
        &mut self,
        path: &mut NoneqPath,
        start: &S,
        target: &A,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let mut work = 0.0;
        let mut to = path.protocol().steps;
        for (map, &t) in self.maps.iter_mut().zip(&self.after).rev() {
            work += path.backward_steps(start, target, t..to, phi, rng);
            let after = path.action_at(start, target, t, phi);
            let Ok(inverse_log_det) = map.inverse(phi) else {
                return f64::NAN;
            };
            work += after - path.action_at(start, target, t, phi) + inverse_log_det;
            to = t;
        }
        work + path.backward_steps(start, target, 0..to, phi, rng)
    }
}

/// The start action S₀ of `start`.
fn start_action(start: &Start) -> &dyn Action {
    match start {
        Start::Gaussian { field, .. } => &**field,
        Start::Flow(flow) => &*flow.action,
    }
}

impl<A: Action + ?Sized> NoneqEvolution<A> {
    /// Evolutions from the free field of mass² `start_m0sq` to `target` through `protocol`
    /// (checked by [`NoneqProtocol::validate`]).
    pub fn new(target: Arc<A>, start_m0sq: f64, protocol: NoneqProtocol) -> Result<Self> {
        protocol.validate()?;
        ensure_finite("noneq_start_m0sq", start_m0sq)?;
        if start_m0sq <= 0.0 {
            return Err(Error::param(
                "noneq_start_m0sq",
                format!("the Gaussian start needs a positive mass², got {start_m0sq}"),
            ));
        }
        let start = FreeField::new(target.lattice().clone(), start_m0sq)?;
        let sampler = start.sampler();
        Self::assemble(
            Start::Gaussian {
                field: Box::new(start),
                sampler: Box::new(sampler),
            },
            target,
            protocol,
        )
    }

    /// Evolutions from `flow`, trained for `start_action`, to `target` through `protocol`;
    /// the starts are drawn `batch` at a time. Flow and both actions must live on one
    /// lattice (an [`Error::Incompatible`] otherwise).
    pub fn from_flow(
        target: Arc<A>,
        flow: Arc<dyn Flow>,
        start_action: Arc<dyn Action>,
        protocol: NoneqProtocol,
        batch: usize,
    ) -> Result<Self> {
        protocol.validate()?;
        if batch == 0 {
            return Err(Error::param("flow_batch", "must be at least 1"));
        }
        ensure_same_lattice(&*flow, &*target)?;
        if start_action.lattice() != target.lattice() {
            return Err(Error::Incompatible(format!(
                "the start action is for a {} lattice, the target for {}",
                start_action.lattice(),
                target.lattice()
            )));
        }
        let volume = target.lattice().volume();
        let start = FlowStart {
            flow,
            action: start_action,
            draws: FlowBatch::new(batch, volume),
            next: batch,
            density: RowDensity::new(volume),
        };
        Self::assemble(Start::Flow(Box::new(start)), target, protocol)
    }

    /// Evolutions of a stochastic normalizing flow with flow layers between the protocol's
    /// steps: φ₀ from `flow.start` (trained for `start_action`), then the protocol from
    /// `start_action` to `target`, with `flow.maps[j]` applied after step `after[j]`
    /// (one step index per map, nondecreasing, at most the protocol's step count: checked
    /// by [`NoneqProtocol::check_layers_after`]); the starts are drawn `batch` at a time.
    pub fn from_interleaved(
        target: Arc<A>,
        flow: InterleavedFlow,
        start_action: Arc<dyn Action>,
        protocol: NoneqProtocol,
        after: &[usize],
        batch: usize,
    ) -> Result<Self> {
        let layers = FlowLayers::new(flow.maps, after, &protocol)?;
        let mut evolution =
            Self::from_flow(target, Arc::new(flow.start), start_action, protocol, batch)?;
        evolution.layers = layers;
        Ok(evolution)
    }

    /// Runs the flow's passes for new batches of starts in `scratch`, shared with other
    /// evolutions (an ensemble's chains); evolutions from the Gaussian are unchanged.
    pub(crate) fn share_draw_scratch(mut self, scratch: &DrawScratch) -> Self {
        if let Start::Flow(start) = &mut self.start {
            start.draws.share_scratch(scratch);
        }
        self
    }

    fn assemble(start: Start, target: Arc<A>, protocol: NoneqProtocol) -> Result<Self> {
        let v = target.lattice().volume();
        Ok(NoneqEvolution {
            start,
            target,
            path: NoneqPath::new(protocol, v)?,
            layers: FlowLayers::default(),
            phi: vec![0.0; v],
            phi0: vec![0.0; v],
        })
    }

    /// The protocol.
    pub fn protocol(&self) -> &NoneqProtocol {
        self.path.protocol()
    }

    /// Whether the evolutions start from a flow (else from the Gaussian).
    pub fn starts_from_flow(&self) -> bool {
        matches!(self.start, Start::Flow(_))
    }

    /// log Z_ref, the constant of Jarzynski's equality ⟨e^{−W}⟩ = Z / Z_ref: log Z₀ of the
    /// Gaussian start, 0 for a flow start (whose q is normalised).
    pub fn log_z_start(&self) -> f64 {
        match &self.start {
            Start::Gaussian { field, .. } => field.log_z(),
            Start::Flow(_) => 0.0,
        }
    }

    /// The field at the end of the last evolution.
    pub fn field(&self) -> &[f64] {
        &self.phi
    }

    /// The start φ₀ of the last forward evolution.
    pub fn start_field(&self) -> &[f64] {
        &self.phi0
    }

    /// One forward evolution from a fresh φ₀ ~ q₀; returns its work W (NaN when an action
    /// is not finite on the way) and leaves φ_n in [`NoneqEvolution::field`]. A flow that
    /// fails on a batch is an error.
    pub fn forward(&mut self, rng: &mut SimRng) -> Result<f64> {
        let offset = match &mut self.start {
            Start::Gaussian { sampler, .. } => {
                sampler.sample_into(rng, &mut self.phi)?;
                0.0
            }
            Start::Flow(flow) => flow.draw(rng, &mut self.phi)?,
        };
        self.phi0.copy_from_slice(&self.phi);
        let (target, path, phi) = (&*self.target, &mut self.path, &mut self.phi);
        let start = start_action(&self.start);
        Ok(offset + self.layers.forward(path, start, target, phi, rng)?)
    }

    /// The backward path from `phi` (taken as φ_n): φ_{t−1} from φ_t by the reversal of the
    /// update at λ_t, t = n … 1 (and the inverse of every flow layer where it sits);
    /// returns the work W of that path (NaN when `phi` does not have one value per site or
    /// a layer fails).
    pub fn backward(&mut self, phi: &[f64], rng: &mut SimRng) -> f64 {
        if phi.len() != self.phi.len() {
            return f64::NAN;
        }
        self.phi.copy_from_slice(phi);
        let (target, path, phi) = (&*self.target, &mut self.path, &mut self.phi);
        let start = start_action(&self.start);
        let work = self.layers.backward(path, start, target, phi, rng);
        match &mut self.start {
            Start::Gaussian { .. } => work,
            Start::Flow(flow) => work + flow.offset(phi),
        }
    }

    /// A short description for kernel names: the start and the protocol.
    fn describe(&self) -> String {
        let start = match self.start {
            Start::Gaussian { .. } => "gaussian",
            Start::Flow(_) => "flow",
        };
        match self.layers.maps.len() {
            0 => format!("{start} start, {} steps", self.protocol().steps),
            k => format!(
                "{start} start, {} steps, {k} flow layers between",
                self.protocol().steps
            ),
        }
    }
}

/// What [`noneq_estimate`] found from independent evolutions.
#[derive(Clone, Debug, Serialize)]
pub struct NoneqEstimate {
    /// Evolutions made.
    pub n: usize,
    /// log Z of the target = log Z_ref + log ⟨e^{−W}⟩ (NaN when unreliable for a non-finite
    /// work).
    pub log_z: f64,
    /// Its standard error by the delta method, σ(e^{−W}) / (√n ⟨e^{−W}⟩).
    pub log_z_err: f64,
    /// log Z_ref of the start ([`NoneqEvolution::log_z_start`]): log Z₀ of a Gaussian, 0
    /// for a flow.
    pub log_z_start: f64,
    /// ⟨W⟩, whose excess over log Z_ref − log Z measures the dissipation (and, for a flow
    /// start, the flow's own distance from S₀).
    pub mean_work: f64,
    /// Effective sample size fraction of the weights e^{−W}.
    pub ess: f64,
    /// Pareto k̂ of the weights' tail, and the threshold above which it is too heavy.
    pub pareto_k: f64,
    /// See `pareto_k`.
    pub pareto_k_threshold: f64,
    /// ⟨O⟩ by reweighting, Σ e^{−W} O(φ_n) / Σ e^{−W}, one per observable (none when a
    /// work is not finite).
    pub observables: Vec<GammaEstimate>,
    /// False when the numbers cannot be trusted: a non-finite work, too heavy a weight
    /// tail, or too few effective samples (see `caveats`).
    pub reliable: bool,
    /// Why not, when not.
    pub caveats: Vec<String>,
}

/// A function of one configuration, e.g. an observable to reweight.
pub type FieldFunction<'a> = dyn FnMut(&[f64]) -> f64 + 'a;

/// Fewest effective evolutions (ESS · n) an estimate is trusted with.
pub const MIN_EFFECTIVE_EVOLUTIONS: f64 = 20.0;

/// `n` (≥ 25) independent forward evolutions with a generator seeded by `seed`: log Z of
/// the target with its error, and every observable of `observables` (functions of φ_n)
/// reweighted with e^{−W}.
///
/// A work that is NaN or −∞ (an action that is not finite on the way) makes the estimate
/// unreliable, with log Z and the observables NaN; so do a Pareto k̂ above the threshold of
/// [`pareto_k_threshold`] and fewer than [`MIN_EFFECTIVE_EVOLUTIONS`] effective samples.
pub fn noneq_estimate<A: Action + ?Sized>(
    evolution: &mut NoneqEvolution<A>,
    n: usize,
    seed: u64,
    observables: &mut [&mut FieldFunction<'_>],
) -> Result<NoneqEstimate> {
    if n < 25 {
        return Err(Error::param(
            "samples",
            format!("the estimate needs at least 25 evolutions, got {n}"),
        ));
    }
    let mut rng = rng_from_seed(seed);
    let mut work = Vec::with_capacity(n);
    let mut values = vec![Vec::with_capacity(n); observables.len()];
    for _ in 0..n {
        work.push(evolution.forward(&mut rng)?);
        for (o, series) in observables.iter_mut().zip(values.iter_mut()) {
            series.push(o(evolution.field()));
        }
    }
    let mut caveats = Vec::new();
    let bad = work
        .iter()
        .filter(|w| w.is_nan() || **w == f64::NEG_INFINITY)
        .count();
    if bad > 0 {
        caveats.push(format!(
            "{bad} of {n} evolutions have a non-finite work (an action that is not finite \
             on the way): no estimate"
        ));
    }
    let log_w: Vec<f64> = work.iter().map(|w| -w).collect();
    let log_z_start = evolution.log_z_start();
    let finite_mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (log_ratio, log_ratio_err, ess, pareto_k, estimates) = if bad > 0 {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN, Vec::new())
    } else {
        let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = log_w.iter().map(|l| (l - max).exp()).collect();
        let mean = finite_mean(&w);
        let var = w.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
        let ess = ess_fraction(&log_w)?;
        let pareto_k = pareto_k_hat(&log_w).unwrap_or(f64::NAN);
        let estimates = values
            .iter()
            .map(|v| reweighted_mean(v, &log_w))
            .collect::<Result<Vec<_>>>()?;
        (
            max + mean.ln(),
            (var / n as f64).sqrt() / mean,
            ess,
            pareto_k,
            estimates,
        )
    };
    let threshold = pareto_k_threshold(n);
    if pareto_k > threshold {
        caveats.push(format!(
            "the weights e^(−W) have a heavy tail (Pareto k̂ = {pareto_k:.2} > {threshold:.2}): \
             use more protocol steps or a start closer to the target"
        ));
    }
    if ess * (n as f64) < MIN_EFFECTIVE_EVOLUTIONS {
        caveats.push(format!(
            "the {n} evolutions are worth {:.1} independent samples (ESS per sample {ess:.2e})",
            ess * n as f64
        ));
    }
    let reliable = caveats.is_empty();
    Ok(NoneqEstimate {
        n,
        log_z: log_z_start + log_ratio,
        log_z_err: log_ratio_err,
        log_z_start,
        mean_work: finite_mean(&work),
        ess,
        pareto_k,
        pareto_k_threshold: threshold,
        observables: estimates,
        reliable,
        caveats,
    })
}

/// The non-equilibrium evolution as an independence proposal: each step runs one forward
/// evolution to φ′ with work W′ and accepts it with min(1, e^{−(W′ − W)}), W the work of
/// the current state's path.
///
/// Exact on the space of whole paths: with the extended target p(φ_n) Π_t L_t(φ_t → φ_{t−1})
/// (L_t the time reversal of the update at λ_t) and the proposal q₀(φ₀) Π_t K_t, their ratio
/// is (Z₀/Z) e^{−W}, so this is independence Metropolis–Hastings with importance weight
/// e^{−W}. When another kernel has changed the state (or at the first step), the path of
/// the current state is drawn afresh from its conditional given φ_n, the backward
/// evolution, which is a Gibbs update of the path: the composition stays exact. Moves are
/// recorded like flow proposals (log-weight ratio W − W′ and log-weight −W′), so the flow
/// diagnostics (ESS, Pareto k̂, τ_rej) apply, under the label `noneq`.
pub struct NoneqProposal<A: Action + ?Sized> {
    evolution: NoneqEvolution<A>,
    /// The generation of the state `cached_work` belongs to (0: none).
    cached_generation: u64,
    cached_work: f64,
    label: MoveLabel,
}

impl<A: Action + ?Sized> NoneqProposal<A> {
    /// The independence proposal of `evolution`.
    pub fn new(evolution: NoneqEvolution<A>) -> Self {
        NoneqProposal {
            evolution,
            cached_generation: 0,
            cached_work: f64::NAN,
            label: MoveLabel::new("noneq"),
        }
    }

    /// Records the kernel's proposals under `label` (default `noneq`).
    pub fn with_label(mut self, label: MoveLabel) -> Self {
        self.label = label;
        self
    }
}

impl<A: Action + ?Sized> Proposal for NoneqProposal<A> {
    fn name(&self) -> String {
        format!("noneq({})", self.evolution.describe())
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if self.cached_generation != state.generation() {
            self.cached_work = self.evolution.backward(state.phi(), rng);
            self.cached_generation = state.generation();
        }
        let work = self.evolution.forward(rng).unwrap_or(f64::NAN);
        let delta = self.cached_work - work;
        let u: f64 = rng.random();
        let proposed_ok = !work.is_nan() && work != f64::NEG_INFINITY;
        let accept = proposed_ok && (self.cached_work.is_nan() || u.ln() < delta);
        if accept {
            let s = self.evolution.target.action(&self.evolution.phi);
            state.assign(&self.evolution.phi, s);
            self.cached_generation = state.generation();
            self.cached_work = work;
        }
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed: 1,
            accepted: u32::from(accept),
            detail: MoveDetail::Flow {
                log_weight_ratio: delta,
                log_weight: -work,
            },
        });
    }
}
