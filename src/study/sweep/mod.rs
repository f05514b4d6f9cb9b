//! Sweeps: flow training over a grid of lattice sizes, training methods (recipe and
//! gradient estimator), batch sizes, iteration counts, learning rates and seeds, each point
//! trained and then sampled with its flow, into one table of training cost and sampling
//! quality, analysed per method. Points are run one after the other,
//! each on every core; a finished point (its `point.json`) is skipped when the sweep runs
//! again.
//!
//! The runcard and its grid are in `spec`, the HMC baseline in `baseline`, the rows and
//! the files they are written to in `tables`.

mod baseline;
mod spec;
mod tables;

use std::path::PathBuf;

use super::{SamplerComparison, TrainingCost};
use crate::control::{Observer, Prefixed, StopToken};
use crate::error::{Error, Result};
use crate::io::{read_json, write_json};
use crate::parallel::Collective;
use crate::run::{TrainControl, TrainOutcome, sample_with};

pub use spec::{
    HmcBaseline, LoadedSweep, MAX_SWEEP_POINTS, SweepMethod, SweepPoint, SweepSampling, SweepSpec,
};
pub use tables::{
    BUDGETS_HEADER, ChainCost, HMC_HEADER, HmcBaselineResult, HmcRow, SAMPLER_COST_HEADER,
    SWEEP_HEADER, SweepRow, TRAINING_COST_HEADER,
};

/// The hopping coupling β on the ξ ≈ L/4 line at λ = 0.5 (docs/reference.md), for
/// L = 6, 8, …, 20.
pub const REFERENCE_BETA: [(usize, f64); 8] = [
    (6, 0.537),
    (8, 0.576),
    (10, 0.601),
    (12, 0.616),
    (14, 0.626),
    (16, 0.634),
    (18, 0.641),
    (20, 0.645),
];

/// The reference β of an L × L lattice, if tabulated.
pub fn reference_beta(l: usize) -> Option<f64> {
    REFERENCE_BETA
        .iter()
        .find(|(size, _)| *size == l)
        .map(|p| p.1)
}

/// How a sweep ended.
#[derive(Clone, Debug)]
// Returned once per sweep: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum SweepOutcome {
    /// Every point is done; the rows in grid order.
    Finished {
        /// The sweep folder.
        folder: PathBuf,
        /// One row per point.
        rows: Vec<SweepRow>,
        /// Points skipped because an earlier run finished them.
        reused: usize,
        /// The HMC baseline, when the runcard asks for one.
        hmc: Option<HmcBaselineResult>,
        /// The training-cost analysis of the rows, one per training method (in the order of
        /// [`SweepSpec::method_names`]).
        training_costs: Vec<TrainingCost>,
        /// The kernels of the points against the HMC baseline, one per training method
        /// (empty without a baseline).
        comparisons: Vec<SamplerComparison>,
    },
    /// Stopped on request; finished points are kept.
    Stopped {
        /// The sweep folder.
        folder: PathBuf,
        /// The point that was running.
        point: String,
    },
}

