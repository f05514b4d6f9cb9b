//! Forward mode through whole flows: dual numbers on the tape and in every layer, exact
//! Jacobians against finite differences, log-dets against the exact Jacobian's LU, and the
//! action checks of `latflow::testing`, each shown to catch a deliberate error.

mod common;

use common::random_model;
use latflow::action::{Action, FreeField, Phi4};
use latflow::flow::transform::Rqs;
use latflow::flow::{
    BlockConfig, FlowConfig, FlowModel, LayerConfig, NetConfig, Partition, TransformKind,
};
use latflow::tape::{Dual, Tape};
use latflow::testing::{
    ActionCheckFailure, ActionCheckOptions, ActionFormula, DualAction, ForceReference,
    LOG_DET_RTOL_F32, LOG_DET_RTOL_F64, check_action, check_flow_log_det_exact,
    check_log_det_against_jacobian, flow_jacobian, forward_mode_jacobian, jacobian_log_abs_det,
};
use latflow::{Lattice, rng_from_seed};
use ndarray::{Array2, Axis};
use rand::RngExt;

fn lattice(l: usize) -> Lattice {
    Lattice::new(&[l, l]).unwrap()
}

/// Seed recipe (Z2-affine + RQS + scales), dense RQS, convolutional affine and RQS, dense
/// affine, and one of each layer kind with a global scale.
fn configs() -> Vec<(&'static str, FlowConfig)> {
    let rqs = TransformKind::Rqs(Rqs::new(6, 3.0).unwrap());
    let mut mixed = FlowConfig::real_nvp(1, &[3]);
    mixed.layers.push(LayerConfig::Scale);
    mixed.layers.push(LayerConfig::Block(BlockConfig {
        transform: TransformKind::Z2Affine,
        net: NetConfig::Dense {
            hidden: vec![2],
            bias: false,
        },
        separate_nets: true,
        partition: Partition::Sites {
            first: vec![0, 1, 2, 3, 8, 9],
        },
    }));
    let mut dense_rqs = FlowConfig::real_nvp(1, &[8]);
    if let LayerConfig::Block(block) = &mut dense_rqs.layers[0] {
        block.transform = rqs.clone();
    }
    vec![
        ("seed", FlowConfig::seed(16, 1, 4).unwrap()),
        ("dense_rqs", dense_rqs),
        (
            "conv_affine",
            FlowConfig::convolutional(TransformKind::Affine, 2, &[3], 3),
        ),
        ("conv_rqs", FlowConfig::convolutional(rqs, 1, &[2], 3)),
        ("real_nvp", FlowConfig::real_nvp(2, &[8, 8])),
        ("mixed", mixed),
    ]
}

fn latent(rows: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((rows, 16), |_| rng.random_range(-2.0..2.0f32))
}

fn f64_params(model: &FlowModel) -> Vec<f64> {
    model.params().iter().map(|&p| p.into()).collect()
}

