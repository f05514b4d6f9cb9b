//! Ensemble quantities as functions of the means of per-configuration observables, so that
//! each can be the `f` of [`crate::stats::gamma_method_derived`]: the susceptibility, the
//! Binder cumulant, connected correlators, and the correlation length three ways (arcosh
//! effective mass, second moment, cosh fit).
//!
//! Connected correlators subtract ⟨φ⟩ = ⟨m⟩ at the ensemble level:
//! G_conn(y) = ⟨G(y)⟩ − ⟨m⟩², Ĝ_conn(t) = ⟨Ĝ(t)⟩ − (|Λ|/L) ⟨m⟩², χ = G̃_conn(0).
//! Each function documents the order of the means it expects.

use std::f64::consts::PI;

use crate::error::{Error, Result};
use crate::lattice::Lattice;

/// χ = |Λ| (⟨m²⟩ − ⟨m⟩²) from the means `[⟨m⟩, ⟨m²⟩]`.
pub fn susceptibility(volume: usize) -> impl Fn(&[f64]) -> f64 + Copy {
    let v = volume as f64;
    move |means: &[f64]| v * (means[1] - means[0] * means[0])
}

/// The Binder cumulant U = 1 − ⟨m⁴⟩/(3⟨m²⟩²) from the means `[⟨m²⟩, ⟨m⁴⟩]`.
pub fn binder_cumulant(means: &[f64]) -> f64 {
    1.0 - means[1] / (3.0 * means[0] * means[0])
}

/// Subtracts the disconnected part: `mean − sites · m_mean²`, where `sites` is the number of
/// sites the per-configuration estimator sums over beyond one (1 for G(y), |Λ|/L for Ĝ(t),
/// |Λ| for G̃(0)).
pub fn connected(mean: f64, m_mean: f64, sites: usize) -> f64 {
    mean - sites as f64 * m_mean * m_mean
}

/// The arcosh effective mass arcosh[(c(t+1) + c(t−1)) / (2 c(t))] from three consecutive
/// values of a zero-momentum correlator; NaN when the argument is below 1.
pub fn effective_mass(before: f64, at: f64, after: f64) -> f64 {
    ((before + after) / (2.0 * at)).acosh()
}

/// ξ_eff(t) = 1/m_eff(t) from the means `[⟨m⟩, ⟨Ĝ(t−1)⟩, ⟨Ĝ(t)⟩, ⟨Ĝ(t+1)⟩]` of a
/// zero-momentum correlator along a direction of extent `extent` (NaN where the arcosh
/// argument is below 1).
pub fn xi_effective(volume: usize, extent: usize) -> impl Fn(&[f64]) -> f64 + Copy {
    let slice = volume / extent;
    move |means: &[f64]| {
        let c = |k: usize| connected(means[k], means[0], slice);
        1.0 / effective_mass(c(1), c(2), c(3))
    }
}

/// The second-moment correlation length ξ² = (1/d) Σ_μ [χ / G̃(q̂_μ) − 1] / (4
/// sin²(π/L_μ)), χ = |Λ|(⟨m²⟩ − ⟨m⟩²), from the means `[⟨m⟩, ⟨m²⟩, ⟨G̃(q̂_1)⟩, …,
/// ⟨G̃(q̂_d)⟩]` (as measured by [`super::LowestMomentumCorrelator`]). NaN when ξ² < 0. In d
/// = 2 the 1/d is ½ (docs/statistics.md#correlation-length).
pub fn xi_second_moment(lattice: &Lattice) -> impl Fn(&[f64]) -> f64 + Clone + use<> {
    let chi = susceptibility(lattice.volume());
    let q_hat2: Vec<f64> = lattice
        .extents()
        .iter()
        .map(|&l| 4.0 * (PI / l as f64).sin().powi(2))
        .collect();
    move |means: &[f64]| {
        let chi = chi(&means[..2]);
        let sum: f64 = q_hat2
            .iter()
            .zip(&means[2..])
            .map(|(q2, g)| (chi / g - 1.0) / q2)
            .sum();
        (sum / q_hat2.len() as f64).sqrt()
    }
}

