//! The correlated cosh fit recovers known masses with honest errors: on synthetic cosh data
//! with correlated Gaussian noise (pulls of unit width, ⟨χ²⟩ = dof), and on exact free-field
//! samples, whose zero-momentum correlator is exactly a cosh with cosh E = 1 + m0²/2. The
//! power-law fit recovers a known exponent with pulls of unit width.

use latflow::action::FreeField;
use latflow::stats::{binned_covariance, correlated_cosh_fit, power_law_fit};
use latflow::{Lattice, rng_from_seed};
use nalgebra::{DMatrix, DVector};
use rand_distr::{Distribution, StandardNormal};

fn cosh_model(a: f64, m: f64, period: usize) -> Vec<f64> {
    (0..period)
        .map(|t| a * ((-m * t as f64).exp() + (-m * (period - t) as f64).exp()))
        .collect()
}

#[test]
fn synthetic_correlated_data_give_unit_pulls_and_chi2_equal_to_dof() {
    let (period, mass, amplitude) = (16, 0.35, 1.0);
    let truth = cosh_model(amplitude, mass, period);
    // Relative errors of 1 % with correlations ρ^|t−t'|, ρ = 0.8, as a correlator has.
    let sigma: Vec<f64> = truth.iter().map(|c| 0.01 * c).collect();
    let covariance = DMatrix::from_fn(period, period, |i, j| {
        sigma[i] * sigma[j] * 0.8f64.powi((i as i32 - j as i32).abs())
    });
    let factor = covariance.clone().cholesky().unwrap().l();
    let mut rng = rng_from_seed(11);
    let (t_min, t_max) = (2, 8);
    let replicas = 400;
    let (mut pulls, mut chi2s) = (Vec::new(), Vec::new());
    for _ in 0..replicas {
        let z = DVector::from_fn(period, |_, _| StandardNormal.sample(&mut rng));
        let noise = &factor * z;
        let data: Vec<f64> = truth.iter().zip(noise.iter()).map(|(c, n)| c + n).collect();
        let fit = correlated_cosh_fit(&data, &covariance, t_min, t_max).unwrap();
        assert_eq!(fit.dof, t_max - t_min - 1);
        pulls.push((fit.mass - mass) / fit.mass_err);
        chi2s.push(fit.chi2);
    }
    assert_unit_pulls(&pulls, &chi2s, 5);
}

