//! Protocols of non-equilibrium evolutions ([`NoneqProtocol`]: n steps through
//! S_λ = (1 − λ) S₀ + λ S, λ_t = t/n, each one local sweep or HMC trajectory) and their
//! updates between given start and target actions ([`NoneqPath`]): forward and backward
//! over the whole protocol or a stretch of it, with the Jarzynski work, and the work's
//! gradient with respect to the field entering a stretch at fixed random numbers.

use std::ops::Range;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::action::{Action, single_site_sweep};
use crate::error::{Error, Result, ensure_finite};
use crate::kernel::hmc::{drift, kick, kinetic};
use crate::lattice::Lattice;
use crate::rng::SimRng;

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

    /// Checks the step positions of flow layers placed between the protocol's steps (a
    /// layer at t follows step t; 0: before the first step): nondecreasing and at most the
    /// number of steps; the errors name `layers_after`.
    pub fn check_layers_after(&self, after: &[usize]) -> Result<()> {
        if let Some(&t) = after.iter().find(|&&t| t > self.steps) {
            return Err(Error::param(
                "layers_after",
                format!(
                    "a flow layer after step {t} of a protocol of {} steps",
                    self.steps
                ),
            ));
        }
        if after.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::param(
                "layers_after",
                format!("the steps the layers follow must not decrease, got {after:?}"),
            ));
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
/// the backward path. [`NoneqEvolution`](super::NoneqEvolution) adds the start distribution.
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
        self.forward_steps(start, target, 0..self.protocol.steps, phi, rng)
    }

    /// [`NoneqPath::forward`] over the steps `steps` of the protocol only: φ_{t+1} from φ_t
    /// for t in `steps`, `phi` taken as φ_a (a = `steps.start`); returns their part
    /// Σ_{t ∈ steps} (λ_{t+1} − λ_t) [S(φ_t) − S₀(φ_t)] of W_path (NaN when `steps` is not
    /// a range of the protocol's steps or `phi` does not have one value per site).
    pub fn forward_steps<S, A>(
        &mut self,
        start: &S,
        target: &A,
        steps: Range<usize>,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        if phi.len() != self.sites.len() || !self.has_steps(&steps) {
            return f64::NAN;
        }
        let mut work = 0.0;
        for t in steps {
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
        self.check_gradient(phi, grad, &(0..self.protocol.steps))?;
        grad.fill(0.0);
        Ok(self.add_steps_gradient(start, target, 0..self.protocol.steps, phi, rng, grad))
    }

    /// One stretch of a stochastic normalizing flow whose flow layers sit between the
    /// protocol's steps: `phi` is the field ψ that enters at λ_a (a = `steps.start`: the
    /// start φ₀, or the output of a flow layer applied after step a), the steps `steps`
    /// take it to φ_b, and when `exit` a flow layer follows at λ_b. Returns
    ///
    /// W_seg = S_{λ_a}(ψ) + Σ_{t ∈ steps} (λ_{t+1} − λ_t) (S − S₀)(φ_t) − \[exit\] S_{λ_b}(φ_b)
    ///
    /// and writes its gradient with respect to ψ at fixed random numbers into `grad`,
    /// ∇S_{λ_a}(ψ) + Σ_t (λ_{t+1} − λ_t) ∇(S − S₀)(φ_t) − \[exit\] ∇S_{λ_b}(φ_b), each step
    /// passing ∂φ_{t+1}/∂φ_t = 1 as in [`NoneqPath::forward_with_gradient`]. The works of
    /// the stretches and the layers' −log|det ∂g/∂φ| add up to the whole path's W
    /// ([`crate::train::Snf`]). Local updates only, as there.
    #[allow(clippy::too_many_arguments)]
    pub fn segment_with_gradient<S, A>(
        &mut self,
        start: &S,
        target: &A,
        steps: Range<usize>,
        exit: bool,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
        grad: &mut [f64],
    ) -> Result<f64>
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        self.check_gradient(phi, grad, &steps)?;
        let (a, b) = (steps.start, steps.end);
        let mut work = self.action_and_force_at(start, target, a, phi);
        grad.copy_from_slice(&self.force);
        work += self.add_steps_gradient(start, target, steps, phi, rng, grad);
        if exit {
            work -= self.action_and_force_at(start, target, b, phi);
            grad.iter_mut().zip(&self.force).for_each(|(g, f)| *g -= f);
        }
        Ok(work)
    }

    /// Refuses a gradient through HMC updates, fields and gradients of the wrong length,
    /// and steps outside the protocol.
    fn check_gradient(&self, phi: &[f64], grad: &[f64], steps: &Range<usize>) -> Result<()> {
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
        if !self.has_steps(steps) {
            return Err(Error::Shape(format!(
                "steps {steps:?} of a protocol of {} steps",
                self.protocol.steps
            )));
        }
        Ok(())
    }

    /// Whether `steps` is a range of the protocol's steps.
    fn has_steps(&self, steps: &Range<usize>) -> bool {
        steps.start <= steps.end && steps.end <= self.protocol.steps
    }

    /// The steps `steps` from `phi`, adding the gradient of their part of W_path with
    /// respect to the field before them into `grad`; returns that part.
    fn add_steps_gradient<S, A>(
        &mut self,
        start: &S,
        target: &A,
        steps: Range<usize>,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
        grad: &mut [f64],
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let mut work = 0.0;
        for t in steps {
            let (from, to) = (self.protocol.lambda(t), self.protocol.lambda(t + 1));
            let s = target.action_and_force(phi, &mut self.force);
            let s0 = start.action_and_force(phi, &mut self.start_force);
            work += (to - from) * (s - s0);
            for ((g, f), f0) in grad.iter_mut().zip(&self.force).zip(&self.start_force) {
                *g += (to - from) * (f - f0);
            }
            self.update(start, target, to, false, phi, rng);
        }
        work
    }

    /// S_{λ_t}(φ), with its force ∇S_{λ_t}(φ) left in `self.force`.
    fn action_and_force_at<S, A>(&mut self, start: &S, target: &A, t: usize, phi: &[f64]) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let lambda = self.protocol.lambda(t);
        let s = target.action_and_force(phi, &mut self.force);
        let s0 = start.action_and_force(phi, &mut self.start_force);
        for (f, f0) in self.force.iter_mut().zip(&self.start_force) {
            *f = (1.0 - lambda) * f0 + lambda * *f;
        }
        (1.0 - lambda) * s0 + lambda * s
    }

    /// S_{λ_t}(φ).
    pub(super) fn action_at<S, A>(&self, start: &S, target: &A, t: usize, phi: &[f64]) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        let lambda = self.protocol.lambda(t);
        Interpolated {
            start,
            target,
            lambda,
        }
        .action(phi)
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
        self.backward_steps(start, target, 0..self.protocol.steps, phi, rng)
    }

    /// [`NoneqPath::backward`] over the steps `steps` only: from `phi` taken as φ_b
    /// (b = `steps.end`), φ_{t−1} from φ_t by the reversal of the update at λ_t,
    /// t = b … a + 1; leaves φ_a in `phi` and returns the part of W_path of those steps, as
    /// [`NoneqPath::forward_steps`] counts it (NaN as there).
    pub fn backward_steps<S, A>(
        &mut self,
        start: &S,
        target: &A,
        steps: Range<usize>,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
    ) -> f64
    where
        S: Action + ?Sized,
        A: Action + ?Sized,
    {
        if phi.len() != self.sites.len() || !self.has_steps(&steps) {
            return f64::NAN;
        }
        let mut work = 0.0;
        for t in (steps.start + 1..=steps.end).rev() {
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
