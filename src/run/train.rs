//! Flow training runs: a [`TrainSpec`] in (lattice, action, recipe, optimisation), a trained
//! model file and a [`TrainReport`] out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ActionSpec, Registry};
use crate::action::Action;
use crate::control::{Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::transform::MAX_BINS;
use crate::flow::{ConvFamily, Flow, FlowConfig, FlowModel, FreeFieldKind};
use crate::lattice::Lattice;
use crate::parallel::Collective;
use crate::train::{StepMetrics, TrainConfig, TrainSummary, Trainer};

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
    /// Convolutional Z2-affine blocks on a coarse lattice, refined level by level.
    Multiscale,
}

impl RecipeKind {
    /// Whether the flow's nets are convolutional (`conv`, `multiscale`).
    pub fn is_convolutional(self) -> bool {
        matches!(self, RecipeKind::Conv | RecipeKind::Multiscale)
    }

    /// Whether the setting `key` of a [`RecipeSpec`] (`hidden`, `depth`, `segments`,
    /// `channels`, `kernel`, ...) has an effect on a flow of this kind; keys that are not
    /// recipe settings are taken to.
    pub fn uses(self, key: &str) -> bool {
        match key {
            "segments" => matches!(
                self,
                RecipeKind::Seed | RecipeKind::Conv | RecipeKind::Multiscale
            ),
            "channels" | "kernel" | "spline" | "free_field" => self.is_convolutional(),
            "levels" => self == RecipeKind::Multiscale,
            "hidden" => !self.is_convolutional(),
            "depth" => {
                self.is_convolutional()
                    || matches!(self, RecipeKind::RealNvp | RecipeKind::Additive)
            }
            _ => true,
        }
    }
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
    /// Coarse levels of the multiscale recipe.
    pub levels: usize,
    /// A spline block (of `segments` segments) on top of the conv or multiscale recipe.
    pub spline: bool,
    /// A free-field layer in front of the conv or multiscale recipe.
    pub free_field: FreeFieldKind,
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
            levels: 2,
            spline: false,
            free_field: FreeFieldKind::None,
        }
    }
}

impl RecipeSpec {
    /// Checks the sizes the kind uses on `lattice`: counts at least 1, `segments` within
    /// 1..=[`MAX_BINS`], `kernel` odd, and the parameters (with gradient and optimiser
    /// state) against the memory available, naming the size furthest above its default.
    pub fn validate(&self, lattice: &Lattice) -> Result<()> {
        let conv = matches!(self.kind, RecipeKind::Conv | RecipeKind::Multiscale);
        if self.kind == RecipeKind::Multiscale {
            if self.levels == 0 {
                return Err(Error::param("levels", "must be at least 1"));
            }
            crate::flow::check_levels(lattice, self.levels)?;
        }
        if self.affine_blocks == 0 && self.kind != RecipeKind::Seed {
            return Err(Error::param("affine_blocks", "must be at least 1"));
        }
        if self.depth == 0 {
            return Err(Error::param("depth", "must be at least 1"));
        }
        let splines = self.kind == RecipeKind::Seed || conv && self.spline;
        if splines && !(1..=MAX_BINS).contains(&self.segments) {
            return Err(Error::param(
                "segments",
                format!("must be between 1 and {MAX_BINS}, got {}", self.segments),
            ));
        }
        if conv && self.channels == 0 {
            return Err(Error::param("channels", "must be at least 1"));
        }
        if conv && self.kernel.is_multiple_of(2) {
            return Err(Error::param(
                "kernel",
                format!("must be odd and positive, got {}", self.kernel),
            ));
        }
        let (params, suspects) = self.parameter_estimate(lattice);
        let name = suspects
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("hidden", |s| s.0);
        crate::limits::check_memory(
            name,
            &format!(
                "a {} flow of at least {} parameters (with gradient and optimiser state)",
                serde_json::to_value(self.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                crate::limits::format_count(params)
            ),
            params.saturating_mul(4 * std::mem::size_of::<f32>() as u128),
        )
    }

    /// A lower estimate of the flow's parameter count on `lattice`, and each size the kind
    /// uses with its ratio to its default (the largest ratio names the culprit of a flow
    /// too large).
    fn parameter_estimate(&self, lattice: &Lattice) -> (u128, Vec<(&'static str, f64)>) {
        let volume = lattice.volume() as u128;
        let half = volume / 2;
        let hidden = if self.hidden == 0 {
            volume
        } else {
            self.hidden as u128
        };
        let (blocks, depth) = (self.affine_blocks as u128, self.depth as u128);
        let mut suspects = vec![
            ("affine_blocks", self.affine_blocks as f64 / 2.0),
            ("hidden", hidden as f64 / volume.max(1) as f64),
        ];
        // Each block is two coupling layers; a dense layer maps |P| → hidden … → |A| · k.
        let dense = |depth: u128, outputs_per_site: u128| {
            half.saturating_mul(hidden)
                .saturating_add((depth - 1).saturating_mul(hidden.saturating_mul(hidden)))
                .saturating_add(hidden.saturating_mul(half).saturating_mul(outputs_per_site))
        };
        let per_layer = match self.kind {
            RecipeKind::Seed => {
                suspects.push(("segments", self.segments as f64 / 8.0));
                let rqs = dense(1, 3 * self.segments as u128 + 1);
                // The RQS block's two layers on top of the affine blocks'.
                return (
                    blocks
                        .saturating_mul(2)
                        .saturating_mul(dense(1, 2))
                        .saturating_add(rqs.saturating_mul(2)),
                    suspects,
                );
            }
            RecipeKind::RealNvp | RecipeKind::Additive => {
                suspects.push(("depth", self.depth as f64));
                dense(depth, 1)
            }
            RecipeKind::Z2Affine => dense(1, 2),
            RecipeKind::Conv | RecipeKind::Multiscale => {
                suspects.retain(|s| s.0 != "hidden");
                suspects.push(("depth", self.depth as f64));
                suspects.push(("channels", self.channels as f64 / 8.0));
                suspects.push(("kernel", self.kernel as f64 / 3.0));
                let taps = u32::try_from(lattice.dim())
                    .ok()
                    .and_then(|d| (self.kernel as u128).checked_pow(d))
                    .unwrap_or(u128::MAX);
                let channels = self.channels as u128;
                let levels = match self.kind {
                    RecipeKind::Multiscale => self.levels as u128 + 1,
                    _ => 1,
                };
                levels.saturating_mul(taps).saturating_mul(
                    channels.saturating_mul(2).saturating_add(
                        (depth - 1).saturating_mul(channels.saturating_mul(channels)),
                    ),
                )
            }
        };
        (blocks.saturating_mul(2).saturating_mul(per_layer), suspects)
    }

    /// The flow configuration this recipe describes on `lattice` (after
    /// [`RecipeSpec::validate`]).
    pub fn build(&self, lattice: &Lattice) -> Result<FlowConfig> {
        self.validate(lattice)?;
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
            RecipeKind::Conv | RecipeKind::Multiscale => ConvFamily {
                levels: if self.kind == RecipeKind::Conv {
                    0
                } else {
                    self.levels
                },
                blocks: self.affine_blocks,
                refine_blocks: self.affine_blocks,
                channels: vec![self.channels; self.depth],
                kernel: self.kernel,
                spline: self.spline.then_some(self.segments),
                free_field: self.free_field.config(),
            }
            .config()?,
        })
    }
}

