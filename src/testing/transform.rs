//! Checks of the laws every [`PointwiseTransform`] must obey: C⁻¹(C(v)) = v with
//! consistent log-derivatives, log-derivative against finite differences, finite outputs,
//! and agreement with a reference implementation (typically a [`ForwardMode`] oracle).
//!
//! [`ForwardMode`]: crate::flow::transform::ForwardMode

use crate::flow::{PointwiseTransform, Real};
use crate::testing::gradcheck::random_loss_weights;

fn to_f64<T: Real>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

fn from_f64<T: Real>(x: f64) -> T {
    T::from_f64(x).unwrap_or_else(T::nan)
}

fn check_theta_length(k: usize, n: usize, theta: usize) -> Result<(), String> {
    if theta == n * k {
        Ok(())
    } else {
        Err(format!(
            "theta has {theta} values, expected {n} sites × {k} parameters"
        ))
    }
}

/// Checks C⁻¹(C(v)) = v and that the inverse log-derivative is minus the forward one, in
/// the float type `T` of the transform.
///
/// Per site, with y = C(v), ld = log|C'(v)| and (v', ld') from the inverse:
/// - `|v' − v| ≤ tol · (1 + |v| + |y| e^{−ld})`: the inverse is only as well conditioned as
///   1/C', so an error of order ε|y| in y legitimately becomes ε|y|/C' in v;
/// - `|ld' + ld| ≤ tol · (1 + |ld|) + Δ`, with Δ the largest change of the forward ld
///   between v and v ± (the allowance above): the inverse's ld belongs to the exact
///   preimage of the rounded y, which may sit anywhere in that neighbourhood. Δ vanishes
///   for affine transforms.
///
/// Suitable tolerances: about 1e-10 in f64 and 1e-5 in f32 (a few hundred ε: the log-slope
/// of a spline goes through a logarithm and a division).
pub fn check_transform_invertible<T: Real>(
    t: &dyn PointwiseTransform<T>,
    v: &[T],
    theta: &[T],
    tol: f64,
) -> Result<(), String> {
    let n = v.len();
    let RoundTrip {
        y,
        ld,
        back,
        ld_back,
    } = round_trip(t, v, theta)?;
    // ld over the neighbourhood v ± allowance that the round trip is allowed to land in.
    let allowance: Vec<f64> = (0..n)
        .map(|i| {
            let (vi, yi, li) = (to_f64(v[i]), to_f64(y[i]), to_f64(ld[i]));
            tol * (1.0 + vi.abs() + yi.abs() * (-li).exp())
        })
        .collect();
    let mut ld_drift = vec![0.0f64; n];
    for sign in [-1.0, 1.0] {
        let moved: Vec<T> = (0..n)
            .map(|i| from_f64::<T>(to_f64(v[i]) + sign * allowance[i]))
            .collect();
        let (mut y2, mut ld2) = (vec![T::zero(); n], vec![T::zero(); n]);
        t.forward(&moved, theta, &mut y2, &mut ld2);
        for i in 0..n {
            let change = (to_f64(ld2[i]) - to_f64(ld[i])).abs();
            ld_drift[i] = ld_drift[i].max(if change.is_finite() { change } else { 0.0 });
        }
    }
    for i in 0..n {
        let (vi, yi, li) = (to_f64(v[i]), to_f64(y[i]), to_f64(ld[i]));
        let (bi, lbi) = (to_f64(back[i]), to_f64(ld_back[i]));
        if !(yi.is_finite() && li.is_finite() && bi.is_finite() && lbi.is_finite()) {
            return Err(format!(
                "site {i}: non-finite value (v {vi}, y {yi}, ld {li}, v' {bi}, ld' {lbi})"
            ));
        }
        let dv = (bi - vi).abs();
        if dv > allowance[i] {
            return Err(format!(
                "site {i}: C⁻¹(C(v)) = {bi} for v = {vi} (y = {yi}, ld = {li}); error {dv:.3e} \
                 > allowed {:.3e}",
                allowance[i]
            ));
        }
        let dld = (lbi + li).abs();
        let allowed = tol * (1.0 + li.abs()) + ld_drift[i];
        if dld > allowed {
            return Err(format!(
                "site {i}: inverse ld {lbi} is not minus forward ld {li} (v = {vi}); \
                 difference {dld:.3e} > allowed {allowed:.3e}"
            ));
        }
    }
    Ok(())
}

