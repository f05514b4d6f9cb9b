//! Studies: a whole comparison of samplers described by one TOML runcard ([`StudySpec`]) —
//! lattice, action, the flow to train, the samplers with their kernels and chain lengths,
//! seeds and analysis settings — run into one folder ([`run_study`]) and analysed from the
//! stored series ([`analyse_folder`]) into `summary.json`, CSV tables, `.npy` data, PNG and
//! SVG plots and an `index.html` report.
//!
//! The folder `out/name/` holds:
//! - `runcard.toml`: the runcard as used (every override applied, every seed written out,
//!   with the latflow version), and `analysis.toml` when `latflow analyse` set the
//!   analysis settings;
//! - `model.json`, `training.csv`, `training.json`: the trained flow, the training log and
//!   the training report (when a sampler uses a flow; a flow trained before, `flow.model`,
//!   is copied in with the report from its metadata), and `checkpoint.json` while a
//!   training is unfinished;
//! - `data/<sampler>/`: the stored run of each sampler (see the `store` layout:
//!   `series.npy` with `series_columns.json`, `moves.npy`, `moves_per_step.npy`,
//!   `configs.npy`, `configs_index.npy`, `run.json`), its `correlator.csv`, `xi_eff.csv`,
//!   `autocorrelation.csv`, `rejection_runs.csv` and `schema.json`;
//! - `summary.json`, `samplers.csv`, `diagnostics.csv`, `observables.csv`,
//!   `histograms.csv`, `hmc_tuning.csv`, `hmc_step_size.csv`, `payback.csv` (after how
//!   many independent configurations each flow sampler's training has paid for itself
//!   against the cheapest sampler without a flow) and `schema.json` (every column);
//! - `plots/*.png` and `plots/*.svg`, and `index.html`, which opens with the conclusion
//!   ([`Conclusion`]).
//!
//! A study run again with the same runcard in the same folder keeps what is finished: a
//! trained model, every sampler whose `run.json` exists and the analysis settings of
//! `analysis.toml`; an interrupted training resumes from its checkpoint. A folder that holds another study's runcard is refused.

mod analysis;
mod compare;
pub mod plot;
mod report;
pub(crate) mod runcard;
mod scaling;
pub(crate) mod spec;
mod store;
mod sweep;
mod tune;

use std::path::{Path, PathBuf};

pub use analysis::{
    AutocorrelationSummary, FitSummary, Histograms, PointEstimate, SamplerAnalysis, StudySummary,
    analyse_runs,
};
pub use compare::{
    AGREEMENT_SIGMAS, Conclusion, ObservableComparison, Pull, compare_observables, conclude, pull,
};
pub use report::{REPORT_FILES, acceptance_text, write_report};
pub use scaling::{
    BudgetPoint, CostToTarget, Crossover, DEFAULT_TARGET_TAU_REJ, SamplerAtSize, SamplerComparison,
    TrainingCost, sampler_comparison, training_cost,
};
pub use spec::{
    AUTOCORRELATION_OBSERVABLES, AnalysisSpec, DEFAULT_STUDY, FlowSection, LoadedStudy,
    MAX_HISTOGRAM_BINS, MeasureSpec, OBSERVABLE_ORDER, Override, ReferenceValue, SamplerSpec,
    StudySpec, slug,
};
pub use store::{RunInfo, StoredRun, is_finished, load_run, save_run};
pub use sweep::{
    BUDGETS_HEADER, ChainCost, HMC_HEADER, HmcBaseline, HmcBaselineResult, HmcRow, LoadedSweep,
    MAX_SWEEP_POINTS, REFERENCE_BETA, SAMPLER_COST_HEADER, SWEEP_HEADER, SweepMethod, SweepOutcome,
    SweepPoint, SweepRow, SweepSampling, SweepSpec, TRAINING_COST_HEADER, reference_beta,
    run_sweep,
};
pub use tune::{
    ACCEPTANCE_WINDOW, HmcTuning, MAX_WIDENINGS, PILOT_N, PILOT_THERM, PROBE_N, PROBE_THERM,
    PilotRun, SHORTEST_TAU, StepProbe, TARGET_ACCEPTANCE, tune_hmc,
};

