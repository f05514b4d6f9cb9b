//! Flow sampling that recycles every proposal: a multiple-proposal independence chain whose
//! measurements are averaged over each block of proposals (Rao–Blackwellised).
//!
//! Each block draws N proposals φ₁ … φ_N from the flow. With the chain's current state φ₀
//! they form a set of N + 1 configurations with weights w_i = e^{−S(φ_i)} / p̃(φ_i). When φ₀
//! is distributed as e^{−S} and the proposals as p̃, the set does not tell which of its
//! members came from e^{−S}: given the set, it is member i with probability
//! w_i / Σ_j w_j. Hence
//!
//! - the next state, drawn from the set with these probabilities, is again distributed as
//!   e^{−S} (a Markov chain that leaves e^{−S} invariant for any flow: multiple-proposal
//!   Metropolis–Hastings with a Gibbs draw of the index), and
//! - the block average Ō = Σ_i w_i O(φ_i) / Σ_i w_i, the expectation of O at that draw
//!   given the set, has expectation ⟨O⟩ exactly in a stationary chain.
//!
//! The independence sampler keeps one proposal and discards the others it rejects; here
//! every proposal enters with its conditional weight, and the variance of a mean approaches
//! that of importance sampling with the same proposals. The block averages form the series
//! the Γ-method analyses (they are correlated only through the carried state). How many
//! independent configurations a run is worth follows from the error: τ_eff = n σ²_Ō / (2
//! Var(O)) over its n proposals, with Var(O) = ⟨O²⟩ − ⟨O⟩² estimated from the block averages
//! of O² — the τ_int of a chain of n steps that had the same error.

use std::time::Instant;

use rand::RngExt;
use serde::Serialize;

use crate::action::Action;
use crate::control::{Metric, Observer, StopToken};
use crate::error::{Error, Result};
use crate::flow::{Flow, ensure_same_lattice};
use crate::kernel::flow::FlowBatch;
use crate::observable::{Measurements, NamedEstimate, Summary};
use crate::rng::rng_from_seed;
use crate::stats::{MIN_REPLICA_LEN, ess_fraction, gamma_method, pareto_k_hat};

/// The primary quantities whose τ_eff a recycled run reports.
pub const RECYCLED_PRIMARIES: [&str; 5] = ["phi2", "m", "abs_m", "m2", "energy"];

/// The quantities whose largest τ_eff sets the cost of an independent configuration (those
/// a study's analysis uses by default: m itself, whose τ in a Z2-symmetric chain measures
/// tunnelling, is left out).
pub const RECYCLED_COST_OBSERVABLES: [&str; 4] = ["abs_m", "m2", "phi2", "energy"];

/// How long a recycled run is, in blocks of proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RecycledPlan {
    /// Proposals per block, N (at least 1).
    pub block: usize,
    /// Measured blocks (at least 2, so that the Γ-method has a series).
    pub blocks: usize,
    /// Thermalisation blocks before them (not measured).
    pub therm: usize,
}

/// The effective autocorrelation time of one quantity in a recycled run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EffectiveTau {
    /// The quantity.
    pub name: String,
    /// τ_eff = n σ² / (2 Var), n the measured proposals.
    pub tau_eff: f64,
    /// The error of `tau_eff` from that of σ (2 τ_eff δσ/σ).
    pub tau_eff_err: f64,
    /// Var(O) = ⟨O²⟩ − ⟨O⟩² under e^{−S}.
    pub variance: f64,
}

/// What a recycled run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RecycledRun {
    /// The plan the run followed (`blocks` as asked; see `measured_blocks`).
    pub plan: RecycledPlan,
    /// Blocks measured (fewer than asked when a stop ended the run).
    pub measured_blocks: usize,
    /// Γ-method estimates of the standard quantities (those of
    /// [`Measurements::summarise`]) from the block averages; `m_positive` is the weighted
    /// fraction of configurations with m > 0.
    pub summary: Summary,
    /// τ_eff of each of [`RECYCLED_PRIMARIES`] that was estimated.
    pub taus: Vec<EffectiveTau>,
    /// The fraction of blocks whose next state is a new proposal (the carried state left).
    pub moved: f64,
    /// Effective sample size per proposal of all measured proposals' weights, in (0, 1].
    pub ess: f64,
    /// Pareto k̂ of the measured proposals' weight tail (NaN when too few).
    pub pareto_k: f64,
    /// Proposals whose weight was not finite (never drawn, weight 0).
    pub non_finite: usize,
    /// Wall-clock seconds of the measured blocks.
    pub wall_seconds: f64,
    /// True when a stop ended the run early.
    pub interrupted: bool,
}

