//! The φ⁴ action in its general form S = Σ_x [−κ Σ_μ φ_x φ_{x+e_μ} + μ φ_x² + g φ_x⁴] +
//! c·|Λ|, built from the user's convention (hopping, standard or quartic;
//! docs/actions.md#general-phi4-form) so that S and the field match that convention
//! exactly, with exact conversions between forms.

use serde::{Deserialize, Serialize};

use rand::Rng;

use crate::action::{Action, Checkerboard, SweepTally, metropolis_accepts, single_site_sweep};
use crate::error::{Error, Result, ensure_finite};
use crate::lattice::Lattice;
use crate::rng::SimRng;

/// The three conventions in which users write the φ⁴ action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phi4Form {
    /// S = Σ [−β Σ_μ φ_x φ_{x+μ} + φ_x² + λ(φ_x² − 1)²] (docs/actions.md#hopping-form).
    Hopping,
    /// S = Σ [−Σ_μ ϕ_x ϕ_{x+μ} + (d + m0²/2) ϕ_x² + (g0/4!) ϕ_x⁴] (docs/actions.md#standard-form).
    Standard,
    /// S = Σ [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴] (docs/actions.md#quartic-form).
    Quartic,
}

/// Couplings of one φ⁴ convention.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Phi4Couplings {
    /// Hopping form: hopping parameter β and quartic coupling λ.
    Hopping {
        /// β.
        beta: f64,
        /// λ.
        lambda: f64,
    },
    /// Standard form: bare mass squared m0² and quartic coupling g0.
    Standard {
        /// m0².
        m0sq: f64,
        /// g0.
        g0: f64,
    },
    /// Quartic form: m² and λ.
    Quartic {
        /// m².
        m2: f64,
        /// λ.
        lambda: f64,
    },
}

impl Phi4Couplings {
    /// The convention these couplings belong to.
    pub fn form(&self) -> Phi4Form {
        match self {
            Phi4Couplings::Hopping { .. } => Phi4Form::Hopping,
            Phi4Couplings::Standard { .. } => Phi4Form::Standard,
            Phi4Couplings::Quartic { .. } => Phi4Form::Quartic,
        }
    }
}

/// The coefficients (κ, μ, g) of the general φ⁴ form, which fix the change of the action
/// when one site moves: the one formula every local update of φ⁴ uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalCoefficients {
    pub(crate) kappa: f64,
    pub(crate) mass: f64,
    pub(crate) quartic: f64,
}

impl LocalCoefficients {
    /// S(φ') − S(φ) for φ_x: `old` → `new` at a site whose neighbour sum
    /// Σ_μ (φ_{x+μ} + φ_{x−μ}) is `n`:
    /// (b − a)(μ (b + a) − κ n) + g (b⁴ − a⁴).
    #[inline(always)]
    pub(crate) fn delta(&self, old: f64, new: f64, n: f64) -> f64 {
        let (a2, b2) = (old * old, new * new);
        (new - old) * (self.mass * (new + old) - self.kappa * n)
            + self.quartic * (b2 * b2 - a2 * a2)
    }
}

/// An equivalent description of the same theory in another convention:
/// φ_original = `field_scale` · φ_new, and S_original(field_scale·φ) = S_new(φ) + constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phi4Conversion {
    /// The couplings in the target convention.
    pub couplings: Phi4Couplings,
    /// The factor a in φ_original = a · φ_new.
    pub field_scale: f64,
}

/// The φ⁴ action on a periodic lattice, stored as (κ, μ, g, c) and sampled in the
/// user's convention.
#[derive(Clone, Debug)]
pub struct Phi4 {
    lattice: Lattice,
    couplings: Phi4Couplings,
    kappa: f64,
    mass: f64,
    quartic: f64,
    constant_per_site: f64,
}

