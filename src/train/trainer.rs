//! The reverse-KL [`Trainer`] of any [`TrainableFlow`]: fresh latent batches from a seeded
//! stream, the loss L = mean[S(φ) − log det] back-propagated through the flow from the
//! action's force (see [`TrainableFlow`] for the gradient seed; [`GradientEstimator`] for
//! the path gradient, which adds the flow's score and drops the log-det seed), an
//! Adam-type update with a scheduled learning rate, optional coupling annealing, short
//! independent evaluations (acceptance, ESS, τ_rej, lost-Z2-mode check) and checkpoints.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rand::RngExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::control::{Metric, Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::{ChunkSeed, Flow, FlowModel, LayerRegistry, TrainableFlow, ensure_same_lattice};
use crate::parallel::{Collective, SingleProcess, share};
use crate::rng::{SimRng, splitmix64, stream};
use crate::stats::{ess_fraction, rejection_autocorrelation};
use crate::train::checkpoint::Checkpoint;
use crate::train::optim::{Optimizer, OptimizerKind};
use crate::train::schedule::Schedule;

/// Index offset of the evaluation streams derived from the training seed (kept apart from
/// the training stream, so evaluating never changes the training trajectory).
const EVAL_STREAM_BASE: u64 = 1 << 32;

/// Index offset of the stream of the final evaluation of a run stopped at its target
/// acceptance, so that it does not redraw the sample of the check that stopped the run.
const FINAL_STREAM_BASE: u64 = 2 << 32;

/// Separates the seeds of the latent rows from the other streams derived from the seed.
const LATENT_SALT: u64 = 0x4C41_5445_4E54_5321;

/// The stream of row `row` of the latent batch of iteration `iteration`. Each row has its
/// own stream, so a batch is the same however it is split into chunks or over ranks.
fn latent_stream(seed: u64, iteration: usize, row: usize) -> SimRng {
    let key = splitmix64(seed ^ LATENT_SALT) ^ splitmix64(iteration as u64);
    stream(key, row as u64)
}

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
    /// [`TrainableFlow::forward_backward_scored`], which costs about one more
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

    /// Checks every field (sizes against a flow and lattice are checked by [`Trainer::new`]).
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
        if self.eval_samples < 2 {
            return Err(Error::param(
                "eval_samples",
                format!("must be at least 2, got {}", self.eval_samples),
            ));
        }
        if let Some(n) = self.check_samples
            && n < 2
        {
            return Err(Error::param(
                "check_samples",
                format!("must be at least 2, got {n}"),
            ));
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

/// A short independent test of a flow against its target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Acceptance of an independence Metropolis chain over the samples.
    pub acceptance: f64,
    /// Effective sample size fraction of the importance weights, in (0, 1].
    pub ess: f64,
    /// Mean of log w = −S − log p̃ (a lower bound on log Z).
    pub mean_log_w: f64,
    /// Variance of log w (0 for a perfect flow).
    pub var_log_w: f64,
    /// Rejection-based integrated autocorrelation time of that chain (∞ if nothing was
    /// accepted).
    pub tau_rej: f64,
    /// Fraction of samples with positive magnetisation (½ unless a Z2 mode was lost).
    pub fraction_positive_m: f64,
}

/// What one training step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step's index (0-based).
    pub iteration: usize,
    /// Batch mean of S − log det.
    pub loss: f64,
    /// Batch variance of S − log det.
    pub loss_var: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Configurations generated so far, |Φ_train|, including this step.
    pub configs_seen: u64,
    /// Wall-clock seconds of the training steps so far (evaluations excluded).
    pub seconds: f64,
    /// The evaluation made after this step, if one was due.
    pub eval: Option<EvalMetrics>,
}

/// The names under which [`StepMetrics::metrics`] reports a step.
const STEP_METRICS: [&str; 11] = [
    "loss",
    "acceptance",
    "ess",
    "loss variance",
    "learning rate",
    "configurations",
    "seconds",
    "mean log w",
    "variance log w",
    "tau_rej",
    "fraction m > 0",
];

