//! The report's page `index.html`: the study's settings, the training, a table of samplers
//! and of observables, the flow's payback, diagnostics, every figure with its caption, and
//! links to every file.

use std::fmt::Write as _;

use super::figures::Figure;
use super::text::{acceptance_text, pm, pm_scaled, seconds_pm, seconds_text, sig};
use crate::study::analysis::{Payback, StudySummary};

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole page; `has_training` links the training log and the model.
pub(super) fn html(summary: &StudySummary, figures: &[Figure], has_training: bool) -> String {
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

/// The action and its couplings, as written on the page.
fn action_text(action: &crate::run::ActionSpec) -> String {
    action.describe()
}
