//! What a sweep measures and the files it writes: the rows of its points and of the HMC
//! baseline, the cost of a chain, and the tables, analysis files and charts.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{write_atomic, write_json};
use crate::run::{SampleReport, SampleSpec};
use crate::stats::{PowerLawFit, Verdict, nan_if_null};
use crate::study::plot::{Chart, Series, Style, draw_chart};
use crate::study::report::num;
use crate::study::{SamplerAtSize, SamplerComparison, TrainingCost};

use super::spec::SweepPoint;

/// A row of the HMC baseline (`hmc.csv`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcRow {
    /// L.
    pub l: usize,
    /// β.
    pub beta: f64,
    /// The chain's seed.
    pub seed: u64,
    /// The chosen trajectory length.
    pub tau: f64,
    /// The chosen MD steps.
    pub md_steps: usize,
    /// Acceptance.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Wall seconds per trajectory (measurements included).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_step: f64,
    /// The second-moment correlation length ξ_2nd and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub xi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub xi_err: f64,
    /// τ_int of |m| and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_abs_m: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_abs_m_err: f64,
    /// τ_int of χ (a χ-like observable) and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_chi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_chi_err: f64,
    /// τ_int of ξ_2nd (a ξ-like observable) and its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_xi: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_xi_err: f64,
    /// Seconds per independent configuration, 2 max(τ_int of |m|, χ, ξ_2nd) × seconds per
    /// trajectory.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent: f64,
    /// Its error, from that of τ_max.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub cost_per_independent_err: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
}

/// The HMC baseline of a sweep (`hmc.json`): its rows and the dynamical exponent z from a
/// power-law fit τ_int(|m|) = A (ξ/ξ_ref)^z over them (needs two or more sizes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HmcBaselineResult {
    /// One row per L and seed.
    pub rows: Vec<HmcRow>,
    /// The fit of τ_int(|m|) against ξ_2nd, when it could be made.
    pub z_fit: Option<PowerLawFit>,
    /// Why the fit was not made or failed.
    pub z_fit_failure: Option<String>,
}

/// The columns of `hmc.csv`.
pub const HMC_HEADER: &str = "L,beta,seed,tau,md_steps,acceptance,seconds_per_step,xi,xi_err,\
tau_abs_m,tau_abs_m_err,tau_chi,tau_chi_err,tau_xi,tau_xi_err,cost_per_independent,\
cost_per_independent_err,verdict";

fn nan() -> f64 {
    f64::NAN
}

/// What one point measured (a row of the table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The point.
    #[serde(flatten)]
    pub point: SweepPoint,
    /// Trainable parameters.
    pub n_params: usize,
    /// Training configurations |Φ_train|.
    pub configs_seen: u64,
    /// Training wall seconds.
    pub train_seconds: f64,
    /// Acceptance of the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// ESS per sample of the training's final test sample.
    #[serde(deserialize_with = "nan_if_null")]
    pub ess: f64,
    /// τ_rej of the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_rej_err: f64,
    /// τ_int of |m| in the flow chain.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_abs_m: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_int_abs_m_err: f64,
    /// The longest run of rejected proposals.
    pub longest_rejection_run: usize,
    /// The chain's verdict.
    pub verdict: Verdict,
    /// The cost of an independent configuration with the flow chain (first) and with each
    /// of the further kernels (`sample.kernels`).
    #[serde(default)]
    pub samplers: Vec<ChainCost>,
}

/// What an independent configuration costs with one chain: 2 τ_max × thin × seconds per
/// step, with τ_max the largest τ_int (in measurements) of |m|, χ and ξ_2nd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainCost {
    /// The kernel expression.
    pub kernel: String,
    /// The acceptance of the chain (of all its moves).
    #[serde(deserialize_with = "nan_if_null")]
    pub acceptance: f64,
    /// Wall seconds per step (thermalisation included).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds_per_step: f64,
    /// τ_max in measurements (one every `thin` steps).
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max: f64,
    /// Its error.
    #[serde(deserialize_with = "nan_if_null")]
    pub tau_max_err: f64,
    /// Seconds per independent configuration.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent: f64,
    /// Its error, from that of τ_max.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_independent_err: f64,
    /// The chain's verdict.
    pub verdict: Verdict,
}

