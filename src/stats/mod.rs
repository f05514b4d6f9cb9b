//! Statistics on measured series: the Γ-method with automatic windowing (errors, τ_int,
//! derived quantities, replicas). Pure functions of slices; no knowledge of physics.

mod gamma;

pub use gamma::{
    DEFAULT_S, GammaEstimate, GammaMethod, MIN_REPLICA_LEN, Window, autocorrelation,
    automatic_window, gamma_method, gamma_method_derived, gamma_method_derived_replicas,
    gamma_method_replicas,
};
