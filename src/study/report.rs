//! Writing a study's report: `summary.json`, CSV tables, per-sampler data files, PNG and SVG
//! plots and `index.html`, all from a [`StudySummary`] (and the training log in the folder).

use std::fmt::Write as _;
use std::path::Path;

use super::analysis::{Payback, PointEstimate, SamplerAnalysis, StudySummary};
use super::plot::{Bar, BarChart, Chart, Marker, Series, Style, draw_bars, draw_chart};
use crate::control::Observer;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_json};

/// The number of progress steps [`write_report`] reports (one per file group).
pub const REPORT_FILES: usize = 14;

/// One figure of the report: its file stem under `plots/`, title and caption.
struct Figure {
    stem: &'static str,
    title: String,
    caption: String,
}

/// Writes everything the report holds into `folder`, as the stage `report` of `observer`
/// (in file groups, [`REPORT_FILES`] of them).
pub fn write_report(
    folder: &Path,
    summary: &StudySummary,
    observer: &mut dyn Observer,
) -> Result<()> {
    let plots = folder.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(&plots, e))?;
    observer.begin("report", REPORT_FILES as u64, "files");
    let mut step = 0;
    let mut tick = || {
        step += 1;
        observer.progress(step, &[]);
    };
    write_json(&folder.join("summary.json"), summary)?;
    tick();
    write_tables(folder, summary)?;
    tick();
    for s in &summary.samplers {
        write_sampler_files(folder, s)?;
    }
    tick();
    let training = read_training_log(&folder.join("training.csv"))?;
    let mut figures = Vec::new();
    if let Some(log) = &training {
        figures.extend(training_figures(&plots, log)?);
    }
    tick();
    tick();
    figures.push(histogram_figure(&plots, summary, true)?);
    tick();
    figures.push(histogram_figure(&plots, summary, false)?);
    tick();
    figures.push(correlator_figure(&plots, summary)?);
    tick();
    figures.push(xi_eff_figure(&plots, summary)?);
    tick();
    figures.extend(autocorrelation_figures(&plots, summary)?);
    tick();
    tick();
    if let Some(f) = rejection_figure(&plots, summary)? {
        figures.push(f);
    }
    tick();
    figures.push(cost_figure(&plots, summary)?);
    if !summary.payback.is_empty() {
        figures.push(payback_figure(&plots, summary)?);
    }
    tick();
    write_atomic(
        &folder.join("index.html"),
        html(summary, &figures, training.is_some()).as_bytes(),
    )?;
    tick();
    observer.end("written");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Numbers as text.

/// A number for a table cell: empty when not finite.
pub(crate) fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        String::new()
    }
}

/// `mean ± err` with the error rounded to two significant digits and the mean to match.
pub(crate) fn pm(mean: f64, err: f64) -> String {
    if !mean.is_finite() {
        return "—".into();
    }
    if !(err.is_finite() && err > 0.0) {
        return format!("{} ± undefined", sig(mean, 5));
    }
    let digits = (2 - 1 - err.log10().floor() as i32).clamp(0, 12) as usize;
    format!("{mean:.digits$} ± {err:.digits$}")
}

/// The acceptance of a sampler: per kernel when the expression has several (`flow 0.66 ·
/// local 0.50`), else the one number.
pub fn acceptance_text(s: &SamplerAnalysis) -> String {
    let by_kernel = &s.report.acceptance_by_move;
    if by_kernel.len() > 1 {
        by_kernel
            .iter()
            .map(|(k, a)| format!("{k} {a:.3}"))
            .collect::<Vec<_>>()
            .join(" · ")
    } else {
        format!("{:.3}", s.report.acceptance)
    }
}

/// A duration with its error in the unit that suits it (µs, ms or s).
fn seconds_pm(seconds: f64, err: f64) -> String {
    let (scale, unit) = match seconds.abs() {
        x if x < 1e-3 => (1e6, "µs"),
        x if x < 1.0 => (1e3, "ms"),
        _ => (1.0, "s"),
    };
    format!("{} {unit}", pm(seconds * scale, err * scale))
}

