//! `schema.json`: the columns of every data file of a study folder — name, meaning,
//! normalisation and units — next to the files they describe: one in the folder for the
//! study-wide tables, one in each `data/<sampler>/` for that sampler's files (the series
//! columns named as stored).

use std::path::Path;

use serde_json::{Value, json};

use crate::error::Result;
use crate::io::{read_json, write_json};
use crate::kernel::{MOVE_DETAIL_COLUMNS, MOVE_KINDS};
use crate::study::analysis::StudySummary;

/// One column: name, meaning, normalisation, units.
fn column(name: &str, meaning: &str, normalisation: &str, units: &str) -> Value {
    json!({ "name": name, "meaning": meaning, "normalisation": normalisation, "units": units })
}

/// A file: what it holds and its columns.
fn file(about: &str, columns: Vec<Value>) -> Value {
    json!({ "about": about, "columns": columns })
}

const PER_MEASUREMENT: &str = "per measurement (one every `thin` steps)";
const SECONDS: &str = "seconds of wall time";

/// Writes `schema.json` into the folder and into every sampler's data folder.
pub(super) fn write_schemas(folder: &Path, summary: &StudySummary) -> Result<()> {
    let mut files = serde_json::Map::new();
    files.insert(
        "samplers.csv".into(),
        file(
            "one row per sampler",
            vec![
                column("sampler", "the sampler's name", "", ""),
                column("kernel", "the kernel expression", "", ""),
                column("tau", "HMC trajectory length (HMC kernels)", "", "MD time"),
                column(
                    "md_steps",
                    "HMC molecular-dynamics steps per trajectory",
                    "",
                    "",
                ),
                column(
                    "steps",
                    "measured steps analysed (after the cut), per chain",
                    "",
                    "steps",
                ),
                column(
                    "chains",
                    "independent chains advanced in lockstep",
                    "",
                    "",
                ),
                column("acceptance", "accepted / proposed over all moves", "", ""),
                column(
                    "acceptance_by_kernel",
                    "acceptance per kernel occurrence, `label:value` joined by `;`",
                    "",
                    "",
                ),
                column(
                    "steps_per_second",
                    "measured steps per second, all chains together",
                    "",
                    "1/s",
                ),
                column(
                    "seconds_per_step",
                    "wall time per measured step of one chain (of all chains: divided by their number)",
                    "",
                    SECONDS,
                ),
                column(
                    "slowest",
                    "the cost observable with the largest τ_int",
                    "",
                    "",
                ),
                column("tau_max", "its τ_int", "", "measurements"),
                column("tau_max_err", "error of tau_max", "", "measurements"),
                column(
                    "cost_per_independent",
                    "time per effectively independent configuration, 2 τ_max × thin × \
                     seconds_per_step",
                    "",
                    SECONDS,
                ),
                column("cost_per_independent_err", "its error", "", SECONDS),
                column(
                    "xi_fit",
                    "ξ from the correlated cosh fit of Ĝ(t) on the fit range",
                    "",
                    "lattice units",
                ),
                column("xi_fit_err", "its error", "", "lattice units"),
                column("chi2_per_dof", "χ²/dof of the fit", "", ""),
                column("fit_t_min", "first t of the fit range", "", "lattice units"),
                column("fit_t_max", "last t of the fit range", "", "lattice units"),
                column("verdict", "reliable, warning or unreliable", "", ""),
            ],
        ),
    );
    files.insert(
        "observables.csv".into(),
        file(
            "every observable of every sampler (definitions: the page's glossary)",
            vec![
                column("sampler", "the sampler's name", "", ""),
                column(
                    "observable",
                    "code name (phi2, m, abs_m, …, xi_fit)",
                    "",
                    "",
                ),
                column("symbol", "the symbol on the page", "", ""),
                column(
                    "mean",
                    "the estimate",
                    "per site for field moments",
                    "lattice units",
                ),
                column("err", "its Γ-method standard error", "", "as mean"),
                column(
                    "tau_int",
                    "integrated autocorrelation time",
                    "",
                    "measurements",
                ),
                column("tau_int_err", "its error", "", "measurements"),
                column("reference", "exact or reference value", "", "as mean"),
                column("reference_err", "its error (0: exact)", "", "as mean"),
                column(
                    "reference_source",
                    "exact (free field) or reference (runcard)",
                    "",
                    "",
                ),
                column(
                    "pull",
                    "(mean − reference)/√(err² + reference_err²)",
                    "",
                    "σ",
                ),
                column("caveat", "why the estimate may not be trusted", "", ""),
            ],
        ),
    );
    files.insert(
        "diagnostics.csv".into(),
        file(
            "one row per sampler: the chain diagnostics",
            vec![
                column("sampler", "the sampler's name", "", ""),
                column(
                    "acceptance_by_kernel",
                    "`label:value` joined by `;`",
                    "",
                    "",
                ),
                column(
                    "exp_minus_delta_h",
                    "⟨e^{−ΔH}⟩ of the HMC trajectories",
                    "",
                    "",
                ),
                column("exp_minus_delta_h_err", "its error", "", ""),
                column(
                    "tau_rej",
                    "½ + Σ_t P(t consecutive flow rejections)",
                    "",
                    "proposals",
                ),
                column("tau_rej_err", "its error", "", "proposals"),
                column(
                    "ess_per_sample",
                    "importance-weight ESS / proposals (first flow)",
                    "",
                    "",
                ),
                column("pareto_k", "Pareto k̂ of the weights' tail", "", ""),
                column(
                    "pareto_k_limit",
                    "the k̂ above which the tail is too heavy",
                    "",
                    "",
                ),
                column(
                    "longest_rejection_run",
                    "consecutive rejected flow proposals",
                    "",
                    "proposals",
                ),
                column(
                    "longest_stuck_run",
                    "consecutive steps without an accepted move",
                    "",
                    "steps",
                ),
                column(
                    "local_step_size",
                    "local proposal half-width δ",
                    "",
                    "field units",
                ),
                column("hmc_step_size", "HMC step ε = τ / md_steps", "", "MD time"),
                column("findings", "finding codes joined by `;`", "", ""),
                column("verdict", "reliable, warning or unreliable", "", ""),
            ],
        ),
    );
    files.insert(
        "histograms.csv".into(),
        file(
            "φ(x) over the saved configurations and M over the measurements, common bins",
            vec![
                column("quantity", "phi (single-site values) or M (Σₓ φₓ)", "", ""),
                column("bin_low", "lower bin edge", "", "field units"),
                column("bin_high", "upper bin edge", "", "field units"),
                column(
                    "SAMPLER",
                    "one column per sampler: the probability density",
                    "integrates to 1 over the bins",
                    "1/field units",
                ),
            ],
        ),
    );
    if !summary.payback.is_empty() {
        files.insert(
            "payback.csv".into(),
            file(
                "per flow sampler: when the training pays back against the cheapest sampler \
                 without a flow (the baseline)",
                vec![
                    column("sampler", "the flow sampler", "", ""),
                    column("baseline", "the cheapest sampler without a flow", "", ""),
                    column(
                        "cost",
                        "the flow sampler's time per independent configuration",
                        "",
                        SECONDS,
                    ),
                    column("cost_err", "its error", "", SECONDS),
                    column("baseline_cost", "the baseline's", "", SECONDS),
                    column("baseline_cost_err", "its error", "", SECONDS),
                    column(
                        "training_seconds",
                        "training T: optimisation and acceptance checks",
                        "",
                        SECONDS,
                    ),
                    column(
                        "break_even",
                        "N* = T/(baseline_cost − cost)",
                        "",
                        "independent configurations",
                    ),
                    column(
                        "break_even_err",
                        "its error",
                        "",
                        "independent configurations",
                    ),
                    column("reason", "why there is no N*, when there is none", "", ""),
                ],
            ),
        );
    }
    if summary.samplers.iter().any(|s| s.tuning.is_some()) {
        files.insert(
            "hmc_tuning.csv".into(),
            file(
                "the HMC pilot scan over trajectory lengths",
                vec![
                    column("sampler", "the tuned sampler", "", ""),
                    column("tau", "trajectory length", "", "MD time"),
                    column("md_steps", "MD steps per trajectory", "", ""),
                    column("step_size", "ε = tau / md_steps", "", "MD time"),
                    column("acceptance", "the pilot chain's acceptance", "", ""),
                    column(
                        "tau_max",
                        "largest τ_int among the cost observables",
                        "",
                        "trajectories",
                    ),
                    column("slowest", "the observable with that τ_int", "", ""),
                    column(
                        "force_evaluations_per_independent",
                        "md_steps × 2 tau_max: the cost ranked",
                        "",
                        "force evaluations",
                    ),
                    column("verdict", "the pilot chain's verdict", "", ""),
                    column("chosen", "the setting used", "", ""),
                ],
            ),
        );
        files.insert(
            "hmc_step_size.csv".into(),
            file(
                "the HMC step-size probes (trajectories of length 1)",
                vec![
                    column("sampler", "the tuned sampler", "", ""),
                    column("step_size", "ε", "", "MD time"),
                    column("md_steps", "1/ε", "", ""),
                    column("acceptance", "the probe's acceptance", "", ""),
                    column("chosen", "the step size the scan used", "", ""),
                ],
            ),
        );
    }
    if summary.training.is_some() {
        files.insert(
            "training.csv".into(),
            json!({ "about": "the training log: one row per optimisation step; the \
                    acceptance, ess and tau_rej columns are filled at the evaluations \
                    (every eval_every steps); configs_seen counts the configurations the \
                    flow generated for training, |Φ_train|; loss is ⟨S + log p_flow⟩ = \
                    KL − log Z per configuration" }),
        );
        files.insert(
            "training.json".into(),
            json!({ "about": "the training report: seconds (optimisation) and eval_seconds \
                    (acceptance checks) in s, configs_seen, final acceptance, ESS/N, τ_rej" }),
        );
    }
    write_json(
        &folder.join("schema.json"),
        &json!({ "about": "the columns of the study's data files", "files": files }),
    )?;
    for s in &summary.samplers {
        let dir = folder.join("data").join(&s.slug);
        let names: Vec<String> = read_json(&dir.join("series_columns.json"), "series columns")?;
        write_json(&dir.join("schema.json"), &sampler_schema(&names))?;
    }
    Ok(())
}

