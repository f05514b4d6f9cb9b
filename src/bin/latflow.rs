//! The `latflow` command line: parses flags or a runcard, calls the library, prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use latflow::Lattice;
use latflow::flow::FreeFieldKind;
use latflow::kernel::{Integrator, KernelExpr};
use latflow::run::{
    ActionSpec, AnnealSpec, KernelSpec, RecipeKind, RecipeSpec, SampleReport, SampleSpec,
    TrainControl, TrainOutcome, TrainSpec, model_target, parse_kernel,
};
use latflow::stats::Verdict;
use latflow::train::{GradientEstimator, OptimizerKind, Schedule, TrainConfig};

#[derive(Parser)]
#[command(
    name = "latflow",
    version,
    about = "Lattice field theory sampling with normalizing flows, HMC and local Metropolis",
    after_help = "Without a command, latflow runs the built-in study (latflow run): L = 8 φ⁴, a flow trained and compared with flow+local, tuned HMC and local Metropolis; the report goes to latflow-out/phi4-L8/index.html."
)]
struct Cli {
    /// Without a subcommand, `latflow` runs the built-in study (`latflow run`).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole study from a runcard (or the built-in one): train a flow, run and
    /// compare samplers, write data, plots and an HTML report into one folder.
    Run(RunArgs),
    /// Recompute a study's analysis, tables and plots from its stored series.
    Analyse(AnalyseArgs),
    /// Train and sample flows over a grid of lattice sizes, budgets and seeds into one table.
    Sweep(SweepArgs),
    /// Run a Markov chain and report observables with Γ-method errors.
    Sample(SampleArgs),
    /// Train a normalizing flow by reverse KL and write the model file.
    Train(TrainArgs),
    /// Train one flow through a sequence of stages (growing lattices, moving couplings),
    /// each starting from the flow the stage before wrote; resumes where it stopped.
    Curriculum(CurriculumArgs),
}

