//! Hostile command lines, one per kind of mistake (outputs over inputs, settings found bad
//! only after work, settings without effect, conflicting overrides, locked folders,
//! malformed environment variables, sizes beyond the memory or any use, errors that must
//! name the right flag, key, line or file, an MPI launcher without MPI, a chain stuck in
//! one vacuum): each gets its exit status and message, no folder is made for a refused
//! run, and no input file changes. A `sample` stopped by two signals in a row (as `timeout`
//! sends) still writes its report.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use super::common;

/// What a file of a case starts as.
#[derive(Clone, Copy)]
enum Content {
    /// This text.
    Text(&'static str),
    /// A trained model (4 × 4, β = 0.5, λ = 0.5).
    Model,
    /// A real-NVP model on 4 × 4 whose parameters were multiplied by 10¹⁰: its samples
    /// overflow.
    HugeModel,
    /// A finished study folder (`out/x` of [`STUDY`]).
    Study,
    /// The checkpoint of a finished training written with two threads (two batch chunks).
    Checkpoint,
    /// A lock held by a running process (this test: the file is locked while the case
    /// runs).
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
    /// Words stderr must contain (with a leading `!`: must not contain).
    stderr: &'static [&'static str],
    /// Paths that must not exist afterwards (folders of refused runs, released locks).
    absent: &'static [&'static str],
}

/// `latflow sample` of φ⁴ on 4 × 4 (β = λ = 0.5) with further arguments.
macro_rules! sample_4x4 {
    ($($arg:literal),*) => {
        &["sample", "--lattice", "4x4", "--beta", "0.5", "--lambda", "0.5", $($arg),*]
    };
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

/// A runcard of `sample` (4 × 4, 100 HMC steps) with `$extra` appended after `n`.
macro_rules! sample_card {
    ($extra:literal) => {
        concat!(
            "lattice = [4, 4]\nn = 100\n",
            $extra,
            "[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n[kernel]\nkind = \"hmc\"\n"
        )
    };
}

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
            stderr: &[
                "stage.2.action.beta",
                "finite",
                "line 11 of runcard cur.toml",
            ],
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
            stderr: &["hmc.n", "at least 1", "line 10 of sweep runcard sweep.toml"],
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
            stderr: &[
                "analysis.autocorrelation_observable",
                "bogus",
                "abs_m",
                "line 15 of runcard study.toml",
            ],
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
            args: sample_4x4!(),
            env: &[("LATFLOW_MEMORY_BUDGET", "-5")],
            status: 1,
            stderr: &["LATFLOW_MEMORY_BUDGET", "positive whole number", "-5"],
            absent: &[],
        },
        Case {
            what: "an unparsable work bound",
            files: &[],
            args: sample_4x4!(),
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
    cases.extend(curriculum_errors());
    cases.extend(settings_at_their_defaults());
    cases.extend(ineffective_settings());
    cases.extend(misleading_errors());
    cases.extend(launcher_case());
    cases.extend(action_table_errors());
    cases
}

/// A curriculum of three stages on 4 × 4 whose third stage ends in `$extra` (its
/// `[stage.action]` table starts on line 14, its `[stage.train]` table on line 18).
macro_rules! curriculum {
    ($beta:literal, $extra:literal) => {
        concat!(
            "out = \"cur\"\n[recipe]\nkind = \"conv\"\n",
            "[[stage]]\nlattice = [4, 4]\n",
            "action = { form = \"phi4\", beta = 0.5, lambda = 0.5 }\n",
            "train = { batch = 16, iterations = 3, lr = 0.01 }\n",
            "[[stage]]\nlattice = [4, 4]\n",
            "action = { form = \"phi4\", beta = 0.5, lambda = 0.5 }\n",
            "train = { batch = 16, iterations = 3, lr = 0.01 }\n",
            "[[stage]]\nlattice = [4, 4]\n",
            "[stage.action]\nform = \"phi4\"\nbeta = ",
            $beta,
            "\nlambda = 0.5\n[stage.train]\nbatch = 16\niterations = 3\n",
            $extra
        )
    };
}

