//! Correlated least-squares fits of a periodic zero-momentum correlator to a cosh
//! (docs/statistics.md#correlated-cosh-fit): the covariance of the correlator's means from
//! binned data, χ² = rᵀ C⁻¹ r through a Cholesky factor (nalgebra), the amplitude profiled
//! out exactly, the mass found by a scan and golden-section refinement, and errors from the
//! inverse of JᵀC⁻¹J.

use nalgebra::{Cholesky, DMatrix, DVector, Dyn};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The means of several series measured together and the covariance of those means,
/// estimated from bins of `bin` consecutive measurements (bins longer than the
/// autocorrelation time make the bin means independent).
#[derive(Clone, Debug, PartialEq)]
pub struct MeanCovariance {
    /// The mean of each series.
    pub means: Vec<f64>,
    /// cov(mean_i, mean_j) = Σ_b (x̄_{b,i} − x̄_i)(x̄_{b,j} − x̄_j) / (B (B − 1)).
    pub covariance: DMatrix<f64>,
    /// Measurements per bin.
    pub bin: usize,
    /// Number of bins B.
    pub n_bins: usize,
}

/// The means of `series` (each the same length, in chain order) and their covariance from
/// bins of `bin` measurements; a trailing partial bin is dropped. At least two bins.
pub fn binned_covariance(series: &[&[f64]], bin: usize) -> Result<MeanCovariance> {
    let k = series.len();
    let n = series.first().map_or(0, |s| s.len());
    if k == 0 || series.iter().any(|s| s.len() != n) {
        return Err(Error::Shape(
            "binned_covariance needs one or more series of equal length".into(),
        ));
    }
    if bin == 0 {
        return Err(Error::param("bin", "must be at least 1"));
    }
    let n_bins = n / bin;
    if n_bins < 2 {
        return Err(Error::param(
            "bin",
            format!("{n} measurements in bins of {bin} give {n_bins} bins, at least 2 are needed"),
        ));
    }
    let used = n_bins * bin;
    let bin_means = DMatrix::from_fn(n_bins, k, |b, i| {
        series[i][b * bin..(b + 1) * bin].iter().sum::<f64>() / bin as f64
    });
    let means: Vec<f64> = (0..k)
        .map(|i| series[i][..used].iter().sum::<f64>() / used as f64)
        .collect();
    let centred = DMatrix::from_fn(n_bins, k, |b, i| bin_means[(b, i)] - means[i]);
    let covariance = centred.transpose() * &centred / (n_bins * (n_bins - 1)) as f64;
    if covariance.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("binned covariance".into()));
    }
    Ok(MeanCovariance {
        means,
        covariance,
        bin,
        n_bins,
    })
}

/// The means of `series` (each the same length, in chain order) and their covariance by the
/// Γ-method with a common summation window `window`:
/// cov(x̄_i, x̄_j) = [Γ_ij(0) + Σ_{t=1}^{W} (Γ_ij(t) + Γ_ji(t))] / N with
/// Γ_ij(t) = Σ_s (x_i(s) − x̄_i)(x_j(s+t) − x̄_j) / (N − t). Its diagonal is the Γ-method
/// variance of each mean at that window (without the bias correction).
pub fn gamma_covariance(series: &[&[f64]], window: usize) -> Result<(Vec<f64>, DMatrix<f64>)> {
    gamma_covariance_replicas(&[series.to_vec()], window)
}

