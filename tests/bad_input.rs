//! Sizes that cannot fit in memory, counts that overflow and runs that would take months
//! are refused with a typed error naming the parameter (as a runcard key) and, for memory,
//! the amount needed — before anything large is allocated. Every test runs under the same
//! fixed limits (1 GiB, the default work bounds), so the results do not depend on the
//! machine.
//!
//! Hostile command lines, one per kind of mistake (outputs over inputs, settings found bad
//! only after work, locked folders, malformed environment variables, fits over mirrored
//! points, an MPI launcher without MPI, a chain stuck in one vacuum): each gets its exit
//! status and message, no folder is made for a refused run, and no input file changes. A
//! `sample` stopped by two signals in a row (as `timeout` sends) still writes its report.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
            vec!["at least 2"],
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

// ---------------------------------------------------------------------------------------
// The command line.

/// What a file of a case starts as.
#[derive(Clone, Copy)]
enum Content {
    /// This text.
    Text(&'static str),
    /// A trained model (4 × 4, β = 0.5, λ = 0.5).
    Model,
    /// A lock holding the id of a running process (this test's).
    LiveLock,
    /// A lock holding the id of a process that has ended.
    DeadLock,
}

/// One hostile command line, run in a folder of its own holding `files`.
struct Case {
    what: &'static str,
    files: &'static [(&'static str, Content)],
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    status: i32,
    /// Words stderr must contain.
    stderr: &'static [&'static str],
    /// Paths that must not exist afterwards (folders of refused runs, released locks).
    absent: &'static [&'static str],
}

const SAMPLE_RUNCARD: &str = "lattice = [4, 4]\nn = 100\ntherm = 10\nseed = 1\n\
[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n[kernel]\nkind = \"hmc\"\n";

const CURRICULUM_NAN: &str = r#"
out = "cur"
[recipe]
kind = "conv"
[[stage]]
lattice = [4, 4]
action = { form = "phi4", beta = 0.5, lambda = 0.5 }
train = { batch = 16, iterations = 3, lr = 0.01 }
[[stage]]
lattice = [4, 4]
action = { form = "phi4", beta = nan, lambda = 0.5 }
train = { batch = 16, iterations = 3, lr = 0.01 }
"#;

/// A sweep of one point on 4 × 4 (`out/s`), with `$extra` appended.
macro_rules! sweep {
    ($extra:literal) => {
        concat!(
            "name = \"s\"\nout = \"out\"\nlattices = [4]\nbeta = [[4, 0.5]]\nbatch = [16]\n",
            "iterations = [2]\nlr = [0.01]\n",
            $extra
        )
    };
}

/// A study of one local Metropolis chain on 4 × 4 (`out/x`), with `$extra` appended.
macro_rules! study {
    ($extra:literal) => {
        concat!(
            "name = \"x\"\nout = \"out\"\nlattice = [4, 4]\n",
            "[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n",
            "[measure]\nn = 400\ntherm = 20\n",
            "[[sampler]]\nname = \"local\"\nkernel = \"local\"\n",
            $extra
        )
    };
}

const STUDY: &str = study!("");

/// The runcard of a study on 6 × 6 (its folder, for `analyse`).
const STUDY_L6: &str = r#"
name = "six"
lattice = [6, 6]
[action]
form = "phi4"
beta = 0.5
lambda = 0.5
[[sampler]]
name = "local"
kernel = "local"
"#;

const TRAIN_SMALL: [&str; 16] = [
    "train",
    "--lattice",
    "4x4",
    "--beta",
    "0.5",
    "--lambda",
    "0.5",
    "--hidden",
    "4",
    "--affine-blocks",
    "1",
    "--segments",
    "2",
    "--batch",
    "16",
    "--quiet",
];

fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case {
            what: "the report of sample over the model it reads",
            files: &[("m.json", Content::Model)],
            args: &[
                "sample", "--model", "m.json", "--kernel", "flow", "--n", "100", "--therm", "10",
                "--out", "m.json",
            ],
            env: &[],
            status: 1,
            stderr: &["--out", "`--model`", "m.json", "destroy"],
            absent: &[],
        },
        Case {
            what: "the report of sample over its runcard",
            files: &[("run.toml", Content::Text(SAMPLE_RUNCARD))],
            args: &["sample", "--config", "run.toml", "--out", "run.toml"],
            env: &[],
            status: 1,
            stderr: &["--out", "`--config`"],
            absent: &[],
        },
        Case {
            what: "the training log and the model in one file",
            files: &[],
            args: &["--iterations", "2", "--out", "x.json", "--log", "x.json"],
            env: &[],
            status: 1,
            stderr: &["--log", "`--out`", "two outputs"],
            absent: &["x.json"],
        },
        Case {
            what: "the training log and the checkpoint in one file",
            files: &[],
            args: &[
                "--iterations",
                "2",
                "--out",
                "y.json",
                "--log",
                "c.json",
                "--checkpoint",
                "c.json",
            ],
            env: &[],
            status: 1,
            stderr: &["--log", "`--checkpoint`"],
            absent: &["y.json", "c.json"],
        },
        Case {
            what: "a curriculum whose second stage has β = nan",
            files: &[("cur.toml", Content::Text(CURRICULUM_NAN))],
            args: &["curriculum", "cur.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["stage.2.action.beta", "finite"],
            absent: &["cur"],
        },
        Case {
            what: "a sweep whose HMC baseline has no measurements",
            files: &[(
                "sweep.toml",
                Content::Text(sweep!("seeds = [1]\n[hmc]\nn = 0\n")),
            )],
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["hmc.n", "at least 1"],
            absent: &["out/s"],
        },
        Case {
            what: "a sweep with a seed given twice",
            files: &[("sweep.toml", Content::Text(sweep!("seeds = [1, 1]\n")))],
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["seeds", "given twice"],
            absent: &["out/s"],
        },
        Case {
            what: "a study plotting the autocorrelation of no observable",
            files: &[(
                "study.toml",
                Content::Text(study!(
                    "[analysis]\nautocorrelation_observable = \"bogus\"\n"
                )),
            )],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["analysis.autocorrelation_observable", "bogus", "abs_m"],
            absent: &["out/x"],
        },
        Case {
            what: "a study costing chains by no observable",
            files: &[(
                "study.toml",
                Content::Text(study!(
                    "[analysis]\ncost_observables = [\"abs_m\", \"bogus\"]\n"
                )),
            )],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["analysis.cost_observables", "bogus"],
            absent: &["out/x"],
        },
        Case {
            what: "a study folder another live run holds",
            files: &[
                ("study.toml", Content::Text(STUDY)),
                ("out/x/.latflow.lock", Content::LiveLock),
            ],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &[".latflow.lock", "in use by process"],
            absent: &["out/x/runcard.toml"],
        },
        Case {
            what: "a study folder whose lock a dead run left",
            files: &[
                ("study.toml", Content::Text(STUDY)),
                ("out/x/.latflow.lock", Content::DeadLock),
            ],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 0,
            stderr: &[],
            absent: &["out/x/.latflow.lock"],
        },
        Case {
            what: "a negative memory budget",
            files: &[],
            args: &[
                "sample",
                "--lattice",
                "4x4",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
            ],
            env: &[("LATFLOW_MEMORY_BUDGET", "-5")],
            status: 1,
            stderr: &["LATFLOW_MEMORY_BUDGET", "positive whole number", "-5"],
            absent: &[],
        },
        Case {
            what: "an unparsable work bound",
            files: &[],
            args: &[
                "sample",
                "--lattice",
                "4x4",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
            ],
            env: &[("LATFLOW_MAX_SITE_UPDATES", "1e9")],
            status: 1,
            stderr: &["LATFLOW_MAX_SITE_UPDATES"],
            absent: &[],
        },
        Case {
            what: "a fit range over mirrored points",
            files: &[("six/runcard.toml", Content::Text(STUDY_L6))],
            args: &["analyse", "six", "--fit-range", "1:5", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["--fit-range", "L/2 = 3", "mirror"],
            absent: &["six/summary.json"],
        },
        Case {
            what: "histogram bins beyond any use",
            files: &[("six/runcard.toml", Content::Text(STUDY_L6))],
            args: &["analyse", "six", "--bins", "1000000000000", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["--bins", "10000"],
            absent: &["six/summary.json"],
        },
        Case {
            what: "a chain stuck in one of two vacua",
            files: &[],
            args: &[
                "sample",
                "--lattice",
                "4x4",
                "--beta",
                "1.5",
                "--lambda",
                "0.5",
                "--kernel",
                "local",
                "--n",
                "2000",
                "--therm",
                "200",
                "--quiet",
            ],
            env: &[],
            status: 0,
            stderr: &["sign_never_changes"],
            absent: &[],
        },
    ];
    cases.extend(launcher_case());
    cases
}

/// A build without MPI under an MPI launcher of two ranks (a build with MPI would join
/// the ranks instead).
fn launcher_case() -> Option<Case> {
    (!cfg!(feature = "mpi")).then_some(Case {
        what: "a build without MPI under a launcher of two ranks",
        files: &[],
        args: &[
            "sample",
            "--lattice",
            "4x4",
            "--beta",
            "0.5",
            "--lambda",
            "0.5",
        ],
        env: &[("OMPI_COMM_WORLD_SIZE", "2")],
        status: 1,
        stderr: &["built without MPI", "--features mpi"],
        absent: &[],
    })
}

fn file_hash(path: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut hasher);
    hasher.finish()
}

