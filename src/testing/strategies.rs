//! Proptest strategies for fields, transform parameters and latent batches (behind the
//! default `proptest` feature).

use ndarray::Array2;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};

/// Largest |v| the field strategies produce: far outside a spline interval [−5, 5].
pub const FAR_FIELD: f64 = 50.0;

/// `n` field values: three in four uniform in (−scale, scale), one in four uniform in
/// (−50, 50), so that values far outside a spline interval are always exercised.
pub fn arb_field(n: usize, scale: f64) -> impl Strategy<Value = Vec<f64>> {
    vec(arb_value(scale), n)
}

fn arb_value(scale: f64) -> impl Strategy<Value = f64> {
    prop_oneof![3 => -scale..scale, 1 => -FAR_FIELD..FAR_FIELD]
}

/// Parameters for `n` sites of a transform with `k` parameters per site (length n·k),
/// uniform in (−scale, scale).
pub fn arb_theta(k: usize, n: usize, scale: f64) -> impl Strategy<Value = Vec<f64>> {
    vec(-scale..scale, n * k)
}

/// A transform test case `(v, θ)` with 1 ..= `max_sites` sites: v from [`arb_field`] with
/// `field_scale`, θ from [`arb_theta`] with `theta_scale`.
pub fn arb_sites(
    k: usize,
    max_sites: usize,
    field_scale: f64,
    theta_scale: f64,
) -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    (1..=max_sites.max(1))
        .prop_flat_map(move |n| (arb_field(n, field_scale), arb_theta(k, n, theta_scale)))
}

/// A `[rows, volume]` batch of latent values in f32, uniform in (−scale, scale).
pub fn arb_latent_batch(
    rows: usize,
    volume: usize,
    scale: f32,
) -> impl Strategy<Value = Array2<f32>> {
    vec(-scale..scale, rows * volume).prop_map(move |values| {
        Array2::from_shape_fn((rows, volume), |(r, c)| values[r * volume + c])
    })
}

/// Translations of a lattice with `extents` that a flow's partitions allow: components
/// that are multiples of `step` (2^levels for a multiscale flow, 1 otherwise), and with
/// `even_sum` an even sum of the components divided by `step` (a checkerboard at the
/// coarsest level). For [`check_flow_translation_equivariant`](crate::testing::check_flow_translation_equivariant).
pub fn arb_shift(
    extents: &[usize],
    step: usize,
    even_sum: bool,
) -> impl Strategy<Value = Vec<usize>> {
    let extents = extents.to_vec();
    let step = step.max(1);
    let counts: Vec<usize> = extents.iter().map(|&l| (l / step).max(1)).collect();
    counts
        .iter()
        .map(|&n| 0..n)
        .collect::<Vec<_>>()
        .prop_map(move |mut a| {
            if even_sum && !a.iter().sum::<usize>().is_multiple_of(2) {
                // Move the first axis on by one step (wrapping): the parity flips when
                // that axis has an even number of steps, else move the next one.
                if let Some(mu) = (0..a.len()).find(|&mu| counts[mu].is_multiple_of(2)) {
                    a[mu] = (a[mu] + 1) % counts[mu];
                }
            }
            a.iter()
                .zip(&extents)
                .map(|(&k, &l)| (k * step) % l)
                .collect()
        })
}

/// The proptest seed used unless `PROPTEST_RNG_SEED` is set: runs are reproducible by default.
pub const FIXED_SEED: u64 = 20_261_123;

/// A proptest configuration with `cases` cases per property (`PROPTEST_CASES` overrides it),
/// a fixed seed (unless `PROPTEST_RNG_SEED` is set), and failing cases saved to and replayed
/// from `regressions` (a path relative to the crate root, e.g.
/// `"proptest-regressions/my_layer.txt"`).
///
/// `PROPTEST_RNG_SEED=<u64>` runs the properties from another seed (proptest reads it; an
/// unparsable value makes proptest warn and draw a random seed): a failure found that way
/// is replayed by running again with the same value, and is also saved to `regressions`.
pub fn proptest_config(cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        rng_seed: match std::env::var("PROPTEST_RNG_SEED") {
            Ok(_) => ProptestConfig::default().rng_seed,
            Err(_) => RngSeed::Fixed(FIXED_SEED),
        },
        ..ProptestConfig::default()
    }
}
