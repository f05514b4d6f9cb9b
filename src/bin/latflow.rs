//! The `latflow` command line: parses flags or a runcard, calls the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use latflow::Lattice;
use latflow::kernel::Integrator;
use latflow::run::{ActionSpec, KernelKind, KernelSpec, SampleReport, SampleSpec, sample};

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
enum KernelName {
    /// Local Metropolis sweeps.
    Local,
    /// Hybrid Monte Carlo.
    Hmc,
    /// One local sweep then one HMC trajectory.
    #[value(name = "local+hmc")]
    LocalHmc,
}

#[derive(Clone, Copy, ValueEnum)]
enum IntegratorName {
    Leapfrog,
    Omelyan,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct SampleArgs {
    /// TOML runcard describing the whole run (flags are then not used).
    #[arg(long, conflicts_with_all = ["lattice", "beta", "m0sq", "m2", "mass"])]
    config: Option<PathBuf>,
    /// Lattice extents, e.g. 8x8.
    #[arg(long, default_value = "8x8")]
    lattice: String,
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
    /// Markov chain kernel.
    #[arg(long, value_enum, default_value = "hmc")]
    kernel: KernelName,
    /// Measured steps: trajectories for HMC, sweeps for local updates.
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

fn need(value: Option<f64>, flag: &str, action: &str) -> Result<f64> {
    value.with_context(|| format!("--action {action} needs --{flag}"))
}

impl SampleArgs {
    fn spec(&self) -> Result<SampleSpec> {
        if let Some(path) = &self.config {
            return Ok(SampleSpec::from_toml_file(path)?);
        }
        let lattice: Lattice = self.lattice.parse()?;
        let action = match self.action {
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
        };
        let kernel = KernelSpec {
            kind: match self.kernel {
                KernelName::Local => KernelKind::Local,
                KernelName::Hmc => KernelKind::Hmc,
                KernelName::LocalHmc => KernelKind::LocalHmc,
            },
            step_size: self.step_size,
            tau: self.tau,
            md_steps: self.md_steps,
            integrator: match self.integrator {
                IntegratorName::Leapfrog => Integrator::Leapfrog,
                IntegratorName::Omelyan => Integrator::Omelyan,
            },
            fixed_length: self.fixed_length,
        };
        let spec = SampleSpec {
            lattice,
            action,
            kernel,
            n: self.n,
            therm: self.therm,
            thin: self.thin,
            seed: self.seed,
        };
        spec.validate()?;
        Ok(spec)
    }
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
    for (name, e) in &report.observables {
        println!(
            "{:<16} {:>14.6} {:>12.6} {:>10.3} {:>8.3}",
            name, e.mean, e.err, e.tau_int, e.tau_int_err
        );
        if let Some(x) = report.exact.as_ref().and_then(|ex| ex.get(name)) {
            println!(
                "{:<16} {:>14.6}   ({:+.1}σ)",
                "  exact",
                x,
                (e.mean - x) / e.err
            );
        }
    }
    for (name, reason) in &report.failures {
        println!("{name:<16} not estimated: {reason}");
    }
    if let Some(e) = &report.exp_minus_delta_h {
        println!("<exp(-dH)>       {:>14.6} {:>12.6}", e.mean, e.err);
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
