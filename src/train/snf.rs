//! Stochastic normalizing flows: a flow's deterministic map followed by the stochastic
//! steps of a non-equilibrium protocol from the action the flow stands for to the target,
//! optionally with some of the flow's layer groups placed between the steps ([`Snf`]),
//! trained end to end by the reverse KL of the whole path (the gradient seeds
//! [`SnfSeeds`]), and evaluated on whole paths ([`evaluate_snf`]).
//!
//! # The work of a path
//!
//! The forward process draws z ~ r and φ₀ = f₀(z) (density q₀, log q₀(φ₀) =
//! log r(z) − log|det ∂f₀/∂z|), then applies in order the protocol's steps t = 1 … n, each
//! a Markov kernel K_t leaving e^{−S_{λ_t}} invariant (S_λ = (1 − λ) S₀ + λ S, λ_t = t/n),
//! and flow layers g placed between them (invertible, deterministic; a layer placed after
//! step t is said to sit at λ_t). The reverse process starts from the target e^{−S}/Z at
//! the end field and undoes every operation in reverse order: a step by its time reversal
//! K̃_t(φ′ → φ) = K_t(φ → φ′) e^{S_{λ_t}(φ′) − S_{λ_t}(φ)}, a layer by g⁻¹. As densities on
//! paths, a layer contributes δ(φ′ − g(φ)) forward and δ(φ − g⁻¹(φ′)) =
//! |det ∂g/∂φ| δ(φ′ − g(φ)) backward, so the ratio of the reverse to the forward path
//! density is e^{−W}/Z with
//!
//! W = S(φ_end) + log q₀(φ₀) − Σ_steps [S_{λ_t}(φ′) − S_{λ_t}(φ)] − Σ_layers log|det ∂g/∂φ|,
//!
//! each step's bracket its heat (the action change it makes at fixed λ). Writing
//! S(φ_end) − S₀(φ₀) as the sum of every change of the current action S_λ(φ) along the
//! path — at each switch λ_t → λ_{t+1} at fixed φ, at each step and at each layer at fixed
//! λ — the heat cancels, and
//!
//! W = S₀(φ₀) + log q₀(φ₀) + Σ_{t=0}^{n−1} (λ_{t+1} − λ_t) (S − S₀)(φ_t)
//!     + Σ_layers [S_{λ_t}(g(φ)) − S_{λ_t}(φ) − log|det ∂g/∂φ|],
//!
//! φ_t the field the step t + 1 starts from (after step t and the layers that follow it).
//! Without layers the last sum is empty and W is the work of a plain flow start
//! ([`crate::kernel::NoneqEvolution`]). Since the reverse density is normalised,
//! E[e^{−W}] = Z for any f₀, any layers and any parameters θ (Jarzynski's equality: the
//! estimator log Z = log E[e^{−W}] is unbiased in e^{−W} whatever the state of the
//! training), and W is computed from the path actually taken, with the maps' actual
//! log-determinants: the weights e^{−W}, the reweighted estimates and the independence
//! Metropolis test on whole paths ([`crate::kernel::NoneqProposal`]) are exact. By Jensen,
//! E[W] ≥ −log Z, with equality when the two path densities agree: E[W] + log Z is the
//! reverse KL divergence of the extended process, the loss.
//!
//! # Its pathwise gradient
//!
//! The gradient holds the protocol's random numbers fixed: a local Metropolis update moves
//! a site by a shift drawn independently of φ, or not at all, so ∂φ_{t+1}/∂φ_t = 1 almost
//! everywhere. The path falls into stretches: stretch j enters at ψ (φ₀, or the output of
//! the layer group before it) at λ_a, runs the steps a + 1 … b and ends where the next
//! layer group sits (at λ_b) or at the end; its terms
//!
//! W_j = S_{λ_a}(ψ) + Σ_{t=a}^{b−1} (λ_{t+1} − λ_t) (S − S₀)(φ_t) − [a layer follows] S_{λ_b}(φ_b)
//!
//! have the gradient ∇S_{λ_a}(ψ) + Σ_t (λ_{t+1} − λ_t) ∇(S − S₀)(φ_t) − [·] ∇S_{λ_b}(φ_b)
//! with respect to ψ ([`crate::kernel::NoneqPath::segment_with_gradient`]), and W is the
//! sum of the W_j, log q₀(φ₀) and the layers' −log|det|. The training pass
//! ([`crate::flow::TrainableFlow::forward_backward_interleaved`]) seeds each stretch's
//! gradient at the field where it starts; going backward, the cotangent of a stretch's
//! end passes the steps unchanged, then each layer group's backward pass on the tape,
//! which adds the θ-gradient of g and, through the log-det seed −1/N, of its
//! −log|det ∂g/∂φ|, and so on down to f₀ and θ. The estimator ignores the jumps of W where
//! an accept test flips, which biases the gradient (the training) only.
//!
//! With no layers between the steps there is one stretch and the seed of the flow's
//! backward pass is ∂W/∂φ₀ = ∇S₀(φ₀) + Σ_t (λ_{t+1} − λ_t) ∇(S − S₀)(φ_t), where plain
//! training seeds ∇S(φ₀); the log q term is handled as in plain training (log-det seed, or
//! the score for path gradients). With layers between the steps only the total gradient is
//! available (the path gradient is refused).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use ndarray::{ArrayView1, ArrayViewMut1};
use rand::RngExt;

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{ChunkSeed, Flow, FlowFloat, InterleaveSeed, TrainableFlow, ensure_same_lattice};
use crate::kernel::{FlowLayers, NoneqPath, NoneqProtocol, NoneqUpdate};
use crate::rng::{SimRng, splitmix64, stream};
use crate::stats::{ess_fraction, rejection_autocorrelation};
use crate::train::metrics::EvalMetrics;
use crate::train::trainer::EVAL_CHUNK;