/// A fit C(t) = A [e^{−m t} + e^{−m (L−t)}] to a periodic zero-momentum correlator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoshFit {
    /// The mass m; the correlation length is 1/m.
    pub mass: f64,
    /// The amplitude A.
    pub amplitude: f64,
    /// The weighted sum of squared relative residuals at the minimum.
    pub residual: f64,
}

/// Least-squares fit of C(t) = A [e^{−m t} + e^{−m (L−t)}] to `correlator[t]` for
/// t in `t_min..=t_max`, with L = `correlator.len()`, minimising the squared *relative*
/// residuals Σ_t [(C(t) − model(t))/C(t)]². For each m the best amplitude is linear; m is
/// found by a log-spaced scan over [1e−5, 20] refined by golden section.
pub fn cosh_fit(correlator: &[f64], t_min: usize, t_max: usize) -> Result<CoshFit> {
    let period = correlator.len();
    if t_max >= period || t_min >= t_max {
        return Err(Error::param(
            "fit window",
            format!("need t_min < t_max < {period}, got {t_min}..={t_max}"),
        ));
    }
    let window = &correlator[t_min..=t_max];
    if let Some(k) = window.iter().position(|&c| !(c.is_finite() && c > 0.0)) {
        return Err(Error::param(
            "correlator",
            format!("value at t = {} is not positive and finite", t_min + k),
        ));
    }
    let model = |m: f64, t: usize| (-m * t as f64).exp() + (-m * (period - t) as f64).exp();
    // The best amplitude and the residual for a given mass.
    let fit_at = |m: f64| -> (f64, f64) {
        let (mut cf, mut ff) = (0.0, 0.0);
        for (k, &c) in window.iter().enumerate() {
            let f = model(m, t_min + k) / c;
            cf += f;
            ff += f * f;
        }
        let a = cf / ff;
        let r = window
            .iter()
            .enumerate()
            .map(|(k, &c)| (1.0 - a * model(m, t_min + k) / c).powi(2))
            .sum::<f64>();
        (a, r)
    };
    let mass = crate::stats::minimise_over_mass(|m| fit_at(m).1)?;
    let (amplitude, residual) = fit_at(mass);
    Ok(CoshFit {
        mass,
        amplitude,
        residual,
    })
}

/// ξ = 1/m of a [`cosh_fit`] on `t_min..=t_max` from the means
/// `[⟨m⟩, ⟨Ĝ(0)⟩, …, ⟨Ĝ(L−1)⟩]` of a zero-momentum correlator (connected at the ensemble
/// level); NaN when the fit fails.
pub fn xi_cosh_fit(
    volume: usize,
    extent: usize,
    t_min: usize,
    t_max: usize,
) -> impl Fn(&[f64]) -> f64 + Copy {
    let slice = volume / extent;
    move |means: &[f64]| {
        let connected: Vec<f64> = means[1..]
            .iter()
            .map(|&g| connected(g, means[0], slice))
            .collect();
        cosh_fit(&connected, t_min, t_max).map_or(f64::NAN, |fit| 1.0 / fit.mass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn susceptibility_and_binder_of_known_means() {
        assert_eq!(susceptibility(16)(&[0.5, 0.5]), 4.0);
        // A Gaussian m has ⟨m⁴⟩ = 3⟨m²⟩², U = 0; a two-valued ±m has U = 2/3.
        assert!(binder_cumulant(&[2.0, 12.0]).abs() < 1e-15);
        assert!((binder_cumulant(&[0.25, 0.0625]) - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn cosh_fit_refuses_bad_windows_and_values() {
        let c = [1.0, 0.5, 0.3, 0.5];
        assert!(cosh_fit(&c, 2, 2).is_err());
        assert!(cosh_fit(&c, 1, 4).is_err());
        assert!(cosh_fit(&[1.0, -0.5, 0.3, 0.5], 0, 2).is_err());
    }
}
