//! Statistical checks of `latflow::stats` against processes with known answers: AR(1) chains
//! (exact τ_int and exact variance of the mean) and independent Gaussian data (exact or
//! propagated errors of derived quantities), accept/reject histories with known acceptance,
//! and importance weights with known moments.

use latflow::rng::stream;
use latflow::stats::{
    GammaEstimate, GammaMethod, Histogram, SignSplitHistogram, Window, blocked_bootstrap,
    ess_fraction, gamma_method, gamma_method_derived, gamma_method_derived_replicas,
    gamma_method_replicas, rejection_autocorrelation, reweighted_mean,
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

/// Blocked bootstrap of the mean of 10 AR(1) chains (ρ = 0.9, τ_int = 9.5, N = 10⁵, blocks
/// of 500 ≫ τ): the average error matches the exact one within 7 % (4× the expected
/// scatter 1/√(2·200 blocks) ⊕ 1/√(2·1000 resamples), over √10 chains). Blocks of 1 ignore
/// the autocorrelation and miss by √(2τ) ≈ 4.4.
#[test]
fn blocked_bootstrap_error_of_ar1_mean() {
    const N: usize = 100_000;
    let rho = 0.9;
    let exact = ar1_var_of_mean(rho, N).sqrt();
    let mut ratios = Vec::new();
    let mut naive_ratios = Vec::new();
    for rep in 0..10 {
        let x = ar1(rho, N, 600, rep);
        let id = |m: &[f64]| m[0];
        let b = blocked_bootstrap(&[&x], id, 500, 1000, rep).unwrap();
        assert_eq!(b.n_blocks, 200);
        assert!((b.mean - mean(&x)).abs() < 1e-12);
        ratios.push(b.err / exact);
        naive_ratios.push(blocked_bootstrap(&[&x], id, 1, 200, rep).unwrap().err / exact);
    }
    assert!(
        (mean(&ratios) - 1.0).abs() < 0.07,
        "bootstrap/exact error ratio {}",
        mean(&ratios)
    );
    let expected_naive = 1.0 / (2.0 * ar1_tau(rho)).sqrt();
    assert!(
        (mean(&naive_ratios) / expected_naive - 1.0).abs() < 0.07,
        "unblocked ratio {} vs {expected_naive}",
        mean(&naive_ratios)
    );
}

/// An independence sampler with constant acceptance a has P(t rejections) = (1−a)^t and
/// τ_rej = 1/a − ½ exactly: the estimate agrees within 4σ for a = 0.3, 0.6, 0.9 (N = 10⁵),
/// and the lower bound 1/Ā − ½ agrees too. A one-step shift of the lags (τ off by
/// (1−a)/a − (1−a)²/a = 1 − a) would be 0.7/0.08 ≈ 9σ away at a = 0.3.
#[test]
fn tau_rej_of_constant_acceptance() {
    use rand::RngExt;
    for (k, a) in [0.3, 0.6, 0.9].into_iter().enumerate() {
        let mut rng = stream(700, k as u64);
        let history: Vec<bool> = (0..100_000).map(|_| rng.random::<f64>() < a).collect();
        let r = rejection_autocorrelation(&history).unwrap();
        let exact = 1.0 / a - 0.5;
        assert!(r.window_converged);
        assert!(
            (r.tau_rej - exact).abs() < 4.0 * r.tau_rej_err,
            "a {a}: τ_rej {} ± {} vs {exact}",
            r.tau_rej,
            r.tau_rej_err
        );
        // Ā is binomial: 1/Ā − ½ has error ≈ √(a(1−a)/N)/a².
        let bound_err = (a * (1.0 - a) / 1e5).sqrt() / (a * a);
        assert!((r.tau_lower_bound - exact).abs() < 4.0 * bound_err);
        assert!((r.acceptance - a).abs() < 4.0 * (a * (1.0 - a) / 1e5).sqrt());
    }
}

/// A real independence Metropolis sampler (target N(0,1), proposal N(0, 0.6²), too narrow)
/// has a state-dependent acceptance: τ_rej exceeds the bound 1/Ā − ½ by many σ (Jensen),
/// and the longest rejection run is long.
#[test]
fn tau_rej_of_a_narrow_independence_sampler() {
    let width: f64 = 0.6;
    let mut rng = stream(800, 0);
    let log_w = |x: f64| -0.5 * x * x + 0.5 * (x / width).powi(2);
    let mut x: f64 = 0.0;
    let mut history = Vec::new();
    for _ in 0..200_000 {
        let y = width * rng.sample::<f64, _>(StandardNormal);
        let accept = rng.random::<f64>().ln() < log_w(y) - log_w(x);
        if accept {
            x = y;
        }
        history.push(accept);
    }
    let r = rejection_autocorrelation(&history).unwrap();
    assert!(
        r.tau_rej - r.tau_lower_bound > 4.0 * r.tau_rej_err,
        "τ_rej {} ± {} vs bound {}",
        r.tau_rej,
        r.tau_rej_err,
        r.tau_lower_bound
    );
    assert!(r.longest_rejection_run > 20);
}

/// Log-weights ~ N(0, s²) have ESS → E[w]²/E[w²] = e^{−s²}; the estimate agrees within 4σ
/// (σ from the Γ-method on the derived quantity ⟨w⟩²/⟨w²⟩). Equal weights give exactly 1.
#[test]
fn ess_fraction_of_lognormal_weights() {
    let s: f64 = 0.5;
    let mut rng = stream(900, 0);
    let log_w: Vec<f64> = (0..100_000)
        .map(|_| 40.0 + s * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let ess = ess_fraction(&log_w).unwrap();
    let w: Vec<f64> = log_w.iter().map(|l| (l - 40.0).exp()).collect();
    let w2: Vec<f64> = w.iter().map(|x| x * x).collect();
    let derived = gamma_method_derived(&[&w, &w2], |m| m[0] * m[0] / m[1]).unwrap();
    assert!((ess - derived.mean).abs() < 1e-12);
    let exact = (-s * s).exp();
    assert!(
        (ess - exact).abs() < 4.0 * derived.err,
        "ESS {ess} ± {} vs {exact}",
        derived.err
    );
    assert_eq!(ess_fraction(&[-7.5; 1000]).unwrap(), 1.0);
}

/// Reweighting N(0,1) samples to N(μ,1) with log w = μx − μ²/2: the mean is μ within 4σ and
/// the error matches the asymptotic √(e^{μ²}(1+μ²)/N) to 10 %.
#[test]
fn reweighted_mean_of_shifted_gaussian() {
    const N: usize = 100_000;
    let mu: f64 = 0.5;
    let mut rng = stream(1000, 0);
    let x: Vec<f64> = (0..N).map(|_| rng.sample(StandardNormal)).collect();
    let log_w: Vec<f64> = x.iter().map(|x| mu * x - 0.5 * mu * mu).collect();
    let e = reweighted_mean(&x, &log_w).unwrap();
    let expected_err = ((mu * mu).exp() * (1.0 + mu * mu) / N as f64).sqrt();
    assert!((e.mean - mu).abs() < 4.0 * e.err, "{e:?}");
    assert!(
        (e.err / expected_err - 1.0).abs() < 0.10,
        "error {} vs {expected_err}",
        e.err
    );
}

/// Probability of N(0,1) in [a, b) by Simpson's rule (error far below the test's σ).
fn normal_probability(a: f64, b: f64) -> f64 {
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let n = 64;
    let h = (b - a) / n as f64;
    let inner: f64 = (1..n)
        .map(|k| pdf(a + k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    (pdf(a) + pdf(b) + inner) * h / 3.0
}

/// 10⁵ standard normal values in 40 bins on [−4, 4): every bin count is within 4 binomial σ
/// of N p_k, the outside counts too; the sign split of ±|x| values is ½ within 4σ, and a
/// one-sided sample gives 1.
#[test]
fn histograms_of_gaussian_values() {
    const N: usize = 100_000;
    let mut rng = stream(1100, 0);
    let x: Vec<f64> = (0..N).map(|_| rng.sample(StandardNormal)).collect();
    let mut h = Histogram::new(-4.0, 4.0, 40).unwrap();
    h.add_all(&x);
    let edges = h.edges();
    for (k, &count) in h.counts().iter().enumerate() {
        let p = normal_probability(edges[k], edges[k + 1]);
        let sigma = (N as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - N as f64 * p).abs() < 4.0 * sigma,
            "bin {k}: {count} vs {}",
            N as f64 * p
        );
    }
    let (under, over, bad) = h.outside();
    let tail = 0.5 - normal_probability(0.0, 4.0);
    let tail_sigma = (N as f64 * tail).sqrt();
    assert!((under as f64 - N as f64 * tail).abs() < 4.0 * tail_sigma);
    assert!((over as f64 - N as f64 * tail).abs() < 4.0 * tail_sigma);
    assert_eq!(bad, 0);
    assert_eq!(h.total(), N as u64);

    let mut split = SignSplitHistogram::new(4.0, 20).unwrap();
    x.iter().for_each(|&m| split.add(m));
    let sigma = 0.5 / (N as f64).sqrt();
    assert!((split.fraction_positive() - 0.5).abs() < 4.0 * sigma);
    let mut one_sided = SignSplitHistogram::new(4.0, 20).unwrap();
    x.iter().for_each(|&m| one_sided.add(m.abs()));
    assert_eq!(one_sided.fraction_positive(), 1.0);
}