/// Checks ld = log|∂C/∂v| against the central finite difference
/// `FD = [C(v + h) − C(v − h)] / 2h` of the f64 transform, per site:
/// `|log|FD| − ld| ≤ tol + 4ε (|C(v)| + |v| |FD|) / (h |FD|)`.
///
/// The second term is the rounding error of the difference quotient (of C and of v ± h),
/// which grows where C' is small; the truncation error O(h² C'''/C') must fit in `tol`.
/// A transform that declares its log-derivative independent of v
/// ([`PointwiseTransform::log_derivative_depends_on_input`] false) must also give the same
/// ld at v ± h, to 4ε.
/// With h = 1e-6, tol = 1e-6 suits splines and affine maps with parameters of order one.
pub fn check_transform_log_derivative(
    t: &dyn PointwiseTransform<f64>,
    v: &[f64],
    theta: &[f64],
    h: f64,
    tol: f64,
) -> Result<(), String> {
    let n = v.len();
    check_theta_length(t.params_per_site(), n, theta.len())?;
    let (mut y, mut ld) = (vec![0.0; n], vec![0.0; n]);
    let (mut up, mut down) = (vec![0.0; n], vec![0.0; n]);
    let (mut ld_up, mut ld_down) = (vec![0.0; n], vec![0.0; n]);
    let shifted = |delta: f64| v.iter().map(|&x| x + delta).collect::<Vec<f64>>();
    t.forward(v, theta, &mut y, &mut ld);
    t.forward(&shifted(h), theta, &mut up, &mut ld_up);
    t.forward(&shifted(-h), theta, &mut down, &mut ld_down);
    for i in 0..n {
        let moved = (ld_up[i] - ld[i]).abs().max((ld_down[i] - ld[i]).abs());
        if !t.log_derivative_depends_on_input() && moved > 4.0 * f64::EPSILON * (1.0 + ld[i].abs())
        {
            return Err(format!(
                "site {i} (v = {}): the transform says its log-derivative does not depend \
                 on v, but it moves by {moved:.3e} between v − h and v + h",
                v[i]
            ));
        }
        let fd = (up[i] - down[i]) / (2.0 * h);
        let log_fd = fd.abs().ln();
        let rounding = 4.0 * f64::EPSILON * (y[i].abs() + v[i].abs() * fd.abs()) / (h * fd.abs());
        let allowed = tol + rounding;
        if !(log_fd.is_finite() && ld[i].is_finite()) || (log_fd - ld[i]).abs() > allowed {
            return Err(format!(
                "site {i} (v = {}): ld = {} but log|finite difference| = {log_fd} \
                 (difference {:.3e} > {allowed:.3e})",
                v[i],
                ld[i],
                (log_fd - ld[i]).abs()
            ));
        }
    }
    Ok(())
}

/// Checks that forward, inverse (of the forward output) and backward (with unit upstream
/// gradients) produce only finite numbers.
pub fn check_transform_finite<T: Real>(
    t: &dyn PointwiseTransform<T>,
    v: &[T],
    theta: &[T],
) -> Result<(), String> {
    let n = v.len();
    let RoundTrip {
        y,
        ld,
        back,
        ld_back,
    } = round_trip(t, v, theta)?;
    let ones = vec![T::one(); n];
    let mut gv = vec![T::zero(); n];
    let mut gtheta = vec![T::zero(); theta.len()];
    t.backward(v, theta, &ones, &ones, &mut gv, &mut gtheta);
    let outputs: [(&str, &[T]); 6] = [
        ("y", &y),
        ("ld", &ld),
        ("inverse v", &back),
        ("inverse ld", &ld_back),
        ("∂L/∂v", &gv),
        ("∂L/∂θ", &gtheta),
    ];
    for (name, values) in outputs {
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(format!("{name}[{i}] = {:?} is not finite", values[i]));
        }
    }
    Ok(())
}

/// Checks a transform against a reference implementation of the same map (for instance
/// the built-in RQS against a [`ScalarMap`] of the spline formula wrapped in
/// [`ForwardMode`]): forward y and ld, and backward with random upstream gradients
/// g_y, g_ld ∈ (−1, 1) drawn from `seed`, each within `atol + rtol · max(|a|, |b|)`.
///
/// [`ScalarMap`]: crate::flow::transform::ScalarMap
/// [`ForwardMode`]: crate::flow::transform::ForwardMode
pub fn check_transform_matches_reference(
    t: &dyn PointwiseTransform<f64>,
    reference: &dyn PointwiseTransform<f64>,
    v: &[f64],
    theta: &[f64],
    seed: u64,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    let n = v.len();
    let k = t.params_per_site();
    if reference.params_per_site() != k {
        return Err(format!(
            "parameter counts differ: {k} vs reference {}",
            reference.params_per_site()
        ));
    }
    check_theta_length(k, n, theta.len())?;
    let close = |a: f64, b: f64| (a - b).abs() <= atol + rtol * a.abs().max(b.abs());
    let (mut y, mut ld) = (vec![0.0; n], vec![0.0; n]);
    let (mut y_ref, mut ld_ref) = (vec![0.0; n], vec![0.0; n]);
    t.forward(v, theta, &mut y, &mut ld);
    reference.forward(v, theta, &mut y_ref, &mut ld_ref);
    for i in 0..n {
        if !close(y[i], y_ref[i]) || !close(ld[i], ld_ref[i]) {
            return Err(format!(
                "site {i} (v = {}): forward (y, ld) = ({}, {}) vs reference ({}, {})",
                v[i], y[i], ld[i], y_ref[i], ld_ref[i]
            ));
        }
    }
    let (gy, gld) = random_loss_weights(n, seed);
    let (mut gv, mut gtheta) = (vec![0.0; n], vec![0.0; n * k]);
    let (mut gv_ref, mut gtheta_ref) = (vec![0.0; n], vec![0.0; n * k]);
    t.backward(v, theta, &gy, &gld, &mut gv, &mut gtheta);
    reference.backward(v, theta, &gy, &gld, &mut gv_ref, &mut gtheta_ref);
    for i in 0..n {
        if !close(gv[i], gv_ref[i]) {
            return Err(format!(
                "site {i} (v = {}): ∂L/∂v = {} vs reference {}",
                v[i], gv[i], gv_ref[i]
            ));
        }
        for j in 0..k {
            let (a, b) = (gtheta[i * k + j], gtheta_ref[i * k + j]);
            if !close(a, b) {
                return Err(format!(
                    "site {i} (v = {}), parameter {j}: ∂L/∂θ = {a} vs reference {b}",
                    v[i]
                ));
            }
        }
    }
    Ok(())
}

