//! Flow training runs: a [`TrainSpec`] in (lattice, action, recipe, optimisation), a trained
//! model file and a [`TrainReport`] out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ActionSpec, Registry};
use crate::action::Action;
use crate::control::{Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowConfig, FlowModel, LayerConfig};
use crate::kernel::{NoneqProtocol, NoneqUpdate};
use crate::lattice::Lattice;
use crate::parallel::Collective;
use crate::train::{Snf, StepMetrics, TrainConfig, TrainSummary, Trainer};

use super::recipe::RecipeSpec;

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

/// A stochastic normalizing flow: the flow followed by a protocol of `steps` local sweeps
/// (proposal half-width `step_size`) through S_λ = (1 − λ) S₀ + λ S, λ = t/`steps`, from
/// the action `start` (S₀) to the run's action, trained end to end by minimising the path's
/// work E\[W\] (see [`crate::train::Snf`]). With `layers_every` = k, one more coupling block
/// of the recipe's kind (a copy of its last block's configuration) sits after every k
/// sweeps: ⌊steps/k⌋ blocks, appended to the recipe's flow as its last layer groups. A
/// model trained so records the SNF under `snf`, and the `noneq` kernel with the model's
/// flow start uses this protocol, start action and placement of the blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnfSpec {
    /// Protocol steps (≥ 1), each one local sweep.
    pub steps: usize,
    /// Proposal half-width of the sweeps.
    pub step_size: f64,
    /// The action S₀ the flow's map stands for (e.g. φ⁴ at a smaller β), on the run's
    /// lattice.
    pub start: ActionSpec,
    /// One more coupling block after every this many sweeps (≥ 1, at most `steps`);
    /// none: the whole flow comes before the sweeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_every: Option<usize>,
}

impl SnfSpec {
    /// The protocol.
    pub fn protocol(&self) -> NoneqProtocol {
        NoneqProtocol {
            steps: self.steps,
            update: NoneqUpdate::Local {
                step_size: self.step_size,
            },
        }
    }

    /// The steps after which the blocks between the sweeps sit (see
    /// [`Snf::every`]).
    pub fn layers_after(&self) -> Vec<usize> {
        Snf::every(self.layers_every.unwrap_or(0), self.steps)
    }

    /// The recipe's flow `config` with the blocks between the sweeps appended: copies of
    /// its last coupling block. A recipe without a coupling block is refused, naming
    /// `snf.layers_every`.
    pub fn extend(&self, mut config: FlowConfig) -> Result<FlowConfig> {
        let blocks = self.layers_after().len();
        if blocks == 0 {
            return Ok(config);
        }
        let Some(block) = config
            .layers
            .iter()
            .rev()
            .find(|l| matches!(l, LayerConfig::Block(_)))
            .cloned()
        else {
            return Err(Error::param(
                "snf.layers_every",
                "the recipe has no coupling block to place between the sweeps",
            ));
        };
        config.layers.extend(std::iter::repeat_n(block, blocks));
        Ok(config)
    }

    /// Checks the protocol and the blocks' spacing; the errors name `snf.steps`,
    /// `snf.step_size` and `snf.layers_every`.
    pub fn validate(&self) -> Result<()> {
        if let Some(every) = self.layers_every
            && !(1..=self.steps.max(1)).contains(&every)
        {
            return Err(Error::param(
                "snf.layers_every",
                format!(
                    "must be between 1 and snf.steps = {} (a block after every k sweeps), \
                     got {every}",
                    self.steps
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::param(
                "snf.steps",
                "a stochastic normalizing flow needs at least one protocol step",
            ));
        }
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::param(
                "snf.step_size",
                format!("must be positive and finite, got {}", self.step_size),
            ));
        }
        Ok(())
    }

    /// The stochastic half of the flow for [`Trainer::with_snf`], S₀ built by `registry`.
    pub fn build(&self, lattice: &Lattice, registry: &Registry) -> Result<Snf> {
        self.validate()?;
        Ok(Snf {
            protocol: self.protocol(),
            start: registry.action(&self.start, lattice)?.action(),
            layers_after: self.layers_after(),
        })
    }

    /// The SNF a model file records (under `snf`), if any.
    pub fn recorded(model: &FlowModel) -> Result<Option<Self>> {
        model
            .metadata()
            .get(SNF_KEY)
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|e| Error::format("snf in the model file", e.to_string()))
            })
            .transpose()
    }
}