/// Curriculum runcards refused with the key and its line, every stage's keys included,
/// before any stage runs.
fn curriculum_errors() -> Vec<Case> {
    let case = |what, text, stderr| Case {
        what,
        files: vec![("cur.toml", Content::Text(text))].leak(),
        args: &["curriculum", "cur.toml", "--quiet"],
        env: &[],
        status: 1,
        stderr,
        absent: &["cur"],
    };
    vec![
        case(
            "a curriculum whose third stage has β = inf",
            curriculum!("inf", "lr = 0.01\n"),
            &[
                "`stage.3.action.beta`",
                "finite",
                "line 16 of runcard cur.toml",
            ],
        ),
        case(
            "a curriculum whose third stage has a negative learning rate",
            curriculum!("0.5", "lr = -0.01\n"),
            &[
                "`stage.3.train.lr`",
                "positive",
                "line 21 of runcard cur.toml",
            ],
        ),
        case(
            "an unknown key in a curriculum stage's table",
            curriculum!("0.5", "lr = 0.01\nbogus = 1\n"),
            &["bogus", "line 22", "cur.toml"],
        ),
        case(
            "a wrong type in a curriculum stage's table",
            curriculum!("0.5", "lr = \"fast\"\n"),
            &["invalid type", "line 21", "cur.toml"],
        ),
        case(
            "a shared recipe size that no stage can build",
            CURRICULUM_NO_CHANNELS,
            &["`recipe.channels`", "stage 1", "line 4 of runcard cur.toml"],
        ),
    ]
}

/// A one-stage curriculum whose convolutional recipe has no channels.
const CURRICULUM_NO_CHANNELS: &str = "out = \"cur\"\n[recipe]\nkind = \"conv\"\nchannels = 0\n\
    [[stage]]\nlattice = [4, 4]\naction = { form = \"phi4\", beta = 0.5, lambda = 0.5 }\n\
    train = { batch = 16, iterations = 3, lr = 0.01 }\n";

/// Keys written with their default values where they would have no effect: refused as
/// any other value is (what counts is that the runcard gives them).
fn settings_at_their_defaults() -> Vec<Case> {
    let kernel_key = |what, value: &str| Case {
        what,
        files: vec![(
            "r.toml",
            Content::Text(format!("{}step_size = {value}\n", sample_card!("")).leak()),
        )]
        .leak(),
        args: &["sample", "--config", "r.toml", "--quiet"],
        env: &[],
        status: 1,
        stderr: &["`step_size`", "has no effect", "`local`", "line 9"],
        absent: &[],
    };
    vec![
        kernel_key("a kernel-table key the kernel does not take", "0.3"),
        kernel_key(
            "a kernel-table key at its default the kernel does not read",
            "1.0",
        ),
        Case {
            what: "a study sampler's kernel key at its default the kernel does not read",
            files: &[(
                "study.toml",
                Content::Text(study!(
                    "[[sampler]]\nname = \"hmc\"\nkernel = { kind = \"hmc\", sweep_order = \"sequential\" }\n"
                )),
            )],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &[
                "sweep_order",
                "has no effect",
                "line 16 of runcard study.toml",
            ],
            absent: &["out/x"],
        },
        Case {
            what: "a recipe at its default beside a trained flow",
            files: &[
                ("m.json", Content::Model),
                ("study.toml", Content::Text(STUDY_ADOPTING_WITH_RECIPE)),
            ],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &[
                "`flow.recipe`",
                "has no effect",
                "already trained",
                "of runcard study.toml",
            ],
            absent: &["out"],
        },
        Case {
            what: "a sweep kernel's key at its default the kernel does not read",
            files: &[(
                "sweep.toml",
                Content::Text(sweep!(
                    "seeds = [1]\n[sample]\nkernels = [{ kind = \"flow+local\", tau = 1.0 }]\n"
                )),
            )],
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &[
                "sample.kernels",
                "kernel 0: tau",
                "has no effect",
                "line 10",
            ],
            absent: &["out/s"],
        },
    ]
}