/// The seed recipe's reference budgets, by lattice volume |Λ|: (batch, iterations, initial
/// learning rate) of the runs that reached about 70 % acceptance at L = 6, 8, 10, 12, 14 on
/// the ξ ≈ L/4 line (docs/reference.md#training-recipes); larger volumes take the L = 14
/// row.
pub fn reference_budget(volume: usize) -> (usize, usize, f64) {
    match volume {
        0..=36 => (300, 350, 0.02),
        37..=64 => (500, 750, 0.01),
        65..=100 => (1250, 2000, 0.005),
        101..=144 => (4000, 5000, 0.003),
        _ => (7000, 14000, 0.001),
    }
}

/// latflow's default training method for a run that sets a target acceptance and nothing
/// else about the flow or its training (`latflow train --until-acceptance A`): the best
/// method measured so far (docs/benchmarks-history.md, "Training
/// methods"). Up to
/// |Λ| = [`DENSE_DEFAULT_UP_TO`] it is the dense family's [`dense_method`], beyond the
/// scalable family's [`scalable_method`], measured cheaper there.
pub fn default_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    if lattice.volume() > DENSE_DEFAULT_UP_TO {
        scalable_method(lattice)
    } else {
        dense_method(lattice)
    }
}

/// The dense family's best method measured (the default up to |Λ| = 100). It is the seed
/// recipe's
/// architecture with fewer or narrower nets, ending in one spline block of 8 segments:
/// up to |Λ| = 64 that spline block alone at the full width H = |Λ|, up to |Λ| = 100 one
/// Z2-equivariant affine block before it and beyond three, both at half width H = |Λ|/2;
/// trained with path gradients ([`GradientEstimator::Path`]), always with an iteration
/// budget worth the reference |Φ_train| ([`reference_budget`]):
/// - up to |Λ| = 100, the reference learning rate and batches of at most 500 on a cosine
///   schedule over the budget;
/// - beyond, batches of 1000 at L = 12's reference rate (0.003; the reference recipe's
///   0.001 beyond |Λ| = 144 learns slower) on cosine periods restarted at the rate
///   ([`Schedule::WarmRestarts`]), the first over 125|Λ|/3 steps (6000 at L = 12, 8167 at
///   L = 14) and each next twice as long: at L = 12 the rate falls within the first
///   6 million configurations, where the flow reaches the seed recipe's acceptance, and a
///   higher target gets further periods.
///
/// The acceptance is checked every 1/30 of the budget on the cosine schedule and nine
/// times per first period on restarts (at least every [`DEFAULT_CHECK_INTERVAL`]
/// iterations), on [`DEFAULT_METHOD_CHECK_SAMPLES`] samples, so that the checks cost a
/// small part of the training; seed, chunks and the other evaluation settings keep their
/// defaults.
///
/// [`DEFAULT_CHECK_INTERVAL`]: crate::train::DEFAULT_CHECK_INTERVAL
/// [`Schedule::WarmRestarts`]: crate::train::Schedule::WarmRestarts
/// [`GradientEstimator::Path`]: crate::train::GradientEstimator::Path
pub fn dense_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    use crate::train::Schedule;
    let volume = lattice.volume();
    let (reference_batch, reference_iterations, reference_lr) = reference_budget(volume);
    let budget = reference_batch * reference_iterations;
    // Beyond |Λ| = 100: batches of 1000 at L = 12's reference rate (0.003, also where the
    // reference recipe's is 0.001), on cosine periods restarted at that rate, the first
    // over 6000 steps at L = 12 and longer in proportion to |Λ| (8167 at L = 14).
    let (batch, lr) = match volume {
        0..=100 => (reference_batch.min(500), reference_lr),
        _ => (1000, reference_budget(144).2),
    };
    let iterations = budget.div_ceil(batch);
    let (schedule, eval_every) = match volume {
        0..=100 => (Schedule::Cosine, iterations / 30),
        _ => {
            let period = (125 * volume).div_ceil(3);
            (
                Schedule::WarmRestarts {
                    period,
                    growth: 2.0,
                },
                period / 9,
            )
        }
    };
    // Up to |Λ| = 64 the spline block alone at full width reaches an acceptance with
    // fewer configurations than affine blocks before it, and each costs less; up to
    // |Λ| = 100 one affine block at half width trains fastest, beyond three.
    let (hidden, affine_blocks) = match volume {
        0..=64 => (volume, 0),
        65..=100 => (volume / 2, 1),
        _ => (volume / 2, 3),
    };
    let recipe = RecipeSpec {
        kind: RecipeKind::Seed,
        hidden: hidden.max(1),
        affine_blocks,
        segments: 8,
        ..RecipeSpec::default()
    };
    let mut train = TrainConfig::new(batch, iterations, lr);
    train.schedule = schedule;
    train.gradient = crate::train::GradientEstimator::Path;
    train.eval_every = eval_every.max(crate::train::DEFAULT_CHECK_INTERVAL);
    train.check_samples = Some(DEFAULT_METHOD_CHECK_SAMPLES);
    (recipe, train)
}

