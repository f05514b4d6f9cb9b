//! Chain diagnostics: whether a chain's numbers can be trusted, computed from its
//! [`ChainRecord`] (and, optionally, its Γ-method estimates). A [`ChainDiagnostics`] holds a
//! [`Verdict`], a list of [`Finding`]s (stable code, severity, a sentence saying what to do),
//! acceptance per kernel label, how often and for how long the chain stood still, and for
//! flow proposals and HMC trajectories their own numbers (τ_rej and the longest rejection
//! run, importance-weight ESS and Pareto k̂; ⟨e^{−ΔH}⟩ and divergences).
//!
//! An [`Unreliable`](Verdict::Unreliable) verdict means the chain's error bars are
//! undefined: [`ChainDiagnostics::qualify`] then returns every estimate with NaN errors and
//! the reason. The thresholds are the constants of this module (docs/statistics.md#chain-diagnostics).
//!
//! ```
//! use std::sync::Arc;
//! use latflow::action::Phi4;
//! use latflow::diagnostics::{Verdict, diagnose};
//! use latflow::kernel::{Chain, Hmc};
//! use latflow::{Lattice, State};
//!
//! let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 4)?, 0.5, 0.5)?);
//! // Trajectories of one step of length 100: every one is rejected.
//! let hmc = Hmc::new(action.clone(), 100.0, 1)?;
//! let mut chain = Chain::new(hmc, State::zero(&*action), 1);
//! let record = chain.run_with(200, 1, |_| Ok(()))?;
//! let diagnostics = diagnose(&record);
//! assert_eq!(diagnostics.verdict, Verdict::Unreliable);
//! assert!(diagnostics.has("chain_frozen"));
//! # Ok::<(), latflow::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::{ChainRecord, MoveDetail, MoveInfo};
use crate::stats::{
    GammaEstimate, ess_fraction, gamma_method, longest_rejection_run, max_normalised_weight,
    nan_if_null, pareto_k_hat, pareto_k_threshold, rejection_autocorrelation,
};

pub use crate::stats::Verdict;

/// Fewer steps that changed the state than this: [`Verdict::Unreliable`] (`few_state_changes`).
pub const MIN_STATE_CHANGES: usize = 20;
/// Fewer steps that changed the state than this: [`Verdict::Warning`] (`few_state_changes`).
pub const WARN_STATE_CHANGES: usize = 100;
/// The longest run of steps without any accepted move at least this fraction of the
/// chain: [`Verdict::Unreliable`] (`long_stuck_run`).
pub const MAX_STUCK_FRACTION: f64 = 0.1;
/// The longest run of steps without any accepted move at least this fraction of the
/// chain: [`Verdict::Warning`] (`long_stuck_run`).
pub const WARN_STUCK_FRACTION: f64 = 0.02;
/// A kernel label accepting less than this fraction of its proposals: [`Verdict::Warning`]
/// (`low_acceptance`).
pub const LOW_ACCEPTANCE: f64 = 0.01;
/// Flow proposals whose importance weights amount to fewer than this many effective
/// samples (ESS per sample × proposals): `flow_few_effective_samples`.
pub const MIN_EFFECTIVE_PROPOSALS: f64 = 100.0;
/// An HMC trajectory with |ΔH| above this (or ΔH not finite) counts as a divergence.
pub const DIVERGENCE_DELTA_H: f64 = 1000.0;
/// ⟨e^{−ΔH}⟩ further than this many standard errors from 1: `hmc_energy_violation`.
pub const ENERGY_SIGMAS: f64 = 4.0;

/// One thing the diagnostics found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable snake_case identifier, e.g. `chain_frozen` (listed in docs/statistics.md).
    pub code: String,
    /// [`Verdict::Warning`] or [`Verdict::Unreliable`].
    pub severity: Verdict,
    /// What was found and what to do, in a sentence or two.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.severity, self.code, self.message)
    }
}

/// Proposals and acceptances of one kernel label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelAcceptance {
    /// The kernel label (`local`, `hmc`, `flow` or a user's).
    pub label: String,
    /// Proposals made.
    pub proposed: u64,
    /// Proposals accepted.
    pub accepted: u64,
    /// accepted / proposed (NaN when nothing was proposed).
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
}