/// [`gamma_covariance`] over independent replicas (`replicas[r][i]` is series i of replica r;
/// within a replica the series have equal lengths): the means over all replicas, and
/// Γ_ij(t) summed over the replicas of the products of fluctuations about those means,
/// normalised by N − R t (N values in all, R replicas).
pub fn gamma_covariance_replicas(
    replicas: &[Vec<&[f64]>],
    window: usize,
) -> Result<(Vec<f64>, DMatrix<f64>)> {
    let k = replicas.first().map_or(0, Vec::len);
    let shape_ok = k > 0
        && replicas
            .iter()
            .all(|r| r.len() == k && r.iter().all(|s| s.len() == r[0].len()) && !r[0].is_empty());
    if !shape_ok {
        return Err(Error::Shape(
            "gamma_covariance needs one or more series of equal length per replica".into(),
        ));
    }
    let shortest = replicas.iter().map(|r| r[0].len()).min().unwrap_or(0);
    if window >= shortest {
        return Err(Error::param(
            "window",
            format!("the window {window} must be below the series length {shortest}"),
        ));
    }
    let n: usize = replicas.iter().map(|r| r[0].len()).sum();
    let means: Vec<f64> = (0..k)
        .map(|i| replicas.iter().flat_map(|r| r[i].iter()).sum::<f64>() / n as f64)
        .collect();
    let centred: Vec<Vec<Vec<f64>>> = replicas
        .iter()
        .map(|r| {
            r.iter()
                .zip(&means)
                .map(|(s, m)| s.iter().map(|x| x - m).collect())
                .collect()
        })
        .collect();
    let count = replicas.len();
    let cross = |i: usize, j: usize, t: usize| {
        let sum: f64 = centred
            .iter()
            .map(|c| {
                let len = c[i].len();
                c[i][..len - t]
                    .iter()
                    .zip(&c[j][t..])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .sum();
        sum / (n - count * t) as f64
    };
    let mut covariance = DMatrix::zeros(k, k);
    for i in 0..k {
        for j in i..k {
            let mut c = cross(i, j, 0);
            for t in 1..=window {
                c += cross(i, j, t) + cross(j, i, t);
            }
            covariance[(i, j)] = c / n as f64;
            covariance[(j, i)] = c / n as f64;
        }
    }
    if covariance.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("Γ-method covariance".into()));
    }
    Ok((means, covariance))
}

/// The result of a correlated cosh fit C(t) = A [e^{−m t} + e^{−m (L−t)}].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorrelatedCoshFit {
    /// The mass m.
    pub mass: f64,
    /// Its error.
    pub mass_err: f64,
    /// The amplitude A.
    pub amplitude: f64,
    /// Its error.
    pub amplitude_err: f64,
    /// The correlation length ξ = 1/m.
    pub xi: f64,
    /// Its error, σ_m / m².
    pub xi_err: f64,
    /// χ² at the minimum.
    pub chi2: f64,
    /// Degrees of freedom: points in the range − 2.
    pub dof: usize,
    /// χ² / dof (NaN with no degrees of freedom).
    pub chi2_per_dof: f64,
    /// First time slice of the fit range.
    pub t_min: usize,
    /// Last time slice of the fit range.
    pub t_max: usize,
}

/// Number of log-spaced masses scanned before the golden-section refinement.
const MASS_SCAN_POINTS: usize = 400;
/// The scanned mass range.
pub(crate) const MASS_RANGE: (f64, f64) = (1e-5, 20.0);

/// The mass in [`MASS_RANGE`] minimising `objective`: the best of a log-spaced scan,
/// refined by golden section between its neighbours. A minimum at either end of the range
/// is an error naming the range.
pub(crate) fn minimise_over_mass(objective: impl Fn(f64) -> f64) -> Result<f64> {
    let (lo, hi) = (MASS_RANGE.0.ln(), MASS_RANGE.1.ln());
    let grid = |i: usize| (lo + (hi - lo) * i as f64 / (MASS_SCAN_POINTS - 1) as f64).exp();
    scan_and_refine(&objective, &grid, MASS_SCAN_POINTS).ok_or_else(|| {
        Error::param(
            "correlator",
            format!(
                "the cosh fit found no minimum for masses in [{}, {}]",
                MASS_RANGE.0, MASS_RANGE.1
            ),
        )
    })
}

