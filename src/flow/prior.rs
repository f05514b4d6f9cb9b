//! Latent distributions r(z) of a flow: the [`LatentPrior`] trait (sampling into a batch and
//! the exact normalised log-density of each row, in f64) and its built-in implementation
//! [`Prior`]: the standard normal and the exact free field.

use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand_distr::{Distribution, StandardNormal};

use crate::action::{Action, FreeField};
use crate::error::{Error, Result};
use crate::flow::recipe::PriorConfig;
use crate::lattice::Lattice;
use crate::rng::SimRng;

/// A latent distribution r(z) on the sites of a lattice, the starting point of a flow.
///
/// Batches are `[n, volume]` in f32, one configuration per row. The log-density must be
/// exactly normalised (∫ r(z) dz = 1) and evaluated in f64, since it enters every
/// log-weight log w = −S(φ) − log r(z) + log|det ∂f/∂z|. Both methods are fallible: a batch
/// of the wrong width is an [`Error::Shape`], never a panic.
///
/// A user's prior only implements these two methods:
///
/// ```
/// use latflow::flow::LatentPrior;
/// use latflow::{Error, Result, SimRng};
/// use ndarray::{ArrayView2, ArrayViewMut1, ArrayViewMut2};
/// use rand::RngExt;
///
/// /// Independent uniform variables on [−1, 1): r(z) = 2^−V on the box.
/// struct UniformBox;
///
/// impl LatentPrior for UniformBox {
///     fn sample_into(&self, mut z: ArrayViewMut2<f32>, rng: &mut SimRng) -> Result<()> {
///         z.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0f32));
///         Ok(())
///     }
///
///     fn log_density_into(&self, z: ArrayView2<f32>, mut out: ArrayViewMut1<f64>) -> Result<()> {
///         if out.len() != z.nrows() {
///             return Err(Error::Shape("one log-density per row".into()));
///         }
///         for (row, o) in z.outer_iter().zip(out.iter_mut()) {
///             let inside = row.iter().all(|x| x.abs() <= 1.0);
///             *o = if inside { -(row.len() as f64) * 2f64.ln() } else { f64::NEG_INFINITY };
///         }
///         Ok(())
///     }
/// }
/// # let mut z = ndarray::Array2::zeros((3, 4));
/// # UniformBox.sample_into(z.view_mut(), &mut latflow::rng_from_seed(1))?;
/// # let mut log_r = ndarray::Array1::zeros(3);
/// # UniformBox.log_density_into(z.view(), log_r.view_mut())?;
/// # assert!((log_r[0] + 4.0 * 2f64.ln()).abs() < 1e-12);
/// # Ok::<(), Error>(())
/// ```
pub trait LatentPrior: Send + Sync {
    /// Fills every row of `z` (`[n, volume]`) with an independent draw from r, using only
    /// `rng` (so that a seeded generator gives reproducible batches).
    fn sample_into(&self, z: ArrayViewMut2<f32>, rng: &mut SimRng) -> Result<()>;

    /// Writes the exact normalised log r(z) of every row of `z` into `out` (one entry per
    /// row).
    fn log_density_into(&self, z: ArrayView2<f32>, out: ArrayViewMut1<f64>) -> Result<()>;
}

/// The built-in latent distributions.
#[derive(Clone, Debug)]
pub enum Prior {
    /// Independent N(0, 1) at every site: log r(z) = −½ Σ_x z_x² − (|Λ|/2) log 2π.
    StandardNormal,
    /// The exact free field r(z) = e^{−S₀(z)}/Z₀ of a given bare mass, sampled by FFT.
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

    /// Checks a batch width: the free field needs one column per site of its lattice, the
    /// standard normal takes any width.
    fn check_width(&self, cols: usize) -> Result<()> {
        match self {
            Prior::StandardNormal => Ok(()),
            Prior::FreeField(field) => {
                let lattice = field.as_phi4().lattice();
                if cols == lattice.volume() {
                    Ok(())
                } else {
                    Err(Error::Shape(format!(
                        "latent batch has {cols} columns, the free-field prior on a {lattice} \
                         lattice needs {}",
                        lattice.volume()
                    )))
                }
            }
        }
    }
}

impl LatentPrior for Prior {
    fn sample_into(&self, mut z: ArrayViewMut2<f32>, rng: &mut SimRng) -> Result<()> {
        self.check_width(z.ncols())?;
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

    fn log_density_into(&self, z: ArrayView2<f32>, mut out: ArrayViewMut1<f64>) -> Result<()> {
        self.check_width(z.ncols())?;
        if out.len() != z.nrows() {
            return Err(Error::Shape(format!(
                "{} latent rows need {} log-densities, got room for {}",
                z.nrows(),
                z.nrows(),
                out.len()
            )));
        }
        match self {
            Prior::StandardNormal => {
                let norm = 0.5 * z.ncols() as f64 * (2.0 * std::f64::consts::PI).ln();
                for (row, o) in z.outer_iter().zip(out.iter_mut()) {
                    let sq: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
                    *o = -0.5 * sq - norm;
                }
            }
            Prior::FreeField(field) => {
                for (row, o) in z.outer_iter().zip(out.iter_mut()) {
                    *o = field.log_density_of(row);
                }
            }
        }
        Ok(())
    }
}