use crate::control::{Observer, Prefixed, StopToken};
use crate::error::{Error, Result};
use crate::io::{read_json, write_atomic, write_json};
use crate::run::{TrainControl, TrainOutcome, TrainReport, sample_data};

/// What a study run produced.
#[derive(Clone, Debug)]
pub struct StudyResult {
    /// The study folder.
    pub folder: PathBuf,
    /// The numbers.
    pub summary: StudySummary,
    /// Stages reused from an earlier run of the same study.
    pub reused: Vec<String>,
    /// Wall seconds of this run.
    pub seconds: f64,
}

/// How a study run ended.
#[derive(Clone, Debug)]
pub enum StudyOutcome {
    /// Every stage finished and the report was written.
    Finished(Box<StudyResult>),
    /// A stop was requested: finished stages are kept (and a training checkpoint), and
    /// running the same study again continues.
    Stopped {
        /// The study folder.
        folder: PathBuf,
        /// The stage that was stopped.
        stage: String,
    },
}

/// Runs a study: prepares its folder (refusing one that holds another study), trains the
/// flow (or reuses / resumes it), runs every sampler (reusing finished ones; a tuned HMC
/// first runs its pilot scan), then analyses the stored series and writes the report.
/// `observer` sees the stages `train`, `tune NAME: pilot scan`, `sample NAME: thermalise`,
/// `sample NAME: measure` and `report`; `stop` is checked between blocks of work.
pub fn run_study(
    study: &LoadedStudy,
    stop: &StopToken,
    observer: &mut dyn Observer,
) -> Result<StudyOutcome> {
    let start = std::time::Instant::now();
    let spec = &study.spec;
    let registry = &study.registry;
    spec.validate_with(registry)?;
    let folder = spec.folder();
    let model = folder.join("model.json");
    let trained = spec
        .flow
        .as_ref()
        .and_then(|f| f.model.as_ref())
        .filter(|_| spec.samplers.iter().any(|s| s.kernel.uses_flow()));
    // A flow trained before is read and checked before the folder is made.
    let adopted = match trained {
        Some(source) if !(folder.join("training.json").is_file() && model.is_file()) => {
            Some(adoptable_report(spec, source)?)
        }
        _ => None,
    };
    let _lock = prepare_folder(&folder, &study.runcard, true)?;
    let mut reused = Vec::new();
    let training = match spec.train_spec(&model) {
        None => match trained {
            Some(source) => Some(adopt_model(source, adopted, &folder, &mut reused)?),
            None => None,
        },
        Some(train_spec) => {
            let report_path = folder.join("training.json");
            if report_path.is_file() && model.is_file() {
                reused.push("training".to_string());
                Some(read_json::<TrainReport>(&report_path, "training report")?)
            } else {
                let checkpoint = folder.join("checkpoint.json");
                let log = folder.join("training.csv");
                let control = TrainControl {
                    checkpoint: Some(&checkpoint),
                    checkpoint_every: spec.flow.as_ref().map_or(100, |f| f.checkpoint_every),
                    log: Some(&log),
                    stop,
                    ranks: None,
                    registry,
                };
                let outcome = if checkpoint.is_file() {
                    reused.push("training checkpoint".to_string());
                    crate::run::resume(&checkpoint, Some(&model), &control, observer)?
                } else {
                    crate::run::train(&train_spec, &control, observer)?
                };
                match outcome {
                    TrainOutcome::Finished(report) => {
                        write_json(&report_path, &report)?;
                        // The checkpoint only serves an interrupted training.
                        if checkpoint.is_file() {
                            std::fs::remove_file(&checkpoint)
                                .map_err(|e| Error::io(&checkpoint, e))?;
                        }
                        Some(report)
                    }
                    TrainOutcome::Stopped { .. } => {
                        return Ok(StudyOutcome::Stopped {
                            folder,
                            stage: "train".into(),
                        });
                    }
                }
            }
        }
    };

    for (i, sampler) in spec.samplers.iter().enumerate() {
        let dir = folder.join("data").join(slug(&sampler.name));
        if is_finished(&dir) && !load_run_info(&dir)?.interrupted {
            reused.push(format!("sampler {}", sampler.name));
            continue;
        }
        let mut run_spec = spec.sample_spec(i, &model);
        let tuning = if sampler.tune {
            let stage = format!("tune {}", sampler.name);
            let tuned = tune_hmc(
                &run_spec,
                registry,
                &spec.analysis.cost_observables,
                &mut Prefixed::new(observer, &stage),
                stop,
            );
            let tuned = match tuned {
                Err(Error::Interrupted(_)) => return Ok(stopped(folder, &stage)),
                other => other?,
            };
            run_spec.kernel.tau = tuned.tau;
            run_spec.kernel.md_steps = tuned.md_steps;
            Some(tuned)
        } else {
            None
        };
        let stage = format!("sample {}", sampler.name);
        let data = sample_data(
            &run_spec,
            registry,
            &mut Prefixed::new(observer, &stage),
            stop,
            spec.measure.saved_configs,
        )?;
        // A run stopped after it measured is kept (marked interrupted, so that it runs
        // again next time).
        if data.chains.iter().all(|c| c.measurements.len() >= 2) {
            save_run(&dir, &run_spec, &data, tuning)?;
        }
        if data.report.interrupted {
            return Ok(stopped(folder, &stage));
        }
    }

    // An analysis made with `latflow analyse` is kept.
    let mut spec = spec.clone();
    if let Some(analysis) = recorded_analysis(&folder)? {
        spec.analysis = analysis;
        spec.validate_with(registry)?;
        reused.push(format!("analysis settings ({ANALYSIS_FILE})"));
    }
    let mut summary = analyse_stored(&spec, &folder, training)?;
    if folder.join(ANALYSIS_FILE).is_file() {
        summary.analysis_file = ANALYSIS_FILE.to_string();
    }
    write_report(&folder, &summary, observer)?;
    Ok(StudyOutcome::Finished(Box::new(StudyResult {
        folder,
        summary,
        reused,
        seconds: start.elapsed().as_secs_f64(),
    })))
}

