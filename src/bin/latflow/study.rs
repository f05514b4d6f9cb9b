//! `latflow run`, `latflow sweep` and `latflow analyse`: studies and sweeps from runcards,
//! their summaries on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::args::{OutputArgs, RuncardArgs, refuse_conflicts, seed_value};
use crate::output::{
    action_summary, print_hmc_baseline, print_sampler_comparison, print_study, print_training_cost,
};
use crate::progress::StageProgress;
use crate::ranks::Ranks;
use crate::signals::Signals;

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) card: RuncardArgs,
    /// The master seed, 0 to 2⁶³ − 1: `--set seed=...`.
    #[arg(long, value_parser = seed_value)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    pub(crate) card: RuncardArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Args)]
pub(crate) struct AnalyseArgs {
    /// The study folder (e.g. latflow-out/phi4-L8).
    pub(crate) folder: PathBuf,
    /// A TOML file with an [analysis] table whose keys override the study's.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Override an analysis key, e.g. `--set analysis.fit_range=[1,4]` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Further measurements dropped at the start of every series: `analysis.therm_cut`.
    #[arg(long)]
    pub(crate) therm_cut: Option<usize>,
    /// The cosh fit range T_MIN:T_MAX: `analysis.fit_range`.
    #[arg(long, value_name = "T_MIN:T_MAX")]
    pub(crate) fit_range: Option<String>,
    /// Histogram bins: `analysis.histogram_bins`.
    #[arg(long)]
    pub(crate) bins: Option<usize>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

pub(crate) fn overrides(texts: &[String]) -> Result<Vec<latflow::study::Override>> {
    Ok(texts
        .iter()
        .map(|t| latflow::study::Override::parse(t))
        .collect::<latflow::Result<_>>()?)
}

pub(crate) fn run_sweep(args: &SweepArgs, signals: &Signals, ranks: &Ranks) -> Result<ExitCode> {
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
    let start = std::time::Instant::now();
    let outcome = latflow::study::run_sweep(
        &loaded,
        ranks.shared.as_ref(),
        &signals.stop,
        &mut StageProgress::new(&args.output),
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

pub(crate) fn run_study(args: &RunArgs, signals: &Signals) -> Result<ExitCode> {
    use latflow::study::{Override, StudyOutcome, StudySpec};
    let (path, mut set) = args.card.parts()?;
    if let Some(seed) = args.seed {
        set.push(Override {
            key: "seed".into(),
            value: seed.to_string(),
        });
        refuse_conflicts(&set)?;
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
    let outcome = latflow::study::run_study(
        &loaded,
        &signals.stop,
        &mut StageProgress::new(&args.output),
    )?;
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

pub(crate) fn run_analyse(args: &AnalyseArgs) -> Result<ExitCode> {
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
    refuse_conflicts(&set)?;
    let result =
        latflow::study::analyse_folder(&args.folder, &set, &mut StageProgress::new(&args.output))?;
    print_study(&result, &args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// A TOML string literal.
pub(crate) fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}