/// A process id that no process has any more.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn hostile_command_lines_are_refused_before_any_work_and_harm_no_file() {
    let root = common::scratch("hostile");
    // One trained model for the cases that read one.
    let model = root.join("model.json");
    let mut train = common::latflow();
    train
        .args(TRAIN_SMALL)
        .args(["--iterations", "2", "--out"])
        .arg(&model);
    common::assert_success(&train.output().unwrap());
    for (k, case) in cases().iter().enumerate() {
        let dir = root.join(format!("case-{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut inputs = Vec::new();
        for &(name, content) in case.files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match content {
                Content::Text(text) => std::fs::write(&path, text).unwrap(),
                Content::Model => {
                    std::fs::copy(&model, &path).unwrap();
                }
                Content::LiveLock => {
                    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap()
                }
                Content::DeadLock => std::fs::write(&path, format!("{}\n", dead_pid())).unwrap(),
            }
            if !matches!(content, Content::DeadLock) {
                inputs.push((path.clone(), file_hash(&path)));
            }
        }
        let mut command = common::latflow();
        if case.args[0].starts_with("--") {
            command.args(TRAIN_SMALL);
        }
        command.args(case.args).current_dir(&dir);
        for &(name, value) in case.env {
            command.env(name, value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(case.status),
            "{}: {stderr}",
            case.what
        );
        for word in case.stderr {
            assert!(
                stderr.contains(word),
                "{}: `{word}` missing from: {stderr}",
                case.what
            );
        }
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.what);
        for (path, hash) in &inputs {
            assert_eq!(
                file_hash(path),
                *hash,
                "{}: {} changed",
                case.what,
                path.display()
            );
        }
        for name in case.absent {
            assert!(!dir.join(name).exists(), "{}: {name} exists", case.what);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// `timeout` sends SIGTERM to the process and then to its group, and an impatient user
/// presses Ctrl-C twice: `sample` still writes the report of what it measured.
#[test]
fn a_sample_stopped_by_two_signals_still_writes_its_report() {
    let dir = common::scratch("two-signals");
    let report = dir.join("report.json");
    let child = common::spawn_long_sample(&report);
    std::thread::sleep(Duration::from_millis(1500));
    common::send_signal(&child, "TERM");
    common::send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains("SIGTERM") && err.contains("partial report"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    let n = v["n"].as_u64().unwrap();
    assert!(n > 0 && n < 10_000_000, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