/// Forward outputs of `v` and the inverse of those outputs.
struct RoundTrip<T> {
    y: Vec<T>,
    ld: Vec<T>,
    back: Vec<T>,
    ld_back: Vec<T>,
}

/// Runs forward then inverse after checking the parameter length.
fn round_trip<T: Real>(
    t: &dyn PointwiseTransform<T>,
    v: &[T],
    theta: &[T],
) -> Result<RoundTrip<T>, String> {
    let n = v.len();
    check_theta_length(t.params_per_site(), n, theta.len())?;
    let (mut y, mut ld) = (vec![T::zero(); n], vec![T::zero(); n]);
    let (mut back, mut ld_back) = (vec![T::zero(); n], vec![T::zero(); n]);
    t.forward(v, theta, &mut y, &mut ld);
    t.inverse(&y, theta, &mut back, &mut ld_back);
    Ok(RoundTrip {
        y,
        ld,
        back,
        ld_back,
    })
}

/// Checks that the saved-state path of a transform matches the plain one bit for bit:
/// [`forward_saving`](PointwiseTransform::forward_saving) gives the same y and ld as
/// [`forward`](PointwiseTransform::forward), and
/// [`backward_saved`](PointwiseTransform::backward_saved) from that state adds the same
/// gradients as [`backward`](PointwiseTransform::backward), into gradient buffers that
/// already hold values (both passes accumulate). Passes trivially for transforms that
/// save nothing.
pub fn check_saved_backward<T: Real>(
    t: &dyn PointwiseTransform<T>,
    v: &[T],
    theta: &[T],
    gy: &[T],
    gld: &[T],
) -> Result<(), String> {
    let n = v.len();
    let k = t.params_per_site();
    check_theta_length(k, n, theta.len())?;
    if gy.len() != n || gld.len() != n {
        return Err(format!("{n} sites need {n} values of gy and of gld"));
    }
    let (mut y, mut ld) = (vec![T::zero(); n], vec![T::zero(); n]);
    t.forward(v, theta, &mut y, &mut ld);
    let mut saved = vec![T::zero(); t.saved_len(n)];
    let (mut y_s, mut ld_s) = (vec![T::zero(); n], vec![T::zero(); n]);
    t.forward_saving(v, theta, &mut y_s, &mut ld_s, &mut saved);
    let same = |a: T, b: T| a == b || (a.is_nan() && b.is_nan());
    for i in 0..n {
        if !same(y[i], y_s[i]) || !same(ld[i], ld_s[i]) {
            return Err(format!(
                "site {i}: forward_saving gives (y, ld) = ({:?}, {:?}), forward ({:?}, {:?})",
                y_s[i], ld_s[i], y[i], ld[i]
            ));
        }
    }
    // Start from non-zero gradients: both passes must add, not overwrite.
    let start =
        |len: usize| -> Vec<T> { (0..len).map(|j| from_f64(0.25 + j as f64 * 1e-3)).collect() };
    let (mut gv, mut gtheta) = (start(n), start(n * k));
    let (mut gv_s, mut gtheta_s) = (start(n), start(n * k));
    t.backward(v, theta, gy, gld, &mut gv, &mut gtheta);
    t.backward_saved(v, theta, &saved, gy, gld, &mut gv_s, &mut gtheta_s);
    if let Some(i) = (0..n).find(|&i| !same(gv[i], gv_s[i])) {
        return Err(format!(
            "site {i}: backward_saved adds ∂L/∂v {:?}, backward {:?}",
            gv_s[i], gv[i]
        ));
    }
    if let Some(j) = (0..n * k).find(|&j| !same(gtheta[j], gtheta_s[j])) {
        return Err(format!(
            "parameter {j} (site {}): backward_saved adds ∂L/∂θ {:?}, backward {:?}",
            j / k,
            gtheta_s[j],
            gtheta[j]
        ));
    }
    Ok(())
}