impl StepMetrics {
    /// The step's figures as an [`Observer`] sees them: the loss and, when an evaluation
    /// was made, its acceptance and ESS as headline metrics; every other number of the step
    /// and its evaluation as detail metrics, so that [`StepMetrics::from_metrics`] gives the
    /// step back.
    pub fn metrics(&self) -> Vec<Metric<'static>> {
        let n = STEP_METRICS;
        let mut metrics = vec![Metric::new(n[0], self.loss)];
        if let Some(e) = &self.eval {
            metrics.push(Metric::new(n[1], e.acceptance));
            metrics.push(Metric::new(n[2], e.ess));
        }
        metrics.extend([
            Metric::detail(n[3], self.loss_var),
            Metric::detail(n[4], self.lr),
            Metric::detail(n[5], self.configs_seen as f64),
            Metric::detail(n[6], self.seconds),
        ]);
        if let Some(e) = &self.eval {
            metrics.extend([
                Metric::detail(n[7], e.mean_log_w),
                Metric::detail(n[8], e.var_log_w),
                Metric::detail(n[9], e.tau_rej),
                Metric::detail(n[10], e.fraction_positive_m),
            ]);
        }
        metrics
    }

    /// The step an [`Observer`] was shown as iteration `done` (1-based) with `metrics`
    /// (see [`StepMetrics::metrics`]); `None` when they are not a training step's.
    pub fn from_metrics(done: u64, metrics: &[Metric<'_>]) -> Option<StepMetrics> {
        let get = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
        let n = STEP_METRICS;
        let eval = match get(n[1]) {
            Some(acceptance) => Some(EvalMetrics {
                acceptance,
                ess: get(n[2])?,
                mean_log_w: get(n[7])?,
                var_log_w: get(n[8])?,
                tau_rej: get(n[9])?,
                fraction_positive_m: get(n[10])?,
            }),
            None => None,
        };
        Some(StepMetrics {
            iteration: usize::try_from(done.checked_sub(1)?).ok()?,
            loss: get(n[0])?,
            loss_var: get(n[3])?,
            lr: get(n[4])?,
            configs_seen: get(n[5])? as u64,
            seconds: get(n[6])?,
            eval,
        })
    }
}

/// The outcome of [`Trainer::train`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps made in total.
    pub iterations: usize,
    /// Configurations generated in total for training, |Φ_train|.
    pub configs_seen: u64,
    /// Wall-clock seconds of the training steps (evaluations excluded).
    pub seconds: f64,
    /// Wall-clock seconds of the evaluations made during training (the final one
    /// excluded).
    pub eval_seconds: f64,
    /// Configurations sampled by the evaluations made during training (the final one
    /// excluded), not counted in `configs_seen`.
    pub eval_configs: u64,
    /// Wall seconds of the training steps spent waiting for the slowest rank, measured as
    /// the two-number loss sum that precedes the gradient sum (part of `seconds`; 0 for one
    /// process).
    pub wait_seconds: f64,
    /// Wall seconds of the training steps spent summing the gradient over ranks, once they
    /// are in step (part of `seconds`; 0 for one process).
    pub communication_seconds: f64,
    /// Whether the target acceptance was reached (`None` without a target).
    pub reached_target: Option<bool>,
    /// Whether training ended at its time limit ([`TrainConfig::time_limit`]) before its
    /// budget or target.
    #[serde(default)]
    pub ran_out_of_time: bool,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Final evaluation with `eval_samples` samples.
    pub eval: EvalMetrics,
}

/// Coupling annealing: the action to train against at progress t ∈ [0, 1).
pub type AnnealFn<A> = Box<dyn Fn(f64) -> Result<A> + Send + Sync>;

