//! The report's CSV files: `samplers.csv`, `payback.csv`, `observables.csv`,
//! `diagnostics.csv`, `histograms.csv`, `hmc_tuning.csv` and `hmc_step_size.csv` in the
//! study folder, and per sampler under
//! `data/<sampler>/` its correlator with the fit, ξ_eff(t), autocorrelation and runs of
//! rejections.

use std::fmt::Write as _;
use std::path::Path;

use super::cosh_model;
use super::glossary::symbol;
use super::text::num;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::study::analysis::{SamplerAnalysis, StudySummary};

/// The per-sampler table's columns.
pub(crate) const SAMPLERS_HEADER: &str = "sampler,kernel,tau,md_steps,steps,chains,acceptance,\
acceptance_by_kernel,\
steps_per_second,seconds_per_step,slowest,tau_max,tau_max_err,cost_per_independent,\
cost_per_independent_err,xi_fit,xi_fit_err,chi2_per_dof,fit_t_min,fit_t_max,verdict";

/// The observables table's columns.
pub(crate) const OBSERVABLES_HEADER: &str = "sampler,observable,symbol,mean,err,tau_int,\
tau_int_err,reference,reference_err,reference_source,pull,caveat";

/// The diagnostics table's columns.
pub(crate) const DIAGNOSTICS_HEADER: &str = "sampler,acceptance_by_kernel,exp_minus_delta_h,\
exp_minus_delta_h_err,tau_rej,tau_rej_err,ess_per_sample,pareto_k,pareto_k_limit,\
longest_rejection_run,longest_stuck_run,local_step_size,hmc_step_size,findings,verdict";

/// The HMC pilot scan's columns.
pub(crate) const HMC_TUNING_HEADER: &str = "sampler,tau,md_steps,step_size,acceptance,\
tau_max,slowest,force_evaluations_per_independent,verdict,chosen";

/// Writes the study-wide tables into `folder` (`payback.csv` when a flow sampler has a
/// payback, `hmc_tuning.csv` when a sampler was tuned).
pub(super) fn write_tables(folder: &Path, summary: &StudySummary) -> Result<()> {
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
            s.chains.to_string(),
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

    let mut observables = format!("{OBSERVABLES_HEADER}\n");
    for c in &summary.comparison {
        for (s, pull) in summary.samplers.iter().zip(&c.pulls) {
            let Some(e) = s.report.observables.get(&c.observable) else {
                continue;
            };
            let (reference, reference_err) = c
                .reference
                .map_or((String::new(), String::new()), |[v, e]| (num(v), num(e)));
            let _ = writeln!(
                observables,
                "{},{},{},{},{},{},{},{reference},{reference_err},{},{},{}",
                csv_field(&s.name),
                c.observable,
                csv_field(symbol(&c.observable)),
                num(e.mean),
                num(e.err),
                num(e.tau_int),
                num(e.tau_int_err),
                c.reference_source.as_deref().unwrap_or(""),
                num(*pull),
                csv_field(e.caveat.as_deref().unwrap_or(""))
            );
        }
    }
    write_atomic(&folder.join("observables.csv"), observables.as_bytes())?;

    let mut diagnostics = format!("{DIAGNOSTICS_HEADER}\n");
    for s in &summary.samplers {
        let r = &s.report;
        let d = &r.diagnostics;
        let flow = d.flows.first();
        let hmc = r.exp_minus_delta_h.as_ref();
        let row = [
            csv_field(&s.name),
            csv_field(
                &r.acceptance_by_move
                    .iter()
                    .map(|(k, a)| format!("{k}:{a}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            hmc.map_or(String::new(), |e| num(e.mean)),
            hmc.map_or(String::new(), |e| num(e.err)),
            r.tau_rej.map_or(String::new(), num),
            r.tau_rej_err.map_or(String::new(), num),
            flow.map_or(String::new(), |f| num(f.ess_per_sample)),
            flow.map_or(String::new(), |f| num(f.pareto_k)),
            flow.map_or(String::new(), |f| num(f.pareto_k_threshold)),
            r.longest_rejection_run
                .map_or(String::new(), |n| n.to_string()),
            d.longest_stuck_run.to_string(),
            r.local_step_size.map_or(String::new(), num),
            if s.kernel.contains("hmc") && s.settings.md_steps > 0 {
                num(s.settings.tau / s.settings.md_steps as f64)
            } else {
                String::new()
            },
            csv_field(
                &d.findings
                    .iter()
                    .map(|f| f.code.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            r.verdict.to_string(),
        ];
        diagnostics.push_str(&row.join(","));
        diagnostics.push('\n');
    }
    write_atomic(&folder.join("diagnostics.csv"), diagnostics.as_bytes())?;

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
        let mut tuning = format!("{HMC_TUNING_HEADER}\n");
        let mut probes = String::from("sampler,step_size,md_steps,acceptance,chosen\n");
        for s in &summary.samplers {
            let Some(t) = &s.tuning else { continue };
            for p in &t.pilots {
                let chosen = p.tau == t.tau && p.md_steps == t.md_steps;
                let _ = writeln!(
                    tuning,
                    "{},{},{},{},{},{},{},{},{},{chosen}",
                    csv_field(&s.name),
                    num(p.tau),
                    p.md_steps,
                    num(p.tau / p.md_steps.max(1) as f64),
                    num(p.acceptance),
                    num(p.tau_max),
                    p.slowest,
                    num(p.cost),
                    p.verdict
                );
            }
            for p in &t.probes {
                let _ = writeln!(
                    probes,
                    "{},{},{},{},{}",
                    csv_field(&s.name),
                    num(p.step_size),
                    p.md_steps,
                    num(p.acceptance),
                    p.step_size == t.step_size
                );
            }
        }
        write_atomic(&folder.join("hmc_tuning.csv"), tuning.as_bytes())?;
        write_atomic(&folder.join("hmc_step_size.csv"), probes.as_bytes())?;
    }
    Ok(())
}

/// Writes the data files of sampler `s` into `folder/data/<slug>/`.
pub(super) fn write_sampler_files(folder: &Path, s: &SamplerAnalysis) -> Result<()> {
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

/// `text` as one CSV field: quoted (with doubled quotes) when it holds a comma, a quote or a
/// line break.
pub(super) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
