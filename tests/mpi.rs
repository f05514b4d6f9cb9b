//! Runs over two MPI ranks (the `mpi` feature; needs `mpirun` on the PATH): data-parallel
//! training against the single process with the same chunking, resumption of a multi-rank
//! run, replica chains against one chain, and a sweep spread over ranks.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_success, latflow, model_params, scratch, send_signal};

/// `latflow` as one process with two threads: the cores of two ranks with one thread each.
fn one_process() -> Command {
    let mut command = latflow();
    command.env("RAYON_NUM_THREADS", "2");
    command
}

/// `mpirun -np <ranks> latflow ARGS` with one thread per rank.
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["--oversubscribe", "-np", &ranks.to_string()])
        .args(["-x", "RAYON_NUM_THREADS"])
        .arg(env!("CARGO_BIN_EXE_latflow"));
    command
}

/// Runs `command` to its end and checks that it succeeded.
fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert_success(&output);
    output
}

/// A short L = 6 training run (batch 65: the ranks hold 33 and 32 rows).
const TRAIN: [&str; 12] = [
    "train",
    "--lattice",
    "6x6",
    "--beta",
    "0.537",
    "--lambda",
    "0.5",
    "--batch",
    "65",
    "--seed",
    "9",
    "--quiet",
];

#[test]
fn two_ranks_train_bit_for_bit_the_parameters_of_one_process_with_two_chunks() {
    let dir = scratch("train");
    let single = dir.join("single.json");
    let ranks = dir.join("ranks.json");
    run_ok(
        one_process()
            .args(TRAIN)
            .args(["--iterations", "40", "--chunks", "2"])
            .args(["--out", single.to_str().unwrap()]),
    );
    let output = mpirun(2)
        .args(TRAIN)
        .args(["--iterations", "40", "--chunks", "1", "--json"])
        .args(["--out", ranks.to_str().unwrap()])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&assert_success(&output).stdout).unwrap();
    assert_eq!(
        report["ranks"], 2,
        "one report, from rank 0, with the ranks"
    );
    assert_eq!(report["configs_seen"], 65 * 40);
    let (a, b) = (model_params(&single), model_params(&ranks));
    assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(differing, 0, "{differing} of {} parameters differ", a.len());
    // Training moved the parameters away from their initial values.
    let initial = dir.join("initial.json");
    run_ok(one_process().args(TRAIN).args([
        "--iterations",
        "1",
        "--out",
        initial.to_str().unwrap(),
    ]));
    assert_ne!(model_params(&initial), a);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_multi_rank_run_resumes_from_its_checkpoint_bit_for_bit() {
    let dir = scratch("resume");
    let full = dir.join("full.json");
    let checkpoint = dir.join("checkpoint.json");
    // Checkpoints every 25 steps are kept: the one after step 25 remains.
    run_ok(
        mpirun(2)
            .args(TRAIN)
            .args(["--iterations", "40", "--chunks", "1"])
            .args(["--out", full.to_str().unwrap()])
            .args(["--checkpoint", checkpoint.to_str().unwrap()])
            .args(["--checkpoint-every", "25"]),
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["iteration"], 25);
    let resumed = dir.join("resumed.json");
    run_ok(
        mpirun(2)
            .args(["train", "--quiet", "--resume", checkpoint.to_str().unwrap()])
            .args(["--out", resumed.to_str().unwrap()]),
    );
    assert_eq!(model_params(&full), model_params(&resumed));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_terminated_multi_rank_run_stops_on_every_rank_and_resumes() {
    let dir = scratch("terminate");
    let out = dir.join("model.json");
    let checkpoint = dir.join("checkpoint.json");
    let args = |c: &mut Command| {
        c.args(TRAIN)
            .args(["--iterations", "20000", "--chunks", "1"])
            .args(["--out", out.to_str().unwrap()])
            .args(["--checkpoint", checkpoint.to_str().unwrap()]);
    };
    let mut run = mpirun(2);
    args(&mut run);
    let child = run.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // mpirun passes SIGTERM on to the ranks, which agree to stop after the same step.
    send_signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "the run finished before the stop");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let stopped_at = saved["iteration"].as_u64().unwrap();
    assert!(stopped_at < 20000, "{stopped_at}");
    assert!(!out.exists(), "a stopped run writes no model");
    // Resume to 20000 steps would take long: check that both ranks continue from the
    // checkpoint to the same state as one process with two chunks resumed from it.
    let from_ranks = dir.join("ranks.json");
    let from_single = dir.join("single.json");
    let short = dir.join("short.json");
    let mut file = saved.clone();
    file["config"]["iterations"] = serde_json::json!(stopped_at + 5);
    file["metadata"]["run"]["train"]["iterations"] = serde_json::json!(stopped_at + 5);
    std::fs::write(&short, serde_json::to_vec(&file).unwrap()).unwrap();
    run_ok(
        mpirun(2)
            .args(["train", "--quiet", "--resume", short.to_str().unwrap()])
            .args(["--out", from_ranks.to_str().unwrap()]),
    );
    let mut two_chunks = file.clone();
    two_chunks["config"]["chunks"] = serde_json::json!(2);
    two_chunks["metadata"]["run"]["train"]["chunks"] = serde_json::json!(2);
    std::fs::write(&short, serde_json::to_vec(&two_chunks).unwrap()).unwrap();
    run_ok(
        one_process()
            .args(["train", "--quiet", "--resume", short.to_str().unwrap()])
            .args(["--out", from_single.to_str().unwrap()]),
    );
    assert_eq!(model_params(&from_ranks), model_params(&from_single));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Trains 10 steps of [`TRAIN`] (one chunk per process) with `command` in the new folder
/// `dir`, keeping the checkpoint after step 5, and resumes it with `resume` (as `--json`):
/// the resumed run's stderr and report.
fn resumed_elsewhere(
    dir: &Path,
    mut command: Command,
    mut resume: Command,
) -> (String, serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let checkpoint = dir.join("checkpoint.json");
    run_ok(
        command
            .args(TRAIN)
            .args([
                "--iterations",
                "10",
                "--chunks",
                "1",
                "--checkpoint-every",
                "5",
            ])
            .args(["--out", dir.join("full.json").to_str().unwrap()])
            .args(["--checkpoint", checkpoint.to_str().unwrap()]),
    );
    let output = run_ok(
        resume
            .args(["train", "--quiet", "--json", "--resume"])
            .arg(&checkpoint)
            .args(["--out", dir.join("resumed.json").to_str().unwrap()]),
    );
    let report = serde_json::from_slice(&output.stdout).unwrap();
    (String::from_utf8_lossy(&output.stderr).into_owned(), report)
}

#[test]
fn a_checkpoint_resumed_over_another_number_of_ranks_says_so_and_records_it() {
    let root = scratch("rank-change");
    // Two ranks of one chunk each, resumed by one process of one chunk.
    let dir = root.join("two-to-one");
    let (stderr, report) = resumed_elsewhere(&dir, mpirun(2), one_process());
    assert!(
        stderr.contains("note") && stderr.contains("over 2 process(es)"),
        "{stderr}"
    );
    assert!(stderr.contains("this run has 1"), "{stderr}");
    assert_eq!(report["ranks_changed_on_resume"], serde_json::json!([2, 1]));
    assert!(report.get("chunks_changed_on_resume").is_none(), "{report}");
    // The same batches, summed in another order: the parameters agree with the
    // uninterrupted run's up to rounding.
    let (full, resumed) = (
        model_params(&dir.join("full.json")),
        model_params(&dir.join("resumed.json")),
    );
    let worst = full
        .iter()
        .zip(&resumed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "parameters differ by up to {worst}");
    // One process, resumed over two ranks: noted once (by rank 0).
    let (stderr, report) = resumed_elsewhere(&root.join("one-to-two"), one_process(), mpirun(2));
    assert_eq!(stderr.matches("note").count(), 1, "{stderr}");
    assert!(stderr.contains("over 1 process(es)"), "{stderr}");
    assert_eq!(report["ranks_changed_on_resume"], serde_json::json!([1, 2]));
    // The same ranks: nothing to note.
    let (stderr, report) = resumed_elsewhere(&root.join("two-to-two"), mpirun(2), mpirun(2));
    assert!(!stderr.contains("note"), "{stderr}");
    assert!(report.get("ranks_changed_on_resume").is_none(), "{report}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `latflow sample` of HMC at L = 6, β = 0.537, λ = 0.5 with `n` trajectories.
fn hmc_args(seed: u64, n: usize) -> Vec<String> {
    [
        "sample",
        "--lattice",
        "6x6",
        "--beta",
        "0.537",
        "--lambda",
        "0.5",
        "--kernel",
        "hmc",
        "--quiet",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--n".to_string(),
        n.to_string(),
        "--seed".to_string(),
        seed.to_string(),
    ])
    .collect()
}

#[test]
fn two_replica_chains_agree_with_one_chain_and_shrink_its_error_by_root_two() {
    let n = 60_000;
    let single = one_process().args(hmc_args(11, n)).output().unwrap();
    let one: serde_json::Value = serde_json::from_slice(&assert_success(&single).stdout).unwrap();
    let output = mpirun(2).args(hmc_args(12, n)).output().unwrap();
    let stdout = &assert_success(&output).stdout;
    // One report, printed by rank 0 alone.
    assert_eq!(String::from_utf8_lossy(stdout).lines().count(), 1);
    let two: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    assert_eq!(two["replicas"], 2);
    assert_eq!(two["ranks"], 2);
    assert_eq!(one["ranks"], 1);
    assert_eq!(two["n"], n);
    assert_eq!(two["verdict"], "reliable", "{}", two["diagnostics"]);
    for name in ["phi2", "abs_m", "m2", "chi", "energy", "binder"] {
        let (a, b) = (&one["observables"][name], &two["observables"][name]);
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        let sigma = (f(a, "err").powi(2) + f(b, "err").powi(2)).sqrt();
        let delta = (f(a, "mean") - f(b, "mean")).abs();
        assert!(delta < 4.0 * sigma, "{name}: |Δ| = {delta}, σ = {sigma}");
        // err² = 2τσ²/N: twice the measurements halve it. The error of an error estimate is
        // dominated by τ_int's: δerr/err ≈ δτ/(2τ).
        let ratio = f(b, "err") / f(a, "err");
        let relative = |v: &serde_json::Value| f(v, "tau_int_err") / (2.0 * f(v, "tau_int"));
        let ratio_err = ratio * (relative(a).powi(2) + relative(b).powi(2)).sqrt();
        let expected = std::f64::consts::FRAC_1_SQRT_2;
        assert!(
            (ratio - expected).abs() < 4.0 * ratio_err,
            "{name}: error ratio {ratio} ± {ratio_err}, expected 1/√2"
        );
    }
}

#[test]
fn a_sweep_spread_over_ranks_gives_the_table_of_one_process() {
    let dir = scratch("sweep");
    let runcard = dir.join("sweep.toml");
    std::fs::write(
        &runcard,
        r#"
name = "spread"
lattices = [4, 6]
beta = [[4, 0.5]]
seeds = [1, 2]
batch = [32]
iterations = [20]
lr = [0.01]
[recipe]
hidden = 8
affine_blocks = 1
segments = 4
[train]
eval_samples = 300
[sample]
n = 500
therm = 50
[hmc]
n = 1500
therm = 100
"#,
    )
    .unwrap();
    let run = |command: &mut Command, out: &Path| {
        let output = command
            .arg("sweep")
            .arg(&runcard)
            .args(["--out", out.to_str().unwrap(), "--quiet", "--json"])
            .env("RAYON_NUM_THREADS", "1")
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&assert_success(&output).stdout).unwrap()
    };
    let one = run(&mut one_process(), &dir.join("one"));
    let two = run(&mut mpirun(2), &dir.join("two"));
    // Everything but the timings is the same, row by row (and chain by chain).
    let chain_timings = [
        "seconds_per_step",
        "cost_per_independent",
        "cost_per_independent_err",
    ];
    let strip = |rows: &serde_json::Value, timings: &[&str]| {
        let mut rows = rows.as_array().unwrap().clone();
        for row in &mut rows {
            let row = row.as_object_mut().unwrap();
            for key in timings {
                row.remove(*key);
            }
            if let Some(chains) = row.get_mut("samplers").and_then(|c| c.as_array_mut()) {
                for chain in chains {
                    for key in chain_timings {
                        chain.as_object_mut().unwrap().remove(key);
                    }
                }
            }
        }
        rows
    };
    assert_eq!(one["rows"].as_array().unwrap().len(), 4);
    assert_eq!(
        strip(&one["rows"], &["train_seconds"]),
        strip(&two["rows"], &["train_seconds"])
    );
    let hmc_timings = chain_timings;
    assert_eq!(one["hmc"]["rows"].as_array().unwrap().len(), 4);
    assert_eq!(
        strip(&one["hmc"]["rows"], &hmc_timings),
        strip(&two["hmc"]["rows"], &hmc_timings)
    );
    assert!(dir.join("two/spread/sweep.csv").is_file());
    assert!(dir.join("two/spread/hmc.csv").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_study_refuses_to_run_over_ranks() {
    let output = mpirun(2).args(["run", "--quiet"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("runs as one process"), "{stderr}");
}
