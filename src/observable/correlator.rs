//! Two-point functions measured on one configuration: the full G(y) (or its Fourier transform
//! G̃(p)) by FFT, the zero-momentum correlator Ĝ(t), and G̃ at the smallest non-zero momenta.
//!
//! All are per-configuration estimators *without* the subtraction of ⟨φ⟩; the connected
//! functions subtract ⟨m⟩² at the ensemble level (see [`connected`](super::connected)).

use rustfft::num_complex::Complex64;

use super::Observable;
use crate::error::{Error, Result};
use crate::fft::FftNd;
use crate::lattice::Lattice;

/// Strides of the lexicographic site numbering (last coordinate fastest).
fn strides(lattice: &Lattice) -> Vec<usize> {
    let extents = lattice.extents();
    let mut strides = vec![1usize; extents.len()];
    for mu in (0..extents.len().saturating_sub(1)).rev() {
        strides[mu] = strides[mu + 1] * extents[mu + 1];
    }
    strides
}

/// Writes S(s) = Σ_{x: x_μ = s} φ_x into `out` (length L_μ), for the direction with the
/// given extent and stride.
fn slice_sums(phi: &[f64], extent: usize, stride: usize, out: &mut [f64]) {
    out.fill(0.0);
    for block in phi.chunks_exact(extent * stride) {
        for (sum, row) in out.iter_mut().zip(block.chunks_exact(stride)) {
            *sum += row.iter().sum::<f64>();
        }
    }
}

/// Which representation [`TwoPoint`] produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// G(y) = (1/|Λ|) Σ_x φ_{x+y} φ_x, indexed like sites.
    Position,
    /// G̃(p) = |φ̃(p)|²/|Λ| = Σ_y e^{−ip·y} G(y), indexed like momentum modes.
    Momentum,
}

/// The full two-point function of one configuration, by FFT in O(|Λ| log |Λ|).
///
/// Reported as `"G"` (position space) or `"G_p"` (momentum space), with |Λ| components. A
/// field of the wrong length is measured as NaN.
pub struct TwoPoint {
    volume: usize,
    representation: Representation,
    fft: FftNd,
    buffer: Vec<Complex64>,
}

impl TwoPoint {
    /// G(y) on `lattice`.
    pub fn position(lattice: &Lattice) -> Self {
        Self::new(lattice, Representation::Position)
    }

    /// G̃(p) on `lattice`.
    pub fn momentum(lattice: &Lattice) -> Self {
        Self::new(lattice, Representation::Momentum)
    }

    /// The two-point function in the given representation.
    pub fn new(lattice: &Lattice, representation: Representation) -> Self {
        TwoPoint {
            volume: lattice.volume(),
            representation,
            fft: FftNd::new(lattice),
            buffer: vec![Complex64::new(0.0, 0.0); lattice.volume()],
        }
    }
}

impl Observable for TwoPoint {
    fn name(&self) -> &str {
        match self.representation {
            Representation::Position => "G",
            Representation::Momentum => "G_p",
        }
    }

    fn components(&self) -> usize {
        self.volume
    }

    fn measure(&mut self, phi: &[f64], out: &mut [f64]) {
        if phi.len() != self.volume {
            out.fill(f64::NAN);
            return;
        }
        let inv_volume = 1.0 / self.volume as f64;
        for (b, &x) in self.buffer.iter_mut().zip(phi) {
            *b = Complex64::new(x, 0.0);
        }
        self.fft.forward(&mut self.buffer);
        match self.representation {
            Representation::Momentum => {
                for (o, b) in out.iter_mut().zip(&self.buffer) {
                    *o = b.norm_sqr() * inv_volume;
                }
            }
            Representation::Position => {
                for b in self.buffer.iter_mut() {
                    *b = Complex64::new(b.norm_sqr() * inv_volume, 0.0);
                }
                self.fft.inverse(&mut self.buffer);
                for (o, b) in out.iter_mut().zip(&self.buffer) {
                    *o = b.re * inv_volume;
                }
            }
        }
    }
}

/// The zero-momentum correlator Ĝ(t) = Σ_{y: y_μ = t} G(y) for t = 0..L, averaged over a
/// set of directions μ of equal extent L. Reported as `"G_hat"`.
///
/// Computed from the slice sums S(s) = Σ_{x_μ = s} φ_x as Ĝ(t) = (1/|Λ|) Σ_s S(s) S(s+t),
/// in O(|Λ| + L²) per direction. A field of the wrong length is measured as NaN.
#[derive(Clone, Debug)]
pub struct ZeroMomentumCorrelator {
    volume: usize,
    extent: usize,
    strides: Vec<usize>,
    slices: Vec<f64>,
}

