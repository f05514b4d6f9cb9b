//! The report's figures: each draws one chart into `plots/` (PNG and SVG) and returns the
//! [`Figure`] that the page shows with its title and caption — training loss and flow
//! quality, histograms of φ and M, the correlator with its fits, ξ_eff(t), autocorrelation
//! and τ_int, runs of rejections, the cost per independent configuration and the payback
//! of the flow's training.

use std::path::Path;

use super::cosh_model;
use super::glossary::symbol;
use super::text::{TimeUnit, pm, seconds_text, sig};
use super::training_log::TrainingLog;
use crate::error::Result;
use crate::study::analysis::{PointEstimate, SamplerAnalysis, StudySummary};
use crate::study::compare::{ObservableComparison, count_text};
use crate::study::plot::{Bar, BarChart, Chart, Marker, Series, Style, draw_bars, draw_chart};

/// One figure of the report: its file stem under `plots/`, title and caption.
pub(super) struct Figure {
    pub(super) stem: &'static str,
    pub(super) title: String,
    pub(super) caption: String,
}

/// A [`Series`] with its label.
fn series(
    label: &str,
    points: Vec<(f64, f64)>,
    errors: Option<Vec<f64>>,
    style: Style,
    colour: Option<usize>,
) -> Series {
    Series {
        label: label.to_string(),
        points,
        errors,
        style,
        colour,
    }
}

/// The training loss, and the acceptance and ESS/N of the checks, against the
/// configurations seen.
pub(super) fn training_figures(plots: &Path, log: &TrainingLog) -> Result<Vec<Figure>> {
    let loss = Chart {
        title: "Training loss".into(),
        x_label: "training configurations seen |Φ_train|".into(),
        y_label: "loss ⟨S + log p_flow⟩ = KL − log Z".into(),
        series: vec![series(
            "loss per step",
            log.configs
                .iter()
                .copied()
                .zip(log.loss.iter().copied())
                .collect(),
            None,
            Style::Line,
            None,
        )],
        ..Chart::default()
    };
    draw_chart(&loss, &plots.join("training_loss"))?;
    let acceptance = Chart {
        title: "Flow quality during training".into(),
        x_label: "training configurations seen |Φ_train|".into(),
        y_label: "fraction".into(),
        series: vec![
            series(
                "Metropolis acceptance",
                log.eval_configs
                    .iter()
                    .copied()
                    .zip(log.acceptance.iter().copied())
                    .collect(),
                None,
                Style::Markers,
                None,
            ),
            series(
                "ESS / N",
                log.eval_configs
                    .iter()
                    .copied()
                    .zip(log.ess.iter().copied())
                    .collect(),
                None,
                Style::Markers,
                None,
            ),
        ],
        y_range: Some((0.0, 1.0)),
        ..Chart::default()
    };
    draw_chart(&acceptance, &plots.join("training_acceptance"))?;
    Ok(vec![
        Figure {
            stem: "training_loss",
            title: "Training loss".into(),
            caption: "The reverse-KL loss ⟨S(φ) + log p_flow(φ)⟩ (p_flow the flow's density) of each training step, estimated on \
                      the step's batch, against the number of configurations the flow has \
                      generated for training. It equals KL(p_flow‖p) − log Z, so it falls towards \
                      −log Z and its floor is unknown; a flat curve means training has \
                      converged, not that the flow is exact."
                .into(),
        },
        Figure {
            stem: "training_acceptance",
            title: "Flow quality during training".into(),
            caption: "At each evaluation, the acceptance of an independence Metropolis chain \
                      driven by fresh flow samples, and the effective sample size per sample \
                      (ESS/N) of their importance weights. Both reach 1 for a perfect flow; \
                      the acceptance sets the flow sampler's autocorrelation."
                .into(),
        },
    ])
}