thread_local! {
    /// Per-thread f64 copies of one row and its force, reused by the gradient seed.
    static ROW_SCRATCH: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Trains a flow (a [`FlowModel`] or any other [`TrainableFlow`]) by reverse KL against an
/// [`Action`].
pub struct Trainer<F: TrainableFlow, A: Action> {
    pub(crate) model: F,
    action: Arc<A>,
    pub(crate) config: TrainConfig,
    pub(crate) optimizer: Optimizer,
    ranks: Arc<dyn Collective>,
    pub(crate) counters: Counters,
    anneal: Option<AnnealFn<A>>,
    workspace: F::Workspace,
    latent: Array2<f32>,
    grad: Vec<f32>,
}

impl<F: TrainableFlow, A: Action + 'static> Trainer<F, A> {
    /// A trainer for `model` against `action`; checks the configuration and that model and
    /// action live on the same lattice.
    pub fn new(model: F, action: Arc<A>, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let volume = action.lattice().volume();
        check_training_size(&model, volume, &config, chunk_count(&config))?;
        let optimizer = Optimizer::new(config.optimizer, model.n_params())?;
        Self::assemble(model, action, config, optimizer, Counters::default())
    }

    pub(crate) fn assemble(
        model: F,
        action: Arc<A>,
        config: TrainConfig,
        optimizer: Optimizer,
        counters: Counters,
    ) -> Result<Self> {
        ensure_same_lattice(&model, &*action)?;
        if optimizer.len() != model.n_params() {
            return Err(Error::Incompatible(format!(
                "optimiser state for {} parameters, the flow has {}",
                optimizer.len(),
                model.n_params()
            )));
        }
        let volume = action.lattice().volume();
        let chunks = chunk_count(&config);
        check_training_size(&model, volume, &config, chunks)?;
        let workspace = model.workspace(chunks);
        Ok(Trainer {
            latent: Array2::zeros((config.batch, volume)),
            grad: vec![0.0; model.n_params()],
            model,
            action,
            config,
            optimizer,
            ranks: Arc::new(SingleProcess),
            counters,
            anneal: None,
            workspace,
        })
    }

    /// Spreads training over the processes of `ranks` (data-parallel): rank r generates and
    /// differentiates its [`share`] of every batch (its `chunks` chunks split that share),
    /// the gradient is summed over ranks in a fixed order ([`Collective::sum_f32`]), and
    /// every rank makes the same update, so all ranks hold the same parameters. Each row of
    /// a batch has its own random stream, so the batch does not depend on the split; with
    /// R ranks of one chunk each the parameters are bit for bit those of one process with R
    /// chunks when R = 2 (for more ranks only the rounding of the sum differs). Every rank
    /// makes the same evaluations. Errors when a rank would hold fewer rows than chunks.
    pub fn with_ranks(mut self, ranks: Arc<dyn Collective>) -> Result<Self> {
        let (size, rank) = (ranks.size(), ranks.rank());
        let rows = share(self.config.batch, size, rank);
        let chunks = chunk_count(&self.config);
        if rows.1 - rows.0 < chunks {
            return Err(Error::param(
                "batch",
                format!(
                    "a batch of {} over {size} ranks gives rank {rank} {} rows, fewer than \
                     its {chunks} chunks",
                    self.config.batch,
                    rows.1 - rows.0
                ),
            ));
        }
        let volume = self.action.lattice().volume();
        self.latent = Array2::zeros((rows.1 - rows.0, volume));
        self.ranks = ranks;
        Ok(self)
    }

    /// The processes training is spread over ([`SingleProcess`] unless set by
    /// [`Trainer::with_ranks`]).
    pub fn ranks(&self) -> &Arc<dyn Collective> {
        &self.ranks
    }

    /// Coupling annealing: `target(progress)` gives the action to train against at progress
    /// t = iteration / iterations ∈ [0, 1) (e.g. β ramped to its target over a fraction of
    /// the run). Evaluations always use the trainer's own (final) action. Not saved in
    /// checkpoints: set it again after [`Trainer::resume`].
    pub fn with_annealing(mut self, target: AnnealFn<A>) -> Self {
        self.anneal = Some(target);
        self
    }

    /// One optimiser step on a fresh batch. A NaN or infinity in the loss or the gradient
    /// is an [`Error::NonFinite`] naming the iteration; the parameters and optimiser state
    /// are then left as they were.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let start = Instant::now();
        let total = self.config.iterations;
        let it = self.counters.iteration;
        if it >= total {
            return Err(Error::param(
                "iterations",
                format!("all {total} iterations are done; nothing left to train"),
            ));
        }
        let annealed = match &self.anneal {
            Some(target) => Some(target(it as f64 / total as f64)?),
            None => None,
        };
        let action: &A = annealed.as_ref().unwrap_or(&*self.action);
        if annealed.is_some() {
            ensure_same_lattice(&self.model, action).map_err(|e| {
                Error::Incompatible(format!("the annealed action at iteration {it}: {e}"))
            })?;
        }

        // This process's rows of the batch: its share over the ranks.
        let (first_row, _) = share(self.config.batch, self.ranks.size(), self.ranks.rank());
        let seed = self.config.seed;
        let prior = self.model.prior();
        self.latent
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, row)| {
                let mut rng = latent_stream(seed, it, first_row + i);
                prior.sample_into(row.insert_axis(Axis(0)), &mut rng)
            })?;
        let inv_n = 1.0 / self.config.batch as f64;
        let path = self.config.gradient == GradientEstimator::Path;
        let score_missing = AtomicBool::new(false);
        let seed = |chunk: ChunkSeed<'_, f32>| {
            let ChunkSeed {
                phi,
                logdet,
                mut grad_phi,
                mut grad_logdet,
                mut record,
                score,
            } = chunk;
            ROW_SCRATCH.with(|cell| {
                let (x, force) = &mut *cell.borrow_mut();
                x.resize(phi.ncols(), 0.0);
                force.resize(phi.ncols(), 0.0);
                for (((row, mut g), r), &ld) in phi
                    .outer_iter()
                    .zip(grad_phi.outer_iter_mut())
                    .zip(record.iter_mut())
                    .zip(logdet.iter())
                {
                    for (a, &b) in x.iter_mut().zip(row.iter()) {
                        *a = f64::from(b);
                    }
                    *r = action.action_and_force(x, force) - ld;
                    for (o, &f) in g.iter_mut().zip(force.iter()) {
                        *o = (f * inv_n) as f32;
                    }
                }
            });
            match (path, score) {
                // ∂L̂/∂φ = (∇S + ∇_φ log p̃)/N; the log-det enters only through the score.
                (true, Some(score)) => {
                    grad_phi.zip_mut_with(&score, |g, &w| *g += (f64::from(w) * inv_n) as f32);
                }
                (true, None) => score_missing.store(true, Ordering::Relaxed),
                (false, _) => grad_logdet.fill((-inv_n) as f32),
            }
        };
        let output = if path {
            self.model.forward_backward_scored(
                self.latent.view(),
                &mut self.workspace,
                seed,
                &mut self.grad,
            )?
        } else {
            self.model.forward_backward(
                self.latent.view(),
                &mut self.workspace,
                seed,
                &mut self.grad,
            )?
        };
        if score_missing.load(Ordering::Relaxed) {
            return Err(Error::Incompatible(
                "path gradients need the score ∇_φ log p̃(φ), and the flow's \
                 forward_backward_scored gave none"
                    .into(),
            ));
        }

        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for &l in output.record.iter() {
            sum += l;
            sum_sq += l * l;
        }
        // The two-number loss sum comes first: it waits for the slowest rank, so that the
        // gradient sum after it times the exchange alone.
        let mut sums = [sum, sum_sq];
        let exchange = Instant::now();
        self.ranks.sum_f64(&mut sums)?;
        let synchronised = Instant::now();
        self.ranks.sum_f32(&mut self.grad)?;
        self.counters.wait_seconds += (synchronised - exchange).as_secs_f64();
        self.counters.communication_seconds += synchronised.elapsed().as_secs_f64();
        let [sum, sum_sq] = sums;
        let n = self.config.batch as f64;
        let loss = sum / n;
        let loss_var = if self.config.batch > 1 {
            ((sum_sq - n * loss * loss) / (n - 1.0)).max(0.0)
        } else {
            0.0
        };
        if !loss.is_finite() || self.grad.par_iter().any(|g| !g.is_finite()) {
            return Err(Error::NonFinite(format!(
                "loss or gradient at training iteration {it} (loss {loss})"
            )));
        }
        let lr = self
            .config
            .schedule
            .learning_rate(self.config.lr, it, total);
        self.optimizer
            .update(self.model.params_mut(), &self.grad, lr)?;

        self.counters.iteration += 1;
        self.counters.configs_seen += self.config.batch as u64;
        self.counters.last_loss = loss;
        self.counters.seconds += start.elapsed().as_secs_f64();
        if let Some(limit) = self.config.time_limit {
            self.counters.out_of_time = self.ranks.any(self.counters.seconds >= limit)?;
        }
        let interval = self.config.eval_interval();
        let eval = if interval > 0 && self.counters.iteration.is_multiple_of(interval) {
            let start = Instant::now();
            let samples = self.config.check_sample_size();
            let eval = self.evaluate(samples)?;
            self.counters.eval_seconds += start.elapsed().as_secs_f64();
            self.counters.eval_configs += samples as u64;
            Some(eval)
        } else {
            None
        };
        self.counters.target_reached = match (self.config.until_acceptance, &eval) {
            (Some(target), Some(e)) => e.acceptance >= target,
            _ => false,
        };
        Ok(StepMetrics {
            iteration: it,
            loss,
            loss_var,
            lr,
            configs_seen: self.counters.configs_seen,
            seconds: self.counters.seconds,
            eval,
        })
    }

    /// Runs the remaining iterations (until [`Trainer::is_finished`]) as the stage `train`
    /// of `observer` (in iterations, with [`StepMetrics::metrics`] after each step), then
    /// evaluates the flow and records the summary and configuration in the flow's metadata
    /// (if it keeps any) under `"train"`.
    ///
    /// `stop` is checked before every step: once it is set, training ends with
    /// [`Error::Interrupted`] and the trainer keeps its state, so that it can be saved
    /// ([`Trainer::save_checkpoint`]) or continued. Callers that need every step's numbers
    /// call [`Trainer::step`] themselves.
    pub fn train(&mut self, observer: &mut dyn Observer, stop: &StopToken) -> Result<TrainSummary> {
        observer.begin("train", self.config.iterations as u64, "iterations");
        while !self.is_finished() {
            if stop.is_stopped() {
                observer.end("stopped");
                return Err(Error::Interrupted(format!(
                    "training stopped after {} of {} iterations",
                    self.counters.iteration, self.config.iterations
                )));
            }
            let metrics = self.step()?;
            observer.progress(self.counters.iteration as u64, &metrics.metrics());
        }
        observer.end("done");
        // A run stopped at its target is evaluated on an independent sample: the check that
        // stopped it is selected upwards.
        let eval = if self.counters.target_reached {
            let mut rng = stream(
                self.config.seed,
                FINAL_STREAM_BASE + self.counters.iteration as u64,
            );
            evaluate_flow(
                &self.model,
                &*self.action,
                self.config.eval_samples,
                &mut rng,
            )?
        } else {
            self.evaluate(self.config.eval_samples)?
        };
        let summary = TrainSummary {
            iterations: self.counters.iteration,
            configs_seen: self.counters.configs_seen,
            seconds: self.counters.seconds,
            eval_seconds: self.counters.eval_seconds,
            eval_configs: self.counters.eval_configs,
            wait_seconds: self.counters.wait_seconds,
            communication_seconds: self.counters.communication_seconds,
            reached_target: self
                .config
                .until_acceptance
                .map(|_| self.counters.target_reached),
            ran_out_of_time: self.counters.out_of_time
                && !self.counters.target_reached
                && self.counters.iteration < self.config.iterations,
            final_loss: self.counters.last_loss,
            eval,
        };
        if let Some(metadata) = self.model.metadata_mut() {
            let record = serde_json::json!({ "summary": summary, "config": self.config });
            metadata.insert("train".into(), record);
        }
        Ok(summary)
    }

    /// A short independent test with `n` fresh samples (from a stream derived from the seed
    /// and the iteration, so the training stream is untouched): see [`evaluate_flow`].
    pub fn evaluate(&mut self, n: usize) -> Result<EvalMetrics> {
        let mut rng = stream(
            self.config.seed,
            EVAL_STREAM_BASE + self.counters.iteration as u64,
        );
        evaluate_flow(&self.model, &*self.action, n, &mut rng)
    }

    /// The flow being trained.
    pub fn model(&self) -> &F {
        &self.model
    }

    /// The trained flow.
    pub fn into_model(self) -> F {
        self.model
    }

    /// The target action.
    pub fn action(&self) -> &Arc<A> {
        &self.action
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps made so far.
    pub fn iteration(&self) -> usize {
        self.counters.iteration
    }

    /// Configurations generated so far, |Φ_train|.
    pub fn configs_seen(&self) -> u64 {
        self.counters.configs_seen
    }

    /// Whether training is over: all `iterations` are done, the last step's evaluation
    /// reached the target acceptance ([`TrainConfig::until_acceptance`]), or the time limit
    /// has passed ([`TrainConfig::time_limit`]).
    pub fn is_finished(&self) -> bool {
        self.counters.iteration >= self.config.iterations
            || self.counters.target_reached
            || self.counters.out_of_time
    }

    /// Writes the flow's parameters, description and metadata, the optimiser state,
    /// counters and configuration to `path`, atomically. Over several ranks only rank 0
    /// writes (they all hold the same state); the others return at once.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        if !self.ranks.is_root() {
            return Ok(());
        }
        Checkpoint::capture(self).write(path)
    }

    /// Restores a trainer from a checkpoint into `flow`, a flow of the same structure (same
    /// [`TrainableFlow::description`] and lattice) whose parameters and metadata are
    /// replaced by the saved ones; continuing it gives bit for bit the parameters of an
    /// uninterrupted run (same seed and chunk count). A corrupt file, another flow, or an
    /// action on another lattice is an error.
    pub fn resume_with_flow(path: &Path, flow: F, action: Arc<A>) -> Result<Self> {
        let checkpoint = Checkpoint::read(path)?;
        checkpoint.into_trainer(flow, action)
    }
}

