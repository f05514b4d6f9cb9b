//! What the commands print on stdout: the sample table, study and sweep summaries.

use anyhow::Result;
use latflow::run::{ActionSpec, SampleReport};

use crate::args::OutputArgs;

pub(crate) fn print_table(report: &SampleReport) {
    let chains = if report.replicas > 1 {
        format!(" per chain × {} chains", report.replicas)
    } else {
        String::new()
    };
    println!(
        "lattice {:?}  kernel {}  n {}{chains}  acceptance {:.4}  {:.2} s",
        report.lattice, report.kernel, report.n, report.acceptance, report.seconds
    );
    println!(
        "{:<16} {:>14} {:>12} {:>10} {:>8}",
        "observable", "mean", "error", "tau_int", "± tau"
    );
    let number = |x: f64, width: usize, precision: usize| {
        if x.is_finite() {
            format!("{x:>width$.precision$}")
        } else {
            format!("{:>width$}", "undefined")
        }
    };
    let mut caveats = Vec::new();
    for (name, e) in &report.observables {
        let mark = if e.caveat.is_some() { " *" } else { "" };
        println!(
            "{:<16} {:>14.6} {} {} {}{mark}",
            name,
            e.mean,
            number(e.err, 12, 6),
            number(e.tau_int, 10, 3),
            number(e.tau_int_err, 8, 3)
        );
        if let Some(x) = report.exact.as_ref().and_then(|ex| ex.get(name)) {
            let sigmas = if e.err.is_finite() && e.err > 0.0 {
                format!("({:+.1}σ)", (e.mean - x) / e.err)
            } else {
                "(σ undefined)".to_string()
            };
            println!("{:<16} {:>14.6}   {sigmas}", "  exact", x);
        }
        if let Some(c) = &e.caveat {
            caveats.push((name, c));
        }
    }
    for (name, reason) in &report.failures {
        println!("{name:<16} not estimated: {reason}");
    }
    if let (Some(t), Some(e), Some(r)) = (
        report.tau_rej,
        report.tau_rej_err,
        report.longest_rejection_run,
    ) {
        println!(
            "tau_rej          {} {}   longest rejection run {r}",
            number(t, 14, 4),
            number(e, 12, 4)
        );
    }
    if let Some(e) = &report.exp_minus_delta_h {
        println!("<exp(-dH)>       {:>14.6} {}", e.mean, number(e.err, 12, 6));
    }
    let d = &report.diagnostics;
    println!(
        "state changed in {} of {} steps; longest stuck run {} steps ({:.2}%)",
        d.state_changes,
        d.steps,
        d.longest_stuck_run,
        100.0 * d.longest_stuck_fraction
    );
    for f in &d.flows {
        println!(
            "{}: ESS/sample {:.3e}  largest weight {:.3e}  Pareto k {:.2} (limit {:.2})",
            f.label, f.ess_per_sample, f.max_normalised_weight, f.pareto_k, f.pareto_k_threshold
        );
    }
    if !caveats.is_empty() {
        println!("caveats (*):");
        // Estimates that share a caveat are listed together.
        let mut grouped: Vec<(&String, Vec<&String>)> = Vec::new();
        for (name, c) in caveats {
            match grouped.iter_mut().find(|(text, _)| *text == c) {
                Some((_, names)) => names.push(name),
                None => grouped.push((c, vec![name])),
            }
        }
        for (c, names) in grouped {
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let who = if names.len() == report.observables.len() && names.len() > 1 {
                "all estimates".to_string()
            } else {
                names.join(", ")
            };
            println!("  {who}: {c}");
        }
    }
    println!("verdict: {}", report.verdict());
    for f in &d.findings {
        println!("  {f}");
    }
}

/// The sweep's kernels against tuned HMC: cost per independent configuration per size and
/// the crossover findings.
pub(crate) fn print_sampler_comparison(c: &latflow::study::SamplerComparison) {
    let method = match c.method.as_str() {
        "" => String::new(),
        m => format!(", method {m}"),
    };
    println!(
        "seconds per independent configuration (training amortised over {:.0}{method}):",
        c.amortise_over
    );
    println!(
        "{:>4} {:>16} {:>12} {:>12} {:>12} {:>12}",
        "L", "kernel", "sampling", "amortised", "tuned HMC", "ratio"
    );
    for s in &c.sizes {
        println!(
            "{:>4} {:>16} {:>12.3e} {:>12.3e} {:>12.3e} {:>12.3}",
            s.l,
            s.kernel,
            s.cost,
            s.amortised_cost,
            s.hmc_cost,
            s.cost / s.hmc_cost
        );
    }
    for x in &c.crossovers {
        println!(
            "{} ({}): {}",
            x.kernel,
            if x.amortised { "amortised" } else { "sampling" },
            x.finding
        );
    }
}

pub(crate) fn print_training_cost(cost: &latflow::study::TrainingCost) {
    if !cost.method.is_empty() {
        println!("method {}:", cost.method);
    }
    let target = cost.target_tau_rej;
    for c in &cost.costs {
        println!(
            "L = {}: tau_rej reaches {target} after {:.3e} ± {:.1e} configurations, {:.1} ± {:.1} s \
             of training (xi = {:.3})",
            c.l, c.configs, c.configs_err, c.seconds, c.seconds_err, c.xi
        );
    }
    for (l, why) in &cost.unbracketed {
        println!("L = {l}: tau_rej = {target} {why}");
    }
    match (&cost.fit, &cost.fit_failure) {
        (Some(f), _) => println!(
            "training cost to tau_rej = {target}: configs ~ xi^a, a = {:.2} ± {:.2} (chi2/dof {:.2})",
            f.exponent, f.exponent_err, f.chi2_per_dof
        ),
        (None, Some(why)) => println!("training cost exponent: not fitted ({why})"),
        (None, None) => {}
    }
}