/// The largest volume for which [`default_method`] trains the dense seed-recipe family: at
/// L = 10 (|Λ| = 100) both families reached acceptance 0.65 in the same wall time (82 and
/// 87 s, one after the other on a loaded two-core machine: about 1,000,000 configurations
/// against 100,000), at L = 12 the scalable family needs about 120,000 configurations
/// where the dense one needs millions.
pub const DENSE_DEFAULT_UP_TO: usize = 100;

/// The scalable family's default method ([`default_method`] beyond |Λ| = 100): a free-field
/// layer with one σ per class of momenta, two Z2-affine blocks with convolutional nets of
/// two hidden layers of 16 channels (3 × 3 kernels), and a spline block of 8 segments with
/// the same nets between two learnable scales; trained with path gradients on batches of
/// 256 at η = 0.003 on a cosine schedule over 40|Λ| iterations (about 10|Λ|² / 1000
/// thousand configurations, a budget the target usually ends long before), checked every
/// 50 iterations on [`DEFAULT_METHOD_CHECK_SAMPLES`] samples.
pub fn scalable_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    let recipe = RecipeSpec {
        kind: RecipeKind::Conv,
        affine_blocks: 2,
        channels: 16,
        depth: 2,
        kernel: 3,
        spline: true,
        segments: 8,
        free_field: FreeFieldKind::Classes,
        ..RecipeSpec::default()
    };
    let mut train = TrainConfig::new(256, 40 * lattice.volume(), 0.003);
    train.schedule = crate::train::Schedule::Cosine;
    train.gradient = crate::train::GradientEstimator::Path;
    train.eval_every = 50;
    train.check_samples = Some(DEFAULT_METHOD_CHECK_SAMPLES);
    (recipe, train)
}

