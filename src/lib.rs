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

pub use action::Action;
pub use control::{Metric, Observer, StopToken};
pub use error::{Error, Result};
pub use kernel::{MoveInfo, Proposal, State};
pub use lattice::Lattice;
pub use observable::Observable;
pub use rng::{SimRng, rng_from_seed};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
