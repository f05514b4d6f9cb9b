//! Flow HMC: Hybrid Monte Carlo on the latent field z of a flow f, with the pulled-back
//! potential U(z) = S(f(z)) − log|det ∂f/∂z| and its force by reverse mode through the
//! flow, all in f64; the chain's state stays the field φ = f(z).

use std::sync::Arc;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

use crate::action::Action;
use crate::error::Result;
use crate::flow::{Flow, FlowScratch, ensure_same_lattice};
use crate::kernel::hmc::{Trajectory, drift, kick, kinetic};
use crate::kernel::{Integrator, MoveDetail, MoveInfo, MoveLabel, OMELYAN_LAMBDA, Proposal, State};
use crate::rng::SimRng;

/// One point of the latent chain: z, φ = f(z), U(z), ∇_z U and ∂S/∂φ at φ.
#[derive(Clone, Debug)]
struct Point {
    z: Vec<f64>,
    phi: Vec<f64>,
    /// ∇_z U(z).
    grad: Vec<f64>,
    /// ∂S/∂φ at φ.
    force: Vec<f64>,
    /// S(φ).
    action: f64,
    /// U(z) = S(φ) − log|det ∂f/∂z|; NaN when the flow failed at z.
    potential: f64,
}

impl Point {
    fn new(volume: usize) -> Self {
        Point {
            z: vec![0.0; volume],
            phi: vec![0.0; volume],
            grad: vec![0.0; volume],
            force: vec![0.0; volume],
            action: f64::NAN,
            potential: f64::NAN,
        }
    }

    /// Copies z, its potential and gradient from `other` (φ and ∂S/∂φ follow on accept).
    fn start_from(&mut self, other: &Point) {
        self.z.copy_from_slice(&other.z);
        self.grad.copy_from_slice(&other.grad);
        self.potential = other.potential;
    }
}

/// The flow and action a kernel pulls back through, and the flow's buffers.
struct Pass<F: Flow + ?Sized, A: Action + ?Sized> {
    flow: Arc<F>,
    action: Arc<A>,
    scratch: FlowScratch,
}

impl<F: Flow + ?Sized, A: Action + ?Sized> Pass<F, A> {
    /// φ, S, U, ∇U and ∂S/∂φ at `point.z`; false (and U = NaN) when the flow fails or U is
    /// not finite.
    fn evaluate(&mut self, point: &mut Point) -> bool {
        let Point {
            z,
            phi,
            grad,
            force,
            action,
            potential,
        } = point;
        let target = &*self.action;
        let mut pass = |field: &[f64], g: &mut [f64]| {
            let s = target.action_and_force(field, g);
            force.copy_from_slice(g);
            s
        };
        match self
            .flow
            .pull_back(z, phi, &mut pass, grad, &mut self.scratch)
        {
            Ok(p) if p.potential().is_finite() => {
                *action = p.action;
                *potential = p.potential();
                true
            }
            _ => {
                *potential = f64::NAN;
                false
            }
        }
    }

    /// z = f⁻¹(φ) into `point.z` and the point evaluated there; false on failure.
    fn take_over(&mut self, phi: &[f64], point: &mut Point) -> bool {
        let inverted = self
            .flow
            .inverse_f64(phi, &mut point.z, &mut self.scratch)
            .is_ok_and(|ld| ld.is_finite());
        if !inverted {
            point.potential = f64::NAN;
            return false;
        }
        self.evaluate(point)
    }
}

/// Hybrid Monte Carlo in the latent space of a flow f (the trivialising-map HMC):
/// momenta p ~ N(0, 1) conjugate to z, H(z, p) = ½ Σ p² + U(z) with
///
/// U(z) = S(f(z)) − log|det ∂f/∂z|,
///
/// the negative log-density of the latent field whose image φ = f(z) is distributed as
/// e^{−S(φ)} (the flow's prior plays no part). The force ∇_z U comes from one reverse-mode
/// pass through the flow ([`Flow::pull_back`]); flow, action, H and the Metropolis test run
/// in f64. The integrator is reversible and volume-preserving for any deterministic force,
/// so the kernel is exact for any flow, trained or not: a poor flow only lowers the
/// acceptance.
///
/// The chain's state is φ. The kernel keeps z with the state's generation; when another
/// kernel has changed the state, it takes over through z = f⁻¹(φ) ([`Flow::inverse_f64`]).
/// Trajectory length and step count are as for [`Hmc`](crate::kernel::Hmc): τ, n steps of
/// ε = τ/n, the step count randomised over {⌈n/2⌉, …, ⌊3n/2⌋} by default. Moves are
/// recorded as HMC trajectories (ΔH and the steps taken) under the label `flowhmc`.
pub struct FlowHmc<F: Flow + ?Sized, A: Action + ?Sized> {
    pass: Pass<F, A>,
    trajectory: Trajectory,
    label: MoveLabel,
    current: Point,
    trial: Point,
    momentum: Vec<f64>,
    /// The generation of the state `current` belongs to (0: none).
    cached_generation: u64,
    /// Buffers swapped into the state on accept.
    out_phi: Vec<f64>,
    out_force: Vec<f64>,
}