/// What the flow proposals of one label say: rejection runs and importance weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowDiagnostics {
    /// The kernel label.
    pub label: String,
    /// Proposals made.
    pub proposals: usize,
    /// Proposals accepted.
    pub accepted: usize,
    /// The rejection-based autocorrelation time τ_rej (in proposals; NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej: f64,
    /// Error of `tau_rej` (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej_err: f64,
    /// Why `tau_rej` is undefined, when it is.
    pub tau_rej_caveat: Option<String>,
    /// The longest run of consecutive rejected proposals (all of them when none was
    /// accepted).
    pub longest_rejection_run: usize,
    /// `longest_rejection_run` / `proposals`.
    #[serde(deserialize_with = "nan_if_null")]
    pub longest_rejection_fraction: f64,
    /// The effective sample size per proposal of the proposals' importance weights
    /// w = e^{−S}/p̃, in (0, 1] (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub ess_per_sample: f64,
    /// The largest normalised weight max w / Σ w (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub max_normalised_weight: f64,
    /// The Pareto shape k̂ of the weights' tail (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub pareto_k: f64,
    /// The k̂ above which the weights are too heavy-tailed at this number of proposals.
    pub pareto_k_threshold: f64,
    /// Why a weight diagnostic is undefined, when one is.
    pub weight_caveat: Option<String>,
}

/// What the HMC trajectories of one label say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcDiagnostics {
    /// The kernel label.
    pub label: String,
    /// Trajectories made.
    pub trajectories: usize,
    /// Trajectories accepted.
    pub accepted: usize,
    /// accepted / trajectories.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// ⟨e^{−ΔH}⟩ over the trajectories with finite e^{−ΔH} (1 for an exact integration),
    /// with its Γ-method error; `None` with fewer than two of them.
    pub exp_minus_delta_h: Option<GammaEstimate>,
    /// Trajectories with |ΔH| > [`DIVERGENCE_DELTA_H`] or ΔH not finite.
    pub divergences: usize,
}

/// The diagnostics of one chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainDiagnostics {
    /// The worst severity among the findings ([`Verdict::Reliable`] without findings).
    pub verdict: Verdict,
    /// Everything found, in the order checked.
    pub findings: Vec<Finding>,
    /// Proposals and acceptances per kernel label, sorted by label.
    pub kernels: Vec<KernelAcceptance>,
    /// Kernel steps in the record.
    pub steps: usize,
    /// Steps in which some move was accepted (the state changed).
    pub state_changes: usize,
    /// The longest run of consecutive steps in which nothing was accepted.
    pub longest_stuck_run: usize,
    /// `longest_stuck_run` / `steps` (NaN for an empty chain).
    #[serde(deserialize_with = "nan_if_null")]
    pub longest_stuck_fraction: f64,
    /// Per flow-proposal label.
    pub flows: Vec<FlowDiagnostics>,
    /// Per HMC label.
    pub hmc: Vec<HmcDiagnostics>,
}