/// The training report of the flow trained before (`flow.model`), refused when it was
/// trained for another lattice or action than the study's.
fn adoptable_report(spec: &StudySpec, source: &Path) -> Result<TrainReport> {
    let report = crate::run::trained_model_report(source)?;
    if report.lattice != spec.lattice.extents() || report.action != spec.action {
        return Err(Error::Incompatible(format!(
            "flow.model {} was trained for lattice {:?} and {:?}, the study is on {:?} with {:?}",
            source.display(),
            report.lattice,
            report.action,
            spec.lattice.extents(),
            spec.action
        )));
    }
    Ok(report)
}

/// Takes the flow trained before (`source`, whose report [`adoptable_report`] gave) into
/// the study folder as `model.json`, with its training report as `training.json`; a folder
/// that holds them already keeps them.
fn adopt_model(
    source: &Path,
    report: Option<TrainReport>,
    folder: &Path,
    reused: &mut Vec<String>,
) -> Result<TrainReport> {
    let model = folder.join("model.json");
    let report_path = folder.join("training.json");
    let Some(mut report) = report else {
        reused.push("training".to_string());
        return read_json::<TrainReport>(&report_path, "training report");
    };
    let bytes = std::fs::read(source).map_err(|e| Error::io(source, e))?;
    write_atomic(&model, &bytes)?;
    report.model = model;
    write_json(&report_path, &report)?;
    Ok(report)
}

