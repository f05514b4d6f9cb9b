//! The report's page `index.html`: the conclusion first (cost, payback, agreement, and the
//! chains' reliability on its own line), the analysis settings, the samplers, the training,
//! the payback, the diagnostics and the HMC scan, the observables with their comparison and
//! glossary, every figure with its caption, and links to every file with the schema of
//! their columns. The sections' tables are in `sections`.

use std::fmt::Write as _;

use super::figures::Figure;
use super::sections::{
    diagnostics_html, glossary_html, observables_html, payback_html, pulls_html, samplers_html,
    settings_html, training_html, tuning_html,
};
use crate::study::analysis::StudySummary;

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
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
         th{{background:#eee}} td.l,th.l{{text-align:left}} tr.chosen td{{background:#e8f4ea}}\
         figure{{margin:2em 0}} figure img{{width:100%;border:1px solid #ddd}}\
         figcaption{{font-size:14px;color:#333;margin-top:.4em}}\
         .summary{{border:2px solid #444;padding:.6em 1em;margin:1em 0;background:#fafafa}}\
         .summary p{{margin:.4em 0}} dt{{font-weight:bold}} dd{{margin:0 0 .5em 1.5em}}\
         .reliable{{color:#1a7f37}} .warning{{color:#b35900}} .unreliable{{color:#c00;font-weight:bold}}\
         code{{background:#f4f4f4;padding:1px 3px}}</style></head><body>\n",
        name = escape(&summary.name)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1>\n<p>latflow {} · lattice {} · action {} · seed {}</p>",
        escape(&summary.name),
        escape(&summary.latflow_version),
        escape(&spec.lattice.to_string()),
        escape(&spec.action.describe()),
        spec.seed,
    );
    let c = &summary.conclusion;
    let _ = writeln!(
        h,
        "<div class=\"summary\" id=\"summary\"><p><b>Summary.</b> <span id=\"verdict\">{}</span> \
         <span id=\"agreement\">{}</span></p>\n<p id=\"reliability\"><b>Reliability of the \
         chains</b> (<span class=\"{v}\">{v}</span>): {}</p></div>",
        escape(&c.verdict),
        escape(&c.agreement),
        escape(c.reliability.trim_start_matches("Chains: ")),
        v = summary.verdict
    );
    h.push_str(&settings_html(summary));
    h.push_str(&samplers_html(summary));
    if let Some(t) = &summary.training {
        h.push_str(&training_html(t));
    }
    if !summary.payback.is_empty() {
        h.push_str(&payback_html(summary));
    }
    h.push_str(&diagnostics_html(summary));
    h.push_str(&tuning_html(summary));
    h.push_str(&observables_html(summary));
    h.push_str(&pulls_html(summary));
    h.push_str(&glossary_html());

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
    h.push_str(&files_html(summary, has_training));
    h.push_str("</body></html>\n");
    h
}

/// Links to every file of the folder, each with a word on what it holds.
fn files_html(summary: &StudySummary, has_training: bool) -> String {
    let link = |path: &str, what: &str| format!("<li><a href=\"{path}\">{path}</a>: {what}</li>");
    let mut h = String::from(
        "<h2>Files</h2>\n<p>The columns of every data file — name, meaning, normalisation and \
         units — are described in <a href=\"schema.json\">schema.json</a> (and, for each \
         sampler's files, in <code>data/SAMPLER/schema.json</code>).</p>\n<ul>\n",
    );
    let mut files = vec![
        (
            "runcard.toml",
            "the study as run (every override and seed written out)",
        ),
        ("summary.json", "every number of this page"),
        (
            "samplers.csv",
            "one row per sampler: acceptance, speed, cost, ξ",
        ),
        (
            "diagnostics.csv",
            "one row per sampler: the chain diagnostics",
        ),
        (
            "observables.csv",
            "every observable of every sampler with error, τ_int, reference and pull",
        ),
        ("histograms.csv", "the φ and M histograms on common bins"),
    ];
    if summary.analysis_file != "runcard.toml" && !summary.analysis_file.is_empty() {
        files.push((
            "analysis.toml",
            "the analysis settings set by latflow analyse, kept by a new run",
        ));
    }
    if !summary.payback.is_empty() {
        files.push(("payback.csv", "when the flow's training pays back"));
    }
    if summary.samplers.iter().any(|s| s.tuning.is_some()) {
        files.push(("hmc_tuning.csv", "the HMC pilot scan"));
        files.push(("hmc_step_size.csv", "the HMC step-size probes"));
    }
    if has_training {
        files.push(("training.csv", "the training log, one row per step"));
        files.push(("training.json", "the training report"));
        files.push(("model.json", "the trained flow"));
    }
    files.push(("schema.json", "the columns of every file above"));
    for (path, what) in files {
        h.push_str(&link(path, what));
        h.push('\n');
    }
    h.push_str("</ul>\n<p>Per sampler, under <code>data/SAMPLER/</code>:</p>\n<ul>\n");
    for s in &summary.samplers {
        let d = format!("data/{}", s.slug);
        let mut names = vec![
            "series.npy",
            "series_columns.json",
            "moves.npy",
            "moves_per_step.npy",
            "configs.npy",
            "configs_index.npy",
            "run.json",
            "correlator.csv",
            "xi_eff.csv",
            "autocorrelation.csv",
        ];
        if s.rejection_runs.is_some() {
            names.push("rejection_runs.csv");
        }
        names.push("schema.json");
        let links: Vec<String> = names
            .iter()
            .map(|n| format!("<a href=\"{d}/{n}\">{n}</a>"))
            .collect();
        let _ = writeln!(h, "<li>{}: {}</li>", escape(&s.name), links.join(", "));
    }
    h.push_str(
        "</ul>\n<p>Recompute everything from the stored series with \
        <code>latflow analyse FOLDER</code> (e.g. <code>--therm-cut 1000</code>, \
        <code>--fit-range 1:4</code>); the settings are recorded in \
        <code>analysis.toml</code> and kept when the study is run again.</p>\n",
    );
    h
}