/// [`STUDY_ADOPTING`] on 4 × 4 (the model's lattice) with the default recipe written out.
const STUDY_ADOPTING_WITH_RECIPE: &str = "name = \"y\"\nout = \"out\"\nlattice = [4, 4]\n[action]\n\
    form = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n[flow]\nmodel = \"m.json\"\n[flow.recipe]\n\
    kind = \"seed\"\n[[sampler]]\nname = \"flow\"\nkernel = \"flow\"\n";

/// Settings that would have no effect, and overrides that contradict each other.
fn ineffective_settings() -> Vec<Case> {
    vec![
        Case {
            what: "a model for a kernel without a flow, in a runcard",
            files: &[(
                "r.toml",
                Content::Text(sample_card!("model = \"m.json\"\n")),
            )],
            args: &["sample", "--config", "r.toml"],
            env: &[],
            status: 1,
            stderr: &["`model`", "has no effect", "line 3 of runcard r.toml"],
            absent: &[],
        },
        Case {
            what: "a [flow] table in a study without a flow sampler",
            files: &[(
                "study.toml",
                Content::Text(study!("[flow.train]\nbatch = 16\n")),
            )],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`flow`", "has no effect", "no sampler"],
            absent: &["out/x"],
        },
        Case {
            what: "--set flow.… in a study without a flow sampler",
            files: &[("study.toml", Content::Text(STUDY))],
            args: &["run", "study.toml", "--set", "flow.train.lr=0.1", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`flow`", "set by the override flow.train.lr=0.1"],
            absent: &["out/x"],
        },
        Case {
            what: "check samples without evaluations during training",
            files: &[],
            args: &[
                "--iterations",
                "2",
                "--check-samples",
                "200",
                "--out",
                "x.json",
            ],
            env: &[],
            status: 1,
            stderr: &["--check-samples", "has no effect"],
            absent: &["x.json"],
        },
        Case {
            what: "a β for a size not in the sweep",
            files: &[("sweep.toml", Content::Text(SWEEP_FOREIGN_BETA))],
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`beta`", "L = 8", "not in `lattices`", "line 4"],
            absent: &["out/s"],
        },
        Case {
            what: "--name against --set name=…",
            files: &[("study.toml", Content::Text(STUDY))],
            args: &[
                "run",
                "study.toml",
                "--name",
                "a",
                "--set",
                "name=b",
                "--quiet",
            ],
            env: &[],
            status: 1,
            stderr: &["`name` is set twice", "--name", "give it once"],
            absent: &["out/a", "out/b", "out/x"],
        },
        Case {
            what: "an evaluation of two samples",
            files: &[],
            args: &[
                "--iterations",
                "2",
                "--eval-samples",
                "2",
                "--out",
                "x.json",
            ],
            env: &[],
            status: 1,
            stderr: &["--eval-samples", "at least 100", "τ_rej"],
            absent: &["x.json"],
        },
    ]
}

/// A sweep on L = 4 with a β for L = 8.
const SWEEP_FOREIGN_BETA: &str = "name = \"s\"\nout = \"out\"\nlattices = [4]\n\
    beta = [[4, 0.5], [8, 0.6]]\nseeds = [1]\nbatch = [16]\niterations = [2]\nlr = [0.01]\n";

/// A sweep whose grid has 2 · 10⁶ points.
fn huge_grid() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let list = |n: usize| {
            (1..=n)
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "name = \"s\"\nout = \"out\"\nlattices = [4]\nbeta = [[4, 0.5]]\n\
             seeds = [{}]\nbatch = [{}]\niterations = [2]\nlr = [0.01]\n",
            list(2000),
            list(1000)
        )
    })
}

/// A kernel expression nested 300 deep (310 characters).
fn deep_expression() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| format!("{}local+++++", "(".repeat(300)))
}