/// Diagnoses a chain from its record; see the module documentation and the constants for
/// what is checked.
pub fn diagnose(record: &ChainRecord) -> ChainDiagnostics {
    let mut labels: Vec<&str> = Vec::new();
    for m in &record.moves {
        if !labels.contains(&m.kernel.as_str()) {
            labels.push(m.kernel.as_str());
        }
    }
    labels.sort_unstable();
    let kernels: Vec<KernelAcceptance> = labels
        .iter()
        .map(|&label| {
            let (proposed, accepted) = record.moves_of(label).fold((0u64, 0u64), |(p, a), m| {
                (p + u64::from(m.proposed), a + u64::from(m.accepted))
            });
            KernelAcceptance {
                label: label.to_string(),
                proposed,
                accepted,
                acceptance: if proposed == 0 {
                    f64::NAN
                } else {
                    accepted as f64 / proposed as f64
                },
            }
        })
        .collect();
    let has_flow = record
        .moves
        .iter()
        .any(|m| matches!(m.detail, MoveDetail::Flow { .. }));
    let pure_flow = has_flow
        && record
            .moves
            .iter()
            .all(|m| matches!(m.detail, MoveDetail::Flow { .. }));
    let has_hmc = record.moves.iter().any(|m| m.delta_h().is_some());
    let mut findings = Vec::new();

    let changes = match record.state_changes() {
        Some(changes) => changes,
        None => {
            findings.push(finding(
                "no_step_boundaries",
                Verdict::Warning,
                "the record's step boundaries do not match its moves: every move is \
                 counted as a step of its own"
                    .to_string(),
            ));
            record.moves.iter().map(|m| m.accepted > 0).collect()
        }
    };
    let steps = changes.len();
    let state_changes = changes.iter().filter(|&&c| c).count();
    let longest_stuck_run = longest_rejection_run(&changes);
    let longest_stuck_fraction = if steps == 0 {
        f64::NAN
    } else {
        longest_stuck_run as f64 / steps as f64
    };
    let hint = remedy(has_flow, has_hmc);
    if steps == 0 {
        findings.push(finding(
            "empty_chain",
            Verdict::Unreliable,
            "the chain made no steps: nothing can be estimated".to_string(),
        ));
    } else if state_changes == 0 {
        findings.push(finding(
            "chain_frozen",
            Verdict::Unreliable,
            format!(
                "no move was accepted in {steps} steps: the chain never left its starting \
                 configuration, so every error is undefined. {hint}"
            ),
        ));
    } else {
        if state_changes < WARN_STATE_CHANGES {
            let severity = if state_changes < MIN_STATE_CHANGES {
                Verdict::Unreliable
            } else {
                Verdict::Warning
            };
            findings.push(finding(
                "few_state_changes",
                severity,
                format!(
                    "the state changed in only {state_changes} of {steps} steps: too few \
                     distinct configurations for trustworthy errors. {hint}"
                ),
            ));
        }
        if longest_stuck_fraction >= WARN_STUCK_FRACTION {
            let severity = if longest_stuck_fraction >= MAX_STUCK_FRACTION {
                Verdict::Unreliable
            } else {
                Verdict::Warning
            };
            findings.push(finding(
                "long_stuck_run",
                severity,
                format!(
                    "the chain stood still for {longest_stuck_run} consecutive steps, {:.1}% \
                     of the run: the errors underestimate the uncertainty. {hint}",
                    100.0 * longest_stuck_fraction
                ),
            ));
        }
    }
    for k in &kernels {
        if k.proposed > 0 && k.acceptance < LOW_ACCEPTANCE {
            let what = if record
                .moves_of(&k.label)
                .any(|m| matches!(m.detail, MoveDetail::Flow { .. }))
            {
                "the flow is far from the target: retrain it (and keep it in `flow+local` or \
                 `flow+hmc`, where it cannot freeze the chain)"
            } else if record.moves_of(&k.label).any(|m| m.delta_h().is_some()) {
                "the integration step τ/md_steps is too large for this action"
            } else {
                "the proposals do not fit the target"
            };
            findings.push(finding(
                "low_acceptance",
                Verdict::Warning,
                format!(
                    "`{}` accepted {} of {} proposals ({:.3}%): {what}.",
                    k.label,
                    k.accepted,
                    k.proposed,
                    100.0 * k.acceptance
                ),
            ));
        }
    }
    let flows: Vec<FlowDiagnostics> = labels
        .iter()
        .filter(|&&l| {
            record
                .moves_of(l)
                .any(|m| matches!(m.detail, MoveDetail::Flow { .. }))
        })
        .map(|&l| flow_diagnostics(record, l))
        .collect();
    for flow in &flows {
        weight_findings(flow, pure_flow, &mut findings);
    }
    let hmc: Vec<HmcDiagnostics> = labels
        .iter()
        .filter(|&&l| record.moves_of(l).any(|m| m.delta_h().is_some()))
        .map(|&l| hmc_diagnostics(record, l))
        .collect();
    for h in &hmc {
        hmc_findings(h, &mut findings);
    }
    let verdict = worst(&findings);
    ChainDiagnostics {
        verdict,
        findings,
        kernels,
        steps,
        state_changes,
        longest_stuck_run,
        longest_stuck_fraction,
        flows,
        hmc,
    }
}

