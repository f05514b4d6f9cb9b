//! Site-averaged moments of the field measured on one configuration: the magnetisation
//! m = M/|Λ| and its powers, and ⟨φ²⟩. They need no geometry, only the field values.

use super::Observable;

/// The magnetisation per site m = (1/|Λ|) Σ_x φ_x of a configuration.
pub fn magnetisation(phi: &[f64]) -> f64 {
    phi.iter().sum::<f64>() / phi.len() as f64
}

/// The mean square field (1/|Λ|) Σ_x φ_x² of a configuration.
pub fn field_squared(phi: &[f64]) -> f64 {
    phi.iter().map(|x| x * x).sum::<f64>() / phi.len() as f64
}

/// Declares a unit-struct observable whose value on `$phi` is `$value`.
macro_rules! scalar_observable {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$phi:ident| $value:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $ty;

        impl Observable for $ty {
            fn name(&self) -> &str {
                $name
            }

            fn measure(&mut self, $phi: &[f64], out: &mut [f64]) {
                out[0] = $value;
            }
        }
    };
}

scalar_observable!(
    /// m = M/|Λ|, reported as `"m"`.
    Magnetisation,
    "m",
    |phi| magnetisation(phi)
);
scalar_observable!(
    /// |m| = |M|/|Λ|, reported as `"abs_m"`.
    AbsMagnetisation,
    "abs_m",
    |phi| magnetisation(phi).abs()
);
scalar_observable!(
    /// m² = (M/|Λ|)², reported as `"m2"`.
    MagnetisationSquared,
    "m2",
    |phi| magnetisation(phi).powi(2)
);
scalar_observable!(
    /// m⁴ = (M/|Λ|)⁴ (for the Binder cumulant), reported as `"m4"`.
    MagnetisationFourth,
    "m4",
    |phi| magnetisation(phi).powi(4)
);
scalar_observable!(
    /// ⟨φ²⟩ = (1/|Λ|) Σ_x φ_x², reported as `"phi2"`.
    FieldSquared,
    "phi2",
    |phi| field_squared(phi)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(obs: &mut dyn Observable, phi: &[f64]) -> f64 {
        assert_eq!(obs.components(), 1);
        let mut out = [f64::NAN];
        obs.measure(phi, &mut out);
        out[0]
    }

    #[test]
    fn moments_of_a_known_field() {
        let phi = [1.0, -2.0, 0.5, -1.5];
        // M = -2, |Λ| = 4: m = -0.5; Σφ² = 1 + 4 + 0.25 + 2.25 = 7.5.
        assert_eq!(measure(&mut Magnetisation, &phi), -0.5);
        assert_eq!(measure(&mut AbsMagnetisation, &phi), 0.5);
        assert_eq!(measure(&mut MagnetisationSquared, &phi), 0.25);
        assert_eq!(measure(&mut MagnetisationFourth, &phi), 0.0625);
        assert_eq!(measure(&mut FieldSquared, &phi), 7.5 / 4.0);
        assert_eq!(FieldSquared.name(), "phi2");
        assert_eq!(AbsMagnetisation.name(), "abs_m");
    }
}
