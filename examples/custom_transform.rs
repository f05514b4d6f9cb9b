//! A user-defined pointwise transform: the sinh–arcsinh map
//! C(v; ε, δ) = sinh(e^δ · asinh(v) − ε), written once as a `ScalarMap` and turned into a
//! full `PointwiseTransform` (log-derivative, backward pass, inverse) by `ForwardMode`.
//! The program then runs the `latflow::testing` checks on seeded random cases and prints a
//! pass/fail summary; it exits with status 1 if any check fails.
//!
//! Run with `cargo run --release --example custom_transform`.

use latflow::flow::PointwiseTransform;
use latflow::flow::transform::{ForwardMode, ScalarMap};
use latflow::rng::rng_from_seed;
use latflow::testing::{
    GradCheck, check_transform_finite, check_transform_gradients, check_transform_invertible,
    check_transform_log_derivative, to_f32,
};
use num_traits::Float;
use rand::RngExt;

/// C(v; ε, δ) = sinh(e^δ asinh(v) − ε): strictly increasing in v for every (ε, δ), with
/// tails that grow like v^{e^δ}. Parameters per site: `[ε, δ]`.
struct SinhArcsinh;

impl ScalarMap for SinhArcsinh {
    fn params_per_site(&self) -> usize {
        2
    }

    fn eval<F: Float>(&self, v: F, theta: &[F]) -> F {
        (theta[1].exp() * v.asinh() - theta[0]).sinh()
    }
}

fn main() {
    let transform = match ForwardMode::new(SinhArcsinh) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot build the transform: {e}");
            std::process::exit(1);
        }
    };
    let k = PointwiseTransform::<f64>::params_per_site(&transform);

    let cases = 200;
    let sites = 16;
    let mut rng = rng_from_seed(2024);
    // (name, failures, first failure message)
    let mut results: Vec<(&str, usize, Option<String>)> = [
        "invertible (f64, tol 1e-10)",
        "invertible (f32, tol 1e-5)",
        "log-derivative vs finite differences (h 1e-6, tol 1e-6)",
        "backward vs finite differences (h 1e-5, rtol 1e-5, atol 1e-6)",
        "all outputs finite",
    ]
    .into_iter()
    .map(|name| (name, 0, None))
    .collect();

    for case in 0..cases {
        // Field values up to |v| = 20, parameters ε ∈ (−1, 1), δ ∈ (−0.7, 0.7).
        let v: Vec<f64> = (0..sites).map(|_| rng.random_range(-20.0..20.0)).collect();
        let theta: Vec<f64> = (0..sites * k)
            .map(|j| {
                let bound = if j % 2 == 0 { 1.0 } else { 0.7 };
                rng.random_range(-bound..bound)
            })
            .collect();
        let grad = GradCheck {
            step: 1e-5,
            rtol: 1e-5,
            atol: 1e-6,
            seed: case,
        };
        let outcomes = [
            check_transform_invertible::<f64>(&transform, &v, &theta, 1e-10),
            check_transform_invertible::<f32>(&transform, &to_f32(&v), &to_f32(&theta), 1e-5),
            check_transform_log_derivative(&transform, &v, &theta, 1e-6, 1e-6),
            check_transform_gradients(&transform, &v, &theta, &grad),
            check_transform_finite::<f64>(&transform, &v, &theta),
        ];
        for (result, outcome) in results.iter_mut().zip(outcomes) {
            if let Err(message) = outcome {
                result.1 += 1;
                result.2.get_or_insert(format!("case {case}: {message}"));
            }
        }
    }

    println!("sinh-arcsinh transform via ForwardMode: {cases} cases × {sites} sites");
    let mut all_passed = true;
    for (name, failures, first) in &results {
        let status = if *failures == 0 { "pass" } else { "FAIL" };
        println!("  {status}  {name}  ({failures} failing cases)");
        if let Some(message) = first {
            println!("        first failure: {message}");
        }
        all_passed &= *failures == 0;
    }
    if all_passed {
        println!("all checks passed");
    } else {
        std::process::exit(1);
    }
}
