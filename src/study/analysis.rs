//! The analysis of a study's stored runs: every observable with its Γ-method error and
//! τ_int, the zero-momentum correlator Ĝ(t) with a correlated cosh fit and ξ_eff(t) at every
//! t, the autocorrelation function and τ_int(W) of one observable, rejection-run lengths of
//! flow proposals, histograms of φ and M, and the cost of an independent configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compare::{Conclusion, ObservableComparison, compare_observables, conclude};
use super::report::TimeUnit;
use super::spec::{StudySpec, slug};
use super::store::StoredRun;
use super::tune::HmcTuning;
use crate::error::{Error, Result};
use crate::observable::Measurements;
use crate::observable::Summary;
use crate::run::{Estimate, KernelSpec, SampleReport, TrainReport, combine_replicas};
use crate::stats::{
    CorrelatedCoshFit, Histogram, Verdict, autocorrelation, correlated_cosh_fit,
    gamma_covariance_replicas, gamma_method_replicas, nan_if_null,
};

/// A value at one t (or lag) with its error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointEstimate {
    /// Time separation t.
    pub t: usize,
    /// The mean.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// Its error (NaN when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub err: f64,
}

/// The correlated cosh fit of Ĝ(t) and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// The fit (ξ = 1/m, χ², dof, range), when it succeeded.
    pub fit: Option<CorrelatedCoshFit>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// The fit range asked for.
    pub range: [usize; 2],
    /// The Γ-method summation window of the covariance (the largest automatic window of
    /// the Ĝ(t) series in the range).
    pub covariance_window: usize,
}

/// Γ(t)/Γ(0) and τ_int(W) of one observable, with the automatic window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutocorrelationSummary {
    /// The observable.
    pub observable: String,
    /// The automatic window W.
    pub window: usize,
    /// τ_int at W.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int: f64,
    /// ρ(t) = Γ(t)/Γ(0) for t = 0..len.
    pub rho: Vec<f64>,
    /// τ_int(W) = ½ + Σ_{t=1}^{W} ρ(t) for W = 0..len.
    pub tau_int_by_window: Vec<f64>,
}

/// Everything computed for one sampler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerAnalysis {
    /// The sampler's name.
    pub name: String,
    /// Its folder under `data/`.
    pub slug: String,
    /// The kernel expression.
    pub kernel: String,
    /// The kernel settings used (a tuned HMC's chosen trajectory included).
    pub settings: KernelSpec,
    /// The HMC pilot scan, when tuned.
    pub tuning: Option<HmcTuning>,
    /// The sampling report: observables with errors and τ_int, acceptance, diagnostics.
    pub report: SampleReport,
    /// Measured steps analysed (after the cut), per chain.
    pub steps: usize,
    /// Independent chains advanced in lockstep (1 for older summaries).
    #[serde(default = "one_chain")]
    pub chains: usize,
    /// Wall seconds per measured step of one chain (the ensemble's time per step divided
    /// by its chains).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_step: f64,
    /// The observable with the largest τ_int among the cost observables.
    pub slowest: String,
    /// Its τ_int (in steps of the kernel expression) and error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max: f64,
    /// The error of `tau_max`.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max_err: f64,
    /// Seconds per effectively independent configuration, 2 τ_max × seconds per step.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent: f64,
    /// Its error from that of τ_max.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent_err: f64,
    /// Ĝ(t) for t = 0..L with Γ-method errors.
    pub correlator: Vec<PointEstimate>,
    /// The correlated cosh fit.
    pub fit: FitSummary,
    /// ξ_eff(t) for 1 ≤ t < L/2 (NaN where the arcosh argument fell below 1).
    pub xi_eff: Vec<PointEstimate>,
    /// Γ(t)/Γ(0) and τ_int(W) of the autocorrelation observable.
    pub autocorrelation: AutocorrelationSummary,
    /// Lengths of runs of consecutive rejected flow proposals and how often each occurred
    /// (flow kernels only).
    pub rejection_runs: Option<BTreeMap<usize, u64>>,
}

fn one_chain() -> usize {
    1
}

/// Histograms shared by all samplers (common bins, so they can be overlaid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histograms {
    /// Bin edges of φ.
    pub phi_edges: Vec<f64>,
    /// Per sampler, the normalised density of φ over the saved configurations' sites.
    pub phi_density: Vec<Vec<f64>>,
    /// Bin edges of M = Σ_x φ(x).
    pub m_edges: Vec<f64>,
    /// Per sampler, the normalised density of M over the measurements.
    pub m_density: Vec<Vec<f64>>,
}

