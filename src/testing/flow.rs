//! Checks of whole flows: invertibility with consistent log-determinants, the exact
//! Jacobian of a [`FlowModel`] by forward mode ([`Dual`] numbers) and its log-determinant
//! (nalgebra's LU) against the flow's own, a finite-difference fallback for any [`Flow`],
//! Z2 equivariance and translation equivariance.

use ndarray::{Array2, ArrayView2};

use crate::flow::{Flow, FlowFloat, FlowModel, Workspace};
use crate::lattice::Lattice;
use crate::tape::Dual;

fn check_shape(flow: &dyn Flow, cols: usize) -> Result<(), String> {
    let volume = flow.lattice().volume();
    if cols == volume {
        Ok(())
    } else {
        Err(format!(
            "batch has {cols} columns, the flow's lattice has {volume} sites"
        ))
    }
}

/// Checks f⁻¹(f(z)) = z and that the inverse log-det is minus the forward one, row by row.
///
/// With φ = f(z), z' = f⁻¹(φ) and φ' = f(z'), a row passes if every entry has
/// `|z' − z| ≤ tol · (1 + |z|)`, or else (an ill-conditioned flow, where f32 rounding of φ
/// is legitimately amplified by the inverse Jacobian) if every entry has
/// `|φ' − φ| ≤ tol · (1 + |φ|)`: the inverse then returned a true preimage of φ to
/// working precision. Log-dets must satisfy `|ld_f + ld_i| ≤ tol · (V + |ld_f|)` (V the
/// volume: a log-det sums V rounded per-site terms).
///
/// For f32 flows of a few layers, tol = 1e-4 is ample; a missing term in an inverse
/// shows up at order one.
pub fn check_flow_invertible(flow: &dyn Flow, z: ArrayView2<f32>, tol: f64) -> Result<(), String> {
    check_shape(flow, z.ncols())?;
    let volume = z.ncols() as f64;
    let (phi, ld_forward) = flow.forward(z).map_err(|e| e.to_string())?;
    let (back, ld_inverse) = flow.inverse(phi.view()).map_err(|e| e.to_string())?;
    let (phi_again, _) = flow.forward(back.view()).map_err(|e| e.to_string())?;
    let within = |a: f32, b: f32| ((a as f64) - (b as f64)).abs() <= tol * (1.0 + (b as f64).abs());
    for (row, (z_row, back_row)) in z.rows().into_iter().zip(back.rows()).enumerate() {
        let Some(site) = z_row
            .iter()
            .zip(&back_row)
            .position(|(&a, &b)| !within(b, a))
        else {
            continue;
        };
        let phi_row = phi.row(row);
        let reproduces = phi_again
            .row(row)
            .iter()
            .zip(&phi_row)
            .all(|(&again, &p)| within(again, p));
        if !reproduces {
            return Err(format!(
                "row {row}, site {site}: f⁻¹(f(z)) = {} for z = {} (φ = {}), and f(f⁻¹(φ)) \
                 does not reproduce φ either",
                back_row[site], z_row[site], phi_row[site]
            ));
        }
    }
    for (row, (&lf, &li)) in ld_forward.iter().zip(&ld_inverse).enumerate() {
        if !(lf + li).abs().le(&(tol * (volume + lf.abs()))) {
            return Err(format!(
                "row {row}: forward log-det {lf} but inverse log-det {li}"
            ));
        }
    }
    Ok(())
}

/// log|det A| of the row-major `n × n` matrix `a` by nalgebra's LU decomposition with
/// partial pivoting (Σ log|u_ii|, so no overflow); −∞ for a singular matrix. `a` is left
/// unchanged.
pub fn log_abs_det(a: &mut [f64], n: usize) -> f64 {
    debug_assert_eq!(a.len(), n * n);
    log_abs_det_of(nalgebra::DMatrix::from_row_slice(n, n, a))
}

/// log|det J| of a square matrix (see [`log_abs_det`]); NaN if `jacobian` is not square.
pub fn jacobian_log_abs_det(jacobian: ArrayView2<f64>) -> f64 {
    let (n, m) = jacobian.dim();
    if n != m {
        return f64::NAN;
    }
    log_abs_det_of(nalgebra::DMatrix::from_fn(n, n, |i, j| jacobian[[i, j]]))
}

fn log_abs_det_of(matrix: nalgebra::DMatrix<f64>) -> f64 {
    let lu = matrix.lu();
    lu.u().diagonal().iter().map(|u| u.abs().ln()).sum()
}

