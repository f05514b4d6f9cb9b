//! Optimisers over one flat parameter vector: Adam and AdamW (decoupled weight decay).
//!
//! The state (moments and step count) is serialisable so that a checkpointed run resumes
//! bit for bit.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Parameters per parallel task of an update.
const UPDATE_BLOCK: usize = 8192;

/// Which optimiser, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (β1, β2, ε).
    Adam {
        /// Decay of the first moment (0.9).
        beta1: f64,
        /// Decay of the second moment (0.999).
        beta2: f64,
        /// Denominator regulator (1e−8).
        eps: f64,
    },
    /// AdamW: Adam with weight decay applied directly to the parameters.
    AdamW {
        /// Decay of the first moment (0.9).
        beta1: f64,
        /// Decay of the second moment (0.999).
        beta2: f64,
        /// Denominator regulator (1e−8).
        eps: f64,
        /// Decoupled weight-decay coefficient (multiplied by the learning rate).
        weight_decay: f64,
    },
}

impl OptimizerKind {
    /// Adam with the standard hyper-parameters (0.9, 0.999, 1e−8).
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// AdamW with the standard hyper-parameters and the given weight decay.
    pub fn adamw(weight_decay: f64) -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    fn moments(&self) -> (f64, f64, f64, f64) {
        match *self {
            OptimizerKind::Adam { beta1, beta2, eps } => (beta1, beta2, eps, 0.0),
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => (beta1, beta2, eps, weight_decay),
        }
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let (b1, b2, eps, wd) = self.moments();
        for (name, v) in [("beta1", b1), ("beta2", b2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::param(name, format!("must be in [0, 1), got {v}")));
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::param("eps", format!("must be positive, got {eps}")));
        }
        if !(wd >= 0.0 && wd.is_finite()) {
            return Err(Error::param(
                "weight_decay",
                format!("must be ≥ 0, got {wd}"),
            ));
        }
        Ok(())
    }
}

/// The running state of an Adam-type optimiser for one parameter vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optimizer {
    kind: OptimizerKind,
    step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Optimizer {
    /// A fresh optimiser for `n_params` parameters.
    pub fn new(kind: OptimizerKind, n_params: usize) -> Result<Self> {
        kind.validate()?;
        Ok(Optimizer {
            kind,
            step: 0,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
        })
    }

    /// The optimiser's kind and hyper-parameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Number of parameters this optimiser was made for.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Checks a restored state: both moments of one length, finite, the second ≥ 0.
    pub(crate) fn check_state(&self) -> Result<()> {
        if self.m.len() != self.v.len() {
            return Err(Error::Shape(format!(
                "optimiser moments of {} and {} entries",
                self.m.len(),
                self.v.len()
            )));
        }
        if !self.m.iter().all(|x| x.is_finite())
            || !self.v.iter().all(|x| x.is_finite() && *x >= 0.0)
        {
            return Err(Error::NonFinite("optimiser moments".into()));
        }
        self.kind.validate()
    }

    /// True for an optimiser of zero parameters.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// One update of `params` with gradient `grad` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grad: &[f32], lr: f64) -> Result<()> {
        if params.len() != self.m.len() || grad.len() != self.m.len() {
            return Err(Error::Shape(format!(
                "optimiser has {} parameters, got {} parameters and {} gradients",
                self.m.len(),
                params.len(),
                grad.len()
            )));
        }
        let (b1, b2, eps, wd) = self.kind.moments();
        self.step += 1;
        let t = self.step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        let step_size = (lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let decay = (1.0 - lr * wd) as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, eps as f32);
        // Element-wise, so splitting across threads cannot change a single bit.
        params
            .par_chunks_mut(UPDATE_BLOCK)
            .zip(grad.par_chunks(UPDATE_BLOCK))
            .zip(self.m.par_chunks_mut(UPDATE_BLOCK))
            .zip(self.v.par_chunks_mut(UPDATE_BLOCK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p = *p * decay - step_size * *m / ((*v).sqrt() * inv_sqrt_bc2 + eps);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first Adam step moves every parameter by lr·sign(g) (bias correction makes
    /// m̂ = g and v̂ = g², up to ε).
    #[test]
    fn first_adam_step_is_lr_times_sign() {
        let mut opt = Optimizer::new(OptimizerKind::adam(), 3).unwrap();
        let mut p = [1.0f32, -2.0, 0.5];
        opt.update(&mut p, &[0.3, -4.0, 1e-3], 0.01).unwrap();
        let expected = [0.99f32, -1.99, 0.49];
        for (a, b) in p.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// Adam minimises a quadratic bowl; AdamW with decay shrinks a flat direction.
    #[test]
    fn adam_minimises_quadratic_and_adamw_decays() {
        let mut opt = Optimizer::new(OptimizerKind::adam(), 2).unwrap();
        let mut p = [3.0f32, -1.5];
        for _ in 0..2000 {
            let g = [2.0 * p[0], 20.0 * p[1]];
            opt.update(&mut p, &g, 0.01).unwrap();
        }
        assert!(p[0].abs() < 1e-2 && p[1].abs() < 1e-2, "{p:?}");

        let mut opt = Optimizer::new(OptimizerKind::adamw(0.5), 1).unwrap();
        let mut q = [1.0f32];
        for _ in 0..100 {
            opt.update(&mut q, &[0.0], 0.1).unwrap();
        }
        let expected = (1.0f64 - 0.1 * 0.5).powi(100) as f32;
        assert!((q[0] - expected).abs() < 1e-5, "{} vs {expected}", q[0]);
    }

    #[test]
    fn bad_hyper_parameters_and_shapes_are_refused() {
        assert!(Optimizer::new(OptimizerKind::adamw(-1.0), 1).is_err());
        let bad = OptimizerKind::Adam {
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
        };
        assert!(Optimizer::new(bad, 1).is_err());
        let mut opt = Optimizer::new(OptimizerKind::adam(), 2).unwrap();
        assert!(opt.update(&mut [0.0], &[0.0], 0.1).is_err());
    }
}
