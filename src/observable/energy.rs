//! Energy-like observables: the Ising energy (nearest-neighbour product per site) and the
//! action density S/|Λ| of any [`Action`].

use std::sync::Arc;

use super::Observable;
use crate::action::Action;
use crate::lattice::Lattice;

/// The Ising energy E = (1/|Λ|) Σ_x Σ_μ φ_x φ_{x+e_μ}, reported as `"energy"`.
///
/// A field whose length differs from the lattice volume is measured as NaN, which the
/// statistics then refuse with a typed error.
#[derive(Clone, Debug)]
pub struct IsingEnergy {
    lattice: Lattice,
}

impl IsingEnergy {
    /// The energy on `lattice`.
    pub fn new(lattice: &Lattice) -> Self {
        IsingEnergy {
            lattice: lattice.clone(),
        }
    }
}

/// E = (1/|Λ|) Σ_x Σ_μ φ_x φ_{x+e_μ} of one configuration (NaN on a length mismatch).
pub fn ising_energy(lattice: &Lattice, phi: &[f64]) -> f64 {
    let volume = lattice.volume();
    if phi.len() != volume {
        return f64::NAN;
    }
    let d = lattice.dim();
    let sum: f64 = phi
        .iter()
        .zip(lattice.fwd_table().chunks_exact(d))
        .map(|(&x, neighbours)| x * neighbours.iter().map(|&y| phi[y]).sum::<f64>())
        .sum();
    sum / volume as f64
}

impl Observable for IsingEnergy {
    fn name(&self) -> &str {
        "energy"
    }

    fn measure(&mut self, phi: &[f64], out: &mut [f64]) {
        out[0] = ising_energy(&self.lattice, phi);
    }
}

/// The action density S(φ)/|Λ| of a given action, reported as `"action_density"`.
///
/// A field whose length differs from the lattice volume is measured as NaN.
#[derive(Clone)]
pub struct ActionDensity {
    action: Arc<dyn Action>,
}

impl ActionDensity {
    /// The action density of `action`.
    pub fn new(action: Arc<dyn Action>) -> Self {
        ActionDensity { action }
    }
}

impl Observable for ActionDensity {
    fn name(&self) -> &str {
        "action_density"
    }

    fn measure(&mut self, phi: &[f64], out: &mut [f64]) {
        let volume = self.action.lattice().volume();
        out[0] = if phi.len() == volume {
            self.action.action(phi) / volume as f64
        } else {
            f64::NAN
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ising_energy_of_ordered_and_staggered_fields() {
        let lat = Lattice::new(&[4, 6, 2]).unwrap();
        let v = lat.volume();
        let mut e = IsingEnergy::new(&lat);
        let mut out = [0.0];
        e.measure(&vec![1.0; v], &mut out);
        assert_eq!(out[0], 3.0);
        // Staggered: every bond joins opposite signs (all extents even).
        let staggered: Vec<f64> = (0..v)
            .map(|s| if lat.parity(s) == 0 { 1.0 } else { -1.0 })
            .collect();
        e.measure(&staggered, &mut out);
        assert_eq!(out[0], -3.0);
        e.measure(&[1.0; 3], &mut out);
        assert!(out[0].is_nan());
    }

    /// S = ½ Σ φ², enough to check the density's normalisation.
    struct HalfSquare(Lattice);

    impl Action for HalfSquare {
        fn lattice(&self) -> &Lattice {
            &self.0
        }
        fn action(&self, phi: &[f64]) -> f64 {
            0.5 * phi.iter().map(|x| x * x).sum::<f64>()
        }
        fn force(&self, phi: &[f64], out: &mut [f64]) {
            out.copy_from_slice(phi);
        }
        fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
            0.5 * (new * new - phi[site] * phi[site])
        }
    }

    #[test]
    fn action_density_divides_by_volume() {
        let lat = Lattice::new(&[2, 3]).unwrap();
        let mut density = ActionDensity::new(Arc::new(HalfSquare(lat)));
        let mut out = [0.0];
        density.measure(&[1.0, 2.0, 0.0, -1.0, 0.0, 2.0], &mut out);
        assert!((out[0] - 5.0 / 6.0).abs() < 1e-15);
        assert_eq!(density.name(), "action_density");
        density.measure(&[1.0; 5], &mut out);
        assert!(out[0].is_nan());
    }

    #[test]
    fn ising_energy_matches_coordinate_sum() {
        let lat = Lattice::new(&[3, 5]).unwrap();
        let phi: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut direct = 0.0;
        for x0 in 0..3 {
            for x1 in 0..5 {
                let here = phi[lat.site(&[x0, x1])];
                direct += here * phi[lat.site(&[x0 + 1, x1])];
                direct += here * phi[lat.site(&[x0, x1 + 1])];
            }
        }
        assert!((ising_energy(&lat, &phi) - direct / 15.0).abs() < 1e-14);
    }
}