impl<A: Action + 'static> Trainer<FlowModel, A> {
    /// Restores a trainer of a [`FlowModel`] from a checkpoint, rebuilding the model from
    /// its saved configuration: see [`Trainer::resume_with_flow`].
    pub fn resume(path: &Path, action: Arc<A>) -> Result<Self> {
        Self::resume_with(path, action, &LayerRegistry::new())
    }

    /// [`Trainer::resume`] for a flow with custom transforms or nets, built by the
    /// constructors `registry` holds (see [`FlowModel::load_with`]).
    pub fn resume_with(path: &Path, action: Arc<A>, registry: &LayerRegistry) -> Result<Self> {
        let checkpoint = Checkpoint::read(path)?;
        let model = checkpoint
            .model(registry)
            .map_err(|e| e.in_file("checkpoint", path))?;
        checkpoint.into_trainer(model, action)
    }
}

/// The counters of a trainer, restored from a checkpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counters {
    pub(crate) iteration: usize,
    pub(crate) configs_seen: u64,
    pub(crate) seconds: f64,
    pub(crate) eval_seconds: f64,
    pub(crate) eval_configs: u64,
    /// Wall seconds of the steps spent waiting for the slowest rank (part of `seconds`).
    pub(crate) wait_seconds: f64,
    /// Wall seconds of the steps spent summing the gradient over ranks (part of `seconds`).
    pub(crate) communication_seconds: f64,
    /// Whether the last step's evaluation reached the target acceptance.
    pub(crate) target_reached: bool,
    /// Whether the training seconds have passed the time limit.
    pub(crate) out_of_time: bool,
    pub(crate) last_loss: f64,
}