impl ChainDiagnostics {
    /// Whether a finding with `code` was made.
    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }

    /// Adds one [`Verdict::Warning`] finding `estimate_caveats` naming the estimates whose
    /// own Γ-method analysis is doubtful or unreliable (see [`GammaEstimate::caveats`]);
    /// nothing when all are reliable.
    pub fn check_estimates<'a>(
        &mut self,
        estimates: impl IntoIterator<Item = (&'a str, &'a GammaEstimate)>,
    ) {
        let flagged: Vec<String> = estimates
            .into_iter()
            .filter_map(|(name, e)| {
                let codes: Vec<&str> = e.caveats().into_iter().map(|c| c.code()).collect();
                (!codes.is_empty()).then(|| format!("{name} ({})", codes.join(", ")))
            })
            .collect();
        if !flagged.is_empty() {
            self.push(finding(
                "estimate_caveats",
                Verdict::Warning,
                format!(
                    "the Γ-method analysis of {} is not reliable on its own: run a longer \
                     chain (see each estimate's caveat).",
                    flagged.join(", ")
                ),
            ));
        }
    }

    /// Adds the [`Verdict::Warning`] finding `sign_never_changes` for a chain of a
    /// Z2-symmetric action whose magnetisation kept one sign (`positive`: m > 0 throughout)
    /// over every measurement: it stayed in one of the two vacua, so ⟨m⟩ is that vacuum's
    /// value rather than the symmetric ensemble's 0, and the errors of m and |m| miss the
    /// tunnelling between the vacua.
    pub fn check_sign_changes(&mut self, positive: bool) {
        self.push(finding(
            "sign_never_changes",
            Verdict::Warning,
            format!(
                "m stayed {} in every measurement although the action is symmetric under \
                 φ → −φ: the chain sampled one of the two vacua, so ⟨m⟩ is that vacuum's value \
                 (the symmetric ensemble's is 0) and the errors of m, |m| and χ miss the \
                 tunnelling between them. Run much longer, or add a kernel that moves between \
                 the vacua (a flow proposal).",
                if positive { "positive" } else { "negative" }
            ),
        ));
    }

    /// Adds a finding and updates the verdict.
    pub fn push(&mut self, finding: Finding) {
        self.verdict = self.verdict.max(finding.severity);
        self.findings.push(finding);
    }

    /// True when the verdict is [`Verdict::Unreliable`]: the chain's error bars are undefined.
    pub fn errors_undefined(&self) -> bool {
        self.verdict == Verdict::Unreliable
    }

    /// An estimate of this chain as it should be reported, with its caveat: when the chain
    /// is unreliable its error, τ_int and their errors are NaN and the caveat names the
    /// findings; otherwise it is unchanged and the caveat is its own
    /// ([`GammaEstimate::caveat`]).
    pub fn qualify(&self, estimate: &GammaEstimate) -> (GammaEstimate, Option<String>) {
        if !self.errors_undefined() {
            return (*estimate, estimate.caveat());
        }
        let codes: Vec<&str> = self
            .findings
            .iter()
            .filter(|f| f.severity == Verdict::Unreliable)
            .map(|f| f.code.as_str())
            .collect();
        let mut qualified = *estimate;
        qualified.err = f64::NAN;
        qualified.err_err = f64::NAN;
        qualified.tau_int = f64::NAN;
        qualified.tau_int_err = f64::NAN;
        (
            qualified,
            Some(format!(
                "error undefined: the chain is unreliable ({}).",
                codes.join(", ")
            )),
        )
    }
}

fn finding(code: &str, severity: Verdict, message: String) -> Finding {
    Finding {
        code: code.to_string(),
        severity,
        message,
    }
}

fn worst(findings: &[Finding]) -> Verdict {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Verdict::Reliable)
}

/// What to do about a chain that does not move, by the kernels it has.
fn remedy(has_flow: bool, has_hmc: bool) -> &'static str {
    match (has_flow, has_hmc) {
        (true, _) => {
            "With a poor flow use `flow+local` or `flow+hmc` (exact whatever the flow), or \
             retrain the flow."
        }
        (false, true) => "Reduce the HMC step size τ/md_steps, or run a longer chain.",
        (false, false) => "Run a longer chain or tune the kernel's step size.",
    }
}

fn flow_diagnostics(record: &ChainRecord, label: &str) -> FlowDiagnostics {
    let flow_moves = || {
        record
            .moves_of(label)
            .filter(|m| matches!(m.detail, MoveDetail::Flow { .. }))
    };
    let history: Vec<bool> = flow_moves().map(|m| m.accepted > 0).collect();
    let proposals = history.len();
    let accepted = history.iter().filter(|&&a| a).count();
    let (tau_rej, tau_rej_err, tau_rej_caveat) = match rejection_autocorrelation(&history) {
        Ok(r) => (r.tau_rej, r.tau_rej_err, None),
        Err(e) => (f64::NAN, f64::NAN, Some(e.to_string())),
    };
    let longest = longest_rejection_run(&history);
    // A proposal the flow failed on (NaN) has weight 0.
    let log_weights: Vec<f64> = flow_moves()
        .filter_map(MoveInfo::proposal_log_weight)
        .map(|w| if w.is_nan() { f64::NEG_INFINITY } else { w })
        .collect();
    let mut caveats = Vec::new();
    let mut defined = |r: crate::Result<f64>, what: &str| match r {
        Ok(x) => x,
        Err(e) => {
            caveats.push(format!("{what}: {e}"));
            f64::NAN
        }
    };
    let ess_per_sample = defined(ess_fraction(&log_weights), "ESS");
    let max_weight = defined(max_normalised_weight(&log_weights), "largest weight");
    let pareto_k = defined(pareto_k_hat(&log_weights), "Pareto k̂");
    FlowDiagnostics {
        label: label.to_string(),
        proposals,
        accepted,
        tau_rej,
        tau_rej_err,
        tau_rej_caveat,
        longest_rejection_run: longest,
        longest_rejection_fraction: if proposals == 0 {
            f64::NAN
        } else {
            longest as f64 / proposals as f64
        },
        ess_per_sample,
        max_normalised_weight: max_weight,
        pareto_k,
        pareto_k_threshold: pareto_k_threshold(log_weights.len()),
        weight_caveat: (!caveats.is_empty()).then(|| caveats.join("; ")),
    }
}