impl Phi4 {
    /// The action for couplings in any convention.
    ///
    /// Refuses non-finite couplings, a negative quartic coupling, and an action that is
    /// unbounded below (it needs a positive quartic term, or a mass term μ > d·|κ|).
    pub fn new(lattice: Lattice, couplings: Phi4Couplings) -> Result<Self> {
        let d = lattice.dim() as f64;
        let (kappa, mass, quartic, constant_per_site) = match couplings {
            Phi4Couplings::Hopping { beta, lambda } => {
                ensure_finite("beta", beta)?;
                ensure_finite("lambda", lambda)?;
                non_negative("lambda", lambda)?;
                (beta, 1.0 - 2.0 * lambda, lambda, lambda)
            }
            Phi4Couplings::Standard { m0sq, g0 } => {
                ensure_finite("m0sq", m0sq)?;
                ensure_finite("g0", g0)?;
                non_negative("g0", g0)?;
                (1.0, d + 0.5 * m0sq, g0 / 24.0, 0.0)
            }
            Phi4Couplings::Quartic { m2, lambda } => {
                ensure_finite("m2", m2)?;
                ensure_finite("lambda", lambda)?;
                non_negative("lambda", lambda)?;
                (2.0, 2.0 * d + m2, lambda, 0.0)
            }
        };
        if quartic == 0.0 && mass <= d * kappa.abs() {
            return Err(Error::param(
                "couplings",
                format!(
                    "{couplings:?} gives an action unbounded below: with no quartic term the \
                     mass term {mass} must exceed d·|κ| = {}",
                    d * kappa.abs()
                ),
            ));
        }
        Ok(Phi4 {
            lattice,
            couplings,
            kappa,
            mass,
            quartic,
            constant_per_site,
        })
    }

    /// Hopping form S = Σ [−β Σ_μ φ_x φ_{x+μ} + φ_x² + λ(φ_x² − 1)²].
    pub fn hopping(lattice: Lattice, beta: f64, lambda: f64) -> Result<Self> {
        Self::new(lattice, Phi4Couplings::Hopping { beta, lambda })
    }

    /// Standard form S = Σ [−Σ_μ ϕ_x ϕ_{x+μ} + (d + m0²/2) ϕ_x² + (g0/4!) ϕ_x⁴].
    pub fn standard(lattice: Lattice, m0sq: f64, g0: f64) -> Result<Self> {
        Self::new(lattice, Phi4Couplings::Standard { m0sq, g0 })
    }

    /// Quartic form S = Σ [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴].
    pub fn quartic(lattice: Lattice, m2: f64, lambda: f64) -> Result<Self> {
        Self::new(lattice, Phi4Couplings::Quartic { m2, lambda })
    }

    /// A copy with the hopping coefficient κ multiplied by `factor`, for coupling annealing
    /// during training (in the hopping form this ramps β to its target as `factor` → 1;
    /// the other forms keep reporting their target couplings).
    pub fn with_scaled_hopping(&self, factor: f64) -> Result<Self> {
        ensure_finite("factor", factor)?;
        let mut scaled = self.clone();
        scaled.kappa *= factor;
        if let Phi4Couplings::Hopping { beta, lambda } = self.couplings {
            scaled.couplings = Phi4Couplings::Hopping {
                beta: beta * factor,
                lambda,
            };
        }
        Ok(scaled)
    }

    /// The couplings as the user gave them.
    pub fn couplings(&self) -> Phi4Couplings {
        self.couplings
    }

    /// κ of the general form.
    pub fn kappa(&self) -> f64 {
        self.kappa
    }

    /// μ, the coefficient of φ_x² in the general form.
    pub fn mass_term(&self) -> f64 {
        self.mass
    }

    /// g, the coefficient of φ_x⁴ in the general form.
    pub fn quartic_term(&self) -> f64 {
        self.quartic
    }

    /// The constant c per site added to the general form.
    pub fn constant_per_site(&self) -> f64 {
        self.constant_per_site
    }

