//! Hybrid Monte Carlo: Gaussian momenta, a reversible volume-preserving
//! integrator (leapfrog or Omelyan's 2nd-order minimum-norm scheme), and a Metropolis test
//! on ΔH. The trajectory length is randomised by default.

use std::sync::Arc;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

use crate::action::Action;
use crate::error::{Error, Result, ensure_finite};
use crate::kernel::{MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::rng::SimRng;

/// λ of Omelyan's 2nd-order minimum-norm integrator.
pub const OMELYAN_LAMBDA: f64 = 0.193_183_327_503_783_6;

/// The molecular-dynamics integrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrator {
    /// Leapfrog (Störmer–Verlet): one force evaluation per step.
    #[default]
    Leapfrog,
    /// Omelyan's 2nd-order minimum-norm integrator: two force evaluations per step,
    /// about ten times smaller energy error than leapfrog at the same step size.
    Omelyan,
}

/// Hybrid Monte Carlo with trajectory length τ and nominal step count n (ε = τ/n). The
/// step size is the user's choice; HMC does not adapt it while thermalising.
///
/// With a randomised length (the default) each trajectory uses a step count drawn
/// uniformly from {⌈n/2⌉, …, ⌊3n/2⌋} (at least 1) at the fixed step size ε = τ/n, so its
/// length is spread uniformly over [τ/2, 3τ/2]. This avoids the non-ergodicity of modes
/// with ωτ near a multiple of π.
pub struct Hmc<A: Action + ?Sized> {
    action: Arc<A>,
    trajectory: Trajectory,
    label: MoveLabel,
    trial_phi: Vec<f64>,
    trial_force: Vec<f64>,
    momentum: Vec<f64>,
}

impl<A: Action + ?Sized> Hmc<A> {
    /// Leapfrog HMC with trajectory length `tau` (> 0) and `n_steps` (≥ 1) steps per unit
    /// trajectory, length randomised per trajectory.
    pub fn new(action: Arc<A>, tau: f64, n_steps: usize) -> Result<Self> {
        let trajectory = Trajectory::new(tau, n_steps, "tau", "md_steps")?;
        let v = action.lattice().volume();
        Ok(Hmc {
            action,
            trajectory,
            label: MoveLabel::new("hmc"),
            trial_phi: vec![0.0; v],
            trial_force: vec![0.0; v],
            momentum: vec![0.0; v],
        })
    }

    /// Records the kernel's trajectories under `label` (default `hmc`).
    pub fn with_label(mut self, label: MoveLabel) -> Self {
        self.label = label;
        self
    }

    /// Chooses the integrator.
    pub fn with_integrator(mut self, integrator: Integrator) -> Self {
        self.trajectory.integrator = integrator;
        self
    }

    /// Randomises the trajectory length per trajectory (`true`, the default) or keeps it
    /// fixed at τ.
    pub fn with_randomised_length(mut self, randomise: bool) -> Self {
        self.trajectory.randomise_length = randomise;
        self
    }

    /// The step size ε = τ/n.
    pub fn step_size(&self) -> f64 {
        self.trajectory.step_size()
    }

    /// The nominal trajectory length τ.
    pub fn trajectory_length(&self) -> f64 {
        self.trajectory.tau
    }

    /// The integrator in use.
    pub fn integrator(&self) -> Integrator {
        self.trajectory.integrator
    }

    /// Whether the trajectory length is randomised.
    pub fn randomises_length(&self) -> bool {
        self.trajectory.randomise_length
    }

    /// The action the kernel samples.
    pub fn action(&self) -> &A {
        &self.action
    }

    /// The range of step counts a trajectory may use: {n} when fixed,
    /// {⌈n/2⌉, …, ⌊3n/2⌋} when randomised.
    pub fn step_count_range(&self) -> std::ops::RangeInclusive<usize> {
        self.trajectory.step_count_range()
    }

    /// H(φ, π) = ½ Σ π² + S(φ).
    pub fn hamiltonian(&self, phi: &[f64], momentum: &[f64]) -> f64 {
        kinetic(momentum) + self.action.action(phi)
    }

    /// Integrates (φ, π) for `steps` steps of size ε with the kernel's integrator.
    ///
    /// `force` must hold ∂S/∂φ at the incoming φ and holds it at the outgoing φ on return;
    /// the return value is S at the outgoing φ. Slices must all have length |Λ|.
    pub fn integrate(
        &self,
        phi: &mut [f64],
        momentum: &mut [f64],
        force: &mut [f64],
        steps: usize,
    ) -> f64 {
        let eps = self.step_size();
        let action = &*self.action;
        if steps == 0 {
            return action.action(phi);
        }
        let mut s = 0.0;
        match self.trajectory.integrator {
            Integrator::Leapfrog => {
                kick(momentum, force, 0.5 * eps);
                drift(phi, momentum, eps);
                for _ in 1..steps {
                    self.leapfrog_step(phi, momentum, force);
                }
                s = action.action_and_force(phi, force);
                kick(momentum, force, 0.5 * eps);
            }
            Integrator::Omelyan => {
                let lam = OMELYAN_LAMBDA;
                kick(momentum, force, lam * eps);
                for i in 0..steps {
                    drift(phi, momentum, 0.5 * eps);
                    action.force(phi, force);
                    kick(momentum, force, (1.0 - 2.0 * lam) * eps);
                    drift(phi, momentum, 0.5 * eps);
                    if i + 1 < steps {
                        action.force(phi, force);
                        kick(momentum, force, 2.0 * lam * eps);
                    } else {
                        s = action.action_and_force(phi, force);
                        kick(momentum, force, lam * eps);
                    }
                }
            }
        }
        s
    }