/// The distribution of φ(x) (`phi`) or of M, one histogram per sampler.
pub(super) fn histogram_figure(plots: &Path, summary: &StudySummary, phi: bool) -> Result<Figure> {
    let h = &summary.histograms;
    let (edges, densities, stem, quantity) = if phi {
        (&h.phi_edges, &h.phi_density, "histogram_phi", "φ(x)")
    } else {
        (&h.m_edges, &h.m_density, "histogram_m", "M = Σₓ φ(x)")
    };
    let centres: Vec<f64> = edges.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let chart = Chart {
        title: format!("Distribution of {quantity}"),
        x_label: quantity.to_string(),
        y_label: "probability density".into(),
        series: summary
            .samplers
            .iter()
            .zip(densities)
            .enumerate()
            .map(|(i, (s, d))| {
                series(
                    &s.name,
                    centres.iter().copied().zip(d.iter().copied()).collect(),
                    None,
                    Style::Steps,
                    Some(i),
                )
            })
            .collect(),
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join(stem))?;
    let caption = if phi {
        "The distribution of single-site values φ(x) over the saved configurations of each \
         sampler (all sites). Every exact sampler must give the same curve within noise."
    } else {
        "The distribution of the magnetisation M = Σₓ φ(x) over every measurement. In the \
         symmetric phase it is one peak at 0; near and past the transition it develops two \
         peaks at ±M, which a sampler must visit equally often (Z2 symmetry)."
    };
    Ok(Figure {
        stem,
        title: format!("Distribution of {quantity}"),
        caption: caption.into(),
    })
}

/// The horizontal shift of sampler `i` of `n` at one x, so that their markers and error
/// bars sit side by side within ±¼ of the point.
fn offset(i: usize, n: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    0.5 * (i as f64 / (n - 1) as f64 - 0.5)
}

/// One marker series with error bars per sampler, in the sampler's colour, shifted side by
/// side; `label` names each.
fn estimates_per_sampler(
    summary: &StudySummary,
    pick: impl Fn(&SamplerAnalysis) -> &[PointEstimate],
    label: impl Fn(&SamplerAnalysis) -> String,
) -> Vec<Series> {
    let n = summary.samplers.len();
    summary
        .samplers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let points = pick(s);
            series(
                &label(s),
                points
                    .iter()
                    .map(|p| (p.t as f64 + offset(i, n), p.mean))
                    .collect(),
                Some(points.iter().map(|p| p.err).collect()),
                Style::Markers,
                Some(i),
            )
        })
        .collect()
}

/// A sampler's name with its ξ from the correlated fit.
fn with_xi(s: &SamplerAnalysis) -> String {
    match &s.fit.fit {
        Some(f) => format!("{}: ξ = {}", s.name, pm(f.xi, f.xi_err)),
        None => format!("{}: no fit", s.name),
    }
}

/// Ĝ(t) of every sampler with its cosh fit.
pub(super) fn correlator_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let mut all = estimates_per_sampler(summary, |s| &s.correlator, with_xi);
    for (i, s) in summary.samplers.iter().enumerate() {
        if let Some(f) = &s.fit.fit {
            let period = s.correlator.len() as f64;
            let points = (0..=100)
                .map(|k| {
                    let t = f.t_min as f64 + (f.t_max - f.t_min) as f64 * k as f64 / 100.0;
                    (t, cosh_model(f.amplitude, f.mass, t, period))
                })
                .collect();
            all.push(series("", points, None, Style::Line, Some(i)));
        }
    }
    let chart = Chart {
        title: "Zero-momentum correlator Ĝ(t)".into(),
        x_label: "time separation t (lattice units)".into(),
        y_label: "Ĝ(t)".into(),
        series: all,
        y_log: true,
        x_integer: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("correlator"))?;
    let [a, b] = summary.fit_range;
    Ok(Figure {
        stem: "correlator",
        title: "Zero-momentum correlator Ĝ(t)".into(),
        caption: format!(
            "Ĝ(t) = (1/|Λ|) Σ_{{x,y}} ⟨φ(x) φ(y)⟩ over slices x₀ − y₀ = t, with Γ-method \
             errors, on a log scale, the samplers side by side at each t; the lines are the \
             correlated fits of A[e^{{−t/ξ}} + e^{{−(L−t)/ξ}}] on t = {a}…{b} (covariance from \
             the Γ-method, χ² through its Cholesky factor), whose ξ the legend gives. A \
             straight fall that bends up near L/2 is the periodic cosh."
        ),
    })
}

