//! Composite kernels: a [`Cycle`] runs two kernels in turn, a [`Mixture`] picks one at
//! random, a [`Repeat`] runs one kernel k times. Each is again a kernel, so they nest, and
//! each leaves e^{−S} invariant when its parts do. Their parts may be concrete kernels or
//! boxed ones (`Box<dyn Proposal>`), as built from a [`KernelExpr`](super::KernelExpr).

use rand::RngExt;

use crate::error::{Error, Result};
use crate::kernel::{MoveInfo, Proposal, State};
use crate::rng::SimRng;

/// One step of `first`, then one step of `second`.
pub struct Cycle<A, B> {
    /// The kernel applied first.
    pub first: A,
    /// The kernel applied second.
    pub second: B,
}

impl<A: Proposal, B: Proposal> Cycle<A, B> {
    /// The cycle `first` then `second`.
    pub fn new(first: A, second: B) -> Self {
        Cycle { first, second }
    }
}

impl<A: Proposal, B: Proposal> Proposal for Cycle<A, B> {
    fn name(&self) -> String {
        format!("cycle({}, {})", self.first.name(), self.second.name())
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        self.first.step(state, rng, moves);
        self.second.step(state, rng, moves);
    }

    fn set_adapting(&mut self, on: bool) {
        self.first.set_adapting(on);
        self.second.set_adapting(on);
    }
}

/// A step of `first` with probability p, otherwise a step of `second`.
pub struct Mixture<A, B> {
    first: A,
    second: B,
    probability: f64,
}

impl<A: Proposal, B: Proposal> Mixture<A, B> {
    /// The mixture choosing `first` with probability `probability` ∈ [0, 1].
    pub fn new(first: A, second: B, probability: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(Error::param(
                "probability",
                format!("must lie in [0, 1], got {probability}"),
            ));
        }
        Ok(Mixture {
            first,
            second,
            probability,
        })
    }

    /// The probability of choosing the first kernel.
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The two kernels.
    pub fn parts(&self) -> (&A, &B) {
        (&self.first, &self.second)
    }

    /// The two kernels, mutably.
    pub fn parts_mut(&mut self) -> (&mut A, &mut B) {
        (&mut self.first, &mut self.second)
    }
}

impl<A: Proposal, B: Proposal> Proposal for Mixture<A, B> {
    fn name(&self) -> String {
        format!(
            "mixture({} with p={}, {})",
            self.first.name(),
            self.probability,
            self.second.name()
        )
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if rng.random::<f64>() < self.probability {
            self.first.step(state, rng, moves);
        } else {
            self.second.step(state, rng, moves);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        self.first.set_adapting(on);
        self.second.set_adapting(on);
    }
}

/// `times` successive steps of one kernel.
pub struct Repeat<K> {
    /// The repeated kernel.
    pub kernel: K,
    times: usize,
}

impl<K: Proposal> Repeat<K> {
    /// `times` (≥ 1) steps of `kernel` per step.
    pub fn new(kernel: K, times: usize) -> Result<Self> {
        if times == 0 {
            return Err(Error::param("times", "must be at least 1"));
        }
        Ok(Repeat { kernel, times })
    }

    /// How many steps of the inner kernel one step makes.
    pub fn times(&self) -> usize {
        self.times
    }
}

impl<K: Proposal> Proposal for Repeat<K> {
    fn name(&self) -> String {
        format!("{}x{}", self.times, self.kernel.name())
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        for _ in 0..self.times {
            self.kernel.step(state, rng, moves);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        self.kernel.set_adapting(on);
    }
}