/// Samples of each acceptance check of [`default_method`]: a quarter of the command line's
/// 10,000 evaluation samples, which reads an acceptance near 0.65 to about ±0.015 (at
/// L = 8 this cut the checks from a quarter of the run's wall time to a tenth, with the
/// same final acceptance).
pub const DEFAULT_METHOD_CHECK_SAMPLES: usize = 2500;

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
    /// Batch, iterations, learning rate, schedule, optimiser, seed, evaluation, target
    /// acceptance.
    pub train: TrainConfig,
    /// Optional coupling annealing.
    #[serde(default)]
    pub anneal: Option<AnnealSpec>,
    /// A model file whose parameters start the training instead of a random
    /// initialisation: a flow trained on another lattice size or at other couplings (see
    /// [`init_from`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Where the trained model is written.
    pub out: PathBuf,
}

impl TrainSpec {
    /// Reads a TOML runcard (the fields of [`TrainSpec`]; unknown keys are errors) and
    /// validates it.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let spec: TrainSpec = super::read_runcard(path)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the recipe's sizes on the lattice ([`RecipeSpec::validate`]), the training
    /// configuration ([`TrainConfig::validate`]) and the annealing; the sizes that depend
    /// on the built flow (batch workspaces, evaluation samples, work) are checked by
    /// [`Trainer::new`]. Errors name the runcard key.
    pub fn validate(&self) -> Result<()> {
        self.recipe.validate(&self.lattice)?;
        self.train.validate()?;
        if let Some(a) = &self.anneal {
            a.validate()?;
        }
        Ok(())
    }
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
    /// Iterations made (fewer than the budget when the target acceptance was reached).
    pub iterations: usize,
    /// Configurations generated for training, |Φ_train| = Σ batch sizes.
    pub configs_seen: u64,
    /// Wall seconds of the training steps (evaluations excluded).
    pub seconds: f64,
    /// Wall seconds of the evaluations made during training (the acceptance checks of a
    /// run with a target; the final evaluation excluded).
    #[serde(default)]
    pub eval_seconds: f64,
    /// Configurations sampled by those evaluations (not part of `configs_seen`).
    #[serde(default)]
    pub eval_configs: u64,
    /// Whether the target acceptance ([`TrainConfig::until_acceptance`]) was reached;
    /// `None` for a run without a target.
    #[serde(default)]
    pub reached_target: Option<bool>,
    /// Whether training ended at its time limit ([`TrainConfig::time_limit`]).
    #[serde(default)]
    pub ran_out_of_time: bool,
    /// Training configurations per second.
    pub configs_per_second: f64,
    /// The processes the training was spread over (MPI ranks; 1 for one process).
    #[serde(default = "one_rank")]
    pub ranks: usize,
    /// Wall seconds of the training steps spent waiting for the slowest rank before the
    /// sums (part of `seconds`; 0 for one process).
    #[serde(default)]
    pub wait_seconds: f64,
    /// Wall seconds of the training steps spent summing the gradient over the ranks (part
    /// of `seconds`; 0 for one process).
    #[serde(default)]
    pub communication_seconds: f64,
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

fn one_rank() -> usize {
    1
}

/// How a training run is driven beyond its spec: where checkpoints and the training log go,
/// a flag that asks the run to stop, the processes the run is spread over, and the registry
/// of the user's pieces.
#[derive(Clone, Copy)]
pub struct TrainControl<'a> {
    /// Where checkpoints are written (atomically); `None`: no checkpoints, and a stop request
    /// then loses the run.
    pub checkpoint: Option<&'a Path>,
    /// Write a checkpoint every this many iterations (0: only when the run is stopped).
    pub checkpoint_every: usize,
    /// The training log, a CSV file with one row per iteration (see [`TRAIN_LOG_HEADER`]).
    pub log: Option<&'a Path>,
    /// Checked before every iteration: once it is set, the run writes a checkpoint and
    /// returns [`TrainOutcome::Stopped`]. Over several ranks the run stops when the token is
    /// set on any of them.
    pub stop: &'a StopToken,
    /// The processes training is spread over (see [`Trainer::with_ranks`]); `None`: this
    /// process alone. Every rank runs the same call; rank 0 alone writes the model,
    /// checkpoints and log.
    pub ranks: Option<&'a Arc<dyn Collective>>,
    /// The user's actions and flow layers the run may name (see [`Registry`]).
    pub registry: &'a Registry,
}

impl Default for TrainControl<'_> {
    fn default() -> Self {
        TrainControl {
            checkpoint: None,
            checkpoint_every: 0,
            log: None,
            stop: &crate::control::NEVER_STOP,
            ranks: None,
            registry: Registry::builtin(),
        }
    }
}

/// The trainer of a run: any flow model, the action chosen at run time.
type RunTrainer = Trainer<FlowModel, Arc<dyn Action>>;

impl TrainControl<'_> {
    fn is_root(&self) -> bool {
        self.ranks.is_none_or(|r| r.is_root())
    }
}

