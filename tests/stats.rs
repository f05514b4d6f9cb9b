//! Statistical checks of `latflow::stats` against processes with known answers: AR(1) chains
//! (exact τ_int and exact variance of the mean) and independent Gaussian data (exact or
//! propagated errors of derived quantities).

use latflow::rng::stream;
use latflow::stats::{
    GammaEstimate, GammaMethod, Window, gamma_method, gamma_method_derived,
    gamma_method_derived_replicas, gamma_method_replicas,
};
use rand::RngExt;
use rand_distr::StandardNormal;

/// An AR(1) chain x_{n+1} = ρ x_n + √(1−ρ²) η_n started in equilibrium (x_0 ~ N(0,1)).
fn ar1(rho: f64, n: usize, seed: u64, index: u64) -> Vec<f64> {
    let mut rng = stream(seed, index);
    let kick = (1.0 - rho * rho).sqrt();
    let mut x: f64 = rng.sample(StandardNormal);
    (0..n)
        .map(|_| {
            let current = x;
            let eta: f64 = rng.sample(StandardNormal);
            x = rho * x + kick * eta;
            current
        })
        .collect()
}

/// τ_int = ½ (1+ρ)/(1−ρ) of an AR(1) chain.
fn ar1_tau(rho: f64) -> f64 {
    0.5 * (1.0 + rho) / (1.0 - rho)
}

