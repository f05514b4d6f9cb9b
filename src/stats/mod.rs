//! Statistics on measured series: the Γ-method with automatic windowing (errors, τ_int,
//! derived quantities, replicas), the blocked bootstrap, acceptance diagnostics (τ_rej),
//! importance weights (ESS, reweighted means) and histograms. Pure functions of slices; no
//! knowledge of physics.

mod bootstrap;
mod gamma;
mod histogram;
mod rejection;
mod weights;

pub use bootstrap::{BootstrapEstimate, blocked_bootstrap};
pub use gamma::{
    DEFAULT_S, GammaEstimate, GammaMethod, MIN_REPLICA_LEN, Window, autocorrelation,
    automatic_window, gamma_method, gamma_method_derived, gamma_method_derived_replicas,
    gamma_method_replicas,
};
pub use histogram::{Histogram, SignSplitHistogram};
pub use rejection::{
    RejectionStats, longest_rejection_run, rejection_autocorrelation, rejection_run_probabilities,
};
pub use weights::{ess_fraction, reweighted_mean};
