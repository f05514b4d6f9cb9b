//! The free-field layer φ = F⁻¹ diag(σ) F z: exact on the free field at σ(p)² = 1/(p̂² + m0²)
//! (log w constant, acceptance 1), reached by training from the identity, commuting with
//! every translation, the lattice reflections and rotations and φ → −φ, and refusing bad
//! spectra.

use std::sync::Arc;

use latflow::action::FreeField;
use latflow::control::StopToken;
use latflow::flow::{
    Flow, FlowConfig, FlowModel, FreeFieldConfig, LayerConfig, PriorConfig, momentum_classes,
};
use latflow::testing::{check_flow_translation_equivariant, check_flow_z2_equivariant};
use latflow::train::{GradientEstimator, TrainConfig, Trainer, evaluate_flow};
use latflow::{Action, Error, Lattice, rng_from_seed};
use ndarray::Array2;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

fn free_field_flow(config: FreeFieldConfig) -> FlowConfig {
    FlowConfig {
        prior: PriorConfig::StandardNormal,
        layers: vec![LayerConfig::FreeField(config)],
    }
}

fn normal_batch(n: usize, v: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((n, v), |_| {
        let x: f64 = StandardNormal.sample(&mut rng);
        x as f32
    })
}

/// log w = −S(φ) − log p̃(φ) of `n` samples of `flow`.
fn log_weights(flow: &FlowModel, action: &FreeField, n: usize) -> Vec<f64> {
    let (phi, log_p) = flow.sample(n, &mut rng_from_seed(3)).unwrap();
    phi.outer_iter()
        .zip(log_p.iter())
        .map(|(row, lp)| {
            let row: Vec<f64> = row.iter().map(|&x| x.into()).collect();
            -action.action(&row) - lp
        })
        .collect()
}

#[test]
fn at_the_free_propagator_the_layer_is_the_free_field() {
    // log w = −S − log p̃ = log Z for every sample when p̃ is the free field: checked to
    // 2e-4 (f32 fields of |Λ| = 24 to 64 sites: S carries a rounding of a few 1e-6 per
    // site), and the independence sampler accepts every proposal.
    for (extents, m0sq) in [(vec![8, 8], 0.5), (vec![4, 6], 1.3)] {
        let lattice = Lattice::new(&extents).unwrap();
        let action = FreeField::new(lattice.clone(), m0sq).unwrap();
        for config in [
            FreeFieldConfig::classes(Some(m0sq)),
            FreeFieldConfig::mass(m0sq, 1.0),
        ] {
            let flow = FlowModel::new(&free_field_flow(config.clone()), &lattice, 1).unwrap();
            for log_w in log_weights(&flow, &action, 200) {
                assert!(
                    (log_w - action.log_z()).abs() < 2e-4,
                    "{config:?} on {extents:?}: log w {log_w}, log Z {}",
                    action.log_z()
                );
            }
            let eval = evaluate_flow(&flow, &action, 2000, &mut rng_from_seed(4)).unwrap();
            assert!(eval.acceptance > 0.999, "{config:?}: {}", eval.acceptance);
        }
    }
}

#[test]
fn training_from_the_identity_reaches_the_free_field() {
    // Both parametrisations, started away from the free field of m0² = 0.5 on 6 × 6 (one
    // σ per class at σ = 1; the mass form at m² = 2, Z = 0.5), trained by reverse KL:
    // with the path gradient the variance of log w falls to near zero and the acceptance
    // to near 1.
    let lattice = Lattice::new(&[6, 6]).unwrap();
    let action = Arc::new(FreeField::new(lattice.clone(), 0.5).unwrap());
    for config in [
        FreeFieldConfig::classes(None),
        FreeFieldConfig::mass(2.0, 0.5),
    ] {
        let flow = FlowModel::new(&free_field_flow(config.clone()), &lattice, 1).unwrap();
        let start = evaluate_flow(&flow, &*action, 2000, &mut rng_from_seed(5)).unwrap();
        let mut train = TrainConfig::new(64, 600, 0.05);
        // The path gradient's variance vanishes at the optimum, so it settles there.
        train.gradient = GradientEstimator::Path;
        train.seed = 2;
        train.chunks = 2;
        train.eval_samples = 2000;
        let mut trainer = Trainer::new(flow, action.clone(), train).unwrap();
        let summary = trainer.train(&mut (), &StopToken::never()).unwrap();
        let eval = summary.eval;
        assert!(
            start.acceptance < 0.6,
            "{config:?} starts at {}",
            start.acceptance
        );
        assert!(
            eval.acceptance > 0.99 && eval.var_log_w < 1e-3,
            "{config:?}: acceptance {}, var log w {}",
            eval.acceptance,
            eval.var_log_w
        );
        assert!((eval.mean_log_w - action.log_z()).abs() < 1e-2);
    }
}

/// (R z)_x = z_{R⁻¹ x} for a reflection of axis 0 (`swap` false) or the exchange of the
/// two axes of a square lattice (`swap` true).
fn reflect(lattice: &Lattice, z: &Array2<f32>, swap: bool) -> Array2<f32> {
    let l = lattice.extents();
    let mut out = Array2::zeros(z.dim());
    let mut c = [0usize; 2];
    for s in 0..lattice.volume() {
        lattice.coords(s, &mut c);
        let image = if swap {
            [c[1], c[0]]
        } else {
            [(l[0] - c[0]) % l[0], c[1]]
        };
        let t = lattice.site(&image);
        for r in 0..z.nrows() {
            out[[r, t]] = z[[r, s]];
        }
    }
    out
}

