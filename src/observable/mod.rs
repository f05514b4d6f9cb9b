//! Observables measured on one configuration: the [`Observable`] trait and the φ⁴ set.

mod correlator;
mod energy;
mod estimators;
mod field;
mod measurement;

pub use correlator::{LowestMomentumCorrelator, Representation, TwoPoint, ZeroMomentumCorrelator};
pub use energy::{ActionDensity, IsingEnergy, ising_energy};
pub use estimators::{
    CoshFit, binder_cumulant, connected, cosh_fit, effective_mass, susceptibility, xi_cosh_fit,
    xi_effective, xi_second_moment,
};
pub use field::{
    AbsMagnetisation, FieldSquared, Magnetisation, MagnetisationFourth, MagnetisationSquared,
    field_squared, magnetisation,
};
pub use measurement::{Failure, Measurements, NamedEstimate, Summary};

/// A measurement on one configuration, possibly vector-valued (a correlator).
///
/// An observable does not know which kernel produced the configuration.
pub trait Observable: Send {
    /// The name used in reports (`"phi2"`, `"abs_m"`, ...).
    fn name(&self) -> &str;

    /// How many numbers one measurement produces.
    fn components(&self) -> usize {
        1
    }

    /// Measures `phi`, writing [`Observable::components`] numbers into `out`.
    fn measure(&mut self, phi: &[f64], out: &mut [f64]);
}