impl<F: Flow + ?Sized, A: Action + ?Sized> FlowHmc<F, A> {
    /// Leapfrog flow HMC through `flow` for `action`, with trajectory length `tau` (> 0) and
    /// `n_steps` (≥ 1) steps, length randomised per trajectory. The flow must live on the
    /// action's lattice and compute its pull-back ([`Flow::pull_back`]); one is made at
    /// z = 0 to check.
    pub fn new(flow: Arc<F>, action: Arc<A>, tau: f64, n_steps: usize) -> Result<Self> {
        let trajectory = Trajectory::new(tau, n_steps, "flowhmc_tau", "flowhmc_md_steps")?;
        ensure_same_lattice(&*flow, &*action)?;
        let volume = action.lattice().volume();
        let mut pass = Pass {
            flow,
            action,
            scratch: FlowScratch::new(),
        };
        let mut probe = Point::new(volume);
        let mut force = |_: &[f64], g: &mut [f64]| {
            g.fill(0.0);
            0.0
        };
        pass.flow.pull_back(
            &probe.z,
            &mut probe.phi,
            &mut force,
            &mut probe.grad,
            &mut pass.scratch,
        )?;
        Ok(FlowHmc {
            pass,
            trajectory,
            label: MoveLabel::new("flowhmc"),
            current: Point::new(volume),
            trial: Point::new(volume),
            momentum: vec![0.0; volume],
            cached_generation: 0,
            out_phi: vec![0.0; volume],
            out_force: vec![0.0; volume],
        })
    }

    /// Records the kernel's trajectories under `label` (default `flowhmc`).
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

    /// The range of step counts a trajectory may use (see [`Hmc::step_count_range`]).
    ///
    /// [`Hmc::step_count_range`]: crate::kernel::Hmc::step_count_range
    pub fn step_count_range(&self) -> std::ops::RangeInclusive<usize> {
        self.trajectory.step_count_range()
    }

    /// The flow.
    pub fn model(&self) -> &Arc<F> {
        &self.pass.flow
    }

    /// U(z) = S(f(z)) − log|det ∂f/∂z| (NaN where the flow fails).
    pub fn potential(&mut self, z: &[f64]) -> f64 {
        if z.len() != self.trial.z.len() {
            return f64::NAN;
        }
        self.trial.z.copy_from_slice(z);
        self.pass.evaluate(&mut self.trial);
        self.trial.potential
    }

    /// The latent field of `phi`, z = f⁻¹(φ), in f64.
    pub fn latent(&mut self, phi: &[f64]) -> Result<Vec<f64>> {
        let mut z = vec![0.0; self.trial.z.len()];
        self.pass
            .flow
            .inverse_f64(phi, &mut z, &mut self.pass.scratch)?;
        Ok(z)
    }

    /// Integrates (z, p) for `steps` steps of size ε with the kernel's integrator; returns
    /// U at the outgoing z (NaN, and the integration stopped, where the flow fails). Both
    /// slices have one value per site.
    pub fn integrate(&mut self, z: &mut [f64], momentum: &mut [f64], steps: usize) -> f64 {
        if z.len() != self.trial.z.len() || momentum.len() != z.len() {
            return f64::NAN;
        }
        self.trial.z.copy_from_slice(z);
        if self.pass.evaluate(&mut self.trial) {
            self.run(momentum, steps);
        }
        z.copy_from_slice(&self.trial.z);
        self.trial.potential
    }

    /// Integrates `trial` (evaluated at its z) with `momentum`; false when the flow failed.
    fn run(&mut self, momentum: &mut [f64], steps: usize) -> bool {
        let eps = self.step_size();
        let (pass, t) = (&mut self.pass, &mut self.trial);
        for _ in 0..steps {
            match self.trajectory.integrator {
                Integrator::Leapfrog => {
                    kick(momentum, &t.grad, 0.5 * eps);
                    drift(&mut t.z, momentum, eps);
                    if !pass.evaluate(t) {
                        return false;
                    }
                    kick(momentum, &t.grad, 0.5 * eps);
                }
                Integrator::Omelyan => {
                    let lam = OMELYAN_LAMBDA;
                    kick(momentum, &t.grad, lam * eps);
                    drift(&mut t.z, momentum, 0.5 * eps);
                    if !pass.evaluate(t) {
                        return false;
                    }
                    kick(momentum, &t.grad, (1.0 - 2.0 * lam) * eps);
                    drift(&mut t.z, momentum, 0.5 * eps);
                    if !pass.evaluate(t) {
                        return false;
                    }
                    kick(momentum, &t.grad, lam * eps);
                }
            }
        }
        true
    }
}

impl<F: Flow + ?Sized, A: Action + ?Sized> Proposal for FlowHmc<F, A> {
    fn name(&self) -> String {
        self.trajectory.describe("flowhmc")
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if self.cached_generation != state.generation() {
            self.pass.take_over(state.phi(), &mut self.current);
            self.cached_generation = state.generation();
        }
        for p in self.momentum.iter_mut() {
            *p = StandardNormal.sample(rng);
        }
        let steps = rng.random_range(self.step_count_range());
        let mut accept = false;
        let mut delta_h = f64::NAN;
        if self.current.potential.is_finite() {
            let h_old = kinetic(&self.momentum) + self.current.potential;
            self.trial.start_from(&self.current);
            let mut momentum = std::mem::take(&mut self.momentum);
            if self.run(&mut momentum, steps) {
                delta_h = kinetic(&momentum) + self.trial.potential - h_old;
            }
            self.momentum = momentum;
            let log_a = if delta_h.is_nan() {
                f64::NEG_INFINITY
            } else {
                (-delta_h).min(0.0)
            };
            accept = log_a >= 0.0 || rng.random::<f64>().ln() < log_a;
        }
        if accept {
            std::mem::swap(&mut self.current, &mut self.trial);
            // The buffers hold what the state gave back last time (its force may be empty).
            self.out_phi.clone_from(&self.current.phi);
            self.out_force.clone_from(&self.current.force);
            state.swap_in(
                &mut self.out_phi,
                self.current.action,
                Some(&mut self.out_force),
            );
            self.cached_generation = state.generation();
        }
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed: 1,
            accepted: u32::from(accept),
            detail: MoveDetail::Hmc {
                delta_h,
                md_steps: u32::try_from(steps).unwrap_or(u32::MAX),
            },
        });
    }
}
