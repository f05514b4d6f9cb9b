//! Importance weights given as log-weights (flow samples reweighted to the target,
//! docs/kernels.md#reweighting): the effective sample size fraction, the largest normalised
//! weight, the Pareto-k̂ shape of the weights' tail and the reweighted mean with its
//! Γ-method error.

use super::gamma::{GammaEstimate, gamma_method_derived};
use crate::error::{Error, Result};

/// The weights w_i = exp(log w_i − max log w), checked: no NaN or +∞, at least one finite.
fn normalised_weights(log_weights: &[f64]) -> Result<Vec<f64>> {
    if log_weights.is_empty() {
        return Err(Error::param("log_weights", "no weights given"));
    }
    if let Some(i) = log_weights
        .iter()
        .position(|&x| x.is_nan() || x == f64::INFINITY)
    {
        return Err(Error::NonFinite(format!("log-weight {i}")));
    }
    let max = log_weights
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Err(Error::param("log_weights", "every weight is zero"));
    }
    Ok(log_weights.iter().map(|&x| (x - max).exp()).collect())
}

/// The effective sample size as a fraction, ESS = (Σ w)² / (N Σ w²) ∈ (0, 1], from
/// log-weights (shifted by their maximum, so any scale is safe; −∞ means weight 0).
pub fn ess_fraction(log_weights: &[f64]) -> Result<f64> {
    let w = normalised_weights(log_weights)?;
    let (sum, sum_sq) = w.iter().fold((0.0, 0.0), |(s, q), &x| (s + x, q + x * x));
    Ok(sum * sum / (w.len() as f64 * sum_sq))
}

/// The largest normalised weight max w / Σ w ∈ (0, 1] (1/N for equal weights; near 1 when
/// one sample dominates).
pub fn max_normalised_weight(log_weights: &[f64]) -> Result<f64> {
    let w = normalised_weights(log_weights)?;
    // The largest shifted weight is exactly 1.
    Ok(1.0 / w.iter().sum::<f64>())
}

/// The fewest tail weights [`pareto_k_hat`] fits (25 samples give 5).
pub const MIN_PARETO_TAIL: usize = 5;

/// The k̂ above which the importance weights of `n` samples have too heavy a tail for
/// reliable estimates: min(1 − 1/log₁₀ n, 0.7) (Vehtari et al., "Pareto smoothed importance
/// sampling", JMLR 25 (2024) 72).
pub fn pareto_k_threshold(n: usize) -> f64 {
    let log10 = (n.max(2) as f64).log10();
    (1.0 - 1.0 / log10).min(0.7)
}

/// The shape k̂ of a generalised Pareto distribution fitted to the largest importance
/// weights, as in Pareto smoothed importance sampling (Vehtari et al., JMLR 25 (2024) 72):
/// the M = ⌈min(N/5, 3√N)⌉ largest weights, minus the largest weight outside them, are
/// fitted by the profile-likelihood estimator of Zhang & Stephens (Technometrics 51 (2009)
/// 316) with 30 + ⌊√M⌋ grid points, shrunk towards ½ by the weakly informative prior
/// k̂ ← (M k̂ + 5)/(M + 10).
///
/// Weights with k̂ ≥ 1 have no finite mean; above ½ no finite variance; above
/// [`pareto_k_threshold`] the importance-sampling estimate is unreliable at this N. Needs
/// at least [`MIN_PARETO_TAIL`] tail weights and a tail that is not flat (an error otherwise).
pub fn pareto_k_hat(log_weights: &[f64]) -> Result<f64> {
    let n = log_weights.len();
    let tail_len = ((n as f64 / 5.0).min(3.0 * (n as f64).sqrt())).ceil() as usize;
    if tail_len < MIN_PARETO_TAIL || tail_len >= n {
        return Err(Error::param(
            "log_weights",
            format!("{n} weights are too few for a Pareto tail fit (at least 25 are needed)"),
        ));
    }
    let w = normalised_weights(log_weights)?;
    let mut sorted = w;
    sorted.sort_unstable_by(f64::total_cmp);
    let cutoff = sorted[n - tail_len - 1];
    let tail: Vec<f64> = sorted[n - tail_len..].iter().map(|&x| x - cutoff).collect();
    let largest = tail[tail_len - 1];
    if largest <= 0.0 {
        return Err(Error::param(
            "log_weights",
            "the largest weights are all equal: there is no tail to fit",
        ));
    }
    Ok(generalised_pareto_shape(&tail))
}

