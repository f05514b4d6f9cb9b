//! Sampling runs: a [`SampleSpec`] in, a [`SampleReport`] out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ActionSpec, model_target};
use crate::action::{Action, Phi4};
use crate::control::{Observer, StopToken};
use crate::diagnostics::{ChainDiagnostics, Finding, Verdict, diagnose};
use crate::error::{Error, Result};
use crate::flow::FlowModel;
use crate::kernel::{
    Chain, ChainRecord, FlowProposal, Hmc, Integrator, KernelExpr, LocalMetropolis, MoveRows,
    Proposal, RunPlan, State,
};
use crate::lattice::Lattice;
use crate::observable::{ActionDensity, Measurements, Summary};
use crate::parallel::Collective;
use crate::rng::splitmix64;
use crate::stats::{GammaEstimate, nan_if_null};

/// The kernel names a kernel expression may use in a run: `local` (one local Metropolis
/// sweep), `hmc` (one HMC trajectory) and `flow` (one proposal of the run's trained flow).
pub const KERNEL_NAMES: [&str; 3] = ["local", "hmc", "flow"];

/// Parses a kernel expression and checks that it names only [`KERNEL_NAMES`].
pub fn parse_kernel(text: &str) -> Result<KernelExpr> {
    let expr = KernelExpr::parse(text)?;
    check_kernel_names(&expr)?;
    Ok(expr)
}