fn stopped(folder: PathBuf, stage: &str) -> StudyOutcome {
    StudyOutcome::Stopped {
        folder,
        stage: stage.to_string(),
    }
}

fn load_run_info(dir: &Path) -> Result<RunInfo> {
    read_json(&dir.join("run.json"), "stored run")
}

/// The file in a study folder that records the analysis settings `latflow analyse` used.
pub const ANALYSIS_FILE: &str = "analysis.toml";

/// The analysis settings recorded in `folder` by an earlier [`analyse_folder`], if any.
pub fn recorded_analysis(folder: &Path) -> Result<Option<AnalysisSpec>> {
    let path = folder.join(ANALYSIS_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        analysis: AnalysisSpec,
    }
    let file: File = toml::from_str(&text).map_err(|e| {
        Error::format(
            format!("analysis settings {}", path.display()),
            e.to_string(),
        )
    })?;
    Ok(Some(file.analysis))
}

/// Re-analyses a study folder from its stored series with the folder's analysis settings
/// (those of its runcard, or of an earlier re-analysis recorded in `analysis.toml`) and the
/// `overrides` of its `analysis.*` keys (e.g. `analysis.therm_cut=1000`,
/// `analysis.fit_range=[1,4]`), and rewrites `summary.json`, the tables, the plots and
/// `index.html`. The runcard in the folder is left as it was run; the settings used are
/// recorded in `analysis.toml` (when they differ from the runcard's or were recorded
/// before), which a later `latflow run` of the study keeps, and in `summary.json`.
pub fn analyse_folder(
    folder: &Path,
    overrides: &[Override],
    observer: &mut dyn Observer,
) -> Result<StudyResult> {
    analyse_folder_with(folder, overrides, crate::run::Registry::new(), observer)
}