/// The meaning of a stored series column.
fn series_column(name: &str) -> Value {
    let (meaning, norm, units) = match name {
        "m" => (
            "magnetisation per site m = M/|Λ|, M = Σₓ φₓ",
            "per site",
            "field units",
        ),
        "abs_m" => ("|m|", "per site", "field units"),
        "m2" => ("m²", "per site, squared", "field units²"),
        "m4" => ("m⁴", "per site, to the fourth", "field units⁴"),
        "phi2" => ("(1/|Λ|) Σₓ φₓ²", "per site", "field units²"),
        "energy" => (
            "Ising energy (1/|Λ|) Σₓ Σ_μ φₓ φ_{x+μ}",
            "per site",
            "field units²",
        ),
        n if n.starts_with("G_p_min[") => (
            "G̃(q̂_μ) = |φ̃(q̂_μ)|²/|Λ| at the smallest non-zero momentum q̂_μ = 2π e_μ/L_μ \
             along direction μ (the index)",
            "divided by |Λ|",
            "field units²",
        ),
        n if n.starts_with("G_hat[") => (
            "zero-momentum correlator Ĝ(t) = (1/|Λ|) Σ_s S(s) S(s + t) of the slice sums \
             S(s) = Σ_{x: x₀ = s} φₓ, t the index (averaged over directions when the extents \
             are equal), not connected",
            "divided by |Λ|",
            "field units²",
        ),
        _ => ("a user observable", "as the observable defines it", ""),
    };
    column(name, meaning, norm, units)
}