/// The exact Jacobian of a map of rows at the row `z_row`, by forward mode: `map` receives
/// V = `z_row.len()` copies of the row as [`Dual`] numbers, row j seeded with the tangent e_j,
/// and must return one output row per input row. Entry `[i, j]` of the result is ∂φ_i/∂z_j.
///
/// Returns `None` unless the output has V rows.
pub fn forward_mode_jacobian(
    z_row: &[f64],
    map: impl FnOnce(ArrayView2<Dual>) -> Array2<Dual>,
) -> Option<Array2<f64>> {
    let v = z_row.len();
    let seeded = Array2::from_shape_fn((v, v), |(j, i)| {
        Dual::new(z_row[i], if i == j { 1.0 } else { 0.0 })
    });
    let phi = map(seeded.view());
    if phi.nrows() != v {
        return None;
    }
    Some(Array2::from_shape_fn((phi.ncols(), v), |(i, j)| {
        phi[[j, i]].tangent()
    }))
}

/// A flow's exact Jacobian at one latent configuration, with what the same pass returned.
#[derive(Clone, Debug)]
pub struct FlowJacobian {
    /// φ = f(z).
    pub phi: Vec<f64>,
    /// ∂φ_i/∂z_j at `[i, j]`, exact to f64 rounding.
    pub jacobian: Array2<f64>,
    /// The flow's own log|det ∂φ/∂z| from the same (f64) pass.
    pub log_det: f64,
}

/// The exact Jacobian ∂φ/∂z of `model` at `z_row`, by one forward pass on [`Dual`] numbers
/// with the model's parameters (f32, widened exactly to f64) and the V tangent directions
/// batched as V rows.
pub fn flow_jacobian(model: &FlowModel, z_row: &[f64]) -> crate::Result<FlowJacobian> {
    let params: Vec<Dual> = model
        .params()
        .iter()
        .map(|&p| Dual::constant(p.into()))
        .collect();
    let mut ws = Workspace::per_thread();
    let mut outcome = Ok((Vec::new(), 0.0));
    let jacobian = forward_mode_jacobian(z_row, |z| match model.forward_in(&params, z, &mut ws) {
        Ok((phi, log_det)) => {
            let values = phi.row(0).iter().map(|p| p.value()).collect();
            outcome = Ok((values, log_det[0]));
            phi.to_owned()
        }
        Err(e) => {
            outcome = Err(e);
            Array2::zeros((0, 0))
        }
    });
    if z_row.is_empty() {
        return Err(crate::Error::Shape("empty latent row".into()));
    }
    let (phi, log_det) = outcome?;
    let jacobian = jacobian.ok_or_else(|| crate::Error::Shape("no Jacobian rows".into()))?;
    Ok(FlowJacobian {
        phi,
        jacobian,
        log_det,
    })
}

/// Relative tolerance of [`check_flow_log_det_exact`] for a flow evaluated in f64: the
/// forward-mode Jacobian is exact to rounding, so log-dets agree to about 1e-13 relative;
/// 1e-9 leaves room for ill-conditioned Jacobians and still catches any missing term.
pub const LOG_DET_RTOL_F64: f64 = 1e-9;

/// Relative tolerance of [`check_flow_log_det_exact`] for a flow evaluated in f32: the
/// network outputs and the per-site log-derivatives carry f32 rounding (ε₃₂ ≈ 6e-8) summed
/// over sites and layers; 1e-4 is ample for flows of a few layers on small lattices.
pub const LOG_DET_RTOL_F32: f64 = 1e-4;

/// Checks a claimed log|det ∂φ/∂z| against log|det J| of a Jacobian:
/// `|claimed − log|det J|| ≤ rtol · (1 + |log|det J||)`.
pub fn check_log_det_against_jacobian(
    claimed: f64,
    jacobian: ArrayView2<f64>,
    rtol: f64,
) -> Result<(), String> {
    let exact = jacobian_log_abs_det(jacobian);
    let allowed = rtol * (1.0 + exact.abs());
    if (claimed - exact).abs() <= allowed {
        Ok(())
    } else {
        Err(format!(
            "log-det {claimed} but the exact Jacobian gives {exact} (difference {:.3e} > \
             {allowed:.3e} = {rtol:e}·(1 + |log|det J||))",
            (claimed - exact).abs()
        ))
    }
}

