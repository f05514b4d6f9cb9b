//! Non-equilibrium Monte Carlo: evolutions through a protocol of intermediate actions
//! S_λ = (1 − λ) S₀ + λ S from an exactly sampled Gaussian start (a free field) to the
//! target, each step one local sweep or HMC trajectory at fixed λ; the Jarzynski work W of
//! every evolution; the estimator of log Z and of reweighted observables from independent
//! evolutions; and the evolution as an exact independence proposal ([`NoneqProposal`]).

use std::sync::Arc;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::action::{Action, FreeField, FreeFieldSampler, single_site_sweep};
use crate::error::{Error, Result, ensure_finite};
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
struct Interpolated<'a, A: ?Sized> {
    start: &'a FreeField,
    target: &'a A,
    lambda: f64,
}

impl<A: Action + ?Sized> Action for Interpolated<'_, A> {
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

/// Evolutions through a [`NoneqProtocol`] from the Gaussian start q₀ ∝ e^{−S₀} (the free
/// field of mass² m_s², sampled exactly, log Z₀ known) to the target e^{−S}.
///
/// Forward ([`NoneqEvolution::forward`]): φ₀ ~ q₀, then for t = 0 … n − 1 the work
///
/// W += S_{λ_{t+1}}(φ_t) − S_{λ_t}(φ_t) = (λ_{t+1} − λ_t) [S(φ_t) − S₀(φ_t)]
///
/// and φ_{t+1} from φ_t by one update leaving e^{−S_{λ_{t+1}}} invariant. Jarzynski's
/// equality ⟨e^{−W}⟩ = Z/Z₀ holds for any n ≥ 1 and any such updates, and
/// ⟨O(φ_n) e^{−W}⟩/⟨e^{−W}⟩ = ⟨O⟩ under e^{−S}. Backward ([`NoneqEvolution::backward`]):
/// from a given φ_n, the time reversal of every update (the sweep in reversed site order,
/// the same HMC trajectory) in reversed order, t = n … 1, with the work of that path.
pub struct NoneqEvolution<A: Action + ?Sized> {
    start: FreeField,
    sampler: FreeFieldSampler,
    target: Arc<A>,
    protocol: NoneqProtocol,
    sites: Vec<usize>,
    reversed: Vec<usize>,
    phi: Vec<f64>,
    trial: Vec<f64>,
    force: Vec<f64>,
    momentum: Vec<f64>,
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
        let lattice = target.lattice().clone();
        let start = FreeField::new(lattice.clone(), start_m0sq)?;
        let sampler = start.sampler();
        let v = lattice.volume();
        Ok(NoneqEvolution {
            start,
            sampler,
            target,
            protocol,
            sites: (0..v).collect(),
            reversed: (0..v).rev().collect(),
            phi: vec![0.0; v],
            trial: vec![0.0; v],
            force: vec![0.0; v],
            momentum: vec![0.0; v],
        })
    }

    /// The protocol.
    pub fn protocol(&self) -> &NoneqProtocol {
        &self.protocol
    }

    /// log Z₀ of the Gaussian start.
    pub fn log_z_start(&self) -> f64 {
        self.start.log_z()
    }

    /// The field at the end of the last evolution.
    pub fn field(&self) -> &[f64] {
        &self.phi
    }

    /// One forward evolution from a fresh φ₀ ~ q₀; returns its work W (NaN when an action
    /// is not finite on the way) and leaves φ_n in [`NoneqEvolution::field`].
    pub fn forward(&mut self, rng: &mut SimRng) -> Result<f64> {
        self.sampler.sample_into(rng, &mut self.phi)?;
        let mut work = 0.0;
        for t in 0..self.protocol.steps {
            let (from, to) = (self.protocol.lambda(t), self.protocol.lambda(t + 1));
            work += (to - from) * self.excess(&self.phi);
            self.update(to, false, rng);
        }
        Ok(work)
    }

    /// The backward path from `phi` (taken as φ_n): φ_{t−1} from φ_t by the reversal of the
    /// update at λ_t, t = n … 1; returns the work W of that path. `phi` must have one value
    /// per site.
    pub fn backward(&mut self, phi: &[f64], rng: &mut SimRng) -> f64 {
        if phi.len() != self.phi.len() {
            return f64::NAN;
        }
        self.phi.copy_from_slice(phi);
        let mut work = 0.0;
        for t in (1..=self.protocol.steps).rev() {
            let (to, from) = (self.protocol.lambda(t), self.protocol.lambda(t - 1));
            self.update(to, true, rng);
            work += (to - from) * self.excess(&self.phi);
        }
        work
    }

    /// S(φ) − S₀(φ).
    fn excess(&self, phi: &[f64]) -> f64 {
        self.target.action(phi) - self.start.action(phi)
    }

    /// One update of `self.phi` leaving e^{−S_λ} invariant; `reversed`: its time reversal.
    fn update(&mut self, lambda: f64, reversed: bool, rng: &mut SimRng) {
        let action = Interpolated {
            start: &self.start,
            target: &*self.target,
            lambda,
        };
        match self.protocol.update {
            NoneqUpdate::Local { step_size } => {
                let sites = if reversed {
                    &self.reversed
                } else {
                    &self.sites
                };
                single_site_sweep(&action, &mut self.phi, sites, 1, rng, |x, r| {
                    x + step_size * (2.0 * r.random::<f64>() - 1.0)
                });
            }
            NoneqUpdate::Hmc { tau, md_steps } => {
                let eps = tau / md_steps as f64;
                let s_old = action.action_and_force(&self.phi, &mut self.force);
                for p in self.momentum.iter_mut() {
                    *p = StandardNormal.sample(rng);
                }
                let h_old = kinetic(&self.momentum) + s_old;
                self.trial.copy_from_slice(&self.phi);
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
                    std::mem::swap(&mut self.phi, &mut self.trial);
                }
            }
        }
    }
}

/// What [`noneq_estimate`] found from independent evolutions.
#[derive(Clone, Debug, Serialize)]
pub struct NoneqEstimate {
    /// Evolutions made.
    pub n: usize,
    /// log Z of the target = log Z₀ + log ⟨e^{−W}⟩ (NaN when unreliable for a non-finite
    /// work).
    pub log_z: f64,
    /// Its standard error by the delta method, σ(e^{−W}) / (√n ⟨e^{−W}⟩).
    pub log_z_err: f64,
    /// log Z₀ of the Gaussian start.
    pub log_z_start: f64,
    /// ⟨W⟩, whose excess over log Z₀ − log Z measures the dissipation.
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
        format!("noneq({} steps)", self.evolution.protocol.steps)
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
