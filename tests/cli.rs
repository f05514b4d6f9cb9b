//! End-to-end checks of the `latflow` binary: the JSON report's stable keys, runcards, and
//! clear errors with a non-zero exit code on bad input.

mod common;

use common::{assert_success, run_latflow, scratch};

#[test]
fn sample_json_has_the_stable_keys() {
    let out = run_latflow(&[
        "sample",
        "--lattice",
        "6x6",
        "--beta",
        "0.537",
        "--lambda",
        "0.5",
        "--kernel",
        "hmc",
        "--n",
        "400",
        "--therm",
        "100",
        "--seed",
        "3",
        "--json",
    ]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["lattice"], serde_json::json!([6, 6]));
    assert_eq!(v["kernel"], "hmc");
    assert_eq!(v["n"], 400);
    let acc = v["acceptance"].as_f64().unwrap();
    assert!(acc > 0.0 && acc <= 1.0);
    assert!(v["seconds"].as_f64().unwrap() >= 0.0);
    for key in ["phi2", "abs_m", "m2", "chi", "xi_2nd", "xi_eff", "energy"] {
        let o = &v["observables"][key];
        for field in ["mean", "err", "tau_int", "tau_int_err"] {
            assert!(
                o[field].as_f64().is_some(),
                "observables.{key}.{field} missing: {o}"
            );
        }
    }
}

#[test]
fn same_seed_same_report_numbers() {
    let args = [
        "sample",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--kernel",
        "local+hmc",
        "--n",
        "200",
        "--therm",
        "50",
        "--seed",
        "9",
        "--json",
    ];
    let a: serde_json::Value = serde_json::from_slice(&run_latflow(&args).stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&run_latflow(&args).stdout).unwrap();
    assert_eq!(a["observables"], b["observables"]);
    assert_eq!(a["acceptance"], b["acceptance"]);
}