/// Errors that must send the user to the right flag, key, line or file, and sizes the
/// memory the process may use refuses.
fn misleading_errors() -> Vec<Case> {
    vec![
        Case {
            what: "nets too wide for memory, blamed on their width",
            files: &[],
            args: &[
                "train",
                "--lattice",
                "4x4",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
                "--hidden",
                "200000",
                "--out",
                "x.json",
            ],
            env: &[("LATFLOW_MEMORY_BUDGET", "1073741824")],
            status: 1,
            stderr: &["--hidden", "would need at least", "!--eval-samples"],
            absent: &["x.json"],
        },
        Case {
            what: "flow proposal batches of an ensemble, counted for every chain",
            files: &[("m.json", Content::Model)],
            args: &[
                "sample",
                "--model",
                "m.json",
                "--kernel",
                "flow+local",
                "--chains",
                "1000",
                "--n",
                "20",
                "--therm",
                "10",
                "--lattice",
                "4x4",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
                "--quiet",
                "--out",
                "s.json",
            ],
            env: &[("LATFLOW_MEMORY_BUDGET", "400000000")],
            status: 1,
            stderr: &["--flow-batch", "for each of 1000 chains"],
            absent: &["s.json"],
        },
        Case {
            what: "a thermalisation cut longer than the stored series",
            files: &[("out/x", Content::Study)],
            args: &["analyse", "out/x", "--therm-cut", "100000", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["--therm-cut", "has 400", "!measurements`"],
            absent: &["out/x/analysis.toml"],
        },
        Case {
            what: "a negative λ in a sweep",
            files: &[(
                "sweep.toml",
                Content::Text(sweep!("seeds = [1]\nlambda = -0.5\n")),
            )],
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`lambda`", "≥ 0", "line 9", "!β"],
            absent: &["out/s"],
        },
        Case {
            what: "a flow model whose samples overflow",
            files: &[("huge.json", Content::HugeModel)],
            args: &[
                "sample",
                "--model",
                "huge.json",
                "--kernel",
                "flow",
                "--quiet",
            ],
            env: &[],
            status: 1,
            stderr: &["flow model huge.json", "non-finite"],
            absent: &[],
        },
        Case {
            what: "an unknown runcard key with --name, no --set",
            files: &[("study.toml", Content::Text(study!("bogus = 1\n")))],
            args: &["run", "study.toml", "--name", "z", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["bogus", "line 14", "!overrides"],
            absent: &["out/z"],
        },
        Case {
            what: "a kernel expression nested beyond any use",
            files: &[],
            args: [
                "sample",
                "--lattice",
                "4x4",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
                "--kernel",
                deep_expression(),
            ]
            .to_vec()
            .leak(),
            env: &[],
            status: 1,
            stderr: &[
                "--kernel",
                "… (310 characters)",
                "!(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
            ],
            absent: &[],
        },
        Case {
            what: "a seed no runcard can hold, for run as for sample",
            files: &[("study.toml", Content::Text(STUDY))],
            args: &[
                "run",
                "study.toml",
                "--seed",
                "18446744073709551615",
                "--quiet",
            ],
            env: &[],
            status: 2,
            stderr: &["--seed", "2⁶³ − 1"],
            absent: &["out/x"],
        },
        Case {
            what: "a seed no runcard can hold, for sample",
            files: &[],
            args: sample_4x4!("--seed", "18446744073709551615"),
            env: &[],
            status: 2,
            stderr: &["--seed", "2⁶³ − 1"],
            absent: &[],
        },
        Case {
            what: "a grid of two million points",
            files: vec![("sweep.toml", Content::Text(huge_grid()))].leak(),
            args: &["sweep", "sweep.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`seeds`", "2.0e6 points", "1000 batch × 2000 seeds"],
            absent: &["out/s"],
        },
        Case {
            what: "a study adopting a model of another lattice",
            files: &[
                ("m.json", Content::Model),
                ("study.toml", Content::Text(STUDY_ADOPTING)),
            ],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["flow.model m.json", "[4, 4]", "[6, 6]"],
            absent: &["out"],
        },
        Case {
            what: "a checkpoint resumed with another thread count",
            files: &[("ck.json", Content::Checkpoint)],
            args: &["train", "--resume", "ck.json", "--out", "r.json", "--quiet"],
            env: &[("RAYON_NUM_THREADS", "1")],
            status: 0,
            stderr: &["note", "2 batch chunks", "RAYON_NUM_THREADS=2"],
            absent: &[],
        },
        Case {
            what: "a series beyond the address space `ulimit -v` leaves",
            files: &[],
            args: sample_4x4!("--n", "10000000", "--quiet"),
            env: &[(ULIMIT_V, "2000000")],
            status: 1,
            stderr: &["--n", "would need at least", "is available"],
            absent: &[],
        },
    ]
}

/// The pseudo environment variable of a case run under `ulimit -v` of its value (KiB).
const ULIMIT_V: &str = "ulimit -v";

/// A study on 6 × 6 with the flow trained before in `m.json` (a 4 × 4 model).
const STUDY_ADOPTING: &str = "name = \"y\"\nout = \"out\"\nlattice = [6, 6]\n[action]\n\
    form = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n[flow]\nmodel = \"m.json\"\n[[sampler]]\n\
    name = \"flow\"\nkernel = \"flow\"\n";

/// A build without MPI under an MPI launcher of two ranks (a build with MPI would join
/// the ranks instead).
fn launcher_case() -> Option<Case> {
    (!cfg!(feature = "mpi")).then_some(Case {
        what: "a build without MPI under a launcher of two ranks",
        files: &[],
        args: sample_4x4!(),
        env: &[("OMPI_COMM_WORLD_SIZE", "2")],
        status: 1,
        stderr: &["built without MPI", "--features mpi"],
        absent: &[],
    })
}

/// The hash of every file under `path` (the file itself, or a folder's files).
fn hashes(path: &Path) -> Vec<(std::path::PathBuf, u64)> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        return entries.iter().flat_map(|p| hashes(p)).collect();
    }
    let mut hasher = DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut hasher);
    vec![(path.to_path_buf(), hasher.finish())]
}