fn check_kernel_names(expr: &KernelExpr) -> Result<()> {
    match expr.names().into_iter().find(|n| !KERNEL_NAMES.contains(n)) {
        Some(unknown) => Err(Error::param(
            "kernel",
            format!(
                "unknown kernel `{unknown}` in `{expr}`: the kernels are {}",
                KERNEL_NAMES.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// The kernel: an expression over `local`, `hmc` and `flow` (see [`KernelExpr`]) and the
/// settings of those kernels. Every occurrence of a name is a kernel of its own with these
/// settings (a local step size adapts separately for each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel expression, e.g. `hmc`, `flow+local*2+hmc` or `mix(0.3: flow, 0.7: hmc)`.
    pub kind: KernelExpr,
    /// Initial local step size δ (tuned during thermalisation).
    pub step_size: f64,
    /// HMC trajectory length τ.
    pub tau: f64,
    /// HMC molecular-dynamics steps per trajectory.
    pub md_steps: usize,
    /// HMC integrator.
    pub integrator: Integrator,
    /// Keep the HMC trajectory length fixed instead of randomising it (not recommended).
    pub fixed_length: bool,
    /// Flow proposals generated per batch.
    pub flow_batch: usize,
}

impl Default for KernelSpec {
    fn default() -> Self {
        KernelSpec {
            kind: KernelExpr::Kernel("hmc".to_string()),
            step_size: 1.0,
            tau: 1.0,
            md_steps: 10,
            integrator: Integrator::Leapfrog,
            fixed_length: false,
            flow_batch: 1000,
        }
    }
}

impl KernelSpec {
    /// True when the expression needs a trained flow.
    pub fn uses_flow(&self) -> bool {
        self.kind.contains("flow")
    }

    /// Checks the settings of the kernels the expression uses: `tau` positive and finite
    /// and `md_steps` between 1 and 2³² − 1 for `hmc`, `step_size` positive and finite for
    /// `local`, `flow_batch` at least 1 for `flow`.
    pub fn validate_settings(&self) -> Result<()> {
        if self.kind.contains("hmc") {
            if !(self.tau.is_finite() && self.tau > 0.0) {
                return Err(Error::param(
                    "tau",
                    format!("must be positive and finite, got {}", self.tau),
                ));
            }
            if self.md_steps == 0 || self.md_steps > u32::MAX as usize {
                return Err(Error::param(
                    "md_steps",
                    format!("must be between 1 and {}, got {}", u32::MAX, self.md_steps),
                ));
            }
        }
        if self.kind.contains("local") && !(self.step_size.is_finite() && self.step_size > 0.0) {
            return Err(Error::param(
                "step_size",
                format!("must be positive and finite, got {}", self.step_size),
            ));
        }
        if self.uses_flow() && self.flow_batch == 0 {
            return Err(Error::param("flow_batch", "must be at least 1"));
        }
        Ok(())
    }

    /// Move records and site updates of one step of the expression on `volume` sites (a
    /// mixture counted as its most expensive part, an HMC trajectory at its longest).
    fn step_cost(&self, volume: usize) -> StepCost {
        let volume = volume as u128;
        let md_steps = self.md_steps as u128;
        let hmc_steps = if self.fixed_length {
            md_steps
        } else {
            (3 * md_steps / 2).max(1)
        };
        fn walk(expr: &KernelExpr, sites: &dyn Fn(&str) -> u128) -> StepCost {
            match expr {
                KernelExpr::Kernel(name) => StepCost {
                    moves: 1,
                    site_updates: sites(name),
                },
                KernelExpr::Cycle(parts) => parts.iter().fold(
                    StepCost {
                        moves: 0,
                        site_updates: 0,
                    },
                    |acc, part| {
                        let c = walk(part, sites);
                        StepCost {
                            moves: acc.moves.saturating_add(c.moves),
                            site_updates: acc.site_updates.saturating_add(c.site_updates),
                        }
                    },
                ),
                KernelExpr::Repeat(inner, times) => {
                    let c = walk(inner, sites);
                    StepCost {
                        moves: c.moves.saturating_mul(*times as u128),
                        site_updates: c.site_updates.saturating_mul(*times as u128),
                    }
                }
                KernelExpr::Mixture(parts) => parts.iter().fold(
                    StepCost {
                        moves: 0,
                        site_updates: 0,
                    },
                    |acc, (_, part)| {
                        let c = walk(part, sites);
                        StepCost {
                            moves: acc.moves.max(c.moves),
                            site_updates: acc.site_updates.max(c.site_updates),
                        }
                    },
                ),
            }
        }
        walk(&self.kind, &|name| match name {
            "hmc" => volume.saturating_mul(hmc_steps.saturating_add(1)),
            _ => volume,
        })
    }

    /// Builds the expression's kernel for `action`; `model` is the flow behind every `flow`
    /// in it (an error when the expression names `flow` and `model` is `None`).
    pub fn build<A: Action + 'static>(
        &self,
        action: &Arc<A>,
        model: Option<&Arc<FlowModel>>,
    ) -> Result<Box<dyn Proposal>> {
        check_kernel_names(&self.kind)?;
        self.kind
            .build(&mut |name, label| -> Result<Box<dyn Proposal>> {
                Ok(match name {
                    "local" => Box::new(
                        LocalMetropolis::new(action.clone(), self.step_size)?.with_label(label),
                    ),
                    "hmc" => Box::new(
                        Hmc::new(action.clone(), self.tau, self.md_steps)?
                            .with_integrator(self.integrator)
                            .with_randomised_length(!self.fixed_length)
                            .with_label(label),
                    ),
                    "flow" => {
                        let model = model.ok_or_else(|| {
                            Error::param("model", "the `flow` kernel needs a trained model")
                        })?;
                        Box::new(
                            FlowProposal::new(model.clone(), action.clone(), self.flow_batch)?
                                .with_label(label),
                        )
                    }
                    other => {
                        return Err(Error::param("kernel", format!("unknown kernel `{other}`")));
                    }
                })
            })
    }
}

/// Reads the `kernel` entry of a runcard: either a table of [`KernelSpec`] fields or, as a
/// shorthand, just the expression (`kernel = "flow+local"`, default settings).
/// A list of kernels, each an expression or a table of settings (see
/// [`kernel_table_or_expression`]).
pub(crate) fn kernel_list<'de, D>(deserializer: D) -> std::result::Result<Vec<KernelSpec>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Entry(#[serde(deserialize_with = "kernel_table_or_expression")] KernelSpec);
    Ok(Vec::<Entry>::deserialize(deserializer)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

pub(crate) fn kernel_table_or_expression<'de, D>(
    deserializer: D,
) -> std::result::Result<KernelSpec, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = KernelSpec;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a kernel expression or a table of kernel settings")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<KernelSpec, E> {
            Ok(KernelSpec {
                kind: KernelExpr::parse(text).map_err(E::custom)?,
                ..KernelSpec::default()
            })
        }

        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            map: M,
        ) -> std::result::Result<KernelSpec, M::Error> {
            KernelSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// A complete sampling run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSpec {
    /// The lattice.
    pub lattice: Lattice,
    /// The action.
    pub action: ActionSpec,
    /// The kernel.
    #[serde(default, deserialize_with = "kernel_table_or_expression")]
    pub kernel: KernelSpec,
    /// Measured steps, each one step of the whole kernel expression.
    pub n: usize,
    /// Thermalisation steps before measuring.
    #[serde(default)]
    pub therm: usize,
    /// Measure every `thin`-th step.
    #[serde(default = "one")]
    pub thin: usize,
    /// Seed of the chain's random stream.
    #[serde(default)]
    pub seed: u64,
    /// Trained model file, for expressions with `flow`; it must have been trained for this lattice
    /// and action.
    #[serde(default)]
    pub model: Option<PathBuf>,
}

fn one() -> usize {
    1
}

impl SampleSpec {
    /// Reads a TOML runcard.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let spec: SampleSpec = super::read_runcard(path)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks counts and parameters that do not depend on the action: counts at least 1,
    /// the settings of the kernels the expression uses, at least 2 measurements, no
    /// overflow in the step counts, the memory of the stored series, move records and flow
    /// batches against the memory available, and the run's work (site updates, see
    /// [`crate::limits::MAX_SITE_UPDATES`]). Errors name the runcard key.
    pub fn validate(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::param("n", "must be at least 1"));
        }
        if self.thin == 0 {
            return Err(Error::param("thin", "must be at least 1"));
        }
        check_kernel_names(&self.kernel.kind)?;
        if self.kernel.uses_flow() && self.model.is_none() {
            return Err(Error::param(
                "model",
                format!("kernel {} needs a trained model file", self.kernel.kind),
            ));
        }
        if self.n / self.thin < 2 {
            return Err(Error::param(
                "n",
                format!(
                    "n / thin = {} measurements: at least 2 are needed",
                    self.n / self.thin
                ),
            ));
        }
        self.kernel.validate_settings()?;
        self.check_size()
    }

    /// The memory and work checks of [`SampleSpec::validate`].
    fn check_size(&self) -> Result<()> {
        let volume = self.lattice.volume() as u128;
        let cost = self.kernel.step_cost(self.lattice.volume());
        // The stored series: the fixed observables, the lowest-momentum correlator per
        // direction, the zero-momentum correlator per time slice and the action density, in
        // f64, and the Γ-method's transforms of one series at a time (≈ 64 bytes per value).
        let extent = self.lattice.extents().iter().copied().max().unwrap_or(1) as u128;
        let per_measurement = 8 * (6 + self.lattice.dim() as u128 + extent + 1) + 64;
        let measurements = (self.n / self.thin) as u128;
        let move_bytes = std::mem::size_of::<crate::MoveInfo>() as u128;
        // A flow batch: latent, generated and proposed fields in f32, f64 log-densities.
        let flow_bytes = if self.kernel.uses_flow() {
            self.kernel.flow_batch as u128 * (3 * 4 * volume + 4 * 8)
        } else {
            0
        };
        crate::limits::check_memory_parts(&[
            (
                "n",
                "the stored measurement series",
                measurements.saturating_mul(per_measurement),
            ),
            (
                if cost.moves > self.n as u128 {
                    "kernel"
                } else {
                    "n"
                },
                "the move records",
                (self.n as u128)
                    .saturating_mul(cost.moves)
                    .saturating_mul(move_bytes),
            ),
            ("flow_batch", "the flow proposal batch", flow_bytes),
        ])?;
        let steps = self.therm.checked_add(self.n).ok_or_else(|| {
            Error::param(
                if self.therm >= self.n { "therm" } else { "n" },
                format!(
                    "therm + n = {} + {} steps does not fit in a {}-bit integer",
                    self.therm,
                    self.n,
                    usize::BITS
                ),
            )
        })?;
        let site_updates = (steps as u128).saturating_mul(cost.site_updates);
        // The parameter named is the one furthest above its usual size.
        let mut suspects = vec![
            ("n", self.n as f64 / 10_000.0),
            ("therm", self.therm as f64 / 1_000.0),
            ("kernel", cost.moves as f64),
            ("lattice", volume as f64 / 4096.0),
        ];
        if self.kernel.kind.contains("hmc") {
            suspects.push(("md_steps", self.kernel.md_steps as f64 / 10.0));
        }
        let name = suspects
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("n", |s| s.0);
        crate::limits::check_site_updates(name, site_updates)
    }
}