/// `mean ± err` as [`pm`], written as `(m ± e)·10^k` when the mean is 10⁵ or more.
fn pm_scaled(mean: f64, err: f64) -> String {
    if !(mean.is_finite() && mean.abs() >= 1e5) {
        return pm(mean, err);
    }
    let k = mean.abs().log10().floor() as i32;
    let scale = 10f64.powi(k);
    format!("({})·10^{k}", pm(mean / scale, err / scale))
}

/// Seconds to three significant digits in s, ms or µs.
fn seconds_text(seconds: f64) -> String {
    let (scale, unit) = match seconds.abs() {
        x if x < 1e-3 => (1e6, "µs"),
        x if x < 1.0 => (1e3, "ms"),
        _ => (1.0, "s"),
    };
    format!("{} {unit}", sig(seconds * scale, 3))
}

/// `x` to `n` significant digits.
pub(crate) fn sig(x: f64, n: usize) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-3..5).contains(&magnitude) {
        return format!("{:.*e}", n.saturating_sub(1), x);
    }
    let digits = (n as i32 - 1 - magnitude).max(0) as usize;
    format!("{x:.digits$}")
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Tables.

/// The per-sampler table's columns.
pub(crate) const SAMPLERS_HEADER: &str = "sampler,kernel,tau,md_steps,steps,acceptance,\
acceptance_by_kernel,\
steps_per_second,seconds_per_step,slowest,tau_max,tau_max_err,cost_per_independent,\
cost_per_independent_err,xi_fit,xi_fit_err,chi2_per_dof,fit_t_min,fit_t_max,verdict";

