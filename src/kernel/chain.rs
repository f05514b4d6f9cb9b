//! A Markov chain: a kernel, its state and a seeded generator, and the one run loop every
//! sampler in the library goes through ([`Chain::run`]): thermalisation with step-size
//! adaptation, measurement with thinning, every accept/reject recorded in a
//! [`ChainRecord`], progress reported to an [`Observer`] and a [`StopToken`] honoured
//! between blocks of steps.
//!
//! Blocks exist for progress reports and stops only: a run's numbers are the same however
//! its steps are grouped into blocks and however long each block takes.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::{Metric, Observer, StopToken};
use crate::error::{Error, Result};
use crate::kernel::{EnsembleKernel, Member, MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::observable::{Measurements, Observable};
use crate::rng::{SimRng, rng_from_seed};

/// A kernel, the state it moves and the random stream that drives it.
///
/// ```
/// use std::sync::Arc;
/// use latflow::action::Phi4;
/// use latflow::kernel::{Chain, Cycle, Hmc, LocalMetropolis, RunPlan};
/// use latflow::observable::Measurements;
/// use latflow::{Lattice, State, StopToken};
///
/// let lattice = Lattice::hypercubic(2, 8)?;
/// let action = Arc::new(Phi4::hopping(lattice.clone(), 0.576, 0.5)?);
/// let kernel = Cycle::new(
///     LocalMetropolis::new(action.clone(), 1.0)?,
///     Hmc::new(action.clone(), 1.0, 8)?,
/// );
/// let mut chain = Chain::new(kernel, State::zero(&*action), 42);
/// let mut measurements = Measurements::new(&lattice);
/// let plan = RunPlan::new(200).therm(100).thin(2);
/// let record = chain.run(&plan, &mut measurements, &mut (), &StopToken::new())?;
/// assert_eq!(measurements.len(), 100);
/// assert_eq!(record.accept_history("hmc").len(), 200);
/// assert_eq!(record.thermalised, 100);
/// # Ok::<(), latflow::Error>(())
/// ```
pub struct Chain<K: Proposal> {
    kernel: K,
    member: Member,
}

/// How long a run is: `therm` thermalisation steps (adapting step sizes, not recorded),
/// then `n` measured steps with a measurement after every `thin`-th; `block` groups the
/// steps for progress reports and stop checks only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// Thermalisation steps.
    pub therm: usize,
    /// Measured steps (each one step of the kernel).
    pub n: usize,
    /// Measure after every `thin`-th measured step (⌊n/thin⌋ measurements).
    pub thin: usize,
    /// How steps are grouped between progress reports and stop checks.
    pub block: BlockSize,
}

impl RunPlan {
    /// `n` measured steps, no thermalisation, every step measured, automatic blocks.
    pub fn new(n: usize) -> Self {
        RunPlan {
            therm: 0,
            n,
            thin: 1,
            block: BlockSize::Auto,
        }
    }

    /// With `therm` thermalisation steps.
    pub fn therm(mut self, therm: usize) -> Self {
        self.therm = therm;
        self
    }

    /// Measuring after every `thin`-th step.
    pub fn thin(mut self, thin: usize) -> Self {
        self.thin = thin;
        self
    }

    /// With blocks of `block` size.
    pub fn block(mut self, block: BlockSize) -> Self {
        self.block = block;
        self
    }
}

/// How a run groups its steps between progress reports and stop checks. The grouping
/// never changes a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockSize {
    /// Blocks of about a tenth of a second of work each, so that progress is reported and a
    /// stop answered promptly whatever a step costs.
    #[default]
    Auto,
    /// Blocks of this many steps (at least 1).
    Steps(usize),
}

/// The wall time an automatic block aims at.
const BLOCK_TARGET: Duration = Duration::from_millis(100);

/// The block sizes of one run: fixed, or adapted to the wall time of the blocks before.
struct Blocks {
    size: usize,
    adaptive: bool,
}

