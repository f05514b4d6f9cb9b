//! Ensembles of chains advanced in lockstep: every chain makes one step of its kernel
//! expression at a time, level by level, so that what the flow computes for one chain —
//! the log-density of a state another kernel changed — is computed for all of them in one
//! batched pass. A single [`Chain`](super::Chain) is an ensemble of one.
//!
//! The ensemble kernel of an expression mirrors its tree: a [`PerChain`] leaf holds one
//! kernel per chain, a [`FlowLeaf`] holds one flow proposal per chain and evaluates the
//! stale states of all of them together, and [`EnsembleCycle`], [`EnsembleRepeat`] and
//! [`EnsembleMixture`] compose them. Every chain draws from its own random stream in the
//! same order as it would alone.

use std::sync::Arc;

use ndarray::{Array1, Array2};
use rand::RngExt;

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{Flow, FlowScratch};
use crate::kernel::expr::Combinators;
use crate::kernel::{FlowProposal, KernelExpr, MoveInfo, MoveLabel, Proposal, State};
use crate::rng::SimRng;

/// One chain of an ensemble: its state and its random stream.
#[derive(Clone, Debug)]
pub struct Member {
    /// The chain's state.
    pub state: State,
    /// The chain's random stream.
    pub rng: SimRng,
}

/// A kernel that advances chains of an ensemble in lockstep.
///
/// `step` advances the chains whose indices are in `active` (ascending) by one step each,
/// appending each chain's move records to its own list in `moves`. Sealed: ensembles are
/// built from [`Proposal`]s (through [`PerChain`] or a kernel expression), which users
/// implement.
pub trait EnsembleKernel: Send + crate::sealed::EnsembleKernel {
    /// One step of every active chain.
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]);

    /// Switches step-size adaptation on (thermalisation) or off (measurement).
    fn set_adapting(&mut self, _on: bool) {}
}

impl<K: EnsembleKernel + ?Sized> crate::sealed::EnsembleKernel for Box<K> {}

impl<K: EnsembleKernel + ?Sized> EnsembleKernel for Box<K> {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        (**self).step(active, members, moves)
    }

    fn set_adapting(&mut self, on: bool) {
        (**self).set_adapting(on)
    }
}

/// One kernel per chain, each stepping its own chain.
pub struct PerChain<K: Proposal> {
    /// The kernels, one per chain.
    pub kernels: Vec<K>,
}

impl<K: Proposal> crate::sealed::EnsembleKernel for PerChain<K> {}

impl<K: Proposal> EnsembleKernel for PerChain<K> {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        for &i in active {
            let member = &mut members[i];
            self.kernels[i].step(&mut member.state, &mut member.rng, &mut moves[i]);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        for k in &mut self.kernels {
            k.set_adapting(on);
        }
    }
}

/// One flow proposal per chain, with the log-weights of the chains' current states computed
/// in one batched inverse pass whenever other kernels changed them.
pub struct FlowLeaf<F: Flow + ?Sized, A: Action + ?Sized> {
    proposals: Vec<FlowProposal<F, A>>,
    flow: Arc<F>,
    rows: Array2<f32>,
    log_p: Array1<f64>,
    stale: Vec<usize>,
    scratch: FlowScratch,
}

impl<F: Flow + ?Sized, A: Action + ?Sized> FlowLeaf<F, A> {
    /// The leaf of `proposals`, one per chain, all drawing from `flow`.
    pub fn new(flow: Arc<F>, proposals: Vec<FlowProposal<F, A>>) -> Result<Self> {
        if proposals.is_empty() {
            return Err(Error::param(
                "chains",
                "an ensemble needs at least one chain",
            ));
        }
        let volume = flow.lattice().volume();
        let m = proposals.len();
        Ok(FlowLeaf {
            proposals,
            flow,
            rows: Array2::zeros((m, volume)),
            log_p: Array1::zeros(m),
            stale: Vec::with_capacity(m),
            scratch: FlowScratch::new(),
        })
    }

    /// Computes log w of every active chain whose state changed since its proposal last
    /// saw it, in one pass over those rows.
    fn refresh(&mut self, active: &[usize], members: &[Member]) {
        self.stale.clear();
        self.stale.extend(
            active
                .iter()
                .copied()
                .filter(|&i| self.proposals[i].is_stale(&members[i].state)),
        );
        let k = self.stale.len();
        if k == 0 {
            return;
        }
        let volume = self.rows.ncols();
        for (row, &i) in self.stale.iter().enumerate() {
            let phi = members[i].state.phi();
            if phi.len() != volume {
                continue;
            }
            for (o, &x) in self.rows.row_mut(row).iter_mut().zip(phi) {
                *o = x as f32;
            }
        }
        let rows = self.rows.slice(ndarray::s![..k, ..]);
        let log_p = self.log_p.slice_mut(ndarray::s![..k]);
        let ok = self
            .flow
            .log_density_into(rows, log_p, &mut self.scratch)
            .is_ok();
        for (row, &i) in self.stale.iter().enumerate() {
            let state = &members[i].state;
            // A state the flow cannot evaluate has log w = NaN: any finite proposal replaces it.
            let log_w = if ok && state.phi().len() == volume {
                -state.action() - self.log_p[row]
            } else {
                f64::NAN
            };
            self.proposals[i].set_current_log_weight(state, log_w);
        }
    }
}