/// ξ_eff(t) of every sampler with every sampler's fitted ξ as a band over the fit range.
pub(super) fn xi_eff_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let mut all = estimates_per_sampler(summary, |s| &s.xi_eff, |s| s.name.clone());
    for (i, s) in summary.samplers.iter().enumerate() {
        if let Some(f) = &s.fit.fit {
            let ends = [f.t_min as f64, f.t_max as f64];
            all.push(Series {
                label: String::new(),
                points: ends.iter().map(|&t| (t, f.xi)).collect(),
                errors: Some(vec![f.xi_err; 2]),
                style: Style::Band,
                colour: Some(i),
            });
        }
    }
    let chart = Chart {
        title: "Effective correlation length ξ_eff(t)".into(),
        x_label: "time separation t (lattice units)".into(),
        y_label: "ξ_eff(t) (lattice units)".into(),
        series: all,
        x_integer: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("xi_eff"))?;
    let [a, b] = summary.fit_range;
    Ok(Figure {
        stem: "xi_eff",
        title: "Effective correlation length ξ_eff(t)".into(),
        caption: format!(
            "ξ_eff(t) = 1 / arcosh[(Ĝ(t−1) + Ĝ(t+1)) / 2Ĝ(t)] at every t with Γ-method \
             errors (data in data/SAMPLER/xi_eff.csv), the samplers side by side. A plateau \
             is the correlation length; each band is a sampler's ξ ± σ from the correlated \
             cosh fit over its range t = {a}…{b}."
        ),
    })
}

/// ρ(t) and τ_int(W) of every sampler with the chosen windows.
pub(super) fn autocorrelation_figures(plots: &Path, summary: &StudySummary) -> Result<Vec<Figure>> {
    let observable = summary.samplers.first().map_or("|m|".to_string(), |s| {
        symbol(&s.autocorrelation.observable).to_string()
    });
    let mut rho = Vec::new();
    let mut tau = Vec::new();
    for (i, s) in summary.samplers.iter().enumerate() {
        let a = &s.autocorrelation;
        let label = format!(
            "{}: W = {}, τ_int = {}",
            s.name,
            a.window,
            sig(a.tau_int, 3)
        );
        // Lag 0 (ρ = 1, τ_int = ½) has no place on a log lag axis. The chosen window is a
        // marker on the sampler's own curve.
        let curve = |values: &[f64], out: &mut Vec<Series>| {
            let points = values
                .iter()
                .enumerate()
                .skip(1)
                .map(|(t, v)| (t as f64, *v))
                .collect();
            out.push(series(&label, points, None, Style::Line, Some(i)));
            if let Some(&v) = values.get(a.window) {
                out.push(series(
                    "",
                    vec![(a.window as f64, v)],
                    None,
                    Style::Markers,
                    Some(i),
                ));
            }
        };
        curve(&a.rho, &mut rho);
        curve(&a.tau_int_by_window, &mut tau);
    }
    let chart = Chart {
        title: format!("Autocorrelation of {observable}"),
        x_label: "lag t (measurements, log scale)".into(),
        y_label: "Γ(t) / Γ(0)".into(),
        series: rho,
        x_log: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("autocorrelation"))?;
    let chart = Chart {
        title: format!("Integrated autocorrelation time of {observable}"),
        x_label: "summation window W (measurements, log scale)".into(),
        y_label: "τ_int(W) (measurements, log scale)".into(),
        series: tau,
        x_log: true,
        y_log: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("tau_int"))?;
    Ok(vec![
        Figure {
            stem: "autocorrelation",
            title: format!("Autocorrelation of {observable}"),
            caption: format!(
                "The normalised autocorrelation function ρ(t) = Γ(t)/Γ(0) of {observable} \
                 for each sampler against the lag in measurements (log scale, so that fast \
                 and slow samplers show on one chart); the dot on each curve marks the \
                 window W chosen by Wolff's automatic windowing."
            ),
        },
        Figure {
            stem: "tau_int",
            title: format!("Integrated autocorrelation time of {observable}"),
            caption: "τ_int(W) = ½ + Σ_{t ≤ W} ρ(t) against the summation window W, both \
                      on log scales; it should level off before the chosen window (the dot \
                      on each curve). The error of a mean is √(2τ_int) times the naive one."
                .into(),
        },
    ])
}