impl ChainCost {
    /// The cost of the chain `spec` that produced `report`.
    pub fn of(spec: &SampleSpec, report: &SampleReport) -> ChainCost {
        // Chains advanced together share the wall time: a step of one cost its share.
        let chain_steps = (spec.therm + spec.n * spec.thin).max(1) * report.chains.max(1);
        let seconds_per_step = report.seconds / chain_steps as f64;
        let seconds_per_measurement = seconds_per_step * spec.thin as f64;
        let (_, tau_max, tau_max_err) =
            crate::study::analysis::slowest_observable(report, &["abs_m", "chi", "xi_2nd"]);
        ChainCost {
            kernel: spec.kernel.kind.to_string(),
            acceptance: report.acceptance,
            seconds_per_step,
            tau_max,
            tau_max_err,
            cost_per_independent: 2.0 * tau_max * seconds_per_measurement,
            cost_per_independent_err: 2.0 * tau_max_err * seconds_per_measurement,
            verdict: report.verdict,
        }
    }
}

/// The columns of `sweep.csv`.
pub const SWEEP_HEADER: &str = "L,beta,lambda,batch,iterations,lr,seed,n_params,configs_seen,\
train_seconds,acceptance,ess,tau_rej,tau_rej_err,tau_int_abs_m,tau_int_abs_m_err,\
longest_rejection_run,verdict,method";

/// Writes `hmc.json` and `hmc.csv`.
pub(super) fn write_hmc(folder: &Path, result: &HmcBaselineResult) -> Result<()> {
    write_json(&folder.join("hmc.json"), &result)?;
    let mut csv = format!("{HMC_HEADER}\n");
    for r in &result.rows {
        let cells = [
            r.l.to_string(),
            r.beta.to_string(),
            r.seed.to_string(),
            r.tau.to_string(),
            r.md_steps.to_string(),
            num(r.acceptance),
            num(r.seconds_per_step),
            num(r.xi),
            num(r.xi_err),
            num(r.tau_abs_m),
            num(r.tau_abs_m_err),
            num(r.tau_chi),
            num(r.tau_chi_err),
            num(r.tau_xi),
            num(r.tau_xi_err),
            num(r.cost_per_independent),
            num(r.cost_per_independent_err),
            r.verdict.to_string(),
        ];
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    write_atomic(&folder.join("hmc.csv"), csv.as_bytes())
}

/// The columns of `budgets.csv`: per size and budget, the flows averaged over seeds.
pub const BUDGETS_HEADER: &str =
    "L,configs_seen,runs,acceptance,acceptance_err,tau_rej,tau_rej_err,train_seconds";

/// The columns of `training_cost.csv`: per size, the budget that reaches the target τ_rej.
pub const TRAINING_COST_HEADER: &str = "L,xi,configs,configs_err,seconds,seconds_err";

/// A file of one method's analysis: `stem.ext`, or `stem-METHOD.ext` for a named method.
fn method_file(stem: &str, method: &str, ext: &str) -> String {
    match method {
        "" => format!("{stem}.{ext}"),
        method => format!("{stem}-{method}.{ext}"),
    }
}

/// Writes `training_cost.json` (everything), `budgets.csv` and `training_cost.csv` (with
/// `-METHOD` before the extension for a named method).
pub(super) fn write_training_cost(folder: &Path, cost: &TrainingCost) -> Result<()> {
    let file = |stem: &str, ext: &str| folder.join(method_file(stem, &cost.method, ext));
    write_json(&file("training_cost", "json"), cost)?;
    let mut csv = format!("{BUDGETS_HEADER}\n");
    for b in &cost.budgets {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            b.l,
            b.configs_seen,
            b.runs,
            num(b.acceptance),
            num(b.acceptance_err),
            num(b.tau_rej),
            num(b.tau_rej_err),
            num(b.train_seconds)
        ));
    }
    write_atomic(&file("budgets", "csv"), csv.as_bytes())?;
    let mut csv = format!("{TRAINING_COST_HEADER}\n");
    for c in &cost.costs {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            c.l,
            c.xi,
            c.configs,
            num(c.configs_err),
            c.seconds,
            num(c.seconds_err)
        ));
    }
    write_atomic(&file("training_cost", "csv"), csv.as_bytes())
}

/// The columns of `sampler_cost.csv`: per kernel and size, the cost of an independent
/// configuration against tuned HMC's.
pub const SAMPLER_COST_HEADER: &str = "kernel,L,configs_seen,runs,cost,cost_err,\
training_seconds,amortised_cost,hmc_cost,hmc_cost_err";

