//! Sizes that cannot fit in memory, counts that overflow and runs that would take months
//! are refused with a typed error naming the parameter (as a runcard key) and, for memory,
//! the amount needed — before anything large is allocated. Every test runs under the same
//! fixed limits (1 GiB, the default work bounds), so the results do not depend on the
//! machine.
//!
//! Hostile command lines, one per kind of mistake, are in the `hostile` module.

mod common;
#[path = "bad_input/hostile.rs"]
mod hostile;

use std::path::PathBuf;
use std::sync::Arc;

use latflow::action::FreeField;
use latflow::flow::{FlowConfig, FlowModel, TransformKind};
use latflow::kernel::KernelExpr;
use latflow::limits::{self, Limits};
use latflow::run::{
    ActionSpec, AnnealSpec, KernelSpec, RecipeKind, RecipeSpec, SampleSpec, TrainSpec,
};
use latflow::train::{OptimizerKind, TrainConfig, Trainer};
use latflow::{Error, Lattice};

/// The limits every test here runs under.
fn fixed_limits() {
    limits::set_limits(Some(Limits {
        memory_bytes: 1 << 30,
        max_site_updates: limits::MAX_SITE_UPDATES,
        max_multiply_adds: limits::MAX_MULTIPLY_ADDS,
    }));
}

/// Asserts an [`Error::InvalidParameter`] for `name` whose message contains every one of
/// `words`.
fn assert_refused<T>(result: Result<T, Error>, name: &str, words: &[&str]) {
    let error = match result {
        Ok(_) => panic!("expected an invalid `{name}`, got a success"),
        Err(e) => e,
    };
    let message = error.to_string();
    match &error {
        Error::InvalidParameter { name: got, .. } => {
            assert_eq!(got, name, "wrong parameter named: {message}");
            assert!(message.contains(&format!("`{name}`")), "{message}");
            for w in words {
                assert!(message.contains(w), "`{w}` missing from: {message}");
            }
        }
        other => panic!("expected an invalid `{name}`, got {other:?}"),
    }
}

fn base_sample() -> SampleSpec {
    SampleSpec {
        lattice: Lattice::new(&[8, 8]).unwrap(),
        action: ActionSpec::Phi4 {
            beta: 0.5,
            lambda: 0.5,
        },
        kernel: KernelSpec::default(),
        n: 10_000,
        therm: 1_000,
        thin: 1,
        seed: 1,
        model: None,
        chains: 1,
    }
}

fn base_train() -> TrainSpec {
    TrainSpec {
        lattice: Lattice::new(&[8, 8]).unwrap(),
        action: ActionSpec::Free { mass: 0.7 },
        recipe: RecipeSpec::default(),
        train: TrainConfig::new(500, 750, 0.01),
        anneal: None,
        snf: None,
        init: None,
        out: PathBuf::from("model.json"),
    }
}

#[test]
fn usual_runs_pass_every_check() {
    fixed_limits();
    base_sample().validate().unwrap();
    let mut spec = base_sample();
    spec.kernel.kind = KernelExpr::parse("mix(0.3: local, 0.7: hmc)+local*2").unwrap();
    spec.validate().unwrap();
    base_train().validate().unwrap();
    for kind in [
        RecipeKind::Seed,
        RecipeKind::RealNvp,
        RecipeKind::Additive,
        RecipeKind::Z2Affine,
        RecipeKind::Conv,
    ] {
        let recipe = RecipeSpec {
            kind,
            ..RecipeSpec::default()
        };
        let lattice = Lattice::new(&[16, 16]).unwrap();
        let config = recipe.build(&lattice).unwrap();
        let model = FlowModel::new(&config, &lattice, 1).unwrap();
        let action = Arc::new(FreeField::new(lattice, 0.5).unwrap());
        Trainer::new(model, action, TrainConfig::new(500, 750, 0.01)).unwrap();
    }
}

#[test]
fn lattices_too_large_are_refused_before_allocating() {
    fixed_limits();
    // Fits in 32 bits but its neighbour tables need ≈ 130 GiB.
    match "65000x65000".parse::<Lattice>() {
        Err(Error::InvalidLattice(reason)) => {
            assert!(reason.contains("65000x65000"), "{reason}");
            assert!(reason.contains("GiB"), "{reason}");
            assert!(reason.contains("would need at least"), "{reason}");
        }
        other => panic!("expected an invalid lattice, got {other:?}"),
    }
    for extents in [vec![2; 64], vec![usize::MAX, 2], vec![1 << 20, 1 << 20]] {
        match Lattice::new(&extents) {
            Err(Error::InvalidLattice(reason)) => {
                assert!(reason.contains("more than 2³² sites"), "{reason}")
            }
            other => panic!("expected an invalid lattice, got {other:?}"),
        }
    }
    assert!(matches!(
        Lattice::hypercubic(1_000_000_000_000, 2),
        Err(Error::InvalidLattice(_))
    ));
}

