//! Training settings: the batch, iterations, learning rate and its schedule, the optimiser,
//! the gradient estimator, and the evaluations and checks made along the way.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::optim::OptimizerKind;
use crate::train::schedule::Schedule;

/// How a training step estimates the gradient of the reverse KL
/// L(θ) = E_{z∼r}[S(φ) + log p̃_θ(φ)], φ = f_θ(z), from a batch φ_1 … φ_N.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradientEstimator {
    /// The total derivative of the batch loss L̂ = (1/N) Σ_n [S(φ_n) − ld_n] through the
    /// sample path: (1/N) Σ_n [∇S(φ_n)·∂φ_n/∂θ − ∂ld_n/∂θ]. One forward and one backward
    /// pass.
    #[default]
    Total,
    /// The path gradient (1/N) Σ_n [∇S(φ_n) + ∇_φ log p̃_θ(φ_n)]·∂φ_n/∂θ: the total
    /// derivative without the score term (1/N) Σ_n ∂_θ log p̃_θ(φ)|_{φ=φ_n}, whose
    /// expectation is zero. Both estimators are unbiased; the path gradient vanishes on
    /// every batch once p̃_θ equals the target, so its variance falls as the flow
    /// approaches it. The score ∇_φ log p̃_θ comes from
    /// [`TrainableFlow::forward_backward_scored`](crate::flow::TrainableFlow::forward_backward_scored), which costs about one more
    /// input-gradient pass through every conditioner.
    Path,
}

impl std::fmt::Display for GradientEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GradientEstimator::Total => "total",
            GradientEstimator::Path => "path",
        })
    }
}

/// Iterations between the acceptance checks of a run with a target acceptance
/// ([`TrainConfig::until_acceptance`]) and no `eval_every` of its own.
pub const DEFAULT_CHECK_INTERVAL: usize = 25;

/// Hyper-parameters of a training run. In a runcard every field is optional (defaults of
/// [`TrainConfig::default`]) and unknown fields are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Configurations per step.
    pub batch: usize,
    /// Total number of optimiser steps.
    pub iterations: usize,
    /// Initial learning rate η0.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Optimiser and its hyper-parameters.
    pub optimizer: OptimizerKind,
    /// Seed of the latent streams (one per row and step) and of the evaluation streams.
    pub seed: u64,
    /// Batch chunks of the data-parallel pass (0 = one per rayon thread), per process when
    /// the run is spread over ranks; the chunk count (and rank count) fixes the gradient's
    /// summation order, so results are reproducible for a given count. At most `batch`:
    /// every chunk holds at least one configuration (each chunk keeps a tape and a gradient
    /// of all parameters, so empty chunks would cost memory and time for nothing).
    pub chunks: usize,
    /// Evaluate every `eval_every` iterations (0 = never during training, unless a target
    /// acceptance is set: see `until_acceptance`).
    pub eval_every: usize,
    /// Samples of the final evaluation, and of the evaluations during training unless
    /// `check_samples` is set.
    pub eval_samples: usize,
    /// Samples of each evaluation during training (the `eval_every` evaluations and the
    /// acceptance checks of a run with a target); `None`: `eval_samples`. A smaller check
    /// sample costs less per check but reads the acceptance with a larger error, so a run
    /// with a target may stop on a check that overstates it by more (the final evaluation,
    /// with `eval_samples`, is unselected either way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_samples: Option<usize>,
    /// Target acceptance A ∈ (0, 1): training stops after the first evaluation whose
    /// acceptance reaches A, and `iterations` is only the budget (the learning-rate
    /// schedule still spans `iterations`, so the steps before the stop are those of a run
    /// without a target). Evaluations are made every `eval_every` iterations, or every
    /// [`DEFAULT_CHECK_INTERVAL`] when `eval_every` is 0. `None`: run every iteration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_acceptance: Option<f64>,
    /// The gradient estimator of every step.
    pub gradient: GradientEstimator,
    /// Seconds of training steps after which training ends as if its budget were spent:
    /// checked after every step (over several ranks: once any rank's clock has passed it),
    /// then the flow is evaluated and kept. The step at which a run stops then depends on
    /// the machine's speed, so such a run repeats bit for bit only up to that step.
    /// `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<f64>,
}

