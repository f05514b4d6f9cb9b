//! latflow: Monte Carlo sampling in lattice field theory with normalizing-flow proposals,
//! measured against the classic samplers (HMC, local Metropolis).
//!
//! Data flows one way through the modules:
//! [`lattice`] + [`action`] (what is sampled) → [`flow`] + [`train`] (a learned proposal)
//! → [`kernel`] (Markov chains with their accept/reject history) → [`observable`]
//! → [`stats`] (numbers with honest errors) + [`diagnostics`] (can they be trusted?)
//! → [`io`] (what the user reads).
//!
//! The theory and conventions behind the formulas are in the repository's `docs/` folder
//! (start at `docs/README.md`).

pub mod action;
pub mod control;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod diagnostics;
pub mod error;
pub mod fft;
pub mod flow;
pub mod io;
pub mod kernel;
pub mod lattice;
pub mod limits;
pub mod observable;
pub mod parallel;
pub mod rng;
#[cfg(feature = "cli")]
pub mod run;
pub mod stats;
#[cfg(feature = "cli")]
pub mod study;
pub mod tape;
pub mod testing;
pub mod train;

// What an embedder needs most, flat at the crate root; everything else stays in its module.
pub use action::{Action, FreeField, Phi4};
pub use control::{Metric, Observer, StopToken};
pub use diagnostics::{ChainDiagnostics, Finding, diagnose};
pub use error::{Error, Result};
pub use flow::{Flow, FlowConfig, FlowModel, LayerRegistry, TrainableFlow};
pub use kernel::{
    Chain, ChainRecord, Cycle, FlowProposal, Hmc, KernelExpr, LocalMetropolis, Measure, Mixture,
    MoveInfo, MoveLabel, Proposal, Repeat, RunPlan, State,
};
pub use lattice::Lattice;
pub use observable::{Measurements, Observable};
pub use rng::{SimRng, rng_from_seed};
#[cfg(feature = "cli")]
pub use run::{Registry, SampleReport, SampleSpec, TrainSpec};
pub use stats::{
    GammaEstimate, GammaMethod, Verdict, gamma_method, gamma_method_derived, gamma_method_replicas,
};
#[cfg(feature = "cli")]
pub use study::{StudySpec, SweepSpec};
pub use train::{TrainConfig, Trainer};

/// Private supertraits of the plumbing traits: public because the crate's signatures name
/// them, implemented by the crate's own types only. Users implement [`Action`],
/// [`Proposal`], [`Flow`], [`Observable`], [`Observer`] and [`Measure`] instead.
mod sealed {
    /// Seals [`crate::flow::Real`] (and so `FlowFloat` and `SplineFloat`).
    pub trait Float {}
    /// Seals [`crate::flow::ConditionerOnTape`] and [`crate::flow::AnyFloatConditioner`].
    pub trait Conditioner {}
    /// Seals [`crate::kernel::EnsembleKernel`].
    pub trait EnsembleKernel {}
    /// Seals `run::TargetAction`.
    #[cfg(feature = "cli")]
    pub trait TargetAction {}
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
