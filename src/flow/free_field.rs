//! The free-field layer: a learnable Gaussian map diagonal in momentum space,
//!
//! φ = F⁻¹ diag(σ) F z,   σ(p) = σ(−p) > 0,   log|det ∂φ/∂z| = Σ_p log σ(p),
//!
//! applied by FFT. It is linear, so it commutes with φ → −φ; it is a convolution, so it
//! commutes with every lattice translation; and σ depends on p only through its class
//! under the lattice's reflections and the permutations of equally long axes, so it also
//! commutes with those. Two parametrisations ([`Spectrum`]): one log σ per class of
//! momenta (as many parameters as classes, about |Λ|/8 in two dimensions), or a mass and a
//! normalisation, σ(p)² = Z/(p̂² + m²) (two parameters on any lattice).

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ensure_finite};
use crate::flow::Real;
use crate::flow::layers::FlowFloat;
use crate::flow::net::ParamBuilder;
use crate::lattice::Lattice;
use crate::tape::{FourierPlan, Tape, Var};

/// How a free-field layer parametrises σ(p).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spectrum {
    /// One parameter log σ per class of momenta (see [`momentum_classes`]), starting at
    /// σ(p)² = 1/(p̂² + m0²) (the free field of mass² `m0sq`), or at σ = 1 (the identity)
    /// without a mass. The parameter count depends on the lattice.
    Classes {
        /// The initial mass², if any (> 0).
        #[serde(default)]
        m0sq: Option<f64>,
    },
    /// σ(p)² = Z/(p̂² + m²) with the parameters (log m², log Z), starting at m² = `m0sq`,
    /// Z = `z`. Two parameters on any lattice.
    Mass {
        /// The initial mass² (> 0).
        m0sq: f64,
        /// The initial normalisation Z (> 0).
        z: f64,
    },
}

/// A free-field layer in a flow configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreeFieldConfig {
    /// The parametrisation of σ(p).
    pub spectrum: Spectrum,
}

impl FreeFieldConfig {
    /// One parameter per class of momenta, starting at the free field of mass² `m0sq`
    /// (`None`: at the identity).
    pub fn classes(m0sq: Option<f64>) -> Self {
        FreeFieldConfig {
            spectrum: Spectrum::Classes { m0sq },
        }
    }

    /// A learnable mass and normalisation, starting at σ(p)² = z/(p̂² + m0²).
    pub fn mass(m0sq: f64, z: f64) -> Self {
        FreeFieldConfig {
            spectrum: Spectrum::Mass { m0sq, z },
        }
    }
}

/// Which free-field layer a recipe puts in front, with the recipes' initial values: one σ
/// per class starting at the identity, or the mass form starting at σ(p)² = 1/(p̂² + 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FreeFieldKind {
    /// No free-field layer.
    #[default]
    None,
    /// One σ per class of momenta (the parameter count depends on the lattice).
    Classes,
    /// A learnable mass and normalisation (two parameters on any lattice).
    Mass,
}

impl FreeFieldKind {
    /// The layer's configuration, if any.
    pub fn config(self) -> Option<FreeFieldConfig> {
        match self {
            FreeFieldKind::None => None,
            FreeFieldKind::Classes => Some(FreeFieldConfig::classes(None)),
            FreeFieldKind::Mass => Some(FreeFieldConfig::mass(1.0, 1.0)),
        }
    }
}

/// The class of every momentum mode (numbered like sites: mode n has coordinates n_μ), and
/// the number of classes: two modes share a class when one is the other up to reflections
/// n_μ → −n_μ and permutations of axes of equal extent. Classes are numbered in the order
/// their first mode appears.
pub fn momentum_classes(lattice: &Lattice) -> (Vec<u32>, usize) {
    let d = lattice.dim();
    let ext = lattice.extents();
    let mut ids: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    let mut classes = Vec::with_capacity(lattice.volume());
    let mut n = vec![0usize; d];
    for p in 0..lattice.volume() {
        lattice.coords(p, &mut n);
        let mut key: Vec<(usize, usize)> = (0..d)
            .map(|mu| (ext[mu], n[mu].min(ext[mu] - n[mu])))
            .collect();
        key.sort_unstable();
        let key: Vec<usize> = key.into_iter().flat_map(|(l, k)| [l, k]).collect();
        let next = ids.len() as u32;
        classes.push(*ids.entry(key).or_insert(next));
    }
    (classes, ids.len())
}

/// A free-field layer on one lattice (see the module documentation), its parameters at
/// `offset` in the flow's parameter vector.
#[derive(Clone, Debug)]
pub struct FreeFieldLayer {
    lattice: Lattice,
    plan: Arc<FourierPlan>,
    spectrum: Spectrum,
    offset: usize,
    n_params: usize,
    /// Classes: the class of each momentum; mass: all zeros (the mass parameter at every
    /// momentum).
    index: Arc<[u32]>,
    /// p̂² per momentum.
    phat2: Arc<[f64]>,
}

