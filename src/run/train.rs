//! Flow training runs: a [`TrainSpec`] in (lattice, action, recipe, optimisation), a trained
//! model file and a [`TrainReport`] out.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ActionSpec;
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowConfig, FlowModel, TransformKind};
use crate::lattice::Lattice;
use crate::train::{StepMetrics, TrainConfig, Trainer};

/// Which flow recipe (docs/flows.md#recipes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeKind {
    /// Z2-equivariant affine blocks, then one rational-quadratic-spline block.
    Seed,
    /// Affine blocks only.
    RealNvp,
    /// Additive blocks only (enough for the free field).
    Additive,
    /// Z2-equivariant affine blocks only.
    Z2Affine,
    /// Z2-equivariant affine blocks with convolutional nets.
    Conv,
}

/// A flow recipe and its sizes; only the fields the kind uses are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeSpec {
    /// The recipe.
    pub kind: RecipeKind,
    /// Hidden width of the dense nets (0: |Λ|).
    pub hidden: usize,
    /// Hidden layers of the dense nets (real-nvp and additive).
    pub depth: usize,
    /// Affine (or additive, or convolutional) blocks.
    pub affine_blocks: usize,
    /// Spline segments K of the seed recipe's RQS block.
    pub segments: usize,
    /// Hidden channels of the convolutional nets.
    pub channels: usize,
    /// Convolution kernel size.
    pub kernel: usize,
}

impl Default for RecipeSpec {
    fn default() -> Self {
        RecipeSpec {
            kind: RecipeKind::Seed,
            hidden: 0,
            depth: 1,
            affine_blocks: 2,
            segments: 8,
            channels: 8,
            kernel: 3,
        }
    }
}

impl RecipeSpec {
    /// The flow configuration this recipe describes on `lattice`.
    pub fn build(&self, lattice: &Lattice) -> Result<FlowConfig> {
        if self.affine_blocks == 0 && self.kind != RecipeKind::Seed {
            return Err(Error::param("affine_blocks", "must be at least 1"));
        }
        if self.depth == 0 {
            return Err(Error::param("depth", "must be at least 1"));
        }
        let hidden = if self.hidden == 0 {
            FlowConfig::default_hidden(lattice)
        } else {
            self.hidden
        };
        let widths = vec![hidden; self.depth];
        Ok(match self.kind {
            RecipeKind::Seed => FlowConfig::seed(hidden, self.affine_blocks, self.segments)?,
            RecipeKind::RealNvp => FlowConfig::real_nvp(self.affine_blocks, &widths),
            RecipeKind::Additive => FlowConfig::additive(self.affine_blocks, &widths),
            RecipeKind::Z2Affine => FlowConfig::z2_affine(self.affine_blocks, hidden),
            RecipeKind::Conv => FlowConfig::convolutional(
                TransformKind::Z2Affine,
                self.affine_blocks,
                &vec![self.channels; self.depth],
                self.kernel,
            ),
        })
    }
}

/// Coupling annealing: the hopping coupling starts at `start` × its target and reaches the
/// target after a fraction `over` of the iterations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnealSpec {
    /// Starting fraction of the target hopping coupling (0 ≤ start ≤ 1).
    pub start: f64,
    /// Fraction of training over which the coupling ramps up (0 < over ≤ 1).
    pub over: f64,
}

impl AnnealSpec {
    /// The coupling factor at training progress `t` ∈ [0, 1].
    pub fn factor(&self, t: f64) -> f64 {
        let ramp = (t / self.over).clamp(0.0, 1.0);
        self.start + (1.0 - self.start) * ramp
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.start) {
            return Err(Error::param(
                "anneal.start",
                format!("must be in [0, 1], got {}", self.start),
            ));
        }
        if !(self.over > 0.0 && self.over <= 1.0) {
            return Err(Error::param(
                "anneal.over",
                format!("must be in (0, 1], got {}", self.over),
            ));
        }
        Ok(())
    }
}

