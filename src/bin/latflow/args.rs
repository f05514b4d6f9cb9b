//! Flags shared by the commands: the runcard and its overrides, the lattice and action,
//! how output is shown, and the helpers that tell which flags the user typed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use latflow::Lattice;
use latflow::run::{ActionSpec, model_target};

use crate::study::{overrides, toml_string};

/// The runcard of a study or sweep and the flags that override it.
#[derive(Args)]
pub(crate) struct RuncardArgs {
    /// The runcard (TOML). `run` without one runs the built-in study (examples/study.toml:
    /// L = 8, β = 0.576, λ = 0.5; flow, flow+local, tuned HMC and local compared); `sweep`
    /// needs one (e.g. examples/sweep_small.toml).
    pub(crate) runcard: Option<PathBuf>,
    /// The runcard, as an option.
    #[arg(long, conflicts_with = "runcard")]
    pub(crate) config: Option<PathBuf>,
    /// Override a runcard key: a dotted path and a TOML value, e.g. `--set measure.n=20000`,
    /// `--set sampler.2.kernel.tau=2.0`, `--set seeds=[1,2,3]` (repeatable; recorded in the
    /// folder's runcard).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// The name (its folder under --out): `--set name=...`.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The folder holding study and sweep folders: `--set out=...`.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl RuncardArgs {
    /// The runcard path, and the overrides of --name, --out and --set.
    pub(crate) fn parts(&self) -> Result<(Option<&PathBuf>, Vec<latflow::study::Override>)> {
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
        refuse_conflicts(&set)?;
        Ok((self.runcard.as_ref().or(self.config.as_ref()), set))
    }
}

/// Refuses two overrides of one key (`--name X` with `--set name=Y`, `analyse --therm-cut`
/// with `--set analysis.therm_cut=…`, or one `--set` key twice): which should win is the
/// user's to say.
pub(crate) fn refuse_conflicts(set: &[latflow::study::Override]) -> Result<()> {
    for (i, o) in set.iter().enumerate() {
        if let Some(first) = set[..i].iter().find(|p| p.key == o.key) {
            let flag = match o.key.as_str() {
                key @ ("name" | "out" | "seed") => format!(" by --{key} and by --set {key}=..."),
                "analysis.therm_cut" | "analysis.fit_range" | "analysis.histogram_bins" => {
                    " (by its flag, the --config file or --set)".to_string()
                }
                _ => String::new(),
            };
            bail!(
                "`{}` is set twice{flag}: {} and {}; give it once",
                o.key,
                first.value,
                o.value
            );
        }
    }
    Ok(())
}

/// Parses a `--seed`: a whole number from 0 to 2⁶³ − 1 = 9223372036854775807, the
/// integers a TOML runcard holds (studies write theirs into their folder's runcard).
pub(crate) fn seed_value(text: &str) -> std::result::Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(seed) if seed <= latflow::run::MAX_SEED => Ok(seed),
        _ => Err(format!(
            "a seed is a whole number from 0 to {} (2⁶³ − 1, the largest integer of a TOML \
             runcard)",
            latflow::run::MAX_SEED
        )),
    }
}

/// How the CLI reports: JSON or a summary, progress display.
#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Print one JSON object to stdout instead of a summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress display.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) progress_interval: f64,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ActionForm {
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
pub(crate) enum IntegratorName {
    Leapfrog,
    Omelyan,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum NoneqUpdateName {
    Local,
    Hmc,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SweepOrderName {
    Sequential,
    Random,
    Checkerboard,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum NoneqStartName {
    /// The run's trained flow (--model).
    Flow,
    /// The free field of mass² --noneq-start-m0sq.
    Gaussian,
}

/// The lattice and the action, in the convention the user chose.
#[derive(Args)]
pub(crate) struct TargetArgs {
    /// Lattice extents, e.g. 8x8 (default 8x8).
    #[arg(long)]
    pub(crate) lattice: Option<String>,
    /// Convention of the action.
    #[arg(long, value_enum, default_value = "phi4")]
    pub(crate) action: ActionForm,
    /// Hopping coupling β (--action phi4).
    #[arg(long)]
    pub(crate) beta: Option<f64>,
    /// Quartic coupling λ (--action phi4 or phi4-quartic).
    #[arg(long)]
    pub(crate) lambda: Option<f64>,
    /// Bare mass squared (--action phi4-standard).
    #[arg(long)]
    pub(crate) m0sq: Option<f64>,
    /// Bare quartic coupling (--action phi4-standard).
    #[arg(long)]
    pub(crate) g0: Option<f64>,
    /// m² (--action phi4-quartic).
    #[arg(long)]
    pub(crate) m2: Option<f64>,
    /// Mass (--action free).
    #[arg(long)]
    pub(crate) mass: Option<f64>,
}

pub(crate) fn need(value: Option<f64>, flag: &str, action: &str) -> Result<f64> {
    value.with_context(|| format!("--action {action} needs --{flag}"))
}

impl TargetArgs {
    /// Refuses couplings the chosen --action does not take (e.g. --beta with --action free).
    pub(crate) fn refuse_foreign_couplings(&self, m: &ArgMatches) -> Result<()> {
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

    pub(crate) fn any_coupling(&self) -> bool {
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

    pub(crate) fn lattice(&self) -> Result<Lattice> {
        Ok(self.lattice.as_deref().unwrap_or("8x8").parse()?)
    }

    pub(crate) fn action(&self) -> Result<ActionSpec> {
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
    pub(crate) fn resolve(&self, model: Option<&std::path::Path>) -> Result<(Lattice, ActionSpec)> {
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

    /// The lattice of `model` (the flags' must match) and the action of the flags, or the
    /// model's when none are given: the target of a `noneq` kernel started from a flow
    /// trained for another action.
    pub(crate) fn resolve_from_start(
        &self,
        model: &std::path::Path,
    ) -> Result<(Lattice, ActionSpec)> {
        let (lattice, recorded) = model_target(model)?;
        if self.lattice.is_some() && self.lattice()? != lattice {
            bail!(
                "--lattice {} does not match the model's lattice {lattice}",
                self.lattice()?
            );
        }
        let action = if self.any_coupling() {
            self.action()?
        } else {
            recorded
        };
        Ok((lattice, action))
    }
}

/// Whether `id` was given on the command line (not a default).
pub(crate) fn given(m: &ArgMatches, id: &str) -> bool {
    m.try_get_raw(id).is_ok_and(|v| v.is_some())
        && m.value_source(id) == Some(ValueSource::CommandLine)
}

/// The ids of the flags a group of arguments defines (as clap derives them from its fields),
/// so that lists of flags follow the argument structs instead of being kept by hand.
pub(crate) fn arg_ids<A: Args>() -> Vec<String> {
    A::augment_args(clap::Command::new("flags"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Refuses any of `ids` given on the command line, saying why.
pub(crate) fn refuse_given<S: AsRef<str>>(m: &ArgMatches, ids: &[S], why: &str) -> Result<()> {
    match ids.iter().map(AsRef::as_ref).find(|id| given(m, id)) {
        Some(id) => bail!("{} cannot be combined with {why}", flag_name(id)),
        None => Ok(()),
    }
}

/// The flag of an argument id or runcard key: `md_steps` → `--md-steps`.
pub(crate) fn flag_name(id: &str) -> String {
    format!("--{}", id.replace(['_', '.'], "-"))
}
