//! Local Metropolis: sweeps over the sites proposing φ_x + δ·u with u ~ U(−1, 1), accepted
//! with min(1, e^{−ΔS}) from the action's local change, in sequential, random or
//! checkerboard order; δ adapts towards a target acceptance while thermalising.

use std::sync::Arc;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::action::{Action, Checkerboard};
use crate::error::{Error, Result, ensure_finite};
use crate::kernel::{MoveDetail, MoveInfo, MoveLabel, Proposal, State};
use crate::rng::SimRng;

/// The order in which a sweep visits the sites (runcards and the command line name them
/// `sequential`, `random`, `checkerboard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepOrder {
    /// Sites 0, 1, …, |Λ|−1.
    #[default]
    Sequential,
    /// A fresh random permutation of the sites for every sweep.
    Random,
    /// Every even site, then every odd site, line by line along the last axis, with the
    /// random numbers of a line drawn in one go ([`Checkerboard`]); vectorised for φ⁴ and
    /// the free field in two dimensions. Needs every extent even.
    Checkerboard,
}

/// Smallest and largest step size the adaptation may reach.
const STEP_SIZE_RANGE: (f64, f64) = (1e-8, 1e8);

/// Sweeps between exact recomputations of the cached action [`State::action`].
pub const ACTION_REFRESH_INTERVAL: u32 = 16;

/// Single-site Metropolis updates; one step is one sweep of |Λ|·hits proposals, in the
/// [`SweepOrder`] chosen (sequential by default). The checkerboard order goes through
/// [`Action::checkerboard_sweep`], vectorised for φ⁴ in two dimensions.
///
/// A sweep updates [`State::action`] by the summed ΔS of its accepted proposals and, every
/// [`ACTION_REFRESH_INTERVAL`] sweeps, recomputes it from the field, so that the rounding
/// errors of the sums cannot accumulate over a long chain.
///
/// While adapting, after each sweep log δ moves by γ_t·(acceptance − target) with the
/// decaying gain γ_t = (1 + t/10)^(−0.6), t counting sweeps since adaptation was switched on.
pub struct LocalMetropolis<A: Action> {
    action: Arc<A>,
    step_size: f64,
    hits: u32,
    order: SweepOrder,
    target_acceptance: f64,
    adapting: bool,
    adaptation_steps: u32,
    sweeps_since_refresh: u32,
    permutation: Vec<usize>,
    /// The layout and buffers of the checkerboard order, when it is the order.
    board: Option<Checkerboard>,
    label: MoveLabel,
}

impl<A: Action> LocalMetropolis<A> {
    /// A sequential-sweep kernel with proposal half-width δ = `step_size` (> 0), one hit
    /// per site and target acceptance 0.5.
    pub fn new(action: Arc<A>, step_size: f64) -> Result<Self> {
        ensure_finite("step_size", step_size)?;
        if step_size <= 0.0 {
            return Err(Error::param(
                "step_size",
                format!("must be positive, got {step_size}"),
            ));
        }
        let v = action.lattice().volume();
        if v > u32::MAX as usize {
            return Err(Error::param(
                "lattice",
                "too many sites for one sweep record",
            ));
        }
        Ok(LocalMetropolis {
            action,
            step_size,
            hits: 1,
            order: SweepOrder::Sequential,
            target_acceptance: 0.5,
            adapting: false,
            adaptation_steps: 0,
            sweeps_since_refresh: 0,
            permutation: (0..v).collect(),
            board: None,
            label: MoveLabel::new("local"),
        })
    }

    /// Records the kernel's moves under `label` (default `local`).
    pub fn with_label(mut self, label: MoveLabel) -> Self {
        self.label = label;
        self
    }

    /// Sets the sweep order; [`SweepOrder::Checkerboard`] on a lattice with an odd extent is
    /// an error naming `sweep_order` and the extents.
    pub fn with_order(mut self, order: SweepOrder) -> Result<Self> {
        self.board = match order {
            SweepOrder::Checkerboard => Some(Checkerboard::new(self.action.lattice())?),
            SweepOrder::Sequential | SweepOrder::Random => None,
        };
        self.order = order;
        Ok(self)
    }

    /// The sweep order.
    pub fn order(&self) -> SweepOrder {
        self.order
    }