/// Writes `sampler_cost.json` (everything), `sampler_cost.csv` and the chart
/// `plots/sampler_cost.{png,svg}` (with `-METHOD` before the extension for a named method):
/// seconds per independent configuration against L for every kernel (sampling alone:
/// solid; amortised: dashed) and for tuned HMC.
pub(super) fn write_comparison(folder: &Path, comparison: &SamplerComparison) -> Result<()> {
    let method = comparison.method.as_str();
    write_json(
        &folder.join(method_file("sampler_cost", method, "json")),
        comparison,
    )?;
    let mut csv = format!("{SAMPLER_COST_HEADER}\n");
    for s in &comparison.sizes {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            s.kernel,
            s.l,
            s.configs_seen,
            s.runs,
            num(s.cost),
            num(s.cost_err),
            num(s.training_seconds),
            num(s.amortised_cost),
            num(s.hmc_cost),
            num(s.hmc_cost_err)
        ));
    }
    write_atomic(
        &folder.join(method_file("sampler_cost", method, "csv")),
        csv.as_bytes(),
    )?;
    let mut kernels: Vec<&str> = Vec::new();
    for s in &comparison.sizes {
        if !kernels.contains(&s.kernel.as_str()) {
            kernels.push(&s.kernel);
        }
    }
    let mut series = Vec::new();
    let mut hmc: Vec<(f64, f64, f64)> = Vec::new();
    for s in &comparison.sizes {
        if s.hmc_cost.is_finite() && !hmc.iter().any(|h| h.0 == s.l as f64) {
            hmc.push((s.l as f64, s.hmc_cost, s.hmc_cost_err));
        }
    }
    series.push(Series {
        label: "tuned HMC".into(),
        points: hmc.iter().map(|h| (h.0, h.1)).collect(),
        errors: Some(hmc.iter().map(|h| h.2).collect()),
        style: Style::Markers,
        colour: Some(0),
    });
    for (k, kernel) in kernels.iter().enumerate() {
        let at: Vec<&SamplerAtSize> = comparison
            .sizes
            .iter()
            .filter(|s| s.kernel == *kernel)
            .collect();
        series.push(Series {
            label: format!("{kernel}, sampling"),
            points: at.iter().map(|s| (s.l as f64, s.cost)).collect(),
            errors: Some(at.iter().map(|s| s.cost_err).collect()),
            style: Style::Markers,
            colour: Some(k + 1),
        });
        series.push(Series {
            label: format!(
                "{kernel}, training over {} configs",
                crate::study::report::sig(comparison.amortise_over, 2)
            ),
            points: at.iter().map(|s| (s.l as f64, s.amortised_cost)).collect(),
            errors: None,
            style: Style::Dashed,
            colour: Some(k + 1),
        });
    }
    // Room below the data for the legend (one row per series), which would otherwise
    // cover the points of the smallest or largest size.
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|c| c.is_finite() && *c > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), c| {
            (lo.min(c), hi.max(c))
        });
    let y_range = (hi > 0.0).then(|| {
        let span = (hi / lo).max(4.0);
        (lo / span, 1.5 * hi)
    });
    let chart = Chart {
        y_range,
        title: match method {
            "" => "Cost of an independent configuration against L".into(),
            method => format!("Cost of an independent configuration against L ({method})"),
        },
        x_label: "L".into(),
        y_label: "seconds per independent configuration".into(),
        series,
        x_log: true,
        y_log: true,
        ..Chart::default()
    };
    let plots = folder.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    let stem = match method {
        "" => "sampler_cost".to_string(),
        method => format!("sampler_cost-{method}"),
    };
    draw_chart(&chart, &plots.join(stem))?;
    Ok(())
}

pub(super) fn write_table(folder: &Path, rows: &[SweepRow]) -> Result<()> {
    write_json(&folder.join("sweep.json"), rows)?;
    let mut csv = format!("{SWEEP_HEADER}\n");
    for r in rows {
        let p = &r.point;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            p.l,
            p.beta,
            p.lambda,
            p.batch,
            p.iterations,
            p.lr,
            p.seed,
            r.n_params,
            r.configs_seen,
            num(r.train_seconds),
            num(r.acceptance),
            num(r.ess),
            num(r.tau_rej),
            num(r.tau_rej_err),
            num(r.tau_int_abs_m),
            num(r.tau_int_abs_m_err),
            r.longest_rejection_run,
            r.verdict,
            p.method
        ));
    }
    write_atomic(&folder.join("sweep.csv"), csv.as_bytes())
}
