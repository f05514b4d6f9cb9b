//! The sections of the report's page: analysis settings, samplers, training, payback,
//! diagnostics per sampler, the HMC scan, observables with their pulls, and the glossary.

use std::fmt::Write as _;

use super::figures::training_cost_text;
use super::glossary::{GLOSSARY, symbol};
use super::html::escape;
use super::text::{TimeUnit, acceptance_text, pm, pm_scaled, sig};
use crate::run::TrainReport;
use crate::study::analysis::{SamplerAnalysis, StudySummary};
use crate::study::compare::count_text;

/// A number as text, `—` when not finite.
fn or_dash(x: f64, digits: usize) -> String {
    if x.is_finite() {
        sig(x, digits)
    } else {
        "—".into()
    }
}

/// A rate to three significant figures, thousands grouped (`482 000`).
fn rate_text(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x < 1000.0 {
        return sig(x, 3);
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 2);
    let digits = ((x / scale).round() * scale).round().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// The analysis settings used, and where they come from.
pub(super) fn settings_html(summary: &StudySummary) -> String {
    let a = &summary.study.analysis;
    let [t_min, t_max] = summary.fit_range;
    let source = if summary.analysis_file.is_empty() {
        "runcard.toml"
    } else {
        summary.analysis_file.as_str()
    };
    let therm: Vec<String> = summary
        .samplers
        .iter()
        .map(|s| s.report.therm.to_string())
        .collect();
    let therm = if therm.iter().all(|t| *t == therm[0]) {
        therm[0].clone()
    } else {
        therm.join(" / ")
    };
    let cost: Vec<String> = a
        .cost_observables
        .iter()
        .map(|o| format!("{} (<code>{}</code>)", escape(symbol(o)), escape(o)))
        .collect();
    format!(
        "<h2>Analysis settings</h2>\n<p id=\"settings\">From <a href=\"{source}\">{source}</a>: \
         thermalisation cut <b>{}</b> measurements dropped from the stored series (on top of \
         the unstored thermalisation; {therm} steps not analysed in all) · cosh fit range \
         <b>t = {t_min}…{t_max}</b> · histogram bins <b>{}</b> · cost observables {} · \
         autocorrelation shown for {}.</p>\n",
        a.therm_cut,
        a.histogram_bins,
        cost.join(", "),
        escape(symbol(&a.autocorrelation_observable)),
    )
}

/// The samplers table: speed, cost in one unit, and the one ξ.
pub(super) fn samplers_html(summary: &StudySummary) -> String {
    let unit = TimeUnit::for_values(summary.samplers.iter().map(|s| s.cost_per_independent));
    let [a, b] = summary.fit_range;
    let mut h = format!(
        "<h2>Samplers</h2>\n<table id=\"samplers\"><tr><th class=\"l\">sampler</th>\
         <th class=\"l\">kernel</th><th>measured steps</th><th>acceptance</th><th>steps/s</th>\
         <th>τ_max (observable)</th><th>{} per independent config</th>\
         <th>ξ (cosh fit, t = {a}…{b})</th><th>χ²/dof</th><th>verdict</th></tr>\n",
        unit.name
    );
    for s in &summary.samplers {
        let settings = if s.kernel.contains("hmc") {
            format!(
                " (τ = {}, {} MD steps)",
                s.settings.tau, s.settings.md_steps
            )
        } else {
            String::new()
        };
        let xi = s
            .report
            .observables
            .get("xi_fit")
            .map_or("—".into(), |e| pm(e.mean, e.err));
        let chi = s
            .fit
            .fit
            .as_ref()
            .map_or("—".into(), |f| or_dash(f.chi2_per_dof, 3));
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td class=\"xi\">{xi}</td>\
             <td>{chi}</td><td class=\"{v}\">{v}</td></tr>",
            escape(&s.name),
            escape(&s.kernel),
            escape(&settings),
            if s.chains > 1 {
                format!("{} × {} chains", s.steps, s.chains)
            } else {
                s.steps.to_string()
            },
            escape(&acceptance_text(s)),
            rate_text(1.0 / s.seconds_per_step),
            pm(s.tau_max, s.tau_max_err),
            escape(symbol(&s.slowest)),
            pm(
                s.cost_per_independent * unit.scale,
                s.cost_per_independent_err * unit.scale
            ),
            v = s.report.verdict
        );
    }
    h.push_str(
        "</table>\n<p>τ_int in measurements (one every <code>thin</code> steps of the kernel \
         expression); the cost is 2 τ_max × time per step. χ²/dof is undefined when the fit \
         range leaves no degree of freedom.</p>\n",
    );
    h
}