#[test]
fn the_layer_commutes_with_every_symmetry_of_the_lattice() {
    // Random σ per class (far from any free field): every translation of a 4 × 6 lattice,
    // the reflection of an axis and (on 6 × 6) the exchange of the axes map f(z) to f of
    // the transformed z, with the same log-det; and f(−z) = −f(z).
    for (extents, swaps) in [(vec![4usize, 6], false), (vec![6, 6], true)] {
        let lattice = Lattice::new(&extents).unwrap();
        let mut flow = FlowModel::new(
            &free_field_flow(FreeFieldConfig::classes(None)),
            &lattice,
            1,
        )
        .unwrap();
        let mut rng = rng_from_seed(7);
        for p in flow.params_mut() {
            *p = rng.random_range(-1.0f32..1.0);
        }
        let z = normal_batch(4, lattice.volume(), 8);
        for a in 0..extents[0] {
            for b in 0..extents[1] {
                check_flow_translation_equivariant(&flow, z.view(), &[a, b], 1e-5)
                    .unwrap_or_else(|e| panic!("{extents:?}: {e}"));
            }
        }
        check_flow_z2_equivariant(&flow, z.view(), 1e-6).unwrap();
        let (phi, ld) = flow.forward(z.view()).unwrap();
        for swap in [false, true].into_iter().filter(|&s| !s || swaps) {
            let (phi_r, ld_r) = flow.forward(reflect(&lattice, &z, swap).view()).unwrap();
            let want = reflect(&lattice, &phi, swap);
            for (a, b) in phi_r.iter().zip(want.iter()) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "swap {swap}: {a} vs {b}"
                );
            }
            for (a, b) in ld.iter().zip(ld_r.iter()) {
                assert!((a - b).abs() < 1e-9 * (1.0 + a.abs()));
            }
        }
    }
}

#[test]
fn momenta_are_classed_by_the_lattice_symmetries() {
    // 8 × 8: |n_μ| ∈ {0, …, 4} per axis, unordered: 15 classes. 4 × 6: no exchange of the
    // unequal axes, 3 × 4 = 12 classes.
    let (classes, n) = momentum_classes(&Lattice::new(&[8, 8]).unwrap());
    assert_eq!(n, 15);
    // (1, 2), (2, 1), (7, 2) and (1, 6) are one class; (1, 1) another.
    let at = |x: usize, y: usize| classes[x * 8 + y];
    assert!(at(1, 2) == at(2, 1) && at(2, 1) == at(7, 2) && at(7, 2) == at(1, 6));
    assert_ne!(at(1, 1), at(1, 2));
    let (_, n) = momentum_classes(&Lattice::new(&[4, 6]).unwrap());
    assert_eq!(n, 12);
    // One parameter per class; two in the mass form on any lattice.
    let flow = |config, l: &[usize]| {
        FlowModel::new(&free_field_flow(config), &Lattice::new(l).unwrap(), 0)
            .unwrap()
            .n_params()
    };
    assert_eq!(flow(FreeFieldConfig::classes(None), &[8, 8]), 15);
    assert_eq!(flow(FreeFieldConfig::mass(1.0, 1.0), &[8, 8]), 2);
    assert_eq!(flow(FreeFieldConfig::mass(1.0, 1.0), &[32, 32]), 2);
}

#[test]
fn bad_spectra_are_refused_by_name() {
    let lattice = Lattice::new(&[4, 4]).unwrap();
    for (config, name) in [
        (FreeFieldConfig::classes(Some(0.0)), "m0sq"),
        (FreeFieldConfig::classes(Some(f64::NAN)), "m0sq"),
        (FreeFieldConfig::mass(-1.0, 1.0), "m0sq"),
        (FreeFieldConfig::mass(1.0, 0.0), "z"),
    ] {
        let err = FlowModel::new(&free_field_flow(config), &lattice, 0).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParameter { name: n, .. } if n == name),
            "{err}"
        );
    }
}

#[test]
fn model_files_keep_the_layer_and_older_files_still_load() {
    let dir = std::env::temp_dir().join(format!("latflow-free-field-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lattice = Lattice::new(&[6, 6]).unwrap();
    let config = FlowConfig::real_nvp(1, &[8]).with_free_field(FreeFieldConfig::classes(None));
    let mut model = FlowModel::new(&config, &lattice, 3).unwrap();
    let mut rng = rng_from_seed(11);
    for p in model.params_mut() {
        *p = rng.random_range(-0.5f32..0.5);
    }
    let path = dir.join("model.json");
    model.save(&path).unwrap();
    let back = FlowModel::load(&path).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(back.params(), model.params());
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format_version"], latflow::flow::MODEL_FORMAT_VERSION);
    // A model on another lattice is refused, naming both.
    let err = FlowModel::load_for(&path, &Lattice::new(&[8, 8]).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("6x6") && err.to_string().contains("8x8"),
        "{err}"
    );
    // A file of the first format version (a flow of the layers it knew) loads.
    let old = FlowModel::new(&FlowConfig::real_nvp(1, &[8]), &lattice, 3).unwrap();
    old.save(&path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["format_version"] = serde_json::json!(latflow::flow::OLDEST_MODEL_FORMAT_VERSION);
    std::fs::write(&path, json.to_string()).unwrap();
    assert_eq!(FlowModel::load(&path).unwrap().params(), old.params());
    std::fs::remove_dir_all(&dir).unwrap();
}