/// Copies the folder `from` to `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_folder(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A process id that no process has any more.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Runs `latflow ARGS` in `dir` with the environment `env`, asserting success.
fn prepare(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut command = common::latflow();
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied());
    common::assert_success(&command.output().unwrap());
}

/// The files the cases start from: a model, a model whose samples overflow, a finished
/// study folder and a checkpoint written with two threads, all made in `root`.
fn fixtures(root: &Path) {
    let small = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = TRAIN_SMALL.to_vec();
        args.extend_from_slice(extra);
        args
    };
    prepare(
        root,
        &small(&["--iterations", "2", "--out", "model.json"]),
        &[],
    );
    prepare(
        root,
        &small(&[
            "--iterations",
            "2",
            "--checkpoint-every",
            "1",
            "--checkpoint",
            "checkpoint.json",
            "--out",
            "ckm.json",
        ]),
        &[("RAYON_NUM_THREADS", "2")],
    );
    prepare(
        root,
        &[
            &TRAIN_SMALL[..7],
            &[
                "--recipe",
                "real-nvp",
                "--hidden",
                "4",
                "--affine-blocks",
                "1",
            ],
            &[
                "--batch",
                "16",
                "--iterations",
                "2",
                "--quiet",
                "--out",
                "rn.json",
            ],
        ]
        .concat(),
        &[],
    );
    let mut huge: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("rn.json")).unwrap()).unwrap();
    for p in huge["params"].as_array_mut().unwrap() {
        *p = (p.as_f64().unwrap() * 1e10).into();
    }
    std::fs::write(root.join("huge.json"), huge.to_string()).unwrap();
    std::fs::write(root.join("study.toml"), STUDY).unwrap();
    prepare(root, &["run", "study.toml", "--quiet"], &[]);
}

