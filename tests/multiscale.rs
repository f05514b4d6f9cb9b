//! Multiscale flows: a coarse flow on the sublattice of even sites, refined level by level
//! by couplings that leave the coarser sites alone. Exact log-densities through both paths,
//! parameter counts independent of L at a fixed number of levels, refusal of lattices the
//! levels do not divide, and the symmetries the architecture claims: translations by
//! multiples of 2^levels (with an even sum at the coarsest checkerboard), and φ → −φ for
//! bias-free Z2-affine couplings.

use latflow::flow::transform::Rqs;
use latflow::flow::{
    BlockConfig, Flow, FlowConfig, FlowModel, FreeFieldConfig, LayerConfig, NetConfig, Partition,
    TransformKind,
};
use latflow::testing::{
    LOG_DET_RTOL_F32, LOG_DET_RTOL_F64, check_flow_invertible, check_flow_log_det_exact,
    check_flow_translation_equivariant, check_flow_z2_equivariant,
};
use latflow::{Error, Lattice, rng_from_seed};
use ndarray::Array2;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

fn z2_block(channels: &[usize]) -> BlockConfig {
    BlockConfig {
        transform: TransformKind::Z2Affine,
        net: NetConfig::Conv {
            channels: channels.to_vec(),
            kernel: 3,
            bias: false,
        },
        separate_nets: true,
        partition: Partition::Checkerboard,
    }
}

/// `levels` levels: two Z2-affine conv blocks at the coarsest level, one per finer level.
fn multiscale(levels: usize) -> FlowConfig {
    let coarsest = vec![LayerConfig::Block(z2_block(&[4])); 2];
    FlowConfig::multiscale(levels, &coarsest, &[z2_block(&[4])])
}

fn random_model(config: &FlowConfig, extents: &[usize], seed: u64) -> FlowModel {
    let mut model = FlowModel::new(config, &Lattice::new(extents).unwrap(), seed).unwrap();
    let mut rng = rng_from_seed(seed + 100);
    for p in model.params_mut() {
        *p = rng.random_range(-0.4f32..0.4);
    }
    model
}

fn normal_batch(n: usize, v: usize, seed: u64) -> Array2<f32> {
    let mut rng = rng_from_seed(seed);
    Array2::from_shape_fn((n, v), |_| {
        let x: f64 = StandardNormal.sample(&mut rng);
        x as f32
    })
}

#[test]
fn densities_are_exact_through_every_level() {
    // Two levels on 8 × 8 (coarsest 2 × 2), with a spline refinement and a free-field
    // layer in front: log-det against the exact forward-mode Jacobian in f64 and f32,
    // inverse against forward, sampled log p̃ against the inverse path's.
    let rqs = BlockConfig {
        transform: TransformKind::Rqs(Rqs::new(4, 3.0).unwrap()),
        net: NetConfig::Conv {
            channels: vec![3],
            kernel: 3,
            bias: true,
        },
        separate_nets: false,
        partition: Partition::Checkerboard,
    };
    let coarsest = vec![LayerConfig::Block(z2_block(&[3]))];
    let config = FlowConfig::multiscale(2, &coarsest, &[z2_block(&[3]), rqs])
        .with_free_field(FreeFieldConfig::mass(0.7, 1.0));
    let model = random_model(&config, &[8, 8], 1);
    let z = normal_batch(3, 64, 2);
    check_flow_log_det_exact::<f64>(&model, z.view(), LOG_DET_RTOL_F64).unwrap();
    check_flow_log_det_exact::<f32>(&model, z.view(), LOG_DET_RTOL_F32).unwrap();
    check_flow_invertible(&model, normal_batch(32, 64, 3).view(), 1e-4).unwrap();
    let (phi, log_p) = model.sample(64, &mut rng_from_seed(4)).unwrap();
    let again = model.log_density(phi.view()).unwrap();
    for (a, b) in log_p.iter().zip(again.iter()) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn refinement_blocks_leave_the_coarse_sites_alone() {
    // Refinement blocks alone (no coarse flow): the sites with all coordinates even keep
    // their latent values, every other site moves.
    let config = FlowConfig::multiscale(1, &[], &[z2_block(&[4])]);
    let model = random_model(&config, &[6, 4], 5);
    let lattice = model.lattice().clone();
    let z = normal_batch(4, 24, 6);
    let (phi, _) = model.forward(z.view()).unwrap();
    let mut c = [0usize; 2];
    for s in 0..24 {
        lattice.coords(s, &mut c);
        let coarse = c[0] % 2 == 0 && c[1] % 2 == 0;
        for r in 0..4 {
            assert_eq!(
                phi[[r, s]] == z[[r, s]],
                coarse,
                "site {s} ({c:?}), row {r}"
            );
        }
    }
}

#[test]
fn the_parameter_count_does_not_grow_with_the_lattice() {
    let counts: Vec<usize> = [8usize, 16, 32, 64]
        .iter()
        .map(|&l| {
            FlowModel::new(&multiscale(2), &Lattice::new(&[l, l]).unwrap(), 0)
                .unwrap()
                .n_params()
        })
        .collect();
    assert!(counts.iter().all(|&n| n == counts[0]), "{counts:?}");
    // One more level adds one level's refinement blocks, whatever the lattice.
    let deeper = FlowModel::new(&multiscale(3), &Lattice::new(&[32, 32]).unwrap(), 0)
        .unwrap()
        .n_params();
    let one_block = FlowModel::new(
        &FlowConfig::multiscale(1, &[], &[z2_block(&[4])]),
        &Lattice::new(&[8, 8]).unwrap(),
        0,
    )
    .unwrap()
    .n_params();
    assert_eq!(deeper, counts[0] + one_block);
}

#[test]
fn lattices_the_levels_do_not_divide_are_refused_by_size() {
    for extents in [[6usize, 6], [8, 12], [4, 2]] {
        match FlowModel::new(&multiscale(2), &Lattice::new(&extents).unwrap(), 0) {
            Err(Error::InvalidLattice(msg)) => {
                let name = format!("{}x{}", extents[0], extents[1]);
                assert!(msg.contains(&name) && msg.contains("2 levels"), "{msg}");
            }
            Err(e) => panic!("{extents:?}: {e}"),
            Ok(_) => {
                // 8 × 12 is divisible by 4 and allowed.
                assert_eq!(extents, [8, 12]);
            }
        }
    }
}

#[test]
fn multiscale_flows_commute_with_their_translations_and_the_sign_flip() {
    // Two levels on 16 × 8: translations by 4a with a₀ + a₁ even (the coarsest lattice's
    // checkerboard) commute with the flow; an odd shift does not (the check can fail).
    let model = random_model(&multiscale(2), &[16, 8], 7);
    let z = normal_batch(4, 128, 8);
    for shift in [[0, 0], [4, 4], [8, 0], [12, 4]] {
        check_flow_translation_equivariant(&model, z.view(), &shift, 1e-5)
            .unwrap_or_else(|e| panic!("shift {shift:?}: {e}"));
    }
    assert!(check_flow_translation_equivariant(&model, z.view(), &[1, 0], 1e-5).is_err());
    assert!(check_flow_translation_equivariant(&model, z.view(), &[4, 0], 1e-5).is_err());
    check_flow_z2_equivariant(&model, z.view(), 1e-5).unwrap();
}