/// The training: what was trained and its one cost.
pub(super) fn training_html(t: &TrainReport) -> String {
    format!(
        "<h2>Training</h2><p id=\"training\">{} parameters trained on {} configurations \
         ({} configurations/s of optimisation). Training cost T = {}. Final acceptance {}, \
         ESS/N {}, τ_rej {}.</p>\n",
        t.n_params,
        t.configs_seen,
        sig(t.configs_per_second, 3),
        escape(&training_cost_text(t)),
        or_dash(t.acceptance, 3),
        or_dash(t.ess, 3),
        or_dash(t.tau_rej, 3)
    )
}

/// The "Does the flow pay for its training?" section: one row per flow sampler.
pub(super) fn payback_html(summary: &StudySummary) -> String {
    let payback = &summary.payback;
    let unit = TimeUnit::for_values(
        payback
            .iter()
            .flat_map(|p| [p.cost, p.baseline_cost, p.amortised_cost(1e6)]),
    );
    let mut h = format!(
        "<h2>Does the flow pay for its training?</h2>\n<table id=\"payback\"><tr>\
         <th class=\"l\">flow sampler</th><th>{u} per independent config</th>\
         <th class=\"l\">cheapest without a flow</th><th>its {u} per independent config</th>\
         <th>training T</th><th>pays back after N independent configs</th>\
         <th>{u} per config with T spread over 10⁴ / 10⁶</th></tr>\n",
        u = unit.name
    );
    for p in payback {
        let paid = match (p.break_even, p.break_even_err) {
            (Some(n), Some(err)) => pm_scaled(n, err),
            _ => "never".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td>\
             <td>{}</td><td>{paid}</td><td>{} / {}</td></tr>",
            escape(&p.sampler),
            if p.cost.is_finite() {
                pm(p.cost * unit.scale, p.cost_err * unit.scale)
            } else {
                "—".into()
            },
            escape(&p.baseline),
            pm(
                p.baseline_cost * unit.scale,
                p.baseline_cost_err * unit.scale
            ),
            TimeUnit::for_values([p.training_seconds]).text(p.training_seconds),
            or_dash(p.amortised_cost(1e4) * unit.scale, 3),
            or_dash(p.amortised_cost(1e6) * unit.scale, 3)
        );
    }
    h.push_str("</table>\n<ul>\n");
    for p in payback {
        let text = match (&p.reason, p.break_even) {
            (Some(reason), _) => format!("{}: {reason}.", p.sampler),
            (None, Some(n)) => format!(
                "{}: the training has paid for itself after {} independent configurations \
                 (about {} of sampling with {}).",
                p.sampler,
                count_text(n),
                TimeUnit::for_values([n * p.baseline_cost]).text(n * p.baseline_cost),
                p.baseline
            ),
            (None, None) => format!("{}: undefined.", p.sampler),
        };
        let _ = writeln!(h, "<li>{}</li>", escape(&text));
    }
    h.push_str(
        "</ul>\n<p>N independent configurations cost T + c_flow·N with the flow (T its \
         training: optimisation and acceptance checks) against c·N with the cheapest sampler \
         without one; the flow is cheaper beyond N* = T/(c − c_flow). The error of N* comes \
         from those of the two costs.</p>\n",
    );
    h
}

