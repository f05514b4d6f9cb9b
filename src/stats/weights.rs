//! Importance weights given as log-weights (flow samples reweighted to the target,
//! docs/kernels.md#reweighting): the effective sample size fraction and the reweighted mean
//! with its Γ-method error.

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
    fn reweighted_mean_of_known_weights() {
        // Weights 1, 1, 2 (log 2): (1 + 2 + 2·4) / 4 = 11/4.
        let lw = [0.0, 0.0, 2f64.ln()];
        let e = reweighted_mean(&[1.0, 2.0, 4.0], &lw).unwrap();
        assert!((e.mean - 2.75).abs() < 1e-14);
        assert!(reweighted_mean(&[1.0], &lw).is_err());
    }
}