/// Pulls of a unit normal (mean within 4/√n of 0, s.d. within 4/√(2n) of 1) and an average
/// χ² within 4σ of `dof` (χ² has variance 2 dof).
fn assert_unit_pulls(pulls: &[f64], chi2s: &[f64], dof: usize) {
    let n = pulls.len() as f64;
    let mean = pulls.iter().sum::<f64>() / n;
    let sd = (pulls.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!(mean.abs() < 4.0 / n.sqrt(), "pull mean {mean}");
    assert!((sd - 1.0).abs() < 4.0 / (2.0 * n).sqrt(), "pull s.d. {sd}");
    let chi2_mean = chi2s.iter().sum::<f64>() / n;
    let chi2_err = (2.0 * dof as f64 / n).sqrt();
    assert!(
        (chi2_mean - dof as f64).abs() < 4.0 * chi2_err,
        "mean χ² {chi2_mean}"
    );
}

#[test]
fn free_field_correlation_length_is_recovered_within_errors() {
    let l = 16;
    let m0 = 0.5;
    let lattice = Lattice::new(&[l, l]).unwrap();
    let field = FreeField::new(lattice, m0 * m0).unwrap();
    let mut sampler = field.sampler();
    let mut rng = rng_from_seed(5);
    let samples = 4000;
    let mut phi = vec![0.0; l * l];
    let mut series: Vec<Vec<f64>> = (0..l).map(|_| Vec::with_capacity(samples)).collect();
    let mut slice = vec![0.0; l];
    for _ in 0..samples {
        sampler.sample_into(&mut rng, &mut phi).unwrap();
        // Slice sums along direction 0 (site = x0 + L x1 or the transpose: either
        // direction has the same correlator by symmetry).
        slice.iter_mut().for_each(|s| *s = 0.0);
        for (site, &p) in phi.iter().enumerate() {
            slice[site % l] += p;
        }
        for (t, out) in series.iter_mut().enumerate() {
            let g: f64 = (0..l).map(|t0| slice[t0] * slice[(t0 + t) % l]).sum();
            out.push(g / (l * l * l) as f64);
        }
    }
    let views: Vec<&[f64]> = series.iter().map(Vec::as_slice).collect();
    // Independent samples: bins of 1.
    let mc = binned_covariance(&views, 1).unwrap();
    let fit = correlated_cosh_fit(&mc.means, &mc.covariance, 1, l / 2).unwrap();
    let exact_xi = 1.0 / (1.0 + m0 * m0 / 2.0).acosh();
    let pull = (fit.xi - exact_xi) / fit.xi_err;
    assert!(
        pull.abs() < 4.0,
        "ξ {} ± {} against {exact_xi}",
        fit.xi,
        fit.xi_err
    );
    // The error is a real one: a few per cent, not zero and not the whole value.
    assert!(fit.xi_err > 0.0 && fit.xi_err < 0.2 * exact_xi, "{fit:?}");
    // χ²/dof of a correct model with 6 dof (8 points, 2 parameters) exceeds 3 with
    // probability 0.6 %.
    assert!(fit.chi2_per_dof < 3.0, "{fit:?}");
}

#[test]
fn bad_ranges_and_covariances_are_refused() {
    let c = cosh_model(1.0, 0.3, 8);
    let identity = DMatrix::identity(8, 8);
    assert!(correlated_cosh_fit(&c, &identity, 3, 3).is_err());
    assert!(correlated_cosh_fit(&c, &identity, 1, 8).is_err());
    assert!(correlated_cosh_fit(&c, &DMatrix::identity(7, 7), 1, 4).is_err());
    let singular = DMatrix::from_element(8, 8, 1.0);
    assert!(correlated_cosh_fit(&c, &singular, 1, 4).is_err());
    assert!(binned_covariance(&[&[1.0, 2.0, 3.0]], 2).is_err());
    assert!(binned_covariance(&[&[1.0, 2.0], &[1.0]], 1).is_err());
}

#[test]
fn power_law_fit_recovers_a_known_exponent_with_unit_pulls() {
    // Costs growing like ξ^z over ξ = 1.5 … 5 with 8 % relative errors, as a scaling study
    // measures them.
    let (amplitude, exponent) = (3.0e-5, 2.3);
    let x = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0];
    let truth: Vec<f64> = x
        .iter()
        .map(|v: &f64| amplitude * v.powf(exponent))
        .collect();
    let err: Vec<f64> = truth.iter().map(|t| 0.08 * t).collect();
    let mut rng = rng_from_seed(21);
    let replicas = 400;
    let (mut pulls, mut chi2s) = (Vec::new(), Vec::new());
    for _ in 0..replicas {
        let y: Vec<f64> = truth
            .iter()
            .zip(&err)
            .map(|(t, e)| {
                let z: f64 = StandardNormal.sample(&mut rng);
                t + e * z
            })
            .collect();
        let fit = power_law_fit(&x, &y, &err).unwrap();
        assert_eq!(fit.dof, x.len() - 2);
        pulls.push((fit.exponent - exponent) / fit.exponent_err);
        // The amplitude is the fitted value at x_ref.
        let at_ref = amplitude * fit.x_ref.powf(exponent);
        assert!(((fit.predict(fit.x_ref) - fit.amplitude) / fit.amplitude).abs() < 1e-12);
        assert!(((fit.amplitude - at_ref) / fit.amplitude_err).abs() < 6.0);
        chi2s.push(fit.chi2);
    }
    // With 8 % errors the model is close enough to linear for Δχ² = 1 errors to hold.
    assert_unit_pulls(&pulls, &chi2s, x.len() - 2);
    // Exact data give the exact exponent and χ² = 0.
    let fit = power_law_fit(&x, &truth, &err).unwrap();
    assert!(
        (fit.exponent - exponent).abs() < 1e-9 && fit.chi2 < 1e-12,
        "{fit:?}"
    );
    // Decreasing laws too.
    let falling: Vec<f64> = x.iter().map(|v| 2.0 * v.powf(-1.7)).collect();
    let fit = power_law_fit(&x, &falling, &vec![0.01; x.len()]).unwrap();
    assert!((fit.exponent + 1.7).abs() < 1e-6, "{fit:?}");
    // Bad input is refused.
    assert!(power_law_fit(&[1.0], &[1.0], &[0.1]).is_err());
    assert!(power_law_fit(&[1.0, -2.0], &[1.0, 2.0], &[0.1, 0.1]).is_err());
    assert!(power_law_fit(&[1.0, 2.0], &[1.0, 2.0], &[0.1, 0.0]).is_err());
    assert!(power_law_fit(&[2.0, 2.0], &[1.0, 2.0], &[0.1, 0.1]).is_err());
    assert!(power_law_fit(&[1.0, 2.0], &[1.0, f64::NAN], &[0.1, 0.1]).is_err());
}
