//! Interrupted runs lose nothing: `latflow train` stopped by SIGTERM writes a checkpoint
//! from which `--resume` finishes with the model of an uninterrupted run, bit for bit;
//! `latflow sample` stopped by a signal writes a partial report; output paths are checked
//! before a run starts; progress goes to a log as plain lines; a study stopped by SIGINT keeps
//! its finished stages and a rerun reuses them.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    assert_success, latflow, model_params, run_latflow, scratch, send_signal, spawn_long_sample,
};

/// Waits (at most 60 s) until `path` exists.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

const TRAIN: [&str; 14] = [
    "train",
    "--lattice",
    "6x6",
    "--beta",
    "0.537",
    "--lambda",
    "0.5",
    "--iterations",
    "1000",
    "--batch",
    "128",
    "--seed",
    "5",
    "--quiet",
];

#[test]
fn sigterm_during_train_then_resume_gives_the_uninterrupted_model() {
    let dir = scratch("train");
    let full = dir.join("full.json");
    let out = latflow()
        .args(TRAIN)
        .args(["--out", full.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out);

    let part = dir.join("part.json");
    let checkpoint = dir.join("part.ckpt");
    let child = latflow()
        .args(TRAIN)
        .args(["--out", part.to_str().unwrap()])
        .args(["--checkpoint", checkpoint.to_str().unwrap()])
        .args(["--checkpoint-every", "50"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first checkpoint is written at step 50 of 1000: the run is then under way.
    wait_for(&checkpoint);
    send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("SIGTERM") && err.contains("--resume"), "{err}");
    assert!(!part.exists(), "no model is written by a stopped run");
    let stopped_at: usize = err
        .split("stopped after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the message says where the run stopped");
    assert!((50..1000).contains(&stopped_at), "{err}");

    let out = run_latflow(&["train", "--resume", checkpoint.to_str().unwrap(), "--quiet"]);
    assert_success(&out);
    assert_eq!(
        model_params(&part),
        model_params(&full),
        "resumed model differs"
    );

    // The training log continues across the interruption: every step once, same losses.
    let rows = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    let (a, b) = (
        rows(&dir.join("part.train.csv")),
        rows(&dir.join("full.train.csv")),
    );
    // Header, 1000 steps, and the final evaluation.
    assert_eq!(a.len(), 1002);
    assert_eq!(a, b);
    let last = std::fs::read_to_string(dir.join("part.train.csv")).unwrap();
    let last: Vec<&str> = last.lines().last().unwrap().split(',').collect();
    assert_eq!(last[0], "1000");
    let acceptance: f64 = last[6].parse().expect("the final acceptance");
    assert!(acceptance > 0.0 && acceptance <= 1.0);

    // A resumed run takes its settings from the checkpoint: run flags are refused.
    let out = run_latflow(&[
        "train",
        "--resume",
        checkpoint.to_str().unwrap(),
        "--lr",
        "0.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lr cannot be combined with --resume"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stopped_sample_run_leaves_a_partial_report() {
    let dir = scratch("sample");
    let report = dir.join("report.json");
    let child = spawn_long_sample(&report);
    std::thread::sleep(Duration::from_millis(1500));
    send_signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("SIGINT") && err.contains("partial report"),
        "{err}"
    );
    // Progress lines (stderr is a pipe): steps, rate and ETA.
    assert!(err.contains("sample: measure: ") && err.contains("steps/s") && err.contains("eta"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    let n = v["n"].as_u64().unwrap();
    assert!(n > 0 && n < 10_000_000, "{v}");
    assert!(
        v["observables"]["phi2"]["err"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // The table is printed too.
    assert!(String::from_utf8_lossy(&out.stdout).contains("phi2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stop during thermalisation ends the run like any other stop: the documented exit
/// status, a report that says how far thermalisation got and that nothing was measured.
#[test]
fn a_sample_run_stopped_during_thermalisation_says_so() {
    let dir = scratch("sample-therm");
    let report = dir.join("report.json");
    let child = latflow()
        .args([
            "sample",
            "--lattice",
            "8x8",
            "--beta",
            "0.5",
            "--lambda",
            "0.5",
            "--n",
            "1000",
            "--therm",
            "1000000000",
            "--quiet",
        ])
        .args(["--out", report.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    send_signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains("SIGTERM") && err.contains("stopped during thermalisation"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["n"], 0);
    assert_eq!(v["verdict"], "unreliable");
    let codes: Vec<&str> = v["diagnostics"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"stopped_before_measuring"), "{codes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_outputs_are_refused_before_the_run() {
    let dir = scratch("paths");
    let missing = dir.join("no-such-dir").join("m.json");
    let long_sample = |out: &'static str| -> Vec<String> {
        "sample --beta 0.5 --lambda 0.5 --n 10000000 --out"
            .split(' ')
            .chain([out])
            .map(String::from)
            .collect()
    };
    let long_train = |out: &Path| -> Vec<String> {
        let head = "train --beta 0.5 --lambda 0.5 --iterations 100000 --out".split(' ');
        head.map(String::from)
            .chain([out.display().to_string()])
            .collect()
    };
    let cases = [
        (
            long_sample("/proc/x/y"),
            "--out: the directory /proc/x does not exist",
        ),
        (long_sample("-"), "standard output"),
        (long_train(&missing), "does not exist"),
        (long_train(&dir), "is a directory"),
    ];
    for (args, needle) in cases {
        let start = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_latflow(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        // Refused at once, not after a run of 10⁷ steps or 10⁵ training iterations.
        assert!(start.elapsed() < Duration::from_secs(20), "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn progress_is_plain_lines_on_a_pipe_and_silent_with_quiet() {
    let dir = scratch("progress");
    let model = dir.join("m.json");
    let args = [
        "train",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--iterations",
        "30",
        "--batch",
        "32",
        "--eval-samples",
        "200",
        "--progress-interval",
        "0",
        "--out",
        model.to_str().unwrap(),
    ];
    let out = run_latflow(&args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("train: ") && l.contains(" iterations ("))
        .collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines.last().unwrap().contains("30/30 iterations (100 %)"),
        "{err}"
    );
    // The stage ends with a line of its own.
    assert!(err.contains("train: done"), "{err}");
    let out = run_latflow(&[&args[..], &["--quiet"]].concat());
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_training_run_that_diverges_points_to_its_last_checkpoint() {
    let dir = scratch("nan");
    let model = dir.join("m.json");
    // A learning rate of 1000 sends the loss to NaN within ten steps (at every seed tried).
    let out = run_latflow(&[
        "train",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--lr",
        "1000",
        "--iterations",
        "200",
        "--batch",
        "64",
        "--checkpoint-every",
        "1",
        "--quiet",
        "--out",
        model.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("non-finite") && err.contains("saved in the checkpoint"),
        "{err}"
    );
    assert!(!model.exists());
    let checkpoint = dir.join("m.checkpoint.json");
    assert!(checkpoint.exists(), "{err}");
    // The log holds every step made before the failure.
    let rows = std::fs::read_to_string(dir.join("m.train.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert!(
        err.contains(&format!("after step {rows} ")),
        "{rows} rows: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A study whose second sampler runs for minutes: stopped during it, then run again.
const LONG_STUDY: &str = r#"
name = "long"
lattice = [4, 4]
[action]
form = "phi4"
beta = 0.5
lambda = 0.5
[flow.recipe]
hidden = 8
affine_blocks = 1
segments = 4
[flow.train]
batch = 32
iterations = 20
[measure]
n = 2000
therm = 100
[[sampler]]
name = "flow"
kernel = "flow"
[[sampler]]
name = "local"
kernel = "local"
n = 10000000
"#;

#[test]
fn sigint_during_a_study_keeps_finished_stages_and_a_rerun_reuses_them() {
    let dir = scratch("study");
    let runcard = dir.join("long.toml");
    std::fs::write(&runcard, LONG_STUDY).unwrap();
    let folder = dir.join("long");
    let start = |dir: &Path| {
        latflow()
            .arg("run")
            .arg(&runcard)
            .args([
                "--out",
                dir.to_str().unwrap(),
                "--json",
                "--progress-interval",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = start(&dir);
    wait_for(&folder.join("data/flow/run.json"));
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["outcome"], "stopped");
    assert_eq!(printed["stage"], "sample local");
    assert!(folder.join("model.json").is_file() && folder.join("training.json").is_file());
    let flow_run = std::fs::read(folder.join("data/flow/run.json")).unwrap();
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("data/local/run.json")).unwrap())
            .unwrap();
    assert_eq!(local["interrupted"], true);

    // Run again: training and the finished sampler are reused, the interrupted one reruns.
    let child = start(&dir);
    let log = folder.join("data/local/run.json");
    let before = std::fs::metadata(&log).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    send_signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("train:") && !stderr.contains("sample flow"),
        "{stderr}"
    );
    assert!(stderr.contains("sample local"), "{stderr}");
    assert_eq!(
        std::fs::read(folder.join("data/flow/run.json")).unwrap(),
        flow_run
    );
    assert!(std::fs::metadata(&log).unwrap().modified().unwrap() > before);
    let _ = std::fs::remove_dir_all(&dir);
}