impl Blocks {
    fn new(block: BlockSize) -> Self {
        match block {
            BlockSize::Auto => Blocks {
                size: 1,
                adaptive: true,
            },
            BlockSize::Steps(k) => Blocks {
                size: k.max(1),
                adaptive: false,
            },
        }
    }

    /// Adapts the size after a block of `steps` took `elapsed`.
    fn adapt(&mut self, steps: usize, elapsed: Duration) {
        if !self.adaptive {
            return;
        }
        if elapsed < BLOCK_TARGET / 2 && steps >= self.size {
            self.size = self.size.saturating_mul(2);
        } else if elapsed > BLOCK_TARGET * 2 {
            self.size = (self.size / 2).max(1);
        }
    }
}

/// What a run does with the state after every `thin`-th measured step.
pub trait Measure {
    /// Measures `state`; an error stops the run and is returned.
    fn measure(&mut self, state: &State) -> Result<()>;
}

impl<F: FnMut(&State) -> Result<()>> Measure for F {
    fn measure(&mut self, state: &State) -> Result<()> {
        self(state)
    }
}

/// Records the standard series of the field (see [`Measurements`]).
impl Measure for Measurements {
    fn measure(&mut self, state: &State) -> Result<()> {
        self.record(state.phi())
    }
}

/// Everything a run produced: measurements and the full move history, with the step
/// boundaries (one kernel step may make several moves, e.g. a cycle `flow+local`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainRecord {
    /// Observable names, in the order given to [`Chain::run_observables`].
    pub names: Vec<String>,
    /// Numbers per measurement of each observable.
    pub components: Vec<usize>,
    /// Per observable, `n_measurements × components` values, measurement-major.
    pub measurements: Vec<Vec<f64>>,
    /// Every move record of the measured steps, in order.
    pub moves: Vec<MoveInfo>,
    /// Per measured step, how many records of `moves` it made (`steps` entries summing to
    /// `moves.len()`).
    pub moves_per_step: Vec<u32>,
    /// Measured steps made.
    pub steps: usize,
    /// Thermalisation steps made before them.
    pub thermalised: usize,
    /// True when a stop ended the run before all its steps were made.
    pub interrupted: bool,
    /// Wall-clock seconds of the measured steps.
    pub wall_seconds: f64,
}

impl ChainRecord {
    /// The record of `steps` measured steps from their moves and step boundaries.
    pub fn from_moves(
        moves: Vec<MoveInfo>,
        moves_per_step: Vec<u32>,
        steps: usize,
        wall_seconds: f64,
    ) -> Self {
        ChainRecord {
            moves,
            moves_per_step,
            steps,
            wall_seconds,
            ..ChainRecord::default()
        }
    }

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

    /// The label of the first move of kind `kind` (a name of
    /// [`MOVE_KINDS`](crate::kernel::MOVE_KINDS), e.g. `flow`), if any was made.
    pub fn first_label_of_kind(&self, kind: &str) -> Option<MoveLabel> {
        self.moves
            .iter()
            .find(|m| m.detail.kind() == kind)
            .map(|m| m.kernel.clone())
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
        self.thermalised += other.thermalised;
        self.interrupted |= other.interrupted;
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

/// Running acceptance per label over the measured steps, for progress reports.
#[derive(Default)]
struct Tallies {
    labels: Vec<(MoveLabel, u64, u64)>,
    names: Vec<String>,
}

impl Tallies {
    fn add(&mut self, moves: &[MoveInfo]) {
        for m in moves {
            match self.labels.iter_mut().find(|(l, _, _)| *l == m.kernel) {
                Some((_, p, a)) => {
                    *p += u64::from(m.proposed);
                    *a += u64::from(m.accepted);
                }
                None => {
                    self.labels
                        .push((m.kernel.clone(), m.proposed.into(), m.accepted.into()));
                    self.names.push(format!("acceptance {}", m.kernel));
                }
            }
        }
    }

    fn metrics(&self) -> Vec<Metric<'_>> {
        self.labels
            .iter()
            .zip(&self.names)
            .map(|((_, p, a), name)| {
                let value = if *p == 0 {
                    f64::NAN
                } else {
                    *a as f64 / *p as f64
                };
                Metric::new(name, value)
            })
            .collect()
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
            member: Member { state, rng },
        }
    }

