//! Acceptance diagnostics of a Metropolis chain from its accept/reject history
//! (docs/statistics.md#rejection-based-autocorrelation): the rejection-based
//! autocorrelation time τ_rej, its lower bound 1/Ā − ½, and the longest run of consecutive
//! rejections.

use serde::{Deserialize, Serialize};

use super::gamma::{DEFAULT_S, automatic_window};
use crate::error::{Error, Result};

/// What the accept/reject history of a chain says.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectionStats {
    /// The mean acceptance Ā.
    pub acceptance: f64,
    /// τ_rej = ½ + Σ_{t≤W} P(t consecutive rejections), summed with automatic windowing.
    pub tau_rej: f64,
    /// The error of τ_rej, 2 τ_rej √((W − τ_rej + ½)/N).
    pub tau_rej_err: f64,
    /// The summation window W.
    pub window: usize,
    /// Whether the automatic windowing converged.
    pub window_converged: bool,
    /// The lower bound 1/Ā − ½ (reached for a constant acceptance probability).
    pub tau_lower_bound: f64,
    /// The longest run of consecutive rejections.
    pub longest_rejection_run: usize,
}

/// The longest run of consecutive `false` (rejected) entries.
pub fn longest_rejection_run(accepted: &[bool]) -> usize {
    accepted.split(|&a| a).map(<[bool]>::len).max().unwrap_or(0)
}

/// P(t consecutive rejections) for t = 0..=max_lag: the fraction of the N − t + 1 windows
/// of t consecutive steps in which every step was rejected (1 at t = 0).
pub fn rejection_run_probabilities(accepted: &[bool], max_lag: usize) -> Vec<f64> {
    let n = accepted.len();
    let max_lag = max_lag.min(n);
    // runs[r] = number of maximal rejection runs of length r.
    let mut runs = vec![0usize; longest_rejection_run(accepted) + 1];
    for run in accepted.split(|&a| a) {
        runs[run.len()] += 1;
    }
    // Windows of length t inside a run of length r: max(r − t + 1, 0). With suffix sums
    // A(t) = Σ_{r≥t} n_r and B(t) = Σ_{r≥t} r n_r, the count is B(t) − (t − 1) A(t).
    let mut counts = vec![0usize; max_lag + 1];
    let (mut a, mut b) = (0usize, 0usize);
    for r in (1..runs.len()).rev() {
        a += runs[r];
        b += r * runs[r];
        if r <= max_lag {
            counts[r] = b - (r - 1) * a;
        }
    }
    let mut p: Vec<f64> = counts
        .iter()
        .enumerate()
        .map(|(t, &c)| c as f64 / (n - t + 1) as f64)
        .collect();
    p[0] = 1.0;
    p
}

/// τ_rej and the other acceptance diagnostics of an accept/reject history (`true` =
/// accepted). For an independence sampler P(t consecutive rejections) is Γ(t)/Γ(0) of every
/// observable; it is summed with Wolff's automatic windowing (S = 1.5) up to N/2. The
/// estimator needs no mean subtraction, so no bias correction is applied.
pub fn rejection_autocorrelation(accepted: &[bool]) -> Result<RejectionStats> {
    let n = accepted.len();
    if n < 2 {
        return Err(Error::param(
            "history",
            format!("{n} accept/reject decisions, at least 2 are needed"),
        ));
    }
    let n_accepted = accepted.iter().filter(|&&a| a).count();
    if n_accepted == 0 {
        return Err(Error::param(
            "history",
            "no proposal was accepted: the rejection autocorrelation is undefined",
        ));
    }
    let acceptance = n_accepted as f64 / n as f64;
    let rho = rejection_run_probabilities(accepted, n / 2);
    let (window, window_converged) = automatic_window(&rho, n, DEFAULT_S);
    let tau_rej = 0.5 + rho[1..=window].iter().sum::<f64>();
    let tau_rej_err = 2.0 * tau_rej * ((window as f64 - tau_rej + 0.5).max(0.0) / n as f64).sqrt();
    Ok(RejectionStats {
        acceptance,
        tau_rej,
        tau_rej_err,
        window,
        window_converged,
        tau_lower_bound: 1.0 / acceptance - 0.5,
        longest_rejection_run: longest_rejection_run(accepted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_probabilities_match_direct_window_count() {
        let history: Vec<bool> = (0..200u64)
            .map(|i| (i * 2654435761 % 97) % 3 == 0 || i % 17 == 0)
            .collect();
        let n = history.len();
        let p = rejection_run_probabilities(&history, 12);
        for (t, &pt) in p.iter().enumerate().skip(1) {
            let windows = (0..=n - t)
                .filter(|&s| history[s..s + t].iter().all(|&a| !a))
                .count();
            assert!(
                (pt - windows as f64 / (n - t + 1) as f64).abs() < 1e-15,
                "t {t}"
            );
        }
    }

    #[test]
    fn longest_run_and_edge_cases() {
        let h = [true, false, false, true, false, false, false, true, false];
        assert_eq!(longest_rejection_run(&h), 3);
        assert_eq!(longest_rejection_run(&[true, true]), 0);
        assert!(rejection_autocorrelation(&[false; 10]).is_err());
        assert!(rejection_autocorrelation(&[true]).is_err());
        let all = rejection_autocorrelation(&[true; 10]).unwrap();
        assert_eq!(
            (all.tau_rej, all.acceptance, all.tau_lower_bound),
            (0.5, 1.0, 0.5)
        );
    }
}
