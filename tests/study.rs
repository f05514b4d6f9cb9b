//! Studies end to end: a tiny runcard through `latflow run` leaves every promised file, each
//! parsing as what it claims to be (JSON, CSV, npy, PNG, SVG) and every link and image of
//! `index.html` resolving; `latflow analyse` recomputes from the stored series; a study run
//! again reuses its finished stages and a changed runcard is refused; runcard errors name the
//! key and the line; stored runs replay to the same report; and the study's correlated fit
//! recovers the free field's exact correlation length. Sweeps are in `tests/sweep.rs`.

mod common;

use std::path::Path;

use common::{
    TINY_STUDY as TINY, assert_success, attribute_values, check_csv, check_npy, latflow, scratch,
};
use latflow::run::{ActionSpec, KernelSpec, SampleSpec, combine_replicas, sample_data};
use latflow::study::{Override, StudySpec, load_run, run_study, save_run};
use latflow::{Lattice, kernel::KernelExpr};

/// payback.csv holds one row per flow sampler against the cheaper of the samplers without a
/// flow, and each row follows from the costs in samplers.csv and the training report.
fn check_payback(folder: &Path) {
    let (header, samplers) = check_csv(&folder.join("samplers.csv"));
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let cost_of = |name: &str| -> f64 {
        let row = samplers.iter().find(|r| r[0] == name).unwrap();
        row[column("cost_per_independent")].parse().unwrap()
    };
    let baseline = if cost_of("hmc") <= cost_of("local") {
        "hmc"
    } else {
        "local"
    };
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("training.json")).unwrap()).unwrap();
    let training = report["seconds"].as_f64().unwrap() + report["eval_seconds"].as_f64().unwrap();
    let (header, rows) = check_csv(&folder.join("payback.csv"));
    let field =
        |row: &[String], name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    let names: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, ["flow", "flow+local"]);
    for row in &rows {
        assert_eq!(field(row, "baseline"), baseline);
        let cost: f64 = field(row, "cost").parse().unwrap();
        assert_eq!(cost, cost_of(&row[0]));
        let base = cost_of(baseline);
        let seconds: f64 = field(row, "training_seconds").parse().unwrap();
        assert!((seconds - training).abs() < 1e-9 * training);
        if cost < base {
            let n: f64 = field(row, "break_even").parse().unwrap();
            let expected = training / (base - cost);
            assert!((n - expected).abs() < 1e-9 * expected, "{n} vs {expected}");
            assert!(field(row, "break_even_err").parse::<f64>().unwrap() > 0.0);
        } else {
            assert_eq!(field(row, "break_even"), "");
            assert!(field(row, "reason").starts_with("never"), "{row:?}");
        }
    }
}

fn run_tiny(dir: &Path, extra: &[&str]) -> std::process::Output {
    let runcard = dir.join("tiny.toml");
    std::fs::write(&runcard, TINY).unwrap();
    let out = dir.join("out");
    let mut cmd = latflow();
    cmd.arg("run")
        .arg(&runcard)
        .arg("--out")
        .arg(&out)
        .args(["--quiet"])
        .args(extra);
    cmd.output().unwrap()
}