impl RecycledRun {
    /// Measured proposals.
    pub fn proposals(&self) -> usize {
        self.measured_blocks * self.plan.block
    }

    /// The largest τ_eff of [`RECYCLED_COST_OBSERVABLES`] and its quantity.
    pub fn tau_max(&self) -> Option<&EffectiveTau> {
        self.taus
            .iter()
            .filter(|t| {
                t.tau_eff.is_finite() && RECYCLED_COST_OBSERVABLES.contains(&t.name.as_str())
            })
            .max_by(|a, b| a.tau_eff.total_cmp(&b.tau_eff))
    }

    /// Seconds per independent configuration, 2 τ_eff,max × seconds per proposal, and its
    /// error (from that of τ_eff,max); NaN when undefined.
    pub fn cost_per_independent(&self) -> (f64, f64) {
        match self.tau_max() {
            Some(t) if self.proposals() > 0 => {
                let per_proposal = self.wall_seconds / self.proposals() as f64;
                (
                    2.0 * t.tau_eff * per_proposal,
                    2.0 * t.tau_eff_err * per_proposal,
                )
            }
            _ => (f64::NAN, f64::NAN),
        }
    }
}

/// Runs the recycled chain of `flow` for `action` (see the module documentation) with a
/// generator seeded by `seed`: `plan.therm` blocks from a start drawn from the first block
/// alone (importance resampling), then `plan.blocks` measured blocks. `observer` sees the
/// stages `thermalise` and `measure` (in blocks); `stop` is checked between blocks.
pub fn recycled_sampling<F: Flow + ?Sized, A: Action + ?Sized>(
    flow: &F,
    action: &A,
    plan: &RecycledPlan,
    seed: u64,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<RecycledRun> {
    if plan.block == 0 {
        return Err(Error::param("block", "a block needs at least 1 proposal"));
    }
    if plan.blocks < MIN_REPLICA_LEN {
        return Err(Error::param(
            "blocks",
            format!(
                "{} measured blocks; at least {MIN_REPLICA_LEN} are needed for an error",
                plan.blocks
            ),
        ));
    }
    ensure_same_lattice(flow, action)?;
    let lattice = action.lattice().clone();
    let volume = lattice.volume();
    let n = plan.block;
    let mut rng = rng_from_seed(seed);
    let mut draws = FlowBatch::new(n, volume);
    let mut measurements = Measurements::new(&lattice);
    let names: Vec<String> = measurements.names().to_vec();
    let m_index = names.iter().position(|x| x == "m").unwrap_or(0);
    let k = names.len();
    // Slot 0 is the current state, slots 1..=n the block's proposals; the current state
    // is carried by its log-weight and measured values.
    let mut row = vec![0.0f64; volume];
    let mut values = vec![0.0f64; (n + 1) * k];
    let mut log_w = vec![f64::NEG_INFINITY; n + 1];
    let mut weights = vec![0.0f64; n + 1];
    let mut one = Vec::with_capacity(k);
    let mut series: Vec<Vec<f64>> = (0..k).map(|_| Vec::with_capacity(plan.blocks)).collect();
    let mut second = vec![0.0f64; k];
    let mut positive = Vec::with_capacity(plan.blocks);
    let mut all_log_w = Vec::with_capacity(plan.blocks.saturating_mul(n).min(1 << 26));
    let mut non_finite = 0usize;
    let mut moved = 0usize;
    let mut block_sum = vec![0.0f64; k];

    let total = plan.therm + plan.blocks;
    let mut done = 0usize;
    let mut interrupted = false;
    let mut wall = 0.0f64;
    if plan.therm > 0 {
        observer.begin("thermalise", plan.therm as u64, "blocks");
    }
    while done < total {
        if stop.is_stopped() {
            interrupted = true;
            break;
        }
        if done == plan.therm {
            if plan.therm > 0 {
                observer.end("done");
            }
            observer.begin("measure", plan.blocks as u64, "blocks");
        }
        let measuring = done >= plan.therm;
        let clock = Instant::now();
        // The block's proposals, their weights and their measurements.
        let generated = draws.generate(flow, &mut rng).is_ok();
        for i in 1..=n {
            let mut lw = f64::NEG_INFINITY;
            if generated {
                for (o, &x) in row.iter_mut().zip(draws.generated.row(i - 1).iter()) {
                    *o = f64::from(x);
                }
                let w = -action.action(&row) - draws.log_density(i - 1);
                if w.is_finite() && measurements.measure_into(&row, &mut one).is_ok() {
                    values[i * k..(i + 1) * k].copy_from_slice(&one);
                    lw = w;
                }
            }
            if !lw.is_finite() && measuring {
                non_finite += 1;
            }
            log_w[i] = lw;
            if measuring {
                all_log_w.push(lw);
            }
        }
        let top = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if top == f64::NEG_INFINITY {
            return Err(Error::NonFinite(
                "the weights of a whole block of flow proposals (and of the current state)".into(),
            ));
        }
        let mut total_weight = 0.0;
        for (w, &lw) in weights.iter_mut().zip(&log_w) {
            *w = (lw - top).exp();
            total_weight += *w;
        }
        if measuring {
            block_sum.fill(0.0);
            let mut block_positive = 0.0;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let v = &values[i * k..(i + 1) * k];
                for (s, &x) in block_sum.iter_mut().zip(v) {
                    *s += w * x;
                }
                for (s, &x) in second.iter_mut().zip(v) {
                    *s += w * x * x / total_weight;
                }
                if v[m_index] > 0.0 {
                    block_positive += w;
                }
            }
            for (s, &b) in series.iter_mut().zip(&block_sum) {
                s.push(b / total_weight);
            }
            positive.push(block_positive / total_weight);
        }
        // The next state: member i of the set with probability w_i / Σ w.
        let mut u = rng.random::<f64>() * total_weight;
        let mut next = n;
        for (i, &w) in weights.iter().enumerate() {
            if u < w {
                next = i;
                break;
            }
            u -= w;
        }
        while weights[next] == 0.0 {
            next -= 1;
        }
        // The first block has no current state (weight 0): its draw starts the chain.
        let had_state = log_w[0] > f64::NEG_INFINITY;
        if next != 0 {
            if measuring && had_state {
                moved += 1;
            }
            values.copy_within(next * k..(next + 1) * k, 0);
            log_w[0] = log_w[next];
        }
        done += 1;
        if measuring {
            wall += clock.elapsed().as_secs_f64();
            let measured = done - plan.therm;
            observer.progress(
                measured as u64,
                &[Metric::new("moved", moved as f64 / measured as f64)],
            );
        } else {
            observer.progress(done as u64, &[]);
        }
    }
    observer.end(if interrupted { "stopped" } else { "done" });
    let measured_blocks = done.saturating_sub(plan.therm);
    if measured_blocks < MIN_REPLICA_LEN {
        return Err(Error::param(
            "blocks",
            format!(
                "stopped after {measured_blocks} measured blocks; at least {MIN_REPLICA_LEN} \
                 are needed for an error"
            ),
        ));
    }
    let replayed = Measurements::from_series(&lattice, names.clone(), series)?;
    let mut summary = replayed.summary()?;
    // The fraction of configurations with m > 0, weighted as every other average.
    summary.estimates.retain(|e| e.name != "m_positive");
    summary.failures.retain(|e| e.name != "m_positive");
    match gamma_method(&positive) {
        Ok(estimate) => summary.estimates.push(NamedEstimate {
            name: "m_positive".into(),
            estimate,
        }),
        Err(e) => summary.failures.push(crate::observable::Failure {
            name: "m_positive".into(),
            reason: e.to_string(),
        }),
    }
    let proposals = (measured_blocks * n) as f64;
    let taus = RECYCLED_PRIMARIES
        .iter()
        .filter_map(|&name| {
            let estimate = summary.get(name)?;
            let index = names.iter().position(|x| x == name)?;
            let variance = second[index] / measured_blocks as f64 - estimate.mean * estimate.mean;
            let tau_eff = proposals * estimate.err * estimate.err / (2.0 * variance);
            Some(EffectiveTau {
                name: name.to_string(),
                tau_eff,
                tau_eff_err: 2.0 * tau_eff * estimate.err_err / estimate.err,
                variance,
            })
        })
        .collect();
    let finite: Vec<f64> = all_log_w
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    Ok(RecycledRun {
        plan: *plan,
        measured_blocks,
        summary,
        taus,
        moved: moved as f64 / measured_blocks as f64,
        ess: ess_fraction(&all_log_w).unwrap_or(f64::NAN),
        pareto_k: pareto_k_hat(&finite).unwrap_or(f64::NAN),
        non_finite,
        wall_seconds: wall,
        interrupted,
    })
}