/// The minimum of `objective` over `grid(0..points)` (increasing), refined by golden
/// section between the grid neighbours of the best point; `None` when no value is finite
/// or the best point is at either end of the grid.
fn scan_and_refine(
    objective: &dyn Fn(f64) -> f64,
    grid: &dyn Fn(usize) -> f64,
    points: usize,
) -> Option<f64> {
    let best = (0..points)
        .map(|i| (i, objective(grid(i))))
        .filter(|(_, value)| value.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)?;
    if best == 0 || best == points - 1 {
        return None;
    }
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (grid(best - 1), grid(best + 1));
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (objective(c), objective(d));
    while (b - a) > 1e-14 * (a.abs() + b.abs()).max(1e-300) {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = objective(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = objective(d);
        }
    }
    Some(0.5 * (a + b))
}

/// The result of a power-law fit y = A (x / x_ref)^z.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// The exponent z.
    pub exponent: f64,
    /// Its error.
    pub exponent_err: f64,
    /// The amplitude A: the fitted y at `x_ref`.
    pub amplitude: f64,
    /// Its error.
    pub amplitude_err: f64,
    /// The reference x, the geometric mean of the x values (where A and z are least
    /// correlated).
    pub x_ref: f64,
    /// The correlation coefficient of A and z.
    pub correlation: f64,
    /// χ² at the minimum.
    pub chi2: f64,
    /// Degrees of freedom: points − 2.
    pub dof: usize,
    /// χ² / dof (NaN with no degrees of freedom).
    pub chi2_per_dof: f64,
}

impl PowerLawFit {
    /// The fitted y at `x`.
    pub fn predict(&self, x: f64) -> f64 {
        self.amplitude * (x / self.x_ref).powf(self.exponent)
    }
}

/// The exponents a power-law fit searches.
const EXPONENT_RANGE: (f64, f64) = (-30.0, 30.0);
/// Points of the exponent scan before the golden-section refinement.
const EXPONENT_SCAN_POINTS: usize = 6001;

/// Fits y = A (x / x_ref)^z to points (x_i, y_i ± σ_i) from independent measurements by
/// weighted least squares, χ² = Σ_i [(y_i − A (x_i/x_ref)^z) / σ_i]², with x_ref the
/// geometric mean of the x_i. For each z the best A is linear; z comes from a scan over
/// [−30, 30] refined by golden section; the errors of (A, z) are the square roots of the
/// diagonal of (JᵀWJ)⁻¹ at the minimum (Δχ² = 1). Needs at least two points with x > 0,
/// σ > 0 and finite y.
pub fn power_law_fit(x: &[f64], y: &[f64], err: &[f64]) -> Result<PowerLawFit> {
    let n = x.len();
    if y.len() != n || err.len() != n {
        return Err(Error::Shape(format!(
            "power_law_fit needs x, y and errors of one length, got {n}, {}, {}",
            y.len(),
            err.len()
        )));
    }
    if n < 2 {
        return Err(Error::param(
            "points",
            format!("a power law needs 2 or more, got {n}"),
        ));
    }
    if let Some(i) = (0..n).find(|&i| !(x[i].is_finite() && x[i] > 0.0)) {
        return Err(Error::param(
            "x",
            format!("point {i}: x = {} must be positive", x[i]),
        ));
    }
    if let Some(i) = (0..n).find(|&i| !(err[i].is_finite() && err[i] > 0.0)) {
        return Err(Error::param(
            "errors",
            format!("point {i}: error {} must be positive and finite", err[i]),
        ));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("power-law fit data".into()));
    }
    let x_ref = (x.iter().map(|v| v.ln()).sum::<f64>() / n as f64).exp();
    let u: Vec<f64> = x.iter().map(|v| (v / x_ref).ln()).collect();
    let w: Vec<f64> = err.iter().map(|e| 1.0 / (e * e)).collect();
    let amplitude_at = |z: f64| {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..n {
            let f = (z * u[i]).exp();
            num += w[i] * y[i] * f;
            den += w[i] * f * f;
        }
        num / den
    };
    let chi2_at = |z: f64| {
        let a = amplitude_at(z);
        (0..n)
            .map(|i| w[i] * (y[i] - a * (z * u[i]).exp()).powi(2))
            .sum::<f64>()
    };
    let (lo, hi) = EXPONENT_RANGE;
    let grid = |i: usize| lo + (hi - lo) * i as f64 / (EXPONENT_SCAN_POINTS - 1) as f64;
    let z = scan_and_refine(&chi2_at, &grid, EXPONENT_SCAN_POINTS).ok_or_else(|| {
        Error::param(
            "data",
            format!("the power-law fit found no minimum for exponents in [{lo}, {hi}]"),
        )
    })?;
    let a = amplitude_at(z);
    let chi2 = chi2_at(z);
    // JᵀWJ with J = [∂y/∂A, ∂y/∂z] = [e^{z u}, A u e^{z u}].
    let mut jwj = DMatrix::<f64>::zeros(2, 2);
    for i in 0..n {
        let f = (z * u[i]).exp();
        let j = [f, a * u[i] * f];
        for r in 0..2 {
            for c in 0..2 {
                jwj[(r, c)] += w[i] * j[r] * j[c];
            }
        }
    }
    let cov = jwj
        .try_inverse()
        .ok_or_else(|| Error::param("x", "the x values must not all be equal"))?;
    let dof = n - 2;
    Ok(PowerLawFit {
        exponent: z,
        exponent_err: cov[(1, 1)].sqrt(),
        amplitude: a,
        amplitude_err: cov[(0, 0)].sqrt(),
        x_ref,
        correlation: cov[(0, 1)] / (cov[(0, 0)] * cov[(1, 1)]).sqrt(),
        chi2,
        dof,
        chi2_per_dof: if dof > 0 { chi2 / dof as f64 } else { f64::NAN },
    })
}

