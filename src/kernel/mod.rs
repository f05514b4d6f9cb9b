//! Markov chain kernels: the [`Proposal`] trait (one step from a state, given an RNG),
//! the chain state, the per-move record every accept/reject leaves behind, the kernels
//! themselves and the expression language that composes them.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::{Error, Result};
use crate::rng::SimRng;

mod chain;
mod combine;
mod expr;
mod flow;
mod hmc;
mod local;

pub use chain::{Chain, ChainRecord};
pub use combine::{Cycle, Mixture, Repeat};
pub use expr::KernelExpr;
pub use flow::{FlowProposal, Reweighted, reweight};
pub use hmc::{Hmc, Integrator, OMELYAN_LAMBDA};
pub use local::{ACTION_REFRESH_INTERVAL, LocalMetropolis, SweepOrder};

/// The state a kernel moves: the field and its cached action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The field, one value per site.
    pub phi: Vec<f64>,
    /// S(phi), kept current by every kernel.
    pub action: f64,
}

impl State {
    /// A state for `phi` with its action computed; the length must match the lattice.
    pub fn new<A: Action + ?Sized>(action: &A, phi: Vec<f64>) -> Result<Self> {
        let v = action.lattice().volume();
        if phi.len() != v {
            return Err(Error::Shape(format!(
                "field has {} values, lattice has {v} sites",
                phi.len()
            )));
        }
        if phi.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite("initial field".into()));
        }
        let s = action.action(&phi);
        Ok(State { phi, action: s })
    }

    /// The cold start φ = 0.
    pub fn zero<A: Action + ?Sized>(action: &A) -> Self {
        let phi = vec![0.0; action.lattice().volume()];
        let s = action.action(&phi);
        State { phi, action: s }
    }
}

/// What one Metropolis decision (or a group of them, for a local sweep) did.
///
/// Kernels append one record per decision group to a history, so that acceptance and the
/// rejection-based autocorrelation can be computed afterwards without printing anything.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveInfo {
    /// Which kernel made the move: `"local"`, `"hmc"`, `"flow"`, or a user's label.
    pub kernel: &'static str,
    /// Proposals made (|Λ|·hits for a local sweep, 1 for HMC or a flow proposal).
    pub proposed: u32,
    /// Proposals accepted.
    pub accepted: u32,
    /// What the move measured, by kind of move.
    pub detail: MoveDetail,
}

/// The kind-specific part of a [`MoveInfo`]: each kind of move records its own quantity
/// under its own name.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MoveDetail {
    /// A local Metropolis sweep.
    LocalSweep {
        /// Σ ΔS over the accepted single-site proposals: S after the sweep − S before.
        delta_action: f64,
        /// The proposal half-width δ the sweep used.
        step_size: f64,
    },
    /// An HMC trajectory.
    Hmc {
        /// ΔH = H(end of trajectory) − H(start) of the proposed trajectory.
        delta_h: f64,
        /// Integrator steps the trajectory took.
        md_steps: u32,
    },
    /// A flow independence proposal.
    Flow {
        /// log w(φ') − log w(φ) with w = e^{−S}/p̃: the log-acceptance ratio (NaN when
        /// neither weight is finite).
        log_weight_ratio: f64,
        /// log w(φ') = −S(φ') − log p̃(φ') of the proposal itself, the importance weight
        /// of the flow's sample (NaN when the flow failed on it).
        log_weight: f64,
    },
    /// Any other Metropolis–Hastings proposal, e.g. a user's kernel.
    Metropolis {
        /// log of the Metropolis–Hastings ratio [q(φ|φ′) p(φ′)] / [q(φ′|φ) p(φ)].
        log_acceptance_ratio: f64,
    },
}

/// The kernel labels of the code column of [`MoveInfo::to_row`], by code: each kind of
/// [`MoveDetail`] has one.
pub const MOVE_KERNELS: [&str; 4] = ["local", "hmc", "flow", "metropolis"];

