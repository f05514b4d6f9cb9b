//! The scalable flows from the command line: the default method beyond |Λ| = 100 says it
//! picked the scalable family and trains it; the multiscale recipe's flags build the flow
//! they name; `--init` grows a trained multiscale flow by one level; flags of other recipes
//! are refused.

use std::process::Command;

use latflow::flow::{Flow, FlowModel};

fn latflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latflow"))
        .args(args)
        .output()
        .expect("the latflow binary runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("latflow-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_default_method_beyond_l10_is_the_scalable_family() {
    let dir = temp_dir("scalable-default");
    let model = dir.join("m.json");
    let stdout = ok(&latflow(&[
        "train",
        "--lattice",
        "12x12",
        "--beta",
        "0.616",
        "--lambda",
        "0.5",
        "--until-acceptance",
        "0.02",
        "--eval-samples",
        "500",
        "--out",
        model.to_str().unwrap(),
        "--quiet",
    ]));
    assert!(
        stdout.contains("default method for this lattice: scalable family")
            && stdout.contains("path gradient, batch 256, budget 5760 iterations, lr 0.003"),
        "{stdout}"
    );
    assert!(
        stdout.contains("target acceptance 0.02 reached"),
        "{stdout}"
    );
    let flow = FlowModel::load(&model).unwrap();
    let (recipe, _) = latflow::run::default_method(flow.lattice());
    assert_eq!(
        flow.config(),
        &recipe.build(flow.lattice()).unwrap(),
        "the flow is the default method's"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_multiscale_flow_trained_on_8x8_starts_a_16x16_one_with_a_new_level() {
    let dir = temp_dir("scalable-init");
    let (small, large) = (dir.join("ms8.json"), dir.join("ms16.json"));
    let run =
        |lattice: &str, beta: &str, levels: &str, out: &std::path::Path, init: Option<&str>| {
            let mut args = vec![
                "train",
                "--lattice",
                lattice,
                "--beta",
                beta,
                "--lambda",
                "0.5",
                "--recipe",
                "multiscale",
                "--levels",
                levels,
                "--affine-blocks",
                "1",
                "--channels",
                "4",
                "--spline",
                "--segments",
                "4",
                "--free-field",
                "classes",
                "--batch",
                "32",
                "--iterations",
                "3",
                "--eval-samples",
                "200",
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ];
            if let Some(init) = init {
                args.extend(["--init", init]);
            }
            latflow(&args)
        };
    ok(&run("8x8", "0.576", "1", &small, None));
    ok(&run(
        "16x16",
        "0.634",
        "2",
        &large,
        Some(small.to_str().unwrap()),
    ));
    let grown = FlowModel::load(&large).unwrap();
    assert_eq!(grown.config().levels(), 2);
    // Three levels do not follow from one: refused, naming both lattices.
    let out = run("16x16", "0.634", "3", &large, Some(small.to_str().unwrap()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8x8") && err.contains("16x16"), "{err}");
    // Levels the lattice does not divide, and flags of other recipes, are refused.
    let out = run("12x12", "0.616", "3", &large, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("3 levels") && err.contains("12x12"),
        "{err}"
    );
    let out = latflow(&[
        "train",
        "--lattice",
        "8x8",
        "--beta",
        "0.576",
        "--lambda",
        "0.5",
        "--recipe",
        "seed",
        "--levels",
        "2",
        "--out",
        "x.json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--levels"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