/// The numbers of one sampler's diagnostics, as table cells.
pub(super) struct DiagnosticsRow {
    pub(super) acceptance: String,
    pub(super) exp_minus_delta_h: String,
    pub(super) tau_rej: String,
    pub(super) ess: String,
    pub(super) pareto_k: String,
    pub(super) longest_rejection_run: String,
    pub(super) longest_stuck_run: String,
    pub(super) step_size: String,
}

impl DiagnosticsRow {
    /// The diagnostics of `s`; `—` where they do not apply.
    pub(super) fn of(s: &SamplerAnalysis) -> Self {
        let r = &s.report;
        let d = &r.diagnostics;
        let flows = |f: &dyn Fn(&crate::diagnostics::FlowDiagnostics) -> String| {
            if d.flows.is_empty() {
                "—".to_string()
            } else {
                d.flows.iter().map(f).collect::<Vec<_>>().join(" · ")
            }
        };
        let mut steps = Vec::new();
        if let Some(delta) = r.local_step_size {
            steps.push(format!("local δ = {}", sig(delta, 3)));
        }
        if s.kernel.contains("hmc") && s.settings.md_steps > 0 {
            steps.push(format!(
                "HMC ε = {}",
                sig(s.settings.tau / s.settings.md_steps as f64, 3)
            ));
        }
        DiagnosticsRow {
            acceptance: acceptance_text(s),
            exp_minus_delta_h: r
                .exp_minus_delta_h
                .as_ref()
                .map_or("—".into(), |e| pm(e.mean, e.err)),
            tau_rej: match (r.tau_rej, r.tau_rej_err) {
                (Some(t), Some(e)) => pm(t, e),
                _ => "—".into(),
            },
            ess: flows(&|f| or_dash(f.ess_per_sample, 3)),
            pareto_k: flows(&|f| {
                format!(
                    "{} (limit {})",
                    or_dash(f.pareto_k, 2),
                    sig(f.pareto_k_threshold, 2)
                )
            }),
            longest_rejection_run: r
                .longest_rejection_run
                .map_or("—".into(), |n| n.to_string()),
            longest_stuck_run: format!(
                "{} ({:.1} %)",
                d.longest_stuck_run,
                100.0 * d.longest_stuck_fraction
            ),
            step_size: if steps.is_empty() {
                "—".into()
            } else {
                steps.join(" · ")
            },
        }
    }
}

/// The diagnostics table, one row per sampler, and every finding in words.
pub(super) fn diagnostics_html(summary: &StudySummary) -> String {
    let mut h = String::from(
        "<h2>Diagnostics</h2>\n<table id=\"diagnostics\"><tr><th class=\"l\">sampler</th>\
         <th>acceptance per kernel</th><th>⟨e<sup>−ΔH</sup>⟩</th><th>τ_rej (proposals)</th>\
         <th>ESS per sample</th><th>Pareto k̂</th><th>longest rejection run</th>\
         <th>longest stuck run (steps)</th><th>step size</th><th class=\"l\">findings</th></tr>\n",
    );
    for s in &summary.samplers {
        let d = DiagnosticsRow::of(s);
        let findings: Vec<String> = s
            .report
            .diagnostics
            .findings
            .iter()
            .map(|f| format!("<span class=\"{}\">{}</span>", f.severity, escape(&f.code)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            escape(&s.name),
            escape(&d.acceptance),
            d.exp_minus_delta_h,
            d.tau_rej,
            d.ess,
            d.pareto_k,
            d.longest_rejection_run,
            d.longest_stuck_run,
            escape(&d.step_size),
            if findings.is_empty() {
                "none".to_string()
            } else {
                findings.join(", ")
            }
        );
    }
    h.push_str(
        "</table>\n<p>Acceptance per kernel occurrence of the expression; ⟨e<sup>−ΔH</sup>⟩ is 1 for \
         exact HMC trajectories; τ_rej = ½ + Σ_t P(t consecutive flow rejections); ESS per \
         sample and k̂ of the flow proposals' importance weights (k̂ above its limit: a \
         heavy tail); the longest stuck run counts steps in which no move was accepted. \
         Thresholds: docs/statistics.md, chain diagnostics.</p>\n",
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
        let _ = writeln!(h, "<ul>{}</ul>", findings.join("\n"));
    }
    h
}

/// The finding on a tuned HMC whose chosen τ sits on the edge of the scanned grid.
pub(super) fn edge_finding(t: &crate::study::HmcTuning) -> Option<String> {
    let (lo, hi) = t
        .pilots
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.tau), hi.max(p.tau))
        });
    let side = if t.tau >= hi {
        "longest"
    } else if t.tau <= lo {
        "shortest"
    } else {
        return None;
    };
    Some(format!(
        "the chosen τ = {} is the {side} trajectory of the scan (τ = {lo}…{hi}, widened {} \
         times): a {} τ, not scanned, may be cheaper.",
        t.tau,
        t.widened,
        if side == "longest" {
            "longer"
        } else {
            "shorter"
        }
    ))
}