impl MoveInfo {
    /// The move as five numbers, for tables and messages: the code of its kind in
    /// [`MOVE_KERNELS`], proposals, acceptances and the detail's two values (a local sweep's
    /// ΔS and step size, HMC's ΔH and integrator steps, a flow proposal's log-weight ratio
    /// and log-weight, a Metropolis move's log-ratio and NaN).
    pub fn to_row(&self) -> [f64; 5] {
        let (code, a, b) = match self.detail {
            MoveDetail::LocalSweep {
                delta_action,
                step_size,
            } => (0.0, delta_action, step_size),
            MoveDetail::Hmc { delta_h, md_steps } => (1.0, delta_h, f64::from(md_steps)),
            MoveDetail::Flow {
                log_weight_ratio,
                log_weight,
            } => (2.0, log_weight_ratio, log_weight),
            MoveDetail::Metropolis {
                log_acceptance_ratio,
            } => (3.0, log_acceptance_ratio, f64::NAN),
        };
        [
            code,
            f64::from(self.proposed),
            f64::from(self.accepted),
            a,
            b,
        ]
    }

    /// The move [`MoveInfo::to_row`] wrote (its label the code's entry of
    /// [`MOVE_KERNELS`]); a row of another length, an unknown code or counts that are not
    /// counts are an error saying which.
    pub fn from_row(row: &[f64]) -> std::result::Result<MoveInfo, String> {
        let &[code, proposed, accepted, a, b] = row else {
            return Err(format!("{} values, 5 expected", row.len()));
        };
        let kernel = MOVE_KERNELS
            .get(code as usize)
            .filter(|_| code >= 0.0 && code.fract() == 0.0)
            .ok_or_else(|| format!("unknown kernel code {code}"))?;
        let count = |x: f64| {
            if (0.0..=f64::from(u32::MAX)).contains(&x) && x.fract() == 0.0 {
                Ok(x as u32)
            } else {
                Err(format!("{x} is not a count"))
            }
        };
        let detail = match *kernel {
            "local" => MoveDetail::LocalSweep {
                delta_action: a,
                step_size: b,
            },
            "hmc" => MoveDetail::Hmc {
                delta_h: a,
                md_steps: count(b)?,
            },
            "flow" => MoveDetail::Flow {
                log_weight_ratio: a,
                log_weight: b,
            },
            _ => MoveDetail::Metropolis {
                log_acceptance_ratio: a,
            },
        };
        Ok(MoveInfo {
            kernel,
            proposed: count(proposed)?,
            accepted: count(accepted)?,
            detail,
        })
    }

    /// ΔH when this is an HMC trajectory.
    pub fn delta_h(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Hmc { delta_h, .. } => Some(delta_h),
            _ => None,
        }
    }

    /// log w(φ′) − log w(φ) when this is a flow proposal.
    pub fn log_weight_ratio(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Flow {
                log_weight_ratio, ..
            } => Some(log_weight_ratio),
            _ => None,
        }
    }

    /// The proposal's own log-weight log w(φ′) = −S(φ′) − log p̃(φ′) when this is a flow
    /// proposal.
    pub fn proposal_log_weight(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Flow { log_weight, .. } => Some(log_weight),
            _ => None,
        }
    }

    /// The log-acceptance ratio of a single Metropolis–Hastings proposal: −ΔH for HMC, the
    /// log-weight ratio for a flow proposal, the recorded ratio of other proposals; `None`
    /// for a local sweep (many decisions).
    pub fn log_acceptance_ratio(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Hmc { delta_h, .. } => Some(-delta_h),
            MoveDetail::Flow {
                log_weight_ratio, ..
            } => Some(log_weight_ratio),
            MoveDetail::Metropolis {
                log_acceptance_ratio,
            } => Some(log_acceptance_ratio),
            MoveDetail::LocalSweep { .. } => None,
        }
    }
}

/// A Markov chain kernel that leaves e^{−S} invariant.
///
/// The trait is object-safe: kernels compose at run time as `Box<dyn Proposal>` (see
/// [`KernelExpr`]), while each kernel's own loops stay monomorphic because the generator
/// is the crate's concrete [`SimRng`].
pub trait Proposal: Send {
    /// A short name for reports.
    fn name(&self) -> String;

    /// Advances `state` by one step, appending one [`MoveInfo`] per decision group to `moves`.
    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>);

    /// Switches step-size adaptation on (thermalisation) or off (measurement).
    ///
    /// Adaptation breaks detailed balance, so a chain only adapts while thermalising.
    fn set_adapting(&mut self, _on: bool) {}
}

impl<K: Proposal + ?Sized> Proposal for Box<K> {
    fn name(&self) -> String {
        (**self).name()
    }

    #[inline]
    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        (**self).step(state, rng, moves)
    }

    fn set_adapting(&mut self, on: bool) {
        (**self).set_adapting(on)
    }
}
