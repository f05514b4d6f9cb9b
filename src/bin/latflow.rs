//! The `latflow` command line: parses flags or a runcard, calls the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use latflow::Lattice;
use latflow::kernel::{Integrator, KernelExpr};
use latflow::run::{
    ActionSpec, AnnealSpec, KernelSpec, RecipeKind, RecipeSpec, SampleReport, SampleSpec,
    TrainSpec, model_target, parse_kernel, sample, train,
};
use latflow::train::{OptimizerKind, Schedule, TrainConfig};

#[derive(Parser)]
#[command(
    name = "latflow",
    version,
    about = "Lattice field theory sampling with normalizing flows, HMC and local Metropolis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Markov chain and report observables with Γ-method errors.
    Sample(SampleArgs),
    /// Train a normalizing flow by reverse KL and write the model file.
    Train(TrainArgs),
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
    #[command(flatten)]
    target: TargetArgs,
    /// Flow recipe.
    #[arg(long, value_enum, default_value = "seed")]
    recipe: RecipeName,
    /// Hidden width of the dense nets (default |Λ|).
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    /// Hidden layers of the nets.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Affine (or additive, or convolutional) coupling blocks.
    #[arg(long, default_value_t = 2)]
    affine_blocks: usize,
    /// Spline segments K.
    #[arg(long, default_value_t = 8)]
    segments: usize,
    /// Channels of the convolutional nets.
    #[arg(long, default_value_t = 8)]
    channels: usize,
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
    /// Period of the warm restarts.
    #[arg(long, default_value_t = 100)]
    restart_period: usize,
    /// AdamW weight decay (0: plain Adam).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Anneal the hopping coupling from this fraction of its target (hopping form).
    #[arg(long)]
    anneal_start: Option<f64>,
    /// Fraction of training over which the coupling reaches its target.
    #[arg(long, default_value_t = 0.5)]
    anneal_over: f64,
    /// Seed of initialisation and latent stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Batch chunks for the data-parallel pass (0: one per thread).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Evaluate acceptance and ESS every this many steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Samples of each evaluation.
    #[arg(long, default_value_t = 10_000)]
    eval_samples: usize,
    /// Where to write the trained model.
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object to stdout instead of a summary.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    fn spec(&self) -> Result<TrainSpec> {
        let (lattice, action) = self.target.resolve(None)?;
        let recipe = RecipeSpec {
            kind: match self.recipe {
                RecipeName::Seed => RecipeKind::Seed,
                RecipeName::RealNvp => RecipeKind::RealNvp,
                RecipeName::Additive => RecipeKind::Additive,
                RecipeName::Z2Affine => RecipeKind::Z2Affine,
                RecipeName::Conv => RecipeKind::Conv,
            },
            hidden: self.hidden,
            depth: self.depth,
            affine_blocks: self.affine_blocks,
            segments: self.segments,
            channels: self.channels,
            ..RecipeSpec::default()
        };
        let mut train = TrainConfig::new(self.batch, self.iterations, self.lr);
        train.schedule = match self.schedule {
            ScheduleName::Constant => Schedule::Constant,
            ScheduleName::Cosine => Schedule::Cosine,
            ScheduleName::WarmRestarts => Schedule::WarmRestarts {
                period: self.restart_period,
                growth: 1.0,
            },
        };
        if self.weight_decay > 0.0 {
            train.optimizer = OptimizerKind::adamw(self.weight_decay);
        }
        train.seed = self.seed;
        train.chunks = self.chunks;
        train.eval_every = self.eval_every;
        train.eval_samples = self.eval_samples;
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
            out: self.out.clone(),
        })
    }
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let spec = args.spec()?;
    let bar = ProgressBar::new(spec.train.iterations as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_acceptance = f64::NAN;
    let report = train(&spec, &mut |m| {
        if let Some(e) = &m.eval {
            last_acceptance = e.acceptance;
        }
        bar.set_position(m.iteration as u64 + 1);
        bar.set_message(format!(
            "loss {:.4}  acceptance {:.3}",
            m.loss, last_acceptance
        ));
    })?;
    bar.finish_and_clear();
    if args.json {
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
        println!(
            "acceptance {:.4}  ESS {:.4}  tau_rej {:.3}  mean log w {:.4}  var log w {:.4}  M>0 {:.3}",
            report.acceptance,
            report.ess,
            report.tau_rej,
            report.mean_log_w,
            report.var_log_w,
            report.fraction_positive_m
        );
        println!("model written to {}", report.model.display());
    }
    Ok(())
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
    /// TOML runcard describing the whole run (flags are then not used).
    #[arg(long, conflicts_with_all = ["lattice", "beta", "m0sq", "m2", "mass", "model"])]
    config: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Trained model file (for kernel expressions with `flow`); the lattice and action come
    /// from it, and any given on the command line must match.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Flow proposals generated per batch.
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
    /// HMC molecular-dynamics steps per trajectory.
    #[arg(long, default_value_t = 10)]
    md_steps: usize,
    /// HMC trajectory length τ (randomised in [τ/2, 3τ/2] unless --fixed-length).
    #[arg(long, default_value_t = 1.0)]
    tau: f64,
    /// HMC integrator.
    #[arg(long, value_enum, default_value = "leapfrog")]
    integrator: IntegratorName,
    /// Keep the HMC trajectory length fixed.
    #[arg(long)]
    fixed_length: bool,
    /// Initial local Metropolis step size (tuned during thermalisation).
    #[arg(long, default_value_t = 1.0)]
    step_size: f64,
    /// Print one JSON object to stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl SampleArgs {
    fn spec(&self) -> Result<SampleSpec> {
        if let Some(path) = &self.config {
            return Ok(SampleSpec::from_toml_file(path)?);
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

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_table(report: &SampleReport) {
    println!(
        "lattice {:?}  kernel {}  n {}  acceptance {:.4}  {:.2} s",
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
        for (name, c) in caveats {
            println!("  {name}: {c}");
        }
    }
    println!("verdict: {}", report.verdict());
    for f in &d.findings {
        println!("  {f}");
    }
}

fn run_sample(args: &SampleArgs) -> Result<()> {
    let spec = args.spec()?;
    let bar = progress_bar((spec.therm + spec.n) as u64);
    let report = sample(&spec, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if let Some(path) = &args.out {
        latflow::io::write_json(path, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Sample(args) => run_sample(args),
        Command::Train(args) => run_train(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