impl Default for Counters {
    /// A fresh run: nothing done yet, no loss.
    fn default() -> Self {
        Counters {
            iteration: 0,
            configs_seen: 0,
            seconds: 0.0,
            eval_seconds: 0.0,
            eval_configs: 0,
            wait_seconds: 0.0,
            communication_seconds: 0.0,
            target_reached: false,
            out_of_time: false,
            last_loss: f64::NAN,
        }
    }
}

/// The batch chunks of a run: `chunks`, or one per rayon thread when it is 0.
fn chunk_count(config: &TrainConfig) -> usize {
    if config.chunks == 0 {
        rayon::current_num_threads()
    } else {
        config.chunks
    }
}

/// Refuses a training setup that cannot fit in memory or would run for months: the batch
/// buffers and workspace (`batch`), the per-chunk gradients (`chunks`), an evaluation
/// sample (`eval_samples`), and the multiply-adds of all iterations and evaluations
/// (`iterations`, see [`crate::limits::MAX_MULTIPLY_ADDS`]).
fn check_training_size<F: TrainableFlow>(
    model: &F,
    volume: usize,
    config: &TrainConfig,
    chunks: usize,
) -> Result<()> {
    let (f32_bytes, volume) = (std::mem::size_of::<f32>() as u128, volume as u128);
    let n_params = model.n_params() as u128;
    let per_row = model.training_bytes_per_row() as u128;
    // Latent batch and workspace φ in f32, log-det and loss in f64, the pass's own values.
    let batch_row = 2 * f32_bytes * volume + 16 + per_row;
    // Log-weights of a sample, and for one chunk of it the fields, log-densities and the
    // forward pass (half the training pass: no gradients).
    let eval_rows = config.eval_samples.max(config.check_sample_size()) as u128;
    let chunk_row = 2 * f32_bytes * volume + 8 * volume + 16 + per_row / 2;
    let eval_bytes = eval_rows
        .saturating_mul(16)
        .saturating_add(eval_rows.min(EVAL_CHUNK as u128).saturating_mul(chunk_row));
    crate::limits::check_memory_parts(&[
        (
            "batch",
            "the training batch and its workspace",
            (config.batch as u128).saturating_mul(batch_row),
        ),
        (
            "chunks",
            "one gradient per batch chunk",
            (chunks as u128).saturating_mul(n_params * f32_bytes),
        ),
        (
            if config.check_sample_size() > config.eval_samples {
                "check_samples"
            } else {
                "eval_samples"
            },
            "an evaluation sample",
            eval_bytes,
        ),
        // Parameters, gradient and two optimiser moments.
        (
            "hidden",
            "the parameters and optimiser state",
            4 * n_params * f32_bytes,
        ),
    ])?;
    let checks = match config.eval_interval() {
        0 => 0,
        every => config.iterations / every,
    } as u128;
    let evaluated = checks
        .saturating_mul(config.check_sample_size() as u128)
        .saturating_add(config.eval_samples as u128);
    let rows = (config.iterations as u128)
        .saturating_mul(config.batch as u128)
        .saturating_mul(3)
        .saturating_add(evaluated);
    let multiply_adds = rows.saturating_mul(model.multiply_adds_per_row() as u128);
    let name = if evaluated > (config.iterations as u128).saturating_mul(config.batch as u128) {
        if checks > 0 && config.check_samples.is_some() {
            "check_samples"
        } else {
            "eval_samples"
        }
    } else if config.iterations / 750 >= config.batch / 500 {
        "iterations"
    } else {
        "batch"
    };
    crate::limits::check_multiply_adds(name, multiply_adds)
}

