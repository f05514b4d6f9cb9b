//! The examples that check themselves, run as tests: each exposes `run()`, which its own
//! `main` calls, and fails with a message naming the first check that did not hold.

#[allow(dead_code)]
#[path = "../examples/custom_layer.rs"]
mod custom_layer;

/// A user transform and net registered by name, property-checked, trained next to a
/// built-in block, saved and loaded, and sampled in a flow + local chain that agrees with HMC.
#[test]
fn custom_layer_example() {
    if let Err(e) = custom_layer::run() {
        panic!("custom_layer example failed: {e}");
    }
}
