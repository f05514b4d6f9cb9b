//! Observables measured on one configuration: the [`Observable`] trait and the φ⁴ set.

mod field;

pub use field::{
    AbsMagnetisation, FieldSquared, Magnetisation, MagnetisationFourth, MagnetisationSquared,
    field_squared, magnetisation,
};

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