/// Configurations an evaluation draws and weighs at a time (its memory is that of this many
/// rows of the flow's forward pass, whatever the sample size).
pub const EVAL_CHUNK: usize = 1024;

/// Tests `flow` against `action` with `n` fresh samples, drawn [`EVAL_CHUNK`] at a time: log w = −S − log p̃ in f64, an
/// independence Metropolis chain over the samples in order (acceptance, τ_rej), the ESS
/// fraction, mean and variance of log w and the fraction of samples with M > 0.
pub fn evaluate_flow<F: Flow + ?Sized, A: Action + ?Sized>(
    flow: &F,
    action: &A,
    n: usize,
    rng: &mut SimRng,
) -> Result<EvalMetrics> {
    if n < 2 {
        return Err(Error::param(
            "samples",
            format!("an evaluation needs at least 2 samples, got {n}"),
        ));
    }
    ensure_same_lattice(flow, action)?;
    let mut log_w = Vec::with_capacity(n);
    let mut positive = 0;
    let mut done = 0;
    while done < n {
        let rows = EVAL_CHUNK.min(n - done);
        let (phi, log_p) = flow.sample(rows, rng)?;
        let (chunk, chunk_positive) = log_weights(action, phi.view(), log_p.view());
        log_w.extend(chunk);
        positive += chunk_positive;
        done += rows;
    }
    let mean = log_w.iter().sum::<f64>() / n as f64;
    let var = log_w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let ess = ess_fraction(&log_w)?;
    let mut accepted = Vec::with_capacity(n - 1);
    let mut current = log_w[0];
    for &proposed in &log_w[1..] {
        let u: f64 = rng.random();
        let accept = u.ln() < proposed - current;
        if accept {
            current = proposed;
        }
        accepted.push(accept);
    }
    let rejection = rejection_autocorrelation(&accepted);
    let acceptance = accepted.iter().filter(|&&a| a).count() as f64 / accepted.len() as f64;
    Ok(EvalMetrics {
        acceptance,
        ess,
        mean_log_w: mean,
        var_log_w: var,
        tau_rej: rejection.map_or(f64::INFINITY, |r| r.tau_rej),
        fraction_positive_m: positive as f64 / n as f64,
    })
}

/// log w = −S(φ) − log p̃(φ) of every row (S in f64 of the f32 field), and the number of
/// rows with positive magnetisation.
pub(crate) fn log_weights<A: Action + ?Sized>(
    action: &A,
    phi: ArrayView2<f32>,
    log_p: ArrayView1<f64>,
) -> (Vec<f64>, usize) {
    let mut row = vec![0.0; phi.ncols()];
    let mut positive = 0;
    let log_w = phi
        .outer_iter()
        .zip(log_p.iter())
        .map(|(r, &lp)| {
            for (a, &b) in row.iter_mut().zip(r.iter()) {
                *a = f64::from(b);
            }
            if row.iter().sum::<f64>() > 0.0 {
                positive += 1;
            }
            -action.action(&row) - lp
        })
        .collect();
    (log_w, positive)
}
