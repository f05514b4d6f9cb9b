//! Sweeps end to end: one row per grid point and finished points skipped on a rerun, the
//! example sweeps differing only in their gradient estimator, and `[[method]]` tables
//! trained and analysed per method.

mod common;

use std::path::Path;

use common::{assert_success, check_csv, latflow, scratch};

#[test]
fn a_sweep_writes_one_row_per_point_and_skips_finished_points() {
    let dir = scratch("sweep");
    let runcard = dir.join("sweep.toml");
    std::fs::write(
        &runcard,
        r#"
name = "mini"
lattices = [4, 6]
beta = [[4, 0.5]]
seeds = [1, 2]
batch = [64]
iterations = [10, 30]
lr = [0.01]
[recipe]
hidden = 8
affine_blocks = 1
segments = 4
[train]
eval_samples = 500
[sample]
n = 1000
therm = 100
kernels = ["flow+local", { kind = "flow+hmc", tau = 0.5, md_steps = 4 }]
amortise_over = 1000
[hmc]
n = 3000
therm = 200
"#,
    )
    .unwrap();
    let run = || {
        latflow()
            .arg("sweep")
            .arg(&runcard)
            .args(["--out", dir.to_str().unwrap(), "--quiet", "--json"])
            .output()
            .unwrap()
    };
    let first = run();
    assert_success(&first);
    let printed: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(printed["reused"], 0);
    let rows = printed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 2);
    // Grid order: L, then iterations, then seed; β from the runcard at L = 4 and from the
    // reference line at L = 6.
    assert_eq!(rows[0]["l"], 4);
    assert_eq!(rows[0]["beta"], 0.5);
    assert_eq!(rows[7]["beta"], 0.537);
    assert_eq!(rows[3]["iterations"], 30);
    assert_eq!(rows[3]["seed"], 2);
    assert_eq!(rows[3]["configs_seen"], 64 * 30);
    let folder = dir.join("mini");
    let (header, csv_rows) = check_csv(&folder.join("sweep.csv"));
    assert_eq!(header.join(","), latflow::study::SWEEP_HEADER);
    assert_eq!(csv_rows.len(), 8);
    for row in &csv_rows {
        let acceptance: f64 = row[10].parse().unwrap();
        assert!((0.0..=1.0).contains(&acceptance));
        assert!(row[8].parse::<u64>().unwrap() > 0);
    }
    // The HMC baseline: one tuned chain per L and seed, and z fitted over the two sizes.
    let hmc = &printed["hmc"];
    let hmc_rows = hmc["rows"].as_array().unwrap();
    assert_eq!(hmc_rows.len(), 2 * 2);
    for r in hmc_rows {
        assert!(r["tau_abs_m"].as_f64().unwrap() >= 0.5, "{r}");
        assert!(r["xi"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cost_per_independent"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(
        hmc["z_fit"]["exponent"].as_f64().unwrap().is_finite(),
        "{hmc}"
    );
    assert!(
        hmc["z_fit"]["exponent_err"].as_f64().unwrap() > 0.0,
        "{hmc}"
    );
    let (header, hmc_csv) = check_csv(&folder.join("hmc.csv"));
    assert_eq!(header.join(","), latflow::study::HMC_HEADER);
    assert_eq!(hmc_csv.len(), 4);
    // The training-cost analysis: one budget point per size and budget, over both seeds.
    let cost = &printed["training_cost"];
    let budgets = cost["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 2 * 2);
    for b in budgets {
        assert_eq!(b["runs"], 2, "{b}");
    }
    let (header, budget_rows) = check_csv(&folder.join("budgets.csv"));
    assert_eq!(header.join(","), latflow::study::BUDGETS_HEADER);
    assert_eq!(budget_rows.len(), 4);
    let costs = std::fs::read_to_string(folder.join("training_cost.csv")).unwrap();
    assert_eq!(
        costs.lines().next(),
        Some(latflow::study::TRAINING_COST_HEADER)
    );
    assert_eq!(
        costs.lines().count(),
        1 + cost["costs"].as_array().unwrap().len()
    );
    // Every size either brackets the target or says why not.
    assert_eq!(
        cost["costs"].as_array().unwrap().len() + cost["unbracketed"].as_array().unwrap().len(),
        2
    );
    // Every point ran the flow chain and both further kernels with its flow.
    for r in rows {
        let kernels: Vec<&str> = r["samplers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kernel"].as_str().unwrap())
            .collect();
        assert_eq!(kernels, ["flow", "flow+local", "flow+hmc"], "{r}");
        // A cost is undefined only for a chain that says it cannot be trusted (the flows
        // trained for 10 or 30 steps mix too slowly for τ_int in 1000 steps).
        for c in r["samplers"].as_array().unwrap() {
            match c["cost_per_independent"].as_f64() {
                Some(cost) => assert!(cost > 0.0, "{c}"),
                None => assert_eq!(c["verdict"], "unreliable", "{c}"),
            }
        }
        assert_eq!(
            r["samplers"][0]["acceptance"], r["acceptance"],
            "the first entry is the flow chain"
        );
    }
    // The comparison with tuned HMC: per kernel and size, at the size's largest budget
    // over both seeds, with the training spread over 1000 independent configurations.
    let comparison = &printed["sampler_comparison"];
    // Chains that cannot be trusted are left out of it.
    let sizes = comparison["sizes"].as_array().unwrap();
    let trusted = |kernel: &str, l: u64| {
        rows.iter()
            .filter(|r| r["l"] == l && r["iterations"] == 30)
            .flat_map(|r| r["samplers"].as_array().unwrap())
            .filter(|c| c["kernel"] == kernel && c["verdict"] != "unreliable")
            .count()
    };
    let expected: usize = ["flow", "flow+local", "flow+hmc"]
        .iter()
        .flat_map(|k| [4, 6].map(|l| trusted(k, l)))
        .filter(|&n| n > 0)
        .count();
    assert!(expected >= 2, "the mixed kernels give costs at both sizes");
    assert_eq!(sizes.len(), expected);
    for s in sizes {
        assert_eq!(s["configs_seen"], 64 * 30, "{s}");
        let l = s["l"].as_u64().unwrap();
        assert_eq!(s["runs"], trusted(s["kernel"].as_str().unwrap(), l), "{s}");
        let (cost, training) = (
            s["cost"].as_f64().unwrap(),
            s["training_seconds"].as_f64().unwrap(),
        );
        let amortised = s["amortised_cost"].as_f64().unwrap();
        assert!(
            (amortised - (cost + training / 1000.0)).abs() <= 1e-12 * amortised,
            "{s}"
        );
        assert!(s["hmc_cost"].as_f64().unwrap() > 0.0, "{s}");
    }
    let crossovers = comparison["crossovers"].as_array().unwrap();
    assert_eq!(crossovers.len(), 3 * 2);
    for x in crossovers {
        assert!(!x["finding"].as_str().unwrap().is_empty(), "{x}");
    }
    let (header, cost_rows) = check_csv(&folder.join("sampler_cost.csv"));
    assert_eq!(header.join(","), latflow::study::SAMPLER_COST_HEADER);
    assert_eq!(cost_rows.len(), expected);
    let png = std::fs::read(folder.join("plots/sampler_cost.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let table = std::fs::read(folder.join("sweep.csv")).unwrap();
    let hmc_table = std::fs::read(folder.join("hmc.csv")).unwrap();
    // Run again: every point is reused and the table is the same.
    let second = run();
    assert!(second.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(printed["reused"], 8);
    assert_eq!(std::fs::read(folder.join("sweep.csv")).unwrap(), table);
    assert_eq!(std::fs::read(folder.join("hmc.csv")).unwrap(), hmc_table);
    // A size off the reference line needs its β.
    let e = latflow()
        .arg("sweep")
        .arg(&runcard)
        .args(["--set", "lattices=[5]", "--set", "name=other", "--quiet"])
        .args(["--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("no β given for L = 5"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_sweeps_load_and_differ_only_in_their_gradient() {
    use latflow::study::SweepSpec;
    use latflow::train::GradientEstimator;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let total = SweepSpec::load(&examples.join("sweep_small.toml"), &[])
        .unwrap()
        .spec;
    let path = SweepSpec::load(&examples.join("sweep_small_path.toml"), &[])
        .unwrap()
        .spec;
    assert_eq!(total.train.gradient, GradientEstimator::Total);
    assert_eq!(path.train.gradient, GradientEstimator::Path);
    let mut same = path.clone();
    same.train.gradient = GradientEstimator::Total;
    same.name = total.name.clone();
    assert_eq!(same, total);
}

/// `[[method]]` tables add training methods to the grid: every method trains at every
/// point with its own recipe or gradient estimator, and the analysis is made per method.
#[test]
fn a_sweep_trains_and_analyses_every_method() {
    let dir = scratch("methods");
    let runcard = dir.join("sweep.toml");
    std::fs::write(
        &runcard,
        r#"
name = "methods"
lattices = [4]
beta = [[4, 0.5]]
seeds = [1, 2]
batch = [64]
iterations = [10, 30]
lr = [0.01]
[recipe]
hidden = 8
affine_blocks = 1
segments = 4
[train]
eval_samples = 500
[sample]
n = 1000
therm = 100
[[method]]
name = "total"
[[method]]
name = "path-wide"
gradient = "path"
recipe = { kind = "seed", hidden = 16, affine_blocks = 1, segments = 4 }
"#,
    )
    .unwrap();
    let out = latflow()
        .arg("sweep")
        .arg(&runcard)
        .args(["--out", dir.to_str().unwrap(), "--quiet", "--json"])
        .output()
        .unwrap();
    assert_success(&out);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = printed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 2);
    // Grid order: L, then method, then iterations and seed.
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        ["total"; 4]
            .iter()
            .chain(&["path-wide"; 4])
            .copied()
            .collect::<Vec<_>>()
    );
    assert!(rows[4]["n_params"].as_u64() > rows[0]["n_params"].as_u64());
    let folder = dir.join("methods");
    for (method, gradient, hidden) in [("total", "total", 8), ("path-wide", "path", 16)] {
        let model = folder
            .join("points")
            .join(format!("{method}-L4-b64-i10-lr0.01-s1"))
            .join("model.json");
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
        assert_eq!(model["metadata"]["run"]["train"]["gradient"], gradient);
        assert_eq!(model["metadata"]["run"]["recipe"]["hidden"], hidden);
    }
    // One analysis per method, named after it, over that method's rows alone.
    let costs = printed["training_cost"].as_array().unwrap();
    assert_eq!(costs.len(), 2);
    for (cost, method) in costs.iter().zip(["total", "path-wide"]) {
        assert_eq!(cost["method"], method);
        let budgets = cost["budgets"].as_array().unwrap();
        assert_eq!(budgets.len(), 2, "{cost}");
        for b in budgets {
            assert_eq!(b["runs"], 2, "{b}");
        }
        let file: serde_json::Value = serde_json::from_slice(
            &std::fs::read(folder.join(format!("training_cost-{method}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(&file, cost);
        let (header, budget_rows) = check_csv(&folder.join(format!("budgets-{method}.csv")));
        assert_eq!(header.join(","), latflow::study::BUDGETS_HEADER);
        assert_eq!(budget_rows.len(), 2);
    }
    // Budget means are those of the method's own rows.
    let mean = |from: usize| {
        (rows[from]["acceptance"].as_f64().unwrap()
            + rows[from + 1]["acceptance"].as_f64().unwrap())
            / 2.0
    };
    let first = &costs[1]["budgets"][0];
    assert_eq!(first["configs_seen"], 64 * 10);
    assert!(
        (first["acceptance"].as_f64().unwrap() - mean(4)).abs() < 1e-12,
        "{first}"
    );
    assert!(!folder.join("training_cost.json").exists());
    let (header, csv_rows) = check_csv(&folder.join("sweep.csv"));
    assert_eq!(header.last().unwrap(), "method");
    assert_eq!(csv_rows[7].last().unwrap(), "path-wide");

    // Method names are checked.
    let bad = std::fs::read_to_string(&runcard)
        .unwrap()
        .replace("name = \"total\"", "name = \"path-wide\"");
    std::fs::write(&runcard, bad).unwrap();
    let out = latflow()
        .arg("sweep")
        .arg(&runcard)
        .args(["--out", dir.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("two methods are named `path-wide`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