/// The stochastic part of a stochastic normalizing flow: a protocol of local updates from
/// the start action S₀ (the action the flow's start map stands for, e.g. φ⁴ at a smaller
/// β) to the trainer's target, and where the flow's last layer groups sit between its
/// steps.
#[derive(Clone)]
pub struct Snf {
    /// The protocol (local updates only: see [`NoneqPath::forward_with_gradient`]).
    pub protocol: NoneqProtocol,
    /// S₀, on the target's lattice.
    pub start: Arc<dyn Action>,
    /// The steps after which the flow's last `layers_after.len()` layer groups sit, in
    /// order (nondecreasing, each at most the number of steps; 0: before the first step);
    /// the flow's other groups form the start map f₀. Empty: the whole flow comes first.
    pub layers_after: Vec<usize>,
}

impl Snf {
    /// Checks the protocol (at least one step, local updates with a positive step size),
    /// the layers' positions ([`NoneqProtocol::check_layers_after`]) and that S₀ lives on
    /// `target`'s lattice.
    pub fn validate<A: Action + ?Sized>(&self, target: &A) -> Result<()> {
        self.protocol.validate()?;
        if let NoneqUpdate::Hmc { .. } = self.protocol.update {
            return Err(Error::param(
                "snf",
                "a stochastic normalizing flow is trained with local updates only (the \
                 pathwise gradient needs ∂φ_t/∂φ₀ = 1, which an HMC trajectory does not give)",
            ));
        }
        self.protocol.check_layers_after(&self.layers_after)?;
        if self.start.lattice() != target.lattice() {
            return Err(Error::Incompatible(format!(
                "the SNF's start action is for a {} lattice, the target for {}",
                self.start.lattice(),
                target.lattice()
            )));
        }
        Ok(())
    }

    /// The positions of layer groups placed after every `every` steps of a protocol of
    /// `steps` steps: after steps every, 2·every, …, up to `steps` (⌊steps/every⌋ groups;
    /// none for `every` = 0).
    pub fn every(every: usize, steps: usize) -> Vec<usize> {
        if every == 0 {
            return Vec::new();
        }
        (1..=steps / every).map(|j| j * every).collect()
    }

    /// Number of layer groups between the steps.
    pub fn interleaved(&self) -> usize {
        self.layers_after.len()
    }

    /// The steps of stretch `j` (0 … [`Snf::interleaved`]) and whether a layer group
    /// follows it.
    fn stretch(&self, j: usize) -> (Range<usize>, bool) {
        let k = self.layers_after.len();
        let from = if j == 0 { 0 } else { self.layers_after[j - 1] };
        let to = self
            .layers_after
            .get(j)
            .copied()
            .unwrap_or(self.protocol.steps);
        (from..to, j < k)
    }
}

/// Separates the streams of the protocol's random numbers from the other streams derived
/// from the training seed.
const SNF_SALT: u64 = 0x534E_465F_5041_5448;

/// Separates the streams of the stretches after the first.
const STRETCH_SALT: u64 = 0x5354_5245_5443_4821;

/// The stream of the protocol's random numbers of row `row` in stretch `stretch` at
/// iteration `iteration`.
fn snf_stream(seed: u64, iteration: usize, row: usize, stretch: usize) -> SimRng {
    let mut key = splitmix64(seed ^ SNF_SALT) ^ splitmix64(iteration as u64);
    if stretch > 0 {
        key ^= splitmix64(STRETCH_SALT ^ stretch as u64);
    }
    stream(key, row as u64)
}