/// [`analyse_folder`] for a study that names the user's pieces of `registry`.
pub fn analyse_folder_with(
    folder: &Path,
    overrides: &[Override],
    registry: crate::run::Registry,
    observer: &mut dyn Observer,
) -> Result<StudyResult> {
    let start = std::time::Instant::now();
    let runcard = folder.join("runcard.toml");
    if !runcard.is_file() {
        return Err(Error::param(
            "folder",
            format!("{} holds no study (no runcard.toml)", folder.display()),
        ));
    }
    let mut spec = StudySpec::load_with(&runcard, &[], registry.clone())?.spec;
    let recorded = recorded_analysis(folder)?;
    let base = recorded.clone().unwrap_or_else(|| spec.analysis.clone());
    spec.analysis = base.with_overrides(overrides)?;
    spec.validate_with(&registry)?;
    let record = recorded.is_some() || !overrides.is_empty();
    // The folder may have moved since the study ran.
    if let (Some(parent), Some(name)) = (folder.parent(), folder.file_name()) {
        spec.out = parent.to_path_buf();
        spec.name = name.to_string_lossy().into_owned();
    }
    let report_path = folder.join("training.json");
    let training = if report_path.is_file() {
        Some(read_json::<TrainReport>(&report_path, "training report")?)
    } else {
        None
    };
    // Settings the stored series refuse are not recorded.
    let mut summary = analyse_stored(&spec, folder, training)?;
    if record {
        summary.analysis_file = ANALYSIS_FILE.to_string();
        let text = toml::to_string(&toml::Table::from_iter([(
            "analysis".to_string(),
            toml::Value::try_from(&spec.analysis)
                .map_err(|e| Error::format("analysis settings", e.to_string()))?,
        )]))
        .map_err(|e| Error::format("analysis settings", e.to_string()))?;
        write_atomic(
            &folder.join(ANALYSIS_FILE),
            format!(
                "# The analysis settings of this folder's report, written by `latflow analyse`;\n\
                 # `latflow run` of the study keeps them. Delete this file to return to the\n\
                 # runcard's [analysis].\n{text}"
            )
            .as_bytes(),
        )?;
    }
    write_report(folder, &summary, observer)?;
    Ok(StudyResult {
        folder: folder.to_path_buf(),
        summary,
        reused: Vec::new(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn analyse_stored(
    spec: &StudySpec,
    folder: &Path,
    training: Option<TrainReport>,
) -> Result<StudySummary> {
    let mut runs = Vec::new();
    for sampler in &spec.samplers {
        let dir = folder.join("data").join(slug(&sampler.name));
        if !is_finished(&dir) {
            return Err(Error::param(
                "folder",
                format!(
                    "sampler `{}` has no finished run in {}: run the study first",
                    sampler.name,
                    dir.display()
                ),
            ));
        }
        runs.push(load_run(&dir)?);
    }
    analyse_runs(spec, runs, training)
}

/// The lock file a running study or sweep keeps in its folder, holding its process id.
pub const LOCK_FILE: &str = ".latflow.lock";

/// The lock of a study or sweep folder ([`LOCK_FILE`]): the file holds the process id of
/// its holder and an advisory lock (`flock`) on it, which the system releases when the
/// holder ends however it ends; the file is removed when the lock is dropped.
pub(crate) struct FolderLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl FolderLock {
    /// Takes the lock of `folder`: refused while another process holds it; a lock file
    /// left by a process that ended without removing it (killed, or a machine that went
    /// down) holds no lock any more and is taken over.
    fn take(folder: &Path) -> Result<FolderLock> {
        use std::io::Write;
        let path = folder.join(LOCK_FILE);
        for _ in 0..3 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok())
                        .map_or("another process".to_string(), |pid| {
                            format!("process {pid}")
                        });
                    return Err(Error::Incompatible(format!(
                        "{} is in use by {holder}, which holds its lock {}: wait for that run \
                         to end",
                        folder.display(),
                        path.display()
                    )));
                }
                // A file system without advisory locks: the file alone marks the folder.
                Err(std::fs::TryLockError::Error(e))
                    if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            // The holder before may have removed the file between our opening and locking
            // it: then the lock taken is on a file no longer in the folder.
            if !is_same_file(&file, &path) {
                continue;
            }
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            writeln!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
            return Ok(FolderLock { path, _file: file });
        }
        Err(Error::Incompatible(format!(
            "{}: another run keeps taking the lock {}",
            folder.display(),
            path.display()
        )))
    }
}

impl Drop for FolderLock {
    /// Removes the file while still holding its lock (the lock goes with the file handle).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the open `file` is the file at `path` (same device and inode).
#[cfg(unix)]
fn is_same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_same_file(_file: &std::fs::File, path: &Path) -> bool {
    path.is_file()
}

/// Creates the study (or sweep) folder, takes its lock when `lock` is set (see
/// [`LOCK_FILE`]) and writes its runcard; a folder holding a different runcard (comments
/// aside), or files but no runcard, is refused (the lock is taken before these checks, so
/// that a run in progress is not judged by files it is writing).
pub(crate) fn prepare_folder(
    folder: &Path,
    runcard: &str,
    lock: bool,
) -> Result<Option<FolderLock>> {
    std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    let guard = if lock {
        Some(FolderLock::take(folder)?)
    } else {
        None
    };
    let path = folder.join("runcard.toml");
    if path.is_file() {
        let old = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let body = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        if body(&old) != body(runcard) {
            return Err(Error::Incompatible(format!(
                "{} holds another study (its runcard.toml differs): choose another name \
                 (--set name=NEW) or out folder, or remove the folder",
                folder.display()
            )));
        }
    } else if std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .any(|entry| entry.is_ok_and(|e| e.file_name() != LOCK_FILE))
    {
        return Err(Error::Incompatible(format!(
            "{} exists and is not a study folder (no runcard.toml): choose another name or \
             out folder",
            folder.display()
        )));
    }
    write_atomic(&path, runcard.as_bytes())?;
    Ok(guard)
}