    /// The same theory written in `form`, with the field rescaling between the two.
    ///
    /// Rescaling φ = a·φ' turns (κ, μ, g) into (κ a², μ a², g a⁴); a² is fixed by the
    /// target's normalisation: 2g a⁴ + μ a² = 1 for hopping, κ a² = 1 for standard,
    /// κ a² = 2 for quartic. Fails when no real positive a exists (e.g. κ ≤ 0 for the
    /// standard and quartic forms).
    pub fn conversion(&self, form: Phi4Form) -> Result<Phi4Conversion> {
        let d = self.lattice.dim() as f64;
        let a2 = match form {
            Phi4Form::Hopping => {
                if self.quartic > 0.0 {
                    let (m, g) = (self.mass, self.quartic);
                    // Stable positive root of 2g y² + m y − 1 = 0.
                    let disc = (m * m + 8.0 * g).sqrt();
                    if m >= 0.0 {
                        2.0 / (m + disc)
                    } else {
                        (disc - m) / (4.0 * g)
                    }
                } else {
                    1.0 / self.mass
                }
            }
            Phi4Form::Standard => 1.0 / self.kappa,
            Phi4Form::Quartic => 2.0 / self.kappa,
        };
        if !(a2.is_finite() && a2 > 0.0) {
            return Err(Error::Incompatible(format!(
                "{:?} has no equivalent {form:?} form (needs a positive field rescaling)",
                self.couplings
            )));
        }
        let (kappa, mass, quartic) = (self.kappa * a2, self.mass * a2, self.quartic * a2 * a2);
        let couplings = match form {
            Phi4Form::Hopping => Phi4Couplings::Hopping {
                beta: kappa,
                lambda: quartic,
            },
            Phi4Form::Standard => Phi4Couplings::Standard {
                m0sq: 2.0 * (mass - d),
                g0: 24.0 * quartic,
            },
            Phi4Form::Quartic => Phi4Couplings::Quartic {
                m2: mass - 2.0 * d,
                lambda: quartic,
            },
        };
        Ok(Phi4Conversion {
            couplings,
            field_scale: a2.sqrt(),
        })
    }

    /// The equivalent hopping couplings (β, λ) and the field scale a, φ_user = a·φ_hop.
    pub fn hopping_equivalent(&self) -> Result<Phi4Conversion> {
        self.conversion(Phi4Form::Hopping)
    }

    /// The same theory as an action in `form`, with the field scale a (φ_self = a·φ_new).
    pub fn converted(&self, form: Phi4Form) -> Result<(Phi4, f64)> {
        let conv = self.conversion(form)?;
        Ok((
            Phi4::new(self.lattice.clone(), conv.couplings)?,
            conv.field_scale,
        ))
    }

    /// Σ_μ (φ_{x+μ} + φ_{x−μ}) at one site; `D` is the dimension when known at compile
    /// time (0 = read it from the lattice).
    #[inline(always)]
    fn neighbour_sum<const D: usize>(&self, phi: &[f64], site: usize) -> f64 {
        let d = if D == 0 { self.lattice.dim() } else { D };
        let fwd = &self.lattice.fwd_table()[site * d..(site + 1) * d];
        let bwd = &self.lattice.bwd_table()[site * d..(site + 1) * d];
        fwd.iter().zip(bwd).map(|(&f, &b)| phi[f] + phi[b]).sum()
    }

    /// S(φ') − S(φ) for φ_x: `old` → `new` at a site whose neighbour sum is `n`.
    #[inline(always)]
    fn delta_from_neighbours(&self, old: f64, new: f64, n: f64) -> f64 {
        self.local_coefficients().delta(old, new, n)
    }

    /// The coefficients the local change ΔS needs.
    #[inline(always)]
    pub(crate) fn local_coefficients(&self) -> LocalCoefficients {
        LocalCoefficients {
            kappa: self.kappa,
            mass: self.mass,
            quartic: self.quartic,
        }
    }

    #[inline(always)]
    fn delta_local_in<const D: usize>(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        let n = self.neighbour_sum::<D>(phi, site);
        self.delta_from_neighbours(phi[site], new, n)
    }

