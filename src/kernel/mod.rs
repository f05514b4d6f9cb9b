//! Markov chain kernels: the [`Proposal`] trait (one step from a state, given an RNG),
//! the chain [`State`], the per-move record every accept/reject leaves behind
//! ([`MoveInfo`]), the kernels themselves, the expression language that composes them, and
//! the [`Chain`] that runs a kernel.

use crate::rng::SimRng;

mod chain;
mod combine;
mod ensemble;
mod expr;
mod flow;
mod flowhmc;
mod hmc;
mod local;
mod moves;
mod noneq;
mod recycle;
mod state;

pub use chain::{BlockSize, Chain, ChainRecord, Ensemble, Measure, RunPlan};
pub use combine::{Cycle, Mixture, Repeat};
pub use ensemble::{
    EnsembleCycle, EnsembleKernel, EnsembleLeafMaker, EnsembleMixture, EnsembleRepeat, FlowLeaf,
    Member, PerChain,
};
pub use expr::{KernelExpr, KernelMaker};
pub(crate) use flow::DrawScratch;
pub use flow::{FlowProposal, Reweighted, reweight};
pub use flowhmc::FlowHmc;
pub use hmc::{Hmc, Integrator, OMELYAN_LAMBDA};
pub use local::{ACTION_REFRESH_INTERVAL, LocalMetropolis, SweepOrder};
pub use moves::{MOVE_DETAIL_COLUMNS, MOVE_KINDS, MoveDetail, MoveInfo, MoveLabel, MoveRows};
pub(crate) use noneq::FlowLayers;
pub use noneq::{
    FieldFunction, MIN_EFFECTIVE_EVOLUTIONS, NoneqEstimate, NoneqEvolution, NoneqPath,
    NoneqProposal, NoneqProtocol, NoneqUpdate, noneq_estimate,
};
pub use recycle::{
    EffectiveTau, RECYCLED_COST_OBSERVABLES, RECYCLED_PRIMARIES, RecycledPlan, RecycledRun,
    recycled_sampling,
};
pub use state::State;

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