impl FreeFieldLayer {
    /// The layer `config` describes on `lattice`, its parameters allocated in `params`.
    /// Refused: a non-positive or non-finite initial mass or normalisation.
    pub fn new(
        config: &FreeFieldConfig,
        lattice: &Lattice,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        let phat2: Arc<[f64]> = lattice.phat2_table().into();
        let positive = |name: &str, v: f64| -> Result<()> {
            ensure_finite(name, v)?;
            if v > 0.0 {
                Ok(())
            } else {
                Err(Error::param(name, format!("must be positive, got {v}")))
            }
        };
        let (index, n_params, initial): (Arc<[u32]>, usize, Vec<f32>) = match &config.spectrum {
            Spectrum::Classes { m0sq } => {
                if let Some(m) = m0sq {
                    positive("m0sq", *m)?;
                }
                let (classes, n) = momentum_classes(lattice);
                let mut init = vec![0.0f32; n];
                if let Some(m) = m0sq {
                    for (&c, &p2) in classes.iter().zip(phat2.iter()) {
                        init[c as usize] = (-0.5 * (p2 + m).ln()) as f32;
                    }
                }
                (classes.into(), n, init)
            }
            Spectrum::Mass { m0sq, z } => {
                positive("m0sq", *m0sq)?;
                positive("z", *z)?;
                let index = vec![0u32; lattice.volume()];
                (index.into(), 2, vec![m0sq.ln() as f32, z.ln() as f32])
            }
        };
        let block = params.zeros(1, n_params);
        if !params.is_over_capacity() {
            params.set(block, &initial)?;
        }
        Ok(FreeFieldLayer {
            lattice: lattice.clone(),
            plan: Arc::new(FourierPlan::new(lattice.extents())?),
            spectrum: config.spectrum.clone(),
            offset: block.offset,
            n_params,
            index,
            phat2,
        })
    }

    /// The lattice the layer acts on.
    pub fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    /// The parametrisation.
    pub fn spectrum(&self) -> &Spectrum {
        &self.spectrum
    }

    /// Position of the first parameter and the number of parameters.
    pub fn params_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.n_params
    }

    /// log σ(p) of every momentum (numbered like sites) with `params`, into `out`.
    pub fn log_sigma<T: Real>(&self, params: &[T], out: &mut [T]) {
        let p = &params[self.offset..self.offset + self.n_params];
        match self.spectrum {
            Spectrum::Classes { .. } => {
                for (o, &c) in out.iter_mut().zip(self.index.iter()) {
                    *o = p[c as usize];
                }
            }
            Spectrum::Mass { .. } => {
                let half = T::from_f64(0.5).unwrap_or_else(T::nan);
                let mass = p[0].exp();
                for (o, &p2) in out.iter_mut().zip(self.phat2.iter()) {
                    let p2 = T::from_f64(p2).unwrap_or_else(T::nan);
                    *o = half * (p[1] - (p2 + mass).ln());
                }
            }
        }
    }

    /// log|det| = Σ_p log σ(p), summed in f64 from the parameters.
    pub fn log_det(&self, params: &[impl Real]) -> f64 {
        let p = |i: usize| params[self.offset + i].to_f64().unwrap_or(f64::NAN);
        match self.spectrum {
            Spectrum::Classes { .. } => self.index.iter().map(|&c| p(c as usize)).sum(),
            Spectrum::Mass { .. } => {
                let (mass, log_z) = (p(0).exp(), p(1));
                self.phat2
                    .iter()
                    .map(|p2| 0.5 * (log_z - (p2 + mass).ln()))
                    .sum()
            }
        }
    }

    /// Records z → φ on the tape; returns φ and the log-det of every row (`[n, 1]`).
    pub fn build<T: Real>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> (Var, Var) {
        let log_sigma = match self.spectrum {
            Spectrum::Classes { .. } => tape.param_gather(params, self.offset, &self.index),
            Spectrum::Mass { .. } => {
                // log σ = ½ (log Z − ln(p̂² + m²)) with m² = e^{θ₀}, Z = e^{θ₁}.
                let v = self.index.len();
                let log_mass = tape.param_gather(params, self.offset, &self.index);
                let mass = tape.exp(log_mass);
                let phat2 = tape.constant(1, v, &self.phat2);
                let denominator = tape.add(phat2, mass);
                let log_d = tape.ln(denominator);
                let half = T::from_f64(-0.5).unwrap_or_else(T::nan);
                let s = tape.scale(log_d, half);
                tape.add_param(params, s, self.offset + 1, -half)
            }
        };
        tape.fourier_scale(x, log_sigma, &self.plan)
    }

    /// φ → z in place on every row of `x`, subtracting the log-det from `logdet`;
    /// `buffers` are scratch.
    pub(crate) fn invert<T: FlowFloat>(
        &self,
        params: &[T],
        x: &mut Array2<T>,
        logdet: &mut Array1<f64>,
        buffers: &mut FreeFieldScratch<T>,
    ) {
        self.apply(params, x, true, buffers);
        let ld = self.log_det(params);
        logdet.mapv_inplace(|l| l - ld);
    }

    /// x ← F⁻¹ diag(σ^{±1}) F x on every row (σ⁻¹ if `inverse`).
    pub(crate) fn apply<T: FlowFloat>(
        &self,
        params: &[T],
        x: &mut Array2<T>,
        inverse: bool,
        buffers: &mut FreeFieldScratch<T>,
    ) {
        buffers.log_sigma.resize(self.index.len(), T::zero());
        self.log_sigma(params, &mut buffers.log_sigma);
        let rows = x.as_slice_mut().expect("standard layout");
        self.plan
            .apply(rows, &buffers.log_sigma, inverse, &mut buffers.transform);
    }
}

/// Buffers a free-field layer reuses outside the tape.
pub(crate) struct FreeFieldScratch<T> {
    log_sigma: Vec<T>,
    transform: Vec<T>,
}

impl<T> Default for FreeFieldScratch<T> {
    fn default() -> Self {
        FreeFieldScratch {
            log_sigma: Vec::new(),
            transform: Vec::new(),
        }
    }
}
