//! Latent distributions r(z) of a flow: sampling into a batch and the exact normalised
//! log-density of each row, in f64.

use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::flow::recipe::PriorConfig;

/// A latent distribution on `volume` sites.
#[derive(Clone, Debug)]
pub enum Prior {
    /// Independent N(0, 1) at every site.
    StandardNormal,
}

impl Prior {
    pub(crate) fn new(config: &PriorConfig) -> Self {
        match config {
            PriorConfig::StandardNormal => Prior::StandardNormal,
        }
    }

    /// Fills every row of `z` with an independent draw.
    pub fn sample_into<R: Rng + ?Sized>(&self, mut z: ArrayViewMut2<f32>, rng: &mut R) {
        match self {
            Prior::StandardNormal => z.iter_mut().for_each(|x| {
                let v: f64 = StandardNormal.sample(rng);
                *x = v as f32;
            }),
        }
    }

    /// log r(z) of every row, exactly normalised.
    pub fn log_density_into(&self, z: ArrayView2<f32>, mut out: ArrayViewMut1<f64>) {
        match self {
            Prior::StandardNormal => {
                let norm = 0.5 * z.ncols() as f64 * (2.0 * std::f64::consts::PI).ln();
                for (row, o) in z.outer_iter().zip(out.iter_mut()) {
                    let sq: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
                    *o = -0.5 * sq - norm;
                }
            }
        }
    }
}