impl<F: Flow + ?Sized, A: Action + ?Sized> crate::sealed::EnsembleKernel for FlowLeaf<F, A> {}

impl<F: Flow + ?Sized, A: Action + ?Sized> EnsembleKernel for FlowLeaf<F, A> {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        self.refresh(active, members);
        for &i in active {
            let member = &mut members[i];
            self.proposals[i].step(&mut member.state, &mut member.rng, &mut moves[i]);
        }
    }
}

/// One step of each part in turn.
pub struct EnsembleCycle {
    /// The parts, in order.
    pub parts: Vec<Box<dyn EnsembleKernel>>,
}

impl crate::sealed::EnsembleKernel for EnsembleCycle {}

impl EnsembleKernel for EnsembleCycle {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        for part in &mut self.parts {
            part.step(active, members, moves);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        for part in &mut self.parts {
            part.set_adapting(on);
        }
    }
}

/// `times` steps of one kernel.
pub struct EnsembleRepeat {
    /// The repeated kernel.
    pub kernel: Box<dyn EnsembleKernel>,
    /// Steps per step (at least 1).
    pub times: usize,
}

impl crate::sealed::EnsembleKernel for EnsembleRepeat {}

impl EnsembleKernel for EnsembleRepeat {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        for _ in 0..self.times {
            self.kernel.step(active, members, moves);
        }
    }

    fn set_adapting(&mut self, on: bool) {
        self.kernel.set_adapting(on);
    }
}

/// Per chain, a step of `first` with probability p, otherwise a step of `second`: every
/// chain draws its choice from its own stream, then each part steps the chains that chose it.
pub struct EnsembleMixture {
    first: Box<dyn EnsembleKernel>,
    second: Box<dyn EnsembleKernel>,
    probability: f64,
    chose_first: Vec<usize>,
    chose_second: Vec<usize>,
}

impl EnsembleMixture {
    /// The mixture choosing `first` with probability `probability` ∈ [0, 1].
    pub fn new(
        first: Box<dyn EnsembleKernel>,
        second: Box<dyn EnsembleKernel>,
        probability: f64,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(Error::param(
                "probability",
                format!("must lie in [0, 1], got {probability}"),
            ));
        }
        Ok(EnsembleMixture {
            first,
            second,
            probability,
            chose_first: Vec::new(),
            chose_second: Vec::new(),
        })
    }
}

impl crate::sealed::EnsembleKernel for EnsembleMixture {}

impl EnsembleKernel for EnsembleMixture {
    fn step(&mut self, active: &[usize], members: &mut [Member], moves: &mut [Vec<MoveInfo>]) {
        self.chose_first.clear();
        self.chose_second.clear();
        for &i in active {
            if members[i].rng.random::<f64>() < self.probability {
                self.chose_first.push(i);
            } else {
                self.chose_second.push(i);
            }
        }
        // A chain's own draws come in the order they would alone: its choice, then the
        // chosen kernel's.
        let (first, second) = (
            std::mem::take(&mut self.chose_first),
            std::mem::take(&mut self.chose_second),
        );
        self.first.step(&first, members, moves);
        self.second.step(&second, members, moves);
        self.chose_first = first;
        self.chose_second = second;
    }

    fn set_adapting(&mut self, on: bool) {
        self.first.set_adapting(on);
        self.second.set_adapting(on);
    }
}

/// Makes the ensemble leaf of one occurrence of a name in an expression, given the name
/// and the occurrence's move label.
pub type EnsembleLeafMaker<'a> = dyn FnMut(&str, MoveLabel) -> Result<Box<dyn EnsembleKernel>> + 'a;

impl KernelExpr {
    /// Builds the ensemble kernel of the expression: `leaf(name, label)` makes the leaf of
    /// each occurrence of a name (with the labels of [`KernelExpr::labels`]), and cycles,
    /// repeats and mixtures become [`EnsembleCycle`], [`EnsembleRepeat`] and
    /// [`EnsembleMixture`], as [`KernelExpr::build`] builds one chain's kernel.
    pub fn build_ensemble(
        &self,
        leaf: &mut EnsembleLeafMaker<'_>,
    ) -> Result<Box<dyn EnsembleKernel>> {
        let combine = Combinators::<Box<dyn EnsembleKernel>> {
            cycle: |parts| Ok(Box::new(EnsembleCycle { parts }) as Box<dyn EnsembleKernel>),
            repeat: |kernel, times| {
                Ok(Box::new(EnsembleRepeat { kernel, times }) as Box<dyn EnsembleKernel>)
            },
            mixture: |first, rest, p| Ok(Box::new(EnsembleMixture::new(first, rest, p)?)),
        };
        self.build_labelled(leaf, &combine)
    }
}
