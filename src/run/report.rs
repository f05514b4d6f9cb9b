//! What a sampling run reports: the [`SampleReport`] with its [`Estimate`]s, built from a
//! run's move history and the summary of its measured series.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ActionSpec, SampleSpec};
use crate::diagnostics::{ChainDiagnostics, Finding, Verdict, diagnose};
use crate::error::Result;
use crate::kernel::ChainRecord;
use crate::observable::Summary;
use crate::stats::{GammaEstimate, nan_if_null};

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
    /// Independent chains combined in this report (over processes, see
    /// [`sample_replicas`](super::sample_replicas), and in lockstep within each, see
    /// `chains`); `n` and `therm` are per chain.
    #[serde(default = "one_replica")]
    pub replicas: usize,
    /// Chains advanced together in one process: `seconds` is their common wall time, so a
    /// step of one chain cost `seconds / (chains × steps)`.
    #[serde(default = "one_replica")]
    pub chains: usize,
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

/// The estimates a chain stuck in one of two Z2 vacua gets wrong: those of m and of |m|
/// (and χ through ⟨m⟩²).
const Z2_ODD_OBSERVABLES: [&str; 3] = ["m", "abs_m", "chi"];

/// Their caveat when the magnetisation never changed sign.
const SIGN_FROZEN_CAVEAT: &str = "error not reliable: m never changed sign, so the chain \
    stayed in one of the two vacua of a Z2-symmetric action (finding `sign_never_changes`).";

/// The quantities a report estimates (the keys of [`SampleReport::observables`]); the
/// per-t `xi_eff[t]` values stay in the library's [`Summary`].
pub const REPORTED_OBSERVABLES: [&str; 11] = [
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

pub(crate) fn build_report(
    spec: &SampleSpec,
    record: &ChainRecord,
    summary: &Summary,
    seconds: f64,
    exact: Option<BTreeMap<String, f64>>,
) -> SampleReport {
    let mut diagnostics = diagnose(record);
    let reported: Vec<(&str, &GammaEstimate)> = REPORTED_OBSERVABLES
        .iter()
        .filter_map(|&name| summary.get(name).map(|g| (name, g)))
        .collect();
    if !diagnostics.errors_undefined() {
        diagnostics.check_estimates(reported.iter().copied());
    }
    // A Z2-symmetric action whose chain stayed in one vacuum: m and |m| describe that
    // vacuum, and their errors miss the tunnelling between the two.
    let sign_frozen = spec.action.is_z2_symmetric()
        && !diagnostics.errors_undefined()
        && summary
            .get("m_positive")
            .is_some_and(|p| p.mean == 0.0 || p.mean == 1.0);
    if sign_frozen {
        let positive = summary.get("m_positive").is_some_and(|p| p.mean == 1.0);
        diagnostics.check_sign_changes(positive);
    }
    let observables = reported
        .iter()
        .map(|&(name, g)| {
            let (g, mut caveat) = diagnostics.qualify(g);
            if sign_frozen && Z2_ODD_OBSERVABLES.contains(&name) && caveat.is_none() {
                caveat = Some(SIGN_FROZEN_CAVEAT.to_string());
            }
            (name.to_string(), Estimate::new(&g, caveat))
        })
        .collect();
    let failures = summary
        .failures
        .iter()
        .filter(|f| REPORTED_OBSERVABLES.contains(&f.name.as_str()))
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
        action: spec.action.clone(),
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
        chains: 1,
    }
}

/// The report of a run stopped before it made two measurements: no observables, an
/// unreliable verdict saying how far the run got.
pub(crate) fn stopped_report(
    spec: &SampleSpec,
    record: &ChainRecord,
    seconds: f64,
) -> SampleReport {
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