#[test]
fn sample_sizes_overflow_memory_and_work_are_refused() {
    fixed_limits();
    type Edit = fn(&mut SampleSpec);
    let cases: Vec<(Edit, &str, Vec<&str>)> = vec![
        (
            |s| s.n = usize::MAX,
            "n",
            vec!["measurement series", "would need at least", "EiB"],
        ),
        (|s| s.n = 0, "n", vec!["at least 1"]),
        (|s| s.thin = 0, "thin", vec!["at least 1"]),
        (|s| s.therm = usize::MAX, "therm", vec!["does not fit"]),
        (
            |s| s.therm = 1_000_000_000_000_000,
            "therm",
            vec!["site updates", "1.0e14"],
        ),
        (
            |s| s.kernel.md_steps = 1_000_000_000,
            "md_steps",
            vec!["site updates"],
        ),
        (|s| s.kernel.md_steps = 0, "md_steps", vec!["between 1 and"]),
        (
            |s| s.kernel.md_steps = usize::MAX,
            "md_steps",
            vec!["between 1 and"],
        ),
        (|s| s.kernel.tau = f64::NAN, "tau", vec!["NaN"]),
        (|s| s.kernel.tau = -1.0, "tau", vec!["positive"]),
        (
            |s| {
                s.kernel.kind = KernelExpr::parse("local").unwrap();
                s.kernel.step_size = f64::INFINITY;
            },
            "step_size",
            vec!["inf"],
        ),
        (
            |s| s.kernel.kind = KernelExpr::parse("local*1000000000000").unwrap(),
            "kernel",
            vec!["move records", "would need at least"],
        ),
        (
            |s| {
                s.lattice = Lattice::new(&[1024, 1024]).unwrap();
                s.n = 10_000_000;
                s.thin = 1000;
            },
            "n",
            vec!["site updates", "1.7e14"],
        ),
        (
            |s| {
                s.kernel.kind = KernelExpr::parse("flow").unwrap();
                s.model = Some(PathBuf::from("model.json"));
                s.kernel.flow_batch = 0;
            },
            "flow_batch",
            vec!["at least 1"],
        ),
        (
            |s| {
                s.kernel.kind = KernelExpr::parse("flow").unwrap();
                s.model = Some(PathBuf::from("model.json"));
                s.kernel.flow_batch = 1_000_000_000_000;
            },
            "flow_batch",
            vec!["flow proposal batch", "would need at least", "TiB"],
        ),
    ];
    for (edit, name, words) in cases {
        let mut spec = base_sample();
        edit(&mut spec);
        assert_refused(spec.validate(), name, &words);
    }
}

#[test]
fn recipes_too_large_or_malformed_are_refused() {
    fixed_limits();
    type Edit = fn(&mut RecipeSpec);
    let cases: Vec<(Edit, &str, Vec<&str>)> = vec![
        (
            |r| r.hidden = 1_000_000_000,
            "hidden",
            vec!["parameters", "would need at least", "GiB"],
        ),
        (
            |r| r.hidden = usize::MAX,
            "hidden",
            vec!["would need at least"],
        ),
        (
            |r| r.affine_blocks = 1_000_000_000_000,
            "affine_blocks",
            vec!["would need at least"],
        ),
        (|r| r.segments = 0, "segments", vec!["between 1 and"]),
        (
            |r| r.segments = 1_000_000,
            "segments",
            vec!["between 1 and"],
        ),
        (
            |r| {
                r.kind = RecipeKind::RealNvp;
                r.depth = 1_000_000_000_000;
            },
            "depth",
            vec!["would need at least"],
        ),
        (|r| r.depth = 0, "depth", vec!["at least 1"]),
        (
            |r| {
                r.kind = RecipeKind::Conv;
                r.channels = 1_000_000_000;
            },
            "channels",
            vec!["would need at least"],
        ),
        (
            |r| {
                r.kind = RecipeKind::Conv;
                r.kernel = 4;
            },
            "kernel",
            vec!["odd"],
        ),
        (
            |r| {
                r.kind = RecipeKind::Conv;
                r.kernel = 100_000_001;
            },
            "kernel",
            vec!["would need at least"],
        ),
    ];
    for (edit, name, words) in cases {
        let mut spec = base_train();
        edit(&mut spec.recipe);
        assert_refused(spec.validate(), name, &words);
        assert_refused(spec.recipe.build(&spec.lattice), name, &words);
    }
}

