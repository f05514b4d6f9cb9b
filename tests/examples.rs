//! The examples run as tests: each example exposes its logic as a function that returns
//! what it found, and the test checks it.

#[allow(dead_code)]
#[path = "../examples/custom_action.rs"]
mod custom_action;

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
