//! The free scalar field S = ½ Σ_x ϕ_x (−∇² + m0²) ϕ_x (docs/actions.md#free-field): an
//! [`Action`] with exact answers — an exact FFT sampler, the normalised log-density, log Z,
//! the propagator, χ and ⟨S⟩ — used as a test target and as a flow latent.

use ndarray::ArrayView1;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rustfft::num_complex::Complex64;

use crate::action::{Action, Checkerboard, Phi4, SweepTally};
use crate::error::{Error, Result, ensure_finite};
use crate::fft::FftNd;
use crate::lattice::Lattice;
use crate::rng::SimRng;

/// The free field of bare mass m0 > 0: the standard φ⁴ form with g0 = 0.
#[derive(Clone, Debug)]
pub struct FreeField {
    phi4: Phi4,
    m0sq: f64,
    log_z: f64,
}

impl FreeField {
    /// The free field with mass squared `m0sq` (must be finite and positive).
    pub fn new(lattice: Lattice, m0sq: f64) -> Result<Self> {
        ensure_finite("m0sq", m0sq)?;
        if m0sq <= 0.0 {
            return Err(Error::param(
                "m0sq",
                format!("the free field needs m0² > 0, got {m0sq}"),
            ));
        }
        let v = lattice.volume() as f64;
        let log_det: f64 = lattice
            .phat2_table()
            .iter()
            .map(|p2| (p2 + m0sq).ln())
            .sum();
        let log_z = 0.5 * v * (2.0 * std::f64::consts::PI).ln() - 0.5 * log_det;
        let phi4 = Phi4::standard(lattice, m0sq, 0.0)?;
        Ok(FreeField { phi4, m0sq, log_z })
    }

    /// m0².
    pub fn m0sq(&self) -> f64 {
        self.m0sq
    }

    /// The same action as a [`Phi4`] in the standard form with g0 = 0.
    pub fn as_phi4(&self) -> &Phi4 {
        &self.phi4
    }

    /// log Z = (|Λ|/2) log 2π − ½ Σ_p log(p̂² + m0²).
    pub fn log_z(&self) -> f64 {
        self.log_z
    }

    /// The exact normalised log-density log p(ϕ) = −S(ϕ) − log Z.
    pub fn log_density(&self, phi: &[f64]) -> f64 {
        -self.phi4.action(phi) - self.log_z
    }

    /// [`FreeField::log_density`] of a field held in f32 (a flow's latent row), summed in f64
    /// without copying it: S = Σ_x φ_x ((d + m0²/2) φ_x − Σ_μ φ_{x+μ̂}). `phi` must have one
    /// value per site.
    pub(crate) fn log_density_of(&self, phi: ArrayView1<f32>) -> f64 {
        let lattice = self.phi4.lattice();
        let d = lattice.dim();
        let diagonal = d as f64 + 0.5 * self.m0sq;
        let mut s = 0.0;
        for (&x, fwd) in phi.iter().zip(lattice.fwd_table().chunks_exact(d)) {
            let x = f64::from(x);
            let forward: f64 = fwd.iter().map(|&f| f64::from(phi[f])).sum();
            s += x * (diagonal * x - forward);
        }
        -s - self.log_z
    }

    /// The exact propagator G(y) = ⟨ϕ_{x+y} ϕ_x⟩ for every separation y, indexed like sites.
    pub fn propagator(&self) -> Vec<f64> {
        let lattice = self.phi4.lattice();
        let mut modes: Vec<Complex64> = lattice
            .phat2_table()
            .iter()
            .map(|p2| Complex64::new(1.0 / (p2 + self.m0sq), 0.0))
            .collect();
        FftNd::new(lattice).inverse(&mut modes);
        let v = lattice.volume() as f64;
        modes.iter().map(|c| c.re / v).collect()
    }

    /// χ = Σ_y G(y) = 1/m0².
    pub fn susceptibility(&self) -> f64 {
        1.0 / self.m0sq
    }

    /// ⟨S⟩ = |Λ|/2.
    pub fn mean_action(&self) -> f64 {
        0.5 * self.phi4.lattice().volume() as f64
    }

    /// An exact sampler that owns its FFT plan and scratch.
    pub fn sampler(&self) -> FreeFieldSampler {
        FreeFieldSampler::new(self)
    }
}

impl Action for FreeField {
    fn lattice(&self) -> &Lattice {
        self.phi4.lattice()
    }
    fn action(&self, phi: &[f64]) -> f64 {
        self.phi4.action(phi)
    }
    fn force(&self, phi: &[f64], out: &mut [f64]) {
        self.phi4.force(phi, out)
    }
    #[inline]
    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        self.phi4.delta_local(phi, site, new)
    }
    fn checkerboard_sweep(
        &self,
        phi: &mut [f64],
        board: &mut Checkerboard,
        step_size: f64,
        hits: u32,
        rng: &mut SimRng,
    ) -> SweepTally {
        self.phi4
            .checkerboard_sweep(phi, board, step_size, hits, rng)
    }
    fn action_and_force(&self, phi: &[f64], out: &mut [f64]) -> f64 {
        self.phi4.action_and_force(phi, out)
    }
}

