//! A Markov chain: a kernel, its state and a seeded generator. It thermalises (adapting
//! step sizes), then runs with thinning, measuring observables and recording every
//! accept/reject in a [`ChainRecord`].

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernel::{MoveDetail, MoveInfo, Proposal, State};
use crate::observable::Observable;
use crate::rng::{SimRng, rng_from_seed};

/// A kernel, the state it moves and the random stream that drives it.
///
/// ```
/// use std::sync::Arc;
/// use latflow::action::Phi4;
/// use latflow::kernel::{Chain, Cycle, Hmc, LocalMetropolis};
/// use latflow::observable::{FieldSquared, Observable};
/// use latflow::{Lattice, State};
///
/// let action = Arc::new(Phi4::hopping(Lattice::hypercubic(2, 8)?, 0.576, 0.5)?);
/// let kernel = Cycle::new(
///     LocalMetropolis::new(action.clone(), 1.0)?,
///     Hmc::new(action.clone(), 1.0, 8)?,
/// );
/// let mut chain = Chain::new(kernel, State::zero(&*action), 42);
/// chain.thermalise(100);
/// let mut observables: Vec<Box<dyn Observable>> = vec![Box::new(FieldSquared)];
/// let record = chain.run(200, 2, &mut observables)?;
/// assert_eq!(record.n_measurements(), 100);
/// assert_eq!(record.accept_history("hmc").len(), 200);
/// # Ok::<(), latflow::Error>(())
/// ```
pub struct Chain<K: Proposal> {
    kernel: K,
    state: State,
    rng: SimRng,
    scratch_moves: Vec<MoveInfo>,
}

/// Everything a run produced: measurements and the full move history, with the step
/// boundaries (one kernel step may make several moves, e.g. a cycle `flow+local`).
#[derive(Clone, Debug, Serialize)]
pub struct ChainRecord {
    /// Observable names, in the order given to [`Chain::run`].
    pub names: Vec<String>,
    /// Numbers per measurement of each observable.
    pub components: Vec<usize>,
    /// Per observable, `n_measurements × components` values, measurement-major.
    pub measurements: Vec<Vec<f64>>,
    /// Every move record, in order.
    pub moves: Vec<MoveInfo>,
    /// Per kernel step, how many records of `moves` it made (`steps` entries summing to
    /// `moves.len()`).
    pub moves_per_step: Vec<u32>,
    /// Kernel steps made.
    pub steps: usize,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
}

impl ChainRecord {
    /// Number of measurements of each observable.
    pub fn n_measurements(&self) -> usize {
        match (self.measurements.first(), self.components.first()) {
            (Some(m), Some(&c)) if c > 0 => m.len() / c,
            _ => 0,
        }
    }

    /// Index of the observable called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The time series of one component of the observable called `name`.
    pub fn series(&self, name: &str, component: usize) -> Option<Vec<f64>> {
        let i = self.index_of(name)?;
        let c = self.components[i];
        if component >= c {
            return None;
        }
        Some(
            self.measurements[i]
                .iter()
                .skip(component)
                .step_by(c)
                .copied()
                .collect(),
        )
    }

    /// Accepted / proposed over all moves (NaN when nothing was proposed).
    pub fn acceptance(&self) -> f64 {
        acceptance_of(self.moves.iter())
    }

    /// Accepted / proposed over the moves with kernel label `label` (NaN when none).
    pub fn acceptance_of(&self, label: &str) -> f64 {
        acceptance_of(self.moves.iter().filter(|m| m.kernel == label))
    }

    /// The accept (true) / reject (false) sequence of the single-proposal moves labelled
    /// `label`, in order — the input of the rejection-based autocorrelation.
    pub fn accept_history(&self, label: &str) -> Vec<bool> {
        self.moves
            .iter()
            .filter(|m| m.kernel == label && m.proposed == 1)
            .map(|m| m.accepted == 1)
            .collect()
    }