/// The whole study's numbers (`summary.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    /// The latflow version that made the analysis.
    pub latflow_version: String,
    /// The study's name.
    pub name: String,
    /// The study as run.
    pub study: StudySpec,
    /// The fit range used.
    pub fit_range: [usize; 2],
    /// The training run, when the study trained a flow.
    pub training: Option<TrainReport>,
    /// One entry per sampler.
    pub samplers: Vec<SamplerAnalysis>,
    /// The worst verdict of the samplers.
    pub verdict: Verdict,
    /// Histograms of φ and M.
    pub histograms: Histograms,
    /// For every sampler that uses the flow: when its training pays for itself against the
    /// cheapest sampler without one.
    #[serde(default)]
    pub payback: Vec<Payback>,
    /// Every reported observable across the samplers, against exact or reference values.
    #[serde(default)]
    pub comparison: Vec<ObservableComparison>,
    /// The conclusion: the cheapest sampler, the payback, agreement and reliability.
    #[serde(default)]
    pub conclusion: Conclusion,
    /// The file in the folder the analysis settings came from: `analysis.toml` when
    /// `latflow analyse` set them, else `runcard.toml`.
    #[serde(default)]
    pub analysis_file: String,
}

/// When a flow sampler's training has paid for itself. With training time T, and c_flow and
/// c_base the seconds per independent configuration of the flow sampler and of the
/// cheapest sampler without a flow (the baseline), N independent configurations cost
/// T + c_flow·N against c_base·N: the flow is cheaper after N* = T/(c_base − c_flow) of
/// them, and never when c_flow ≥ c_base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payback {
    /// The flow sampler.
    pub sampler: String,
    /// The baseline: the sampler without a flow with the lowest cost per independent
    /// configuration.
    pub baseline: String,
    /// The flow sampler's seconds per independent configuration (sampling alone).
    #[serde(deserialize_with = "nan_if_null")]
    pub cost: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_err: f64,
    /// The baseline's seconds per independent configuration.
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_cost: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub baseline_cost_err: f64,
    /// Training seconds paid once: the training steps and the acceptance checks.
    pub training_seconds: f64,
    /// N*, the independent configurations after which the flow sampler with its training
    /// costs less than the baseline (`None`: never, or undefined; see `reason`).
    pub break_even: Option<f64>,
    /// The error of N* from those of the two costs (training time taken as exact).
    pub break_even_err: Option<f64>,
    /// Why there is no break-even point, when there is none.
    pub reason: Option<String>,
}

impl Payback {
    /// Seconds per independent configuration of the flow sampler with its training spread
    /// over `n` independent configurations: c_flow + T/n.
    pub fn amortised_cost(&self, n: f64) -> f64 {
        self.cost + self.training_seconds / n
    }
}

/// N* = T/(c_base − c_flow) for training seconds T and costs per independent
/// configuration (value, error) with c_flow < c_base, and its error by linear propagation,
/// T/(c_base − c_flow)² · √(σ_flow² + σ_base²).
pub fn break_even(training_seconds: f64, flow: (f64, f64), base: (f64, f64)) -> (f64, f64) {
    let gain = base.0 - flow.0;
    let n = training_seconds / gain;
    let err = training_seconds / (gain * gain) * flow.1.hypot(base.1);
    (n, err)
}

/// The payback of every flow sampler against the cheapest sampler without a flow (none
/// without training or without such a baseline).
pub fn payback(samplers: &[SamplerAnalysis], training: Option<&TrainReport>) -> Vec<Payback> {
    let Some(training) = training else {
        return Vec::new();
    };
    let baseline = samplers
        .iter()
        .filter(|s| !s.settings.uses_flow() && s.cost_per_independent.is_finite())
        .min_by(|a, b| a.cost_per_independent.total_cmp(&b.cost_per_independent));
    let Some(base) = baseline else {
        return Vec::new();
    };
    let training_seconds = training.seconds + training.eval_seconds;
    samplers
        .iter()
        .filter(|s| s.settings.uses_flow())
        .map(|s| {
            let (c, c_err) = (s.cost_per_independent, s.cost_per_independent_err);
            let (b, b_err) = (base.cost_per_independent, base.cost_per_independent_err);
            let untrusted = [s, base]
                .iter()
                .find(|x| x.report.verdict == Verdict::Unreliable)
                .map(|x| x.name.clone());
            let (break_even, break_even_err, reason) = if let Some(name) = untrusted {
                (
                    None,
                    None,
                    Some(format!(
                        "undefined: the chain of {name} cannot be trusted (verdict unreliable)"
                    )),
                )
            } else if !c.is_finite() {
                (
                    None,
                    None,
                    Some("undefined: the cost per independent configuration is undefined".into()),
                )
            } else if c >= b {
                let unit = TimeUnit::for_values([c, b]);
                (
                    None,
                    None,
                    Some(format!(
                        "never: an independent configuration costs {} with {} against {} \
                         with {} ({:.1}σ more), so training never pays",
                        unit.text(c),
                        s.name,
                        unit.text(b),
                        base.name,
                        super::compare::pull((c, c_err), (b, b_err))
                    )),
                )
            } else {
                let (n, err) = break_even(training_seconds, (c, c_err), (b, b_err));
                (Some(n), Some(err), None)
            };
            Payback {
                sampler: s.name.clone(),
                baseline: base.name.clone(),
                cost: c,
                cost_err: c_err,
                baseline_cost: b,
                baseline_cost_err: b_err,
                training_seconds,
                break_even,
                break_even_err,
                reason,
            }
        })
        .collect()
}