/// The HMC pilot scans: why the trajectory, the step-size probes and the trajectory scan
/// with the chosen row marked.
pub(super) fn tuning_html(summary: &StudySummary) -> String {
    let mut h = String::new();
    for s in &summary.samplers {
        let Some(t) = &s.tuning else { continue };
        let _ = writeln!(
            h,
            "<h2>HMC tuning of {}</h2>\n<p>{}</p>",
            escape(&s.name),
            escape(&t.reason)
        );
        if let Some(edge) = edge_finding(t) {
            let _ = writeln!(
                h,
                "<p class=\"edge\"><span class=\"warning\">warning</span> \
                 <code>tuning_on_edge</code>: {}</p>",
                escape(&edge)
            );
        }
        if !t.probes.is_empty() {
            h.push_str(
                "<table class=\"probes\"><tr><th>step size ε (trajectory τ = 1)</th>\
                 <th>MD steps</th><th>acceptance</th></tr>\n",
            );
            for p in &t.probes {
                let _ = writeln!(
                    h,
                    "<tr{}><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if p.step_size == t.step_size {
                        " class=\"chosen\""
                    } else {
                        ""
                    },
                    sig(p.step_size, 3),
                    p.md_steps,
                    or_dash(p.acceptance, 3)
                );
            }
            h.push_str("</table>\n");
        }
        h.push_str(
            "<table class=\"scan\"><tr><th>trajectory τ</th><th>MD steps</th>\
             <th>step size ε</th><th>acceptance</th><th>τ_max (trajectories)</th>\
             <th class=\"l\">slowest observable</th>\
             <th>force evaluations per independent config</th><th>verdict</th>\
             <th class=\"l\">chosen</th></tr>\n",
        );
        for p in &t.pilots {
            let chosen = p.tau == t.tau && p.md_steps == t.md_steps;
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"l\">{}</td><td>{}</td><td class=\"{v}\">{v}</td>\
                 <td class=\"l\">{}</td></tr>",
                if chosen { " class=\"chosen\"" } else { "" },
                p.tau,
                p.md_steps,
                sig(p.tau / p.md_steps.max(1) as f64, 3),
                or_dash(p.acceptance, 3),
                or_dash(p.tau_max, 3),
                escape(symbol(&p.slowest)),
                or_dash(p.cost, 3),
                if chosen { "◀ chosen" } else { "" },
                v = p.verdict
            );
        }
        h.push_str(
            "</table>\n<p>Cost of a trajectory setting: force evaluations per effectively \
             independent configuration, MD steps × 2 τ_max (no timing enters the choice). \
             Data: <a href=\"hmc_tuning.csv\">hmc_tuning.csv</a>, \
             <a href=\"hmc_step_size.csv\">hmc_step_size.csv</a>.</p>\n",
        );
    }
    h
}

