//! The examples that check themselves, run as tests: each exposes `run()`, which its own
//! `main` calls, and the test checks what it found.

#[allow(dead_code)]
#[path = "../examples/custom_action.rs"]
mod custom_action;

#[allow(dead_code)]
#[path = "../examples/custom_layer.rs"]
mod custom_layer;

/// A user φ⁶ action sampled by local Metropolis, HMC and a flow trained against it: all
/// three agree on ⟨φ²⟩ and χ within 4σ, with errors small enough that they could disagree.
#[test]
fn custom_action_example() {
    let report = custom_action::run().expect("the example runs");
    let disagreements = report.disagreements();
    assert!(disagreements.is_empty(), "{disagreements:?}");
    let relative = report.largest_relative_error();
    assert!(relative < 0.05, "largest relative error {relative}");
    let flow = report.rows.iter().find(|r| r.sampler == "flow").unwrap();
    assert!(flow.acceptance > 0.3, "flow acceptance {}", flow.acceptance);
}

/// A user transform and net registered by name, property-checked, trained next to a
/// built-in block, saved and loaded, and sampled in a flow + local chain that agrees with HMC.
#[test]
fn custom_layer_example() {
    if let Err(e) = custom_layer::run() {
        panic!("custom_layer example failed: {e}");
    }
}