/// The columns of the training log: the step's loss (the reverse-KL estimate up to log Z),
/// its sample variance, the learning rate, |Φ_train| so far, training seconds so far, and the
/// acceptance, ESS fraction and τ_rej of the evaluations (empty where none was made). A
/// finished run ends the log with the final evaluation: a row whose iteration is the number
/// of iterations made and whose loss, variance and learning rate are empty.
pub const TRAIN_LOG_HEADER: &str =
    "iteration,loss,loss_var,lr,configs_seen,seconds,acceptance,ess,tau_rej";

/// How a training run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
// Returned once per run: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum TrainOutcome {
    /// Every iteration ran, or training stopped at its target acceptance; the model was
    /// written.
    Finished(TrainReport),
    /// A stop was requested: the state after the last complete iteration is in the
    /// checkpoint, from which [`resume`] continues bit for bit.
    Stopped {
        /// Iterations completed.
        iteration: usize,
        /// Iterations of the whole run.
        iterations: usize,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
}

/// Trains a flow as `spec` says, reporting the stage `train` to `observer` (in iterations,
/// with [`StepMetrics::metrics`] after every one), and writes the
/// model (with the action and the spec in its metadata) atomically to `spec.out`. Output
/// paths are checked before training starts.
pub fn train(
    spec: &TrainSpec,
    control: &TrainControl<'_>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    spec.validate()?;
    check_outputs(&spec.out, control)?;
    let action = Arc::new(
        control
            .registry
            .action(&spec.action, &spec.lattice)?
            .action(),
    );
    let config = spec.recipe.build(&spec.lattice)?;
    let mut model = FlowModel::new_with(
        &config,
        &spec.lattice,
        spec.train.seed,
        control.registry.layers(),
    )?;
    if let Some(path) = &spec.init {
        init_from(&mut model, path)?;
    }
    let spec_json = serde_json::to_value(spec).map_err(|e| Error::format("run", e.to_string()))?;
    model.metadata_mut().insert(RUN_KEY.into(), spec_json);
    let trainer = spread(
        Trainer::new(model, action.clone(), spec.train.clone())?,
        control,
    )?;
    let log = TrainLog::create(control.log.filter(|_| control.is_root()), 0)?;
    drive(spec, with_annealing(trainer, spec)?, log, control, observer)
}

/// Replaces the parameters of `model` by those of the flow saved at `path`, trained on any
/// lattice and action: transfer across volumes and couplings, by the rules of
/// [`crate::flow::transfer`] (the same configuration with as many parameters: convolutional
/// and multiscale flows on any size their levels divide, any flow on the same lattice; or
/// a multiscale flow with one more level). Anything else is an [`Error::Incompatible`]
/// naming the file, both lattices and why.
pub fn init_from(model: &mut FlowModel, path: &Path) -> Result<()> {
    let source = FlowModel::load(path)?;
    crate::flow::transfer(&source, model)
        .map(|_| ())
        .map_err(|e| match e {
            Error::Incompatible(why) => Error::Incompatible(format!("{}: {why}", path.display())),
            e => e,
        })
}

/// Continues the run saved in the checkpoint at `path` (written by [`train`]): the spec
/// comes from the checkpoint, with the model written to `out` if given (else to the spec's
/// own `out`). The final model is bit for bit that of an uninterrupted run with the same
/// thread count. The training log, if given, is cut back to the checkpoint's iteration and
/// continued.
pub fn resume(
    path: &Path,
    out: Option<&Path>,
    control: &TrainControl<'_>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let mut spec = checkpoint_spec(path)?;
    if let Some(out) = out {
        spec.out = out.to_path_buf();
    }
    spec.validate()?;
    check_outputs(&spec.out, control)?;
    let action = Arc::new(
        control
            .registry
            .action(&spec.action, &spec.lattice)?
            .action(),
    );
    let trainer = spread(
        Trainer::resume_with(path, action, control.registry.layers())?,
        control,
    )?;
    if trainer.config() != &spec.train {
        return Err(Error::format(
            format!("checkpoint {}", path.display()),
            "its training configuration differs from the run recorded with it",
        ));
    }
    let log = TrainLog::create(
        control.log.filter(|_| control.is_root()),
        trainer.iteration(),
    )?;
    drive(
        &spec,
        with_annealing(trainer, &spec)?,
        log,
        control,
        observer,
    )
}

/// The spec of the run a checkpoint written by [`train`] belongs to.
pub fn checkpoint_spec(path: &Path) -> Result<TrainSpec> {
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        metadata: std::collections::BTreeMap<String, serde_json::Value>,
        optimizer: Option<serde_json::Value>,
    }
    let what = format!("checkpoint {}", path.display());
    let file: Metadata = crate::io::read_json(path, "checkpoint")?;
    if file.optimizer.is_none() {
        return Err(Error::format(
            what,
            "it holds no optimiser state: this is not a training checkpoint (a model file?)",
        ));
    }
    let run = file.metadata.get(RUN_KEY).ok_or_else(|| {
        Error::format(
            what.clone(),
            "it records no training run (it was not written by `latflow train`)",
        )
    })?;
    serde_json::from_value(run.clone()).map_err(|e| Error::format(what, e.to_string()))
}