/// The error of an `analysis.therm_cut` that leaves sampler `name`, with `stored`
/// measurements per chain, fewer than two.
pub(crate) fn too_deep_cut(cut: usize, name: &str, stored: usize) -> Error {
    Error::param(
        "analysis.therm_cut",
        format!(
            "drops {cut} measurements from the start of each series, but sampler `{name}` has \
             {stored}: at least 2 must remain"
        ),
    )
}

/// Analyses stored runs (in the order of `spec.samplers`), applying `spec.analysis`.
pub fn analyse_runs(
    spec: &StudySpec,
    runs: Vec<StoredRun>,
    training: Option<TrainReport>,
) -> Result<StudySummary> {
    let (t_min, t_max) = spec.fit_range()?;
    let mut samplers = Vec::new();
    let mut kept = Vec::new();
    for (sampler, mut run) in spec.samplers.iter().zip(runs) {
        let cut = spec.analysis.therm_cut;
        let stored = run.chains.iter().map(|c| c.measurements.len()).min();
        if let Some(len) = stored.filter(|&len| cut > 0 && cut.saturating_add(2) > len) {
            return Err(too_deep_cut(cut, &sampler.name, len));
        }
        if cut > 0 {
            for chain in &mut run.chains {
                chain.measurements.skip(cut);
                chain
                    .record
                    .skip_steps(cut.saturating_mul(run.info.spec.thin))?;
            }
        }
        let views: Vec<&Measurements> = run.chains.iter().map(|c| &c.measurements).collect();
        let summary = Measurements::summarise(&views)?;
        let mut report = combine_replicas(&run.info.spec, &run.chains)?;
        let steps = run.chains.first().map_or(0, |c| c.record.steps);
        // The cut moves measured steps into the thermalisation.
        report.n = steps;
        report.therm = run.info.spec.therm + (run.info.steps - steps);
        report.interrupted = run.info.interrupted;
        report.chains = run.info.chains;
        samplers.push(analyse_one(
            spec,
            sampler.name.clone(),
            &run,
            &summary,
            report,
            (t_min, t_max),
        )?);
        kept.push(run);
    }
    let histograms = histograms(spec, &kept)?;
    let verdict = samplers
        .iter()
        .map(|s| s.report.verdict)
        .max()
        .unwrap_or_default();
    let payback = payback(&samplers, training.as_ref());
    let comparison = compare_observables(spec, &samplers);
    let conclusion = conclude(&samplers, &comparison, &payback);
    Ok(StudySummary {
        latflow_version: env!("CARGO_PKG_VERSION").to_string(),
        name: spec.name.clone(),
        study: spec.clone(),
        fit_range: [t_min, t_max],
        training,
        samplers,
        verdict,
        histograms,
        payback,
        comparison,
        conclusion,
        analysis_file: "runcard.toml".to_string(),
    })
}

/// The observable of `names` with the largest τ_int in `report` (NaN values skipped), with
/// that τ_int and its error; NaN when none has one.
pub(crate) fn slowest_observable<S: AsRef<str>>(
    report: &SampleReport,
    names: &[S],
) -> (String, f64, f64) {
    names
        .iter()
        .filter_map(|o| report.observables.get(o.as_ref()).map(|e| (o.as_ref(), e)))
        .fold((String::new(), f64::NAN, f64::NAN), |best, (o, e)| {
            if best.1.is_nan() || e.tau_int > best.1 {
                (o.to_string(), e.tau_int, e.tau_int_err)
            } else {
                best
            }
        })
}