/// Draws exact, independent free-field configurations: complex white noise → FFT →
/// multiply each mode by (p̂² + m0²)^(−1/2)/|Λ| → inverse FFT. The real and imaginary
/// parts of one transform are two independent fields; the second is kept for the next
/// call, so one FFT pair serves two samples. No allocation per sample.
pub struct FreeFieldSampler {
    fft: FftNd,
    amplitude: Vec<f64>,
    buffer: Vec<Complex64>,
    spare: Vec<f64>,
    spare_ready: bool,
}

impl FreeFieldSampler {
    /// A sampler for `field`.
    pub fn new(field: &FreeField) -> Self {
        let lattice = field.lattice();
        let v = lattice.volume();
        let amplitude = lattice
            .phat2_table()
            .iter()
            .map(|p2| 1.0 / ((p2 + field.m0sq).sqrt() * v as f64))
            .collect();
        FreeFieldSampler {
            fft: FftNd::new(lattice),
            amplitude,
            buffer: vec![Complex64::new(0.0, 0.0); v],
            spare: vec![0.0; v],
            spare_ready: false,
        }
    }

    /// Number of sites a sample has.
    pub fn volume(&self) -> usize {
        self.amplitude.len()
    }

    /// Writes one exact free-field sample into `out` (length |Λ|).
    pub fn sample_into<R: Rng + ?Sized>(&mut self, rng: &mut R, out: &mut [f64]) -> Result<()> {
        if out.len() != self.volume() {
            return Err(Error::Shape(format!(
                "sample buffer has {} values, lattice has {} sites",
                out.len(),
                self.volume()
            )));
        }
        if self.spare_ready {
            out.copy_from_slice(&self.spare);
            self.spare_ready = false;
            return Ok(());
        }
        for c in self.buffer.iter_mut() {
            *c = Complex64::new(StandardNormal.sample(rng), StandardNormal.sample(rng));
        }
        self.fft.forward(&mut self.buffer);
        for (c, &a) in self.buffer.iter_mut().zip(&self.amplitude) {
            *c *= a;
        }
        self.fft.inverse(&mut self.buffer);
        for ((o, s), c) in out.iter_mut().zip(self.spare.iter_mut()).zip(&self.buffer) {
            *o = c.re;
            *s = c.im;
        }
        self.spare_ready = true;
        Ok(())
    }

    /// Fills `out` (a whole number of configurations, each |Λ| values, row after row)
    /// with independent exact samples, in the same order as repeated
    /// [`FreeFieldSampler::sample_into`] calls.
    pub fn sample_rows_into<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        out: &mut [f64],
    ) -> Result<()> {
        let v = self.volume();
        if !out.len().is_multiple_of(v) {
            return Err(Error::Shape(format!(
                "batch buffer has {} values, not a multiple of {v} sites",
                out.len()
            )));
        }
        for row in out.chunks_exact_mut(v) {
            self.sample_into(rng, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagator_sums_to_susceptibility() {
        let f = FreeField::new(Lattice::new(&[6, 4]).unwrap(), 0.3).unwrap();
        let g = f.propagator();
        let chi: f64 = g.iter().sum();
        assert!((chi - 1.0 / 0.3).abs() < 1e-10);
    }

    #[test]
    fn batch_sampling_matches_single_samples() {
        let f = FreeField::new(Lattice::new(&[4, 3]).unwrap(), 0.7).unwrap();
        let (mut a, mut b) = (f.sampler(), f.sampler());
        let (mut ra, mut rb) = (crate::rng_from_seed(5), crate::rng_from_seed(5));
        let mut batch = vec![0.0; 3 * 12];
        a.sample_rows_into(&mut ra, &mut batch).unwrap();
        let mut single = vec![0.0; 12];
        for row in batch.chunks_exact(12) {
            b.sample_into(&mut rb, &mut single).unwrap();
            assert_eq!(row, &single[..]);
        }
        // Consecutive samples (real and imaginary parts of one transform) differ.
        assert_ne!(batch[..12], batch[12..24]);
        assert!(a.sample_rows_into(&mut ra, &mut [0.0; 13]).is_err());
    }

    #[test]
    fn massless_or_bad_mass_is_refused() {
        let lat = Lattice::hypercubic(2, 4).unwrap();
        assert!(FreeField::new(lat.clone(), 0.0).is_err());
        assert!(FreeField::new(lat.clone(), f64::NAN).is_err());
        assert!(FreeField::new(lat, -1.0).is_err());
    }
}
