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
use rayon::prelude::*;

use crate::action::Action;
use crate::control::{Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::{ChunkSeed, Flow, FlowModel, LayerRegistry, TrainableFlow, ensure_same_lattice};
use crate::parallel::{Collective, SingleProcess, share};
use crate::rng::{SimRng, splitmix64, stream};
use crate::train::checkpoint::Checkpoint;
use crate::train::config::{GradientEstimator, TrainConfig};
use crate::train::metrics::{EvalMetrics, StepMetrics, TrainSummary};
use crate::train::optim::Optimizer;
use crate::train::snf::{Snf, SnfSeeds, check_eval_samples, eval_metrics, evaluate_snf};

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
    pub(crate) ranks: Arc<dyn Collective>,
    pub(crate) counters: Counters,
    anneal: Option<AnnealFn<A>>,
    snf: Option<Snf>,
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
            snf: None,
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

    /// Trains the flow as part of the stochastic normalizing flow `snf`: every row's
    /// φ₀ = f₀(z) is evolved through the protocol from `snf.start` to the trainer's action
    /// (with the flow's last layer groups between the steps where `snf.layers_after` puts
    /// them) with random numbers of its own streams (from the seed, the iteration, the row
    /// and the stretch), the loss is the path's work W and the gradient its pathwise
    /// gradient (see [`crate::train::Snf`]'s module notes); evaluations run whole paths
    /// ([`evaluate_snf`]). The loss reported is W − log r(z), as plain training reports
    /// S − log|det| (the same up to the constant E[log r]). Refused together with
    /// annealing (the target of the path would move); layers between the steps are
    /// refused with path gradients and for a flow without that many layer groups. Not
    /// saved in checkpoints: set it again after [`Trainer::resume`].
    pub fn with_snf(mut self, snf: Snf) -> Result<Self> {
        snf.validate(&*self.action)?;
        if snf.interleaved() > 0 {
            if self.config.gradient == GradientEstimator::Path {
                return Err(Error::param(
                    "gradient",
                    "flow layers between the stochastic steps are trained with the total \
                     gradient (the path gradient needs the score of the whole path)",
                ));
            }
            self.model.interleave(snf.interleaved())?;
        }
        if self.anneal.is_some() {
            return Err(Error::param(
                "anneal",
                "coupling annealing and a stochastic normalizing flow do not combine",
            ));
        }
        self.snf = Some(snf);
        Ok(self)
    }

    /// The stochastic half of the flow, when it is trained as a stochastic normalizing flow.
    pub fn snf(&self) -> Option<&Snf> {
        self.snf.as_ref()
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
        if annealed.is_some() && self.snf.is_some() {
            return Err(Error::param(
                "anneal",
                "coupling annealing and a stochastic normalizing flow do not combine",
            ));
        }
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
        let snf = self.snf.as_ref();
        let snf_seeds = snf.map(|snf| SnfSeeds::new(snf, action, seed, it, self.config.batch));
        let seed = |mut chunk: ChunkSeed<'_, f32>| {
            chunk.first_row += first_row;
            if let Some(seeds) = &snf_seeds {
                seeds.end(&mut chunk);
            }
            let ChunkSeed {
                phi,
                logdet,
                mut grad_phi,
                mut grad_logdet,
                mut record,
                score,
                ..
            } = chunk;
            if snf_seeds.is_none() {
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
            }
            match (path, score) {
                // ∂L̂/∂φ = (∇S + ∇_φ log p̃)/N; the log-det enters only through the score.
                (true, Some(score)) => {
                    grad_phi.zip_mut_with(&score, |g, &w| *g += (f64::from(w) * inv_n) as f32);
                }
                (true, None) => score_missing.store(true, Ordering::Relaxed),
                (false, _) => grad_logdet.fill((-inv_n) as f32),
            }
        };
        let interleaved = snf.map_or(0, Snf::interleaved);
        let output = if let (Some(seeds), true) = (&snf_seeds, interleaved > 0) {
            let between = |mut cut: crate::flow::InterleaveSeed<'_, f32>| {
                cut.first_row += first_row;
                seeds.between(cut);
            };
            self.model.forward_backward_interleaved(
                self.latent.view(),
                &mut self.workspace,
                (interleaved, between),
                seed,
                &mut self.grad,
            )?
        } else if path {
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
            self.evaluate_with(self.config.eval_samples, &mut rng)?
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
    /// and the iteration, so the training stream is untouched): see [`evaluate_flow`], and
    /// [`evaluate_snf`] for a stochastic normalizing flow.
    pub fn evaluate(&mut self, n: usize) -> Result<EvalMetrics> {
        let mut rng = stream(
            self.config.seed,
            EVAL_STREAM_BASE + self.counters.iteration as u64,
        );
        self.evaluate_with(n, &mut rng)
    }

    /// [`evaluate_flow`], or [`evaluate_snf`] for a stochastic normalizing flow.
    fn evaluate_with(&self, n: usize, rng: &mut SimRng) -> Result<EvalMetrics> {
        match &self.snf {
            Some(snf) => evaluate_snf(&self.model, &*self.action, snf, n, rng),
            None => evaluate_flow(&self.model, &*self.action, n, rng),
        }
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
pub(crate) fn chunk_count(config: &TrainConfig) -> usize {
    if config.chunks == 0 {
        rayon::current_num_threads()
    } else {
        config.chunks
    }
}

/// Refuses a training setup that cannot fit in memory or would run for months: the batch
/// buffers and workspace (`batch`), the per-chunk gradients (`chunks`), an evaluation
/// sample (`eval_samples`), the networks' values (blamed on `hidden` or `channels` when a
/// row's are far above a usual flow's), and the multiply-adds of all iterations and evaluations
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
    // Per batch row: latent batch and workspace φ in f32, log-det and loss in f64, and the
    // pass's own values. Per evaluation: the log-weights of the sample, and for one chunk
    // of it the fields, log-densities and the forward pass (half the training pass: no
    // gradients).
    let eval_rows = config.eval_samples.max(config.check_sample_size()) as u128;
    let eval_chunk = eval_rows.min(EVAL_CHUNK as u128);
    let field_row = 2 * f32_bytes * volume + 8 * volume + 16;
    let eval_name = if config.check_sample_size() > config.eval_samples {
        "check_samples"
    } else {
        "eval_samples"
    };
    // The networks' values per row are blamed on the networks' width when they are far
    // above a usual flow's (about 100 values per site), else on the batch or sample size.
    let width = if model.description().to_string().contains("\"channels\"") {
        "channels"
    } else {
        "hidden"
    };
    let wide = per_row / (4 * f32_bytes * volume * 100).max(1);
    let blame = |count: u128, usual: u128, name: &'static str| {
        if wide > count / usual { width } else { name }
    };
    crate::limits::check_memory_parts(&[
        (
            "batch",
            "the training batch",
            (config.batch as u128).saturating_mul(2 * f32_bytes * volume + 16),
        ),
        (
            blame(config.batch as u128, 500, "batch"),
            "the networks' values for the training batch",
            (config.batch as u128).saturating_mul(per_row),
        ),
        (
            "chunks",
            "one gradient per batch chunk",
            (chunks as u128).saturating_mul(n_params * f32_bytes),
        ),
        (
            eval_name,
            "an evaluation sample",
            eval_rows
                .saturating_mul(16)
                .saturating_add(eval_chunk.saturating_mul(field_row)),
        ),
        (
            blame(eval_chunk, EVAL_CHUNK as u128, eval_name),
            "the networks' values for an evaluation chunk",
            eval_chunk.saturating_mul(per_row / 2),
        ),
        // Parameters, gradient and two optimiser moments.
        (
            width,
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
    check_eval_samples(n)?;
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
    eval_metrics(&log_w, positive, rng)
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