    /// The moves labelled `label`, in order.
    pub fn moves_of<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a MoveInfo> + 'a {
        self.moves.iter().filter(move |m| m.kernel == label)
    }

    /// ΔH of every HMC trajectory, in order.
    pub fn delta_h(&self) -> Vec<f64> {
        self.moves.iter().filter_map(MoveInfo::delta_h).collect()
    }

    /// log w(φ′) − log w(φ) of every flow proposal labelled `label`, in order.
    pub fn log_weight_ratios(&self, label: &str) -> Vec<f64> {
        self.moves_of(label)
            .filter_map(MoveInfo::log_weight_ratio)
            .collect()
    }

    /// The log-acceptance ratio of every single proposal labelled `label`, in order (see
    /// [`MoveInfo::log_acceptance_ratio`]; local sweeps have none).
    pub fn log_acceptance_ratios(&self, label: &str) -> Vec<f64> {
        self.moves_of(label)
            .filter_map(MoveInfo::log_acceptance_ratio)
            .collect()
    }

    /// The moves of each kernel step, in order; `None` when `moves_per_step` does not
    /// describe `moves` (a record assembled by hand).
    pub fn step_moves(&self) -> Option<impl Iterator<Item = &[MoveInfo]> + '_> {
        let total: u64 = self.moves_per_step.iter().map(|&k| u64::from(k)).sum();
        if self.moves_per_step.len() != self.steps || total != self.moves.len() as u64 {
            return None;
        }
        let mut rest = self.moves.as_slice();
        Some(self.moves_per_step.iter().map(move |&k| {
            let (step, tail) = rest.split_at(k as usize);
            rest = tail;
            step
        }))
    }

    /// Per kernel step, whether the state changed (some move of the step was accepted);
    /// `None` as for [`ChainRecord::step_moves`].
    pub fn state_changes(&self) -> Option<Vec<bool>> {
        Some(
            self.step_moves()?
                .map(|step| step.iter().any(|m| m.accepted > 0))
                .collect(),
        )
    }

    /// Appends the record of the next run of the same chain (same observables): the
    /// measurements, moves and step boundaries are concatenated, steps and seconds added.
    /// A record with other observables is refused and `self` left unchanged.
    pub fn append(&mut self, other: ChainRecord) -> Result<()> {
        if self.names != other.names || self.components != other.components {
            return Err(Error::Incompatible(format!(
                "cannot append a record of observables {:?} to one of {:?}",
                other.names, self.names
            )));
        }
        for (mine, theirs) in self.measurements.iter_mut().zip(other.measurements) {
            mine.extend(theirs);
        }
        self.moves.extend(other.moves);
        self.moves_per_step.extend(other.moves_per_step);
        self.steps += other.steps;
        self.wall_seconds += other.wall_seconds;
        Ok(())
    }

    /// Drops the first `steps` kernel steps of the move history (e.g. a longer
    /// thermalisation cut); the measurements, if any, are left to the caller. Wall seconds
    /// shrink in proportion. A record without step boundaries is refused.
    pub fn skip_steps(&mut self, steps: usize) -> Result<()> {
        if self.moves_per_step.len() != self.steps {
            return Err(Error::Incompatible(
                "the record has no step boundaries, so steps cannot be dropped".into(),
            ));
        }
        let steps = steps.min(self.steps);
        let moves: usize = self.moves_per_step[..steps]
            .iter()
            .map(|&k| k as usize)
            .sum();
        self.moves.drain(..moves.min(self.moves.len()));
        self.moves_per_step.drain(..steps);
        if self.steps > 0 {
            self.wall_seconds *= (self.steps - steps) as f64 / self.steps as f64;
        }
        self.steps -= steps;
        Ok(())
    }

    /// The step size δ of the last local sweep, if any ran.
    pub fn local_step_size(&self) -> Option<f64> {
        self.moves.iter().rev().find_map(|m| match m.detail {
            MoveDetail::LocalSweep { step_size, .. } => Some(step_size),
            _ => None,
        })
    }
}