/// How often flow proposals were rejected k times in a row; `None` without a flow sampler.
pub(super) fn rejection_figure(plots: &Path, summary: &StudySummary) -> Result<Option<Figure>> {
    let with_runs: Vec<_> = summary
        .samplers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.rejection_runs.as_ref().map(|r| (i, s, r)))
        .collect();
    if with_runs.is_empty() {
        return Ok(None);
    }
    let chart = Chart {
        title: "Runs of rejected flow proposals".into(),
        x_label: "consecutive rejections".into(),
        y_label: "number of runs".into(),
        series: with_runs
            .iter()
            .enumerate()
            .map(|(k, &(i, s, runs))| {
                let shift = offset(k, with_runs.len());
                series(
                    &s.name,
                    runs.iter()
                        .map(|(&l, &c)| (l as f64 + shift, c as f64))
                        .collect(),
                    None,
                    Style::Markers,
                    Some(i),
                )
            })
            .collect(),
        y_log: true,
        x_integer: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("rejection_runs"))?;
    Ok(Some(Figure {
        stem: "rejection_runs",
        title: "Runs of rejected flow proposals".into(),
        caption: "How often the chain stayed put for k flow proposals in a row. A good flow \
                  gives a fast geometric fall; a long tail means rare configurations the \
                  flow under-weights, and long stretches where an independence sampler is \
                  stuck."
            .into(),
    }))
}

/// The training's cost in words: the total T and, when both matter, its split into the
/// optimisation and the acceptance checks.
pub(super) fn training_cost_text(t: &crate::run::TrainReport) -> String {
    let total = t.seconds + t.eval_seconds;
    let unit = TimeUnit::for_values([total]);
    if t.eval_seconds > 0.01 * total {
        format!(
            "{} ({} optimisation + {} acceptance checks)",
            unit.text(total),
            unit.text(t.seconds),
            unit.text(t.eval_seconds)
        )
    } else {
        unit.text(total)
    }
}

/// Cost per independent configuration, one bar per sampler, in one unit.
pub(super) fn cost_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let unit = TimeUnit::for_values(summary.samplers.iter().map(|s| s.cost_per_independent));
    let note = summary.training.as_ref().map(|t| {
        format!(
            "not included: the flow's training, {} for {} configurations",
            training_cost_text(t),
            t.configs_seen
        )
    });
    let chart = BarChart {
        title: "Cost of one independent configuration".into(),
        y_label: format!("{} per independent configuration", unit.name),
        bars: summary
            .samplers
            .iter()
            .map(|s| Bar {
                label: s.name.clone(),
                value: s.cost_per_independent * unit.scale,
                err: Some(s.cost_per_independent_err * unit.scale),
            })
            .collect(),
        y_log: false,
        note,
        value_digits: 2,
    };
    draw_bars(&chart, &plots.join("cost"))?;
    Ok(Figure {
        stem: "cost",
        title: "Cost of one independent configuration".into(),
        caption: format!(
            "Wall time per effectively independent configuration in {}, 2 τ_max × time per \
             step, with τ_max the largest τ_int among the cost observables; lower is better. \
             The flow's training is not included (see the note and the payback table); it is \
             paid once and amortised over every configuration the flow proposes.",
            unit.name
        ),
    })
}

/// Total time against the number of independent configurations: T + c·N for the flow
/// samplers, c·N for the others, with the break-even points.
pub(super) fn payback_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let training = summary.payback.first().map_or(0.0, |p| p.training_seconds);
    let breaks: Vec<f64> = summary
        .payback
        .iter()
        .filter_map(|p| p.break_even)
        .collect();
    let hi = breaks
        .iter()
        .fold(1e6_f64, |m, &n| m.max(10.0 * n))
        .min(1e12);
    let lo = breaks
        .iter()
        .fold(10.0_f64, |m, &n| m.min(n / 10.0))
        .max(1.0);
    // Fine enough on the log axis for T + c·N to bend smoothly.
    let grid: Vec<f64> = (0..=400)
        .map(|i| lo * (hi / lo).powf(f64::from(i) / 400.0))
        .collect();
    let ends = [lo, hi];
    let series = summary
        .samplers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.cost_per_independent.is_finite() && s.cost_per_independent > 0.0)
        .map(|(i, s)| {
            let flow = s.settings.uses_flow();
            let fixed = if flow { training } else { 0.0 };
            Series {
                label: if flow {
                    format!("{} (with training)", s.name)
                } else {
                    s.name.clone()
                },
                // c·N is straight on log axes: its two ends keep the dashes even.
                points: if flow { &grid[..] } else { &ends[..] }
                    .iter()
                    .map(|&n| (n, fixed + s.cost_per_independent * n))
                    .collect(),
                errors: None,
                style: if flow { Style::Line } else { Style::Dashed },
                colour: Some(i),
            }
        })
        .collect();
    let vertical: Vec<Marker> = summary
        .payback
        .iter()
        .filter_map(|p| {
            p.break_even.map(|n| Marker {
                value: n,
                label: format!("{} pays back at N = {}", p.sampler, count_text(n)),
                colour: None,
            })
        })
        .collect();
    let lines = if vertical.is_empty() {
        "No flow sampler becomes cheaper than the cheapest sampler without a flow, so there \
         is no break-even line."
            .to_string()
    } else {
        "The vertical dashed lines mark where a flow sampler with its training becomes \
         cheaper than the cheapest sampler without a flow."
            .to_string()
    };
    let chart = Chart {
        title: "Total cost with the flow's training".into(),
        x_label: "independent configurations N".into(),
        y_label: "seconds (training + sampling)".into(),
        series,
        x_log: true,
        y_log: true,
        vertical,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("payback"))?;
    Ok(Figure {
        stem: "payback",
        title: "Total cost with the flow's training".into(),
        caption: format!(
            "Seconds to produce N independent configurations: T + c·N for the samplers that \
             use the flow (solid; T = {} of training, paid once), c·N for the others (dashed), \
             with c the time per independent configuration. {lines}",
            seconds_text(training)
        ),
    })
}