/// The metadata key under which a model and its checkpoints record the run's spec.
const RUN_KEY: &str = "run";

/// The metadata key under which a model records the processes it was trained on.
const RANKS_KEY: &str = "ranks";

/// The report of the training run that wrote the model file at `path` (by [`train`] or
/// `latflow train`), rebuilt from the run spec and training summary in its metadata, with
/// `model` set to `path`. A model without them (not written by a training run) is refused.
pub fn trained_model_report(path: &Path) -> Result<TrainReport> {
    Ok(trained_model_run(path)?.1)
}

/// The run spec recorded in the model file at `path`, as written (its `out` the path the
/// model was written to), and the run's report as [`trained_model_report`] gives it.
pub(crate) fn trained_model_run(path: &Path) -> Result<(TrainSpec, TrainReport)> {
    let model = FlowModel::load(path)?;
    let what = || format!("model file {}", path.display());
    let metadata = model.metadata();
    let missing = |key: &str| {
        Error::format(
            what(),
            format!("its metadata has no `{key}`: it was not written by a training run"),
        )
    };
    let recorded: TrainSpec = serde_json::from_value(
        metadata
            .get(RUN_KEY)
            .ok_or_else(|| missing(RUN_KEY))?
            .clone(),
    )
    .map_err(|e| Error::format(what(), e.to_string()))?;
    let train = metadata.get("train").ok_or_else(|| missing("train"))?;
    let summary: TrainSummary = serde_json::from_value(train["summary"].clone())
        .map_err(|e| Error::format(what(), format!("train.summary: {e}")))?;
    let ranks = metadata
        .get(RANKS_KEY)
        .and_then(serde_json::Value::as_u64)
        .map_or(1, |r| r as usize);
    let spec = TrainSpec {
        out: path.to_path_buf(),
        ..recorded.clone()
    };
    let report = report_of_run(&spec, model.n_params(), &summary, ranks);
    Ok((recorded, report))
}

fn check_outputs(out: &Path, control: &TrainControl<'_>) -> Result<()> {
    crate::io::check_output_path(out, "out")?;
    if let Some(path) = control.checkpoint {
        crate::io::check_output_path(path, "checkpoint")?;
        if path == out {
            return Err(Error::param(
                "checkpoint",
                "must differ from the model's path (`out`)",
            ));
        }
    }
    if let Some(path) = control.log {
        crate::io::check_output_path(path, "log")?;
    }
    Ok(())
}

/// The trainer spread over the control's ranks, if any.
fn spread(trainer: RunTrainer, control: &TrainControl<'_>) -> Result<RunTrainer> {
    match control.ranks {
        Some(ranks) => trainer.with_ranks(ranks.clone()),
        None => Ok(trainer),
    }
}

/// The trainer with the spec's coupling annealing, if any: φ⁴ with its hopping coupling
/// scaled by the annealing factor (annealing needs a φ⁴ action).
fn with_annealing(trainer: RunTrainer, spec: &TrainSpec) -> Result<RunTrainer> {
    let Some(anneal) = spec.anneal else {
        return Ok(trainer);
    };
    let target = spec.action.build(&spec.lattice).map_err(|_| {
        Error::param(
            "anneal",
            format!(
                "annealing scales the hopping coupling of φ⁴; the action is {}",
                spec.action.describe()
            ),
        )
    })?;
    Ok(trainer.with_annealing(Box::new(move |t| {
        Ok(Arc::new(target.with_scaled_hopping(anneal.factor(t))?) as Arc<dyn Action>)
    })))
}