/// Fits C(t) = A [e^{−m t} + e^{−m (L−t)}] to `correlator[t]`, t in `t_min..=t_max`,
/// L = `correlator.len()`, minimising χ² = rᵀ C⁻¹ r with `covariance` the L × L covariance
/// of the correlator's means (only the fit range is used; it must be positive definite).
/// For each m the best A is linear; m comes from a log-spaced scan over [1e−5, 20] refined
/// by golden section; the errors of (A, m) are the square roots of the diagonal of
/// (JᵀC⁻¹J)⁻¹ at the minimum (Δχ² = 1).
pub fn correlated_cosh_fit(
    correlator: &[f64],
    covariance: &DMatrix<f64>,
    t_min: usize,
    t_max: usize,
) -> Result<CorrelatedCoshFit> {
    let period = correlator.len();
    if t_max >= period || t_min + 1 > t_max {
        return Err(Error::param(
            "fit range",
            format!("need t_min < t_max < {period}, got {t_min}..={t_max}"),
        ));
    }
    if covariance.nrows() != period || covariance.ncols() != period {
        return Err(Error::Shape(format!(
            "covariance is {}×{}, the correlator has {period} entries",
            covariance.nrows(),
            covariance.ncols()
        )));
    }
    let points = t_max - t_min + 1;
    let y = DVector::from_iterator(points, correlator[t_min..=t_max].iter().copied());
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("correlator in the fit range".into()));
    }
    let window = covariance
        .view((t_min, t_min), (points, points))
        .into_owned();
    let cholesky: Cholesky<f64, Dyn> = Cholesky::new(window).ok_or_else(|| {
        Error::param(
            "covariance",
            format!("not positive definite on t = {t_min}..={t_max}"),
        )
    })?;
    let shape = |m: f64| {
        DVector::from_fn(points, |k, _| {
            let t = (t_min + k) as f64;
            (-m * t).exp() + (-m * (period as f64 - t)).exp()
        })
    };
    // C⁻¹ y once; for each m: A = fᵀC⁻¹y / fᵀC⁻¹f, χ² = yᵀC⁻¹y − (fᵀC⁻¹y)² / fᵀC⁻¹f.
    let winv_y = cholesky.solve(&y);
    let y_w_y = y.dot(&winv_y);
    let profile = |m: f64| -> (f64, f64) {
        let f = shape(m);
        let winv_f = cholesky.solve(&f);
        let f_w_f = f.dot(&winv_f);
        let f_w_y = f.dot(&winv_y);
        (f_w_y / f_w_f, y_w_y - f_w_y * f_w_y / f_w_f)
    };
    let mass = minimise_over_mass(|m| profile(m).1)?;
    let (amplitude, chi2) = profile(mass);
    // J = [∂model/∂A, ∂model/∂m]; the parameter covariance is (JᵀC⁻¹J)⁻¹.
    let jacobian = DMatrix::from_fn(points, 2, |k, j| {
        let t = (t_min + k) as f64;
        let (e1, e2) = ((-mass * t).exp(), (-mass * (period as f64 - t)).exp());
        if j == 0 {
            e1 + e2
        } else {
            -amplitude * (t * e1 + (period as f64 - t) * e2)
        }
    });
    let fisher = jacobian.transpose() * cholesky.solve(&jacobian);
    let inverse = fisher
        .try_inverse()
        .ok_or_else(|| Error::NonFinite("the cosh fit's curvature matrix is singular".into()))?;
    let (amplitude_err, mass_err) = (inverse[(0, 0)].sqrt(), inverse[(1, 1)].sqrt());
    let dof = points - 2;
    Ok(CorrelatedCoshFit {
        mass,
        mass_err,
        amplitude,
        amplitude_err,
        xi: 1.0 / mass,
        xi_err: mass_err / (mass * mass),
        chi2: chi2.max(0.0),
        dof,
        chi2_per_dof: if dof > 0 {
            chi2.max(0.0) / dof as f64
        } else {
            f64::NAN
        },
        t_min,
        t_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{GammaMethod, Window};
    use rand::RngExt;

    /// An AR(1) series x_s = a x_{s−1} + noise, correlated over ~1/(1 − a) steps.
    fn ar1(n: usize, a: f64, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng_from_seed(seed);
        let mut x = 0.0;
        (0..n)
            .map(|_| {
                x = a * x + rng.random::<f64>() - 0.5;
                x
            })
            .collect()
    }

    #[test]
    fn gamma_covariance_diagonal_is_the_gamma_method_variance_at_the_same_window() {
        let (n, w) = (5000, 12);
        let a = ar1(n, 0.8, 1);
        let b: Vec<f64> = ar1(n, 0.5, 2)
            .iter()
            .zip(&a)
            .map(|(x, y)| x + 0.5 * y)
            .collect();
        let (means, cov) = gamma_covariance(&[&a, &b], w).unwrap();
        let gamma = GammaMethod::new(Window::Fixed(w)).unwrap();
        for (i, series) in [&a, &b].into_iter().enumerate() {
            let g = gamma.estimate(&[series]).unwrap();
            assert!((means[i] - g.mean).abs() < 1e-12);
            // The Γ-method adds its bias correction, a factor 1 + (2W + 1)/N.
            let corrected = cov[(i, i)] * (1.0 + (2 * w + 1) as f64 / n as f64);
            assert!(
                (corrected / (g.err * g.err) - 1.0).abs() < 1e-9,
                "{corrected} vs {}",
                g.err * g.err
            );
        }
        // Correlated series: a positive, symmetric off-diagonal below the Cauchy–Schwarz bound.
        assert_eq!(cov[(0, 1)], cov[(1, 0)]);
        assert!(cov[(0, 1)] > 0.0 && cov[(0, 1)].powi(2) < cov[(0, 0)] * cov[(1, 1)]);
        assert!(gamma_covariance(&[&a[..10]], 10).is_err());
        assert!(gamma_covariance(&[&a, &b[..10]], 2).is_err());
    }
}