/// The observables table in physics order, with exact or reference values.
pub(super) fn observables_html(summary: &StudySummary) -> String {
    let mut h = String::from(
        "<h2>Observables</h2>\n<table id=\"observables\"><tr><th class=\"l\">observable</th>",
    );
    for s in &summary.samplers {
        let _ = write!(h, "<th>{}</th>", escape(&s.name));
    }
    let any_reference = summary.comparison.iter().any(|c| c.reference.is_some());
    if any_reference {
        h.push_str("<th>exact / reference</th>");
    }
    h.push_str("</tr>\n");
    for c in &summary.comparison {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{} <small>(<code>{}</code>)</small></td>",
            escape(symbol(&c.observable)),
            escape(&c.observable)
        );
        for s in &summary.samplers {
            let cell = s
                .report
                .observables
                .get(&c.observable)
                .map_or("—".to_string(), |e| {
                    let tau = if e.tau_int.is_finite() {
                        format!(" <small>(τ {})</small>", sig(e.tau_int, 3))
                    } else {
                        String::new()
                    };
                    format!("{}{tau}", pm(e.mean, e.err))
                });
            let _ = write!(h, "<td>{cell}</td>");
        }
        if any_reference {
            let cell = match (c.reference, c.reference_source.as_deref()) {
                (Some([v, e]), Some(source)) if e > 0.0 => format!("{} ({source})", pm(v, e)),
                (Some([v, _]), Some(source)) => format!("{} ({source})", sig(v, 6)),
                _ => String::new(),
            };
            let _ = write!(h, "<td>{cell}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str(
        "</table>\n<p>Means with Γ-method errors and, in brackets, τ_int in measurements; \
         the symbols are defined in the glossary below. ξ is the correlated cosh fit of the \
         samplers table (its error from the fit, no τ_int).</p>\n",
    );
    h
}

/// The pulls: per observable, every sampler against the reference, and the largest
/// pairwise pull.
pub(super) fn pulls_html(summary: &StudySummary) -> String {
    let mut h = String::from(
        "<h2>Do the samplers agree?</h2>\n<table id=\"pulls\"><tr><th class=\"l\">observable</th>",
    );
    let any_reference = summary.comparison.iter().any(|c| c.reference.is_some());
    if any_reference {
        for s in &summary.samplers {
            let _ = write!(h, "<th>{} vs reference</th>", escape(&s.name));
        }
    }
    h.push_str("<th class=\"l\">largest pairwise pull</th></tr>\n");
    for c in &summary.comparison {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td>",
            escape(symbol(&c.observable))
        );
        for p in c.pulls.iter().filter(|_| any_reference) {
            let _ = write!(
                h,
                "<td>{}</td>",
                if p.is_finite() {
                    format!("{p:+.1}σ")
                } else {
                    "—".into()
                }
            );
        }
        let largest = c.largest_pairwise.as_ref().map_or("—".into(), |p| {
            format!("{:+.1}σ ({} − {})", p.pull, escape(&p.a), escape(&p.b))
        });
        let _ = writeln!(h, "<td class=\"l\">{largest}</td></tr>");
    }
    let _ = writeln!(
        h,
        "</table>\n<p>Pull (a − b)/√(σ_a² + σ_b²). The reference is the exact value (free \
         field) or the runcard's <code>[reference]</code> table (value or [value, error]). \
         {}</p>",
        escape(&summary.conclusion.agreement)
    );
    h
}

/// Every observable's symbol, code name and definition.
pub(super) fn glossary_html() -> String {
    let mut h = String::from("<h2>Glossary</h2>\n<dl id=\"glossary\">\n");
    for (code, symbol, definition) in GLOSSARY {
        let _ = writeln!(
            h,
            "<dt>{} (<code>{}</code>)</dt><dd>{}</dd>",
            escape(symbol),
            code,
            escape(definition)
        );
    }
    h.push_str(
        "</dl>\n<p>|Λ| is the number of sites, L the extent in the time direction, Ĝ(t) the \
         zero-momentum correlator (1/|Λ|) Σ ⟨φ(x) φ(y)⟩ over x₀ − y₀ = t. Derivations and \
         error analysis: <code>docs/statistics.md</code> in the latflow sources.</p>\n",
    );
    h
}