/// Per-thread buffers of a stochastic normalizing flow's rows: the evolving field and the
/// gradient with respect to the field entering a stretch.
#[derive(Default)]
struct SnfScratch {
    phi: Vec<f64>,
    grad: Vec<f64>,
}

thread_local! {
    static SNF_SCRATCH: RefCell<SnfScratch> = RefCell::new(SnfScratch::default());
}

/// The gradient seeds of one training iteration of a stochastic normalizing flow, for
/// [`TrainableFlow::forward_backward_interleaved`] (or, without layers between the steps,
/// [`TrainableFlow::forward_backward`]): every row runs each stretch of the protocol with
/// random numbers of its own stream (from the training seed, the iteration, the row and
/// the stretch), adds the stretch's work W_j to its record and seeds ∂W_j/∂ψ / N (see the
/// module notes). The log-det seed −1/N (or the score) is the caller's, as in plain
/// training, so that the records add up to W − log r(z).
pub struct SnfSeeds<'a, A: ?Sized> {
    snf: &'a Snf,
    target: &'a A,
    seed: u64,
    iteration: usize,
    inv_n: f64,
}

impl<'a, A: Action + ?Sized> SnfSeeds<'a, A> {
    /// The seeds of iteration `iteration` of a run seeded with `seed`, for a batch of
    /// `batch` rows.
    pub fn new(snf: &'a Snf, target: &'a A, seed: u64, iteration: usize, batch: usize) -> Self {
        SnfSeeds {
            snf,
            target,
            seed,
            iteration,
            inv_n: 1.0 / batch.max(1) as f64,
        }
    }

    /// At a cut: the stretch before the cut's layer group; the field it ends with replaces
    /// the chunk's φ.
    pub fn between<T: FlowFloat>(&self, cut: InterleaveSeed<'_, T>) {
        let InterleaveSeed {
            cut,
            mut phi,
            mut grad_phi,
            mut record,
            first_row,
        } = cut;
        let volume = phi.ncols();
        let Ok(mut path) = NoneqPath::new(self.snf.protocol, volume) else {
            record.fill(f64::NAN);
            return;
        };
        SNF_SCRATCH.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            for (k, ((mut row, g), r)) in phi
                .outer_iter_mut()
                .zip(grad_phi.outer_iter_mut())
                .zip(record.iter_mut())
                .enumerate()
            {
                *r += self.row(cut, first_row + k, &mut path, scratch, row.view(), g);
                for (o, &x) in row.iter_mut().zip(&scratch.phi) {
                    *o = T::from_f64(x).unwrap_or_else(T::nan);
                }
            }
        });
    }

    /// At the end of the flow: the last stretch of the protocol from the flow's output;
    /// writes ∂L/∂φ and adds W_last − ld to the record (ld the chunk's log-det).
    pub fn end<T: FlowFloat>(&self, chunk: &mut ChunkSeed<'_, T>) {
        let volume = chunk.phi.ncols();
        let last = self.snf.interleaved();
        let Ok(mut path) = NoneqPath::new(self.snf.protocol, volume) else {
            chunk.record.fill(f64::NAN);
            return;
        };
        SNF_SCRATCH.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            for (k, ((row, g), (r, &ld))) in chunk
                .phi
                .outer_iter()
                .zip(chunk.grad_phi.outer_iter_mut())
                .zip(chunk.record.iter_mut().zip(chunk.logdet.iter()))
                .enumerate()
            {
                *r += self.row(last, chunk.first_row + k, &mut path, scratch, row, g) - ld;
            }
        });
    }

    /// Stretch `stretch` of row `row` from the field `phi`: returns W_j, writes ∂W_j/∂ψ / N
    /// into `grad` and leaves the end field in `scratch.phi`; NaN when the protocol fails.
    fn row<T: FlowFloat>(
        &self,
        stretch: usize,
        row: usize,
        path: &mut NoneqPath,
        scratch: &mut SnfScratch,
        phi: ArrayView1<'_, T>,
        mut grad: ArrayViewMut1<'_, T>,
    ) -> f64 {
        scratch.phi.clear();
        scratch
            .phi
            .extend(phi.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)));
        scratch.grad.resize(phi.len(), 0.0);
        let (steps, exit) = self.snf.stretch(stretch);
        let mut rng = snf_stream(self.seed, self.iteration, row, stretch);
        let work = path.segment_with_gradient(
            &*self.snf.start,
            self.target,
            steps,
            exit,
            &mut scratch.phi,
            &mut rng,
            &mut scratch.grad,
        );
        match work {
            Ok(work) => {
                for (o, &d) in grad.iter_mut().zip(&scratch.grad) {
                    *o = T::from_f64(d * self.inv_n).unwrap_or_else(T::nan);
                }
                work
            }
            Err(_) => f64::NAN,
        }
    }
}

