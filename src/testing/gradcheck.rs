//! Gradient checks: central finite differences of a scalar function, a tolerance-based
//! comparison that reports the worst offending component, and a check of a
//! [`PointwiseTransform`]'s backward pass against finite differences of a random linear
//! loss of its outputs.

use rand::RngExt;

use crate::flow::PointwiseTransform;
use crate::rng::rng_from_seed;

/// Central finite-difference gradient of `f` at `x` with step `h`:
/// `g_i = [f(x + h e_i) − f(x − h e_i)] / (2h)`.
///
/// The truncation error is O(h² f'''), the rounding error O(ε |f| / h); for smooth f64
/// functions of order one, h ≈ 1e-5 balances the two at about 1e-10.
pub fn finite_difference_gradient(mut f: impl FnMut(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    let mut grad = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        probe[i] = x[i] + h;
        let up = f(&probe);
        probe[i] = x[i] - h;
        let down = f(&probe);
        probe[i] = x[i];
        grad.push((up - down) / (2.0 * h));
    }
    grad
}

/// The component that exceeds its tolerance by the largest factor.
struct Mismatch {
    index: usize,
    analytic: f64,
    numeric: f64,
    ratio: f64,
}

/// Finds the worst component of `analytic` vs `numeric` outside its tolerance, if any.
fn worst_mismatch(
    analytic: &[f64],
    numeric: &[f64],
    rtol: f64,
    atol: f64,
) -> Result<Option<Mismatch>, String> {
    if analytic.len() != numeric.len() {
        return Err(format!(
            "gradient lengths differ: analytic {} vs numeric {}",
            analytic.len(),
            numeric.len()
        ));
    }
    let mut worst: Option<Mismatch> = None;
    for (index, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        if !a.is_finite() || !n.is_finite() {
            return Err(format!(
                "component {index} is not finite: analytic {a}, numeric {n}"
            ));
        }
        let ratio = (a - n).abs() / (atol + rtol * a.abs().max(n.abs()));
        if ratio > 1.0 && worst.as_ref().is_none_or(|w| ratio > w.ratio) {
            worst = Some(Mismatch {
                index,
                analytic: a,
                numeric: n,
                ratio,
            });
        }
    }
    Ok(worst)
}

fn describe(m: &Mismatch, rtol: f64, atol: f64) -> String {
    format!(
        "analytic {} vs numeric {} (difference {:.3e} is {:.1}× the allowed \
         atol {atol:e} + rtol {rtol:e}·max(|a|, |n|))",
        m.analytic,
        m.numeric,
        (m.analytic - m.numeric).abs(),
        m.ratio
    )
}

/// Checks `|analytic_i − numeric_i| ≤ atol + rtol · max(|analytic_i|, |numeric_i|)` for every
/// component, and that both are finite.
///
/// Returns a message naming the worst component (by the ratio of its error to its allowance)
/// instead of panicking, so that it can be used with `prop_assert!` or `?`.
pub fn assert_gradients_close(
    analytic: &[f64],
    numeric: &[f64],
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    match worst_mismatch(analytic, numeric, rtol, atol)? {
        None => Ok(()),
        Some(m) => Err(format!(
            "component {}: {}",
            m.index,
            describe(&m, rtol, atol)
        )),
    }
}

/// Step and tolerances of [`check_transform_gradients`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f64,
    /// Relative tolerance (see [`assert_gradients_close`]).
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Seed of the random loss weights.
    pub seed: u64,
}

impl Default for GradCheck {
    /// Step 1e-5, rtol 1e-5, atol 1e-7, seed 0: comfortably above the finite-difference
    /// error of smooth transforms with parameters of order one, far below any real bug.
    fn default() -> Self {
        GradCheck {
            step: 1e-5,
            rtol: 1e-5,
            atol: 1e-7,
            seed: 0,
        }
    }
}

/// The random loss L = Σ_i (a_i y_i + b_i ld_i) with a_i, b_i uniform in (−1, 1), drawn
/// from `seed`; returns (a, b).
pub fn random_loss_weights(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = rng_from_seed(seed);
    let a = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    (a, b)
}

/// Evaluates L = Σ (a_i y_i + b_i ld_i) for the transform at (v, θ).
fn linear_loss(
    t: &dyn PointwiseTransform<f64>,
    v: &[f64],
    theta: &[f64],
    a: &[f64],
    b: &[f64],
    y: &mut [f64],
    ld: &mut [f64],
) -> f64 {
    t.forward(v, theta, y, ld);
    y.iter()
        .zip(ld.iter())
        .zip(a.iter().zip(b))
        .map(|((&yi, &li), (&ai, &bi))| ai * yi + bi * li)
        .sum()
}

/// Checks `t.backward` against central finite differences of the scalar loss
/// L = Σ_i (a_i y_i + b_i ld_i) with random weights a_i, b_i ∈ (−1, 1) (from `cfg.seed`),
/// with respect to every v_i and every θ_j, within `cfg.rtol` / `cfg.atol`.
///
/// Also checks that `backward` *adds* to its output buffers (it is called on buffers
/// pre-filled with a known offset). Finite differences are only meaningful where the
/// transform is smooth: a point within `cfg.step` of a kink (a spline knot, s = 0 for
/// [`crate::flow::transform::Z2Affine`]) may fail the check legitimately.
pub fn check_transform_gradients(
    t: &dyn PointwiseTransform<f64>,
    v: &[f64],
    theta: &[f64],
    cfg: &GradCheck,
) -> Result<(), String> {
    let n = v.len();
    let k = t.params_per_site();
    if theta.len() != n * k {
        return Err(format!(
            "theta has {} values, expected {n} sites × {k} parameters",
            theta.len()
        ));
    }
    let (a, b) = random_loss_weights(n, cfg.seed);
    let (mut y, mut ld) = (vec![0.0; n], vec![0.0; n]);

    const OFFSET: f64 = 0.25;
    let mut gv = vec![OFFSET; n];
    let mut gtheta = vec![OFFSET; n * k];
    t.backward(v, theta, &a, &b, &mut gv, &mut gtheta);
    gv.iter_mut()
        .chain(gtheta.iter_mut())
        .for_each(|g| *g -= OFFSET);

    let num_gv = finite_difference_gradient(
        |vp| linear_loss(t, vp, theta, &a, &b, &mut y, &mut ld),
        v,
        cfg.step,
    );
    let num_gtheta = finite_difference_gradient(
        |tp| linear_loss(t, v, tp, &a, &b, &mut y, &mut ld),
        theta,
        cfg.step,
    );
    if let Some(m) = worst_mismatch(&gv, &num_gv, cfg.rtol, cfg.atol)? {
        return Err(format!(
            "∂L/∂v at site {} (v = {}): {}",
            m.index,
            v[m.index],
            describe(&m, cfg.rtol, cfg.atol)
        ));
    }
    if let Some(m) = worst_mismatch(&gtheta, &num_gtheta, cfg.rtol, cfg.atol)? {
        let site = m.index / k;
        return Err(format!(
            "∂L/∂θ at site {site}, parameter {} (v = {}): {}",
            m.index % k,
            v[site],
            describe(&m, cfg.rtol, cfg.atol)
        ));
    }
    Ok(())
}
