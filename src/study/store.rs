//! A sampler's stored output in a study folder, `data/<sampler>/`: the measured series
//! (`series.npy`, one column per name in `series_columns.json`), the move history
//! (`moves.npy`, `moves_per_step.npy`), saved configurations (`configs.npy`,
//! `configs_index.npy`) and `run.json` (the run's settings and timing), written last, so
//! that its presence marks a finished run. A run of several chains (`chains` in
//! `run.json`) stores them one after the other: the series rows, the moves and the steps of
//! chain 0, then chain 1, and so on, every chain with as many rows and steps.

use std::path::Path;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::tune::HmcTuning;
use crate::error::{Error, Result};
use crate::io::{read_json, read_npy, write_json, write_npy};
use crate::kernel::{ChainRecord, MoveInfo, MoveLabel, MoveRows};
use crate::observable::Measurements;
use crate::run::{ReplicaChain, SampleData, SampleSpec};

/// `run.json`: how a sampler ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The sampling run as made (for a tuned HMC, with the chosen trajectory).
    pub spec: SampleSpec,
    /// The pilot scan that chose the HMC trajectory, when tuned.
    pub tuning: Option<HmcTuning>,
    /// Wall seconds of the whole run, thermalisation included.
    pub seconds: f64,
    /// Wall seconds of the measured steps.
    pub sampling_seconds: f64,
    /// Measured steps made.
    pub steps: usize,
    /// True when the run was stopped before `spec.n` steps.
    pub interrupted: bool,
    /// Chains stored one after the other (1 for older folders).
    #[serde(default = "one")]
    pub chains: usize,
    /// The columns of `moves.npy`.
    pub move_columns: [String; 5],
    /// The move labels the first column of `moves.npy` indexes (e.g. `flow`, `local`,
    /// `hmc#1`).
    pub move_kernels: Vec<String>,
    /// The kind of move of each label (`local`, `hmc`, `flow` or `metropolis`), which says
    /// what the detail columns hold; when absent (older folders) each label is its kind.
    #[serde(default)]
    pub move_kinds: Vec<String>,
}

fn one() -> usize {
    1
}

/// A stored run read back.
pub struct StoredRun {
    /// `run.json`.
    pub info: RunInfo,
    /// Each chain's move history and series.
    pub chains: Vec<ReplicaChain>,
    /// Saved configurations, `(count, extents...)`.
    pub configs: ArrayD<f64>,
    /// The measurement index of each saved configuration.
    pub config_index: Vec<u64>,
}

/// Writes a finished run into `dir` (created if missing); `run.json` last.
pub fn save_run(
    dir: &Path,
    spec: &SampleSpec,
    data: &SampleData,
    tuning: Option<HmcTuning>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let first = data
        .chains
        .first()
        .ok_or_else(|| Error::param("chains", "a run without chains cannot be stored"))?;
    let names = first.measurements.names().to_vec();
    let rows = first.measurements.len();
    if data
        .chains
        .iter()
        .any(|c| c.measurements.len() != rows || c.record.steps != first.record.steps)
    {
        return Err(Error::Shape(
            "the chains of a stored run must have as many measurements and steps".into(),
        ));
    }
    let mut series = Array2::<f64>::zeros((rows * data.chains.len(), names.len()));
    for (c, chain) in data.chains.iter().enumerate() {
        for (k, name) in names.iter().enumerate() {
            let column = chain.measurements.series(name).unwrap_or(&[]);
            series
                .column_mut(k)
                .iter_mut()
                .skip(c * rows)
                .zip(column)
                .for_each(|(d, &s)| *d = s);
        }
    }
    write_npy(&dir.join("series.npy"), &series)?;
    write_json(&dir.join("series_columns.json"), &names)?;

    let all_moves: Vec<MoveInfo> = data
        .chains
        .iter()
        .flat_map(|c| c.record.moves.iter().cloned())
        .collect();
    let moves = MoveRows::from_moves(&all_moves);
    let mut table = Array2::<f64>::zeros((moves.rows.len(), 5));
    for (mut row, values) in table.rows_mut().into_iter().zip(&moves.rows) {
        row.assign(&ndarray::ArrayView1::from(values));
    }
    write_npy(&dir.join("moves.npy"), &table)?;
    let per_step = Array1::from(
        data.chains
            .iter()
            .flat_map(|c| c.record.moves_per_step.iter().copied())
            .collect::<Vec<u32>>(),
    );
    write_npy(&dir.join("moves_per_step.npy"), &per_step)?;

    let extents = spec.lattice.extents();
    let mut shape = vec![data.configs.len()];
    shape.extend_from_slice(extents);
    let flat: Vec<f64> = data.configs.iter().flatten().copied().collect();
    let configs = ArrayD::from_shape_vec(IxDyn(&shape), flat)
        .map_err(|e| Error::Shape(format!("saved configurations: {e}")))?;
    write_npy(&dir.join("configs.npy"), &configs)?;
    let index = Array1::from(
        data.config_indices
            .iter()
            .map(|&i| i as u64)
            .collect::<Vec<_>>(),
    );
    write_npy(&dir.join("configs_index.npy"), &index)?;

    let mut run_spec = spec.clone();
    // The model path as the folder sees it.
    if let Some(model) = &mut run_spec.model {
        *model = model
            .file_name()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| model.clone());
    }
    let info = RunInfo {
        spec: run_spec,
        tuning,
        seconds: data.report.seconds,
        sampling_seconds: data.sampling_seconds,
        steps: first.record.steps,
        interrupted: data.report.interrupted,
        chains: data.chains.len(),
        move_columns: ["kernel", "proposed", "accepted", "detail_a", "detail_b"].map(String::from),
        move_kernels: moves.labels.iter().map(|(l, _)| l.to_string()).collect(),
        move_kinds: moves.labels.iter().map(|(_, k)| k.clone()).collect(),
    };
    write_json(&dir.join("run.json"), &info)
}