#[test]
fn runcard_runs_and_malformed_runcard_is_refused() {
    let dir = scratch("runcard");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "lattice = [4, 4]\nn = 100\n[action]\nform = \"phi4-quartic\"\nm2 = -4.0\nlambda = 6.975\n\
         [kernel]\nkind = \"local\"\n",
    )
    .unwrap();
    let out = run_latflow(&["sample", "--config", good.to_str().unwrap(), "--json"]);
    assert_success(&out);
    // The kernel as an expression: in the table with its settings, or as a shorthand.
    for kernel in [
        "[kernel]\nkind = \"local*2 + hmc\"\nmd_steps = 4\n",
        "kernel = \"local*2 + hmc\"\n",
    ] {
        let card = dir.join("expression.toml");
        let head = if kernel.starts_with('[') { "" } else { kernel };
        let tail = if kernel.starts_with('[') { kernel } else { "" };
        std::fs::write(
            &card,
            format!(
                "lattice = [4, 4]\nn = 100\n{head}[action]\nform = \"phi4\"\nbeta = 0.5\n\
                 lambda = 0.5\n{tail}"
            ),
        )
        .unwrap();
        let out = run_latflow(&["sample", "--config", card.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{kernel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["kernel"], "local*2+hmc");
        for label in ["local", "hmc"] {
            assert!(v["acceptance_by_move"][label].as_f64().is_some(), "{v}");
        }
        assert!(v["local_step_size"].as_f64().is_some(), "{v}");
        assert!(v["exp_minus_delta_h"]["mean"].as_f64().is_some(), "{v}");
        assert!(v["tau_rej"].is_null(), "{v}");
    }
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "lattice = [4, 4]\nn = 100\n[action]\nform = \"phi5\"\n",
    )
    .unwrap();
    let out = run_latflow(&["sample", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runcard"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The checkerboard order from the command line and from a runcard: the same chain, and
/// another one than the sequential order's.
#[test]
fn the_sweep_order_is_a_flag_and_a_runcard_key() {
    let dir = scratch("sweep_order");
    let card = dir.join("checkerboard.toml");
    std::fs::write(
        &card,
        "lattice = [8, 8]\nn = 300\ntherm = 50\nseed = 4\n[action]\nform = \"phi4\"\n\
         beta = 0.576\nlambda = 0.5\n[kernel]\nkind = \"local\"\nsweep_order = \"checkerboard\"\n",
    )
    .unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run_latflow(args);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let from_card = json(&["sample", "--config", card.to_str().unwrap(), "--json"]);
    let flags = [
        "sample",
        "--lattice",
        "8x8",
        "--beta",
        "0.576",
        "--lambda",
        "0.5",
        "--kernel",
        "local",
        "--n",
        "300",
        "--therm",
        "50",
        "--seed",
        "4",
        "--json",
    ];
    let from_flags = json(&[&flags[..], &["--sweep-order", "checkerboard"]].concat());
    let sequential = json(&flags);
    assert_eq!(from_card["observables"], from_flags["observables"]);
    assert_ne!(from_flags["observables"], sequential["observables"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gives_clear_errors_and_nonzero_exit() {
    let cases: [(&[&str], &str); 9] = [
        (
            &[
                "sample",
                "--lattice",
                "1x8",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
            ],
            "at least 2",
        ),
        (&["sample", "--beta", "nan", "--lambda", "0.5"], "beta"),
        (&["sample", "--beta", "0.5", "--lambda", "inf"], "lambda"),
        (
            &["sample", "--beta", "0.5", "--lambda", "0.5", "--n", "0"],
            "--n",
        ),
        (
            &[
                "sample", "--beta", "0.5", "--lambda", "0.5", "--kernel", "gibbs",
            ],
            "gibbs",
        ),
        (
            &[
                "sample", "--beta", "0.5", "--lambda", "0.5", "--kernel", "local+*2",
            ],
            "column 7: expected a kernel name",
        ),
        (
            &[
                "sample", "--beta", "0.5", "--lambda", "0.5", "--kernel", "local*0",
            ],
            "repeat count must be at least 1",
        ),
        (
            &[
                "sample",
                "--beta",
                "0.5",
                "--lambda",
                "0.5",
                "--kernel",
                "mix(0.5: local, 0.5 hmc)",
            ],
            "expected `:` after the weight",
        ),
        (&["sample", "--action", "free", "--mass", "-1"], "mass"),
    ];
    for (args, needle) in cases {
        let out = run_latflow(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn train_then_sample_with_the_model() {
    let dir = scratch("train");
    let model = dir.join("model.json");
    let out = run_latflow(&[
        "train",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--recipe",
        "seed",
        "--hidden",
        "16",
        "--affine-blocks",
        "1",
        "--batch",
        "64",
        "--iterations",
        "20",
        "--lr",
        "0.01",
        "--seed",
        "2",
        "--eval-samples",
        "500",
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["seconds", "acceptance", "ess", "configs_seen", "n_params"] {
        assert!(v[key].as_f64().is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["configs_seen"], 64 * 20);

    for kernel in ["flow", "flow+local", "flow+hmc", "flow+local*2+hmc"] {
        let out = run_latflow(&[
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--kernel",
            kernel,
            "--n",
            "300",
            "--therm",
            "20",
            "--json",
            // A flow trained for 20 steps may leave a pure flow chain stuck: the keys are
            // what this test checks.
            "--allow-unreliable",
        ]);
        assert!(
            out.status.success(),
            "{kernel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["lattice"], serde_json::json!([4, 4]));
        assert!(v["tau_rej"].as_f64().is_some(), "{kernel}: {v}");
        assert!(
            v["longest_rejection_run"].as_u64().is_some(),
            "{kernel}: {v}"
        );
        assert!(v["observables"]["chi"]["mean"].as_f64().is_some());
        assert_eq!(v["kernel"], kernel);
        for label in kernel.split('+').map(|part| part.trim_end_matches("*2")) {
            let acceptance = v["acceptance_by_move"][label].as_f64();
            assert!(acceptance.is_some(), "{kernel}: {label} missing in {v}");
        }
    }

    // Couplings or a lattice that differ from the model's are refused.
    for extra in [["--beta", "0.6"], ["--lattice", "6x6"]] {
        let mut args = vec![
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--kernel",
            "flow",
        ];
        args.extend(extra);
        if extra[0] == "--beta" {
            args.extend(["--lambda", "0.5"]);
        }
        let out = run_latflow(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("model"));
    }
    // A flow kernel without a model, and a corrupt model file, give clear errors.
    let out = run_latflow(&[
        "sample", "--beta", "0.5", "--lambda", "0.5", "--kernel", "flow",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model"));
    std::fs::write(&model, b"{ not a model").unwrap();
    let out = run_latflow(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--kernel",
        "flow",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model") && !err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_flag_takes_effect_or_is_refused() {
    let dir = scratch("flags");
    let card = dir.join("card.toml");
    std::fs::write(
        &card,
        "lattice = [4, 4]\nn = 100\nkernel = \"hmc\"\n[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n",
    )
    .unwrap();
    let card = card.to_str().unwrap();
    let phi4 = ["--beta", "0.5", "--lambda", "0.5"];
    let with = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        [head, tail].concat()
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["sample", "--config", card, "--n", "5"],
            "--n cannot be combined with --config",
        ),
        (
            vec!["sample", "--config", card, "--lambda", "0.3"],
            "--lambda cannot be combined with --config",
        ),
        (
            vec!["sample", "--config", card, "--kernel", "local"],
            "--kernel cannot be combined with --config",
        ),
        (
            vec!["sample", "--action", "free", "--mass", "1", "--beta", "0.5"],
            "--beta does not apply to --action free, which takes --mass",
        ),
        (
            vec![
                "train",
                "--action",
                "phi4-quartic",
                "--m2",
                "-4",
                "--lambda",
                "7",
                "--g0",
                "1",
                "--out",
                "x.json",
            ],
            "--g0 does not apply to --action phi4-quartic",
        ),
        (
            with(&["sample", "--kernel", "local", "--md-steps", "5"], &phi4),
            "--md-steps has no effect",
        ),
        (
            with(&["sample", "--kernel", "hmc", "--step-size", "0.5"], &phi4),
            "--step-size has no effect",
        ),
        (
            with(&["sample", "--kernel", "hmc", "--flow-batch", "10"], &phi4),
            "--flow-batch has no effect",
        ),
        (
            with(&["sample", "--kernel", "hmc", "--recycle"], &phi4),
            "recycling averages the proposals of the kernel `flow` alone",
        ),
        (
            vec!["sample", "--config", card, "--recycle"],
            "--recycle cannot be combined with --config",
        ),
        (
            with(
                &["sample", "--kernel", "hmc", "--sweep-order", "checkerboard"],
                &phi4,
            ),
            "--sweep-order has no effect",
        ),
        (
            with(
                &[
                    "sample",
                    "--kernel",
                    "local",
                    "--sweep-order",
                    "checkerboard",
                    "--lattice",
                    "7x8",
                ],
                &phi4,
            ),
            "7x8",
        ),
        (
            with(&["train", "--weight-decay", "-1", "--out", "x.json"], &phi4),
            "--weight-decay",
        ),
        (
            with(
                &[
                    "train",
                    "--recipe",
                    "real-nvp",
                    "--segments",
                    "4",
                    "--out",
                    "x.json",
                ],
                &phi4,
            ),
            "--segments has no effect with --recipe real-nvp",
        ),
        (
            with(&["train", "--channels", "4", "--out", "x.json"], &phi4),
            "--channels has no effect",
        ),
        (
            with(
                &["train", "--restart-period", "5", "--out", "x.json"],
                &phi4,
            ),
            "--restart-period has no effect",
        ),
        (
            with(
                &["train", "--restart-growth", "2", "--out", "x.json"],
                &phi4,
            ),
            "--restart-growth has no effect",
        ),
        (
            with(
                &[
                    "train",
                    "--schedule",
                    "warm-restarts",
                    "--restart-growth",
                    "0.5",
                    "--out",
                    "x.json",
                ],
                &phi4,
            ),
            "growth",
        ),
        (
            with(&["train", "--anneal-over", "0.3", "--out", "x.json"], &phi4),
            "--anneal-over has no effect",
        ),
        (
            vec![
                "train",
                "--action",
                "free",
                "--mass",
                "1",
                "--anneal-start",
                "0.5",
                "--out",
                "x.json",
            ],
            "--anneal-start anneals the hopping coupling",
        ),
        (with(&["train"], &phi4), "--out is required"),
        (
            with(&["sample", "--n", "0"], &phi4),
            "invalid value for --n",
        ),
    ];
    for (args, needle) in cases {
        let out = run_latflow(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn operating_system_errors_are_printed_once() {
    let out = run_latflow(&["sample", "--config", "/no/such/runcard.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("/no/such/runcard.toml"), "{err}");
}

#[test]
fn train_runcard_runs_and_refuses_flags_alongside() {
    let dir = scratch("traincard");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/train.toml"))
        .unwrap()
        .replace("[8, 8]", "[4, 4]")
        .replace("iterations = 750", "iterations = 5")
        .replace("batch = 500", "batch = 32")
        .replace("hidden = 64", "hidden = 8")
        .replace("eval_samples = 10000", "eval_samples = 100")
        .replace("\"model.json\"", &format!("{:?}", dir.join("model.json")));
    let card = dir.join("train.toml");
    std::fs::write(&card, text).unwrap();
    let card = card.to_str().unwrap();
    let out = run_latflow(&["train", "--config", card, "--json", "--quiet"]);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["configs_seen"], 32 * 5);
    assert!(dir.join("model.json").exists());
    let out = run_latflow(&["train", "--config", card, "--lr", "0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lr cannot be combined with --config"));
    std::fs::write(dir.join("bad.toml"), "lattice = [4, 4]\nout = \"m.json\"\n[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n[train]\nbatchsize = 10\n").unwrap();
    let out = run_latflow(&["train", "--config", dir.join("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batchsize"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_until_acceptance_reports_the_target_and_the_checks_cost() {
    let dir = scratch("until");
    let model = dir.join("m.json");
    let model = model.to_str().unwrap();
    let run = |target: &str, iterations: &str| {
        run_latflow(&[
            "train",
            "--lattice",
            "4x4",
            "--beta",
            "0.5",
            "--lambda",
            "0.5",
            "--hidden",
            "16",
            "--affine-blocks",
            "1",
            "--batch",
            "64",
            "--iterations",
            iterations,
            "--eval-every",
            "10",
            "--eval-samples",
            "1000",
            "--until-acceptance",
            target,
            "--out",
            model,
            "--json",
            "--quiet",
        ])
    };
    // Reached after about 50 of the 300 iterations.
    let out = run("0.4", "300");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("not reached"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reached_target"], true);
    let iterations = v["iterations"].as_u64().unwrap();
    assert!(iterations < 300 && iterations.is_multiple_of(10), "{v}");
    assert_eq!(v["eval_configs"].as_u64(), Some(iterations / 10 * 1000));
    assert!(v["eval_seconds"].as_f64().unwrap() > 0.0, "{v}");

    let out = run("0.99", "20");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("acceptance 0.99 not reached") && err.contains("after 20 iterations"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reached_target"], false);
    assert_eq!(v["iterations"], 20);

    let card = dir.join("train.toml");
    std::fs::write(
        &card,
        "lattice = [4, 4]\nout = \"m.json\"\n[action]\nform = \"phi4\"\nbeta = 0.5\n\
         lambda = 0.5\n[train]\nbatch = 16\n",
    )
    .unwrap();
    let card = card.to_str().unwrap();
    let out = run_latflow(&["train", "--config", card, "--until-acceptance", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--until-acceptance cannot be combined with --config"),
        "{err}"
    );
    let out = run_latflow(&["train", "--resume", card, "--until-acceptance", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--until-acceptance cannot be combined with --resume"),
        "{err}"
    );
    let out = run_latflow(&[
        "train",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--until-acceptance",
        "1",
        "--out",
        model,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value for --until-acceptance: must be strictly between 0 and 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreliable_run_says_so_in_its_exit_status() {
    let frozen = [
        "sample",
        "--lattice",
        "6x6",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--tau",
        "100",
        "--md-steps",
        "1",
        "--n",
        "2000",
        "--therm",
        "100",
        "--json",
    ];
    let out = run_latflow(&frozen);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("unreliable") && err.contains("--allow-unreliable"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "unreliable");
    for (name, o) in v["observables"].as_object().unwrap() {
        assert!(o["err"].is_null(), "{name}: {o}");
        assert!(o["caveat"].as_str().is_some(), "{name}: {o}");
    }
    let out = run_latflow(&[&frozen[..], &["--allow-unreliable"]].concat());
    assert_eq!(out.status.code(), Some(0));
    // A healthy chain exits 0 with a reliable verdict.
    let healthy = [
        "sample",
        "--lattice",
        "6x6",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--n",
        "5000",
        "--therm",
        "200",
        "--json",
    ];
    let out = run_latflow(&healthy);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "reliable", "{}", v["diagnostics"]);
}

#[test]
fn until_acceptance_alone_trains_with_the_default_method() {
    let dir = scratch("default");
    let model = dir.join("m.json");
    let model = model.to_str().unwrap();
    let base = [
        "train",
        "--lattice",
        "4x4",
        "--beta",
        "0.5",
        "--lambda",
        "0.5",
        "--until-acceptance",
        "0.4",
        "--eval-samples",
        "1000",
        "--out",
        model,
        "--quiet",
    ];
    // |Λ| = 16: the spline block alone at width 16, the L = 6 reference budget (batch 300,
    // 350 iterations, η = 0.02), path gradients, checks every 25 iterations.
    let out = run_latflow(&base);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    assert!(
        stdout.contains(
            "default method for this lattice: seed recipe with hidden width 16, no affine \
             block, 8 spline segments; path gradient, batch 300, budget 350 iterations, lr 0.02"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("target acceptance 0.4 reached"), "{stdout}");
    let flow = latflow::flow::FlowModel::load(model).unwrap();
    let expected = latflow::flow::FlowConfig::seed(16, 0, 8).unwrap();
    assert_eq!(flow.config(), &expected);
    // Any flag that sets the method turns the default off.
    let out = run_latflow(&[&base[..], &["--gradient", "total"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_success(&out);
    assert!(!stdout.contains("default method"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_curriculum_example_runs_reports_and_resumes() {
    let dir = scratch("curriculum");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/curriculum.toml"
    ))
    .unwrap()
    .replace("channels = 16", "channels = 4")
    .replace("affine_blocks = 4", "affine_blocks = 2")
    .replace("depth = 2", "depth = 1")
    .replace("[6, 6]", "[4, 4]")
    .replace("[10, 10]", "[6, 6]")
    .replace("batch = 256", "batch = 32")
    .replace("iterations = 400", "iterations = 6")
    .replace("eval_samples = 10000", "eval_samples = 200");
    let card = dir.join("curriculum.toml");
    std::fs::write(&card, text).unwrap();
    let out_dir = dir.join("out");
    let args = [
        "curriculum",
        card.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
    ];
    let out = run_latflow(&args);
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("total: 384 configurations"), "{text}");
    assert!(text.contains("stage-2.json"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("curriculum.json")).unwrap()).unwrap();
    assert_eq!(
        report["report"]["stages"][1]["lattice"],
        serde_json::json!([6, 6])
    );
    // Run again: both stages are kept, the same report comes out as JSON.
    let mut again = args.to_vec();
    again.push("--json");
    let out = run_latflow(&again);
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, report["report"]);
    // A dense recipe cannot grow the lattice: refused naming the stages, exit code 1.
    let dense = std::fs::read_to_string(&card)
        .unwrap()
        .replace("kind = \"conv\"", "kind = \"seed\"\nhidden = 8")
        .replace("channels = 4\n", "")
        .replace("depth = 1\n", "")
        .replace("kernel = 3\n", "");
    std::fs::write(dir.join("dense.toml"), dense).unwrap();
    let out = run_latflow(&[
        "curriculum",
        dir.join("dense.toml").to_str().unwrap(),
        "--out",
        dir.join("dense").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stage 2") && err.contains("convolutional"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