/// A complete training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The lattice.
    pub lattice: Lattice,
    /// The target action.
    pub action: ActionSpec,
    /// The flow recipe.
    #[serde(default)]
    pub recipe: RecipeSpec,
    /// Batch, iterations, learning rate, schedule, optimiser, seed, evaluation.
    pub train: TrainConfig,
    /// Optional coupling annealing.
    #[serde(default)]
    pub anneal: Option<AnnealSpec>,
    /// Where the trained model is written.
    pub out: PathBuf,
}

/// What a training run achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Lattice extents.
    pub lattice: Vec<usize>,
    /// The target action.
    pub action: ActionSpec,
    /// The recipe.
    pub recipe: RecipeSpec,
    /// Trainable parameters.
    pub n_params: usize,
    /// Iterations made.
    pub iterations: usize,
    /// Configurations generated for training, |Φ_train| = Σ batch sizes.
    pub configs_seen: u64,
    /// Wall seconds of training (the final evaluation excluded).
    pub seconds: f64,
    /// Training configurations per second.
    pub configs_per_second: f64,
    /// The last loss.
    pub final_loss: f64,
    /// Independence-Metropolis acceptance on a fresh test sample.
    pub acceptance: f64,
    /// Effective sample size fraction of the test sample.
    pub ess: f64,
    /// τ_rej of the test chain.
    pub tau_rej: f64,
    /// Mean of log w = −S − log p̃ (a lower bound on log Z).
    pub mean_log_w: f64,
    /// Variance of log w.
    pub var_log_w: f64,
    /// Fraction of test samples with M > 0 (½ unless a Z2 mode is lost).
    pub fraction_positive_m: f64,
    /// The model file written.
    pub model: PathBuf,
}

/// Trains a flow as `spec` says, calling `observer` after every iteration, and writes the
/// model (with the action in its metadata) atomically to `spec.out`.
pub fn train(spec: &TrainSpec, observer: &mut dyn FnMut(&StepMetrics)) -> Result<TrainReport> {
    spec.train.validate()?;
    if let Some(a) = &spec.anneal {
        a.validate()?;
    }
    let action = Arc::new(spec.action.build(&spec.lattice)?);
    let config = spec.recipe.build(&spec.lattice)?;
    let model = FlowModel::new(&config, &spec.lattice, spec.train.seed)?;
    let n_params = model.n_params();
    let mut trainer = Trainer::new(model, action.clone(), spec.train.clone())?;
    if let Some(anneal) = spec.anneal {
        let target = action.clone();
        trainer = trainer.with_annealing(Box::new(move |t| {
            target.with_scaled_hopping(anneal.factor(t))
        }));
    }
    let summary = trainer.train(observer)?;
    let mut model = trainer.into_model();
    let action_json =
        serde_json::to_value(spec.action).map_err(|e| Error::format("action", e.to_string()))?;
    model.metadata_mut().insert("action".into(), action_json);
    model.save(&spec.out)?;
    let e = summary.eval;
    Ok(TrainReport {
        lattice: spec.lattice.extents().to_vec(),
        action: spec.action,
        recipe: spec.recipe.clone(),
        n_params,
        iterations: summary.iterations,
        configs_seen: summary.configs_seen,
        seconds: summary.seconds,
        configs_per_second: summary.configs_seen as f64 / summary.seconds.max(1e-12),
        final_loss: summary.final_loss,
        acceptance: e.acceptance,
        ess: e.ess,
        tau_rej: e.tau_rej,
        mean_log_w: e.mean_log_w,
        var_log_w: e.var_log_w,
        fraction_positive_m: e.fraction_positive_m,
        model: spec.out.clone(),
    })
}

/// The lattice and action a model file was trained for (from its metadata).
pub fn model_target(path: &std::path::Path) -> Result<(Lattice, ActionSpec)> {
    let model = FlowModel::load(path)?;
    let action = model
        .metadata()
        .get("action")
        .ok_or_else(|| {
            Error::Incompatible(format!(
                "model file {} does not record the action it was trained for",
                path.display()
            ))
        })
        .and_then(|v| {
            serde_json::from_value::<ActionSpec>(v.clone()).map_err(|e| {
                Error::format(
                    format!("action in model file {}", path.display()),
                    e.to_string(),
                )
            })
        })?;
    Ok((model.lattice().clone(), action))
}