/// True when `dir` holds a finished run.
pub fn is_finished(dir: &Path) -> bool {
    dir.join("run.json").is_file()
}

/// Reads a stored run back.
pub fn load_run(dir: &Path) -> Result<StoredRun> {
    let info: RunInfo = read_json(&dir.join("run.json"), "stored run")?;
    let names: Vec<String> = read_json(&dir.join("series_columns.json"), "series columns")?;
    let series_path = dir.join("series.npy");
    let table: Array2<f64> = read_npy(&series_path)?;
    if table.ncols() != names.len() {
        return Err(Error::format(
            format!("npy file {}", series_path.display()),
            format!(
                "{} columns, series_columns.json names {}",
                table.ncols(),
                names.len()
            ),
        ));
    }
    let chains = info.chains.max(1);
    if !table.nrows().is_multiple_of(chains) {
        return Err(Error::format(
            format!("npy file {}", series_path.display()),
            format!("{} rows do not split into {chains} chains", table.nrows()),
        ));
    }
    let rows = table.nrows() / chains;
    let moves_path = dir.join("moves.npy");
    let moves: Array2<f64> = read_npy(&moves_path)?;
    let per_step: Array1<u32> = read_npy(&dir.join("moves_per_step.npy"))?;
    let bad = |why: String| Error::format(format!("move history {}", moves_path.display()), why);
    if moves.ncols() != 5 {
        return Err(bad(format!("{} columns, 5 expected", moves.ncols())));
    }
    let kinds = if info.move_kinds.is_empty() {
        &info.move_kernels
    } else {
        &info.move_kinds
    };
    if kinds.len() != info.move_kernels.len() {
        return Err(bad(format!(
            "run.json names {} move labels and {} kinds",
            info.move_kernels.len(),
            kinds.len()
        )));
    }
    let rows_of_moves = MoveRows {
        labels: info
            .move_kernels
            .iter()
            .zip(kinds)
            .map(|(l, k)| (MoveLabel::new(l), k.clone()))
            .collect(),
        rows: moves
            .rows()
            .into_iter()
            .map(|r| [r[0], r[1], r[2], r[3], r[4]])
            .collect(),
    };
    let mut infos = rows_of_moves.to_moves().map_err(bad)?.into_iter();
    let moves_per_step = per_step.to_vec();
    let total: u64 = moves_per_step.iter().map(|&k| k as u64).sum();
    if total != moves.nrows() as u64 || moves_per_step.len() != info.steps * chains {
        return Err(bad(format!(
            "{} steps of {total} moves in moves_per_step.npy, run.json says {} steps of \
             {chains} chains and moves.npy holds {} moves",
            moves_per_step.len(),
            info.steps,
            moves.nrows()
        )));
    }
    let mut chain_runs = Vec::with_capacity(chains);
    for (c, steps) in moves_per_step
        .chunks(info.steps.max(1))
        .enumerate()
        .take(chains)
    {
        let n_moves: usize = steps.iter().map(|&k| k as usize).sum();
        let chain_moves: Vec<MoveInfo> = infos.by_ref().take(n_moves).collect();
        let series: Vec<Vec<f64>> = table
            .columns()
            .into_iter()
            .map(|col| col.iter().skip(c * rows).take(rows).copied().collect())
            .collect();
        let measurements = Measurements::from_series(&info.spec.lattice, names.clone(), series)
            .map_err(|e| e.in_file("stored series", &series_path))?;
        let mut record = ChainRecord::from_moves(
            chain_moves,
            steps.to_vec(),
            info.steps,
            info.sampling_seconds,
        );
        record.interrupted = info.interrupted;
        chain_runs.push(ReplicaChain {
            record,
            measurements,
            seconds: info.seconds,
            interrupted: info.interrupted,
        });
    }
    if info.steps == 0 {
        // No steps: every chain has an empty history.
        while chain_runs.len() < chains {
            let series = vec![Vec::new(); names.len()];
            chain_runs.push(ReplicaChain {
                record: ChainRecord::from_moves(Vec::new(), Vec::new(), 0, info.sampling_seconds),
                measurements: Measurements::from_series(&info.spec.lattice, names.clone(), series)?,
                seconds: info.seconds,
                interrupted: info.interrupted,
            });
        }
    }
    let configs_path = dir.join("configs.npy");
    let configs: ArrayD<f64> = read_npy(&configs_path)?;
    let config_index: Array1<u64> = read_npy(&dir.join("configs_index.npy"))?;
    let volume = info.spec.lattice.volume();
    if configs.len() != config_index.len() * volume {
        return Err(Error::format(
            format!("npy file {}", configs_path.display()),
            format!(
                "{} values for {} saved configurations of {volume} sites",
                configs.len(),
                config_index.len()
            ),
        ));
    }
    Ok(StoredRun {
        info,
        chains: chain_runs,
        configs: configs.as_standard_layout().into_owned(),
        config_index: config_index.to_vec(),
    })
}
