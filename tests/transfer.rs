//! Transfer across volumes: a convolutional flow trained on a small lattice initialises
//! training on a larger one (`TrainSpec::init`, `latflow train --init`), and carries what it
//! learnt; flows whose nets depend on the lattice size are refused with a reason.

mod common;

use std::path::PathBuf;

use common::{conv_recipe, scratch_file, train_to_the_end};

use latflow::Lattice;
use latflow::flow::FlowModel;
use latflow::run::{ActionSpec, RecipeKind, RecipeSpec, TrainSpec, init_from};
use latflow::train::{TrainConfig, evaluate_flow};

const PHI4: ActionSpec = ActionSpec::Phi4 {
    beta: 0.537,
    lambda: 0.5,
};

fn spec(l: usize, recipe: RecipeSpec, iterations: usize, out: PathBuf) -> TrainSpec {
    let mut train = TrainConfig::new(128, iterations, 0.01);
    train.seed = 3;
    train.chunks = 2;
    train.eval_samples = 4000;
    TrainSpec {
        lattice: Lattice::hypercubic(2, l).unwrap(),
        action: PHI4,
        recipe,
        train,
        anneal: None,
        init: None,
        out,
    }
}

/// Acceptance of `flow` against φ⁴ on an L × L lattice, from `n` fresh samples.
fn acceptance(flow: &FlowModel, l: usize, n: usize) -> f64 {
    let lattice = Lattice::hypercubic(2, l).unwrap();
    let action = PHI4.build(&lattice).unwrap();
    let mut rng = latflow::rng_from_seed(77);
    evaluate_flow(flow, &action, n, &mut rng)
        .unwrap()
        .acceptance
}

#[test]
fn a_convolutional_flow_trained_at_l6_starts_l10_ahead_of_a_fresh_one() {
    let small = scratch_file("conv6.json");
    let trained = train_to_the_end(&spec(6, conv_recipe(8), 300, small.clone()), &mut ());
    assert!(trained.acceptance > 0.3, "L = 6: {}", trained.acceptance);

    // The same recipe on L = 10, from the L = 6 parameters and from scratch, untrained.
    let lattice = Lattice::hypercubic(2, 10).unwrap();
    let config = conv_recipe(8).build(&lattice).unwrap();
    let fresh = FlowModel::new(&config, &lattice, 3).unwrap();
    let mut carried = FlowModel::new(&config, &lattice, 3).unwrap();
    init_from(&mut carried, &small).unwrap();
    let source = FlowModel::load(&small).unwrap();
    assert_eq!(carried.params(), source.params());
    // An independence chain's acceptance from 4000 samples has an error of about 0.01–0.02
    // here; the margin is several of those. (Measured: 0.146 carried, 0.0015 fresh.)
    let (a_fresh, a_carried) = (acceptance(&fresh, 10, 4000), acceptance(&carried, 10, 4000));
    assert!(
        a_carried > a_fresh + 0.1,
        "carried {a_carried}, fresh {a_fresh}"
    );

    // Through the run spec: training at L = 10 starts from the L = 6 flow. (A learning
    // rate that small keeps the one step from moving it: Adam's first steps move every
    // parameter by about the rate, which at 0.01 undoes most of what was carried.)
    let mut larger = spec(10, conv_recipe(8), 1, scratch_file("conv10.json"));
    larger.train.lr = 1e-5;
    larger.init = Some(small.clone());
    let report = train_to_the_end(&larger, &mut ());
    assert!(report.acceptance > a_fresh + 0.1, "{}", report.acceptance);
}

#[test]
fn flows_whose_nets_depend_on_the_size_are_refused() {
    let seed = RecipeSpec {
        kind: RecipeKind::Seed,
        hidden: 16,
        affine_blocks: 1,
        ..RecipeSpec::default()
    };
    let small = scratch_file("seed4.json");
    train_to_the_end(&spec(4, seed.clone(), 2, small.clone()), &mut ());
    let lattice = Lattice::hypercubic(2, 6).unwrap();
    let mut model = FlowModel::new(&seed.build(&lattice).unwrap(), &lattice, 1).unwrap();
    let e = init_from(&mut model, &small).unwrap_err().to_string();
    assert!(e.contains("convolutional"), "{e}");
    // Another recipe on the same lattice: another configuration.
    let mut conv4 = FlowModel::new(
        &conv_recipe(8)
            .build(&Lattice::hypercubic(2, 4).unwrap())
            .unwrap(),
        &Lattice::hypercubic(2, 4).unwrap(),
        1,
    )
    .unwrap();
    let e = init_from(&mut conv4, &small).unwrap_err().to_string();
    assert!(e.contains("another configuration"), "{e}");
    // A missing file is an error naming it.
    let e = init_from(&mut conv4, &scratch_file("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
}