/// What one step of a kernel expression costs: move records and site updates.
struct StepCost {
    moves: u128,
    site_updates: u128,
}

/// A Γ-method estimate as reported: mean, error, τ_int and its error, and why it may not
/// be trusted. An undefined error or τ_int is NaN (`null` in JSON) and `caveat` says why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The mean.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// Its statistical error (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub err: f64,
    /// Integrated autocorrelation time (in measurements; NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int: f64,
    /// Error of τ_int (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_err: f64,
    /// Why the estimate may not be trusted, in words; `None` when nothing was found.
    pub caveat: Option<String>,
}

impl Estimate {
    /// The estimate as reported, with the caveat `caveat`.
    pub fn new(estimate: &GammaEstimate, caveat: Option<String>) -> Self {
        Estimate {
            mean: estimate.mean,
            err: estimate.err,
            tau_int: estimate.tau_int,
            tau_int_err: estimate.tau_int_err,
            caveat,
        }
    }
}

/// What a sampling run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleReport {
    /// Lattice extents.
    pub lattice: Vec<usize>,
    /// The action as specified.
    pub action: ActionSpec,
    /// The kernel expression, in canonical form.
    pub kernel: String,
    /// Measured steps.
    pub n: usize,
    /// Thermalisation steps.
    pub therm: usize,
    /// Measurement interval.
    pub thin: usize,
    /// Seed.
    pub seed: u64,
    /// Whether the numbers can be trusted: the chain diagnostics' verdict (see
    /// [`SampleReport::verdict`]).
    pub verdict: Verdict,
    /// Overall acceptance (accepted / proposed over all moves).
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Acceptance per kernel label (`"local"`, `"hmc"`, `"flow"`).
    pub acceptance_by_move: BTreeMap<String, f64>,
    /// Wall seconds of thermalisation and measurement.
    pub seconds: f64,
    /// Named estimates: phi2, m, abs_m, m2, energy, action_density, chi, binder, xi_2nd,
    /// xi_eff, xi_fit. When the verdict is [`Verdict::Unreliable`] every error and τ_int is
    /// NaN, with the reason in the estimate's caveat.
    pub observables: BTreeMap<String, Estimate>,
    /// Quantities whose analysis failed, with the reason.
    pub failures: BTreeMap<String, String>,
    /// ⟨e^{−ΔH}⟩ of the HMC trajectories (1 for an exact integrator; over the trajectories
    /// with finite e^{−ΔH}), when HMC ran.
    pub exp_minus_delta_h: Option<Estimate>,
    /// Exact values where known (free field).
    pub exact: Option<BTreeMap<String, f64>>,
    /// The local step size after thermalisation, when local updates ran (of the last local
    /// sweep, when the expression has several local kernels).
    pub local_step_size: Option<f64>,
    /// Rejection-based autocorrelation time of the flow proposals: present (possibly NaN,
    /// `null` in JSON, with the reason in the diagnostics' `tau_rej_caveat`) whenever the
    /// expression has `flow`.
    pub tau_rej: Option<f64>,
    /// Error of `tau_rej`.
    pub tau_rej_err: Option<f64>,
    /// Longest run of consecutive rejected flow proposals (all of them when none was
    /// accepted), whenever the expression has `flow`.
    pub longest_rejection_run: Option<usize>,
    /// The chain diagnostics: findings, acceptance per kernel, state changes and the
    /// longest stuck run, flow-weight and HMC numbers.
    pub diagnostics: ChainDiagnostics,
    /// True when the run was stopped early: `n` is then the number of measured steps made.
    pub interrupted: bool,
    /// Independent chains combined in this report (see [`sample_replicas`]); `n` and
    /// `therm` are per chain.
    #[serde(default = "one_replica")]
    pub replicas: usize,
}

