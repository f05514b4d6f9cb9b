//! Non-equilibrium Monte Carlo: evolutions through a protocol of intermediate actions
//! S_λ = (1 − λ) S₀ + λ S from a start distribution — an exactly sampled Gaussian (a free
//! field) or a normalizing flow trained for S₀ — to the target, each step one local sweep
//! or HMC trajectory at fixed λ; the Jarzynski work W of every evolution ([`NoneqPath`]
//! also gives its gradient with respect to the start field, which trains stochastic
//! normalizing flows); the estimator of log Z and of reweighted observables from
//! independent evolutions; and the evolution as an exact independence proposal
//! ([`NoneqProposal`]).

use std::sync::Arc;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::action::{Action, FreeField, FreeFieldSampler, single_site_sweep};
use crate::error::{Error, Result, ensure_finite};
use crate::flow::{Flow, ensure_same_lattice};
use crate::kernel::flow::{FlowBatch, RowDensity};
use crate::kernel::hmc::{drift, kick, kinetic};
use crate::kernel::{MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::lattice::Lattice;
use crate::rng::{SimRng, rng_from_seed};
use crate::stats::{
    GammaEstimate, ess_fraction, pareto_k_hat, pareto_k_threshold, reweighted_mean,
};

/// What one step of a protocol does at its λ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NoneqUpdate {
    /// One local Metropolis sweep with proposals φ_x + δu, u uniform in (−1, 1).
    Local {
        /// The proposal half-width δ.
        step_size: f64,
    },
    /// One leapfrog HMC trajectory of fixed length τ in `md_steps` steps.
    Hmc {
        /// Trajectory length τ.
        tau: f64,
        /// Leapfrog steps.
        md_steps: usize,
    },
}

/// A protocol of `steps` intermediate actions S_{λ_t}, λ_t = t/`steps`, t = 1 … `steps`,
/// each visited by one `update`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoneqProtocol {
    /// Intermediate actions (≥ 1); the last is the target.
    pub steps: usize,
    /// The update at each of them.
    pub update: NoneqUpdate,
}

impl NoneqProtocol {
    /// Checks the protocol: at least one step, a positive finite step size or trajectory
    /// length, at least one leapfrog step; the errors name the settings (`noneq_steps`,
    /// `noneq_step_size`, `tau`, `md_steps`).
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::param(
                "noneq_steps",
                "a protocol needs at least one step (0 would be plain importance sampling \
                 from the start distribution, without any update)",
            ));
        }
        match self.update {
            NoneqUpdate::Local { step_size } => {
                ensure_finite("noneq_step_size", step_size)?;
                if step_size <= 0.0 {
                    return Err(Error::param(
                        "noneq_step_size",
                        format!("must be positive, got {step_size}"),
                    ));
                }
            }
            NoneqUpdate::Hmc { tau, md_steps } => {
                ensure_finite("tau", tau)?;
                if tau <= 0.0 {
                    return Err(Error::param("tau", format!("must be positive, got {tau}")));
                }
                if md_steps == 0 {
                    return Err(Error::param("md_steps", "must be at least 1"));
                }
            }
        }
        Ok(())
    }

    /// λ_t = t / steps.
    fn lambda(&self, t: usize) -> f64 {
        t as f64 / self.steps as f64
    }
}

/// S_λ = (1 − λ) S₀ + λ S.
struct Interpolated<'a, S: ?Sized, A: ?Sized> {
    start: &'a S,
    target: &'a A,
    lambda: f64,
}

impl<S: Action + ?Sized, A: Action + ?Sized> Action for Interpolated<'_, S, A> {
    fn lattice(&self) -> &Lattice {
        self.target.lattice()
    }

    fn action(&self, phi: &[f64]) -> f64 {
        (1.0 - self.lambda) * self.start.action(phi) + self.lambda * self.target.action(phi)
    }

    fn force(&self, phi: &[f64], out: &mut [f64]) {
        self.action_and_force(phi, out);
    }

    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        (1.0 - self.lambda) * self.start.delta_local(phi, site, new)
            + self.lambda * self.target.delta_local(phi, site, new)
    }

    fn action_and_force(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        let mut start_force = vec![0.0; phi.len()];
        let s0 = self.start.action_and_force(phi, &mut start_force);
        let s1 = self.target.action_and_force(phi, out);
        for (o, f) in out.iter_mut().zip(&start_force) {
            *o = (1.0 - self.lambda) * f + self.lambda * *o;
        }
        (1.0 - self.lambda) * s0 + self.lambda * s1
    }
}