/// Checks the forward log-det of `model` evaluated in the float type `T` (f32 as in
/// sampling and training, or f64) against log|det J| of the exact Jacobian (forward mode,
/// [`flow_jacobian`], LU by nalgebra) at every row of `z`:
/// `|Δ| ≤ rtol · (1 + |log|det J||)` with rtol e.g. [`LOG_DET_RTOL_F32`] or
/// [`LOG_DET_RTOL_F64`]. The error names the row.
pub fn check_flow_log_det_exact<T: FlowFloat>(
    model: &FlowModel,
    z: ArrayView2<f32>,
    rtol: f64,
) -> Result<(), String> {
    check_shape(model, z.ncols())?;
    let params: Vec<T> = model
        .params()
        .iter()
        .map(|&p| T::from_f32(p).unwrap_or_else(T::nan))
        .collect();
    let zt = z.mapv(|x| T::from_f32(x).unwrap_or_else(T::nan));
    let mut ws = Workspace::per_thread();
    let (_, log_dets) = model
        .forward_in(&params, zt.view(), &mut ws)
        .map_err(|e| e.to_string())?;
    for (row, (z_row, &claimed)) in z.rows().into_iter().zip(log_dets).enumerate() {
        let z_row: Vec<f64> = z_row.iter().map(|&x| x.into()).collect();
        let exact = flow_jacobian(model, &z_row).map_err(|e| e.to_string())?;
        check_log_det_against_jacobian(claimed, exact.jacobian.view(), rtol)
            .map_err(|e| format!("row {row}: {e}"))?;
    }
    Ok(())
}

/// Checks the flow's forward log-det at `z_row` against log|det J| of the Jacobian built
/// by central finite differences of the (f32) flow with step `h`, to a relative tolerance:
/// `|Δ| ≤ tol · (1 + |log det J|)` (a log-det is a sum over sites, so its error grows with
/// its size). For a [`FlowModel`],
/// [`check_flow_log_det_exact`] builds the exact Jacobian instead.
///
/// All 2V perturbed configurations go through one batched forward call; each difference
/// is divided by the actually representable f32 step. The error of a Jacobian entry is
/// O(h² f''') + O(ε₃₂ |φ| / h), so h must be small against the scale on which the flow
/// bends (the narrowest spline bin) and large against f32 rounding. With h = 5e-3,
/// tol = 1e-3 holds for moderately conditioned flows on a 4 × 4 lattice (observed errors
/// below 6e-4 for Z2-affine and spline blocks), while a log-det off by one layer's term fails.
pub fn check_flow_log_det_bruteforce(
    flow: &dyn Flow,
    z_row: &[f32],
    h: f32,
    tol: f64,
) -> Result<(), String> {
    let v = z_row.len();
    check_shape(flow, v)?;
    if !(h > 0.0 && h.is_finite()) {
        return Err(format!("step h must be positive and finite, got {h}"));
    }
    let mut probes = Array2::<f32>::zeros((2 * v + 1, v));
    for (r, mut row) in probes.rows_mut().into_iter().enumerate() {
        row.iter_mut().zip(z_row).for_each(|(p, &z)| *p = z);
        if r < 2 * v {
            let sign = if r % 2 == 0 { 1.0 } else { -1.0 };
            row[r / 2] += sign * h;
        }
    }
    let (phi, ld) = flow.forward(probes.view()).map_err(|e| e.to_string())?;
    let mut jacobian = vec![0.0f64; v * v];
    for j in 0..v {
        let step = probes[[2 * j, j]] as f64 - probes[[2 * j + 1, j]] as f64;
        for i in 0..v {
            jacobian[i * v + j] = (phi[[2 * j, i]] as f64 - phi[[2 * j + 1, i]] as f64) / step;
        }
    }
    let brute = log_abs_det(&mut jacobian, v);
    let claimed = ld[2 * v];
    let bound = tol * (1.0 + brute.abs());
    if (brute - claimed).abs() <= bound {
        Ok(())
    } else {
        Err(format!(
            "flow log-det {claimed} but finite-difference Jacobian gives {brute} \
             (difference {:.3e} > {bound:.3e} = {tol:e} · (1 + |log det J|))",
            (brute - claimed).abs()
        ))
    }
}

/// Checks f(−z) = −f(z) per entry within `tol · (1 + |f(z)|)` and ld(−z) = ld(z) per row
/// within `tol · (V + |ld|)`.
///
/// Z2-equivariant layers in f32 agree to rounding, so tol = 1e-5 is ample; a layer with
/// network biases misses by orders of magnitude more.
pub fn check_flow_z2_equivariant(
    flow: &dyn Flow,
    z: ArrayView2<f32>,
    tol: f64,
) -> Result<(), String> {
    check_shape(flow, z.ncols())?;
    let volume = z.ncols() as f64;
    let (phi, ld) = flow.forward(z).map_err(|e| e.to_string())?;
    let neg_z = z.mapv(|x| -x);
    let (phi_neg, ld_neg) = flow.forward(neg_z.view()).map_err(|e| e.to_string())?;
    for ((row, site), &p) in phi.indexed_iter() {
        let (p, q) = (p as f64, phi_neg[[row, site]] as f64);
        if !(p + q).abs().le(&(tol * (1.0 + p.abs()))) {
            return Err(format!(
                "row {row}, site {site}: f(z) = {p} but f(−z) = {q}"
            ));
        }
    }
    for (row, (&a, &b)) in ld.iter().zip(&ld_neg).enumerate() {
        if !(a - b).abs().le(&(tol * (volume + a.abs()))) {
            return Err(format!("row {row}: log-det {a} at z but {b} at −z"));
        }
    }
    Ok(())
}