fn analyse_one(
    spec: &StudySpec,
    name: String,
    run: &StoredRun,
    summary: &Summary,
    mut report: SampleReport,
    (t_min, t_max): (usize, usize),
) -> Result<SamplerAnalysis> {
    let chains = &run.chains;
    let first = chains
        .first()
        .ok_or_else(|| crate::Error::param("chains", "a stored run without chains"))?;
    let steps = first.record.steps;
    // The chains of a run advanced together: a step of one cost the common wall time
    // divided by the number of chains.
    let seconds_per_step =
        first.record.wall_seconds / (steps.max(1) * run.info.chains.max(1)) as f64;
    let (slowest, tau_max, tau_max_err) =
        slowest_observable(&report, &spec.analysis.cost_observables);
    // τ_int counts measurements; one measurement is `thin` steps.
    let thin = run.info.spec.thin as f64;
    let cost = 2.0 * tau_max * thin * seconds_per_step;
    let cost_err = 2.0 * tau_max_err * thin * seconds_per_step;

    let extent = spec.lattice.extents()[0];
    let g_names: Vec<String> = (0..extent).map(|t| format!("G_hat[{t}]")).collect();
    // Per chain, the series Ĝ(t) for every t.
    let g_series: Vec<Vec<&[f64]>> = chains
        .iter()
        .map(|c| {
            g_names
                .iter()
                .filter_map(|n| c.measurements.series(n))
                .collect()
        })
        .collect();
    let mut correlator = Vec::new();
    let mut window = 1;
    for t in 0..g_series.first().map_or(0, Vec::len) {
        let replicas: Vec<&[f64]> = g_series.iter().map(|c| c[t]).collect();
        let g = gamma_method_replicas(&replicas)?;
        let (g, _) = report.diagnostics.qualify(&g);
        if (t_min..=t_max).contains(&t) {
            window = window.max(g.window);
        }
        correlator.push(PointEstimate {
            t,
            mean: g.mean,
            err: g.err,
        });
    }
    let fit = fit_correlator(
        &g_series,
        window,
        (t_min, t_max),
        report.diagnostics.errors_undefined(),
    );
    // One ξ on the page: the correlated fit on the study's range replaces the sampling
    // report's uncorrelated fit on the default range.
    report
        .observables
        .insert("xi_fit".to_string(), fit_estimate(&fit));

    let xi_eff = (1..extent.div_ceil(2))
        .map(|t| {
            let e = summary.get(&format!("xi_eff[{t}]"));
            let (mean, err) = match e {
                Some(g) => {
                    let (g, _) = report.diagnostics.qualify(g);
                    (g.mean, g.err)
                }
                None => (f64::NAN, f64::NAN),
            };
            PointEstimate { t, mean, err }
        })
        .collect();

    // The autocorrelation figure shows the first chain's Γ(t); τ_int and the window are
    // those of all chains.
    let observable = &spec.analysis.autocorrelation_observable;
    let autocorrelation = match (
        first.measurements.series(observable),
        summary.get(observable),
    ) {
        (Some(series), Some(g)) => {
            let max_lag = (3 * g.window).max(20).min(series.len().saturating_sub(1));
            let rho = autocorrelation(series, max_lag)?;
            let mut tau = 0.5;
            let tau_int_by_window = std::iter::once(0.5)
                .chain(rho[1..].iter().map(|r| {
                    tau += r;
                    tau
                }))
                .collect();
            AutocorrelationSummary {
                observable: observable.clone(),
                window: g.window,
                tau_int: g.tau_int,
                rho,
                tau_int_by_window,
            }
        }
        _ => {
            return Err(crate::Error::param(
                "analysis.autocorrelation_observable",
                format!("`{observable}` is not a measured series (e.g. abs_m, m2, phi2, energy)"),
            ));
        }
    };

    let rejection_runs = run.info.spec.kernel.kind.contains("flow").then(|| {
        let mut runs = BTreeMap::new();
        for chain in chains {
            let label = chain.record.first_label_of_kind("flow");
            let label = label.as_deref().unwrap_or("flow");
            let mut current = 0usize;
            for accepted in chain.record.accept_history(label) {
                if accepted {
                    if current > 0 {
                        *runs.entry(current).or_insert(0) += 1;
                    }
                    current = 0;
                } else {
                    current += 1;
                }
            }
            if current > 0 {
                *runs.entry(current).or_insert(0) += 1;
            }
        }
        runs
    });

    Ok(SamplerAnalysis {
        slug: slug(&name),
        name,
        kernel: run.info.spec.kernel.kind.to_string(),
        settings: run.info.spec.kernel.clone(),
        tuning: run.info.tuning.clone(),
        report,
        steps,
        chains: run.info.chains.max(1),
        seconds_per_step,
        slowest,
        tau_max,
        tau_max_err,
        cost_per_independent: cost,
        cost_per_independent_err: cost_err,
        correlator,
        fit,
        xi_eff,
        autocorrelation,
        rejection_runs,
    })
}