#[test]
fn hostile_command_lines_are_refused_before_any_work_and_harm_no_file() {
    let root = common::scratch("hostile");
    fixtures(&root);
    for (k, case) in cases().iter().enumerate() {
        let dir = root.join(format!("case-{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut inputs = Vec::new();
        let mut locks = Vec::new();
        for &(name, content) in case.files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match content {
                Content::Text(text) => std::fs::write(&path, text).unwrap(),
                Content::Model => {
                    std::fs::copy(root.join("model.json"), &path).unwrap();
                }
                Content::HugeModel => {
                    std::fs::copy(root.join("huge.json"), &path).unwrap();
                }
                Content::Study => copy_folder(&root.join("out/x"), &path),
                Content::Checkpoint => {
                    std::fs::copy(root.join("checkpoint.json"), &path).unwrap();
                }
                Content::LiveLock => {
                    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
                    let file = std::fs::File::open(&path).unwrap();
                    file.lock().unwrap();
                    locks.push(file);
                }
                Content::DeadLock => std::fs::write(&path, format!("{}\n", dead_pid())).unwrap(),
            }
            // A stale lock is taken over, and a resumed checkpoint is written on.
            if !matches!(content, Content::DeadLock | Content::Checkpoint) {
                inputs.extend(hashes(&path));
            }
        }
        let mut command = match case.env.iter().find(|(name, _)| *name == ULIMIT_V) {
            Some((_, kib)) => {
                let mut shell = std::process::Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_latflow"));
                shell
            }
            None => common::latflow(),
        };
        if case.args[0].starts_with("--") {
            command.args(TRAIN_SMALL);
        }
        command.args(case.args).current_dir(&dir);
        for &(name, value) in case.env.iter().filter(|(name, _)| *name != ULIMIT_V) {
            command.env(name, value);
        }
        let out = command.output().unwrap();
        drop(locks);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(case.status),
            "{}: {stderr}",
            case.what
        );
        for word in case.stderr {
            match word.strip_prefix('!') {
                Some(absent) => assert!(
                    !stderr.contains(absent),
                    "{}: `{absent}` in: {stderr}",
                    case.what
                ),
                None => assert!(
                    stderr.contains(word),
                    "{}: `{word}` missing from: {stderr}",
                    case.what
                ),
            }
        }
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.what);
        for (path, hash) in &inputs {
            let now = hashes(path);
            assert_eq!(now[0].1, *hash, "{}: {} changed", case.what, path.display());
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

/// Faults inside an `[action]` table (read by its `form`) named by their key and line,
/// for `sample`, a study and a curriculum stage.
fn action_table_errors() -> Vec<Case> {
    let sample = |what, text: &'static str, stderr| Case {
        what,
        files: vec![("r.toml", Content::Text(text))].leak(),
        args: &["sample", "--config", "r.toml", "--quiet"],
        env: &[],
        status: 1,
        stderr,
        absent: &[],
    };
    vec![
        sample(
            "an unknown key in a sample runcard's action",
            "lattice = [4, 4]\nn = 100\n[action]\nform = \"phi4\"\nbeta = 0.5\n\
             lambda = 0.5\nmass = 1.0\n[kernel]\nkind = \"hmc\"\n",
            &["`action.mass` (line 7)", "unknown field", "r.toml"],
        ),
        sample(
            "a wrong type in a sample runcard's action",
            "lattice = [4, 4]\nn = 100\n[action]\nform = \"phi4\"\nbeta = \"hot\"\n\
             lambda = 0.5\n[kernel]\nkind = \"hmc\"\n",
            &["`action.beta` (line 5)", "invalid type", "r.toml"],
        ),
        Case {
            what: "a wrong type in a study's action",
            files: &[(
                "study.toml",
                Content::Text(
                    "name = \"x\"\nout = \"out\"\nlattice = [4, 4]\n[action]\nform = \"free\"\n\
                     mass = [1.0]\n[[sampler]]\nname = \"local\"\nkernel = \"local\"\n",
                ),
            )],
            args: &["run", "study.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`action.mass` (line 6)", "invalid type", "study.toml"],
            absent: &["out"],
        },
        Case {
            what: "an unknown key in a curriculum stage's action",
            files: &[(
                "cur.toml",
                Content::Text(curriculum!("0.5\nm2 = 1.0", "lr = 0.01\n")),
            )],
            args: &["curriculum", "cur.toml", "--quiet"],
            env: &[],
            status: 1,
            stderr: &["`stage.3.action.m2` (line 17)", "unknown field", "cur.toml"],
            absent: &["cur"],
        },
    ]
}