/// Runs the remaining iterations with checkpoints, log and stop requests, then evaluates,
/// writes the model and reports.
fn drive(
    spec: &TrainSpec,
    mut trainer: RunTrainer,
    mut log: Option<TrainLog>,
    control: &TrainControl<'_>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let iterations = spec.train.iterations;
    let mut last_saved = (trainer.iteration() > 0).then_some(trainer.iteration());
    observer.begin("train", iterations as u64, "iterations");
    if trainer.iteration() > 0 {
        observer.progress(trainer.iteration() as u64, &[]);
    }
    while !trainer.is_finished() {
        if trainer.ranks().any(control.stop.is_stopped())? {
            observer.end("stopped");
            let checkpoint = control.checkpoint.ok_or_else(|| {
                Error::param(
                    "checkpoint",
                    "the run was stopped and no checkpoint path was given",
                )
            })?;
            trainer.save_checkpoint(checkpoint)?;
            if let Some(log) = &mut log {
                log.flush()?;
            }
            return Ok(TrainOutcome::Stopped {
                iteration: trainer.iteration(),
                iterations,
                checkpoint: checkpoint.to_path_buf(),
            });
        }
        let metrics = match trainer.step() {
            Ok(metrics) => metrics,
            Err(e) => {
                if let Some(log) = &mut log {
                    log.flush()?;
                }
                return Err(point_to_checkpoint(e, control.checkpoint, last_saved));
            }
        };
        if let Some(log) = &mut log {
            log.row(&metrics)?;
        }
        observer.progress(trainer.iteration() as u64, &metrics.metrics());
        let done = trainer.iteration();
        if let Some(path) = control.checkpoint
            && control.checkpoint_every > 0
            && done.is_multiple_of(control.checkpoint_every)
            && !trainer.is_finished()
        {
            trainer.save_checkpoint(path)?;
            last_saved = Some(done);
            if let Some(log) = &mut log {
                log.flush()?;
            }
        }
    }
    observer.end(if trainer.iteration() < iterations {
        "stopped early"
    } else {
        "done"
    });
    let summary = trainer.train(&mut (), control.stop)?;
    if let Some(log) = &mut log {
        log.final_evaluation(&summary)?;
        log.flush()?;
    }
    let mut model = trainer.into_model();
    let action_json =
        serde_json::to_value(&spec.action).map_err(|e| Error::format("action", e.to_string()))?;
    model.metadata_mut().insert("action".into(), action_json);
    let ranks = control.ranks.map_or(1, |r| r.size());
    model
        .metadata_mut()
        .insert(RANKS_KEY.into(), serde_json::json!(ranks));
    if control.is_root() {
        model.save(&spec.out)?;
    }
    Ok(TrainOutcome::Finished(report_of_run(
        spec,
        model.n_params(),
        &summary,
        ranks,
    )))
}

/// The report of a finished run of `spec` from the trainer's summary.
fn report_of_run(
    spec: &TrainSpec,
    n_params: usize,
    summary: &TrainSummary,
    ranks: usize,
) -> TrainReport {
    let e = summary.eval;
    TrainReport {
        lattice: spec.lattice.extents().to_vec(),
        action: spec.action.clone(),
        recipe: spec.recipe.clone(),
        n_params,
        iterations: summary.iterations,
        configs_seen: summary.configs_seen,
        seconds: summary.seconds,
        eval_seconds: summary.eval_seconds,
        eval_configs: summary.eval_configs,
        reached_target: summary.reached_target,
        ran_out_of_time: summary.ran_out_of_time,
        configs_per_second: summary.configs_seen as f64 / summary.seconds.max(1e-12),
        ranks,
        wait_seconds: summary.wait_seconds,
        communication_seconds: summary.communication_seconds,
        final_loss: summary.final_loss,
        acceptance: e.acceptance,
        ess: e.ess,
        tau_rej: e.tau_rej,
        mean_log_w: e.mean_log_w,
        var_log_w: e.var_log_w,
        fraction_positive_m: e.fraction_positive_m,
        model: spec.out.clone(),
    }
}

/// A training step's failure (e.g. a NaN loss), completed with where the last checkpoint
/// is, so that the work up to it is not lost.
fn point_to_checkpoint(error: Error, checkpoint: Option<&Path>, saved_at: Option<usize>) -> Error {
    match (error, checkpoint, saved_at) {
        (Error::NonFinite(what), Some(path), Some(at)) => Error::NonFinite(format!(
            "{what}; the state after step {at} is saved in the checkpoint {}",
            path.display()
        )),
        (error, _, _) => error,
    }
}

/// The training log: CSV rows appended as iterations finish, flushed at checkpoints and at
/// the end (so that after a kill the rows up to the last checkpoint are on disk).
struct TrainLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl TrainLog {
    /// Opens the log for a run at iteration `from`: a new file for a fresh run; for a
    /// resumed run the rows before `from` are kept (rewritten atomically) and the rest
    /// dropped, so the log continues where the checkpoint did.
    fn create(path: Option<&Path>, from: usize) -> Result<Option<Self>> {
        let Some(path) = path else {
            return Ok(None);
        };
        let mut text = format!("{TRAIN_LOG_HEADER}\n");
        if from > 0
            && let Ok(old) = std::fs::read_to_string(path)
        {
            for line in old.lines().skip(1) {
                let kept = line
                    .split(',')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < from);
                if kept {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        crate::io::write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Some(TrainLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        }))
    }