#[test]
fn exact_jacobian_agrees_with_finite_differences_in_f64() {
    for (name, config) in configs() {
        let model = random_model(&config, 4, 0.4, 3);
        let params = f64_params(&model);
        let z: Vec<f64> = latent(1, 4).iter().map(|&x| x.into()).collect();
        let exact = flow_jacobian(&model, &z).unwrap();
        let z_row = Array2::from_shape_vec((1, 16), z.clone()).unwrap();
        let (phi, ld) = model.forward_with(&params, z_row.view());
        // The dual pass computes the same values as the f64 pass (up to summation order).
        for (a, b) in exact.phi.iter().zip(phi.iter()) {
            assert!(
                (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                "{name}: φ {a} vs {b}"
            );
        }
        assert!((exact.log_det - ld[0]).abs() <= 1e-12 * (1.0 + ld[0].abs()));
        // Central differences with h = 1e-6: truncation O(h²) ~ 1e-12, rounding
        // O(ε|φ|/h) ~ 1e-10; an entry agrees to 1e-7 (1 + |J|).
        let h = 1e-6;
        for j in 0..16 {
            let (mut plus, mut minus) = (z_row.clone(), z_row.clone());
            plus[[0, j]] += h;
            minus[[0, j]] -= h;
            let (fp, _) = model.forward_with(&params, plus.view());
            let (fm, _) = model.forward_with(&params, minus.view());
            for i in 0..16 {
                let numeric = (fp[[0, i]] - fm[[0, i]]) / (2.0 * h);
                let e = exact.jacobian[[i, j]];
                assert!(
                    (numeric - e).abs() <= 1e-7 * (1.0 + e.abs()),
                    "{name}: ∂φ_{i}/∂z_{j} exact {e}, finite differences {numeric}"
                );
            }
        }
        assert!(
            exact.jacobian.iter().filter(|&&x| x.abs() > 1e-3).count() > 16,
            "{name}: the Jacobian should couple sites"
        );
    }
}

#[test]
fn log_dets_agree_with_the_exact_jacobian() {
    let z = latent(3, 5);
    for (name, config) in configs() {
        let model = random_model(&config, 4, 0.4, 6);
        let r = check_flow_log_det_exact::<f64>(&model, z.view(), LOG_DET_RTOL_F64);
        assert!(r.is_ok(), "{name} in f64: {}", r.unwrap_err());
        let r = check_flow_log_det_exact::<f32>(&model, z.view(), LOG_DET_RTOL_F32);
        assert!(r.is_ok(), "{name} in f32: {}", r.unwrap_err());
        let (_, ld) = model.forward_with(model.params(), z.view());
        assert!(ld.iter().any(|l| l.abs() > 0.1), "{name}: log-dets {ld}");
    }
}

#[test]
fn a_flow_with_a_wrong_log_det_is_caught() {
    // The flow's map followed by φ_5 → 1.01 φ_5, with the flow's log-det unchanged: off by
    // log 1.01 ≈ 0.01, far above the f64 tolerance.
    let model = random_model(&FlowConfig::seed(16, 1, 4).unwrap(), 4, 0.4, 7);
    let params: Vec<Dual> = f64_params(&model).into_iter().map(Dual::constant).collect();
    let z: Vec<f64> = latent(1, 8).iter().map(|&x| x.into()).collect();
    let stretched = |z: ndarray::ArrayView2<Dual>| {
        let (mut phi, _) = model.forward_with(&params, z);
        phi.column_mut(5).mapv_inplace(|x| x * Dual::constant(1.01));
        phi
    };
    let jacobian = forward_mode_jacobian(&z, stretched).unwrap();
    let claimed = flow_jacobian(&model, &z).unwrap().log_det;
    let err = check_log_det_against_jacobian(claimed, jacobian.view(), LOG_DET_RTOL_F64);
    assert!(err.is_err());
    let fixed = claimed + 1.01f64.ln();
    assert!(check_log_det_against_jacobian(fixed, jacobian.view(), LOG_DET_RTOL_F64).is_ok());
}

#[test]
fn inverse_tangents_invert_the_forward_jacobian() {
    for (name, config) in configs() {
        let model = random_model(&config, 4, 0.4, 9);
        let z: Vec<f64> = latent(1, 10).iter().map(|&x| x.into()).collect();
        let forward = flow_jacobian(&model, &z).unwrap();
        let params: Vec<Dual> = f64_params(&model).into_iter().map(Dual::constant).collect();
        let inverse =
            forward_mode_jacobian(&forward.phi, |phi| model.inverse_with(&params, phi).0).unwrap();
        let product = inverse.dot(&forward.jacobian);
        for ((i, j), &p) in product.indexed_iter() {
            let identity = if i == j { 1.0 } else { 0.0 };
            assert!((p - identity).abs() < 1e-9, "{name}: (J⁻¹J)[{i},{j}] = {p}");
        }
        let ld_inverse = jacobian_log_abs_det(inverse.view());
        assert!((ld_inverse + forward.log_det).abs() < 1e-9 * (1.0 + forward.log_det.abs()));
    }
}

#[test]
fn the_log_det_on_a_dual_tape_carries_its_gradient() {
    // ∂ log|det J| / ∂z_j from the tape's dual log-det against central differences of the
    // f64 log-det (h = 1e-5: error ~1e-9).
    let model = random_model(&FlowConfig::seed(16, 1, 4).unwrap(), 4, 0.4, 11);
    let params = f64_params(&model);
    let dual_params: Vec<Dual> = params.iter().map(|&p| Dual::constant(p)).collect();
    let z: Vec<f64> = latent(1, 12).iter().map(|&x| x.into()).collect();
    let seeded = Array2::from_shape_fn((16, 16), |(j, i)| {
        Dual::new(z[i], if i == j { 1.0 } else { 0.0 })
    });
    let mut tape = Tape::new();
    let zv = tape.input(seeded.view());
    let (_, ld) = model.build_forward(&mut tape, &dual_params, zv);
    let h = 1e-5;
    for j in 0..16 {
        let mut probe = Array2::from_shape_vec((2, 16), [z.clone(), z.clone()].concat()).unwrap();
        probe[[0, j]] += h;
        probe[[1, j]] -= h;
        let (_, lds) = model.forward_with(&params, probe.view());
        let numeric = (lds[0] - lds[1]) / (2.0 * h);
        let exact = tape.value(ld)[[j, 0]].tangent();
        assert!(
            (numeric - exact).abs() < 1e-6 * (1.0 + exact.abs()),
            "{numeric} vs {exact}"
        );
    }
    let values: Vec<f64> = tape
        .value(ld)
        .index_axis(Axis(1), 0)
        .iter()
        .map(|l| l.value())
        .collect();
    assert!(values.windows(2).all(|w| w[0] == w[1]));
}

// ---------------------------------------------------------------------------------------
// Action checks.

fn phi4_actions() -> Vec<(&'static str, Phi4)> {
    vec![
        ("hopping", Phi4::hopping(lattice(4), 0.5, 1.2).unwrap()),
        ("standard", Phi4::standard(lattice(4), -1.5, 2.0).unwrap()),
        ("quartic", Phi4::quartic(lattice(4), -2.0, 0.8).unwrap()),
    ]
}

#[test]
fn phi4_and_the_free_field_pass_the_action_checks() {
    let free = FreeField::new(lattice(4), 0.7).unwrap();
    let mut cases: Vec<(&str, &dyn ActionLike)> = Vec::new();
    let phi4 = phi4_actions();
    for (name, action) in &phi4 {
        cases.push((name, action));
    }
    cases.push(("free", &free));
    for (name, action) in cases {
        let formula = |phi: &[Dual]| action.formula(phi);
        let with_formula = ActionCheckOptions {
            formula: Some(&formula),
            z2_symmetric: true,
            ..ActionCheckOptions::default()
        };
        let report = check_action(action.as_action(), &with_formula).unwrap();
        assert_eq!(
            report.force_reference,
            ForceReference::ForwardMode,
            "{name}"
        );
        assert!(report.z2_checked && report.configurations == 4);
        let without = ActionCheckOptions {
            z2_symmetric: true,
            ..ActionCheckOptions::default()
        };
        let report = check_action(action.as_action(), &without).unwrap();
        assert_eq!(report.force_reference, ForceReference::FiniteDifferences);
        assert!(report.max_force_error > 0.0, "{name}: {report:?}");
    }
}

/// Both the `Action` and the `ActionFormula` of a test case, as one object.
trait ActionLike {
    fn as_action(&self) -> &dyn Action;
    fn formula(&self, phi: &[Dual]) -> Dual;
}

impl<A: Action + ActionFormula> ActionLike for A {
    fn as_action(&self) -> &dyn Action {
        self
    }
    fn formula(&self, phi: &[Dual]) -> Dual {
        self.eval(phi)
    }
}

/// φ⁴ with one deliberate error.
struct Broken {
    inner: Phi4,
    /// Force at site 3 scaled by 1 + 1e-3.
    force_error: bool,
    /// delta_local scaled by 1 + 1e-6.
    delta_error: bool,
    /// An added linear term 0.05 Σ φ (consistently in every method): not Z2-symmetric.
    field: f64,
}

impl Broken {
    fn new(inner: Phi4) -> Self {
        Broken {
            inner,
            force_error: false,
            delta_error: false,
            field: 0.0,
        }
    }
}

impl Action for Broken {
    fn lattice(&self) -> &Lattice {
        self.inner.lattice()
    }
    fn action(&self, phi: &[f64]) -> f64 {
        self.inner.action(phi) + self.field * phi.iter().sum::<f64>()
    }
    fn force(&self, phi: &[f64], out: &mut [f64]) {
        self.inner.force(phi, out);
        out.iter_mut().for_each(|f| *f += self.field);
        if self.force_error {
            out[3] *= 1.0 + 1e-3;
        }
    }
    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        let delta = self.inner.delta_local(phi, site, new) + self.field * (new - phi[site]);
        if self.delta_error {
            delta * (1.0 + 1e-6)
        } else {
            delta
        }
    }
}