/// The updates of a [`NoneqProtocol`] between a start action S₀ and a target S, with their
/// buffers: the forward path from a given φ₀ and its work
///
/// W_path = Σ_{t=0}^{n−1} [S_{λ_{t+1}}(φ_t) − S_{λ_t}(φ_t)] = Σ_t (λ_{t+1} − λ_t) [S(φ_t) − S₀(φ_t)],
///
/// φ_{t+1} from φ_t by one update leaving e^{−S_{λ_{t+1}}} invariant; the work's gradient
/// with respect to φ₀ at fixed random numbers ([`NoneqPath::forward_with_gradient`]); and
/// the backward path. [`NoneqEvolution`] adds the start distribution.
pub struct NoneqPath {
    protocol: NoneqProtocol,
    sites: Vec<usize>,
    reversed: Vec<usize>,
    trial: Vec<f64>,
    force: Vec<f64>,
    start_force: Vec<f64>,
    momentum: Vec<f64>,
}

impl NoneqPath {
    /// The updates of `protocol` (checked by [`NoneqProtocol::validate`]) on `volume` sites.
    pub fn new(protocol: NoneqProtocol, volume: usize) -> Result<Self> {
        protocol.validate()?;
        Ok(NoneqPath {
            protocol,
            sites: (0..volume).collect(),
            reversed: (0..volume).rev().collect(),
            trial: vec![0.0; volume],
            force: vec![0.0; volume],
            start_force: vec![0.0; volume],
            momentum: vec![0.0; volume],
        })
    }

    /// The protocol.
    pub fn protocol(&self) -> &NoneqProtocol {
        &self.protocol
    }

    /// Evolves `phi` from φ₀ to φ_n through the protocol from `start` to `target`; returns
    /// W_path (NaN when `phi` does not have one value per site).
    pub fn forward<S, A>(
        &mut self,
        start: &S,
        target: &A,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        if phi.len() != self.sites.len() {
            return f64::NAN;
        }
        let mut work = 0.0;
        for t in 0..self.protocol.steps {
            let (from, to) = (self.protocol.lambda(t), self.protocol.lambda(t + 1));
            work += (to - from) * (target.action(phi) - start.action(phi));
            self.update(start, target, to, false, phi, rng);
        }
        work
    }

