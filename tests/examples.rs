//! The examples that check themselves, run as tests: each exposes `run()`, which its own
//! `main` calls, and the test checks what it found.

#[allow(dead_code)]
#[path = "../examples/custom_action.rs"]
mod custom_action;

#[allow(dead_code)]
#[path = "../examples/custom_layer.rs"]
mod custom_layer;

/// A user φ⁶ action and a user kernel run as a whole study through the registry: local
/// Metropolis, tuned HMC, HMC with the user's reflection and a flow trained against the
/// action agree on ⟨φ²⟩ and χ within 4σ, with errors small enough that they could
/// disagree, and the study writes its full report.
#[test]
fn custom_action_example() {
    let out = std::env::temp_dir().join(format!("latflow-phi6-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let report = custom_action::run_in(&out).expect("the example runs");
    let samplers: Vec<&str> = report.rows.iter().map(|r| r.sampler.as_str()).collect();
    assert_eq!(samplers, ["local", "hmc", "hmc+reflect", "flow"]);
    let disagreements = report.disagreements();
    assert!(disagreements.is_empty(), "{disagreements:?}");
    let relative = report.largest_relative_error();
    assert!(relative < 0.05, "largest relative error {relative}");
    let flow = report.rows.iter().find(|r| r.sampler == "flow").unwrap();
    assert!(flow.acceptance > 0.3, "flow acceptance {}", flow.acceptance);
    for file in [
        "index.html",
        "summary.json",
        "samplers.csv",
        "model.json",
        "plots/correlator.png",
    ] {
        assert!(report.folder.join(file).is_file(), "{file} missing");
    }
    // The user's kernel kept its label through storage: the stored run of `hmc+reflect`
    // lists both kernels, and the page names the action.
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.folder.join("data/hmc-reflect/run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(run["move_kernels"], serde_json::json!(["hmc", "reflect"]));
    assert_eq!(run["move_kinds"], serde_json::json!(["hmc", "metropolis"]));
    let page = std::fs::read_to_string(report.folder.join("index.html")).unwrap();
    assert!(page.contains("phi6"), "the page names the action");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A user transform and net registered by name, property-checked, trained next to a
/// built-in block, saved and loaded, and sampled in a flow + local chain that agrees with HMC.
#[test]
fn custom_layer_example() {
    if let Err(e) = custom_layer::run() {
        panic!("custom_layer example failed: {e}");
    }
}