/// Zhang & Stephens' estimate of the shape of a generalised Pareto distribution from
/// ascending exceedances `x` (largest positive), with the weakly informative prior of PSIS.
fn generalised_pareto_shape(x: &[f64]) -> f64 {
    let m = x.len();
    let mf = m as f64;
    const PRIOR: f64 = 3.0;
    let grid = 30 + (mf.sqrt() as usize);
    let quartile = x[((mf / 4.0 + 0.5).floor() as usize).saturating_sub(1)].max(f64::MIN_POSITIVE);
    let largest = x[m - 1];
    let theta: Vec<f64> = (1..=grid)
        .map(|j| 1.0 / largest + (1.0 - (grid as f64 / (j as f64 - 0.5)).sqrt()) / PRIOR / quartile)
        .collect();
    // Profile log-likelihood of each θ: N [ln(−θ/k) − k − 1], k = mean ln(1 − θx).
    let shape_at = |t: f64| x.iter().map(|&xi| (-t * xi).ln_1p()).sum::<f64>() / mf;
    let log_lik: Vec<f64> = theta
        .iter()
        .map(|&t| {
            let k = shape_at(t);
            mf * ((-t / k).ln() - k - 1.0)
        })
        .collect();
    let max = log_lik
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    let (mut weighted, mut total) = (0.0, 0.0);
    for (&t, &l) in theta.iter().zip(&log_lik) {
        if l.is_nan() {
            continue;
        }
        let w = (l - max).exp();
        weighted += w * t;
        total += w;
    }
    let theta_hat = weighted / total;
    let k = shape_at(theta_hat);
    // The weakly informative prior: shrink towards ½ with weight 10 samples.
    let k = (mf * k + 10.0 * 0.5) / (mf + 10.0);
    if k.is_nan() { f64::INFINITY } else { k }
}

/// The reweighted mean Σ w O / Σ w with its Γ-method error (a derived quantity of the
/// series w·O and w; for independent samples τ_int ≈ ½).
pub fn reweighted_mean(values: &[f64], log_weights: &[f64]) -> Result<GammaEstimate> {
    if values.len() != log_weights.len() {
        return Err(Error::Shape(format!(
            "{} values but {} log-weights",
            values.len(),
            log_weights.len()
        )));
    }
    let w = normalised_weights(log_weights)?;
    let weighted: Vec<f64> = values.iter().zip(&w).map(|(o, w)| o * w).collect();
    gamma_method_derived(&[&weighted, &w], |m| m[0] / m[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ess_of_equal_and_degenerate_weights() {
        assert!((ess_fraction(&[3.0; 10]).unwrap() - 1.0).abs() < 1e-15);
        assert!((ess_fraction(&[-1e4; 10]).unwrap() - 1.0).abs() < 1e-15);
        let one = [0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
        assert!((ess_fraction(&one).unwrap() - 0.25).abs() < 1e-15);
        // Two weights 1 and e: (1 + e)² / (2 (1 + e²)).
        let e = 1f64.exp();
        let expected = (1.0 + e).powi(2) / (2.0 * (1.0 + e * e));
        assert!((ess_fraction(&[700.0, 701.0]).unwrap() - expected).abs() < 1e-14);
        assert!(ess_fraction(&[]).is_err());
        assert!(ess_fraction(&[0.0, f64::NAN]).is_err());
        assert!(ess_fraction(&[f64::NEG_INFINITY]).is_err());
    }

    #[test]
    fn largest_weight_and_pareto_edge_cases() {
        let e = 1f64.exp();
        assert!((max_normalised_weight(&[0.0, 1.0]).unwrap() - e / (1.0 + e)).abs() < 1e-15);
        assert!((max_normalised_weight(&[5.0; 4]).unwrap() - 0.25).abs() < 1e-15);
        assert!(pareto_k_hat(&[0.0; 20]).is_err());
        assert!(pareto_k_hat(&[1.0; 100]).is_err());
        assert!((pareto_k_threshold(10_000) - 0.7).abs() < 1e-15);
        assert!((pareto_k_threshold(1000) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn reweighted_mean_of_known_weights() {
        // Weights 1, 1, 2 (log 2): (1 + 2 + 2·4) / 4 = 11/4.
        let lw = [0.0, 0.0, 2f64.ln()];
        let e = reweighted_mean(&[1.0, 2.0, 4.0], &lw).unwrap();
        assert!((e.mean - 2.75).abs() < 1e-14);
        assert!(reweighted_mean(&[1.0], &lw).is_err());
    }
}