    fn row(&mut self, m: &StepMetrics) -> Result<()> {
        use std::io::Write;
        let (acceptance, ess, tau_rej) = match &m.eval {
            Some(e) => (
                e.acceptance.to_string(),
                e.ess.to_string(),
                e.tau_rej.to_string(),
            ),
            None => Default::default(),
        };
        writeln!(
            self.file,
            "{},{},{},{},{},{},{acceptance},{ess},{tau_rej}",
            m.iteration, m.loss, m.loss_var, m.lr, m.configs_seen, m.seconds
        )
        .map_err(|e| Error::io(&self.path, e))
    }

    fn final_evaluation(&mut self, summary: &crate::train::TrainSummary) -> Result<()> {
        use std::io::Write;
        let e = &summary.eval;
        writeln!(
            self.file,
            "{},,,,{},{},{},{},{}",
            summary.iterations,
            summary.configs_seen,
            summary.seconds,
            e.acceptance,
            e.ess,
            e.tau_rej
        )
        .map_err(|e| Error::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        use std::io::Write;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// The lattice and action a model file was trained for (from its metadata).
pub fn model_target(path: &std::path::Path) -> Result<(Lattice, ActionSpec)> {
    let model = FlowModel::load(path)?;
    Ok((model.lattice().clone(), recorded_action(&model, path)?))
}

/// The action a loaded model (read from `path`) records it was trained for.
pub(crate) fn recorded_action(model: &FlowModel, path: &std::path::Path) -> Result<ActionSpec> {
    let action = model.metadata().get("action").ok_or_else(|| {
        Error::Incompatible(format!(
            "model file {} does not record the action it was trained for",
            path.display()
        ))
    })?;
    serde_json::from_value::<ActionSpec>(action.clone()).map_err(|e| {
        Error::format(
            format!("action in model file {}", path.display()),
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (batch, iterations, lr, eval_every, hidden, affine blocks) of the dense method.
    fn method(l: usize) -> (usize, usize, f64, usize, usize, usize) {
        let (recipe, train) = dense_method(&Lattice::new(&[l, l]).unwrap());
        assert_eq!(train.gradient, crate::train::GradientEstimator::Path);
        assert_eq!(train.check_samples, Some(DEFAULT_METHOD_CHECK_SAMPLES));
        (
            train.batch,
            train.iterations,
            train.lr,
            train.eval_every,
            recipe.hidden,
            recipe.affine_blocks,
        )
    }

    #[test]
    fn the_default_method_spends_the_reference_budget_with_its_own_batches() {
        // L = 6 and 8: the spline block alone at width |Λ|, the reference batch (300, 500),
        // iterations (350, 750) and rate (0.02, 0.01).
        assert_eq!(method(6), (300, 350, 0.02, 25, 36, 0));
        assert_eq!(method(8), (500, 750, 0.01, 25, 64, 0));
        // L = 10: one affine block at half width, the reference 1250 × 2000 in batches of
        // 500.
        assert_eq!(method(10), (500, 5000, 0.005, 166, 50, 1));
        // L = 12: the reference 4000 × 5000 in batches of 1000 at the reference rate.
        assert_eq!(method(12), (1000, 20_000, 0.003, 666, 72, 3));
        // L = 14: the reference 7000 × 14000 configurations in batches of 1000 at η = 0.003.
        assert_eq!(method(14), (1000, 98_000, 0.003, 907, 98, 3));
        assert_eq!(method(20), (1000, 98_000, 0.003, 1851, 200, 3));
        // The rate falls over the whole budget up to |Λ| = 100; beyond, the first cosine
        // period spans 125|Λ|/3 steps.
        let schedule = |l: usize| dense_method(&Lattice::new(&[l, l]).unwrap()).1.schedule;
        for l in [6, 8, 10] {
            assert_eq!(schedule(l), crate::train::Schedule::Cosine, "L = {l}");
        }
        for (l, period) in [(12, 6000), (14, 8167), (16, 10_667), (20, 16_667)] {
            assert_eq!(
                schedule(l),
                crate::train::Schedule::WarmRestarts {
                    period,
                    growth: 2.0
                },
                "L = {l}"
            );
        }
    }

    #[test]
    fn the_default_method_is_dense_up_to_l10_and_scalable_beyond() {
        for l in [6, 8, 10] {
            let lattice = Lattice::new(&[l, l]).unwrap();
            assert_eq!(default_method(&lattice), dense_method(&lattice));
        }
        for l in [12, 16, 32, 64] {
            let lattice = Lattice::new(&[l, l]).unwrap();
            let (recipe, train) = default_method(&lattice);
            assert_eq!((recipe.kind, recipe.spline), (RecipeKind::Conv, true));
            assert_eq!(recipe.free_field, FreeFieldKind::Classes);
            assert_eq!((train.batch, train.iterations), (256, 40 * l * l));
            assert_eq!(train.gradient, crate::train::GradientEstimator::Path);
            let config = recipe.build(&lattice).unwrap();
            FlowModel::new(&config, &lattice, 1).unwrap();
        }
    }
}