/// The rows of `x` translated by `shift` on `lattice`: (T_a x)_s = x_{s − a} for every site
/// s, coordinates taken periodically (so the value at site b moves to b + a). Panics
/// unless `x` has one column per site and `shift` one entry per axis.
pub fn translate(lattice: &Lattice, x: ArrayView2<f32>, shift: &[usize]) -> Array2<f32> {
    let d = lattice.dim();
    assert_eq!(shift.len(), d, "one shift per axis");
    assert_eq!(x.ncols(), lattice.volume(), "one column per site");
    let ext = lattice.extents();
    let mut c = vec![0usize; d];
    let to: Vec<usize> = (0..lattice.volume())
        .map(|s| {
            lattice.coords(s, &mut c);
            for mu in 0..d {
                c[mu] = (c[mu] + shift[mu]) % ext[mu];
            }
            lattice.site(&c)
        })
        .collect();
    let mut out = Array2::zeros(x.dim());
    for (xr, mut or) in x.outer_iter().zip(out.outer_iter_mut()) {
        for (s, &v) in xr.iter().enumerate() {
            or[to[s]] = v;
        }
    }
    out
}

/// Checks that `flow` commutes with the translation by `shift`: f(T_a z) = T_a f(z) per
/// entry within `tol · (1 + |f(z)|)`, the log-dets of z and T_a z agree within
/// `tol · (V + |ld|)`, and so do the log-densities of φ and T_a φ (through the inverse).
///
/// A flow built from translation-covariant pieces (convolutions, free-field layers)
/// passes for every shift that maps its partitions onto themselves: any shift for a
/// free-field layer, shifts with an even coordinate sum for checkerboard couplings, even
/// shifts for refinement blocks, 2a for a coarse layer whose inner layers pass for a.
/// In f32, tol = 1e-5 is ample (the shifted pass differs only by summation order); a
/// dense net misses by orders of magnitude more.
pub fn check_flow_translation_equivariant(
    flow: &dyn Flow,
    z: ArrayView2<f32>,
    shift: &[usize],
    tol: f64,
) -> Result<(), String> {
    check_shape(flow, z.ncols())?;
    let lattice = flow.lattice();
    if shift.len() != lattice.dim() {
        return Err(format!(
            "a shift of {} components on a {}-dimensional lattice",
            shift.len(),
            lattice.dim()
        ));
    }
    let volume = z.ncols() as f64;
    let (phi, ld) = flow.forward(z).map_err(|e| e.to_string())?;
    let shifted = translate(lattice, z, shift);
    let (phi_shifted, ld_shifted) = flow.forward(shifted.view()).map_err(|e| e.to_string())?;
    let expected = translate(lattice, phi.view(), shift);
    for ((row, site), &want) in expected.indexed_iter() {
        let got = phi_shifted[[row, site]];
        if ((got - want).abs() as f64) > tol * (1.0 + (want.abs() as f64)) {
            return Err(format!(
                "row {row}, site {site}: f(T z) = {got} but T f(z) = {want} (shift {shift:?})"
            ));
        }
    }
    let close = |a: f64, b: f64| (a - b).abs() <= tol * (volume + a.abs());
    for (row, (&a, &b)) in ld.iter().zip(&ld_shifted).enumerate() {
        if !close(a, b) {
            return Err(format!(
                "row {row}: log-det {a} at z but {b} at the shifted z (shift {shift:?})"
            ));
        }
    }
    let log_p = flow.log_density(phi.view()).map_err(|e| e.to_string())?;
    let log_p_shifted = flow
        .log_density(expected.view())
        .map_err(|e| e.to_string())?;
    for (row, (&a, &b)) in log_p.iter().zip(&log_p_shifted).enumerate() {
        if !close(a, b) {
            return Err(format!(
                "row {row}: log p̃ {a} at φ but {b} at the shifted φ (shift {shift:?})"
            ));
        }
    }
    Ok(())
}