    /// [`Action::metropolis_sweep`] with the dimension `D` ≥ 1 fixed at compile time: the
    /// neighbour sum is formed once per site (the neighbours do not move during its hits)
    /// and read straight from the neighbour rows. Falls back to the default body when the
    /// field does not cover the lattice, a site is out of range, or `hits` is 0.
    #[inline(always)]
    fn metropolis_sweep_in<const D: usize, R, P>(
        &self,
        phi: &mut [f64],
        sites: &[usize],
        hits: u32,
        rng: &mut R,
        mut propose: P,
    ) -> SweepTally
    where
        R: Rng + ?Sized,
        P: FnMut(f64, &mut R) -> f64,
    {
        let Some((fwd, bwd)) = self.lattice.neighbour_rows::<D>() else {
            return single_site_sweep(self, phi, sites, hits, rng, propose);
        };
        let volume = phi.len();
        if hits == 0 || volume != fwd.len() || volume != bwd.len() {
            return single_site_sweep(self, phi, sites, hits, rng, propose);
        }
        // One pass over the site list up front, so that the update loop has no bounds
        // checks (and no panic path that would force the generator state out of registers).
        if sites.iter().any(|&site| site >= volume) {
            return single_site_sweep(self, phi, sites, hits, rng, propose);
        }
        let mut accepted = 0u32;
        let mut delta_action = 0.0;
        for &site in sites {
            // SAFETY: site < volume (checked above) and phi, fwd and bwd all have `volume`
            // entries; every neighbour-row entry is a site index below the volume
            // (Lattice::neighbour_rows).
            let (up, down, old) = unsafe {
                (
                    fwd.get_unchecked(site),
                    bwd.get_unchecked(site),
                    *phi.get_unchecked(site),
                )
            };
            let mut n = 0.0;
            for mu in 0..D {
                // SAFETY: as above, neighbour indices are below the volume.
                n += unsafe { *phi.get_unchecked(up[mu]) + *phi.get_unchecked(down[mu]) };
            }
            let mut current = old;
            let mut hits_left = hits;
            loop {
                let new = propose(current, rng);
                let delta = self.delta_from_neighbours(current, new, n);
                if metropolis_accepts(delta, rng) {
                    current = new;
                    accepted += 1;
                    delta_action += delta;
                }
                hits_left -= 1;
                if hits_left == 0 {
                    break;
                }
            }
            // SAFETY: site < volume = phi.len(), checked above.
            unsafe { *phi.get_unchecked_mut(site) = current };
        }
        SweepTally {
            accepted,
            delta_action,
        }
    }

    fn action_in<const D: usize>(&self, phi: &[f64]) -> f64 {
        let d = if D == 0 { self.lattice.dim() } else { D };
        let (kappa, mass, quartic) = (self.kappa, self.mass, self.quartic);
        let mut s = 0.0;
        for (&x, fwd) in phi.iter().zip(self.lattice.fwd_table().chunks_exact(d)) {
            let forward: f64 = fwd.iter().map(|&f| phi[f]).sum();
            let x2 = x * x;
            s += x * (mass * x - kappa * forward) + quartic * x2 * x2;
        }
        s + self.constant_per_site * phi.len() as f64
    }

    fn force_in<const D: usize>(&self, phi: &[f64], out: &mut [f64]) {
        let d = if D == 0 { self.lattice.dim() } else { D };
        // A field shorter than the lattice panics here, as indexing it would.
        let phi = &phi[..self.lattice.volume()];
        let (kappa, mass2, quartic4) = (self.kappa, 2.0 * self.mass, 4.0 * self.quartic);
        let tables = self
            .lattice
            .fwd_table()
            .chunks_exact(d)
            .zip(self.lattice.bwd_table().chunks_exact(d));
        for ((o, &x), (fwd, bwd)) in out.iter_mut().zip(phi).zip(tables) {
            let n: f64 = fwd
                .iter()
                .zip(bwd)
                // SAFETY: the lattice's neighbour tables hold site indices below its
                // volume, and phi has exactly `volume` entries (sliced above).
                .map(|(&f, &b)| unsafe { *phi.get_unchecked(f) + *phi.get_unchecked(b) })
                .sum();
            *o = x * (mass2 + quartic4 * x * x) - kappa * n;
        }
    }

    fn action_and_force_in<const D: usize>(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        let d = if D == 0 { self.lattice.dim() } else { D };
        let (kappa, mass, quartic) = (self.kappa, self.mass, self.quartic);
        let tables = self
            .lattice
            .fwd_table()
            .chunks_exact(d)
            .zip(self.lattice.bwd_table().chunks_exact(d));
        let mut s = 0.0;
        for ((o, &x), (fwd, bwd)) in out.iter_mut().zip(phi).zip(tables) {
            let (mut forward, mut backward) = (0.0, 0.0);
            for (&f, &b) in fwd.iter().zip(bwd) {
                forward += phi[f];
                backward += phi[b];
            }
            let x2 = x * x;
            s += x * (mass * x - kappa * forward) + quartic * x2 * x2;
            *o = x * (2.0 * mass + 4.0 * quartic * x2) - kappa * (forward + backward);
        }
        s + self.constant_per_site * phi.len() as f64
    }
}