/// Runs every point of a sweep not finished before, then writes `sweep.csv` and
/// `sweep.json`. A folder holding another sweep's runcard is refused. Over several ranks
/// every rank makes the call: point i runs on rank i mod R (the HMC baseline's sizes are
/// dealt the same way), each point as one process, and rank 0 writes the tables once all
/// are done. A stop on any rank stops the sweep after the points in progress.
pub fn run_sweep(
    sweep: &LoadedSweep,
    ranks: &dyn Collective,
    stop: &StopToken,
    observer: &mut dyn Observer,
) -> Result<SweepOutcome> {
    let spec = &sweep.spec;
    let registry = &sweep.registry;
    spec.validate_with(registry)?;
    let folder = spec.out.join(&spec.name);
    // Rank 0 holds the folder's lock for the whole sweep.
    let _lock = if ranks.is_root() {
        super::prepare_folder(&folder, &sweep.runcard, true)?
    } else {
        None
    };
    // The other ranks start once the folder is ready (or refused: then rank 0 has failed).
    ranks.barrier()?;
    if !ranks.is_root() {
        super::prepare_folder(&folder, &sweep.runcard, false)?;
    }
    let points = spec.points()?;
    let point_file =
        |point: &SweepPoint| folder.join("points").join(point.key()).join("point.json");
    let reused = points.iter().filter(|p| point_file(p).is_file()).count();
    let mut stopped_at = None;
    for (i, point) in points.iter().enumerate() {
        let dir = folder.join("points").join(point.key());
        let done = dir.join("point.json");
        if i % ranks.size() != ranks.rank() || done.is_file() {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let model = dir.join("model.json");
        let checkpoint = dir.join("checkpoint.json");
        let control = TrainControl {
            checkpoint: Some(&checkpoint),
            checkpoint_every: 100,
            log: Some(&dir.join("training.csv")),
            stop,
            ranks: None,
            registry,
        };
        // Where the point stands in the grid, for the progress display.
        let place = format!("[{}/{}] {}", i + 1, points.len(), point.key());
        let mut point_observer = Prefixed::new(observer, &place);
        let outcome = if checkpoint.is_file() && !model.is_file() {
            crate::run::resume(&checkpoint, Some(&model), &control, &mut point_observer)?
        } else {
            crate::run::train(
                &spec.train_spec(point, &model)?,
                &control,
                &mut point_observer,
            )?
        };
        let report = match outcome {
            TrainOutcome::Finished(r) => r,
            TrainOutcome::Stopped { .. } => {
                stopped_at = Some(point.key());
                break;
            }
        };
        let sample_spec = spec.sample_spec(point, &model)?;
        let chain = sample_with(
            &sample_spec,
            registry,
            &mut Prefixed::new(&mut point_observer, "flow"),
            stop,
        )?;
        if chain.interrupted {
            stopped_at = Some(point.key());
            break;
        }
        let mut samplers = vec![ChainCost::of(&sample_spec, &chain)];
        for k in 1..=spec.sample.kernels.len() {
            let kernel_spec = spec.chain_spec(point, k, &model)?;
            let name = kernel_spec.kernel.kind.to_string();
            let r = sample_with(
                &kernel_spec,
                registry,
                &mut Prefixed::new(&mut point_observer, &name),
                stop,
            )?;
            if r.interrupted {
                break;
            }
            samplers.push(ChainCost::of(&kernel_spec, &r));
        }
        if samplers.len() <= spec.sample.kernels.len() {
            stopped_at = Some(point.key());
            break;
        }
        let abs_m = chain.observables.get("abs_m");
        let row = SweepRow {
            point: point.clone(),
            n_params: report.n_params,
            configs_seen: report.configs_seen,
            train_seconds: report.seconds,
            acceptance: chain.acceptance,
            ess: report.ess,
            tau_rej: chain.tau_rej.unwrap_or(f64::NAN),
            tau_rej_err: chain.tau_rej_err.unwrap_or(f64::NAN),
            tau_int_abs_m: abs_m.map_or(f64::NAN, |e| e.tau_int),
            tau_int_abs_m_err: abs_m.map_or(f64::NAN, |e| e.tau_int_err),
            longest_rejection_run: chain.longest_rejection_run.unwrap_or(0),
            verdict: chain.verdict,
            samplers,
        };
        write_json(&done, &row)?;
    }
    if ranks.any(stopped_at.is_some())? {
        return Ok(SweepOutcome::Stopped {
            folder,
            point: stopped_at.unwrap_or_else(|| "a point of another rank".into()),
        });
    }
    let rows = points
        .iter()
        .map(|p| read_json::<SweepRow>(&point_file(p), "sweep point"))
        .collect::<Result<Vec<_>>>()?;
    if ranks.is_root() {
        tables::write_table(&folder, &rows)?;
    }
    let hmc = match &spec.hmc {
        None => None,
        Some(baseline) => {
            match baseline::run_baseline(sweep, baseline, &folder, ranks, stop, observer)? {
                Some(result) => Some(result),
                None => {
                    return Ok(SweepOutcome::Stopped {
                        folder,
                        point: "hmc baseline".into(),
                    });
                }
            }
        }
    };
    // ξ per size: the HMC baseline's ξ_2nd (mean over seeds), else the reference line's L/4.
    let xi_of = |l: usize| {
        let measured: Vec<f64> = hmc
            .iter()
            .flat_map(|h| h.rows.iter())
            .filter(|r| r.l == l && r.xi.is_finite())
            .map(|r| r.xi)
            .collect();
        if measured.is_empty() {
            l as f64 / 4.0
        } else {
            measured.iter().sum::<f64>() / measured.len() as f64
        }
    };
    let mut training_costs = Vec::new();
    let mut comparisons = Vec::new();
    for method in spec.method_names() {
        let of_method: Vec<SweepRow> = rows
            .iter()
            .filter(|r| r.point.method == method)
            .cloned()
            .collect();
        let mut cost = super::training_cost(&of_method, &xi_of, spec.target_tau_rej);
        cost.method = method.clone();
        let comparison = hmc.as_ref().map(|h| {
            let mut c = super::sampler_comparison(&of_method, &h.rows, spec.sample.amortise_over);
            c.method = method.clone();
            c
        });
        if ranks.is_root() {
            tables::write_training_cost(&folder, &cost)?;
            if let Some(c) = &comparison {
                tables::write_comparison(&folder, c)?;
            }
        }
        training_costs.push(cost);
        comparisons.extend(comparison);
    }
    Ok(SweepOutcome::Finished {
        folder,
        rows,
        reused,
        hmc,
        training_costs,
        comparisons,
    })
}
