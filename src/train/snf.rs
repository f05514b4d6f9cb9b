//! Stochastic normalizing flows: a flow's deterministic map followed by the stochastic
//! steps of a non-equilibrium protocol from the action the flow stands for to the target
//! ([`Snf`]), trained end to end by the reverse KL of the whole path, and evaluated on
//! whole paths ([`evaluate_snf`]).
//!
//! With φ₀ = f_θ(z), z ~ r, the path's work is
//!
//! W = S₀(φ₀) + log q_θ(φ₀) + Σ_t (λ_{t+1} − λ_t) [S − S₀](φ_t),
//!
//! and Jarzynski's inequality −log Z ≤ E[W] makes E[W] the loss (the reverse KL of the
//! extended process, up to log Z). Its pathwise gradient holds the protocol's random numbers
//! fixed: a local Metropolis update moves a site by a shift drawn independently of φ, or not
//! at all, so ∂φ_t/∂φ₀ = 1 almost everywhere and
//!
//! ∂W/∂φ₀ = ∇S₀(φ₀) + Σ_t (λ_{t+1} − λ_t) ∇(S − S₀)(φ_t),
//!
//! which seeds the flow's backward pass where plain training seeds ∇S(φ₀); the log q term
//! is handled as in plain training (log-det seed, or the score for path gradients). The
//! estimator ignores the jumps of W where an accept test flips, which biases the gradient
//! (the training) only: the works, and with them the Jarzynski weights and the Metropolis
//! test of a sampler using the trained SNF, stay exact.

use std::sync::Arc;

use rand::RngExt;

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::{Flow, ensure_same_lattice};
use crate::kernel::{NoneqPath, NoneqProtocol, NoneqUpdate};
use crate::rng::{SimRng, splitmix64, stream};
use crate::stats::{ess_fraction, rejection_autocorrelation};
use crate::train::metrics::EvalMetrics;
use crate::train::trainer::EVAL_CHUNK;

/// The stochastic half of a stochastic normalizing flow: a protocol of local updates from
/// the start action S₀ (the action the flow's map stands for, e.g. φ⁴ at a smaller β) to
/// the trainer's target.
#[derive(Clone)]
pub struct Snf {
    /// The protocol (local updates only: see [`NoneqPath::forward_with_gradient`]).
    pub protocol: NoneqProtocol,
    /// S₀, on the target's lattice.
    pub start: Arc<dyn Action>,
}

impl Snf {
    /// Checks the protocol (at least one step, local updates with a positive step size)
    /// and that S₀ lives on `target`'s lattice.
    pub fn validate<A: Action + ?Sized>(&self, target: &A) -> Result<()> {
        self.protocol.validate()?;
        if let NoneqUpdate::Hmc { .. } = self.protocol.update {
            return Err(Error::param(
                "snf",
                "a stochastic normalizing flow is trained with local updates only (the \
                 pathwise gradient needs ∂φ_t/∂φ₀ = 1, which an HMC trajectory does not give)",
            ));
        }
        if self.start.lattice() != target.lattice() {
            return Err(Error::Incompatible(format!(
                "the SNF's start action is for a {} lattice, the target for {}",
                self.start.lattice(),
                target.lattice()
            )));
        }
        Ok(())
    }

    /// The path of one row from its start φ₀ (overwritten by φ_n): returns
    /// (S₀(φ₀) + W_path, ∂/∂φ₀ of it) with the row's random stream `rng`; `grad` and
    /// `force` are scratch of one value per site, `path` the protocol's buffers.
    pub(crate) fn row<A: Action + ?Sized>(
        &self,
        target: &A,
        path: &mut NoneqPath,
        phi: &mut Vec<f64>,
        rng: &mut SimRng,
        grad: &mut [f64],
        force: &mut [f64],
    ) -> f64 {
        let s0 = self.start.action_and_force(phi, force);
        match path.forward_with_gradient(&*self.start, target, phi, rng, grad) {
            Ok(work) => {
                for (g, f) in grad.iter_mut().zip(force.iter()) {
                    *g += f;
                }
                s0 + work
            }
            Err(_) => f64::NAN,
        }
    }
}

/// Separates the streams of the protocol's random numbers from the other streams derived
/// from the training seed.
const SNF_SALT: u64 = 0x534E_465F_5041_5448;

/// The stream of the protocol's random numbers of row `row` at iteration `iteration`.
pub(crate) fn snf_stream(seed: u64, iteration: usize, row: usize) -> SimRng {
    let key = splitmix64(seed ^ SNF_SALT) ^ splitmix64(iteration as u64);
    stream(key, row as u64)
}

/// Tests the stochastic normalizing flow made of `flow` and `snf` against `target` with `n`
/// whole paths: φ₀ drawn [`EVAL_CHUNK`] at a time, each evolved through the protocol with
/// `rng`, log w = −W; then the metrics of [`evaluate_flow`](crate::train::evaluate_flow)
/// (an independence Metropolis chain over the paths in order, ESS fraction, mean and
/// variance of log w, which bound log Z from below, and the fraction of end fields φ_n with
/// M > 0).
pub fn evaluate_snf<F: Flow + ?Sized, A: Action + ?Sized>(
    flow: &F,
    target: &A,
    snf: &Snf,
    n: usize,
    rng: &mut SimRng,
) -> Result<EvalMetrics> {
    check_eval_samples(n)?;
    ensure_same_lattice(flow, target)?;
    snf.validate(target)?;
    let volume = target.lattice().volume();
    let mut path = NoneqPath::new(snf.protocol, volume)?;
    let mut log_w = Vec::with_capacity(n);
    let mut positive = 0;
    let mut row = vec![0.0; volume];
    while log_w.len() < n {
        let rows = EVAL_CHUNK.min(n - log_w.len());
        let (phi, log_q) = flow.sample(rows, rng)?;
        for (r, &lq) in phi.outer_iter().zip(log_q.iter()) {
            for (a, &b) in row.iter_mut().zip(r.iter()) {
                *a = f64::from(b);
            }
            let offset = snf.start.action(&row) + lq;
            let work = path.forward(&*snf.start, target, &mut row, rng);
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