    /// Sets the number of successive proposals at each site per sweep (≥ 1).
    pub fn with_hits(mut self, hits: u32) -> Result<Self> {
        let total = (hits as u64) * self.permutation.len() as u64;
        if hits == 0 || total > u32::MAX as u64 {
            return Err(Error::param(
                "hits",
                format!("must be at least 1 and keep hits·|Λ| below 2^32, got {hits}"),
            ));
        }
        self.hits = hits;
        Ok(self)
    }

    /// Sets the acceptance the step size adapts towards (strictly between 0 and 1).
    pub fn with_target_acceptance(mut self, target: f64) -> Result<Self> {
        if !(target > 0.0 && target < 1.0) {
            return Err(Error::param(
                "target_acceptance",
                format!("must lie in (0, 1), got {target}"),
            ));
        }
        self.target_acceptance = target;
        Ok(self)
    }

    /// The current proposal half-width δ.
    pub fn step_size(&self) -> f64 {
        self.step_size
    }

    /// The action the kernel samples.
    pub fn action(&self) -> &A {
        &self.action
    }

    /// log A(φ → φ') = min(0, −ΔS) for moving `site` to `new`: the kernel's own
    /// acceptance code.
    #[inline]
    pub fn log_acceptance(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        (-self.action.delta_local(phi, site, new)).min(0.0)
    }

    /// log q(new | old) of the single-site proposal: −log 2δ inside (old − δ, old + δ),
    /// −∞ outside.
    pub fn log_proposal_density(&self, old: f64, new: f64) -> f64 {
        if (new - old).abs() < self.step_size {
            -(2.0 * self.step_size).ln()
        } else {
            f64::NEG_INFINITY
        }
    }
}

impl<A: Action> Proposal for LocalMetropolis<A> {
    fn name(&self) -> String {
        let order = match self.order {
            SweepOrder::Sequential => "",
            SweepOrder::Random => ", order=random",
            SweepOrder::Checkerboard => ", order=checkerboard",
        };
        format!(
            "local(delta={:.4}, hits={}{order})",
            self.step_size, self.hits
        )
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if self.order == SweepOrder::Random {
            let n = self.permutation.len();
            for i in (1..n).rev() {
                let j = rng.random_range(0..=i);
                self.permutation.swap(i, j);
            }
        }
        let step_size = self.step_size;
        self.sweeps_since_refresh += 1;
        let refresh = self.sweeps_since_refresh >= ACTION_REFRESH_INTERVAL;
        if refresh {
            self.sweeps_since_refresh = 0;
        }
        let action = &*self.action;
        let (permutation, hits, board) = (&self.permutation, self.hits, &mut self.board);
        let tally = state.change(|phi, s| {
            let tally = match board {
                Some(board) => action.checkerboard_sweep(phi, board, step_size, hits, rng),
                None => {
                    action.metropolis_sweep(phi, permutation, hits, rng, |old, rng: &mut SimRng| {
                        old + step_size * (2.0 * rng.random::<f64>() - 1.0)
                    })
                }
            };
            if refresh {
                *s = action.action(phi);
            } else {
                *s += tally.delta_action;
            }
            tally
        });
        let accepted = tally.accepted;
        let proposed = self.hits * self.permutation.len() as u32;
        if self.adapting {
            // Robbins–Monro on log δ with a decaying gain: fast at first, then settling so
            // that the final δ does not carry the noise of the last few sweeps.
            let rate = accepted as f64 / proposed as f64;
            let gain = (1.0 + self.adaptation_steps as f64 / 10.0).powf(-0.6);
            self.adaptation_steps = self.adaptation_steps.saturating_add(1);
            let factor = (gain * (rate - self.target_acceptance)).exp();
            self.step_size = (self.step_size * factor).clamp(STEP_SIZE_RANGE.0, STEP_SIZE_RANGE.1);
        }
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed,
            accepted,
            detail: MoveDetail::LocalSweep {
                delta_action: tally.delta_action,
                step_size,
            },
        });
    }

    /// Switching adaptation on restarts the gain schedule; a chain does so once for its whole
    /// thermalisation.
    fn set_adapting(&mut self, on: bool) {
        if on && !self.adapting {
            self.adaptation_steps = 0;
        }
        self.adapting = on;
    }
}