fn write_tables(folder: &Path, summary: &StudySummary) -> Result<()> {
    let mut samplers = format!("{SAMPLERS_HEADER}\n");
    for s in &summary.samplers {
        let hmc = s.kernel.contains("hmc");
        let fit = s.fit.fit.as_ref();
        let row = [
            csv_field(&s.name),
            csv_field(&s.kernel),
            if hmc {
                num(s.settings.tau)
            } else {
                String::new()
            },
            if hmc {
                s.settings.md_steps.to_string()
            } else {
                String::new()
            },
            s.steps.to_string(),
            num(s.report.acceptance),
            csv_field(
                &s.report
                    .acceptance_by_move
                    .iter()
                    .map(|(k, a)| format!("{k}:{a}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            num(1.0 / s.seconds_per_step),
            num(s.seconds_per_step),
            s.slowest.clone(),
            num(s.tau_max),
            num(s.tau_max_err),
            num(s.cost_per_independent),
            num(s.cost_per_independent_err),
            fit.map_or(String::new(), |f| num(f.xi)),
            fit.map_or(String::new(), |f| num(f.xi_err)),
            fit.map_or(String::new(), |f| num(f.chi2_per_dof)),
            s.fit.range[0].to_string(),
            s.fit.range[1].to_string(),
            s.report.verdict.to_string(),
        ];
        samplers.push_str(&row.join(","));
        samplers.push('\n');
    }
    write_atomic(&folder.join("samplers.csv"), samplers.as_bytes())?;

    if !summary.payback.is_empty() {
        let mut payback = String::from(
            "sampler,baseline,cost,cost_err,baseline_cost,baseline_cost_err,training_seconds,\
             break_even,break_even_err,reason\n",
        );
        for p in &summary.payback {
            let row = [
                csv_field(&p.sampler),
                csv_field(&p.baseline),
                num(p.cost),
                num(p.cost_err),
                num(p.baseline_cost),
                num(p.baseline_cost_err),
                num(p.training_seconds),
                p.break_even.map_or(String::new(), num),
                p.break_even_err.map_or(String::new(), num),
                csv_field(p.reason.as_deref().unwrap_or("")),
            ];
            payback.push_str(&row.join(","));
            payback.push('\n');
        }
        write_atomic(&folder.join("payback.csv"), payback.as_bytes())?;
    }

    let mut observables =
        String::from("sampler,observable,mean,err,tau_int,tau_int_err,exact,caveat\n");
    for s in &summary.samplers {
        for (name, e) in &s.report.observables {
            let exact = s
                .report
                .exact
                .as_ref()
                .and_then(|x| x.get(name))
                .map_or(String::new(), |v| num(*v));
            let _ = writeln!(
                observables,
                "{},{name},{},{},{},{},{exact},{}",
                csv_field(&s.name),
                num(e.mean),
                num(e.err),
                num(e.tau_int),
                num(e.tau_int_err),
                csv_field(e.caveat.as_deref().unwrap_or(""))
            );
        }
    }
    write_atomic(&folder.join("observables.csv"), observables.as_bytes())?;

    let h = &summary.histograms;
    let mut histograms = String::from("quantity,bin_low,bin_high");
    for s in &summary.samplers {
        histograms.push(',');
        histograms.push_str(&csv_field(&s.name));
    }
    histograms.push('\n');
    for (quantity, edges, densities) in [
        ("phi", &h.phi_edges, &h.phi_density),
        ("M", &h.m_edges, &h.m_density),
    ] {
        for b in 0..edges.len().saturating_sub(1) {
            let _ = write!(
                histograms,
                "{quantity},{},{}",
                num(edges[b]),
                num(edges[b + 1])
            );
            for d in densities {
                let _ = write!(
                    histograms,
                    ",{}",
                    d.get(b).map_or(String::new(), |v| num(*v))
                );
            }
            histograms.push('\n');
        }
    }
    write_atomic(&folder.join("histograms.csv"), histograms.as_bytes())?;

    if summary.samplers.iter().any(|s| s.tuning.is_some()) {
        let mut tuning =
            String::from("sampler,tau,md_steps,acceptance,tau_max,slowest,cost,verdict,chosen\n");
        for s in &summary.samplers {
            let Some(t) = &s.tuning else { continue };
            for p in &t.pilots {
                let chosen = p.tau == t.tau && p.md_steps == t.md_steps;
                let _ = writeln!(
                    tuning,
                    "{},{},{},{},{},{},{},{},{chosen}",
                    csv_field(&s.name),
                    num(p.tau),
                    p.md_steps,
                    num(p.acceptance),
                    num(p.tau_max),
                    p.slowest,
                    num(p.cost),
                    p.verdict
                );
            }
        }
        write_atomic(&folder.join("hmc_tuning.csv"), tuning.as_bytes())?;
    }
    Ok(())
}

fn write_sampler_files(folder: &Path, s: &SamplerAnalysis) -> Result<()> {
    let dir = folder.join("data").join(&s.slug);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let fit = s.fit.fit.as_ref();
    let period = s.correlator.len() as f64;
    let mut correlator = String::from("t,G_hat,err,fit\n");
    for p in &s.correlator {
        let model = fit
            .filter(|f| (f.t_min..=f.t_max).contains(&p.t))
            .map_or(String::new(), |f| {
                num(cosh_model(f.amplitude, f.mass, p.t as f64, period))
            });
        let _ = writeln!(correlator, "{},{},{},{model}", p.t, num(p.mean), num(p.err));
    }
    write_atomic(&dir.join("correlator.csv"), correlator.as_bytes())?;
    let mut xi = String::from("t,xi_eff,err\n");
    for p in &s.xi_eff {
        let _ = writeln!(xi, "{},{},{}", p.t, num(p.mean), num(p.err));
    }
    write_atomic(&dir.join("xi_eff.csv"), xi.as_bytes())?;
    let a = &s.autocorrelation;
    let mut ac = String::from("t,rho,tau_int_window\n");
    for (t, (rho, tau)) in a.rho.iter().zip(&a.tau_int_by_window).enumerate() {
        let _ = writeln!(ac, "{t},{},{}", num(*rho), num(*tau));
    }
    write_atomic(&dir.join("autocorrelation.csv"), ac.as_bytes())?;
    if let Some(runs) = &s.rejection_runs {
        let mut text = String::from("length,count\n");
        for (length, count) in runs {
            let _ = writeln!(text, "{length},{count}");
        }
        write_atomic(&dir.join("rejection_runs.csv"), text.as_bytes())?;
    }
    Ok(())
}

fn cosh_model(amplitude: f64, mass: f64, t: f64, period: f64) -> f64 {
    amplitude * ((-mass * t).exp() + (-mass * (period - t)).exp())
}

// ---------------------------------------------------------------------------------------
// The training log.

/// The columns of the training log that are plotted.
struct TrainingLog {
    configs: Vec<f64>,
    loss: Vec<f64>,
    eval_configs: Vec<f64>,
    acceptance: Vec<f64>,
    ess: Vec<f64>,
}

fn read_training_log(path: &Path) -> Result<Option<TrainingLog>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            Error::format(
                format!("training log {}", path.display()),
                format!("no column `{name}`"),
            )
        })
    };
    let (c_configs, c_loss, c_acc, c_ess) = (
        column("configs_seen")?,
        column("loss")?,
        column("acceptance")?,
        column("ess")?,
    );
    let mut log = TrainingLog {
        configs: Vec::new(),
        loss: Vec::new(),
        eval_configs: Vec::new(),
        acceptance: Vec::new(),
        ess: Vec::new(),
    };
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let get = |k: usize| fields.get(k).and_then(|f| f.parse::<f64>().ok());
        let Some(configs) = get(c_configs) else {
            continue;
        };
        if let Some(loss) = get(c_loss) {
            log.configs.push(configs);
            log.loss.push(loss);
        }
        if let Some(acceptance) = get(c_acc) {
            log.eval_configs.push(configs);
            log.acceptance.push(acceptance);
            log.ess.push(get(c_ess).unwrap_or(f64::NAN));
        }
    }
    Ok(Some(log))
}