/// Calls `$self.$method::<D>($args)` with the lattice dimension as a compile-time
/// constant for d ≤ 4 (so the neighbour loop unrolls), and the generic loop otherwise.
macro_rules! by_dimension {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self.lattice.dim() {
            1 => $self.$method::<1>($($arg),*),
            2 => $self.$method::<2>($($arg),*),
            3 => $self.$method::<3>($($arg),*),
            4 => $self.$method::<4>($($arg),*),
            _ => $self.$method::<0>($($arg),*),
        }
    };
}

fn non_negative(name: &str, value: f64) -> Result<()> {
    if value < 0.0 {
        Err(Error::param(
            name,
            format!("the quartic coupling must be ≥ 0, got {value}"),
        ))
    } else {
        Ok(())
    }
}

impl Action for Phi4 {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn action(&self, phi: &[f64]) -> f64 {
        by_dimension!(self.action_in(phi))
    }

    fn force(&self, phi: &[f64], out: &mut [f64]) {
        by_dimension!(self.force_in(phi, out))
    }

    #[inline]
    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        by_dimension!(self.delta_local_in(phi, site, new))
    }

    fn action_and_force(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        by_dimension!(self.action_and_force_in(phi, out))
    }

    /// Vectorised in two dimensions (see [`Checkerboard`]), the reference sweep otherwise.
    fn checkerboard_sweep(
        &self,
        phi: &mut [f64],
        board: &mut Checkerboard,
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        board.sweep_phi4(self, self.local_coefficients(), phi, step_size, hits, rng)
    }

    fn metropolis_sweep<R, P>(
        &self,
        phi: &mut [f64],
        sites: &[usize],
        hits: u32,
        rng: &mut R,
        propose: P,
    ) -> SweepTally
    where
        R: Rng + ?Sized,
        P: FnMut(f64, &mut R) -> f64,
    {
        match self.lattice.dim() {
            1 => self.metropolis_sweep_in::<1, R, P>(phi, sites, hits, rng, propose),
            2 => self.metropolis_sweep_in::<2, R, P>(phi, sites, hits, rng, propose),
            3 => self.metropolis_sweep_in::<3, R, P>(phi, sites, hits, rng, propose),
            4 => self.metropolis_sweep_in::<4, R, P>(phi, sites, hits, rng, propose),
            _ => single_site_sweep(self, phi, sites, hits, rng, propose),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lat() -> Lattice {
        Lattice::hypercubic(2, 4).unwrap()
    }

    #[test]
    fn quartic_at_m2_minus_4_is_hopping_half() {
        let q = Phi4::quartic(lat(), -4.0, 6.008).unwrap();
        let conv = q.hopping_equivalent().unwrap();
        match conv.couplings {
            Phi4Couplings::Hopping { beta, lambda } => {
                assert!((lambda - 0.5).abs() < 1e-14);
                assert!((beta - (2.0f64 / 6.008).sqrt()).abs() < 1e-14);
            }
            other => panic!("expected hopping couplings, got {other:?}"),
        }
    }

    #[test]
    fn bad_couplings_are_refused() {
        assert!(Phi4::hopping(lat(), f64::NAN, 0.5).is_err());
        assert!(Phi4::hopping(lat(), 0.5, -0.1).is_err());
        assert!(Phi4::standard(lat(), -1.0, 0.0).is_err());
        assert!(Phi4::quartic(lat(), 0.0, f64::INFINITY).is_err());
        assert!(Phi4::standard(lat(), 0.5, 0.0).is_ok());
    }

    #[test]
    fn hopping_form_matches_its_definition() {
        let a = Phi4::hopping(lat(), 0.3, 0.7).unwrap();
        let phi: Vec<f64> = (0..16).map(|i| (i as f64 * 1.3).sin()).collect();
        let l = a.lattice();
        let mut direct = 0.0;
        for x in 0..16 {
            let kin: f64 = (0..2).map(|mu| phi[x] * phi[l.fwd(x, mu)]).sum();
            direct += -0.3 * kin + phi[x] * phi[x] + 0.7 * (phi[x] * phi[x] - 1.0).powi(2);
        }
        assert!((a.action(&phi) - direct).abs() < 1e-12);
    }
}
