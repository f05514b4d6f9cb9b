//! Writing a study's report: `summary.json`, CSV tables, per-sampler data files, PNG and SVG
//! plots and `index.html`, all from a [`StudySummary`] (and the training log in the folder).
//!
//! [`write_report`] runs the steps in order; each kind of output has its own file: `tables`
//! (the CSV tables and per-sampler data files), `training_log` (reading `training.csv` back),
//! `figures` (every chart with its title and caption), `html` and `sections` (the
//! `index.html` page), `schema` (the columns of every data file, `schema.json`),
//! `glossary` (the observables' symbols and definitions) and `text` (numbers with their
//! errors as text, shared by all of them).

mod figures;
mod glossary;
mod html;
mod schema;
mod sections;
mod tables;
mod text;
mod training_log;

use std::path::Path;

use super::analysis::StudySummary;
use crate::control::Observer;
use crate::error::{Error, Result};
use crate::io::{write_atomic, write_json};
use figures::{
    autocorrelation_figures, comparison_figure, correlator_figure, cost_figure, histogram_figure,
    payback_figure, rejection_figure, training_figures, xi_eff_figure,
};
use html::html;
use schema::write_schemas;
use tables::{write_sampler_files, write_tables};
use training_log::read_training_log;

pub use text::acceptance_text;
pub(crate) use text::{TimeUnit, num, sig};

/// The number of progress steps [`write_report`] reports (one per file group).
pub const REPORT_FILES: usize = 14;

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
    write_schemas(folder, summary)?;
    tick();
    let training = read_training_log(&folder.join("training.csv"))?;
    let mut figures = Vec::new();
    if let Some(log) = &training {
        figures.extend(training_figures(&plots, log)?);
    }
    tick();
    figures.push(comparison_figure(&plots, summary)?);
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

/// The periodic cosh A[e^{−mt} + e^{−m(T−t)}] fitted to Ĝ(t), at `t` for period `period`.
fn cosh_model(amplitude: f64, mass: f64, t: f64, period: f64) -> f64 {
    amplitude * ((-mass * t).exp() + (-mass * (period - t)).exp())
}