impl ZeroMomentumCorrelator {
    /// Ĝ(t) averaged over all directions; all extents must be equal.
    pub fn new(lattice: &Lattice) -> Result<Self> {
        let extents = lattice.extents();
        if extents.iter().any(|&l| l != extents[0]) {
            return Err(Error::param(
                "lattice",
                format!(
                    "averaging Ĝ(t) over directions needs equal extents, got {lattice}; \
                     choose one direction instead"
                ),
            ));
        }
        Ok(Self::with_directions(lattice, (0..lattice.dim()).collect()))
    }

    /// Ĝ(t) along the single direction `mu`.
    pub fn along(lattice: &Lattice, mu: usize) -> Result<Self> {
        if mu >= lattice.dim() {
            return Err(Error::param(
                "direction",
                format!("{mu} is not below the dimension {}", lattice.dim()),
            ));
        }
        Ok(Self::with_directions(lattice, vec![mu]))
    }

    fn with_directions(lattice: &Lattice, directions: Vec<usize>) -> Self {
        let all = strides(lattice);
        let extent = lattice.extents()[directions[0]];
        ZeroMomentumCorrelator {
            volume: lattice.volume(),
            extent,
            strides: directions.iter().map(|&mu| all[mu]).collect(),
            slices: vec![0.0; extent],
        }
    }

    /// The extent L of the correlator's direction(s), i.e. its number of components.
    pub fn extent(&self) -> usize {
        self.extent
    }
}

impl Observable for ZeroMomentumCorrelator {
    fn name(&self) -> &str {
        "G_hat"
    }

    fn components(&self) -> usize {
        self.extent
    }

    fn measure(&mut self, phi: &[f64], out: &mut [f64]) {
        if phi.len() != self.volume {
            out.fill(f64::NAN);
            return;
        }
        let l = self.extent;
        out.fill(0.0);
        for &stride in &self.strides {
            slice_sums(phi, l, stride, &mut self.slices);
            for (t, o) in out.iter_mut().enumerate() {
                *o += (0..l)
                    .map(|s| self.slices[s] * self.slices[(s + t) % l])
                    .sum::<f64>();
            }
        }
        let norm = 1.0 / (self.volume * self.strides.len()) as f64;
        out.iter_mut().for_each(|o| *o *= norm);
    }
}

/// G̃(q̂_μ) = |φ̃(q̂_μ)|²/|Λ| at the smallest non-zero momentum q̂_μ = 2π e_μ/L_μ of each
/// direction (d components, the input of the second-moment correlation length). Reported
/// as `"G_p_min"`. A field of the wrong length is measured as NaN.
#[derive(Clone, Debug)]
pub struct LowestMomentumCorrelator {
    volume: usize,
    extents: Vec<usize>,
    strides: Vec<usize>,
    /// e^{−2πi s/L_μ} for each direction, concatenated.
    phases: Vec<Complex64>,
    slices: Vec<f64>,
}

impl LowestMomentumCorrelator {
    /// The correlator on `lattice`.
    pub fn new(lattice: &Lattice) -> Self {
        let extents = lattice.extents().to_vec();
        let phases = extents
            .iter()
            .enumerate()
            .flat_map(|(mu, &l)| {
                (0..l).map(move |s| Complex64::from_polar(1.0, -lattice.momentum(1, mu) * s as f64))
            })
            .collect();
        let max_l = extents.iter().copied().max().unwrap_or(0);
        LowestMomentumCorrelator {
            volume: lattice.volume(),
            strides: strides(lattice),
            extents,
            phases,
            slices: vec![0.0; max_l],
        }
    }
}

impl Observable for LowestMomentumCorrelator {
    fn name(&self) -> &str {
        "G_p_min"
    }

    fn components(&self) -> usize {
        self.extents.len()
    }

    fn measure(&mut self, phi: &[f64], out: &mut [f64]) {
        if phi.len() != self.volume {
            out.fill(f64::NAN);
            return;
        }
        let mut offset = 0;
        for ((o, &l), &stride) in out.iter_mut().zip(&self.extents).zip(&self.strides) {
            let slices = &mut self.slices[..l];
            slice_sums(phi, l, stride, slices);
            let amplitude: Complex64 = slices
                .iter()
                .zip(&self.phases[offset..offset + l])
                .map(|(&s, &p)| p * s)
                .sum();
            *o = amplitude.norm_sqr() / self.volume as f64;
            offset += l;
        }
    }
}
