//! Markov chain kernels: the [`Proposal`] trait (one step from a state, given an RNG),
//! the chain state, and the per-move record every accept/reject leaves behind.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::{Error, Result};

mod chain;
mod combine;
mod flow;
mod hmc;
mod local;

pub use chain::{Chain, ChainRecord};
pub use combine::{Cycle, Mixture, Repeat};
pub use flow::{FlowProposal, Reweighted, reweight};
pub use hmc::{Hmc, Integrator, OMELYAN_LAMBDA};
pub use local::{LocalMetropolis, SweepOrder};

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
    /// Which kind of move: `"local"`, `"hmc"`, `"flow"`, or a user's label.
    pub kernel: &'static str,
    /// Proposals made (|Λ| for a local sweep, 1 for HMC or a flow proposal).
    pub proposed: u32,
    /// Proposals accepted.
    pub accepted: u32,
    /// ΔH of an HMC trajectory, the log-acceptance ratio of other single proposals, NaN
    /// where it does not apply (local sweeps).
    pub delta: f64,
}

/// A Markov chain kernel that leaves e^{−S} invariant.
pub trait Proposal {
    /// A short name for reports.
    fn name(&self) -> String;

    /// Advances `state` by one step, appending one [`MoveInfo`] per decision group to `moves`.
    fn step<R: Rng + ?Sized>(&mut self, state: &mut State, rng: &mut R, moves: &mut Vec<MoveInfo>);

    /// Switches step-size adaptation on (thermalisation) or off (measurement).
    ///
    /// Adaptation breaks detailed balance, so a chain only adapts while thermalising.
    fn set_adapting(&mut self, _on: bool) {}
}