/// The exact variance of the mean of n consecutive AR(1) values with unit variance:
/// (1/n²) Σ_{ij} ρ^{|i−j|} = (1/n) [(1+ρ)/(1−ρ) − 2ρ(1−ρⁿ)/(n(1−ρ)²)].
fn ar1_var_of_mean(rho: f64, n: usize) -> f64 {
    let nf = n as f64;
    ((1.0 + rho) / (1.0 - rho)
        - 2.0 * rho * (1.0 - rho.powi(n as i32)) / (nf * (1.0 - rho).powi(2)))
        / nf
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn std_dev(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Repeats an AR(1) analysis and collects the estimates.
fn ar1_estimates(
    rho: f64,
    n: usize,
    reps: u64,
    seed: u64,
    method: GammaMethod,
) -> Vec<GammaEstimate> {
    (0..reps)
        .map(|r| method.estimate(&[&ar1(rho, n, seed, r)]).unwrap())
        .collect()
}

/// How many estimates have |mean − truth| < 2 err (expected 95 % for an honest error).
fn mean_coverage(estimates: &[GammaEstimate], truth: f64) -> usize {
    estimates
        .iter()
        .filter(|e| (e.mean - truth).abs() < 2.0 * e.err)
        .count()
}

/// How many estimates have |τ_int − truth| < 2 δτ_int.
fn tau_coverage(estimates: &[GammaEstimate], truth: f64) -> usize {
    estimates
        .iter()
        .filter(|e| (e.tau_int - truth).abs() < 2.0 * e.tau_int_err)
        .count()
}

/// 50 AR(1) chains for each ρ: the 2σ intervals of the mean and of τ_int cover the exact
/// values in ≥ 90 % of the repetitions (expected 95 %; ≥ 45 of 50 fails for a correct
/// estimator with probability ≈ 5 %, fixed seed), the mean reported error matches the exact
/// standard deviation of the mean to 10 %, and the scatter of the error estimates matches
/// the reported error of the error.
#[test]
fn ar1_mean_error_and_tau_int_are_right() {
    const REPS: u64 = 50;
    const N: usize = 20_000;
    for (k, rho) in [0.5, 0.9].into_iter().enumerate() {
        let estimates = ar1_estimates(rho, N, REPS, 100 + k as u64, GammaMethod::default());
        let tau = ar1_tau(rho);
        let exact_err = ar1_var_of_mean(rho, N).sqrt();

        let covered_mean = mean_coverage(&estimates, 0.0);
        let covered_tau = tau_coverage(&estimates, tau);
        assert!(
            covered_mean >= 45,
            "ρ {rho}: mean covered {covered_mean}/50"
        );
        assert!(covered_tau >= 45, "ρ {rho}: τ_int covered {covered_tau}/50");
        assert!(estimates.iter().all(|e| e.window_converged));

        let errs: Vec<f64> = estimates.iter().map(|e| e.err).collect();
        let ratio = mean(&errs) / exact_err;
        assert!(
            (ratio - 1.0).abs() < 0.10,
            "ρ {rho}: mean error {} vs exact {exact_err}",
            mean(&errs)
        );

        // The observed scatter of σ over 50 chains has a relative uncertainty of
        // 1/√98 ≈ 10 %; 4 of those bound the ratio to the reported error of the error.
        let err_errs: Vec<f64> = estimates.iter().map(|e| e.err_err).collect();
        let scatter_ratio = std_dev(&errs) / mean(&err_errs);
        assert!(
            (0.6..1.4).contains(&scatter_ratio),
            "ρ {rho}: scatter of σ {} vs reported δσ {}",
            std_dev(&errs),
            mean(&err_errs)
        );

        let taus: Vec<f64> = estimates.iter().map(|e| e.tau_int).collect();
        let tau_errs: Vec<f64> = estimates.iter().map(|e| e.tau_int_err).collect();
        // The mean of 50 τ estimates is known to δτ/√50; 4 of those plus the truncation
        // bias of the window e^{−W/τ} τ (well below one δτ at this N).
        let tau_se = mean(&tau_errs) / (REPS as f64).sqrt();
        assert!(
            (mean(&taus) - tau).abs() < 4.0 * tau_se + 0.02 * tau,
            "ρ {rho}: mean τ_int {} vs exact {tau} (se {tau_se})",
            mean(&taus)
        );
    }
}

/// The same 50 chains analysed without autocorrelation (window forced to 0) fail the
/// coverage test the automatic window passes: the test can tell a broken estimator.
#[test]
fn ignoring_autocorrelation_fails_the_coverage_test() {
    const N: usize = 20_000;
    let rho = 0.9;
    let naive = ar1_estimates(rho, N, 50, 101, GammaMethod::new(Window::Fixed(0)).unwrap());
    let covered_mean = mean_coverage(&naive, 0.0);
    let covered_tau = tau_coverage(&naive, ar1_tau(rho));
    assert!(covered_mean < 45, "naive error covered {covered_mean}/50");
    assert!(covered_tau < 45, "naive τ covered {covered_tau}/50");
    // Expected coverage with σ too small by √(2τ) = √19: P(|Z| < 2/√19) ≈ 35 %.
    assert!(covered_mean < 30, "naive error covered {covered_mean}/50");
}

/// f = ⟨a⟩/⟨b⟩ on independent Gaussians: the derived error equals the propagated
/// σ_f² = [σ_a²/μ_b² + μ_a² σ_b²/μ_b⁴]/N to 10 % and its 2σ interval covers μ_a/μ_b.
#[test]
fn derived_ratio_error_matches_propagation() {
    const N: usize = 10_000;
    const REPS: u64 = 50;
    let (mu_a, sd_a, mu_b, sd_b): (f64, f64, f64, f64) = (2.0, 1.0, 4.0, 0.5);
    let exact = ((sd_a * sd_a / (mu_b * mu_b) + mu_a * mu_a * sd_b * sd_b / mu_b.powi(4))
        / N as f64)
        .sqrt();
    let mut estimates = Vec::new();
    for r in 0..REPS {
        let mut rng = stream(200, r);
        let a: Vec<f64> = (0..N)
            .map(|_| mu_a + sd_a * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let b: Vec<f64> = (0..N)
            .map(|_| mu_b + sd_b * rng.sample::<f64, _>(StandardNormal))
            .collect();
        estimates.push(gamma_method_derived(&[&a, &b], |m| m[0] / m[1]).unwrap());
    }
    let errs: Vec<f64> = estimates.iter().map(|e| e.err).collect();
    assert!(
        (mean(&errs) / exact - 1.0).abs() < 0.10,
        "ratio error {} vs propagated {exact}",
        mean(&errs)
    );
    let covered = mean_coverage(&estimates, mu_a / mu_b);
    assert!(covered >= 45, "ratio covered {covered}/50");
}

/// The variance ⟨a²⟩ − ⟨a⟩² of N(μ, σ²) data: its error is √(2/N) σ² to 10 %, and the 2σ
/// interval covers σ².
#[test]
fn derived_variance_error_matches_exact() {
    const N: usize = 10_000;
    const REPS: u64 = 50;
    let (mu, sd) = (1.0, 2.0);
    let exact = (2.0 / N as f64).sqrt() * sd * sd;
    let mut estimates = Vec::new();
    for r in 0..REPS {
        let mut rng = stream(300, r);
        let a: Vec<f64> = (0..N)
            .map(|_| mu + sd * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let a2: Vec<f64> = a.iter().map(|x| x * x).collect();
        estimates.push(gamma_method_derived(&[&a, &a2], |m| m[1] - m[0] * m[0]).unwrap());
    }
    let errs: Vec<f64> = estimates.iter().map(|e| e.err).collect();
    assert!(
        (mean(&errs) / exact - 1.0).abs() < 0.10,
        "variance error {} vs exact {exact}",
        mean(&errs)
    );
    let covered = mean_coverage(&estimates, sd * sd);
    assert!(covered >= 45, "variance covered {covered}/50");
}

/// R = 4 independent AR(1) replicas: the combined error equals the exact √(Var(x̄_N)/R) to
/// 10 % on average over 30 repetitions, and τ_int is covered by its 2σ interval.
#[test]
fn replicas_combine_to_the_exact_error() {
    const N: usize = 5_000;
    const R: u64 = 4;
    const REPS: u64 = 30;
    let rho = 0.8;
    let exact = (ar1_var_of_mean(rho, N) / R as f64).sqrt();
    let mut estimates = Vec::new();
    for rep in 0..REPS {
        let chains: Vec<Vec<f64>> = (0..R).map(|r| ar1(rho, N, 400 + rep, r)).collect();
        let views: Vec<&[f64]> = chains.iter().map(Vec::as_slice).collect();
        estimates.push(gamma_method_replicas(&views).unwrap());
    }
    let errs: Vec<f64> = estimates.iter().map(|e| e.err).collect();
    assert!(
        (mean(&errs) / exact - 1.0).abs() < 0.10,
        "replica error {} vs exact {exact}",
        mean(&errs)
    );
    let covered = tau_coverage(&estimates, ar1_tau(rho));
    assert!(covered >= 27, "τ_int covered {covered}/30");
    let covered = mean_coverage(&estimates, 0.0);
    assert!(covered >= 27, "mean covered {covered}/30");
}

/// One replica is the plain analysis, and the derived identity F(a) = a reproduces the
/// primary analysis (the central difference of the identity is exact up to rounding).
#[test]
fn single_replica_and_identity_derivative_are_consistent() {
    let x = ar1(0.7, 3_000, 500, 0);
    let y = ar1(0.7, 2_000, 500, 1);
    let plain = gamma_method(&x).unwrap();
    let one_replica = gamma_method_replicas(&[&x]).unwrap();
    assert_eq!(plain, one_replica);

    let close = |a: &GammaEstimate, b: &GammaEstimate| {
        (a.mean - b.mean).abs() < 1e-12
            && (a.err / b.err - 1.0).abs() < 1e-9
            && (a.tau_int / b.tau_int - 1.0).abs() < 1e-9
            && a.window == b.window
    };
    let derived = gamma_method_derived(&[&x], |m| m[0]).unwrap();
    assert!(close(&plain, &derived), "{plain:?} vs {derived:?}");

    let both = gamma_method_replicas(&[&x, &y]).unwrap();
    let derived_both = gamma_method_derived_replicas(&[&[&x], &[&y]], |m| m[0]).unwrap();
    assert!(close(&both, &derived_both), "{both:?} vs {derived_both:?}");
    // Unequal replica lengths enter with their own weights: the mean is the global mean.
    let global = (x.iter().sum::<f64>() + y.iter().sum::<f64>()) / 5_000.0;
    assert!((both.mean - global).abs() < 1e-12);
}