// ---------------------------------------------------------------------------------------
// Figures.

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

fn training_figures(plots: &Path, log: &TrainingLog) -> Result<Vec<Figure>> {
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

fn histogram_figure(plots: &Path, summary: &StudySummary, phi: bool) -> Result<Figure> {
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

fn correlator_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
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

fn xi_eff_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
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

fn autocorrelation_figures(plots: &Path, summary: &StudySummary) -> Result<Vec<Figure>> {
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

fn rejection_figure(plots: &Path, summary: &StudySummary) -> Result<Option<Figure>> {
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

fn cost_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
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
fn payback_figure(plots: &Path, summary: &StudySummary) -> Result<Figure> {
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

// ---------------------------------------------------------------------------------------
// index.html.

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(summary: &StudySummary, figures: &[Figure], has_training: bool) -> String {
    let spec = &summary.study;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{name} — latflow study</title>\n<style>\
         body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0;font-size:14px}}\
         th,td{{border:1px solid #bbb;padding:4px 8px;text-align:right}}\
         th{{background:#eee}} td.l,th.l{{text-align:left}}\
         figure{{margin:2em 0}} figure img{{width:100%;border:1px solid #ddd}}\
         figcaption{{font-size:14px;color:#333;margin-top:.4em}}\
         .reliable{{color:#1a7f37}} .warning{{color:#b35900}} .unreliable{{color:#c00;font-weight:bold}}\
         code{{background:#f4f4f4;padding:1px 3px}}</style></head><body>\n",
        name = escape(&summary.name)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1>\n<p>latflow {} · lattice {} · action {} · seed {} · overall verdict \
         <span class=\"{v}\">{v}</span></p>",
        escape(&summary.name),
        escape(&summary.latflow_version),
        escape(&spec.lattice.to_string()),
        escape(&action_text(&spec.action)),
        spec.seed,
        v = summary.verdict
    );
    let _ = writeln!(
        h,
        "<p>Files: <a href=\"runcard.toml\">runcard.toml</a> (the study as run) · \
         <a href=\"summary.json\">summary.json</a> · <a href=\"samplers.csv\">samplers.csv</a> · \
         <a href=\"observables.csv\">observables.csv</a> · \
         <a href=\"histograms.csv\">histograms.csv</a>{}{}</p>",
        if has_training {
            " · <a href=\"training.csv\">training.csv</a> · <a href=\"model.json\">model.json</a>"
        } else {
            ""
        },
        if summary.samplers.iter().any(|s| s.tuning.is_some()) {
            " · <a href=\"hmc_tuning.csv\">hmc_tuning.csv</a>"
        } else {
            ""
        }
    );
    if let Some(t) = &summary.training {
        let _ = writeln!(
            h,
            "<h2>Training</h2><p>{} parameters trained on {} configurations in {:.1} s \
             ({:.0} configurations/s); final acceptance {:.3}, ESS/N {:.3}, τ_rej {:.2}.</p>",
            t.n_params,
            t.configs_seen,
            t.seconds,
            t.configs_per_second,
            t.acceptance,
            t.ess,
            t.tau_rej
        );
    }
    h.push_str("<h2>Samplers</h2>\n<table><tr><th class=\"l\">sampler</th><th class=\"l\">kernel</th>\
        <th>steps</th><th>acceptance</th><th>steps/s</th><th>τ_max (observable)</th>\
        <th>s per independent config</th><th>ξ (cosh fit)</th><th>χ²/dof</th><th>verdict</th></tr>\n");
    for s in &summary.samplers {
        let settings = if s.kernel.contains("hmc") {
            format!(
                " (τ = {}, {} MD steps)",
                s.settings.tau, s.settings.md_steps
            )
        } else {
            String::new()
        };
        let (xi, chi) = match &s.fit.fit {
            Some(f) => (pm(f.xi, f.xi_err), sig(f.chi2_per_dof, 3)),
            None => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code>{}</td><td>{}</td>\
             <td>{}</td><td>{:.0}</td><td>{} ({})</td><td>{}</td><td>{xi}</td><td>{chi}</td>\
             <td class=\"{v}\">{v}</td></tr>",
            escape(&s.name),
            escape(&s.kernel),
            escape(&settings),
            s.steps,
            escape(&acceptance_text(s)),
            1.0 / s.seconds_per_step,
            pm(s.tau_max, s.tau_max_err),
            escape(&s.slowest),
            seconds_pm(s.cost_per_independent, s.cost_per_independent_err),
            v = s.report.verdict
        );
    }
    h.push_str("</table>\n");
    h.push_str(
        "<p>τ_int in measurements (one every <code>thin</code> steps of the kernel \
         expression); the cost is 2 τ_max × seconds per step. The fit range is ",
    );
    let _ = writeln!(
        h,
        "t = {}…{}.</p>",
        summary.fit_range[0], summary.fit_range[1]
    );

    if !summary.payback.is_empty() {
        h.push_str(&payback_html(&summary.payback));
    }

    h.push_str("<h2>Observables</h2>\n<table><tr><th class=\"l\">observable</th>");
    for s in &summary.samplers {
        let _ = write!(h, "<th>{}</th>", escape(&s.name));
    }
    let exact = summary
        .samplers
        .first()
        .and_then(|s| s.report.exact.clone());
    if exact.is_some() {
        h.push_str("<th>exact</th>");
    }
    h.push_str("</tr>\n");
    let names: Vec<String> = summary
        .samplers
        .first()
        .map(|s| s.report.observables.keys().cloned().collect())
        .unwrap_or_default();
    for name in &names {
        let _ = write!(h, "<tr><td class=\"l\">{}</td>", escape(name));
        for s in &summary.samplers {
            let cell = s.report.observables.get(name).map_or("—".to_string(), |e| {
                format!(
                    "{} <small>(τ {})</small>",
                    pm(e.mean, e.err),
                    sig(e.tau_int, 3)
                )
            });
            let _ = write!(h, "<td>{cell}</td>");
        }
        if let Some(x) = &exact {
            let _ = write!(
                h,
                "<td>{}</td>",
                x.get(name).map_or("".into(), |v| sig(*v, 6))
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str(
        "</table>\n<p>Means with Γ-method errors and, in brackets, τ_int. m = M/|Λ|, \
        χ = |Λ|(⟨m²⟩ − ⟨m⟩²), ξ_2nd the second-moment correlation length, ξ_eff at t = L/4.</p>\n",
    );

    let findings: Vec<String> = summary
        .samplers
        .iter()
        .flat_map(|s| {
            s.report.diagnostics.findings.iter().map(move |f| {
                format!(
                    "<li><b>{}</b> <span class=\"{}\">{}</span> <code>{}</code>: {}</li>",
                    escape(&s.name),
                    f.severity,
                    f.severity,
                    escape(&f.code),
                    escape(&f.message)
                )
            })
        })
        .collect();
    if !findings.is_empty() {
        let _ = writeln!(h, "<h2>Diagnostics</h2><ul>{}</ul>", findings.join("\n"));
    }

    h.push_str("<h2>Figures</h2>\n");
    for f in figures {
        let _ = writeln!(
            h,
            "<figure id=\"{stem}\"><a href=\"plots/{stem}.svg\"><img src=\"plots/{stem}.png\" \
             alt=\"{title}\"></a><figcaption><b>{title}.</b> {caption} \
             (<a href=\"plots/{stem}.svg\">SVG</a>)</figcaption></figure>",
            stem = f.stem,
            title = escape(&f.title),
            caption = escape(&f.caption)
        );
    }
    h.push_str("<h2>Data per sampler</h2>\n<ul>\n");
    for s in &summary.samplers {
        let d = format!("data/{}", s.slug);
        let _ = write!(
            h,
            "<li>{}: <a href=\"{d}/series.npy\">series.npy</a> (columns in \
             <a href=\"{d}/series_columns.json\">series_columns.json</a>), \
             <a href=\"{d}/configs.npy\">configs.npy</a>, <a href=\"{d}/moves.npy\">moves.npy</a>, \
             <a href=\"{d}/correlator.csv\">correlator.csv</a>, \
             <a href=\"{d}/xi_eff.csv\">xi_eff.csv</a>, \
             <a href=\"{d}/autocorrelation.csv\">autocorrelation.csv</a>, \
             <a href=\"{d}/run.json\">run.json</a>",
            escape(&s.name)
        );
        if s.rejection_runs.is_some() {
            let _ = write!(
                h,
                ", <a href=\"{d}/rejection_runs.csv\">rejection_runs.csv</a>"
            );
        }
        h.push_str("</li>\n");
    }
    h.push_str(
        "</ul>\n<p>Recompute everything from the stored series with \
        <code>latflow analyse FOLDER</code> (e.g. <code>--therm-cut 1000</code>, \
        <code>--fit-range 1:4</code>).</p>\n</body></html>\n",
    );
    h
}

/// The "Does the flow pay for its training?" section: one row per flow sampler.
fn payback_html(payback: &[Payback]) -> String {
    let mut h = String::from(
        "<h2>Does the flow pay for its training?</h2>\n<table><tr><th class=\"l\">sampler</th>\
         <th class=\"l\">against</th><th>s per independent config</th><th>against</th>\
         <th>training s</th><th>paid after N independent configs</th>\
         <th>s per config, amortised over 10⁴ / 10⁶</th></tr>\n",
    );
    for p in payback {
        let paid = match (p.break_even, p.break_even_err) {
            (Some(n), Some(err)) => pm_scaled(n, err),
            _ => "—".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td><td>{paid}</td><td>{} / {}</td></tr>",
            escape(&p.sampler),
            escape(&p.baseline),
            seconds_pm(p.cost, p.cost_err),
            seconds_pm(p.baseline_cost, p.baseline_cost_err),
            p.training_seconds,
            seconds_text(p.amortised_cost(1e4)),
            seconds_text(p.amortised_cost(1e6))
        );
    }
    h.push_str("</table>\n<ul>\n");
    for p in payback {
        let text = match (&p.reason, p.break_even) {
            (Some(reason), _) => format!("{}: {reason}.", p.sampler),
            (None, Some(n)) => format!(
                "{}: the training has paid for itself after {} independent configurations \
                 (about {} s of sampling with {}).",
                p.sampler,
                sig(n, 2),
                sig(n * p.baseline_cost, 2),
                p.baseline
            ),
            (None, None) => format!("{}: undefined.", p.sampler),
        };
        let _ = writeln!(h, "<li>{}</li>", escape(&text));
    }
    h.push_str(
        "</ul>\n<p>N independent configurations cost T + c_flow·N with the flow (T its \
         training, steps and acceptance checks) against c·N with the cheapest sampler without \
         one; the flow is cheaper beyond N* = T/(c − c_flow). The error of N* comes from \
         those of the two costs.</p>\n",
    );
    h
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

fn action_text(action: &crate::run::ActionSpec) -> String {
    action.describe()
}