fn one_replica() -> usize {
    1
}

impl SampleReport {
    /// Whether the run's numbers can be trusted: [`Verdict::Unreliable`] when the errors
    /// are undefined (e.g. a frozen chain), [`Verdict::Warning`] when a finding deserves
    /// attention, [`Verdict::Reliable`] otherwise. The findings say why.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

/// Reported quantities; the per-t `xi_eff[t]` values stay in the library's [`Summary`].
const REPORTED: [&str; 11] = [
    "phi2",
    "m",
    "abs_m",
    "m2",
    "energy",
    "action_density",
    "chi",
    "binder",
    "xi_2nd",
    "xi_eff",
    "xi_fit",
];

/// Runs `spec`, reporting progress to `observer` (the stages `thermalise` and `measure`,
/// see [`Chain::run`]) and checking `stop` between blocks of steps.
///
/// A stop ends the run early with what it did kept: the report then has `interrupted` set
/// and `n` the measured steps made; stopped before two measurements were made, it has no
/// observables and an unreliable verdict saying how far the run got. The output file, when
/// the caller writes one, is best checked before with [`crate::io::check_output_path`].
pub fn sample(
    spec: &SampleSpec,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<SampleReport> {
    Ok(sample_data(spec, observer, stop, 0)?.report)
}

/// Everything a sampling run produced, for callers that store and re-analyse it: the report,
/// the move history, every measured series and a thinned set of configurations.
pub struct SampleData {
    /// The report, as [`sample`] returns it.
    pub report: SampleReport,
    /// The move history of the measured steps (its `measurements` are empty: the series are
    /// in `measurements`).
    pub record: ChainRecord,
    /// Every measured series (the set of [`Measurements`] plus `action_density`).
    pub measurements: Measurements,
    /// Saved configurations, evenly spaced over the measurements.
    pub configs: Vec<Vec<f64>>,
    /// The measurement index of each saved configuration.
    pub config_indices: Vec<usize>,
    /// Wall seconds of the measured steps alone (thermalisation excluded).
    pub sampling_seconds: f64,
}

/// Runs `spec` like [`sample`] and keeps the raw output: the series, the move records and
/// about `saved_configs` configurations evenly spaced over the measurements (every
/// ⌈(n/thin)/saved_configs⌉-th; none when 0).
pub fn sample_data(
    spec: &SampleSpec,
    observer: &mut dyn Observer,
    stop: &StopToken,
    saved_configs: usize,
) -> Result<SampleData> {
    spec.validate()?;
    let action = Arc::new(spec.action.build(&spec.lattice)?);
    let model = if spec.kernel.uses_flow() {
        Some(Arc::new(load_model_for(spec)?))
    } else {
        None
    };
    let kernel = spec.kernel.build(&action, model.as_ref())?;
    let initial = initial_state(action.as_ref(), model.as_deref(), spec.seed)?;
    let start = std::time::Instant::now();
    let mut chain = Chain::new(kernel, initial, spec.seed);
    let mut measurements = Measurements::new(&spec.lattice);
    let dyn_action: Arc<dyn Action> = action.clone();
    measurements.add(Box::new(ActionDensity::new(dyn_action)))?;
    let stride = match saved_configs {
        0 => usize::MAX,
        k => (spec.n / spec.thin).div_ceil(k).max(1),
    };
    let mut saved: Vec<(usize, Vec<f64>)> = Vec::new();
    let plan = RunPlan::new(spec.n).therm(spec.therm).thin(spec.thin);
    let record = chain.run(
        &plan,
        &mut |state: &State| {
            let index = measurements.len();
            if index.is_multiple_of(stride) {
                saved.push((index, state.phi().to_vec()));
            }
            measurements.record(state.phi())
        },
        observer,
        stop,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let mut report = if measurements.len() < 2 {
        stopped_report(spec, &record, seconds)
    } else {
        let summary = measurements.summary()?;
        report_from(spec, &record, &summary, seconds)?
    };
    report.n = record.steps;
    report.interrupted = record.interrupted;
    let (config_indices, configs) = saved.into_iter().unzip();
    Ok(SampleData {
        sampling_seconds: record.wall_seconds,
        report,
        record,
        measurements,
        configs,
        config_indices,
    })
}

/// The report of a run stopped before it made two measurements: no observables, an
/// unreliable verdict saying how far the run got.
fn stopped_report(spec: &SampleSpec, record: &ChainRecord, seconds: f64) -> SampleReport {
    let mut report = build_report(spec, record, &Summary::default(), seconds, None);
    let message = if record.thermalised < spec.therm {
        format!(
            "stopped during thermalisation after {} of {} steps: nothing was measured",
            record.thermalised, spec.therm
        )
    } else {
        format!(
            "stopped after {} measured steps, before two measurements were made",
            record.steps
        )
    };
    report.diagnostics.push(Finding {
        code: "stopped_before_measuring".into(),
        severity: Verdict::Unreliable,
        message,
    });
    report.verdict = report.diagnostics.verdict;
    report
}

/// The report of a run of `spec` from its move history and the summary of its measured
/// series (e.g. stored ones, possibly cut); `seconds` is the run's wall time.
pub fn report_from(
    spec: &SampleSpec,
    record: &ChainRecord,
    summary: &Summary,
    seconds: f64,
) -> Result<SampleReport> {
    let exact = spec.action.exact_values(&spec.lattice)?;
    Ok(build_report(spec, record, summary, seconds, exact))
}

/// Separates the seeds of replica chains from other seeds derived from the user seed.
const REPLICA_SALT: u64 = 0x5245_504C_4943_4153;

/// The chain seed of replica `replica` of a run with seed `seed`: `seed` itself for replica
/// 0 (so that it is the chain a single process runs), a seed derived from both for the
/// others.
pub fn replica_seed(seed: u64, replica: usize) -> u64 {
    if replica == 0 {
        seed
    } else {
        splitmix64(splitmix64(seed ^ REPLICA_SALT) ^ replica as u64)
    }
}

/// Runs `spec` as one independent chain per rank of `ranks` and combines them: rank r runs
/// the chain with seed [`replica_seed`]`(spec.seed, r)` (the same thermalisation and
/// length), rank 0 gathers every chain's series and move history and returns the report of
/// all of them ([`combine_replicas`]); the other ranks return `None`. Every rank must make
/// the call. With one rank it is [`sample`].
pub fn sample_replicas(
    spec: &SampleSpec,
    ranks: &dyn Collective,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<Option<SampleReport>> {
    let own = SampleSpec {
        seed: replica_seed(spec.seed, ranks.rank()),
        ..spec.clone()
    };
    let data = sample_data(&own, observer, stop, 0)?;
    if ranks.size() == 1 {
        return Ok(Some(data.report));
    }
    let gathered = ranks.gather_bytes(&encode_replica(&data))?;
    if !ranks.is_root() {
        return Ok(None);
    }
    let parts = gathered
        .iter()
        .enumerate()
        .map(|(r, bytes)| {
            decode_replica(bytes, &spec.lattice)
                .map_err(|e| Error::Communication(format!("the chain of rank {r}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    combine_replicas(spec, &parts).map(Some)
}

/// One chain's share of a replica run: its move history, its measured series, its wall
/// seconds (thermalisation included) and whether it was stopped early.
pub struct ReplicaChain {
    /// The move history of the measured steps.
    pub record: ChainRecord,
    /// The measured series.
    pub measurements: Measurements,
    /// Wall seconds of the chain, thermalisation included.
    pub seconds: f64,
    /// True when the chain stopped before `spec.n` measured steps.
    pub interrupted: bool,
}

impl From<SampleData> for ReplicaChain {
    fn from(data: SampleData) -> Self {
        ReplicaChain {
            seconds: data.report.seconds,
            interrupted: data.report.interrupted,
            record: data.record,
            measurements: data.measurements,
        }
    }
}

/// The report of independent chains of `spec` analysed together: every observable by the
/// Γ-method for replicas (Γ(t) of the fluctuations about the common mean, summed over
/// the chains), diagnostics over all the move histories (plus each
/// chain's own findings when its verdict is worse), `seconds` the longest chain's wall time
/// (they run side by side), `n` the shortest chain's measured steps.
pub fn combine_replicas(spec: &SampleSpec, chains: &[ReplicaChain]) -> Result<SampleReport> {
    let first = chains
        .first()
        .ok_or_else(|| Error::param("replicas", "no chains to combine"))?;
    let views: Vec<&Measurements> = chains.iter().map(|c| &c.measurements).collect();
    let summary = Measurements::summarise(&views)?;
    let mut record = first.record.clone();
    for chain in &chains[1..] {
        record.append(chain.record.clone())?;
    }
    let seconds = chains.iter().map(|c| c.seconds).fold(0.0, f64::max);
    let mut report = report_from(spec, &record, &summary, seconds)?;
    for (r, chain) in chains.iter().enumerate() {
        let own = diagnose(&chain.record);
        if own.verdict > report.diagnostics.verdict {
            report.diagnostics.verdict = own.verdict;
            report.verdict = own.verdict;
        }
        for mut finding in own.findings {
            if finding.severity > Verdict::Reliable
                && !report
                    .diagnostics
                    .findings
                    .iter()
                    .any(|f| f.code == finding.code)
            {
                finding.message = format!("chain {r}: {}", finding.message);
                report.diagnostics.findings.push(finding);
            }
        }
    }
    report.replicas = chains.len();
    report.n = chains.iter().map(|c| c.record.steps).min().unwrap_or(0);
    report.interrupted = chains.iter().any(|c| c.interrupted);
    Ok(report)
}

/// The header of an encoded replica chain; the numbers follow it in little-endian binary.
#[derive(Serialize, Deserialize)]
struct ReplicaHeader {
    names: Vec<String>,
    /// The move labels with their kinds, which the first number of a move row indexes.
    labels: Vec<(String, String)>,
    rows: usize,
    moves: usize,
    steps: usize,
    wall_seconds: f64,
    seconds: f64,
    interrupted: bool,
}

/// A chain's series and move history as bytes: a u64 header length, the JSON header, the
/// series column by column (f64), the moves ([`MoveRows`], f64) and the moves per step
/// (u32).
fn encode_replica(data: &SampleData) -> Vec<u8> {
    let m = &data.measurements;
    let moves = MoveRows::from_moves(&data.record.moves);
    let header = ReplicaHeader {
        names: m.names().to_vec(),
        labels: moves
            .labels
            .iter()
            .map(|(l, k)| (l.to_string(), k.clone()))
            .collect(),
        rows: m.len(),
        moves: data.record.moves.len(),
        steps: data.record.steps,
        wall_seconds: data.record.wall_seconds,
        seconds: data.report.seconds,
        interrupted: data.report.interrupted,
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut bytes = Vec::with_capacity(
        8 + header.len()
            + 8 * header_values(m.names().len(), m.len(), data.record.moves.len())
            + 4 * data.record.moves_per_step.len(),
    );
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for name in m.names() {
        for x in m.series(name).unwrap_or(&[]) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    for row in &moves.rows {
        for x in row {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    for k in &data.record.moves_per_step {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    bytes
}

/// The f64 values of an encoded chain with `names` series of `rows` values and `moves` moves.
fn header_values(names: usize, rows: usize, moves: usize) -> usize {
    names
        .saturating_mul(rows)
        .saturating_add(moves.saturating_mul(5))
}

/// Reads what [`encode_replica`] wrote.
fn decode_replica(bytes: &[u8], lattice: &Lattice) -> Result<ReplicaChain> {
    let bad = |why: &str| Error::format("replica chain", why.to_string());
    let take = |at: usize, len: usize| {
        bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| bad("the data ends early"))
    };
    let header_len = u64::from_le_bytes(take(0, 8)?.try_into().unwrap_or_default());
    let header_len = usize::try_from(header_len).map_err(|_| bad("bad header length"))?;
    let header: ReplicaHeader = serde_json::from_slice(take(8, header_len)?)
        .map_err(|e| Error::format("replica chain header", e.to_string()))?;
    let mut at = 8 + header_len;
    let values = header_values(header.names.len(), header.rows, header.moves);
    let numbers: Vec<f64> = take(at, values.saturating_mul(8))?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    at += values * 8;
    let per_step: Vec<u32> = take(at, header.steps.saturating_mul(4))?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    if at + header.steps * 4 != bytes.len() {
        return Err(bad("trailing bytes after the moves per step"));
    }
    let (series, moves) = numbers.split_at(header.names.len() * header.rows);
    let series: Vec<Vec<f64>> = if header.rows == 0 {
        vec![Vec::new(); header.names.len()]
    } else {
        series.chunks(header.rows).map(<[f64]>::to_vec).collect()
    };
    let measurements = Measurements::from_series(lattice, header.names, series)?;
    let rows = MoveRows {
        labels: header
            .labels
            .iter()
            .map(|(l, k)| (l.as_str().into(), k.clone()))
            .collect(),
        rows: moves
            .chunks_exact(5)
            .map(|r| [r[0], r[1], r[2], r[3], r[4]])
            .collect(),
    };
    let moves = rows.to_moves().map_err(|why| bad(&format!("move {why}")))?;
    let mut record = ChainRecord::from_moves(moves, per_step, header.steps, header.wall_seconds);
    record.interrupted = header.interrupted;
    Ok(ReplicaChain {
        record,
        measurements,
        seconds: header.seconds,
        interrupted: header.interrupted,
    })
}

/// Loads the spec's model, refusing one trained for another lattice or action.
fn load_model_for(spec: &SampleSpec) -> Result<FlowModel> {
    let path = spec
        .model
        .as_deref()
        .ok_or_else(|| Error::param("model", "the flow kernels need a trained model file"))?;
    let (lattice, action) = model_target(path)?;
    if lattice != spec.lattice {
        return Err(Error::Incompatible(format!(
            "model {} was trained on a {lattice} lattice, the run is on {}",
            path.display(),
            spec.lattice
        )));
    }
    if action != spec.action {
        return Err(Error::Incompatible(format!(
            "model {} was trained for {action:?}, the run asks for {:?}",
            path.display(),
            spec.action
        )));
    }
    let model = FlowModel::load_for(path, &spec.lattice)?;
    let f32_bytes = std::mem::size_of::<f32>() as u128;
    crate::limits::check_memory(
        "flow_batch",
        &format!(
            "a batch of {} flow proposals ({} values each on the tape)",
            spec.kernel.flow_batch,
            model.tape_values_per_row()
        ),
        (spec.kernel.flow_batch as u128)
            .saturating_mul(model.tape_values_per_row() as u128)
            .saturating_mul(f32_bytes),
    )?;
    Ok(model)
}

/// Index of the random stream that draws a flow chain's initial configuration (apart from
/// the chain's own stream).
const INITIAL_STATE_STREAM: u64 = 1 << 40;

/// The chain's first configuration: φ = 0, or, for a kernel with flow proposals, one sample
/// of the flow (from a stream of its own derived from the seed). An independence sampler
/// started where the flow puts almost no mass — φ = 0 is such a place for a poorly trained
/// flow of a double-well action — has an enormous weight w = e^{−S}/p̃ there and may reject
/// every proposal; a flow sample is a typical state of the proposal instead.
fn initial_state(action: &Phi4, model: Option<&FlowModel>, seed: u64) -> Result<State> {
    let Some(model) = model else {
        return Ok(State::zero(action));
    };
    let mut rng = crate::rng::stream(seed, INITIAL_STATE_STREAM);
    let (phi, _) = crate::flow::Flow::sample(model, 1, &mut rng)?;
    State::new(action, phi.iter().map(|&x| x as f64).collect())
}

fn build_report(
    spec: &SampleSpec,
    record: &ChainRecord,
    summary: &Summary,
    seconds: f64,
    exact: Option<BTreeMap<String, f64>>,
) -> SampleReport {
    let mut diagnostics = diagnose(record);
    let reported: Vec<(&str, &GammaEstimate)> = REPORTED
        .iter()
        .filter_map(|&name| summary.get(name).map(|g| (name, g)))
        .collect();
    if !diagnostics.errors_undefined() {
        diagnostics.check_estimates(reported.iter().copied());
    }
    let observables = reported
        .iter()
        .map(|&(name, g)| {
            let (g, caveat) = diagnostics.qualify(g);
            (name.to_string(), Estimate::new(&g, caveat))
        })
        .collect();
    let failures = summary
        .failures
        .iter()
        .filter(|f| REPORTED.contains(&f.name.as_str()))
        .map(|f| (f.name.clone(), f.reason.clone()))
        .collect();
    let acceptance_by_move = diagnostics
        .kernels
        .iter()
        .map(|k| (k.label.clone(), k.acceptance))
        .collect();
    // With several HMC or flow occurrences (`hmc#1`, `hmc#2`), the report's single values
    // are the first one's; the diagnostics have each.
    let exp_minus_delta_h = diagnostics
        .hmc
        .first()
        .and_then(|h| h.exp_minus_delta_h.as_ref())
        .map(|g| Estimate::new(g, g.caveat()));
    let flow = if spec.kernel.uses_flow() {
        diagnostics.flows.first()
    } else {
        None
    };
    SampleReport {
        lattice: spec.lattice.extents().to_vec(),
        action: spec.action,
        kernel: spec.kernel.kind.to_string(),
        n: spec.n,
        therm: spec.therm,
        thin: spec.thin,
        seed: spec.seed,
        verdict: diagnostics.verdict,
        acceptance: record.acceptance(),
        acceptance_by_move,
        seconds,
        observables,
        failures,
        exp_minus_delta_h,
        exact,
        local_step_size: record.local_step_size(),
        tau_rej: flow.map(|f| f.tau_rej),
        tau_rej_err: flow.map(|f| f.tau_rej_err),
        longest_rejection_run: flow.map(|f| f.longest_rejection_run),
        diagnostics,
        interrupted: false,
        replicas: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::SingleProcess;

    fn hmc_spec(seed: u64) -> SampleSpec {
        SampleSpec {
            lattice: Lattice::new(&[6, 6]).unwrap(),
            action: ActionSpec::Phi4 {
                beta: 0.537,
                lambda: 0.5,
            },
            kernel: KernelSpec::default(),
            n: 3000,
            therm: 200,
            thin: 1,
            seed,
            model: None,
        }
    }

    #[test]
    fn an_encoded_chain_decodes_to_the_same_series_and_moves() {
        let spec = hmc_spec(4);
        let data = sample_data(&spec, &mut (), &StopToken::new(), 0).unwrap();
        let bytes = encode_replica(&data);
        let chain = decode_replica(&bytes, &spec.lattice).unwrap();
        assert_eq!(chain.measurements.names(), data.measurements.names());
        for name in data.measurements.names() {
            assert_eq!(
                chain.measurements.series(name),
                data.measurements.series(name)
            );
        }
        assert_eq!(chain.record.moves.len(), data.record.moves.len());
        for (a, b) in chain.record.moves.iter().zip(&data.record.moves) {
            assert_eq!(a.to_row(0).map(f64::to_bits), b.to_row(0).map(f64::to_bits));
            assert_eq!(a.kernel, b.kernel);
        }
        assert_eq!(chain.record.moves_per_step, data.record.moves_per_step);
        assert_eq!(chain.seconds, data.report.seconds);
        // Cut or padded data is refused.
        assert!(decode_replica(&bytes[..bytes.len() - 1], &spec.lattice).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_replica(&longer, &spec.lattice).is_err());
    }

    #[test]
    fn replicas_combine_into_one_report_over_all_measurements() {
        let spec = hmc_spec(8);
        // One process: the replica run is the plain run, seed and all.
        let alone = sample_replicas(&spec, &SingleProcess, &mut (), &StopToken::new())
            .unwrap()
            .unwrap();
        let plain = sample(&spec, &mut (), &StopToken::new()).unwrap();
        assert_eq!(alone.observables, plain.observables);
        assert_eq!(alone.replicas, 1);
        // Two chains: replica 0 is the plain chain, replica 1 another seed.
        assert_eq!(replica_seed(spec.seed, 0), spec.seed);
        assert_ne!(replica_seed(spec.seed, 1), spec.seed);
        let chains: Vec<ReplicaChain> = (0..2)
            .map(|r| {
                let own = SampleSpec {
                    seed: replica_seed(spec.seed, r),
                    ..spec.clone()
                };
                sample_data(&own, &mut (), &StopToken::new(), 0)
                    .unwrap()
                    .into()
            })
            .collect();
        let combined = combine_replicas(&spec, &chains).unwrap();
        assert_eq!(combined.replicas, 2);
        assert_eq!(combined.n, spec.n);
        // The mean is the mean over both chains' measurements.
        let pooled: Vec<f64> = chains
            .iter()
            .flat_map(|c| c.measurements.series("abs_m").unwrap().to_vec())
            .collect();
        let mean = pooled.iter().sum::<f64>() / pooled.len() as f64;
        assert!((combined.observables["abs_m"].mean - mean).abs() < 1e-12);
        let steps: usize = chains.iter().map(|c| c.record.steps).sum();
        assert_eq!(combined.diagnostics.steps, steps);
        assert!(combined.observables["abs_m"].err < plain.observables["abs_m"].err);
        assert!(combine_replicas(&spec, &[]).is_err());
    }
}
