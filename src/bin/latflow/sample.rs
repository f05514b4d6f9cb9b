//! `latflow sample`: one Markov chain from flags or a runcard, its report on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{ArgMatches, Args};
use latflow::control::Prefixed;
use latflow::kernel::{Integrator, SweepOrder};
use latflow::run::{
    KernelSpec, NoneqStart, NoneqUpdateKind, SampleReport, SampleSpec, parse_kernel,
};
use latflow::stats::Verdict;

use crate::args::{
    IntegratorName, NoneqStartName, NoneqUpdateName, OutputArgs, SweepOrderName, TargetArgs,
    arg_ids, flag_name, given, refuse_given, seed_value,
};
use crate::output::print_table;
use crate::progress::StageProgress;
use crate::ranks::Ranks;
use crate::signals::Signals;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub(crate) struct SampleArgs {
    /// TOML runcard describing the whole run; flags that describe the run are then refused.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    #[command(flatten)]
    pub(crate) run: SampleRunArgs,
    /// Report and exit 0 even when the diagnostics find the chain unreliable.
    #[arg(long)]
    pub(crate) allow_unreliable: bool,
    /// Also write the JSON report to this file (checked before the run starts).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// The flags of `sample` that describe the run itself (refused with --config, which
/// describes the whole run).
#[derive(Args)]
pub(crate) struct SampleRunArgs {
    /// Trained model file (for kernel expressions with `flow` or `flowhmc`, and the flow
    /// start of `noneq`); the lattice and action come from it, and any given on the command
    /// line must match, except that a kernel with `noneq` and no `flow` or `flowhmc` may
    /// target other couplings than the model was trained for (the protocol leads there).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Flow proposals generated per batch (kernels with `flow`).
    #[arg(long, default_value_t = 1000)]
    pub(crate) flow_batch: usize,
    /// Recycle every flow proposal (kernel `flow`, one chain): blocks of --flow-batch
    /// proposals plus the current state, the next state drawn from the block by weight, and
    /// every measurement the weighted average over the block (exact in a stationary chain;
    /// --n and --therm count proposals). Reports τ_eff, the τ_int of an ordinary chain with
    /// the same error.
    #[arg(long)]
    pub(crate) recycle: bool,
    /// Markov chain kernel: an expression over local, hmc, flow, flowhmc (HMC on the flow's
    /// latent field with the pulled-back action S(f(z)) − log|det ∂f/∂z|) and noneq (a
    /// non-equilibrium evolution from a Gaussian or the flow to the target, accepted by its Jarzynski
    /// work), e.g. `hmc`,
    /// `flow+local*2+hmc` (a cycle: one flow proposal, two local sweeps, one HMC
    /// trajectory), `flowhmc+local`, `(flow+local)*4+hmc` or `mix(0.3: flow, 0.7: hmc)` (one
    /// of them at random, by weight).
    #[arg(long, default_value = "hmc")]
    pub(crate) kernel: String,
    /// Measured steps, each one step of the whole kernel expression (per chain).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) n: usize,
    /// Thermalisation steps.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) therm: usize,
    /// Measure every `thin`-th step.
    #[arg(long, default_value_t = 1)]
    pub(crate) thin: usize,
    /// Seed of the random stream (of the first chain; the others derive theirs from it),
    /// 0 to 2⁶³ − 1.
    #[arg(long, default_value_t = 1, value_parser = seed_value)]
    pub(crate) seed: u64,
    /// Independent chains advanced in lockstep, the flow's passes batched over them, and
    /// analysed together as replicas.
    #[arg(long, default_value_t = 1)]
    pub(crate) chains: usize,
    /// HMC molecular-dynamics steps per trajectory (kernels with `hmc`, and `noneq` with
    /// --noneq-update hmc).
    #[arg(long, default_value_t = 10)]
    pub(crate) md_steps: usize,
    /// HMC trajectory length τ, randomised in [τ/2, 3τ/2] unless --fixed-length (kernels
    /// with `hmc`; fixed in `noneq` with --noneq-update hmc).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) tau: f64,
    /// HMC integrator (kernels with `hmc` or `flowhmc`).
    #[arg(long, value_enum, default_value = "leapfrog")]
    pub(crate) integrator: IntegratorName,
    /// Keep the HMC trajectory length fixed (kernels with `hmc` or `flowhmc`).
    #[arg(long)]
    pub(crate) fixed_length: bool,
    /// Flow-HMC trajectory length τ in the latent space, randomised in [τ/2, 3τ/2] unless
    /// --fixed-length (kernels with `flowhmc`).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) flowhmc_tau: f64,
    /// Flow-HMC molecular-dynamics steps per trajectory (kernels with `flowhmc`).
    #[arg(long, default_value_t = 10)]
    pub(crate) flowhmc_md_steps: usize,
    /// Non-equilibrium protocol steps: intermediate actions (1 − t/n) S₀ + (t/n) S,
    /// t = 1 … n, from the start's action S₀ to the target (kernels with `noneq`; default
    /// 10, or the protocol of a --model trained as a stochastic normalizing flow, which any
    /// of --noneq-steps, --noneq-update, --noneq-step-size replaces).
    #[arg(long)]
    pub(crate) noneq_steps: Option<usize>,
    /// The update at each protocol step: one local sweep, or one HMC trajectory of --tau in
    /// --md-steps leapfrog steps (kernels with `noneq`; default local).
    #[arg(long, value_enum)]
    pub(crate) noneq_update: Option<NoneqUpdateName>,
    /// Proposal half-width of the protocol's local sweeps (kernels with `noneq`; default
    /// 0.5).
    #[arg(long)]
    pub(crate) noneq_step_size: Option<f64>,
    /// Mass² of the free field the protocol starts from (kernels with `noneq`, Gaussian
    /// start).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) noneq_start_m0sq: f64,
    /// Where the protocol starts: the --model's flow (S₀ the action it was trained for; a
    /// model trained as a stochastic normalizing flow brings its protocol too) or the
    /// Gaussian (default: the flow when --model is given).
    #[arg(long, value_enum)]
    pub(crate) noneq_start: Option<NoneqStartName>,
    /// Initial local Metropolis step size, tuned during thermalisation (kernels with
    /// `local`).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) step_size: f64,
    /// Order of the local sweeps: sites in order, a random permutation per sweep, or even
    /// sites then odd sites (vectorised for φ⁴ in two dimensions; needs even extents)
    /// (kernels with `local`).
    #[arg(long, value_enum, default_value = "sequential")]
    pub(crate) sweep_order: SweepOrderName,
}

impl SampleArgs {
    pub(crate) fn spec(&self, m: &ArgMatches) -> Result<SampleSpec> {
        let run = &self.run;
        if let Some(path) = &self.config {
            refuse_given(
                m,
                &arg_ids::<TargetArgs>(),
                "--config: set it in the runcard",
            )?;
            refuse_given(
                m,
                &arg_ids::<SampleRunArgs>(),
                "--config: set it in the runcard",
            )?;
            return Ok(SampleSpec::from_toml_file(path)?);
        }
        self.target.refuse_foreign_couplings(m)?;
        // Parsed here rather than by clap, which would quote the whole text.
        let expression = parse_kernel(&run.kernel)
            .map_err(|e| anyhow::anyhow!("invalid value for --kernel: {e}"))?;
        for id in arg_ids::<SampleRunArgs>() {
            if let Some(kernels) = KernelSpec::kernels_of_setting(&id)
                && given(m, &id)
                && !kernels.iter().any(|k| expression.contains(k))
            {
                bail!(
                    "{} has no effect: --kernel {} has no `{}`",
                    flag_name(&id),
                    expression.abbreviated(),
                    kernels.join("` or `")
                );
            }
        }
        let proposes_from_model = run.kernel.contains("flow") || run.kernel.contains("flowhmc");
        let (lattice, action) = match &run.model {
            Some(model) if run.kernel.contains("noneq") && !proposes_from_model => {
                self.target.resolve_from_start(model)?
            }
            model => self.target.resolve(model.as_deref())?,
        };
        let kernel = KernelSpec {
            kind: expression,
            step_size: run.step_size,
            sweep_order: match run.sweep_order {
                SweepOrderName::Sequential => SweepOrder::Sequential,
                SweepOrderName::Random => SweepOrder::Random,
                SweepOrderName::Checkerboard => SweepOrder::Checkerboard,
            },
            tau: run.tau,
            md_steps: run.md_steps,
            integrator: match run.integrator {
                IntegratorName::Leapfrog => Integrator::Leapfrog,
                IntegratorName::Omelyan => Integrator::Omelyan,
            },
            fixed_length: run.fixed_length,
            flowhmc_tau: run.flowhmc_tau,
            flowhmc_md_steps: run.flowhmc_md_steps,
            noneq_steps: run.noneq_steps,
            noneq_update: run.noneq_update.map(|u| match u {
                NoneqUpdateName::Local => NoneqUpdateKind::Local,
                NoneqUpdateName::Hmc => NoneqUpdateKind::Hmc,
            }),
            noneq_step_size: run.noneq_step_size,
            noneq_start_m0sq: run.noneq_start_m0sq,
            noneq_start: run.noneq_start.map(|s| match s {
                NoneqStartName::Flow => NoneqStart::Flow,
                NoneqStartName::Gaussian => NoneqStart::Gaussian,
            }),
            flow_batch: run.flow_batch,
            ..KernelSpec::default()
        };
        let spec = SampleSpec {
            lattice,
            action,
            kernel,
            n: run.n,
            therm: run.therm,
            thin: run.thin,
            seed: run.seed,
            model: run.model.clone(),
            chains: run.chains,
        };
        spec.validate()?;
        Ok(spec)
    }
}

pub(crate) fn run_sample(
    args: &SampleArgs,
    m: &ArgMatches,
    signals: &Signals,
    ranks: &Ranks,
) -> Result<ExitCode> {
    let spec = args.spec(m)?;
    if let Some(path) = &args.out {
        latflow::io::check_output_path(path, "out")?;
        let mut inputs = Vec::new();
        if let Some(model) = &spec.model {
            let name = if args.config.is_some() {
                "model"
            } else {
                "--model"
            };
            inputs.push((name, model.as_path()));
        }
        if let Some(config) = &args.config {
            inputs.push(("--config", config.as_path()));
        }
        latflow::io::check_distinct_files(&[("--out", path)], &inputs)?;
    }
    if args.run.recycle {
        return run_recycled(args, &spec, signals);
    }
    let report = latflow::run::sample_replicas(
        &spec,
        latflow::run::Registry::builtin(),
        ranks.shared.as_ref(),
        &mut Prefixed::new(&mut StageProgress::new(&args.output), "sample"),
        &signals.stop,
    )?;
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
        let how_far = match report
            .diagnostics
            .findings
            .iter()
            .find(|f| f.code == "stopped_before_measuring")
        {
            Some(finding) => finding.message.clone(),
            None => format!("stopped after {} of {} measured steps", report.n, spec.n),
        };
        eprintln!("latflow: {} received: {how_far}{saved}", signals.name());
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

/// `sample --recycle`: the recycled flow chain, its estimates and what an independent
/// configuration cost.
fn run_recycled(args: &SampleArgs, spec: &SampleSpec, signals: &Signals) -> Result<ExitCode> {
    let run = latflow::run::sample_recycled(
        spec,
        latflow::run::Registry::builtin(),
        &mut Prefixed::new(&mut StageProgress::new(&args.output), "sample"),
        &signals.stop,
    )?;
    if let Some(path) = &args.out {
        latflow::io::write_json(path, &run)?;
    }
    if args.output.json {
        println!("{}", serde_json::to_value(&run)?);
    } else {
        print!("{}", run.summary);
        println!(
            "recycled flow: {} blocks of {} proposals, {:.4e} proposals/s, the state moved in \
             {:.3} of the blocks, ESS per proposal {:.4}, Pareto k̂ {:.2}{}",
            run.measured_blocks,
            run.plan.block,
            run.proposals() as f64 / run.wall_seconds,
            run.moved,
            run.ess,
            run.pareto_k,
            if run.non_finite > 0 {
                format!(", {} proposals with non-finite weight", run.non_finite)
            } else {
                String::new()
            }
        );
        let taus: Vec<String> = run
            .taus
            .iter()
            .map(|t| format!("{} {:.3} ± {:.3}", t.name, t.tau_eff, t.tau_eff_err))
            .collect();
        println!("τ_eff: {}", taus.join(", "));
        if let Some(t) = run.tau_max() {
            let (cost, cost_err) = run.cost_per_independent();
            println!(
                "cost per independent configuration: {cost:.4e} ± {cost_err:.1e} s (2 τ_eff,max \
                 = 2 × {:.3} ({}) proposals at {:.4e} s each)",
                t.tau_eff,
                t.name,
                run.wall_seconds / run.proposals() as f64
            );
        }
    }
    if run.interrupted {
        eprintln!(
            "latflow: {} received: stopped after {} of {} blocks",
            signals.name(),
            run.measured_blocks,
            run.plan.blocks
        );
        return Ok(signals.exit_code());
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit status of a run whose diagnostics say its numbers cannot be trusted.
pub(crate) const UNRELIABLE_EXIT: u8 = 3;

/// The codes of the findings at `severity` or worse, comma-separated.
pub(crate) fn finding_codes(report: &SampleReport, severity: Verdict) -> String {
    let codes: Vec<&str> = report
        .diagnostics
        .findings
        .iter()
        .filter(|f| f.severity >= severity)
        .map(|f| f.code.as_str())
        .collect();
    codes.join(", ")
}