#[test]
fn action_checks_catch_wrong_forces_deltas_and_symmetry_claims() {
    let phi4 = || Phi4::hopping(lattice(4), 0.5, 1.2).unwrap();
    let formula_of = phi4();
    let formula = |phi: &[Dual]| formula_of.eval(phi);
    for with_formula in [false, true] {
        let options = ActionCheckOptions {
            formula: with_formula.then_some(&formula as &DualAction),
            ..ActionCheckOptions::default()
        };
        let mut wrong_force = Broken::new(phi4());
        wrong_force.force_error = true;
        let failure = check_action(&wrong_force, &options).unwrap_err();
        assert!(
            matches!(failure, ActionCheckFailure::Force { site: 3, .. }),
            "{failure}"
        );
        assert_eq!(failure.site(), Some(3));
        let mut wrong_delta = Broken::new(phi4());
        wrong_delta.delta_error = true;
        let failure = check_action(&wrong_delta, &options).unwrap_err();
        assert!(
            matches!(failure, ActionCheckFailure::DeltaLocal { site: 0, .. }),
            "{failure}"
        );
        assert!(check_action(&Broken::new(phi4()), &options).is_ok());
    }
    let mut tilted = Broken::new(phi4());
    tilted.field = 0.05;
    assert!(check_action(&tilted, &ActionCheckOptions::default()).is_ok());
    let claimed = ActionCheckOptions {
        z2_symmetric: true,
        ..ActionCheckOptions::default()
    };
    let failure = check_action(&tilted, &claimed).unwrap_err();
    assert!(
        matches!(failure, ActionCheckFailure::Z2 { site: None, .. }),
        "{failure}"
    );
    // A formula that is not the action is reported as such.
    let other = Phi4::hopping(lattice(4), 0.6, 1.2).unwrap();
    let other_formula = |phi: &[Dual]| other.eval(phi);
    let mismatched = ActionCheckOptions {
        formula: Some(&other_formula),
        ..ActionCheckOptions::default()
    };
    assert!(matches!(
        check_action(&phi4(), &mismatched),
        Err(ActionCheckFailure::FormulaValue { .. })
    ));
    let bad = ActionCheckOptions {
        step: 0.0,
        ..ActionCheckOptions::default()
    };
    assert!(matches!(
        check_action(&phi4(), &bad),
        Err(ActionCheckFailure::Options(_))
    ));
}
