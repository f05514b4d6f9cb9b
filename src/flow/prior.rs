//! Latent distributions r(z) of a flow: sampling into a batch and the exact normalised
//! log-density of each row, in f64: the standard normal and the exact free field.

use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::action::FreeField;
use crate::error::Result;
use crate::flow::recipe::PriorConfig;
use crate::lattice::Lattice;

/// A latent distribution on the sites of a lattice.
#[derive(Clone, Debug)]
pub enum Prior {
    /// Independent N(0, 1) at every site.
    StandardNormal,
    /// The exact free field (SPEC 1.4, 3.6), sampled by FFT.
    FreeField(FreeField),
}

impl Prior {
    /// The prior a configuration describes, on `lattice`.
    pub fn new(config: &PriorConfig, lattice: &Lattice) -> Result<Self> {
        Ok(match config {
            PriorConfig::StandardNormal => Prior::StandardNormal,
            PriorConfig::FreeField { m0sq } => {
                Prior::FreeField(FreeField::new(lattice.clone(), *m0sq)?)
            }
        })
    }

    /// Fills every row of `z` (`[n, volume]`) with an independent draw.
    pub fn sample_into<R: Rng + ?Sized>(
        &self,
        mut z: ArrayViewMut2<f32>,
        rng: &mut R,
    ) -> Result<()> {
        match self {
            Prior::StandardNormal => z.iter_mut().for_each(|x| {
                let v: f64 = StandardNormal.sample(rng);
                *x = v as f32;
            }),
            Prior::FreeField(field) => {
                let mut sampler = field.sampler();
                let mut row = vec![0.0; z.ncols()];
                for mut out in z.outer_iter_mut() {
                    sampler.sample_into(rng, &mut row)?;
                    out.iter_mut().zip(&row).for_each(|(o, &v)| *o = v as f32);
                }
            }
        }
        Ok(())
    }

    /// log r(z) of every row, exactly normalised (`z` has one column per site).
    pub fn log_density_into(&self, z: ArrayView2<f32>, mut out: ArrayViewMut1<f64>) {
        match self {
            Prior::StandardNormal => {
                let norm = 0.5 * z.ncols() as f64 * (2.0 * std::f64::consts::PI).ln();
                for (row, o) in z.outer_iter().zip(out.iter_mut()) {
                    let sq: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
                    *o = -0.5 * sq - norm;
                }
            }
            Prior::FreeField(field) => {
                let mut buf = vec![0.0; z.ncols()];
                for (row, o) in z.outer_iter().zip(out.iter_mut()) {
                    buf.iter_mut()
                        .zip(row.iter())
                        .for_each(|(b, &x)| *b = x as f64);
                    *o = field.log_density(&buf);
                }
            }
        }
    }
}