    /// [`NoneqPath::forward`] that also writes the gradient of W_path with respect to φ₀ at
    /// fixed random numbers into `grad`:
    ///
    /// ∂W_path/∂φ₀ = Σ_t (λ_{t+1} − λ_t) ∇(S − S₀)(φ_t),
    ///
    /// because a local Metropolis update moves each site by a shift drawn independently of
    /// φ or not at all, so that ∂φ_t/∂φ₀ = 1 except where an accept test flips (a set of
    /// measure zero the gradient ignores). Local updates only: an HMC trajectory's
    /// Jacobian is not the identity, and such a protocol is an [`Error::Incompatible`].
    pub fn forward_with_gradient<S, A>(
        &mut self,
        start: &S,
        target: &A,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
        grad: &mut [f64],
    ) -> Result<f64>
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        if let NoneqUpdate::Hmc { .. } = self.protocol.update {
            return Err(Error::Incompatible(
                "the gradient of the work through the protocol needs local updates (an HMC \
                 trajectory's Jacobian is not the identity)"
                    .into(),
            ));
        }
        let v = self.sites.len();
        if phi.len() != v || grad.len() != v {
            return Err(Error::Shape(format!(
                "a field of {} and a gradient of {} values on {v} sites",
                phi.len(),
                grad.len()
            )));
        }
        grad.fill(0.0);
        let mut work = 0.0;
        for t in 0..self.protocol.steps {
            let (from, to) = (self.protocol.lambda(t), self.protocol.lambda(t + 1));
            let s = target.action_and_force(phi, &mut self.force);
            let s0 = start.action_and_force(phi, &mut self.start_force);
            work += (to - from) * (s - s0);
            for ((g, f), f0) in grad.iter_mut().zip(&self.force).zip(&self.start_force) {
                *g += (to - from) * (f - f0);
            }
            self.update(start, target, to, false, phi, rng);
        }
        Ok(work)
    }

    /// The backward path from `phi` (taken as φ_n): φ_{t−1} from φ_t by the reversal of the
    /// update at λ_t, t = n … 1; leaves φ₀ in `phi` and returns W_path of that path (NaN
    /// when `phi` does not have one value per site).
    pub fn backward<S, A>(
        &mut self,
        start: &S,
        target: &A,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        if phi.len() != self.sites.len() {
            return f64::NAN;
        }
        let mut work = 0.0;
        for t in (1..=self.protocol.steps).rev() {
            let (to, from) = (self.protocol.lambda(t), self.protocol.lambda(t - 1));
            self.update(start, target, to, true, phi, rng);
            work += (to - from) * (target.action(phi) - start.action(phi));
        }
        work
    }

    /// One update of `phi` leaving e^{−S_λ} invariant; `reversed`: its time reversal.
    fn update<S, A>(
        &mut self,
        start: &S,
        target: &A,
        lambda: f64,
        reversed: bool,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let action = Interpolated {
            start,
            target,
            lambda,
        };
        match self.protocol.update {
            NoneqUpdate::Local { step_size } => {
                let sites = if reversed {
                    &self.reversed
                } else {
                    &self.sites
                };
                single_site_sweep(&action, phi, sites, 1, rng, |x, r| {
                    x + step_size * (2.0 * r.random::<f64>() - 1.0)
                });
            }
            NoneqUpdate::Hmc { tau, md_steps } => {
                let eps = tau / md_steps as f64;
                let s_old = action.action_and_force(phi, &mut self.force);
                for p in self.momentum.iter_mut() {
                    *p = StandardNormal.sample(rng);
                }
                let h_old = kinetic(&self.momentum) + s_old;
                self.trial.copy_from_slice(phi);
                let mut s_new = s_old;
                for _ in 0..md_steps {
                    kick(&mut self.momentum, &self.force, 0.5 * eps);
                    drift(&mut self.trial, &self.momentum, eps);
                    s_new = action.action_and_force(&self.trial, &mut self.force);
                    kick(&mut self.momentum, &self.force, 0.5 * eps);
                }
                let delta_h = kinetic(&self.momentum) + s_new - h_old;
                let accept =
                    !delta_h.is_nan() && (delta_h <= 0.0 || rng.random::<f64>().ln() < -delta_h);
                if accept {
                    std::mem::swap(phi, &mut self.trial);
                }
            }
        }
    }
}

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
pub struct NoneqEvolution<A: Action + ?Sized> {
    start: Start,
    target: Arc<A>,
    path: NoneqPath,
    phi: Vec<f64>,
    phi0: Vec<f64>,
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

    fn assemble(start: Start, target: Arc<A>, protocol: NoneqProtocol) -> Result<Self> {
        let v = target.lattice().volume();
        Ok(NoneqEvolution {
            start,
            target,
            path: NoneqPath::new(protocol, v)?,
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
        let work = match &self.start {
            Start::Gaussian { field, .. } => path.forward(&**field, target, phi, rng),
            Start::Flow(flow) => path.forward(&*flow.action, target, phi, rng),
        };
        Ok(offset + work)
    }

    /// The backward path from `phi` (taken as φ_n): φ_{t−1} from φ_t by the reversal of the
    /// update at λ_t, t = n … 1; returns the work W of that path (NaN when `phi` does not
    /// have one value per site).
    pub fn backward(&mut self, phi: &[f64], rng: &mut SimRng) -> f64 {
        if phi.len() != self.phi.len() {
            return f64::NAN;
        }
        self.phi.copy_from_slice(phi);
        let (target, path, phi) = (&*self.target, &mut self.path, &mut self.phi);
        match &mut self.start {
            Start::Gaussian { field, .. } => path.backward(&**field, target, phi, rng),
            Start::Flow(flow) => {
                let work = path.backward(&*flow.action, target, phi, rng);
                work + flow.offset(phi)
            }
        }
    }

    /// A short description for kernel names: the start and the protocol.
    fn describe(&self) -> String {
        let start = match self.start {
            Start::Gaussian { .. } => "gaussian",
            Start::Flow(_) => "flow",
        };
        format!("{start} start, {} steps", self.protocol().steps)
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
