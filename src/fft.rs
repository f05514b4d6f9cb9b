//! d-dimensional complex FFTs over a [`Lattice`], built from
//! rustfft's 1-D plans applied along each axis. Unnormalised in both directions, like
//! rustfft: `inverse(forward(x)) = |Λ| x`.

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

use crate::lattice::Lattice;

/// Planned forward and inverse FFTs for one lattice shape, with their scratch space.
pub struct FftNd {
    extents: Vec<usize>,
    strides: Vec<usize>,
    forward: Vec<Arc<dyn Fft<f64>>>,
    inverse: Vec<Arc<dyn Fft<f64>>>,
    line: Vec<Complex64>,
    scratch: Vec<Complex64>,
}

impl FftNd {
    /// Plans the transforms for `lattice`.
    pub fn new(lattice: &Lattice) -> Self {
        let extents = lattice.extents().to_vec();
        let d = extents.len();
        let mut strides = vec![1usize; d];
        for mu in (0..d.saturating_sub(1)).rev() {
            strides[mu] = strides[mu + 1] * extents[mu + 1];
        }
        let mut planner = FftPlanner::<f64>::new();
        let forward: Vec<_> = extents
            .iter()
            .map(|&l| planner.plan_fft_forward(l))
            .collect();
        let inverse: Vec<_> = extents
            .iter()
            .map(|&l| planner.plan_fft_inverse(l))
            .collect();
        let scratch_len = forward
            .iter()
            .chain(&inverse)
            .map(|p| p.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        let max_l = extents.iter().copied().max().unwrap_or(1);
        FftNd {
            extents,
            strides,
            forward,
            inverse,
            line: vec![Complex64::new(0.0, 0.0); max_l],
            scratch: vec![Complex64::new(0.0, 0.0); scratch_len],
        }
    }

    /// Number of sites the transform acts on.
    pub fn volume(&self) -> usize {
        self.extents.iter().product()
    }

    /// In-place forward transform x̃_p = Σ_x e^{−ip·x} x_x.
    pub fn forward(&mut self, data: &mut [Complex64]) {
        self.transform(data, true);
    }

    /// In-place inverse transform x_x = Σ_p e^{ip·x} x̃_p (no 1/|Λ|).
    pub fn inverse(&mut self, data: &mut [Complex64]) {
        self.transform(data, false);
    }

    fn transform(&mut self, data: &mut [Complex64], forward: bool) {
        assert_eq!(data.len(), self.volume(), "FFT buffer length");
        let volume = data.len();
        for mu in 0..self.extents.len() {
            let l = self.extents[mu];
            let stride = self.strides[mu];
            let plan = if forward {
                &self.forward[mu]
            } else {
                &self.inverse[mu]
            };
            if stride == 1 {
                for chunk in data.chunks_exact_mut(l) {
                    plan.process_with_scratch(chunk, &mut self.scratch);
                }
                continue;
            }
            let block = l * stride;
            let line = &mut self.line[..l];
            for start_block in (0..volume).step_by(block) {
                for offset in 0..stride {
                    let base = start_block + offset;
                    for (k, v) in line.iter_mut().enumerate() {
                        *v = data[base + k * stride];
                    }
                    plan.process_with_scratch(line, &mut self.scratch);
                    for (k, v) in line.iter().enumerate() {
                        data[base + k * stride] = *v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn matches_direct_dft_in_3d() {
        let lat = Lattice::new(&[3, 4, 2]).unwrap();
        let v = lat.volume();
        let x: Vec<Complex64> = (0..v)
            .map(|i| Complex64::new((i as f64 * 0.7).sin(), (i as f64 * 0.3).cos()))
            .collect();
        let mut y = x.clone();
        let mut fft = FftNd::new(&lat);
        fft.forward(&mut y);
        let (mut cx, mut cp) = ([0usize; 3], [0usize; 3]);
        for p in 0..v {
            lat.coords(p, &mut cp);
            let mut acc = Complex64::new(0.0, 0.0);
            for s in 0..v {
                lat.coords(s, &mut cx);
                let phase: f64 = (0..3)
                    .map(|mu| lat.momentum(cp[mu], mu) * cx[mu] as f64)
                    .sum();
                acc += x[s] * Complex64::from_polar(1.0, -phase);
            }
            assert!((acc - y[p]).norm() < 1e-10);
        }
        fft.inverse(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a * v as f64 - b).norm() < 1e-10);
        }
    }
}