/// Every observable of every sampler relative to its exact or reference value (or, without
/// one, the samplers' error-weighted mean), with errors, the samplers side by side.
pub(super) fn comparison_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    // ⟨m⟩ vanishes by symmetry: a relative deviation means nothing there.
    let compared: Vec<&ObservableComparison> = summary
        .comparison
        .iter()
        .filter(|c| c.observable != "m")
        .collect();
    let n = summary.samplers.len();
    let centre = |c: &ObservableComparison| -> f64 {
        if let Some([v, _]) = c.reference {
            return v;
        }
        let (mut sum, mut weight) = (0.0, 0.0);
        for s in &summary.samplers {
            if let Some(e) = s.report.observables.get(&c.observable)
                && e.err.is_finite()
                && e.err > 0.0
                && e.mean.is_finite()
            {
                sum += e.mean / (e.err * e.err);
                weight += 1.0 / (e.err * e.err);
            }
        }
        if weight > 0.0 { sum / weight } else { f64::NAN }
    };
    let centres: Vec<f64> = compared.iter().map(|c| centre(c)).collect();
    let mut all: Vec<Series> = summary
        .samplers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (points, errors) = compared
                .iter()
                .zip(&centres)
                .enumerate()
                .filter_map(|(k, (c, &x0))| {
                    // Estimates without an error (an unreliable chain) are left out.
                    let e = s
                        .report
                        .observables
                        .get(&c.observable)
                        .filter(|e| e.err.is_finite())?;
                    Some((
                        (k as f64 + offset(i, n + 1), 100.0 * (e.mean / x0 - 1.0)),
                        100.0 * e.err / x0.abs(),
                    ))
                })
                .unzip();
            series(&s.name, points, Some(errors), Style::Markers, Some(i))
        })
        .collect();
    let (points, errors): (Vec<(f64, f64)>, Vec<f64>) = compared
        .iter()
        .enumerate()
        .filter_map(|(k, c)| {
            c.reference
                .map(|[v, e]| ((k as f64 + offset(n, n + 1), 0.0), 100.0 * e / v.abs()))
        })
        .unzip();
    if !points.is_empty() {
        all.push(Series {
            label: "exact or reference".into(),
            points,
            errors: Some(errors),
            style: Style::Markers,
            colour: Some(6),
        });
    }
    let chart = Chart {
        title: "Observables of every sampler".into(),
        x_label: String::new(),
        y_label: "deviation from the reference (%)".into(),
        series: all,
        horizontal: vec![Marker {
            value: 0.0,
            label: String::new(),
            colour: Some(6),
        }],
        x_categories: compared
            .iter()
            .map(|c| symbol(&c.observable).replace("(L/4)", ""))
            .collect(),
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("observables"))?;
    Ok(Figure {
        stem: "observables",
        title: "Observables of every sampler".into(),
        caption: "Each observable of each sampler as its deviation in percent from the exact \
                  value (free field) or the runcard's [reference] value, drawn in black at 0 \
                  with its error, or — where there is none — from the samplers' \
                  error-weighted mean; error bars are one Γ-method standard error. ⟨m⟩, zero \
                  by symmetry, is in the pulls table only. Samplers that agree scatter about \
                  0 within their errors; the pulls are in the table above. Estimates without an \
                  error (chains found unreliable) are left out."
            .into(),
    })
}