fn acceptance_of<'a>(moves: impl Iterator<Item = &'a MoveInfo>) -> f64 {
    let (acc, prop) = moves.fold((0u64, 0u64), |(a, p), m| {
        (a + m.accepted as u64, p + m.proposed as u64)
    });
    if prop == 0 {
        f64::NAN
    } else {
        acc as f64 / prop as f64
    }
}

impl<K: Proposal> Chain<K> {
    /// A chain starting from `state`, driven by a generator seeded with `seed`.
    pub fn new(kernel: K, state: State, seed: u64) -> Self {
        Self::with_rng(kernel, state, rng_from_seed(seed))
    }

    /// A chain driven by a given generator (e.g. a derived stream or a checkpoint).
    pub fn with_rng(kernel: K, state: State, rng: SimRng) -> Self {
        Chain {
            kernel,
            state,
            rng,
            scratch_moves: Vec::new(),
        }
    }

    /// Makes `n` steps with adaptation on, then switches adaptation off; the moves are
    /// not recorded.
    pub fn thermalise(&mut self, n: usize) {
        self.kernel.set_adapting(true);
        for _ in 0..n {
            self.scratch_moves.clear();
            self.kernel
                .step(&mut self.state, &mut self.rng, &mut self.scratch_moves);
        }
        self.kernel.set_adapting(false);
        self.scratch_moves.clear();
    }

    /// Makes `n` steps, measuring every observable after every `thin`-th step
    /// (⌊n/thin⌋ measurements), and returns the record.
    pub fn run(
        &mut self,
        n: usize,
        thin: usize,
        observables: &mut [Box<dyn Observable>],
    ) -> Result<ChainRecord> {
        let names = observables.iter().map(|o| o.name().to_string()).collect();
        let components: Vec<usize> = observables.iter().map(|o| o.components()).collect();
        let n_meas = n / thin.max(1);
        let mut measurements: Vec<Vec<f64>> = components
            .iter()
            .map(|&c| Vec::with_capacity(n_meas * c))
            .collect();
        let mut record = self.run_with(n, thin, |state| {
            for ((obs, series), &c) in observables
                .iter_mut()
                .zip(measurements.iter_mut())
                .zip(&components)
            {
                let at = series.len();
                series.resize(at + c, 0.0);
                obs.measure(&state.phi, &mut series[at..]);
            }
            Ok(())
        })?;
        record.names = names;
        record.components = components;
        record.measurements = measurements;
        Ok(record)
    }

    /// Makes `n` steps and calls `measure` with the state after every `thin`-th step; the
    /// record holds the move history (and no observables). An error from `measure` stops the
    /// run and is returned.
    pub fn run_with<F>(&mut self, n: usize, thin: usize, mut measure: F) -> Result<ChainRecord>
    where
        F: FnMut(&State) -> Result<()>,
    {
        if thin == 0 {
            return Err(Error::param("thin", "must be at least 1"));
        }
        let start = Instant::now();
        let mut moves = Vec::with_capacity(n);
        let mut moves_per_step = Vec::with_capacity(n);
        for i in 1..=n {
            let before = moves.len();
            self.kernel.step(&mut self.state, &mut self.rng, &mut moves);
            moves_per_step.push(u32::try_from(moves.len() - before).unwrap_or(u32::MAX));
            if i % thin == 0 {
                measure(&self.state)?;
            }
        }
        Ok(ChainRecord {
            names: Vec::new(),
            components: Vec::new(),
            measurements: Vec::new(),
            moves,
            moves_per_step,
            steps: n,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel, mutably (e.g. to change a step size between runs).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Takes the chain apart into kernel, state and generator.
    pub fn into_parts(self) -> (K, State, SimRng) {
        (self.kernel, self.state, self.rng)
    }
}