    /// One inner leapfrog step of size ε = τ/n between two half-step-shifted momenta:
    /// `force` ← ∂S/∂φ at the incoming φ, then π ← π − ε·force and φ ← φ + ε·π in one
    /// pass. A trajectory of k steps is a half kick and a drift, k − 1 of these, and a
    /// closing force evaluation and half kick. Slices must all have length |Λ|.
    #[inline]
    pub fn leapfrog_step(&self, phi: &mut [f64], momentum: &mut [f64], force: &mut [f64]) {
        self.action.force(phi, force);
        kick_drift(phi, momentum, force, self.step_size());
    }

    /// log A = min(0, −ΔH): the kernel's own acceptance for an energy change ΔH.
    #[inline]
    pub fn log_acceptance(delta_h: f64) -> f64 {
        if delta_h.is_nan() {
            f64::NEG_INFINITY
        } else {
            (-delta_h).min(0.0)
        }
    }
}

/// A trajectory's settings, shared by the HMC kernels: length τ, nominal step count n
/// (step size ε = τ/n), integrator, and whether the step count is randomised over
/// {⌈n/2⌉, …, ⌊3n/2⌋} (at least 1) per trajectory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Trajectory {
    pub(super) tau: f64,
    pub(super) n_steps: usize,
    pub(super) integrator: Integrator,
    pub(super) randomise_length: bool,
}

impl Trajectory {
    /// Leapfrog with a randomised length; τ must be finite and positive and
    /// 1 ≤ n ≤ u32::MAX, else an error naming `tau_key` or `steps_key`.
    pub(super) fn new(tau: f64, n_steps: usize, tau_key: &str, steps_key: &str) -> Result<Self> {
        ensure_finite(tau_key, tau)?;
        if tau <= 0.0 {
            return Err(Error::param(
                tau_key,
                format!("must be positive, got {tau}"),
            ));
        }
        if n_steps == 0 || n_steps > u32::MAX as usize {
            return Err(Error::param(
                steps_key,
                format!("must be between 1 and {}, got {n_steps}", u32::MAX),
            ));
        }
        Ok(Trajectory {
            tau,
            n_steps,
            integrator: Integrator::Leapfrog,
            randomise_length: true,
        })
    }

    /// ε = τ/n.
    pub(super) fn step_size(&self) -> f64 {
        self.tau / self.n_steps as f64
    }

    /// The step counts a trajectory may use: {n} when fixed, {⌈n/2⌉, …, ⌊3n/2⌋} (at
    /// least 1) when randomised.
    pub(super) fn step_count_range(&self) -> std::ops::RangeInclusive<usize> {
        let n = self.n_steps;
        if self.randomise_length {
            n.div_ceil(2).max(1)..=(3 * n / 2).max(1)
        } else {
            n..=n
        }
    }

    /// `kernel(integrator, tau=…, n=…, random length | fixed length)`.
    pub(super) fn describe(&self, kernel: &str) -> String {
        format!(
            "{kernel}({:?}, tau={}, n={}, {})",
            self.integrator,
            self.tau,
            self.n_steps,
            if self.randomise_length {
                "random length"
            } else {
                "fixed length"
            }
        )
    }
}

#[inline]
pub(super) fn kinetic(momentum: &[f64]) -> f64 {
    0.5 * momentum.iter().map(|p| p * p).sum::<f64>()
}

#[inline]
pub(super) fn kick(momentum: &mut [f64], force: &[f64], dt: f64) {
    for (p, f) in momentum.iter_mut().zip(force) {
        *p -= dt * f;
    }
}

/// π ← π − dt·force, then φ ← φ + dt·π, site by site in one pass.
#[inline]
fn kick_drift(phi: &mut [f64], momentum: &mut [f64], force: &[f64], dt: f64) {
    for ((x, p), f) in phi.iter_mut().zip(momentum.iter_mut()).zip(force) {
        *p -= dt * f;
        *x += dt * *p;
    }
}

#[inline]
pub(super) fn drift(phi: &mut [f64], momentum: &[f64], dt: f64) {
    for (x, p) in phi.iter_mut().zip(momentum) {
        *x += dt * p;
    }
}

impl<A: Action + ?Sized> Proposal for Hmc<A> {
    fn name(&self) -> String {
        self.trajectory.describe("hmc")
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        // The state caches the force at its field: after a rejected trajectory, or an
        // accepted one of this kernel, it is not computed again.
        self.trial_force
            .copy_from_slice(state.force_or_compute(&*self.action));
        self.trial_phi.copy_from_slice(state.phi());
        for p in self.momentum.iter_mut() {
            *p = StandardNormal.sample(rng);
        }
        let steps = rng.random_range(self.step_count_range());
        let h_old = kinetic(&self.momentum) + state.action();
        let mut momentum = std::mem::take(&mut self.momentum);
        let mut trial_phi = std::mem::take(&mut self.trial_phi);
        let mut trial_force = std::mem::take(&mut self.trial_force);
        let s_new = self.integrate(&mut trial_phi, &mut momentum, &mut trial_force, steps);
        let delta_h = kinetic(&momentum) + s_new - h_old;
        let accept = Self::log_acceptance(delta_h) >= 0.0
            || rng.random::<f64>().ln() < Self::log_acceptance(delta_h);
        if accept {
            state.swap_in(&mut trial_phi, s_new, Some(&mut trial_force));
        }
        self.momentum = momentum;
        self.trial_phi = trial_phi;
        self.trial_force = trial_force;
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed: 1,
            accepted: accept as u32,
            detail: MoveDetail::Hmc {
                delta_h,
                md_steps: u32::try_from(steps).unwrap_or(u32::MAX),
            },
        });
    }
}