/// Tests the stochastic normalizing flow made of `flow` and `snf` against `target` with `n`
/// whole paths: φ₀ drawn [`EVAL_CHUNK`] at a time from the flow (its start map f₀ when
/// layer groups sit between the steps), each evolved through the protocol and the layers
/// with `rng`, log w = −W; then the metrics of [`evaluate_flow`](crate::train::evaluate_flow)
/// (an independence Metropolis chain over the paths in order, ESS fraction, mean and
/// variance of log w, which bound log Z from below, and the fraction of end fields with
/// M > 0).
pub fn evaluate_snf<F: TrainableFlow + ?Sized, A: Action + ?Sized>(
    flow: &F,
    target: &A,
    snf: &Snf,
    n: usize,
    rng: &mut SimRng,
) -> Result<EvalMetrics> {
    check_eval_samples(n)?;
    ensure_same_lattice(flow, target)?;
    snf.validate(target)?;
    if snf.interleaved() == 0 {
        return evaluate_paths(flow, target, snf, FlowLayers::default(), n, rng);
    }
    let cut = flow.interleave(snf.interleaved())?;
    let layers = FlowLayers::new(cut.maps, &snf.layers_after, &snf.protocol)?;
    evaluate_paths(&cut.start, target, snf, layers, n, rng)
}

/// [`evaluate_snf`] with the start map `start` and the layers between the steps `layers`.
fn evaluate_paths<F: Flow + ?Sized, A: Action + ?Sized>(
    start: &F,
    target: &A,
    snf: &Snf,
    mut layers: FlowLayers,
    n: usize,
    rng: &mut SimRng,
) -> Result<EvalMetrics> {
    let volume = target.lattice().volume();
    let mut path = NoneqPath::new(snf.protocol, volume)?;
    let mut log_w = Vec::with_capacity(n);
    let mut positive = 0;
    let mut row = vec![0.0; volume];
    while log_w.len() < n {
        let rows = EVAL_CHUNK.min(n - log_w.len());
        let (phi, log_q) = start.sample(rows, rng)?;
        for (r, &lq) in phi.outer_iter().zip(log_q.iter()) {
            for (a, &b) in row.iter_mut().zip(r.iter()) {
                *a = f64::from(b);
            }
            let offset = snf.start.action(&row) + lq;
            let work = layers.forward(&mut path, &*snf.start, target, &mut row, rng)?;
            if row.iter().sum::<f64>() > 0.0 {
                positive += 1;
            }
            log_w.push(-(offset + work));
        }
    }
    eval_metrics(&log_w, positive, rng)
}

/// Refuses an evaluation of fewer than 2 samples.
pub(crate) fn check_eval_samples(n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::param(
            "samples",
            format!("an evaluation needs at least 2 samples, got {n}"),
        ));
    }
    Ok(())
}

/// The metrics of an evaluation from its log-weights (in the order drawn) and the number
/// of samples with M > 0: an independence Metropolis chain over the samples (acceptance,
/// τ_rej), the ESS fraction, and the mean and variance of log w.
pub(crate) fn eval_metrics(
    log_w: &[f64],
    positive: usize,
    rng: &mut SimRng,
) -> Result<EvalMetrics> {
    let n = log_w.len();
    let mean = log_w.iter().sum::<f64>() / n as f64;
    let var = log_w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let ess = ess_fraction(log_w)?;
    let mut accepted = Vec::with_capacity(n - 1);
    let mut current = log_w[0];
    for &proposed in &log_w[1..] {
        let u: f64 = rng.random();
        let accept = u.ln() < proposed - current;
        if accept {
            current = proposed;
        }
        accepted.push(accept);
    }
    let rejection = rejection_autocorrelation(&accepted);
    let acceptance = accepted.iter().filter(|&&a| a).count() as f64 / accepted.len() as f64;
    Ok(EvalMetrics {
        acceptance,
        ess,
        mean_log_w: mean,
        var_log_w: var,
        tau_rej: rejection.map_or(f64::INFINITY, |r| r.tau_rej),
        fraction_positive_m: positive as f64 / n as f64,
    })
}
