//! The symmetries the scalable flows claim, as properties over random latent batches,
//! random parameters and random translations of the group each architecture keeps:
//! convolutional coupling flows and free-field layers commute with the translations that
//! map their partitions onto themselves (any for a free-field layer, an even coordinate sum
//! for checkerboard couplings, multiples of 2 with an even sum of halves for one coarse
//! level), with unchanged log-densities; bias-free Z2-affine flows and free-field layers
//! commute with φ → −φ.

use latflow::flow::transform::Rqs;
use latflow::flow::{
    BlockConfig, FlowConfig, FlowModel, FreeFieldConfig, LayerConfig, NetConfig, Partition,
    TransformKind,
};
use latflow::testing::strategies::{arb_latent_batch, arb_shift, proptest_config};
use latflow::testing::{check_flow_translation_equivariant, check_flow_z2_equivariant};
use latflow::{Lattice, rng_from_seed};
use proptest::prelude::*;
use rand::RngExt;

fn config(cases: u32) -> ProptestConfig {
    proptest_config(cases, "proptest-regressions/symmetries.txt")
}

/// `config` on an 8 × 8 lattice with parameters uniform in (−0.5, 0.5) from `seed`.
fn model(config: &FlowConfig, seed: u64) -> FlowModel {
    let mut model = FlowModel::new(config, &Lattice::new(&[8, 8]).unwrap(), seed).unwrap();
    let mut rng = rng_from_seed(seed);
    for p in model.params_mut() {
        *p = rng.random_range(-0.5f32..0.5);
    }
    model
}

fn conv_block(transform: TransformKind, bias: bool) -> BlockConfig {
    BlockConfig {
        separate_nets: transform == TransformKind::Z2Affine,
        transform,
        net: NetConfig::Conv {
            channels: vec![3, 3],
            kernel: 3,
            bias,
        },
        partition: Partition::Checkerboard,
    }
}

/// A convolutional flow: a Z2-affine block and a spline block (with biases).
fn conv_flow() -> FlowConfig {
    let spline = TransformKind::Rqs(Rqs::new(4, 3.0).unwrap());
    FlowConfig {
        prior: Default::default(),
        layers: vec![
            LayerConfig::Block(conv_block(TransformKind::Z2Affine, false)),
            LayerConfig::Block(conv_block(spline, true)),
        ],
    }
}

/// A free-field layer (one σ per class) in front of bias-free Z2-affine conv blocks.
fn free_field_flow() -> FlowConfig {
    FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[3], 3)
        .with_free_field(FreeFieldConfig::classes(None))
}

/// One coarse level of bias-free Z2-affine conv blocks.
fn multiscale_flow() -> FlowConfig {
    let block = conv_block(TransformKind::Z2Affine, false);
    FlowConfig::multiscale(1, &[LayerConfig::Block(block.clone())], &[block])
}

proptest! {
    #![proptest_config(config(12))]

    #[test]
    fn convolutional_flows_commute_with_even_translations(
        seed in 0u64..1000,
        z in arb_latent_batch(3, 64, 3.0),
        shift in arb_shift(&[8, 8], 1, true),
    ) {
        let r = check_flow_translation_equivariant(&model(&conv_flow(), seed), z.view(), &shift, 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn free_field_layers_commute_with_every_translation_and_the_sign_flip(
        seed in 0u64..1000,
        z in arb_latent_batch(3, 64, 3.0),
        shift in arb_shift(&[8, 8], 1, false),
    ) {
        let layer_only = FlowConfig {
            prior: Default::default(),
            layers: vec![LayerConfig::FreeField(FreeFieldConfig::classes(None))],
        };
        let flow = model(&layer_only, seed);
        let r = check_flow_translation_equivariant(&flow, z.view(), &shift, 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = check_flow_z2_equivariant(&model(&free_field_flow(), seed), z.view(), 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn multiscale_flows_commute_with_their_translations_and_the_sign_flip(
        seed in 0u64..1000,
        z in arb_latent_batch(3, 64, 3.0),
        shift in arb_shift(&[8, 8], 2, true),
    ) {
        let flow = model(&multiscale_flow(), seed);
        let r = check_flow_translation_equivariant(&flow, z.view(), &shift, 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        let r = check_flow_z2_equivariant(&flow, z.view(), 1e-5);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// The checks can fail: a dense flow, and the convolutional flow under an odd shift.
#[test]
fn the_checks_catch_flows_that_are_not_equivariant() {
    let z = ndarray::Array2::from_shape_fn((2, 64), |(r, c)| ((r * 64 + c) as f32 * 0.37).sin());
    let dense = model(&FlowConfig::real_nvp(1, &[8]), 1);
    assert!(check_flow_translation_equivariant(&dense, z.view(), &[2, 0], 1e-5).is_err());
    assert!(
        check_flow_translation_equivariant(&model(&conv_flow(), 2), z.view(), &[1, 0], 1e-5)
            .is_err()
    );
    assert!(check_flow_z2_equivariant(&model(&conv_flow(), 3), z.view(), 1e-5).is_err());
}
