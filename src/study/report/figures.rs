//! The report's figures: each draws one chart into `plots/` (PNG and SVG) and returns the
//! [`Figure`] that the page shows with its title and caption — training loss and flow
//! quality, histograms of φ and M, the correlator with its fits, ξ_eff(t), autocorrelation
//! and τ_int, runs of rejections, the cost per independent configuration and the payback
//! of the flow's training.

use std::path::Path;

use super::cosh_model;
use super::text::{pm, seconds_text, sig};
use super::training_log::TrainingLog;
use crate::error::Result;
use crate::study::analysis::{PointEstimate, SamplerAnalysis, StudySummary};
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

/// One marker series with error bars per sampler, in the sampler's colour.
fn estimates_per_sampler(
    summary: &StudySummary,
    pick: impl Fn(&SamplerAnalysis) -> &[PointEstimate],
) -> Vec<Series> {
    summary
        .samplers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let points = pick(s);
            series(
                &s.name,
                points.iter().map(|p| (p.t as f64, p.mean)).collect(),
                Some(points.iter().map(|p| p.err).collect()),
                Style::Markers,
                Some(i),
            )
        })
        .collect()
}

/// Ĝ(t) of every sampler with its cosh fit.
pub(super) fn correlator_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let mut all = estimates_per_sampler(summary, |s| &s.correlator);
    for (i, s) in summary.samplers.iter().enumerate() {
        if let Some(f) = &s.fit.fit {
            let period = s.correlator.len() as f64;
            let points = (0..=100)
                .map(|k| {
                    let t = f.t_min as f64 + (f.t_max - f.t_min) as f64 * k as f64 / 100.0;
                    (t, cosh_model(f.amplitude, f.mass, t, period))
                })
                .collect();
            all.push(series(
                &format!("{} fit: ξ = {}", s.name, pm(f.xi, f.xi_err)),
                points,
                None,
                Style::Line,
                Some(i),
            ));
        }
    }
    let chart = Chart {
        title: "Zero-momentum correlator Ĝ(t)".into(),
        x_label: "time separation t (lattice units)".into(),
        y_label: "Ĝ(t)".into(),
        series: all,
        y_log: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("correlator"))?;
    let [a, b] = summary.fit_range;
    Ok(Figure {
        stem: "correlator",
        title: "Zero-momentum correlator Ĝ(t)".into(),
        caption: format!(
            "Ĝ(t) = (1/|Λ|) Σ_{{x,y}} ⟨φ(x) φ(y)⟩ over slices x₀ − y₀ = t, with Γ-method \
             errors, on a log scale; the lines are correlated fits of A[e^{{−t/ξ}} + \
             e^{{−(L−t)/ξ}}] on t = {a}…{b} (covariance from the Γ-method, χ² through its \
             Cholesky factor). A straight fall that bends up near L/2 is the periodic cosh."
        ),
    })
}

/// ξ_eff(t) of every sampler with the first sampler's fitted ξ.
pub(super) fn xi_eff_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let all = estimates_per_sampler(summary, |s| &s.xi_eff);
    let mut horizontal = Vec::new();
    if let Some((i, s, f)) = summary
        .samplers
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.fit.fit.as_ref().map(|f| (i, s, f)))
    {
        horizontal.push(Marker {
            value: f.xi,
            label: format!("cosh fit ({}): ξ = {}", s.name, pm(f.xi, f.xi_err)),
            colour: Some(i),
        });
    }
    let chart = Chart {
        title: "Effective correlation length ξ_eff(t)".into(),
        x_label: "time separation t (lattice units)".into(),
        y_label: "ξ_eff(t) (lattice units)".into(),
        series: all,
        horizontal,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("xi_eff"))?;
    Ok(Figure {
        stem: "xi_eff",
        title: "Effective correlation length ξ_eff(t)".into(),
        caption: "ξ_eff(t) = 1 / arcosh[(Ĝ(t−1) + Ĝ(t+1)) / 2Ĝ(t)] at every t with Γ-method \
                  errors (data in data/<sampler>/xi_eff.csv). A plateau is the correlation \
                  length; the dashed line is the correlated cosh fit of the first sampler."
            .into(),
    })
}