#[derive(Args)]
struct CurriculumArgs {
    /// The runcard (TOML): `out`, `[recipe]`, optional `init`, and one `[[stage]]` table
    /// per stage with `lattice`, `[stage.action]`, `[stage.train]` and optional
    /// `[stage.anneal]` (see examples/curriculum.toml).
    runcard: PathBuf,
    /// The folder of the stages' models and the report (overrides the runcard's `out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write each stage's checkpoint every this many steps (0: only when interrupted).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    card: RuncardArgs,
    /// The master seed: `--set seed=...`.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    card: RuncardArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// The runcard of a study or sweep and the flags that override it.
#[derive(Args)]
struct RuncardArgs {
    /// The runcard (TOML). `run` without one runs the built-in study (examples/study.toml:
    /// L = 8, β = 0.576, λ = 0.5; flow, flow+local, tuned HMC and local compared); `sweep`
    /// needs one (e.g. examples/sweep_small.toml).
    runcard: Option<PathBuf>,
    /// The runcard, as an option.
    #[arg(long, conflicts_with = "runcard")]
    config: Option<PathBuf>,
    /// Override a runcard key: a dotted path and a TOML value, e.g. `--set measure.n=20000`,
    /// `--set sampler.2.kernel.tau=2.0`, `--set seeds=[1,2,3]` (repeatable; recorded in the
    /// folder's runcard).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The name (its folder under --out): `--set name=...`.
    #[arg(long)]
    name: Option<String>,
    /// The folder holding study and sweep folders: `--set out=...`.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl RuncardArgs {
    /// The runcard path, and the overrides of --name, --out and --set.
    fn parts(&self) -> Result<(Option<&PathBuf>, Vec<latflow::study::Override>)> {
        let mut set = Vec::new();
        if let Some(name) = &self.name {
            set.push(latflow::study::Override {
                key: "name".into(),
                value: toml_string(name),
            });
        }
        if let Some(out) = &self.out {
            set.push(latflow::study::Override {
                key: "out".into(),
                value: toml_string(&out.to_string_lossy()),
            });
        }
        set.extend(overrides(&self.set)?);
        Ok((self.runcard.as_ref().or(self.config.as_ref()), set))
    }
}

#[derive(Args)]
struct AnalyseArgs {
    /// The study folder (e.g. latflow-out/phi4-L8).
    folder: PathBuf,
    /// A TOML file with an [analysis] table whose keys override the study's.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override an analysis key, e.g. `--set analysis.fit_range=[1,4]` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Further measurements dropped at the start of every series: `analysis.therm_cut`.
    #[arg(long)]
    therm_cut: Option<usize>,
    /// The cosh fit range T_MIN:T_MAX: `analysis.fit_range`.
    #[arg(long, value_name = "T_MIN:T_MAX")]
    fit_range: Option<String>,
    /// Histogram bins: `analysis.histogram_bins`.
    #[arg(long)]
    bins: Option<usize>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum RecipeName {
    /// Z2-equivariant affine blocks, then one spline block (docs/flows.md#recipes).
    Seed,
    /// Affine blocks only.
    #[value(name = "real-nvp")]
    RealNvp,
    /// Additive blocks only.
    Additive,
    /// Z2-equivariant affine blocks only.
    #[value(name = "z2-affine")]
    Z2Affine,
    /// Z2-equivariant affine blocks with convolutional nets.
    Conv,
    /// Convolutional Z2-affine blocks on a coarse lattice, refined level by level.
    Multiscale,
}

#[derive(Clone, Copy, ValueEnum)]
enum FreeFieldName {
    None,
    /// One σ per class of momenta.
    Classes,
    /// A learnable mass and normalisation.
    Mass,
}

#[derive(Clone, Copy, ValueEnum)]
enum GradientName {
    Total,
    Path,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleName {
    Constant,
    Cosine,
    /// Cosine with warm restarts every --restart-period iterations.
    #[value(name = "warm-restarts")]
    WarmRestarts,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct TrainArgs {
    /// TOML runcard describing the whole training run (lattice, action, recipe, train,
    /// anneal, out); other flags that describe the run are then refused.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (its settings come from the checkpoint;
    /// flags that describe the run are refused).
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Flow recipe.
    #[arg(long, value_enum, default_value = "seed")]
    recipe: RecipeName,
    /// Hidden width of the dense nets (default |Λ|; not for --recipe conv).
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    /// Hidden layers of the nets (--recipe real-nvp, additive or conv).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Affine (or additive, or convolutional) coupling blocks.
    #[arg(long, default_value_t = 2)]
    affine_blocks: usize,
    /// Spline segments K (--recipe seed).
    #[arg(long, default_value_t = 8)]
    segments: usize,
    /// Channels of the convolutional nets (--recipe conv, multiscale).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Coarse levels (--recipe multiscale): the extents must be divisible by 2^levels.
    #[arg(long, default_value_t = 2)]
    levels: usize,
    /// A spline block of --segments segments on top (--recipe conv, multiscale).
    #[arg(long)]
    spline: bool,
    /// A free-field layer in front (--recipe conv, multiscale).
    #[arg(long, value_enum, default_value = "none")]
    free_field: FreeFieldName,
    /// Configurations per training step.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Training steps.
    #[arg(long, default_value_t = 750)]
    iterations: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: ScheduleName,
    /// Period of the warm restarts (--schedule warm-restarts).
    #[arg(long, default_value_t = 100)]
    restart_period: usize,
    /// Factor by which each warm-restart period is longer than the one before (≥ 1).
    #[arg(long, default_value_t = 1.0)]
    restart_growth: f64,
    /// AdamW weight decay (0: plain Adam).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Anneal the hopping coupling from this fraction of its target (hopping form).
    #[arg(long)]
    anneal_start: Option<f64>,
    /// Fraction of training over which the coupling reaches its target (with --anneal-start).
    #[arg(long, default_value_t = 0.5)]
    anneal_over: f64,
    /// Seed of initialisation and latent stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Batch chunks for the data-parallel pass (0: one per thread).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Evaluate acceptance and ESS every this many steps (0: only at the end); the values
    /// go to the training log.
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Samples of the final evaluation (and of the evaluations during training, unless
    /// --check-samples is given).
    #[arg(long, default_value_t = 10_000)]
    eval_samples: usize,
    /// Samples of each evaluation during training (--eval-every, the checks of
    /// --until-acceptance): fewer cost less per check and read the acceptance less
    /// precisely (default: --eval-samples).
    #[arg(long)]
    check_samples: Option<usize>,
    /// Gradient estimator of the reverse KL: total (the derivative of the batch loss) or
    /// path (drops the score term, whose variance does not vanish at the optimum; about
    /// one more input-gradient pass per step).
    #[arg(long, value_enum, default_value = "total")]
    gradient: GradientName,
    /// Stop at the first evaluation whose acceptance reaches this target (0 < A < 1);
    /// --iterations is then the budget. Evaluations every --eval-every steps (25 if 0).
    /// Without any flag that sets the recipe or its training, the run uses latflow's
    /// default method for the lattice (up to |Λ| = 100 the seed recipe with fewer or
    /// narrower nets, beyond a free-field layer, convolutional Z2-affine blocks and a
    /// convolutional spline block; path gradients and a size-dependent budget: see
    /// `latflow::run::default_method`). The summary says which it picked.
    #[arg(long)]
    until_acceptance: Option<f64>,
    /// End training after this many seconds of training steps (checked after every step),
    /// then evaluate and write the model as at the end of the budget. The step reached
    /// depends on the machine's speed.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// Start from the parameters of this model file (trained on another lattice size or at
    /// other couplings) instead of a random initialisation. It must hold a flow of the
    /// configuration the recipe builds here: a --recipe conv flow carries over to any size.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Where to write the trained model.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to keep the checkpoint (default: next to the model, NAME.checkpoint.json,
    /// removed when the run finishes).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Write the checkpoint every this many steps (0: only when interrupted).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// The training log, one CSV row per step (default: next to the model, NAME.train.csv).
    #[arg(long)]
    log: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

/// How the CLI reports: JSON or a summary, progress display.
#[derive(Args)]
struct OutputArgs {
    /// Print one JSON object to stdout instead of a summary.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10.0)]
    progress_interval: f64,
}

/// Flags that give the lattice and the action.
const TARGET_FLAGS: [&str; 8] = [
    "lattice", "action", "beta", "lambda", "m0sq", "g0", "m2", "mass",
];

/// Flags of `train` that describe the run itself, besides [`TARGET_FLAGS`] (refused with
/// --config or --resume).
const TRAIN_RUN_FLAGS: [&str; 28] = [
    "recipe",
    "hidden",
    "depth",
    "affine_blocks",
    "segments",
    "channels",
    "levels",
    "spline",
    "free_field",
    "batch",
    "iterations",
    "lr",
    "schedule",
    "restart_period",
    "restart_growth",
    "weight_decay",
    "anneal_start",
    "anneal_over",
    "seed",
    "chunks",
    "eval_every",
    "eval_samples",
    "check_samples",
    "gradient",
    "until_acceptance",
    "time_limit",
    "init",
    "out",
];

/// Flags of [`TRAIN_RUN_FLAGS`] that do not choose the flow or how it is trained.
const NOT_METHOD_FLAGS: [&str; 10] = [
    "anneal_over",
    "seed",
    "chunks",
    "eval_every",
    "eval_samples",
    "check_samples",
    "until_acceptance",
    "time_limit",
    "init",
    "out",
];

/// Whether a flag that chooses the flow or how it is trained was given: a run with
/// --until-acceptance and none of them uses latflow's default method.
fn sets_method(m: &ArgMatches) -> bool {
    TRAIN_RUN_FLAGS
        .iter()
        .any(|f| !NOT_METHOD_FLAGS.contains(f) && given(m, f))
}

impl TrainArgs {
    fn spec(&self, m: &ArgMatches) -> Result<TrainSpec> {
        if let Some(path) = &self.config {
            refuse_given(m, &TARGET_FLAGS, "--config: set it in the runcard")?;
            refuse_given(m, &TRAIN_RUN_FLAGS, "--config: set it in the runcard")?;
            return Ok(TrainSpec::from_toml_file(path)?);
        }
        self.target.refuse_foreign_couplings(m)?;
        let recipe_kind = match self.recipe {
            RecipeName::Seed => RecipeKind::Seed,
            RecipeName::RealNvp => RecipeKind::RealNvp,
            RecipeName::Additive => RecipeKind::Additive,
            RecipeName::Z2Affine => RecipeKind::Z2Affine,
            RecipeName::Conv => RecipeKind::Conv,
            RecipeName::Multiscale => RecipeKind::Multiscale,
        };
        let recipe_name = self
            .recipe
            .to_possible_value()
            .map(|v| v.get_name().to_string());
        let recipe_name = recipe_name.unwrap_or_default();
        let conv = matches!(recipe_kind, RecipeKind::Conv | RecipeKind::Multiscale);
        let uses = |flag: &str| match flag {
            "segments" => recipe_kind == RecipeKind::Seed || conv && self.spline,
            "channels" | "spline" | "free_field" => conv,
            "levels" => recipe_kind == RecipeKind::Multiscale,
            "hidden" => !conv,
            "depth" => conv || matches!(recipe_kind, RecipeKind::RealNvp | RecipeKind::Additive),
            _ => true,
        };
        for flag in [
            "segments",
            "channels",
            "hidden",
            "depth",
            "levels",
            "spline",
            "free_field",
        ] {
            if given(m, flag) && !uses(flag) {
                bail!(
                    "{} has no effect with --recipe {recipe_name}",
                    flag_name(flag)
                );
            }
        }
        for flag in ["restart_period", "restart_growth"] {
            if given(m, flag) && !matches!(self.schedule, ScheduleName::WarmRestarts) {
                bail!(
                    "{} has no effect without --schedule warm-restarts",
                    flag_name(flag)
                );
            }
        }
        if given(m, "anneal_over") && self.anneal_start.is_none() {
            bail!("--anneal-over has no effect without --anneal-start");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "invalid value for --weight-decay: must be a finite number ≥ 0, got {}",
                self.weight_decay
            );
        }
        let out = self
            .out
            .clone()
            .context("--out is required: where to write the trained model")?;
        let (lattice, action) = self.target.resolve(None)?;
        if self.until_acceptance.is_some() && !sets_method(m) {
            let (recipe, mut train) = latflow::run::default_method(&lattice);
            train.seed = self.seed;
            train.chunks = self.chunks;
            if given(m, "eval_every") {
                train.eval_every = self.eval_every;
            }
            train.eval_samples = self.eval_samples;
            if self.check_samples.is_some() {
                train.check_samples = self.check_samples;
            }
            train.until_acceptance = self.until_acceptance;
            train.time_limit = self.time_limit;
            return Ok(TrainSpec {
                lattice,
                action,
                recipe,
                train,
                anneal: None,
                init: self.init.clone(),
                out,
            });
        }
        if self.anneal_start.is_some() && !matches!(action, ActionSpec::Phi4 { .. }) {
            bail!("--anneal-start anneals the hopping coupling: it needs --action phi4");
        }
        let recipe = RecipeSpec {
            kind: recipe_kind,
            hidden: self.hidden,
            depth: self.depth,
            affine_blocks: self.affine_blocks,
            segments: self.segments,
            channels: self.channels,
            levels: self.levels,
            spline: self.spline,
            free_field: match self.free_field {
                FreeFieldName::None => FreeFieldKind::None,
                FreeFieldName::Classes => FreeFieldKind::Classes,
                FreeFieldName::Mass => FreeFieldKind::Mass,
            },
            ..RecipeSpec::default()
        };
        let mut train = TrainConfig::new(self.batch, self.iterations, self.lr);
        train.schedule = match self.schedule {
            ScheduleName::Constant => Schedule::Constant,
            ScheduleName::Cosine => Schedule::Cosine,
            ScheduleName::WarmRestarts => Schedule::WarmRestarts {
                period: self.restart_period,
                growth: self.restart_growth,
            },
        };
        if self.weight_decay > 0.0 {
            train.optimizer = OptimizerKind::adamw(self.weight_decay);
        }
        train.seed = self.seed;
        train.chunks = self.chunks;
        train.eval_every = self.eval_every;
        train.eval_samples = self.eval_samples;
        train.check_samples = self.check_samples;
        train.until_acceptance = self.until_acceptance;
        train.time_limit = self.time_limit;
        train.gradient = match self.gradient {
            GradientName::Total => GradientEstimator::Total,
            GradientName::Path => GradientEstimator::Path,
        };
        let anneal = self.anneal_start.map(|start| AnnealSpec {
            start,
            over: self.anneal_over,
        });
        Ok(TrainSpec {
            lattice,
            action,
            recipe,
            train,
            anneal,
            init: self.init.clone(),
            out,
        })
    }
}

/// A path next to `model` with its extension replaced by `suffix`.
fn beside(model: &Path, suffix: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.{suffix}"))
}

fn run_train(
    args: &TrainArgs,
    m: &ArgMatches,
    signals: &Signals,
    ranks: &Ranks,
) -> Result<ExitCode> {
    let (spec, resuming) = match &args.resume {
        Some(path) => {
            let allowed_out = TRAIN_RUN_FLAGS.iter().filter(|&&f| f != "out");
            let refused: Vec<&str> = allowed_out.copied().collect();
            refuse_given(
                m,
                &refused,
                "--resume: the run's settings come from the checkpoint",
            )?;
            let mut spec = latflow::run::checkpoint_spec(path)?;
            if let Some(out) = &args.out {
                spec.out = out.clone();
            }
            (spec, Some(path.clone()))
        }
        None => (args.spec(m)?, None),
    };
    let default_checkpoint = args.checkpoint.is_none() && resuming.is_none();
    let checkpoint = args
        .checkpoint
        .clone()
        .or_else(|| resuming.clone())
        .unwrap_or_else(|| beside(&spec.out, "checkpoint.json"));
    let log = args
        .log
        .clone()
        .unwrap_or_else(|| beside(&spec.out, "train.csv"));
    let control = TrainControl {
        checkpoint: Some(&checkpoint),
        checkpoint_every: args.checkpoint_every,
        log: Some(&log),
        stop: Some(&signals.stop),
        ranks: Some(&ranks.shared),
    };
    let mut progress = Progress::new("train", spec.train.iterations as u64, "steps", &args.output);
    let mut last_acceptance = f64::NAN;
    let mut observer = |s: &latflow::train::StepMetrics| {
        if let Some(e) = &s.eval {
            last_acceptance = e.acceptance;
        }
        progress.update(
            s.iteration as u64 + 1,
            &format!("loss {:.4}  acceptance {:.3}", s.loss, last_acceptance),
        );
    };
    let outcome = match &resuming {
        Some(path) => latflow::run::resume(path, args.out.as_deref(), &control, &mut observer)?,
        None => latflow::run::train(&spec, &control, &mut observer)?,
    };
    progress.finish();
    if !ranks.shared.is_root() {
        // Rank 0 reports; the others end as it does.
        return Ok(match outcome {
            TrainOutcome::Stopped { .. } => signals.exit_code(),
            TrainOutcome::Finished(_) => ExitCode::SUCCESS,
        });
    }
    let report = match outcome {
        TrainOutcome::Finished(report) => report,
        TrainOutcome::Stopped {
            iteration,
            iterations,
            checkpoint,
        } => {
            let message = format!(
                "stopped after {iteration} of {iterations} steps; checkpoint written to {}\n  \
                 continue with: latflow train --resume {}",
                checkpoint.display(),
                checkpoint.display()
            );
            let fields = serde_json::json!({
                "iteration": iteration, "iterations": iterations, "checkpoint": checkpoint,
            });
            return Ok(signals.report_stop(args.output.json, fields, &message));
        }
    };
    if default_checkpoint {
        let _ = std::fs::remove_file(&checkpoint);
    }
    if report.reached_target == Some(false) {
        eprintln!(
            "latflow: warning: acceptance {} not reached: {:.4} after {} iterations",
            spec.train.until_acceptance.unwrap_or(f64::NAN),
            report.acceptance,
            report.iterations
        );
    }
    if report.ran_out_of_time {
        eprintln!(
            "latflow: time limit of {} s reached after {} of {} iterations",
            spec.train.time_limit.unwrap_or(f64::NAN),
            report.iterations,
            spec.train.iterations
        );
    }
    if args.output.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "trained {} parameters on {:?} in {:.2} s ({:.0} configurations/s, {} seen)",
            report.n_params,
            report.lattice,
            report.seconds,
            report.configs_per_second,
            report.configs_seen
        );
        if args.resume.is_none()
            && args.config.is_none()
            && args.until_acceptance.is_some()
            && !sets_method(m)
        {
            let (r, t) = (&spec.recipe, &spec.train);
            let schedule = match t.schedule {
                Schedule::WarmRestarts { period, growth } => format!(
                    "cosine, restarted after {period} iterations, each next period {growth}× \
                     longer"
                ),
                Schedule::Cosine => "cosine".into(),
                Schedule::Constant => "constant".into(),
            };
            let affine = match r.affine_blocks {
                0 => "no affine block".to_string(),
                1 => "1 affine block".to_string(),
                n => format!("{n} affine blocks"),
            };
            let flow = match r.kind {
                RecipeKind::Seed => format!("seed recipe with hidden width {}, {affine}", r.hidden),
                _ => format!(
                    "scalable family: a free-field layer with one σ per class of momenta, \
                     {affine} with convolutional nets of {} × {} channels ({}×{} kernels), a \
                     convolutional spline block",
                    r.depth, r.channels, r.kernel, r.kernel
                ),
            };
            println!(
                "default method for this lattice: {flow}, {} spline segments; {} gradient, \
                 batch {}, budget {} iterations, lr {} ({schedule}); checks every {} \
                 iterations on {} samples",
                r.segments,
                t.gradient,
                t.batch,
                t.iterations,
                t.lr,
                t.eval_interval(),
                t.check_sample_size()
            );
        }
        if let Some(reached) = report.reached_target {
            println!(
                "target acceptance {} {}reached after {} iterations; acceptance checks: \
                 {:.2} s, {} configurations",
                spec.train.until_acceptance.unwrap_or(f64::NAN),
                if reached { "" } else { "not " },
                report.iterations,
                report.eval_seconds,
                report.eval_configs
            );
        }
        println!(
            "acceptance {:.4}  ESS {:.4}  tau_rej {:.3}  mean log w {:.4}  var log w {:.4}  M>0 {:.3}",
            report.acceptance,
            report.ess,
            report.tau_rej,
            report.mean_log_w,
            report.var_log_w,
            report.fraction_positive_m
        );
        println!(
            "model written to {}, training log to {}",
            report.model.display(),
            log.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_curriculum(args: &CurriculumArgs, signals: &Signals) -> Result<ExitCode> {
    let mut spec = latflow::run::CurriculumSpec::from_toml_file(&args.runcard)?;
    if let Some(out) = &args.out {
        spec.out = out.clone();
    }
    let control = TrainControl {
        checkpoint_every: args.checkpoint_every,
        stop: Some(&signals.stop),
        ..TrainControl::default()
    };
    let stages = spec.stages.len();
    let mut current: Option<(usize, Progress)> = None;
    let mut last_acceptance = f64::NAN;
    let mut observer = |k: usize, s: &latflow::train::StepMetrics| {
        if current.as_ref().is_none_or(|(at, _)| *at != k) {
            if let Some((_, p)) = &mut current {
                p.finish();
            }
            let label = format!("stage {}/{stages}", k + 1);
            let total = spec.stages[k].train.iterations as u64;
            current = Some((k, Progress::new(&label, total, "steps", &args.output)));
            last_acceptance = f64::NAN;
        }
        if let Some(e) = &s.eval {
            last_acceptance = e.acceptance;
        }
        if let Some((_, p)) = &mut current {
            p.update(
                s.iteration as u64 + 1,
                &format!("loss {:.4}  acceptance {:.3}", s.loss, last_acceptance),
            );
        }
    };
    let outcome = latflow::run::curriculum(&spec, &control, &mut observer)?;
    if let Some((_, p)) = &mut current {
        p.finish();
    }
    let report = match outcome {
        latflow::run::CurriculumOutcome::Finished(report) => report,
        latflow::run::CurriculumOutcome::Stopped {
            stage,
            iteration,
            iterations,
            checkpoint,
        } => {
            let message = format!(
                "stopped stage {stage} of {stages} after {iteration} of {iterations} steps; \
                 checkpoint written to {}\n  continue with: latflow curriculum {}{}",
                checkpoint.display(),
                args.runcard.display(),
                args.out
                    .as_ref()
                    .map(|o| format!(" --out {}", o.display()))
                    .unwrap_or_default()
            );
            let fields = serde_json::json!({
                "stage": stage, "iteration": iteration, "iterations": iterations,
                "checkpoint": checkpoint,
            });
            return Ok(signals.report_stop(args.output.json, fields, &message));
        }
    };
    if args.output.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:>9}  {:>10}  {:>12}  {:>10}  {:>10}  {:>7}",
        "stage", "lattice", "iterations", "configs", "seconds", "checks s", "accept"
    );
    for (k, r) in report.stages.iter().enumerate() {
        let lattice: Vec<String> = r.lattice.iter().map(|l| l.to_string()).collect();
        println!(
            "{:>5}  {:>9}  {:>10}  {:>12}  {:>10.1}  {:>10.1}  {:>7.4}",
            k + 1,
            lattice.join("x"),
            r.iterations,
            r.configs_seen,
            r.seconds,
            r.eval_seconds,
            r.acceptance
        );
    }
    println!(
        "total: {} configurations ({:.0} in configurations of the last lattice), {:.1} s of \
         training, {:.1} s of checks; final acceptance {:.4}",
        report.configs_seen,
        report.last_lattice_configs,
        report.seconds,
        report.eval_seconds,
        report.acceptance
    );
    println!(
        "final model: {}; report: {}",
        report.model.display(),
        spec.out.join("curriculum.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionForm {
    /// Hopping form: --beta --lambda.
    Phi4,
    /// Standard form: --m0sq --g0.
    #[value(name = "phi4-standard")]
    Phi4Standard,
    /// Quartic form (flow literature): --m2 --lambda.
    #[value(name = "phi4-quartic")]
    Phi4Quartic,
    /// Free field: --mass.
    Free,
}

#[derive(Clone, Copy, ValueEnum)]
enum IntegratorName {
    Leapfrog,
    Omelyan,
}

/// The lattice and the action, in the convention the user chose.
#[derive(Args)]
struct TargetArgs {
    /// Lattice extents, e.g. 8x8 (default 8x8).
    #[arg(long)]
    lattice: Option<String>,
    /// Convention of the action.
    #[arg(long, value_enum, default_value = "phi4")]
    action: ActionForm,
    /// Hopping coupling β (--action phi4).
    #[arg(long)]
    beta: Option<f64>,
    /// Quartic coupling λ (--action phi4 or phi4-quartic).
    #[arg(long)]
    lambda: Option<f64>,
    /// Bare mass squared (--action phi4-standard).
    #[arg(long)]
    m0sq: Option<f64>,
    /// Bare quartic coupling (--action phi4-standard).
    #[arg(long)]
    g0: Option<f64>,
    /// m² (--action phi4-quartic).
    #[arg(long)]
    m2: Option<f64>,
    /// Mass (--action free).
    #[arg(long)]
    mass: Option<f64>,
}

fn need(value: Option<f64>, flag: &str, action: &str) -> Result<f64> {
    value.with_context(|| format!("--action {action} needs --{flag}"))
}

impl TargetArgs {
    /// Refuses couplings the chosen --action does not take (e.g. --beta with --action free).
    fn refuse_foreign_couplings(&self, m: &ArgMatches) -> Result<()> {
        let (form, takes): (&str, &[&str]) = match self.action {
            ActionForm::Phi4 => ("phi4", &["beta", "lambda"]),
            ActionForm::Phi4Standard => ("phi4-standard", &["m0sq", "g0"]),
            ActionForm::Phi4Quartic => ("phi4-quartic", &["m2", "lambda"]),
            ActionForm::Free => ("free", &["mass"]),
        };
        for flag in ["beta", "lambda", "m0sq", "g0", "m2", "mass"] {
            if given(m, flag) && !takes.contains(&flag) {
                let wanted: Vec<String> = takes.iter().map(|f| flag_name(f)).collect();
                bail!(
                    "{} does not apply to --action {form}, which takes {}",
                    flag_name(flag),
                    wanted.join(" and ")
                );
            }
        }
        Ok(())
    }

    fn any_coupling(&self) -> bool {
        [
            self.beta,
            self.lambda,
            self.m0sq,
            self.g0,
            self.m2,
            self.mass,
        ]
        .iter()
        .any(Option::is_some)
    }

    fn lattice(&self) -> Result<Lattice> {
        Ok(self.lattice.as_deref().unwrap_or("8x8").parse()?)
    }

    fn action(&self) -> Result<ActionSpec> {
        Ok(match self.action {
            ActionForm::Phi4 => ActionSpec::Phi4 {
                beta: need(self.beta, "beta", "phi4")?,
                lambda: need(self.lambda, "lambda", "phi4")?,
            },
            ActionForm::Phi4Standard => ActionSpec::Phi4Standard {
                m0sq: need(self.m0sq, "m0sq", "phi4-standard")?,
                g0: need(self.g0, "g0", "phi4-standard")?,
            },
            ActionForm::Phi4Quartic => ActionSpec::Phi4Quartic {
                m2: need(self.m2, "m2", "phi4-quartic")?,
                lambda: need(self.lambda, "lambda", "phi4-quartic")?,
            },
            ActionForm::Free => ActionSpec::Free {
                mass: need(self.mass, "mass", "free")?,
            },
        })
    }

    /// The lattice and action of a run with `model`: taken from the model file; flags
    /// given on the command line must agree with it.
    fn resolve(&self, model: Option<&std::path::Path>) -> Result<(Lattice, ActionSpec)> {
        let Some(path) = model else {
            return Ok((self.lattice()?, self.action()?));
        };
        let (lattice, action) = model_target(path)?;
        if self.lattice.is_some() && self.lattice()? != lattice {
            bail!(
                "--lattice {} does not match the model's lattice {lattice}",
                self.lattice()?
            );
        }
        if self.any_coupling() && self.action()? != action {
            bail!("the couplings given do not match the model's action {action:?}");
        }
        Ok((lattice, action))
    }
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct SampleArgs {
    /// TOML runcard describing the whole run; flags that describe the run are then refused.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Trained model file (for kernel expressions with `flow`); the lattice and action come
    /// from it, and any given on the command line must match.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Flow proposals generated per batch (kernels with `flow`).
    #[arg(long, default_value_t = 1000)]
    flow_batch: usize,
    /// Markov chain kernel: an expression over local, hmc and flow, e.g. `hmc`,
    /// `flow+local*2+hmc` (a cycle: one flow proposal, two local sweeps, one HMC
    /// trajectory), `(flow+local)*4+hmc` or `mix(0.3: flow, 0.7: hmc)` (one of them at
    /// random, by weight).
    #[arg(long, default_value = "hmc", value_parser = kernel_expression)]
    kernel: KernelExpr,
    /// Measured steps, each one step of the whole kernel expression.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Thermalisation steps.
    #[arg(long, default_value_t = 1_000)]
    therm: usize,
    /// Measure every `thin`-th step.
    #[arg(long, default_value_t = 1)]
    thin: usize,
    /// Seed of the random stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// HMC molecular-dynamics steps per trajectory (kernels with `hmc`).
    #[arg(long, default_value_t = 10)]
    md_steps: usize,
    /// HMC trajectory length τ, randomised in [τ/2, 3τ/2] unless --fixed-length (kernels
    /// with `hmc`).
    #[arg(long, default_value_t = 1.0)]
    tau: f64,
    /// HMC integrator (kernels with `hmc`).
    #[arg(long, value_enum, default_value = "leapfrog")]
    integrator: IntegratorName,
    /// Keep the HMC trajectory length fixed (kernels with `hmc`).
    #[arg(long)]
    fixed_length: bool,
    /// Initial local Metropolis step size, tuned during thermalisation (kernels with
    /// `local`).
    #[arg(long, default_value_t = 1.0)]
    step_size: f64,
    /// Report and exit 0 even when the diagnostics find the chain unreliable.
    #[arg(long)]
    allow_unreliable: bool,
    /// Also write the JSON report to this file (checked before the run starts).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Flags of `sample` that describe the run itself, besides [`TARGET_FLAGS`] (refused with
/// --config).
const SAMPLE_RUN_FLAGS: [&str; 12] = [
    "model",
    "flow_batch",
    "kernel",
    "n",
    "therm",
    "thin",
    "seed",
    "md_steps",
    "tau",
    "integrator",
    "fixed_length",
    "step_size",
];

impl SampleArgs {
    fn spec(&self, m: &ArgMatches) -> Result<SampleSpec> {
        if let Some(path) = &self.config {
            refuse_given(m, &TARGET_FLAGS, "--config: set it in the runcard")?;
            refuse_given(m, &SAMPLE_RUN_FLAGS, "--config: set it in the runcard")?;
            return Ok(SampleSpec::from_toml_file(path)?);
        }
        self.target.refuse_foreign_couplings(m)?;
        let names = self.kernel.names();
        let needs = [
            ("md_steps", "hmc"),
            ("tau", "hmc"),
            ("integrator", "hmc"),
            ("fixed_length", "hmc"),
            ("step_size", "local"),
            ("flow_batch", "flow"),
        ];
        for (flag, kernel) in needs {
            if given(m, flag) && !names.contains(&kernel) {
                bail!(
                    "{} has no effect: --kernel {} has no `{kernel}`",
                    flag_name(flag),
                    self.kernel
                );
            }
        }
        let (lattice, action) = self.target.resolve(self.model.as_deref())?;
        let kernel = KernelSpec {
            kind: self.kernel.clone(),
            step_size: self.step_size,
            tau: self.tau,
            md_steps: self.md_steps,
            integrator: match self.integrator {
                IntegratorName::Leapfrog => Integrator::Leapfrog,
                IntegratorName::Omelyan => Integrator::Omelyan,
            },
            fixed_length: self.fixed_length,
            flow_batch: self.flow_batch,
        };
        let spec = SampleSpec {
            lattice,
            action,
            kernel,
            n: self.n,
            therm: self.therm,
            thin: self.thin,
            seed: self.seed,
            model: self.model.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Parses `--kernel`, naming the column and what was expected on a malformed expression.
fn kernel_expression(text: &str) -> std::result::Result<KernelExpr, String> {
    parse_kernel(text).map_err(|e| e.to_string())
}

fn print_table(report: &SampleReport) {
    let chains = if report.replicas > 1 {
        format!(" per chain × {} chains", report.replicas)
    } else {
        String::new()
    };
    println!(
        "lattice {:?}  kernel {}  n {}{chains}  acceptance {:.4}  {:.2} s",
        report.lattice, report.kernel, report.n, report.acceptance, report.seconds
    );
    println!(
        "{:<16} {:>14} {:>12} {:>10} {:>8}",
        "observable", "mean", "error", "tau_int", "± tau"
    );
    let number = |x: f64, width: usize, precision: usize| {
        if x.is_finite() {
            format!("{x:>width$.precision$}")
        } else {
            format!("{:>width$}", "undefined")
        }
    };
    let mut caveats = Vec::new();
    for (name, e) in &report.observables {
        let mark = if e.caveat.is_some() { " *" } else { "" };
        println!(
            "{:<16} {:>14.6} {} {} {}{mark}",
            name,
            e.mean,
            number(e.err, 12, 6),
            number(e.tau_int, 10, 3),
            number(e.tau_int_err, 8, 3)
        );
        if let Some(x) = report.exact.as_ref().and_then(|ex| ex.get(name)) {
            let sigmas = if e.err.is_finite() && e.err > 0.0 {
                format!("({:+.1}σ)", (e.mean - x) / e.err)
            } else {
                "(σ undefined)".to_string()
            };
            println!("{:<16} {:>14.6}   {sigmas}", "  exact", x);
        }
        if let Some(c) = &e.caveat {
            caveats.push((name, c));
        }
    }
    for (name, reason) in &report.failures {
        println!("{name:<16} not estimated: {reason}");
    }
    if let (Some(t), Some(e), Some(r)) = (
        report.tau_rej,
        report.tau_rej_err,
        report.longest_rejection_run,
    ) {
        println!(
            "tau_rej          {} {}   longest rejection run {r}",
            number(t, 14, 4),
            number(e, 12, 4)
        );
    }
    if let Some(e) = &report.exp_minus_delta_h {
        println!("<exp(-dH)>       {:>14.6} {}", e.mean, number(e.err, 12, 6));
    }
    let d = &report.diagnostics;
    println!(
        "state changed in {} of {} steps; longest stuck run {} steps ({:.2}%)",
        d.state_changes,
        d.steps,
        d.longest_stuck_run,
        100.0 * d.longest_stuck_fraction
    );
    for f in &d.flows {
        println!(
            "{}: ESS/sample {:.3e}  largest weight {:.3e}  Pareto k {:.2} (limit {:.2})",
            f.label, f.ess_per_sample, f.max_normalised_weight, f.pareto_k, f.pareto_k_threshold
        );
    }
    if !caveats.is_empty() {
        println!("caveats (*):");
        // Estimates that share a caveat are listed together.
        let mut grouped: Vec<(&String, Vec<&String>)> = Vec::new();
        for (name, c) in caveats {
            match grouped.iter_mut().find(|(text, _)| *text == c) {
                Some((_, names)) => names.push(name),
                None => grouped.push((c, vec![name])),
            }
        }
        for (c, names) in grouped {
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let who = if names.len() == report.observables.len() && names.len() > 1 {
                "all estimates".to_string()
            } else {
                names.join(", ")
            };
            println!("  {who}: {c}");
        }
    }
    println!("verdict: {}", report.verdict());
    for f in &d.findings {
        println!("  {f}");
    }
}

fn run_sample(
    args: &SampleArgs,
    m: &ArgMatches,
    signals: &Signals,
    ranks: &Ranks,
) -> Result<ExitCode> {
    let spec = args.spec(m)?;
    if let Some(path) = &args.out {
        latflow::io::check_output_path(path, "out")?;
    }
    let total = spec.therm.saturating_add(spec.n) as u64;
    let mut progress = Progress::new("sample", total, "steps", &args.output);
    let report = latflow::run::sample_replicas(
        &spec,
        ranks.shared.as_ref(),
        &mut |done, _| progress.update(done as u64, ""),
        Some(&signals.stop),
    )?;
    progress.finish();
    let Some(report) = report else {
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(path) = &args.out {
        latflow::io::write_json(path, &report)?;
    }
    if args.output.json {
        let mut value = serde_json::to_value(&report)?;
        value["ranks"] = ranks.shared.size().into();
        println!("{value}");
    } else {
        print_table(&report);
    }
    if report.interrupted {
        let saved = match &args.out {
            Some(path) => format!("; the partial report is in {}", path.display()),
            None => String::new(),
        };
        eprintln!(
            "latflow: {} received: stopped after {} of {} measured steps{saved}",
            signals.name(),
            report.n,
            spec.n
        );
        return Ok(signals.exit_code());
    }
    match report.verdict() {
        Verdict::Unreliable if !args.allow_unreliable => {
            eprintln!(
                "latflow: the chain diagnostics find this run unreliable ({}): its errors are \
                 undefined; exit status {UNRELIABLE_EXIT} (--allow-unreliable to accept)",
                finding_codes(&report, Verdict::Unreliable)
            );
            Ok(ExitCode::from(UNRELIABLE_EXIT))
        }
        Verdict::Unreliable | Verdict::Warning => {
            eprintln!(
                "latflow: warning: {}",
                finding_codes(&report, Verdict::Warning)
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The exit status of a run whose diagnostics say its numbers cannot be trusted.
const UNRELIABLE_EXIT: u8 = 3;

/// The codes of the findings at `severity` or worse, comma-separated.
fn finding_codes(report: &SampleReport, severity: Verdict) -> String {
    let codes: Vec<&str> = report
        .diagnostics
        .findings
        .iter()
        .filter(|f| f.severity >= severity)
        .map(|f| f.code.as_str())
        .collect();
    codes.join(", ")
}

/// Whether `id` was given on the command line (not a default).
fn given(m: &ArgMatches, id: &str) -> bool {
    m.try_get_raw(id).is_ok_and(|v| v.is_some())
        && m.value_source(id) == Some(ValueSource::CommandLine)
}

/// Refuses any of `ids` given on the command line, saying why.
fn refuse_given(m: &ArgMatches, ids: &[&str], why: &str) -> Result<()> {
    match ids.iter().find(|id| given(m, id)) {
        Some(id) => bail!("{} cannot be combined with {why}", flag_name(id)),
        None => Ok(()),
    }
}

/// The flag of an argument id or runcard key: `md_steps` → `--md-steps`.
fn flag_name(id: &str) -> String {
    format!("--{}", id.replace(['_', '.'], "-"))
}

/// SIGINT and SIGTERM: the first sets `stop` (the run finishes its step, saves and exits);
/// a second one ends the process at once.
struct Signals {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicUsize>,
}

impl Signals {
    fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM] {
            flag::register_conditional_shutdown(signal, 128 + signal, stop.clone())
                .context("installing the signal handlers")?;
            flag::register(signal, stop.clone()).context("installing the signal handlers")?;
            flag::register_usize(signal, last.clone(), signal as usize)
                .context("installing the signal handlers")?;
        }
        Ok(Signals { stop, last })
    }

    fn name(&self) -> &'static str {
        match self.last.load(Ordering::SeqCst) as i32 {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a stop request",
        }
    }

    /// 128 + the signal number, as a shell reports a process ended by that signal.
    fn exit_code(&self) -> ExitCode {
        ExitCode::from((128 + self.last.load(Ordering::SeqCst).min(127)) as u8)
    }

    /// Reports a run this signal stopped: with `json`, one line `{"outcome": "stopped",
    /// "signal": ..}` joined by the object `fields`; always `message` (what was stopped,
    /// where the finished work is, how to continue) on stderr. Returns the exit code.
    fn report_stop(&self, json: bool, fields: serde_json::Value, message: &str) -> ExitCode {
        let signal = self.name();
        if json {
            let mut value = serde_json::json!({ "outcome": "stopped", "signal": signal });
            if let (Some(all), serde_json::Value::Object(extra)) = (value.as_object_mut(), fields) {
                all.extend(extra);
            }
            println!("{value}");
        }
        eprintln!("latflow: {signal} received: {message}");
        self.exit_code()
    }
}

/// Progress of a long job on stderr: a bar on a terminal, a plain line with rate and ETA
/// every `--progress-interval` seconds otherwise (log files, batch jobs), nothing with
/// `--quiet`.
enum Progress {
    Bar(ProgressBar),
    Lines {
        label: String,
        unit: String,
        total: u64,
        start: Instant,
        interval: Duration,
        last: Instant,
    },
    Quiet,
}

impl Progress {
    fn new(label: &str, total: u64, unit: &str, output: &OutputArgs) -> Self {
        if output.quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{label} {{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}  {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            return Progress::Bar(bar);
        }
        let now = Instant::now();
        let interval = Duration::from_secs_f64(output.progress_interval.min(1e9));
        Progress::Lines {
            label: label.to_string(),
            unit: unit.to_string(),
            total,
            start: now,
            interval,
            last: now,
        }
    }

    fn update(&mut self, done: u64, message: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(done);
                if !message.is_empty() {
                    bar.set_message(message.to_string());
                }
            }
            Progress::Lines {
                label,
                unit,
                total,
                start,
                interval,
                last,
            } => {
                let now = Instant::now();
                if now.duration_since(*last) < *interval && done < *total {
                    return;
                }
                *last = now;
                let elapsed = now.duration_since(*start).as_secs_f64();
                let rate = done as f64 / elapsed.max(1e-9);
                let eta = (*total - done.min(*total)) as f64 / rate.max(1e-300);
                eprintln!(
                    "{label}: {done}/{total} {unit} ({:.0} %)  {rate:.1} {unit}/s  \
                     elapsed {}  eta {}  {message}",
                    100.0 * done as f64 / (*total).max(1) as f64,
                    clock(elapsed),
                    clock(eta)
                );
            }
            Progress::Quiet => {}
        }
    }

    fn finish(&mut self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Seconds as h:mm:ss (or m:ss).
fn clock(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, m, s) => format!("{m}:{s:02}"),
        (h, m, s) => format!("{h}:{m:02}:{s:02}"),
    }
}

/// Prints an error once: each cause whose text the message already contains is skipped
/// (an I/O error is part of the library's message), and an invalid parameter is named by
/// the flag the user typed.
fn print_error(e: &anyhow::Error, source: &ParameterSource) {
    let mut text = match e.downcast_ref::<latflow::Error>() {
        Some(latflow::Error::InvalidParameter { name, reason }) => {
            let id = name.replace('.', "_");
            let typed = source.matches.is_some_and(|m| given(m, &id));
            if typed || (source.file.is_none() && source.has_flag(&id)) {
                format!("invalid value for {}: {reason}", flag_name(name))
            } else if let Some(file) = source.file {
                format!("invalid value of `{name}` in the {file}: {reason}")
            } else {
                e.to_string()
            }
        }
        _ => e.to_string(),
    };
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    eprintln!("error: {text}");
}

/// Where the parameters of a run came from, to name a refused one as the user gave it.
struct ParameterSource<'a> {
    /// The subcommand's parsed command line.
    matches: Option<&'a ArgMatches>,
    /// The subcommand's definition (its flags).
    command: Option<&'a clap::Command>,
    /// `Some("runcard")` or `Some("checkpoint")` when the run came from a file.
    file: Option<&'static str>,
}

impl ParameterSource<'_> {
    fn has_flag(&self, id: &str) -> bool {
        self.command
            .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == id))
    }
}

fn main() -> ExitCode {
    let definition = Cli::command();
    let matches = if std::env::args_os().len() <= 1 {
        definition.clone().get_matches_from(["latflow", "run"])
    } else {
        definition.clone().get_matches()
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let ranks = match Ranks::init() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Rank 0 alone shows progress and prints results.
    if !ranks.shared.is_root()
        && let Some(command) = &mut cli.command
    {
        let output = match command {
            Command::Run(a) => &mut a.output,
            Command::Analyse(a) => &mut a.output,
            Command::Sweep(a) => &mut a.output,
            Command::Sample(a) => &mut a.output,
            Command::Train(a) => &mut a.output,
            Command::Curriculum(a) => &mut a.output,
        };
        output.quiet = true;
    }
    let Some(command) = &cli.command else {
        return ExitCode::FAILURE;
    };
    let output = match command {
        Command::Run(a) => &a.output,
        Command::Analyse(a) => &a.output,
        Command::Sweep(a) => &a.output,
        Command::Sample(a) => &a.output,
        Command::Train(a) => &a.output,
        Command::Curriculum(a) => &a.output,
    };
    if !(output.progress_interval.is_finite() && output.progress_interval >= 0.0) {
        eprintln!(
            "error: invalid value for --progress-interval: must be a finite number of seconds \
             ≥ 0, got {}",
            output.progress_interval
        );
        return ExitCode::FAILURE;
    }
    let (sub, file) = match command {
        Command::Run(_) => ("run", Some("runcard")),
        Command::Analyse(_) => ("analyse", Some("runcard")),
        Command::Sweep(_) => ("sweep", Some("runcard")),
        Command::Sample(a) => ("sample", a.config.is_some().then_some("runcard")),
        Command::Train(a) if a.resume.is_some() => ("train", Some("checkpoint")),
        Command::Train(a) => ("train", a.config.is_some().then_some("runcard")),
        Command::Curriculum(_) => ("curriculum", Some("runcard")),
    };
    let source = ParameterSource {
        matches: matches.subcommand_matches(sub),
        command: definition.find_subcommand(sub),
        file,
    };
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            print_error(&e, &source);
            return ExitCode::FAILURE;
        }
    };
    let Some(m) = source.matches else {
        return ExitCode::FAILURE;
    };
    let result = match command {
        Command::Run(args) => ranks
            .require_single("run")
            .and_then(|()| run_study(args, &signals)),
        Command::Analyse(args) => ranks
            .require_single("analyse")
            .and_then(|()| run_analyse(args)),
        Command::Sweep(args) => run_sweep(args, &signals, &ranks),
        Command::Sample(args) => run_sample(args, m, &signals, &ranks),
        Command::Train(args) => run_train(args, m, &signals, &ranks),
        Command::Curriculum(args) => ranks
            .require_single("curriculum")
            .and_then(|()| run_curriculum(args, &signals)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if ranks.shared.size() > 1 {
                eprint!("rank {}: ", ranks.shared.rank());
            }
            print_error(&e, &source);
            ranks.abort_others();
            ExitCode::FAILURE
        }
    }
}

/// The processes of this run: MPI ranks when the program was started by an MPI launcher
/// (`mpirun`, `srun`; built with the `mpi` feature), else this process alone.
struct Ranks {
    shared: Arc<dyn latflow::parallel::Collective>,
    #[cfg(feature = "mpi")]
    mpi: Option<Arc<latflow::parallel::mpi::MpiRanks>>,
}

impl Ranks {
    #[cfg(feature = "mpi")]
    fn init() -> latflow::Result<Ranks> {
        use latflow::parallel::mpi::{MpiRanks, launched_by_mpi};
        if !launched_by_mpi() {
            return Ok(Ranks::single());
        }
        let mpi = Arc::new(MpiRanks::init()?);
        Ok(Ranks {
            shared: mpi.clone(),
            mpi: Some(mpi),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn init() -> latflow::Result<Ranks> {
        Ok(Ranks::single())
    }

    fn single() -> Ranks {
        Ranks {
            shared: Arc::new(latflow::parallel::SingleProcess),
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// Ends the other ranks too after an error on this one (they would otherwise wait for
    /// it in their next collective operation).
    fn abort_others(&self) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi
            && latflow::parallel::Collective::size(mpi.as_ref()) > 1
        {
            mpi.abort(1);
        }
    }

    /// Refuses a command that does not run over several ranks yet.
    fn require_single(&self, command: &str) -> Result<()> {
        if self.shared.size() > 1 {
            bail!(
                "latflow {command} runs as one process; over MPI ranks, run `latflow train`, \
                 `latflow sample` or `latflow sweep` (this job has {} ranks)",
                self.shared.size()
            );
        }
        Ok(())
    }
}

/// Shows a study's stages on stderr: one progress display per stage and a line when it ends.
struct StudyProgress<'a> {
    output: &'a OutputArgs,
    current: Option<(String, Progress, Instant)>,
}

impl latflow::study::StudyObserver for StudyProgress<'_> {
    fn begin(&mut self, stage: &str, total: u64, unit: &str) {
        let progress = Progress::new(stage, total, unit, self.output);
        self.current = Some((stage.to_string(), progress, Instant::now()));
    }

    fn progress(&mut self, done: u64, note: &str) {
        if let Some((_, p, _)) = &mut self.current {
            p.update(done, note);
        }
    }

    fn end(&mut self, outcome: &str) {
        if let Some((stage, mut p, start)) = self.current.take() {
            p.finish();
            if !self.output.quiet {
                eprintln!(
                    "{stage}: {outcome} ({})",
                    clock(start.elapsed().as_secs_f64())
                );
            }
        }
    }
}

fn overrides(texts: &[String]) -> Result<Vec<latflow::study::Override>> {
    Ok(texts
        .iter()
        .map(|t| latflow::study::Override::parse(t))
        .collect::<latflow::Result<_>>()?)
}

fn run_sweep(args: &SweepArgs, signals: &Signals, ranks: &Ranks) -> Result<ExitCode> {
    use latflow::study::{SweepOutcome, SweepSpec};
    let (path, set) = args.card.parts()?;
    let Some(path) = path else {
        bail!("latflow sweep needs a runcard (e.g. examples/sweep_small.toml)");
    };
    let loaded = SweepSpec::load(path, &set)?;
    let points = loaded.spec.points()?.len();
    if !args.output.quiet {
        eprintln!(
            "sweep {} → {}: {points} points",
            loaded.spec.name,
            loaded.spec.out.join(&loaded.spec.name).display()
        );
    }
    let mut observer = StudyProgress {
        output: &args.output,
        current: None,
    };
    let start = Instant::now();
    let outcome = latflow::study::run_sweep(
        &loaded,
        ranks.shared.as_ref(),
        Some(&signals.stop),
        &mut observer,
    )?;
    if !ranks.shared.is_root() {
        return Ok(ExitCode::SUCCESS);
    }
    match outcome {
        SweepOutcome::Finished {
            folder,
            rows,
            reused,
            hmc,
            training_costs,
            comparisons,
        } => {
            if args.output.json {
                // One method without a name: the analyses as objects, else arrays of them.
                let unnamed = training_costs.len() == 1 && training_costs[0].method.is_empty();
                let (training_cost, comparison) = if unnamed {
                    (
                        serde_json::to_value(&training_costs[0])?,
                        serde_json::to_value(comparisons.first())?,
                    )
                } else {
                    (
                        serde_json::to_value(&training_costs)?,
                        serde_json::to_value(&comparisons)?,
                    )
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "folder": folder, "table": folder.join("sweep.csv"), "reused": reused,
                        "seconds": start.elapsed().as_secs_f64(), "rows": rows, "hmc": hmc,
                        "training_cost": training_cost, "sampler_comparison": comparison,
                    })
                );
            } else {
                println!(
                    "{:>4} {:>12} {:>6} {:>6} {:>8} {:>5} {:>11} {:>9} {:>7} {:>7} {:>8} {:>10}",
                    "L",
                    "method",
                    "batch",
                    "iters",
                    "lr",
                    "seed",
                    "configs",
                    "train s",
                    "accept",
                    "tau_rej",
                    "tau|m|",
                    "verdict"
                );
                for r in &rows {
                    let p = &r.point;
                    println!(
                        "{:>4} {:>12} {:>6} {:>6} {:>8} {:>5} {:>11} {:>9.1} {:>7.3} {:>7.2} {:>8.2} {:>10}",
                        p.l,
                        if p.method.is_empty() { "-" } else { &p.method },
                        p.batch,
                        p.iterations,
                        p.lr,
                        p.seed,
                        r.configs_seen,
                        r.train_seconds,
                        r.acceptance,
                        r.tau_rej,
                        r.tau_int_abs_m,
                        r.verdict.to_string()
                    );
                }
                print_hmc_baseline(hmc.as_ref());
                for cost in &training_costs {
                    print_training_cost(cost);
                }
                for c in &comparisons {
                    print_sampler_comparison(c);
                }
                println!(
                    "table: {}  ({} points, {reused} reused, {:.1} s)",
                    folder.join("sweep.csv").display(),
                    rows.len(),
                    start.elapsed().as_secs_f64()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SweepOutcome::Stopped { folder, point } => {
            let message = format!(
                "stopped at point {point}; finished points are kept in {}\n  continue with \
                 the same command",
                folder.display()
            );
            let fields = serde_json::json!({ "point": point, "folder": folder });
            Ok(signals.report_stop(args.output.json, fields, &message))
        }
    }
}

/// The sweep's kernels against tuned HMC: cost per independent configuration per size and
/// the crossover findings.
fn print_sampler_comparison(c: &latflow::study::SamplerComparison) {
    let method = match c.method.as_str() {
        "" => String::new(),
        m => format!(", method {m}"),
    };
    println!(
        "seconds per independent configuration (training amortised over {:.0}{method}):",
        c.amortise_over
    );
    println!(
        "{:>4} {:>16} {:>12} {:>12} {:>12} {:>12}",
        "L", "kernel", "sampling", "amortised", "tuned HMC", "ratio"
    );
    for s in &c.sizes {
        println!(
            "{:>4} {:>16} {:>12.3e} {:>12.3e} {:>12.3e} {:>12.3}",
            s.l,
            s.kernel,
            s.cost,
            s.amortised_cost,
            s.hmc_cost,
            s.cost / s.hmc_cost
        );
    }
    for x in &c.crossovers {
        println!(
            "{} ({}): {}",
            x.kernel,
            if x.amortised { "amortised" } else { "sampling" },
            x.finding
        );
    }
}

fn print_training_cost(cost: &latflow::study::TrainingCost) {
    if !cost.method.is_empty() {
        println!("method {}:", cost.method);
    }
    let target = cost.target_tau_rej;
    for c in &cost.costs {
        println!(
            "L = {}: tau_rej reaches {target} after {:.3e} ± {:.1e} configurations, {:.1} ± {:.1} s \
             of training (xi = {:.3})",
            c.l, c.configs, c.configs_err, c.seconds, c.seconds_err, c.xi
        );
    }
    for (l, why) in &cost.unbracketed {
        println!("L = {l}: tau_rej = {target} {why}");
    }
    match (&cost.fit, &cost.fit_failure) {
        (Some(f), _) => println!(
            "training cost to tau_rej = {target}: configs ~ xi^a, a = {:.2} ± {:.2} (chi2/dof {:.2})",
            f.exponent, f.exponent_err, f.chi2_per_dof
        ),
        (None, Some(why)) => println!("training cost exponent: not fitted ({why})"),
        (None, None) => {}
    }
}

fn print_hmc_baseline(hmc: Option<&latflow::study::HmcBaselineResult>) {
    let Some(hmc) = hmc else { return };
    println!(
        "{:>4} {:>5} {:>6} {:>5} {:>8} {:>16} {:>16} {:>16} {:>12} {:>10}",
        "L",
        "seed",
        "tau",
        "md",
        "accept",
        "xi_2nd",
        "tau_int(|m|)",
        "tau_int(chi)",
        "s/indep",
        "verdict"
    );
    for r in &hmc.rows {
        println!(
            "{:>4} {:>5} {:>6} {:>5} {:>8.3} {:>16} {:>16} {:>16} {:>12.3e} {:>10}",
            r.l,
            r.seed,
            r.tau,
            r.md_steps,
            r.acceptance,
            format!("{:.3} ± {:.3}", r.xi, r.xi_err),
            format!("{:.2} ± {:.2}", r.tau_abs_m, r.tau_abs_m_err),
            format!("{:.2} ± {:.2}", r.tau_chi, r.tau_chi_err),
            r.cost_per_independent,
            r.verdict.to_string()
        );
    }
    match (&hmc.z_fit, &hmc.z_fit_failure) {
        (Some(f), _) => println!(
            "HMC dynamical exponent: tau_int(|m|) ~ xi^z, z = {:.2} ± {:.2} (chi2/dof {:.2})",
            f.exponent, f.exponent_err, f.chi2_per_dof
        ),
        (None, Some(why)) => println!("HMC dynamical exponent: not fitted ({why})"),
        (None, None) => {}
    }
}

fn run_study(args: &RunArgs, signals: &Signals) -> Result<ExitCode> {
    use latflow::study::{Override, StudyOutcome, StudySpec};
    let (path, mut set) = args.card.parts()?;
    if let Some(seed) = args.seed {
        set.push(Override {
            key: "seed".into(),
            value: seed.to_string(),
        });
    }
    let loaded = match path {
        Some(path) => StudySpec::load(path, &set)?,
        None => StudySpec::default_study(&set)?,
    };
    let spec = &loaded.spec;
    if !args.output.quiet {
        eprintln!(
            "study {} → {}: lattice {}, {}, seed {}, samplers {}",
            spec.name,
            spec.folder().display(),
            spec.lattice,
            action_summary(&spec.action),
            spec.seed,
            spec.samplers
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut observer = StudyProgress {
        output: &args.output,
        current: None,
    };
    let outcome = latflow::study::run_study(&loaded, Some(&signals.stop), &mut observer)?;
    match outcome {
        StudyOutcome::Finished(result) => {
            print_study(&result, &args.output)?;
            Ok(ExitCode::SUCCESS)
        }
        StudyOutcome::Stopped { folder, stage } => {
            let message = format!(
                "stopped during {stage}; finished stages are kept in {}\n  continue with the \
                 same command",
                folder.display()
            );
            let fields = serde_json::json!({ "stage": stage, "folder": folder });
            Ok(signals.report_stop(args.output.json, fields, &message))
        }
    }
}

fn run_analyse(args: &AnalyseArgs) -> Result<ExitCode> {
    use latflow::study::Override;
    let mut set = Vec::new();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            latflow::Error::format(
                format!("analysis runcard {}", path.display()),
                e.to_string(),
            )
        })?;
        for (key, value) in &table {
            let toml::Value::Table(analysis) = value else {
                bail!(
                    "analysis runcard {}: `{key}` is not an [analysis] table; only [analysis] \
                     settings can change without re-running the study",
                    path.display()
                );
            };
            if key != "analysis" {
                bail!(
                    "analysis runcard {}: unknown table [{key}]; only [analysis] settings can \
                     change without re-running the study",
                    path.display()
                );
            }
            for (k, v) in analysis {
                set.push(Override {
                    key: format!("analysis.{k}"),
                    value: v.to_string(),
                });
            }
        }
    }
    if let Some(cut) = args.therm_cut {
        set.push(Override {
            key: "analysis.therm_cut".into(),
            value: cut.to_string(),
        });
    }
    if let Some(range) = &args.fit_range {
        let parsed = range.split_once(':').and_then(|(a, b)| {
            Some((
                a.trim().parse::<usize>().ok()?,
                b.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((a, b)) = parsed else {
            bail!("invalid value for --fit-range: `{range}` is not T_MIN:T_MAX (e.g. 1:4)");
        };
        set.push(Override {
            key: "analysis.fit_range".into(),
            value: format!("[{a}, {b}]"),
        });
    }
    if let Some(bins) = args.bins {
        set.push(Override {
            key: "analysis.histogram_bins".into(),
            value: bins.to_string(),
        });
    }
    set.extend(overrides(&args.set)?);
    let mut progress = Progress::new(
        "analyse",
        latflow::study::REPORT_FILES as u64,
        "files",
        &args.output,
    );
    let result = latflow::study::analyse_folder(&args.folder, &set, &mut |done| {
        progress.update(done as u64, "")
    })?;
    progress.finish();
    print_study(&result, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// A TOML string literal.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn action_summary(action: &ActionSpec) -> String {
    match *action {
        ActionSpec::Phi4 { beta, lambda } => {
            format!("phi4 (hopping) beta = {beta}, lambda = {lambda}")
        }
        ActionSpec::Phi4Standard { m0sq, g0 } => {
            format!("phi4 (standard) m0sq = {m0sq}, g0 = {g0}")
        }
        ActionSpec::Phi4Quartic { m2, lambda } => {
            format!("phi4 (quartic) m2 = {m2}, lambda = {lambda}")
        }
        ActionSpec::Free { mass } => format!("free field, mass = {mass}"),
    }
}

fn print_study(result: &latflow::study::StudyResult, output: &OutputArgs) -> Result<()> {
    let summary = &result.summary;
    let spec = &summary.study;
    let index = result.folder.join("index.html");
    if output.json {
        let samplers: Vec<_> = summary
            .samplers
            .iter()
            .map(|s| {
                let fit = s.fit.fit.as_ref();
                serde_json::json!({
                    "name": s.name, "kernel": s.kernel, "acceptance": s.report.acceptance,
                    "acceptance_by_kernel": s.report.acceptance_by_move,
                    "steps_per_second": 1.0 / s.seconds_per_step, "slowest": s.slowest,
                    "tau_max": s.tau_max, "tau_max_err": s.tau_max_err,
                    "cost_per_independent": s.cost_per_independent,
                    "cost_per_independent_err": s.cost_per_independent_err,
                    "xi_fit": fit.map(|f| f.xi), "xi_fit_err": fit.map(|f| f.xi_err),
                    "chi2_per_dof": fit.map(|f| f.chi2_per_dof),
                    "verdict": s.report.verdict,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "name": summary.name, "folder": result.folder, "index": index,
                "summary": result.folder.join("summary.json"),
                "lattice": spec.lattice.extents(), "action": spec.action, "seed": spec.seed,
                "seconds": result.seconds, "reused": result.reused,
                "training": summary.training, "verdict": summary.verdict, "samplers": samplers,
            })
        );
        return Ok(());
    }
    println!(
        "study {}: lattice {}, {}, seed {}",
        summary.name,
        spec.lattice,
        action_summary(&spec.action),
        spec.seed
    );
    if let Some(t) = &summary.training {
        println!(
            "training: {} parameters, {} configurations in {:.1} s, acceptance {:.3}",
            t.n_params, t.configs_seen, t.seconds, t.acceptance
        );
    }
    println!(
        "{:<14} {:>26} {:>10} {:>22} {:>24} {:>18} {:>10}",
        "sampler",
        "acceptance",
        "steps/s",
        "tau_max (observable)",
        "s per indep. config",
        "xi (cosh fit)",
        "verdict"
    );
    for s in &summary.samplers {
        let xi = s.fit.fit.as_ref().map_or("-".to_string(), |f| {
            format!("{:.3} ± {:.3}", f.xi, f.xi_err)
        });
        println!(
            "{:<14} {:>26} {:>10.0} {:>22} {:>24} {:>18} {:>10}",
            s.name,
            latflow::study::acceptance_text(s),
            1.0 / s.seconds_per_step,
            format!("{:.2} ± {:.2} ({})", s.tau_max, s.tau_max_err, s.slowest),
            format!(
                "{:.3e} ± {:.1e}",
                s.cost_per_independent, s.cost_per_independent_err
            ),
            xi,
            s.report.verdict.to_string()
        );
    }
    for s in &summary.samplers {
        for f in &s.report.diagnostics.findings {
            eprintln!("{}: {} {}: {}", s.name, f.severity, f.code, f.message);
        }
    }
    if !result.reused.is_empty() {
        println!("reused from an earlier run: {}", result.reused.join(", "));
    }
    println!("report: {}  ({:.1} s)", index.display(), result.seconds);
    Ok(())
}