/// The fewest samples an evaluation may have (`eval_samples`, `check_samples`): below it the
/// acceptance is read to no better than about ±0.1 and τ_rej is infinite whenever no
/// proposal happens to be accepted.
pub const MIN_EVAL_SAMPLES: usize = 100;

/// Why evaluations need [`MIN_EVAL_SAMPLES`].
const TOO_FEW_SAMPLES: &str = "an evaluation of fewer samples reads the acceptance to no \
                               better than about ±0.1, and τ_rej is infinite whenever none of \
                               its proposals happens to be accepted";

impl Default for TrainConfig {
    /// `TrainConfig::new(500, 750, 0.01)`: the seed recipe's batch, iterations and learning
    /// rate at L = 8.
    fn default() -> Self {
        TrainConfig::new(500, 750, 0.01)
    }
}

impl TrainConfig {
    /// `batch` configurations per step for `iterations` steps from learning rate `lr`, with
    /// a cosine schedule, Adam, seed 0, one chunk per thread, no intermediate evaluation,
    /// 2000 samples for the final evaluation and no target acceptance.
    pub fn new(batch: usize, iterations: usize, lr: f64) -> Self {
        TrainConfig {
            batch,
            iterations,
            lr,
            schedule: Schedule::Cosine,
            optimizer: OptimizerKind::adam(),
            seed: 0,
            chunks: 0,
            eval_every: 0,
            eval_samples: 2000,
            check_samples: None,
            until_acceptance: None,
            gradient: GradientEstimator::Total,
            time_limit: None,
        }
    }

    /// Iterations between evaluations during training (0: none): `eval_every`, or
    /// [`DEFAULT_CHECK_INTERVAL`] for a run with a target acceptance and `eval_every` = 0.
    pub fn eval_interval(&self) -> usize {
        match (self.eval_every, self.until_acceptance) {
            (0, Some(_)) => DEFAULT_CHECK_INTERVAL,
            (every, _) => every,
        }
    }

    /// Samples of each evaluation during training: `check_samples`, else `eval_samples`.
    pub fn check_sample_size(&self) -> usize {
        self.check_samples.unwrap_or(self.eval_samples)
    }

    /// Checks every field (sizes against a flow and lattice are checked by [`Trainer::new`](crate::train::Trainer::new)).
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::param("batch", "must be at least 1"));
        }
        if self.iterations == 0 {
            return Err(Error::param("iterations", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::param(
                "lr",
                format!("must be positive and finite, got {}", self.lr),
            ));
        }
        if self.eval_samples < MIN_EVAL_SAMPLES {
            return Err(Error::param(
                "eval_samples",
                format!(
                    "must be at least {MIN_EVAL_SAMPLES}, got {}: {}",
                    self.eval_samples, TOO_FEW_SAMPLES
                ),
            ));
        }
        if let Some(n) = self.check_samples {
            if n < MIN_EVAL_SAMPLES {
                return Err(Error::param(
                    "check_samples",
                    format!("must be at least {MIN_EVAL_SAMPLES}, got {n}: {TOO_FEW_SAMPLES}"),
                ));
            }
            if self.eval_interval() == 0 {
                return Err(Error::param(
                    "check_samples",
                    "has no effect: it sizes the evaluations during training, and there are \
                     none (eval_every = 0 and no until_acceptance); the final evaluation takes \
                     eval_samples",
                ));
            }
        }
        if self.chunks > self.batch {
            return Err(Error::param(
                "chunks",
                format!(
                    "{} chunks for a batch of {}: every chunk needs at least one \
                     configuration, so chunks must be at most batch (0: one per thread)",
                    self.chunks, self.batch
                ),
            ));
        }
        if let Some(target) = self.until_acceptance
            && !(target > 0.0 && target < 1.0)
        {
            return Err(Error::param(
                "until_acceptance",
                format!("must be strictly between 0 and 1, got {target}"),
            ));
        }
        if let Some(limit) = self.time_limit
            && !(limit > 0.0 && limit.is_finite())
        {
            return Err(Error::param(
                "time_limit",
                format!("must be a positive number of seconds, got {limit}"),
            ));
        }
        self.schedule.validate()?;
        self.optimizer.validate()
    }
}