/// The correlated fit's ξ as an estimate (τ_int undefined: it is not a mean of a series).
fn fit_estimate(fit: &FitSummary) -> Estimate {
    match &fit.fit {
        Some(f) => Estimate {
            mean: f.xi,
            err: f.xi_err,
            tau_int: f64::NAN,
            tau_int_err: f64::NAN,
            caveat: None,
        },
        None => Estimate {
            mean: f64::NAN,
            err: f64::NAN,
            tau_int: f64::NAN,
            tau_int_err: f64::NAN,
            caveat: Some(format!(
                "the correlated cosh fit failed: {}",
                fit.failure.as_deref().unwrap_or("no reason given")
            )),
        },
    }
}

fn fit_correlator(
    g_series: &[Vec<&[f64]>],
    window: usize,
    (t_min, t_max): (usize, usize),
    errors_undefined: bool,
) -> FitSummary {
    let failed = |why: String| FitSummary {
        fit: None,
        failure: Some(why),
        range: [t_min, t_max],
        covariance_window: window,
    };
    if errors_undefined {
        return failed("the chain is unreliable: its errors, and so the fit, are undefined".into());
    }
    let (means, covariance) = match gamma_covariance_replicas(g_series, window) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    match correlated_cosh_fit(&means, &covariance, t_min, t_max) {
        Ok(fit) => FitSummary {
            fit: Some(fit),
            failure: None,
            range: [t_min, t_max],
            covariance_window: window,
        },
        Err(e) => failed(e.to_string()),
    }
}

fn histograms(spec: &StudySpec, runs: &[StoredRun]) -> Result<Histograms> {
    let bins = spec.analysis.histogram_bins;
    let volume = spec.lattice.volume() as f64;
    let cut = spec.analysis.therm_cut as u64;
    let phi: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let per_config = spec.lattice.volume();
            r.configs
                .as_slice()
                .unwrap_or(&[])
                .chunks(per_config.max(1))
                .zip(&r.config_index)
                .filter(|(_, i)| **i >= cut)
                .flat_map(|(c, _)| c.iter().copied())
                .collect()
        })
        .collect();
    let m: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            r.chains
                .iter()
                .flat_map(|c| c.measurements.series("m").unwrap_or(&[]).iter())
                .map(|x| x * volume)
                .collect()
        })
        .collect();
    let (phi_edges, phi_density) = common_histogram(&phi, bins)?;
    let (m_edges, m_density) = common_histogram(&m, bins)?;
    Ok(Histograms {
        phi_edges,
        phi_density,
        m_edges,
        m_density,
    })
}

/// Densities of each data set over common bins symmetric about 0 that hold every value.
fn common_histogram(sets: &[Vec<f64>], bins: usize) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let reach = sets
        .iter()
        .flatten()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |a, x| a.max(x.abs()));
    let reach = if reach > 0.0 { reach * 1.0001 } else { 1.0 };
    let mut edges = Vec::new();
    let mut densities = Vec::new();
    for set in sets {
        let mut h = Histogram::new(-reach, reach, bins)?;
        h.add_all(set);
        edges = h.edges();
        densities.push(h.density());
    }
    if edges.is_empty() {
        edges = Histogram::new(-reach, reach, bins)?.edges();
    }
    Ok((edges, densities))
}

#[cfg(test)]
mod tests {
    use super::break_even;

    #[test]
    fn break_even_and_its_error_follow_from_the_costs() {
        // 100 s of training, 1 ms against 3 ms per independent configuration.
        let (n, err) = break_even(100.0, (1e-3, 1e-4), (3e-3, 2e-4));
        assert!((n - 5e4).abs() < 1e-6, "{n}");
        // Linear propagation against central differences of N*(c_flow, c_base).
        let h = 1e-9;
        let n_of = |c: f64, b: f64| break_even(100.0, (c, 0.0), (b, 0.0)).0;
        let d_flow = (n_of(1e-3 + h, 3e-3) - n_of(1e-3 - h, 3e-3)) / (2.0 * h);
        let d_base = (n_of(1e-3, 3e-3 + h) - n_of(1e-3, 3e-3 - h)) / (2.0 * h);
        let expected = (d_flow * 1e-4).hypot(d_base * 2e-4);
        assert!(
            (err - expected).abs() < 1e-4 * expected,
            "{err} vs {expected}"
        );
    }
}