#[test]
fn a_tiny_study_leaves_every_promised_file_and_analyse_recomputes_it() {
    let dir = scratch("e2e");
    let output = run_tiny(&dir, &["--set", "measure.thin=2", "--json"]);
    assert_success(&output);
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let folder = dir.join("out").join("tiny");
    assert_eq!(
        printed["folder"].as_str().unwrap(),
        folder.to_str().unwrap()
    );
    assert_eq!(printed["seed"], 7);
    assert_eq!(printed["samplers"].as_array().unwrap().len(), 4);

    // The runcard as used: the override recorded, every seed written out, the version.
    let runcard = std::fs::read_to_string(folder.join("runcard.toml")).unwrap();
    assert!(runcard.contains(env!("CARGO_PKG_VERSION")), "{runcard}");
    assert!(runcard.contains("--set measure.thin=2"), "{runcard}");
    let used: toml::Table = runcard.parse().unwrap();
    assert_eq!(used["measure"]["thin"].as_integer(), Some(2));
    assert_eq!(used["flow"]["train"]["seed"].as_integer(), Some(7));
    let seeds: Vec<i64> = used["sampler"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seed"].as_integer().unwrap())
        .collect();
    assert_eq!(seeds, vec![8, 9, 10, 11]);

    // summary.json: every sampler with its observables, fit and ξ_eff at every t.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("summary.json")).unwrap()).unwrap();
    let samplers = summary["samplers"].as_array().unwrap();
    assert_eq!(samplers.len(), 4);
    for s in samplers {
        assert_eq!(s["steps"], 3000);
        assert!(s["report"]["observables"]["phi2"]["mean"].as_f64().unwrap() > 0.0);
        assert_eq!(s["correlator"].as_array().unwrap().len(), 4);
        assert_eq!(s["xi_eff"].as_array().unwrap().len(), 1);
        assert_eq!(s["fit"]["range"], serde_json::json!([1, 2]));
    }
    assert!(summary["training"]["configs_seen"].as_u64().unwrap() == 64 * 30);

    // Tables.
    let (header, rows) = check_csv(&folder.join("samplers.csv"));
    assert_eq!(header[0], "sampler");
    assert_eq!(rows.len(), 4);
    let (_, rows) = check_csv(&folder.join("observables.csv"));
    assert!(rows.len() >= 4 * 10);
    let (header, rows) = check_csv(&folder.join("histograms.csv"));
    assert_eq!(header.len(), 3 + 4);
    assert_eq!(rows.len(), 2 * 60);
    let (header, rows) = check_csv(&folder.join("training.csv"));
    assert_eq!(header[0], "iteration");
    assert_eq!(rows.len(), 31);
    for s in ["flow", "flow-local", "hmc", "local"] {
        let d = folder.join("data").join(s);
        check_csv(&d.join("correlator.csv"));
        check_csv(&d.join("xi_eff.csv"));
        check_csv(&d.join("autocorrelation.csv"));
        let series = check_npy(&d.join("series.npy"));
        let columns: Vec<String> =
            serde_json::from_slice(&std::fs::read(d.join("series_columns.json")).unwrap()).unwrap();
        assert_eq!(series, vec![1500, columns.len()]);
        assert_eq!(check_npy(&d.join("configs.npy")), vec![50, 4, 4]);
        assert_eq!(check_npy(&d.join("configs_index.npy")), vec![50]);
        assert_eq!(check_npy(&d.join("moves.npy"))[1], 5);
        assert_eq!(check_npy(&d.join("moves_per_step.npy")), vec![3000]);
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(d.join("run.json")).unwrap())
            .unwrap();
    }
    for s in ["flow", "flow-local"] {
        check_csv(&folder.join("data").join(s).join("rejection_runs.csv"));
    }
    check_npy(&folder.join("data/flow/series.npy"));
    check_payback(&folder);
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(folder.join("model.json")).unwrap())
        .unwrap();
    // The checkpoint serves an interrupted training only.
    assert!(!folder.join("checkpoint.json").exists());

    // Plots and the page.
    let html = std::fs::read_to_string(folder.join("index.html")).unwrap();
    let images = attribute_values(&html, "src");
    assert!(images.len() >= 10, "{images:?}");
    for link in attribute_values(&html, "href")
        .into_iter()
        .chain(images.iter().copied())
    {
        assert!(!link.contains("://"), "external link {link}");
        assert!(
            folder.join(link).is_file(),
            "index.html links to missing {link}"
        );
    }
    for stem in [
        "training_loss",
        "training_acceptance",
        "histogram_phi",
        "histogram_m",
        "correlator",
        "xi_eff",
        "autocorrelation",
        "tau_int",
        "rejection_runs",
        "cost",
        "payback",
    ] {
        let png = std::fs::read(folder.join(format!("plots/{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        let svg = std::fs::read_to_string(folder.join(format!("plots/{stem}.svg"))).unwrap();
        assert!(
            svg.trim_start().starts_with("<svg") || svg.starts_with("<?xml"),
            "{stem}.svg"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{stem}.svg");
        assert!(
            html.contains(&format!("plots/{stem}.png")),
            "{stem} not in index.html"
        );
    }
    assert!(html.contains("phi4") || html.contains("φ⁴"));

    // Re-analysis with a cut and another fit range, from the stored series alone.
    let output = latflow()
        .args([
            "analyse",
            "--quiet",
            "--json",
            "--therm-cut",
            "500",
            "--fit-range",
            "0:2",
        ])
        .arg(&folder)
        .output()
        .unwrap();
    assert_success(&output);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["study"]["analysis"]["therm_cut"], 500);
    for s in summary["samplers"].as_array().unwrap() {
        assert_eq!(s["steps"], 3000 - 2 * 500);
        assert_eq!(s["report"]["n"], 3000 - 2 * 500);
        assert_eq!(s["fit"]["range"], serde_json::json!([0, 2]));
    }
    let series = check_npy(&folder.join("data/hmc/series.npy"));
    assert_eq!(series[0], 1500, "analyse must not touch the stored series");

    // An analysis runcard: its [analysis] table applies; any other table is refused.
    let analysis = dir.join("analysis.toml");
    std::fs::write(
        &analysis,
        "[analysis]\nfit_range = [1, 2]\nhistogram_bins = 20\n",
    )
    .unwrap();
    let output = latflow()
        .args(["analyse", "--quiet", "--config"])
        .arg(&analysis)
        .arg(&folder)
        .output()
        .unwrap();
    assert_success(&output);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["fit_range"], serde_json::json!([1, 2]));
    assert_eq!(
        summary["histograms"]["phi_edges"].as_array().unwrap().len(),
        21
    );
    std::fs::write(&analysis, "[measure]\nn = 5\n").unwrap();
    let output = latflow()
        .args(["analyse", "--quiet", "--config"])
        .arg(&analysis)
        .arg(&folder)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("[measure]"));

    // Only analysis settings change without re-running.
    let output = latflow()
        .args(["analyse", "--quiet", "--set", "measure.n=10"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only analysis"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sampler run as an ensemble says so: samplers.csv gives its chains beside the steps
/// of one chain, the steps per second count every chain's steps, and the report's table
/// reads "steps × chains".
#[test]
fn an_ensemble_sampler_is_reported_with_its_chains() {
    let dir = scratch("ensemble");
    let output = run_tiny(
        &dir,
        &["--set", "sampler.1.chains=3", "--set", "measure.n=600"],
    );
    assert_success(&output);
    let folder = dir.join("out").join("tiny");
    let (header, rows) = check_csv(&folder.join("samplers.csv"));
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (steps, chains) = (column("steps"), column("chains"));
    let (rate, per_step) = (column("steps_per_second"), column("seconds_per_step"));
    for row in &rows {
        assert_eq!(row[steps], "600", "{row:?}");
        let expected = if row[0] == "flow+local" { "3" } else { "1" };
        assert_eq!(row[chains], expected, "{row:?}");
        let (r, t): (f64, f64) = (row[rate].parse().unwrap(), row[per_step].parse().unwrap());
        assert!((r * t - 1.0).abs() < 1e-9, "{row:?}");
    }
    let html = std::fs::read_to_string(folder.join("index.html")).unwrap();
    assert!(html.contains("<td>600 × 3 chains</td>"), "no ensemble row");
    assert_eq!(html.matches("× 3 chains").count(), 1);
}

#[test]
fn a_study_run_again_reuses_its_work_and_another_runcard_is_refused() {
    let dir = scratch("reuse");
    let first = run_tiny(&dir, &["--json"]);
    assert_success(&first);
    let folder = dir.join("out").join("tiny");
    let series = std::fs::read(folder.join("data/local/series.npy")).unwrap();
    // A sampler whose run was lost is run again; the others are kept.
    std::fs::remove_dir_all(folder.join("data/hmc")).unwrap();
    let again = run_tiny(&dir, &["--json"]);
    assert_success(&again);
    let printed: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let reused: Vec<&str> = printed["reused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        reused,
        vec![
            "training",
            "sampler flow",
            "sampler flow+local",
            "sampler local"
        ]
    );
    assert!(folder.join("data/hmc/run.json").is_file());
    assert_eq!(
        std::fs::read(folder.join("data/local/series.npy")).unwrap(),
        series
    );
    // The same folder with another runcard is refused, and nothing in it changes.
    let changed = run_tiny(&dir, &["--set", "measure.n=4000"]);
    assert!(!changed.status.success());
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(stderr.contains("another study"), "{stderr}");
    assert_eq!(
        std::fs::read(folder.join("data/local/series.npy")).unwrap(),
        series
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runcard_errors_name_the_key_and_the_line() {
    let unknown = TINY.replace("[measure]\n", "[measure]\nsweeps = 3\n");
    let e = StudySpec::parse(&unknown, "runcard t.toml", &[])
        .unwrap_err()
        .to_string();
    let line = unknown
        .lines()
        .position(|l| l.starts_with("sweeps"))
        .unwrap()
        + 1;
    assert!(
        e.contains("sweeps") && e.contains(&format!("line {line}")),
        "{e}"
    );

    let wrong = TINY.replace("n = 3000", "n = \"many\"");
    let e = StudySpec::parse(&wrong, "runcard t.toml", &[])
        .unwrap_err()
        .to_string();
    let line = wrong.lines().position(|l| l.contains("\"many\"")).unwrap() + 1;
    assert!(
        e.contains(&format!("line {line}")) && e.contains("string"),
        "{e}"
    );

    // Overrides: a wrong type, an index past the end, a sampler without a flow section.
    let set = |text: &str| Override::parse(text).unwrap();
    let e = StudySpec::parse(TINY, "runcard", &[set("measure.n=-3")]).unwrap_err();
    assert!(e.to_string().contains("--set"), "{e}");
    let e = StudySpec::parse(TINY, "runcard", &[set("sampler.9.n=10")]).unwrap_err();
    assert!(e.to_string().contains("4 entries"), "{e}");
    let no_flow = TINY.split("[flow]").next().unwrap().to_string()
        + "[[sampler]]\nname = \"f\"\nkernel = \"flow\"\n";
    let e = StudySpec::parse(&no_flow, "runcard", &[]).unwrap_err();
    assert!(e.to_string().contains("[flow]"), "{e}");
    let e = StudySpec::parse(TINY, "runcard", &[set("sampler.1.tune=true")]).unwrap_err();
    assert!(e.to_string().contains("tune"), "{e}");
    let e = StudySpec::parse(TINY, "runcard", &[set("name=\"a/b\"")]).unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");

    // The built-in study parses and its seeds derive from `seed`.
    let default = StudySpec::default_study(&[set("seed=5")]).unwrap();
    assert_eq!(default.spec.flow.as_ref().unwrap().train.seed, 5);
    assert_eq!(default.spec.samplers[3].seed, Some(9));
    assert_eq!(default.spec.lattice, Lattice::new(&[8, 8]).unwrap());
}

#[test]
fn a_stored_run_replays_to_the_same_report() {
    for chains in [1, 3] {
        let dir = scratch(&format!("replay-{chains}"));
        let spec = SampleSpec {
            lattice: Lattice::new(&[6, 6]).unwrap(),
            action: ActionSpec::Phi4 {
                beta: 0.537,
                lambda: 0.5,
            },
            kernel: KernelSpec {
                kind: KernelExpr::parse("hmc+local").unwrap(),
                ..KernelSpec::default()
            },
            n: 4000,
            therm: 200,
            thin: 2,
            seed: 3,
            model: None,
            chains,
        };
        let data = sample_data(
            &spec,
            latflow::run::Registry::builtin(),
            &mut (),
            &latflow::StopToken::never(),
            10,
        )
        .unwrap();
        assert_eq!(data.chains.len(), chains);
        assert_eq!(data.configs.len(), 10);
        assert_eq!(data.config_indices[1], 200);
        save_run(&dir, &spec, &data, None).unwrap();
        let stored = load_run(&dir).unwrap();
        assert_eq!(stored.chains.len(), chains);
        for (s, d) in stored.chains.iter().zip(&data.chains) {
            assert_eq!(s.record.moves, d.record.moves);
            assert_eq!(s.record.moves_per_step, d.record.moves_per_step);
            assert_eq!(
                s.measurements.series("abs_m"),
                d.measurements.series("abs_m")
            );
        }
        let replayed = combine_replicas(&stored.info.spec, &stored.chains).unwrap();
        assert_eq!(replayed.observables, data.report.observables);
        assert_eq!(replayed.diagnostics, data.report.diagnostics);
        assert_eq!(replayed.acceptance_by_move, data.report.acceptance_by_move);
        // The saved configurations are the first chain's measured ones: their m is its
        // stored series' m.
        let m = stored.chains[0].measurements.series("m").unwrap();
        for (k, &index) in stored.config_index.iter().enumerate() {
            let config = &stored.configs.as_slice().unwrap()[k * 36..(k + 1) * 36];
            let mean = config.iter().sum::<f64>() / 36.0;
            assert!((mean - m[index as usize]).abs() < 1e-12);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_study_fit_recovers_the_free_field_correlation_length() {
    // A free field of mass m0 on an 8×8 lattice: Ĝ(t) is exactly a cosh with
    // cosh E = 1 + m0²/2, so ξ = 1/E. HMC chains are autocorrelated, so the fit's covariance
    // must come from the Γ-method for the error to be right.
    let dir = scratch("free");
    let runcard = r#"
name = "free"
lattice = [8, 8]
[action]
form = "free"
mass = 0.4
[measure]
n = 20000
therm = 500
[[sampler]]
name = "hmc"
kernel = { kind = "hmc", tau = 1.0, md_steps = 6 }
[analysis]
fit_range = [1, 4]
"#;
    let set = Override::parse(&format!("out=\"{}\"", dir.display())).unwrap();
    let loaded = StudySpec::parse(runcard, "runcard", &[set]).unwrap();
    let outcome = run_study(&loaded, &latflow::StopToken::never(), &mut ()).unwrap();
    let latflow::study::StudyOutcome::Finished(result) = outcome else {
        panic!("not finished")
    };
    let fit = result.summary.samplers[0].fit.fit.unwrap();
    let exact = 1.0 / (1.0 + 0.4f64 * 0.4 / 2.0).acosh();
    let pull = (fit.xi - exact) / fit.xi_err;
    assert!(
        pull.abs() < 4.0,
        "ξ = {} ± {}, exact {exact}",
        fit.xi,
        fit.xi_err
    );
    // The error is a real statistical error, not a vanishing one.
    assert!(
        fit.xi_err > 1e-3 * exact && fit.xi_err < 0.1 * exact,
        "{fit:?}"
    );
    assert_eq!(fit.dof, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flow_chain_starts_from_a_flow_sample() {
    // A barely trained flow: from φ = 0 its independence chain could stay put for the whole
    // run; started from one of its own samples, it moves. The first measured configuration
    // (after one step) is the start or an accepted proposal: either way a flow sample, never
    // the zero field.
    let dir = scratch("start");
    let model = dir.join("poor.json");
    let output = latflow()
        .args([
            "train",
            "--lattice",
            "6x6",
            "--beta",
            "0.537",
            "--lambda",
            "0.5",
        ])
        .args(["--hidden", "8", "--affine-blocks", "1", "--segments", "4"])
        .args(["--batch", "32", "--iterations", "5", "--quiet", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert_success(&output);
    let (lattice, action) = latflow::run::model_target(&model).unwrap();
    for seed in 0..5 {
        let spec = SampleSpec {
            lattice: lattice.clone(),
            action: action.clone(),
            kernel: KernelSpec {
                kind: KernelExpr::parse("flow").unwrap(),
                ..KernelSpec::default()
            },
            n: 200,
            therm: 0,
            thin: 1,
            seed,
            model: Some(model.clone()),
            chains: 1,
        };
        let data = sample_data(
            &spec,
            latflow::run::Registry::builtin(),
            &mut (),
            &latflow::StopToken::never(),
            200,
        )
        .unwrap();
        assert_eq!(data.config_indices[0], 0);
        let first = &data.configs[0];
        assert!(
            first.iter().any(|&x| x != 0.0),
            "seed {seed}: the chain sat at φ = 0"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A study can sample with a flow trained before (`flow.model`): the model is copied in and
/// its training report comes from the model's metadata; a model for another lattice, or a
/// trained model together with training settings, is refused by name.
#[test]
fn a_study_samples_with_a_flow_trained_before() {
    let dir = scratch("trained");
    let model = dir.join("trained.json");
    let output = latflow()
        .args([
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
            "--segments",
            "4",
            "--batch",
            "64",
            "--iterations",
            "30",
            "--seed",
            "3",
            "--eval-samples",
            "500",
            "--json",
            "--quiet",
            "--out",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert_success(&output);
    let trained: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let card = |flow: &str, lattice: &str| {
        format!(
            "name = \"adopted\"\nseed = 7\nlattice = {lattice}\n[action]\nform = \"phi4\"\n\
             beta = 0.5\nlambda = 0.5\n[flow]\n{flow}\n[measure]\nn = 2000\ntherm = 100\n\
             saved_configs = 10\n[[sampler]]\nname = \"flow\"\nkernel = \"flow\"\n\
             [[sampler]]\nname = \"local\"\nkernel = \"local\"\n"
        )
    };
    let run = |text: String| {
        let runcard = dir.join("adopted.toml");
        std::fs::write(&runcard, text).unwrap();
        latflow()
            .arg("run")
            .arg(&runcard)
            .arg("--out")
            .arg(dir.join("out"))
            .args(["--quiet", "--json"])
            .output()
            .unwrap()
    };
    let model_key = format!("model = {:?}", model.to_str().unwrap());

    let output = run(card(&model_key, "[4, 4]"));
    assert_success(&output);
    let folder = dir.join("out").join("adopted");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("training.json")).unwrap()).unwrap();
    for key in [
        "configs_seen",
        "iterations",
        "seconds",
        "acceptance",
        "n_params",
    ] {
        assert_eq!(report[key], trained[key], "{key}");
    }
    assert_eq!(report["configs_seen"], 64 * 30);
    assert_eq!(
        std::fs::read(folder.join("model.json")).unwrap(),
        std::fs::read(&model).unwrap()
    );
    assert!(!folder.join("training.csv").exists(), "nothing was trained");
    check_csv(&folder.join("payback.csv"));

    let output = run(card(
        &format!("{model_key}\n[flow.train]\nbatch = 16"),
        "[4, 4]",
    ));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("flow.model"));

    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let output = run(card(&model_key, "[6, 6]"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("trained for lattice [4, 4]"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