    /// Runs the chain: `plan.therm` steps with the kernel's adaptation on (one adaptation
    /// schedule for the whole thermalisation), then `plan.n` steps with it off, handing the
    /// state to `measure` after every `plan.thin`-th of them.
    ///
    /// `observer` sees two stages, `thermalise` and `measure` (in steps; the measured
    /// stage's metrics are the acceptance per kernel label so far), after every block of
    /// steps; `stop` is checked between blocks. A stop ends the run early: the record then
    /// covers the measured steps made (`interrupted` set, `thermalised` saying how far
    /// thermalisation got). Block sizes ([`RunPlan::block`]) change neither the steps nor
    /// the measurements: the same seed gives the same record however the run is grouped.
    pub fn run(
        &mut self,
        plan: &RunPlan,
        measure: &mut dyn Measure,
        observer: &mut dyn Observer,
        stop: &StopToken,
    ) -> Result<ChainRecord> {
        let mut one = Single(&mut self.kernel);
        let mut records = run_members(
            &mut one,
            std::slice::from_mut(&mut self.member),
            plan,
            &mut |_, state| measure.measure(state),
            observer,
            stop,
        )?;
        Ok(records.pop().unwrap_or_default())
    }

    /// Makes `n` steps with adaptation on, then switches adaptation off; the moves are
    /// not recorded.
    pub fn thermalise(&mut self, n: usize) {
        let plan = RunPlan {
            n: 0,
            therm: n,
            ..RunPlan::new(0)
        };
        // Without measurements and stops the run cannot fail.
        let _ = self.run(&plan, &mut |_: &State| Ok(()), &mut (), &StopToken::new());
    }

    /// Makes `n` steps and calls `measure` with the state after every `thin`-th step; the
    /// record holds the move history (and no observables). An error from `measure` stops the
    /// run and is returned.
    pub fn run_with<F>(&mut self, n: usize, thin: usize, mut measure: F) -> Result<ChainRecord>
    where
        F: FnMut(&State) -> Result<()>,
    {
        let plan = RunPlan::new(n).thin(thin);
        self.run(&plan, &mut measure, &mut (), &StopToken::new())
    }

    /// Makes `n` steps, measuring every observable after every `thin`-th step
    /// (⌊n/thin⌋ measurements), and returns the record with the measurements.
    pub fn run_observables(
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
                obs.measure(state.phi(), &mut series[at..]);
            }
            Ok(())
        })?;
        record.names = names;
        record.components = components;
        record.measurements = measurements;
        Ok(record)
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.member.state
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
        (self.kernel, self.member.state, self.member.rng)
    }
}

/// One chain's kernel as the kernel of an ensemble of one.
struct Single<'a, K: Proposal>(&'a mut K);

impl<K: Proposal> crate::sealed::EnsembleKernel for Single<'_, K> {}

impl<K: Proposal> EnsembleKernel for Single<'_, K> {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        for &i in active {
            let member = &mut members[i];
            self.0
                .step(&mut member.state, &mut member.rng, &mut moves[i]);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        self.0.set_adapting(on);
    }
}

/// Chains advanced in lockstep by one [`EnsembleKernel`]: M independent chains, each with its
/// own state and random stream, whose flow passes are batched over the chains.
pub struct Ensemble<K: EnsembleKernel> {
    kernel: K,
    members: Vec<Member>,
}

impl<K: EnsembleKernel> Ensemble<K> {
    /// The ensemble of `members` (at least one) moved by `kernel`.
    pub fn new(kernel: K, members: Vec<Member>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::param(
                "chains",
                "an ensemble needs at least one chain",
            ));
        }
        Ok(Ensemble { kernel, members })
    }

    /// Runs every chain as [`Chain::run`] runs one, in lockstep (a step is one step of every
    /// chain); `measure(i, state)` is called for chain i after every `plan.thin`-th step.
    /// Returns one record per chain; their wall seconds are the ensemble's.
    pub fn run(
        &mut self,
        plan: &RunPlan,
        measure: &mut dyn FnMut(usize, &State) -> Result<()>,
        observer: &mut dyn Observer,
        stop: &StopToken,
    ) -> Result<Vec<ChainRecord>> {
        run_members(
            &mut self.kernel,
            &mut self.members,
            plan,
            measure,
            observer,
            stop,
        )
    }

    /// The chains.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }
}