/// The metadata key under which a model trained as a stochastic normalizing flow records
/// its [`SnfSpec`].
const SNF_KEY: &str = "snf";

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
    /// Train the flow as the first half of a stochastic normalizing flow (does not combine
    /// with `anneal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snf: Option<SnfSpec>,
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
    /// validates it; a refused key is named as the runcard writes it (`train.lr`,
    /// `recipe.hidden`) with its line.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        crate::study::runcard::read_checked(
            path,
            |spec: &TrainSpec, _| {
                spec.validate()
                    .map_err(|e| crate::study::spec::training_key(e, "", &[]))
            },
            |name| vec![name.to_string()],
        )
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
        if let Some(snf) = &self.snf {
            snf.validate()?;
            if self.anneal.is_some() {
                return Err(Error::param(
                    "snf",
                    "a stochastic normalizing flow is trained without coupling annealing \
                     (drop `anneal`)",
                ));
            }
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
    /// Mean of log w = −S − log p̃ (a lower bound on log Z), or −W of whole paths for a
    /// stochastic normalizing flow (the same bound).
    pub mean_log_w: f64,
    /// Variance of log w.
    pub var_log_w: f64,
    /// Fraction of test samples with M > 0 (½ unless a Z2 mode is lost).
    pub fraction_positive_m: f64,
    /// The model file written.
    pub model: PathBuf,
    /// For a run resumed from a checkpoint written with another number of batch chunks
    /// (one per thread unless `chunks` is set): `[chunks before, chunks after]`. The
    /// gradient was then summed in another order, so the parameters differ in their last
    /// bits from those of an uninterrupted run. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_changed_on_resume: Option<[usize; 2]>,
    /// For a run resumed from a checkpoint written over another number of processes (MPI
    /// ranks): `[ranks before, ranks after]`. The batches and evaluations are the same, the
    /// gradient was summed in another order, so the parameters differ in their last bits
    /// from those of an uninterrupted run. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks_changed_on_resume: Option<[usize; 2]>,
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
    check_outputs(spec, control)?;
    let action = Arc::new(
        control
            .registry
            .action(&spec.action, &spec.lattice)?
            .action(),
    );
    let mut config = spec.recipe.build(&spec.lattice)?;
    if let Some(snf) = &spec.snf {
        config = snf.extend(config)?;
    }
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
    let trainer = with_snf(with_annealing(trainer, spec)?, spec, control)?;
    drive(spec, trainer, log, control, observer)
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
/// thread count and processes; with other ones it trains on the same batches and the
/// report records the change (`chunks_changed_on_resume`, `ranks_changed_on_resume`). The
/// training log, if given, is cut back to the checkpoint's iteration and
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
    check_outputs(&spec, control)?;
    // The checkpoint is read and rewritten; the model and the log must not overwrite it.
    let mut outputs = vec![("out", spec.out.as_path())];
    outputs.extend(control.log.map(|log| ("log", log)));
    crate::io::check_distinct_files(&outputs, &[("resume", path)])?;
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
    let chunk_change = crate::train::checkpoint_chunk_change(path)?;
    let rank_change =
        crate::train::checkpoint_rank_change(path, control.ranks.map_or(1, |r| r.size()))?;
    let trainer = with_snf(with_annealing(trainer, &spec)?, &spec, control)?;
    let mut outcome = drive(&spec, trainer, log, control, observer)?;
    if let TrainOutcome::Finished(report) = &mut outcome {
        report.chunks_changed_on_resume = chunk_change;
        report.ranks_changed_on_resume = rank_change;
    }
    Ok(outcome)
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

fn check_outputs(spec: &TrainSpec, control: &TrainControl<'_>) -> Result<()> {
    crate::io::check_output_path(&spec.out, "out")?;
    let mut outputs = vec![("out", spec.out.as_path())];
    if let Some(path) = control.checkpoint {
        crate::io::check_output_path(path, "checkpoint")?;
        outputs.push(("checkpoint", path));
    }
    if let Some(path) = control.log {
        crate::io::check_output_path(path, "log")?;
        outputs.push(("log", path));
    }
    let inputs: Vec<(&str, &Path)> = spec.init.iter().map(|p| ("init", p.as_path())).collect();
    crate::io::check_distinct_files(&outputs, &inputs)
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

/// The trainer as the first half of the spec's stochastic normalizing flow, if any.
fn with_snf(
    trainer: RunTrainer,
    spec: &TrainSpec,
    control: &TrainControl<'_>,
) -> Result<RunTrainer> {
    match &spec.snf {
        Some(snf) => trainer.with_snf(snf.build(&spec.lattice, control.registry)?),
        None => Ok(trainer),
    }
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
    if let Some(snf) = &spec.snf {
        let snf_json =
            serde_json::to_value(snf).map_err(|e| Error::format("snf", e.to_string()))?;
        model.metadata_mut().insert(SNF_KEY.into(), snf_json);
    }
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
        chunks_changed_on_resume: None,
        ranks_changed_on_resume: None,
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