/// The importance-weight findings of one flow label: Unreliable in a chain of flow
/// proposals only (an independence sampler), Warnings when other kernels keep it exact.
fn weight_findings(flow: &FlowDiagnostics, pure_flow: bool, findings: &mut Vec<Finding>) {
    let severity = if pure_flow {
        Verdict::Unreliable
    } else {
        Verdict::Warning
    };
    // Non-equilibrium evolutions record their moves like flow proposals.
    let evolutions = flow.label.starts_with("noneq");
    let advice = match (pure_flow, evolutions) {
        (true, false) => {
            "The independence sampler cannot be trusted at this length: use `flow+local` or \
             `flow+hmc`, retrain the flow, or run a much longer chain."
        }
        (false, false) => "The flow proposals contribute little; retrain the flow.",
        (true, true) => {
            "The independence sampler cannot be trusted at this length: use more protocol \
             steps (noneq_steps), a start closer to the target, `noneq+local`, or a much \
             longer chain."
        }
        (false, true) => {
            "The evolutions contribute little; use more protocol steps or a start closer to \
             the target."
        }
    };
    if flow.pareto_k > flow.pareto_k_threshold {
        findings.push(finding(
            "flow_weight_tail",
            severity,
            format!(
                "the importance weights of `{}` have a heavy tail (Pareto k̂ = {:.2} > {:.2}): \
                 a few rare configurations dominate. {advice}",
                flow.label, flow.pareto_k, flow.pareto_k_threshold
            ),
        ));
    }
    let effective = flow.ess_per_sample * flow.proposals as f64;
    if effective < MIN_EFFECTIVE_PROPOSALS || flow.ess_per_sample.is_nan() {
        findings.push(finding(
            "flow_few_effective_samples",
            severity,
            format!(
                "the {} proposals of `{}` are worth {:.1} independent samples of the target \
                 (ESS per sample {:.2e}, largest normalised weight {:.3}). {advice}",
                flow.proposals,
                flow.label,
                effective,
                flow.ess_per_sample,
                flow.max_normalised_weight
            ),
        ));
    }
}

fn hmc_diagnostics(record: &ChainRecord, label: &str) -> HmcDiagnostics {
    let trajectories: Vec<(f64, bool)> = record
        .moves_of(label)
        .filter_map(|m| m.delta_h().map(|d| (d, m.accepted > 0)))
        .collect();
    let divergences = trajectories
        .iter()
        .filter(|(d, _)| !d.is_finite() || d.abs() > DIVERGENCE_DELTA_H)
        .count();
    let boltzmann: Vec<f64> = trajectories
        .iter()
        .map(|(d, _)| (-d).exp())
        .filter(|x| x.is_finite())
        .collect();
    let accepted = trajectories.iter().filter(|(_, a)| *a).count();
    HmcDiagnostics {
        label: label.to_string(),
        trajectories: trajectories.len(),
        accepted,
        acceptance: accepted as f64 / trajectories.len() as f64,
        exp_minus_delta_h: gamma_method(&boltzmann).ok(),
        divergences,
    }
}

fn hmc_findings(hmc: &HmcDiagnostics, findings: &mut Vec<Finding>) {
    if hmc.divergences > 0 {
        findings.push(finding(
            "hmc_divergences",
            Verdict::Warning,
            format!(
                "{} of {} `{}` trajectories diverged (|ΔH| > {DIVERGENCE_DELTA_H} or not \
                 finite): reduce the step size τ/md_steps.",
                hmc.divergences, hmc.trajectories, hmc.label
            ),
        ));
    }
    if let Some(e) = &hmc.exp_minus_delta_h {
        let off = if e.err.is_finite() {
            (e.mean - 1.0).abs() > ENERGY_SIGMAS * e.err
        } else {
            e.mean != 1.0
        };
        if off {
            findings.push(finding(
                "hmc_energy_violation",
                Verdict::Warning,
                format!(
                    "⟨e^(−ΔH)⟩ of `{}` is {:.4} ± {:.4}, not 1 (more than {ENERGY_SIGMAS} \
                     standard errors off, or without fluctuations): the integration is \
                     inaccurate or broken; reduce the step size τ/md_steps.",
                    hmc.label, e.mean, e.err
                ),
            ));
        }
    }
}