#[test]
fn training_settings_out_of_range_are_refused() {
    fixed_limits();
    type Edit = fn(&mut TrainSpec);
    let cases: Vec<(Edit, &str, Vec<&str>)> = vec![
        (|t| t.train.lr = 0.0, "lr", vec!["positive"]),
        (|t| t.train.lr = f64::INFINITY, "lr", vec!["finite"]),
        (
            |t| t.train.optimizer = OptimizerKind::adamw(-1.0),
            "weight_decay",
            vec!["≥ 0"],
        ),
        (
            |t| t.train.optimizer = OptimizerKind::adamw(f64::NAN),
            "weight_decay",
            vec!["NaN"],
        ),
        (|t| t.train.batch = 0, "batch", vec!["at least 1"]),
        (|t| t.train.iterations = 0, "iterations", vec!["at least 1"]),
        (
            |t| t.train.eval_samples = 1,
            "eval_samples",
            vec!["at least 100"],
        ),
        (
            |t| t.train.chunks = 100_000,
            "chunks",
            vec!["at most batch"],
        ),
        (
            |t| {
                t.anneal = Some(AnnealSpec {
                    start: 2.0,
                    over: 0.5,
                })
            },
            "anneal.start",
            vec!["[0, 1]"],
        ),
        (
            |t| {
                t.anneal = Some(AnnealSpec {
                    start: 0.5,
                    over: f64::NAN,
                })
            },
            "anneal.over",
            vec!["(0, 1]"],
        ),
    ];
    for (edit, name, words) in cases {
        let mut spec = base_train();
        edit(&mut spec);
        assert_refused(spec.validate(), name, &words);
    }
}

/// A small flow on a 6 × 6 lattice and its free-field target.
fn small_trainer_parts() -> (FlowModel, Arc<FreeField>) {
    let lattice = Lattice::hypercubic(2, 6).unwrap();
    let model = FlowModel::new(&FlowConfig::real_nvp(2, &[8]), &lattice, 1).unwrap();
    (model, Arc::new(FreeField::new(lattice, 0.5).unwrap()))
}

#[test]
fn trainers_too_large_or_too_long_are_refused() {
    fixed_limits();
    type Edit = fn(&mut TrainConfig);
    let cases: Vec<(Edit, &str, Vec<&str>)> = vec![
        (
            |c| c.batch = 1_000_000_000_000,
            "batch",
            vec!["training batch", "would need at least"],
        ),
        (
            |c| {
                c.batch = 1_000_000_000_000;
                c.eval_samples = 1_000_000_000_000_000;
            },
            "eval_samples",
            vec!["evaluation sample", "would need at least"],
        ),
        (
            |c| c.iterations = 1_000_000_000_000,
            "iterations",
            vec!["multiply-adds", "1.0e17"],
        ),
        (|c| c.chunks = 100_000, "chunks", vec!["at most batch"]),
    ];
    for (edit, name, words) in cases {
        let (model, action) = small_trainer_parts();
        let mut config = TrainConfig::new(64, 10, 0.01);
        edit(&mut config);
        assert_refused(Trainer::new(model, action, config), name, &words);
    }
}

#[test]
fn flows_too_large_are_refused_before_allocating() {
    fixed_limits();
    let lattice = Lattice::new(&[8, 8]).unwrap();
    let cases: Vec<(FlowConfig, &str, Vec<&str>)> = vec![
        (
            FlowConfig::real_nvp(2, &[1_000_000_000]),
            "hidden",
            vec!["parameters", "would need at least", "GiB"],
        ),
        (
            FlowConfig::real_nvp(1, &[usize::MAX, usize::MAX]),
            "hidden",
            vec!["would need at least"],
        ),
        (
            FlowConfig::convolutional(TransformKind::Affine, 1, &[1_000_000_000], 3),
            "channels",
            vec!["would need at least"],
        ),
        (
            FlowConfig::convolutional(TransformKind::Affine, 1, &[4], 100_000_001),
            "kernel",
            vec!["tap table", "would need at least"],
        ),
        (
            FlowConfig::convolutional(TransformKind::Affine, 1, &[4], usize::MAX),
            "kernel",
            vec!["do not fit"],
        ),
    ];
    for (config, name, words) in cases {
        assert_refused(FlowModel::new(&config, &lattice, 1), name, &words);
    }
}

#[test]
fn the_memory_budget_is_what_the_limits_say() {
    fixed_limits();
    // 10⁷ measurements of 23 values: about 2 GiB, more than the 1 GiB budget.
    let mut spec = base_sample();
    spec.n = 10_000_000;
    spec.kernel.md_steps = 1;
    assert_refused(spec.validate(), "n", &["measurement series", "1.0 GiB"]);
    assert_eq!(limits::Limits::current().unwrap().memory_bytes, 1 << 30);
}

#[test]
fn library_kernels_and_schedules_take_extreme_counts() {
    fixed_limits();
    let lattice = Lattice::new(&[4, 4]).unwrap();
    let action = Arc::new(FreeField::new(lattice, 0.5).unwrap());
    assert_refused(
        latflow::kernel::Hmc::new(action, 1.0, usize::MAX),
        "md_steps",
        &["between 1 and"],
    );
    // Periods that outgrow the integers, and equal periods far into a run, neither
    // overflow nor walk through every period.
    let growing = latflow::train::Schedule::WarmRestarts {
        period: usize::MAX / 2 + 1,
        growth: 1e300,
    };
    assert!(
        growing
            .learning_rate(0.01, usize::MAX, usize::MAX)
            .is_finite()
    );
    let equal = latflow::train::Schedule::WarmRestarts {
        period: 1,
        growth: 1.0,
    };
    assert_eq!(equal.position(1 << 60, usize::MAX), (1 << 60, 0, 1));
}
