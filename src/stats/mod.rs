//! Statistics on measured series: the Γ-method with automatic windowing (errors, τ_int,
//! derived quantities, replicas, and how far each result can be trusted), the blocked
//! bootstrap, acceptance diagnostics (τ_rej), importance weights (ESS, Pareto k̂, reweighted
//! means) and histograms. Pure functions of slices; no knowledge of physics.
//!
//! ```
//! use latflow::stats::{gamma_method, gamma_method_derived};
//! use rand::RngExt;
//!
//! let mut rng = latflow::rng_from_seed(1);
//! let a: Vec<f64> = (0..1000).map(|_| 1.0 + rng.random::<f64>()).collect();
//! let b: Vec<f64> = (0..1000).map(|_| 2.0 + rng.random::<f64>()).collect();
//! let mean_a = gamma_method(&a)?;
//! let ratio = gamma_method_derived(&[&a, &b], |m| m[0] / m[1])?;
//! assert!(mean_a.err > 0.0 && ratio.err > 0.0);
//! # Ok::<(), latflow::Error>(())
//! ```

mod bootstrap;
mod fit;
mod gamma;
mod histogram;
mod rejection;
mod weights;

pub use bootstrap::{BootstrapEstimate, blocked_bootstrap};
pub(crate) use fit::minimise_over_mass;
pub use fit::{
    CorrelatedCoshFit, MeanCovariance, PowerLawFit, binned_covariance, correlated_cosh_fit,
    gamma_covariance, gamma_covariance_replicas, power_law_fit,
};
pub(crate) use gamma::nan_if_null;
pub use gamma::{
    DEFAULT_S, DOUBTFUL_LENGTH, GammaCaveat, GammaEstimate, GammaMethod, MIN_REPLICA_LEN,
    UNRELIABLE_LENGTH, Verdict, Window, autocorrelation, automatic_window, gamma_method,
    gamma_method_derived, gamma_method_derived_replicas, gamma_method_replicas,
};
pub use histogram::{Histogram, SignSplitHistogram};
pub use rejection::{
    RejectionStats, longest_rejection_run, rejection_autocorrelation, rejection_run_probabilities,
};
pub use weights::{
    MIN_PARETO_TAIL, ess_fraction, max_normalised_weight, pareto_k_hat, pareto_k_threshold,
    reweighted_mean,
};
