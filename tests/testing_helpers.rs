//! The public test helpers in `latflow::testing` checked on cases with known answers, and
//! shown to fail on deliberately wrong inputs.

use latflow::testing::{assert_gradients_close, finite_difference_gradient, random_loss_weights};

#[test]
fn finite_difference_gradient_of_a_known_function() {
    // f = x0² x1 + sin x2, ∇f = (2 x0 x1, x0², cos x2).
    let f = |x: &[f64]| x[0] * x[0] * x[1] + x[2].sin();
    let x = [1.3, -0.7, 0.4];
    let exact = [2.0 * 1.3 * -0.7, 1.3 * 1.3, 0.4f64.cos()];
    let numeric = finite_difference_gradient(f, &x, 1e-5);
    // Truncation error h²/6 |f'''| ≤ 1e-10 here; rounding ε/h ≈ 1e-11.
    for (n, e) in numeric.iter().zip(exact) {
        assert!((n - e).abs() < 1e-9, "{n} vs {e}");
    }
    assert!(assert_gradients_close(&exact, &numeric, 0.0, 1e-9).is_ok());
}

#[test]
fn assert_gradients_close_names_the_worst_component() {
    let analytic = [1.0, 2.0, 3.0, 4.0];
    let numeric = [1.0, 2.001, 3.1, 4.0];
    let err = assert_gradients_close(&analytic, &numeric, 1e-6, 1e-6).unwrap_err();
    assert!(err.starts_with("component 2:"), "{err}");
    assert!(assert_gradients_close(&analytic, &numeric, 0.05, 0.0).is_ok());
    assert!(assert_gradients_close(&analytic, &numeric[..3], 1.0, 1.0).is_err());
    assert!(assert_gradients_close(&[f64::NAN], &[f64::NAN], 1.0, 1.0).is_err());
}

#[test]
fn random_loss_weights_are_seeded_and_in_range() {
    let (a, b) = random_loss_weights(100, 5);
    assert_eq!(random_loss_weights(100, 5), (a.clone(), b.clone()));
    assert_ne!(random_loss_weights(100, 6).0, a);
    assert!(a.iter().chain(&b).all(|x| (-1.0..1.0).contains(x)));
}