/// The one run loop: thermalisation, then measured steps, of every member in lockstep.
fn run_members(
    kernel: &mut dyn EnsembleKernel,
    members: &mut [Member],
    plan: &RunPlan,
    measure: &mut dyn FnMut(usize, &State) -> Result<()>,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<Vec<ChainRecord>> {
    if plan.thin == 0 {
        return Err(Error::param("thin", "must be at least 1"));
    }
    let m = members.len();
    let all: Vec<usize> = (0..m).collect();
    let mut moves: Vec<Vec<MoveInfo>> = vec![Vec::new(); m];
    let mut records: Vec<ChainRecord> = vec![ChainRecord::default(); m];
    let mut blocks = Blocks::new(plan.block);
    let mut thermalised = 0;
    if plan.therm > 0 {
        observer.begin("thermalise", plan.therm as u64, "steps");
        kernel.set_adapting(true);
        while thermalised < plan.therm && !stop.is_stopped() {
            let k = blocks.size.min(plan.therm - thermalised);
            let start = Instant::now();
            for _ in 0..k {
                moves.iter_mut().for_each(Vec::clear);
                kernel.step(&all, members, &mut moves);
            }
            blocks.adapt(k, start.elapsed());
            thermalised += k;
            observer.progress(thermalised as u64, &[]);
        }
        kernel.set_adapting(false);
        moves.iter_mut().for_each(Vec::clear);
        for r in &mut records {
            r.thermalised = thermalised;
        }
        if thermalised < plan.therm {
            for r in &mut records {
                r.interrupted = true;
            }
            observer.end("stopped");
            return Ok(records);
        }
        observer.end("done");
    }
    if plan.n == 0 {
        return Ok(records);
    }
    observer.begin("measure", plan.n as u64, "steps");
    for (r, mv) in records.iter_mut().zip(&mut moves) {
        r.moves_per_step.reserve(plan.n.min(1 << 24));
        mv.reserve(plan.n.min(1 << 24));
    }
    let mut tallies = Tallies::default();
    let mut seconds = Duration::ZERO;
    let mut steps = 0;
    let mut before = vec![0usize; m];
    let mut interrupted = false;
    while steps < plan.n {
        if stop.is_stopped() {
            interrupted = true;
            break;
        }
        let k = blocks.size.min(plan.n - steps);
        let start = Instant::now();
        let first: Vec<usize> = moves.iter().map(Vec::len).collect();
        for _ in 0..k {
            for (b, mv) in before.iter_mut().zip(&moves) {
                *b = mv.len();
            }
            kernel.step(&all, members, &mut moves);
            steps += 1;
            for ((r, mv), &b) in records.iter_mut().zip(&moves).zip(&before) {
                r.moves_per_step
                    .push(u32::try_from(mv.len() - b).unwrap_or(u32::MAX));
            }
            if steps % plan.thin == 0 {
                for (i, member) in members.iter().enumerate() {
                    measure(i, &member.state)?;
                }
            }
        }
        let elapsed = start.elapsed();
        seconds += elapsed;
        blocks.adapt(k, elapsed);
        for (mv, &f) in moves.iter().zip(&first) {
            tallies.add(&mv[f..]);
        }
        observer.progress(steps as u64, &tallies.metrics());
    }
    for (r, mv) in records.iter_mut().zip(moves) {
        r.moves = mv;
        r.steps = steps;
        r.interrupted = interrupted;
        r.wall_seconds = seconds.as_secs_f64();
    }
    observer.end(if interrupted { "stopped" } else { "done" });
    Ok(records)
}