pub(crate) fn print_hmc_baseline(hmc: Option<&latflow::study::HmcBaselineResult>) {
    let Some(hmc) = hmc else { return };
    println!(
        "{:>4} {:>5} {:>6} {:>5} {:>8} {:>16} {:>16} {:>16} {:>12} {:>10}",
        "L",
        "seed",
        "tau",
        "md",
        "accept",
        "xi_2nd",
        "tau_int(|m|)",
        "tau_int(chi)",
        "s/indep",
        "verdict"
    );
    for r in &hmc.rows {
        println!(
            "{:>4} {:>5} {:>6} {:>5} {:>8.3} {:>16} {:>16} {:>16} {:>12.3e} {:>10}",
            r.l,
            r.seed,
            r.tau,
            r.md_steps,
            r.acceptance,
            format!("{:.3} ± {:.3}", r.xi, r.xi_err),
            format!("{:.2} ± {:.2}", r.tau_abs_m, r.tau_abs_m_err),
            format!("{:.2} ± {:.2}", r.tau_chi, r.tau_chi_err),
            r.cost_per_independent,
            r.verdict.to_string()
        );
    }
    match (&hmc.z_fit, &hmc.z_fit_failure) {
        (Some(f), _) => println!(
            "HMC dynamical exponent: tau_int(|m|) ~ xi^z, z = {:.2} ± {:.2} (chi2/dof {:.2})",
            f.exponent, f.exponent_err, f.chi2_per_dof
        ),
        (None, Some(why)) => println!("HMC dynamical exponent: not fitted ({why})"),
        (None, None) => {}
    }
}

pub(crate) fn action_summary(action: &ActionSpec) -> String {
    action.describe()
}

pub(crate) fn print_study(result: &latflow::study::StudyResult, output: &OutputArgs) -> Result<()> {
    let summary = &result.summary;
    let spec = &summary.study;
    let index = result.folder.join("index.html");
    if output.json {
        let samplers: Vec<_> = summary
            .samplers
            .iter()
            .map(|s| {
                let fit = s.fit.fit.as_ref();
                serde_json::json!({
                    "name": s.name, "kernel": s.kernel, "acceptance": s.report.acceptance,
                    "acceptance_by_kernel": s.report.acceptance_by_move,
                    "steps_per_second": 1.0 / s.seconds_per_step, "slowest": s.slowest,
                    "tau_max": s.tau_max, "tau_max_err": s.tau_max_err,
                    "cost_per_independent": s.cost_per_independent,
                    "cost_per_independent_err": s.cost_per_independent_err,
                    "xi_fit": fit.map(|f| f.xi), "xi_fit_err": fit.map(|f| f.xi_err),
                    "chi2_per_dof": fit.map(|f| f.chi2_per_dof),
                    "verdict": s.report.verdict,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "name": summary.name, "folder": result.folder, "index": index,
                "summary": result.folder.join("summary.json"),
                "lattice": spec.lattice.extents(), "action": spec.action, "seed": spec.seed,
                "seconds": result.seconds, "reused": result.reused,
                "training": summary.training, "verdict": summary.verdict, "samplers": samplers,
                "conclusion": summary.conclusion, "analysis_file": summary.analysis_file,
            })
        );
        return Ok(());
    }
    println!(
        "study {}: lattice {}, {}, seed {}",
        summary.name,
        spec.lattice,
        action_summary(&spec.action),
        spec.seed
    );
    if let Some(t) = &summary.training {
        println!(
            "training: {} parameters, {} configurations, T = {:.1} s ({:.1} s optimisation + \
             {:.1} s acceptance checks), acceptance {:.3}",
            t.n_params,
            t.configs_seen,
            t.seconds + t.eval_seconds,
            t.seconds,
            t.eval_seconds,
            t.acceptance
        );
    }
    println!(
        "{:<14} {:>26} {:>10} {:>22} {:>24} {:>18} {:>10}",
        "sampler",
        "acceptance",
        "steps/s",
        "tau_max (observable)",
        "s per indep. config",
        "xi (cosh fit)",
        "verdict"
    );
    for s in &summary.samplers {
        let xi = s.fit.fit.as_ref().map_or("-".to_string(), |f| {
            format!("{:.3} ± {:.3}", f.xi, f.xi_err)
        });
        println!(
            "{:<14} {:>26} {:>10.0} {:>22} {:>24} {:>18} {:>10}",
            s.name,
            latflow::study::acceptance_text(s),
            1.0 / s.seconds_per_step,
            format!("{:.2} ± {:.2} ({})", s.tau_max, s.tau_max_err, s.slowest),
            format!(
                "{:.3e} ± {:.1e}",
                s.cost_per_independent, s.cost_per_independent_err
            ),
            xi,
            s.report.verdict.to_string()
        );
    }
    for s in &summary.samplers {
        for f in &s.report.diagnostics.findings {
            eprintln!("{}: {} {}: {}", s.name, f.severity, f.code, f.message);
        }
    }
    if !result.reused.is_empty() {
        println!("reused from an earlier run: {}", result.reused.join(", "));
    }
    let c = &summary.conclusion;
    if summary.analysis_file != "runcard.toml" {
        println!(
            "analysis settings from {} (set by latflow analyse)",
            summary.analysis_file
        );
    }
    println!();
    println!("summary: {} {}", c.verdict, c.agreement);
    println!("reliability: {}", c.reliability);
    println!("report: {}  ({:.1} s)", index.display(), result.seconds);
    Ok(())
}