/// ρ(t) and τ_int(W) of every sampler with the chosen windows.
pub(super) fn autocorrelation_figures(plots: &Path, summary: &StudySummary) -> Result<Vec<Figure>> {
    let observable = summary.samplers.first().map_or("|m|".to_string(), |s| {
        display_name(&s.autocorrelation.observable)
    });
    let mut rho = Vec::new();
    let mut tau = Vec::new();
    let mut windows = Vec::new();
    for (i, s) in summary.samplers.iter().enumerate() {
        let a = &s.autocorrelation;
        // Lag 0 (ρ = 1, τ_int = ½) has no place on a log lag axis.
        let curve = |values: &[f64]| {
            let points = values
                .iter()
                .enumerate()
                .skip(1)
                .map(|(t, v)| (t as f64, *v))
                .collect();
            series(&s.name, points, None, Style::Line, Some(i))
        };
        rho.push(curve(&a.rho));
        tau.push(curve(&a.tau_int_by_window));
        windows.push(Marker {
            value: a.window as f64,
            label: format!(
                "{}: W = {}, τ_int = {}",
                s.name,
                a.window,
                sig(a.tau_int, 3)
            ),
            colour: Some(i),
        });
    }
    let chart = Chart {
        title: format!("Autocorrelation of {observable}"),
        x_label: "lag t (measurements, log scale)".into(),
        y_label: "Γ(t) / Γ(0)".into(),
        series: rho,
        vertical: windows.clone(),
        x_log: true,
        ..Chart::default()
    };
    draw_chart(&chart, &plots.join("autocorrelation"))?;
    // Headroom above the curves for the legend.
    let (lo, hi) = summary
        .samplers
        .iter()
        .flat_map(|s| s.autocorrelation.tau_int_by_window.iter().skip(1))
        .filter(|t| t.is_finite() && **t > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        });
    let y_range = (hi > 0.0).then_some((0.8 * lo, 6.0 * hi));
    let chart = Chart {
        title: format!("Integrated autocorrelation time of {observable}"),
        y_range,
        x_label: "summation window W (measurements, log scale)".into(),
        y_label: "τ_int(W) (measurements, log scale)".into(),
        series: tau,
        vertical: windows,
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
                 and slow samplers show on one chart); the dashed lines mark the window W \
                 chosen by Wolff's automatic windowing."
            ),
        },
        Figure {
            stem: "tau_int",
            title: format!("Integrated autocorrelation time of {observable}"),
            caption: "τ_int(W) = ½ + Σ_{t ≤ W} ρ(t) against the summation window W, both \
                      on log scales; it should level off before the chosen window (dashed). \
                      The error of a mean is √(2τ_int) times the naive one."
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
            .map(|&(i, s, runs)| {
                series(
                    &s.name,
                    runs.iter().map(|(&l, &c)| (l as f64, c as f64)).collect(),
                    None,
                    Style::Markers,
                    Some(i),
                )
            })
            .collect(),
        y_log: true,
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

/// Seconds per independent configuration, one bar per sampler.
pub(super) fn cost_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
    let note = summary.training.as_ref().map(|t| {
        format!(
            "training, not included: {:.1} s for {} configurations (acceptance {:.3})",
            t.seconds, t.configs_seen, t.acceptance
        )
    });
    let chart = BarChart {
        title: "Cost of one independent configuration".into(),
        y_label: "seconds per independent configuration".into(),
        bars: summary
            .samplers
            .iter()
            .map(|s| Bar {
                label: s.name.clone(),
                value: s.cost_per_independent,
                err: Some(s.cost_per_independent_err),
            })
            .collect(),
        y_log: false,
        note,
    };
    draw_bars(&chart, &plots.join("cost"))?;
    Ok(Figure {
        stem: "cost",
        title: "Cost of one independent configuration".into(),
        caption: "Wall seconds per effectively independent configuration, 2 τ_max × seconds \
                  per step, with τ_max the largest τ_int among the cost observables; lower is \
                  better. The flow's training time is not included (see the note and the \
                  table); it is paid once and amortised over every configuration the flow \
                  proposes."
            .into(),
    })
}

/// Total seconds against the number of independent configurations: T + c·N for the flow
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
    let lo = 10.0_f64;
    let grid: Vec<f64> = (0..=60)
        .map(|i| lo * (hi / lo).powf(f64::from(i) / 60.0))
        .collect();
    let series = summary
        .samplers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.cost_per_independent.is_finite() && s.cost_per_independent > 0.0)
        .map(|(i, s)| {
            let fixed = if s.settings.uses_flow() {
                training
            } else {
                0.0
            };
            Series {
                label: s.name.clone(),
                points: grid
                    .iter()
                    .map(|&n| (n, fixed + s.cost_per_independent * n))
                    .collect(),
                errors: None,
                style: if s.settings.uses_flow() {
                    Style::Line
                } else {
                    Style::Dashed
                },
                colour: Some(i),
            }
        })
        .collect();
    let vertical = summary
        .payback
        .iter()
        .filter_map(|p| {
            p.break_even.map(|n| Marker {
                value: n,
                label: format!("{} pays after {}", p.sampler, sig(n, 2)),
                colour: None,
            })
        })
        .collect();
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
             with c the seconds per independent configuration. Dashed vertical lines: where a \
             flow sampler becomes cheaper than the cheapest sampler without a flow.",
            seconds_text(training)
        ),
    })
}

/// An observable's name as written in formulas.
fn display_name(name: &str) -> String {
    match name {
        "abs_m" => "|m|".into(),
        "m2" => "m²".into(),
        "phi2" => "φ²".into(),
        "energy" => "the energy".into(),
        other => other.into(),
    }
}