/// The schema of one sampler's folder, with its series columns `names`.
fn sampler_schema(names: &[String]) -> Value {
    let details: Vec<Value> = MOVE_KINDS
        .iter()
        .zip(MOVE_DETAIL_COLUMNS)
        .map(|(kind, (a, b))| json!({ "kind": kind, "detail_a": a, "detail_b": b }))
        .collect();
    json!({
        "about": "one sampler's stored run; several chains are stored one after the other",
        "files": {
            "series.npy": {
                "about": format!("float64, measurements × series, {PER_MEASUREMENT}; the \
                                  column names are in series_columns.json"),
                "columns": names.iter().map(|n| series_column(n)).collect::<Vec<_>>(),
            },
            "series_columns.json": { "about": "the names of the columns of series.npy, in order" },
            "moves.npy": {
                "about": "float64, one row per move of the kernel expression",
                "columns": [
                    column("kernel", "index into run.json's move_kernels (the move label; its \
                            kind is in move_kinds)", "", ""),
                    column("proposed", "proposals made by the move", "", "proposals"),
                    column("accepted", "proposals accepted", "", "proposals"),
                    column("detail_a", "kind-specific, see detail_by_kind", "", ""),
                    column("detail_b", "kind-specific, see detail_by_kind", "", ""),
                ],
                "detail_by_kind": details,
            },
            "moves_per_step.npy": { "about": "uint32, moves (rows of moves.npy) per step of \
                                              the kernel expression" },
            "configs.npy": { "about": "float64, saved configurations × lattice extents: the \
                                       field φₓ (field units), evenly spaced over the \
                                       measurements" },
            "configs_index.npy": { "about": "uint64, the measurement index of each saved \
                                             configuration" },
            "run.json": { "about": "the run's settings (SampleSpec), the HMC tuning, wall \
                                    seconds, steps, chains and the move labels and kinds" },
            "correlator.csv": {
                "about": "Ĝ(t) with its Γ-method error and the correlated cosh fit",
                "columns": [
                    column("t", "time separation", "", "lattice units"),
                    column("G_hat", "⟨Ĝ(t)⟩", "divided by |Λ|", "field units²"),
                    column("err", "its error", "", "field units²"),
                    column("fit", "A[e^{−t/ξ} + e^{−(L−t)/ξ}] inside the fit range", "", "field units²"),
                ],
            },
            "xi_eff.csv": {
                "about": "the effective correlation length at every t",
                "columns": [
                    column("t", "time separation", "", "lattice units"),
                    column("xi_eff", "1/arcosh[(Ĝ(t−1) + Ĝ(t+1))/2Ĝ(t)], connected", "", "lattice units"),
                    column("err", "its error", "", "lattice units"),
                ],
            },
            "autocorrelation.csv": {
                "about": "of the autocorrelation observable (first chain)",
                "columns": [
                    column("t", "lag", "", "measurements"),
                    column("rho", "Γ(t)/Γ(0)", "1 at t = 0", ""),
                    column("tau_int_window", "½ + Σ_{s=1}^{t} ρ(s)", "", "measurements"),
                ],
            },
            "rejection_runs.csv": {
                "about": "runs of consecutive rejected flow proposals (flow kernels)",
                "columns": [
                    column("length", "rejections in a row", "", "proposals"),
                    column("count", "how often such a run occurred", "", ""),
                ],
            },
        }
    })
}
