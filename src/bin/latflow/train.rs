//! `latflow train` and `latflow curriculum`: flow training from flags, a runcard or a
//! checkpoint, with its summary on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, Args, ValueEnum};
use latflow::flow::FreeFieldKind;
use latflow::run::{
    ActionSpec, AnnealSpec, RecipeKind, RecipeSpec, SnfSpec, TrainControl, TrainOutcome, TrainSpec,
};
use latflow::train::{GradientEstimator, OptimizerKind, Schedule, TrainConfig};

use crate::args::{OutputArgs, TargetArgs, arg_ids, flag_name, given, refuse_given, seed_value};
use crate::progress::StageProgress;
use crate::ranks::Ranks;
use crate::signals::Signals;

#[derive(Args)]
pub(crate) struct CurriculumArgs {
    /// The runcard (TOML): `out`, `[recipe]`, optional `init`, and one `[[stage]]` table
    /// per stage with `lattice`, `[stage.action]`, `[stage.train]` and optional
    /// `[stage.anneal]` (see examples/curriculum.toml).
    pub(crate) runcard: PathBuf,
    /// The folder of the stages' models and the report (overrides the runcard's `out`).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Write each stage's checkpoint every this many steps (0: only when interrupted).
    #[arg(long, default_value_t = 100)]
    pub(crate) checkpoint_every: usize,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RecipeName {
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
pub(crate) enum FreeFieldName {
    None,
    /// One σ per class of momenta.
    Classes,
    /// A learnable mass and normalisation.
    Mass,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum GradientName {
    Total,
    Path,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ScheduleName {
    Constant,
    Cosine,
    /// Cosine with warm restarts every --restart-period iterations.
    #[value(name = "warm-restarts")]
    WarmRestarts,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct TrainArgs {
    /// TOML runcard describing the whole training run (lattice, action, recipe, train,
    /// anneal, out); other flags that describe the run are then refused.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (its settings come from the checkpoint;
    /// flags that describe the run are refused).
    #[arg(long, conflicts_with = "config")]
    pub(crate) resume: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    #[command(flatten)]
    pub(crate) method: MethodArgs,
    #[command(flatten)]
    pub(crate) settings: RunSettingsArgs,
    #[command(flatten)]
    pub(crate) snf: SnfArgs,
    /// Where to keep the checkpoint (default: next to the model, NAME.checkpoint.json,
    /// removed when the run finishes).
    #[arg(long)]
    pub(crate) checkpoint: Option<PathBuf>,
    /// Write the checkpoint every this many steps (0: only when interrupted).
    #[arg(long, default_value_t = 100)]
    pub(crate) checkpoint_every: usize,
    /// The training log, one CSV row per step (default: next to the model, NAME.train.csv).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// The flags of `train` that choose the flow and how it is trained: a run with
/// --until-acceptance that gives none of them uses latflow's default method.
#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct MethodArgs {
    /// Flow recipe.
    #[arg(long, value_enum, default_value = "seed")]
    pub(crate) recipe: RecipeName,
    /// Hidden width of the dense nets (default |Λ|; not for --recipe conv).
    #[arg(long, default_value_t = 0)]
    pub(crate) hidden: usize,
    /// Hidden layers of the nets (--recipe real-nvp, additive or conv).
    #[arg(long, default_value_t = 1)]
    pub(crate) depth: usize,
    /// Affine (or additive, or convolutional) coupling blocks.
    #[arg(long, default_value_t = 2)]
    pub(crate) affine_blocks: usize,
    /// Spline segments K (--recipe seed; conv and multiscale with --spline).
    #[arg(long, default_value_t = 8)]
    pub(crate) segments: usize,
    /// Channels of the convolutional nets (--recipe conv, multiscale).
    #[arg(long, default_value_t = 8)]
    pub(crate) channels: usize,
    /// Coarse levels (--recipe multiscale): the extents must be divisible by 2^levels.
    #[arg(long, default_value_t = 2)]
    pub(crate) levels: usize,
    /// A spline block of --segments segments on top (--recipe conv, multiscale).
    #[arg(long)]
    pub(crate) spline: bool,
    /// A free-field layer in front (--recipe conv, multiscale).
    #[arg(long, value_enum, default_value = "none")]
    pub(crate) free_field: FreeFieldName,
    /// Configurations per training step.
    #[arg(long, default_value_t = 500)]
    pub(crate) batch: usize,
    /// Training steps.
    #[arg(long, default_value_t = 750)]
    pub(crate) iterations: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) lr: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "cosine")]
    pub(crate) schedule: ScheduleName,
    /// Period of the warm restarts (--schedule warm-restarts).
    #[arg(long, default_value_t = 100)]
    pub(crate) restart_period: usize,
    /// Factor by which each warm-restart period is longer than the one before (≥ 1).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) restart_growth: f64,
    /// AdamW weight decay (0: plain Adam).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) weight_decay: f64,
    /// Anneal the hopping coupling from this fraction of its target (hopping form).
    #[arg(long)]
    pub(crate) anneal_start: Option<f64>,
    /// Gradient estimator of the reverse KL: total (the derivative of the batch loss) or
    /// path (drops the score term, whose variance does not vanish at the optimum; about
    /// one more input-gradient pass per step).
    #[arg(long, value_enum, default_value = "total")]
    pub(crate) gradient: GradientName,
}

/// The flags of `train` that describe the run without choosing its method: seeds, checks,
/// limits, where it starts and where the model goes.
#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct RunSettingsArgs {
    /// Fraction of training over which the coupling reaches its target (with --anneal-start).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) anneal_over: f64,
    /// Seed of initialisation and latent stream, 0 to 2⁶³ − 1.
    #[arg(long, default_value_t = 1, value_parser = seed_value)]
    pub(crate) seed: u64,
    /// Batch chunks for the data-parallel pass (0: one per thread).
    #[arg(long, default_value_t = 0)]
    pub(crate) chunks: usize,
    /// Evaluate acceptance and ESS every this many steps (0: only at the end); the values
    /// go to the training log.
    #[arg(long, default_value_t = 0)]
    pub(crate) eval_every: usize,
    /// Samples of the final evaluation (and of the evaluations during training, unless
    /// --check-samples is given).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) eval_samples: usize,
    /// Samples of each evaluation during training (--eval-every, the checks of
    /// --until-acceptance): fewer cost less per check and read the acceptance less
    /// precisely (default: --eval-samples).
    #[arg(long)]
    pub(crate) check_samples: Option<usize>,
    /// Stop at the first evaluation whose acceptance reaches this target (0 < A < 1);
    /// --iterations is then the budget. Evaluations every --eval-every steps (25 if 0).
    /// Without any flag that sets the recipe or its training, the run uses latflow's
    /// default method for the lattice (the seed recipe with fewer or narrower nets, path
    /// gradients and a size-dependent budget: see `latflow::run::default_method`).
    #[arg(long)]
    pub(crate) until_acceptance: Option<f64>,
    /// End training after this many seconds of training steps (checked after every step),
    /// then evaluate and write the model as at the end of the budget. The step reached
    /// depends on the machine's speed.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) time_limit: Option<f64>,
    /// Start from the parameters of this model file (trained on another lattice size or at
    /// other couplings) instead of a random initialisation. It must hold a flow of the
    /// configuration the recipe builds here: a --recipe conv flow carries over to any size.
    #[arg(long)]
    pub(crate) init: Option<PathBuf>,
    /// Where to write the trained model.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// The flags of `train` that make the flow the first half of a stochastic normalizing
/// flow.
#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct SnfArgs {
    /// Train a stochastic normalizing flow: the flow followed by this many local sweeps
    /// through (1 − t/n) S₀ + (t/n) S, trained end to end by minimising the path's work
    /// E[W]; `sample --kernel noneq --model` then uses the same protocol.
    #[arg(long)]
    pub(crate) snf_steps: Option<usize>,
    /// Proposal half-width of the SNF's sweeps (with --snf-steps).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) snf_step_size: f64,
    /// The hopping coupling of S₀, φ⁴ with the target's λ (with --snf-steps; default: S₀
    /// is the target itself, and the sweeps only relax the flow's samples).
    #[arg(long)]
    pub(crate) snf_start_beta: Option<f64>,
    /// One more coupling block of the recipe's kind after every K sweeps (with
    /// --snf-steps): ⌊N/K⌋ blocks between the sweeps, trained with the rest.
    #[arg(long, value_name = "K")]
    pub(crate) snf_layers_every: Option<usize>,
}

impl SnfArgs {
    /// The SNF of the flags, if --snf-steps is given, for the target `action`.
    fn spec(&self, m: &ArgMatches, action: &ActionSpec) -> Result<Option<SnfSpec>> {
        let Some(steps) = self.snf_steps else {
            for flag in ["snf_step_size", "snf_start_beta", "snf_layers_every"] {
                if given(m, flag) {
                    bail!("{} has no effect without --snf-steps", flag_name(flag));
                }
            }
            return Ok(None);
        };
        let start = match (self.snf_start_beta, action) {
            (None, action) => action.clone(),
            (Some(beta), ActionSpec::Phi4 { lambda, .. }) => ActionSpec::Phi4 {
                beta,
                lambda: *lambda,
            },
            (Some(_), _) => bail!(
                "--snf-start-beta sets the hopping coupling of φ⁴: it needs --action phi4 \
                 (other start actions go in a runcard's [snf] start table)"
            ),
        };
        Ok(Some(SnfSpec {
            steps,
            step_size: self.snf_step_size,
            start,
            layers_every: self.snf_layers_every,
        }))
    }
}

/// Whether a flag that chooses the flow or how it is trained was given: a run with
/// --until-acceptance and none of them uses latflow's default method.
pub(crate) fn sets_method(m: &ArgMatches) -> bool {
    arg_ids::<MethodArgs>().iter().any(|id| given(m, id))
}

/// The flags of `train` that describe the run (refused with --config and --resume).
fn run_flags() -> Vec<String> {
    let mut ids = arg_ids::<MethodArgs>();
    ids.extend(arg_ids::<RunSettingsArgs>());
    ids.extend(arg_ids::<SnfArgs>());
    ids
}

impl TrainArgs {
    pub(crate) fn spec(&self, m: &ArgMatches) -> Result<TrainSpec> {
        if let Some(path) = &self.config {
            refuse_given(
                m,
                &arg_ids::<TargetArgs>(),
                "--config: set it in the runcard",
            )?;
            refuse_given(m, &run_flags(), "--config: set it in the runcard")?;
            return Ok(TrainSpec::from_toml_file(path)?);
        }
        self.target.refuse_foreign_couplings(m)?;
        let recipe_kind = match self.method.recipe {
            RecipeName::Seed => RecipeKind::Seed,
            RecipeName::RealNvp => RecipeKind::RealNvp,
            RecipeName::Additive => RecipeKind::Additive,
            RecipeName::Z2Affine => RecipeKind::Z2Affine,
            RecipeName::Conv => RecipeKind::Conv,
            RecipeName::Multiscale => RecipeKind::Multiscale,
        };
        let recipe_name = self
            .method
            .recipe
            .to_possible_value()
            .map(|v| v.get_name().to_string());
        let recipe_name = recipe_name.unwrap_or_default();
        for flag in arg_ids::<MethodArgs>() {
            if given(m, &flag) && !recipe_kind.uses(&flag) {
                bail!(
                    "{} has no effect with --recipe {recipe_name}",
                    flag_name(&flag)
                );
            }
        }
        if recipe_kind.is_convolutional() && given(m, "segments") && !self.method.spline {
            bail!("--segments has no effect with --recipe {recipe_name} without --spline");
        }
        for flag in ["restart_period", "restart_growth"] {
            if given(m, flag) && !matches!(self.method.schedule, ScheduleName::WarmRestarts) {
                bail!(
                    "{} has no effect without --schedule warm-restarts",
                    flag_name(flag)
                );
            }
        }
        if given(m, "anneal_over") && self.method.anneal_start.is_none() {
            bail!("--anneal-over has no effect without --anneal-start");
        }
        if !(self.method.weight_decay.is_finite() && self.method.weight_decay >= 0.0) {
            bail!(
                "invalid value for --weight-decay: must be a finite number ≥ 0, got {}",
                self.method.weight_decay
            );
        }
        let out = self
            .settings
            .out
            .clone()
            .context("--out is required: where to write the trained model")?;
        let (lattice, action) = self.target.resolve(None)?;
        let snf = self.snf.spec(m, &action)?;
        if self.settings.until_acceptance.is_some() && !sets_method(m) {
            let (recipe, mut train) = latflow::run::default_method(&lattice);
            train.seed = self.settings.seed;
            train.chunks = self.settings.chunks;
            if given(m, "eval_every") {
                train.eval_every = self.settings.eval_every;
            }
            train.eval_samples = self.settings.eval_samples;
            if self.settings.check_samples.is_some() {
                train.check_samples = self.settings.check_samples;
            }
            train.until_acceptance = self.settings.until_acceptance;
            train.time_limit = self.settings.time_limit;
            return Ok(TrainSpec {
                lattice,
                action,
                recipe,
                train,
                anneal: None,
                snf,
                init: self.settings.init.clone(),
                out,
            });
        }
        if self.method.anneal_start.is_some() && !matches!(action, ActionSpec::Phi4 { .. }) {
            bail!("--anneal-start anneals the hopping coupling: it needs --action phi4");
        }
        let recipe = RecipeSpec {
            kind: recipe_kind,
            hidden: self.method.hidden,
            depth: self.method.depth,
            affine_blocks: self.method.affine_blocks,
            segments: self.method.segments,
            channels: self.method.channels,
            levels: self.method.levels,
            spline: self.method.spline,
            free_field: match self.method.free_field {
                FreeFieldName::None => FreeFieldKind::None,
                FreeFieldName::Classes => FreeFieldKind::Classes,
                FreeFieldName::Mass => FreeFieldKind::Mass,
            },
            ..RecipeSpec::default()
        };
        let mut train = TrainConfig::new(self.method.batch, self.method.iterations, self.method.lr);
        train.schedule = match self.method.schedule {
            ScheduleName::Constant => Schedule::Constant,
            ScheduleName::Cosine => Schedule::Cosine,
            ScheduleName::WarmRestarts => Schedule::WarmRestarts {
                period: self.method.restart_period,
                growth: self.method.restart_growth,
            },
        };
        if self.method.weight_decay > 0.0 {
            train.optimizer = OptimizerKind::adamw(self.method.weight_decay);
        }
        train.seed = self.settings.seed;
        train.chunks = self.settings.chunks;
        train.eval_every = self.settings.eval_every;
        train.eval_samples = self.settings.eval_samples;
        train.check_samples = self.settings.check_samples;
        train.until_acceptance = self.settings.until_acceptance;
        train.time_limit = self.settings.time_limit;
        train.gradient = match self.method.gradient {
            GradientName::Total => GradientEstimator::Total,
            GradientName::Path => GradientEstimator::Path,
        };
        let anneal = self.method.anneal_start.map(|start| AnnealSpec {
            start,
            over: self.settings.anneal_over,
        });
        Ok(TrainSpec {
            lattice,
            action,
            recipe,
            train,
            anneal,
            snf,
            init: self.settings.init.clone(),
            out,
        })
    }
}

/// A path next to `model` with its extension replaced by `suffix`.
pub(crate) fn beside(model: &Path, suffix: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.{suffix}"))
}

pub(crate) fn run_train(
    args: &TrainArgs,
    m: &ArgMatches,
    signals: &Signals,
    ranks: &Ranks,
) -> Result<ExitCode> {
    let (spec, resuming) = match &args.resume {
        Some(path) => {
            let refused: Vec<String> = run_flags().into_iter().filter(|f| f != "out").collect();
            refuse_given(
                m,
                &refused,
                "--resume: the run's settings come from the checkpoint",
            )?;
            let mut spec = latflow::run::checkpoint_spec(path)?;
            if let Some(out) = &args.settings.out {
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
    // The files written, against each other and the files read (named as the user gave
    // them; the library checks the same for its callers).
    let from_file = args.config.is_some() || resuming.is_some();
    let out_name = if from_file && args.settings.out.is_none() {
        "out"
    } else {
        "--out"
    };
    let mut inputs: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(config) = &args.config {
        inputs.push(("--config", config));
    }
    if let Some(init) = &spec.init {
        inputs.push((if from_file { "init" } else { "--init" }, init));
    }
    latflow::io::check_distinct_files(
        &[
            (out_name, &spec.out),
            ("--checkpoint", &checkpoint),
            ("--log", &log),
        ],
        &inputs,
    )?;
    let control = TrainControl {
        checkpoint: Some(&checkpoint),
        checkpoint_every: args.checkpoint_every,
        log: Some(&log),
        stop: &signals.stop,
        ranks: Some(&ranks.shared),
        ..TrainControl::default()
    };
    if let Some(path) = &resuming
        && let Some([before, now]) = latflow::train::checkpoint_chunk_change(path)?
        && ranks.shared.is_root()
    {
        eprintln!(
            "latflow: note: the checkpoint was written by a run with {before} batch chunks (one \
             per thread), this run has {now}: the gradient is summed in another order, so the \
             parameters will differ in their last bits from those of an uninterrupted run \
             (resume with RAYON_NUM_THREADS={before} to continue it bit for bit)"
        );
    }
    if let Some(path) = &resuming
        && let Some([before, now]) =
            latflow::train::checkpoint_rank_change(path, ranks.shared.size())?
        && ranks.shared.is_root()
    {
        eprintln!(
            "latflow: note: the checkpoint was written by a run over {before} process(es) (MPI \
             ranks), this run has {now}: the batches are the same, but the gradient is summed \
             in another order, so the parameters will differ in their last bits from those \
             of an uninterrupted run (resume over {before} ranks to continue it bit for bit)"
        );
    }
    let mut observer = StageProgress::new(&args.output);
    let outcome = match &resuming {
        Some(path) => {
            latflow::run::resume(path, args.settings.out.as_deref(), &control, &mut observer)?
        }
        None => latflow::run::train(&spec, &control, &mut observer)?,
    };
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
            && args.settings.until_acceptance.is_some()
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
                kind => format!(
                    "scalable family: a free-field layer with one σ per class of momenta, \
                     {}{affine} with convolutional nets of {} × {} channels ({}×{} kernels), a \
                     convolutional spline block",
                    if kind == RecipeKind::Multiscale {
                        format!(
                            "a multiscale flow of {} coarse levels (the lattice halved {} times) \
                             with, at every level, ",
                            r.levels, r.levels
                        )
                    } else {
                        String::new()
                    },
                    r.depth,
                    r.channels,
                    r.kernel,
                    r.kernel
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

pub(crate) fn run_curriculum(args: &CurriculumArgs, signals: &Signals) -> Result<ExitCode> {
    let mut spec = latflow::run::CurriculumSpec::from_toml_file(&args.runcard)?;
    if let Some(out) = &args.out {
        spec.out = out.clone();
    }
    let control = TrainControl {
        checkpoint_every: args.checkpoint_every,
        stop: &signals.stop,
        ..TrainControl::default()
    };
    let stages = spec.stages.len();
    let outcome = latflow::run::curriculum(&spec, &control, &mut StageProgress::new(&args.output))?;
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
