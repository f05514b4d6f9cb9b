//! Training until a target acceptance: a reachable target stops the run at the first
//! evaluation that reaches it (and the steps before the stop are those of a run without a
//! target), an unreachable one runs the whole budget, the stop is reproducible and survives
//! checkpoint and resume, checkpoints written without the new counters still load, bad
//! targets are refused by name, a time limit ends a run with its model written, and a
//! smaller check sample sizes the checks alone.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{Steps, on_progress, scratch, train_to_the_end};

use latflow::flow::FlowModel;
use latflow::run::{
    ActionSpec, RecipeKind, RecipeSpec, TrainControl, TrainOutcome, TrainReport, TrainSpec,
};
use latflow::train::{DEFAULT_CHECK_INTERVAL, StepMetrics, TrainConfig, Trainer};
use latflow::{Error, Lattice, StopToken};

const BUDGET: usize = 300;
const EVAL_EVERY: usize = 10;
const EVAL_SAMPLES: usize = 1000;
const BATCH: usize = 64;
/// Reached after about 50 iterations with this recipe and seed (the acceptance climbs to
/// about 0.7 by iteration 300), so the run must stop well before the budget.
const REACHABLE: f64 = 0.4;

/// 4x4, β = 0.5, λ = 0.5, a small seed recipe (hidden 16, one affine block), batch 64.
fn spec(target: Option<f64>, iterations: usize, eval_every: usize, out: PathBuf) -> TrainSpec {
    let lattice = Lattice::hypercubic(2, 4).unwrap();
    let mut train = TrainConfig::new(BATCH, iterations, 0.01);
    train.seed = 1;
    train.chunks = 2;
    train.eval_every = eval_every;
    train.eval_samples = EVAL_SAMPLES;
    train.until_acceptance = target;
    TrainSpec {
        lattice,
        action: ActionSpec::Phi4 {
            beta: 0.5,
            lambda: 0.5,
        },
        recipe: RecipeSpec {
            kind: RecipeKind::Seed,
            hidden: 16,
            affine_blocks: 1,
            ..RecipeSpec::default()
        },
        train,
        anneal: None,
        snf: None,
        init: None,
        out,
    }
}

/// Runs `spec` to the end, keeping every step's metrics.
fn run(spec: &TrainSpec) -> (TrainReport, Vec<StepMetrics>) {
    let mut steps = Steps::default();
    let report = train_to_the_end(spec, &mut steps);
    (report, steps.0)
}

/// The acceptances of the evaluations made during a run, with the iterations they follow.
fn evaluations(steps: &[StepMetrics]) -> Vec<(usize, f64)> {
    steps
        .iter()
        .filter_map(|m| m.eval.map(|e| (m.iteration + 1, e.acceptance)))
        .collect()
}

/// A step's metrics without its wall-clock time.
fn deterministic(m: &StepMetrics) -> StepMetrics {
    StepMetrics {
        seconds: 0.0,
        ..m.clone()
    }
}

#[test]
fn a_reachable_target_stops_at_the_first_evaluation_that_reaches_it() {
    let dir = scratch("reach");
    let (report, steps) = run(&spec(
        Some(REACHABLE),
        BUDGET,
        EVAL_EVERY,
        dir.join("m.json"),
    ));
    let evals = evaluations(&steps);
    eprintln!(
        "stopped after {} of {BUDGET} iterations; evaluations {evals:?}",
        report.iterations
    );
    assert_eq!(report.reached_target, Some(true));
    assert!(report.iterations < BUDGET, "{}", report.iterations);
    assert_eq!(steps.len(), report.iterations);
    let (&(last_at, last), earlier) = evals.split_last().expect("at least one evaluation");
    assert_eq!(last_at, report.iterations, "the run stops at an evaluation");
    assert!(last >= REACHABLE, "{last}");
    // The final evaluation is an independent sample, not a repeat of the stopping check:
    // its acceptance differs, within a few of the checks' statistical errors
    // √(a(1 − a)·2τ_rej/n) ≲ 0.05 here.
    assert_ne!(report.acceptance, last);
    assert!(
        (report.acceptance - last).abs() < 0.2,
        "{} vs {last}",
        report.acceptance
    );
    for &(at, acceptance) in earlier {
        assert!(acceptance < REACHABLE, "iteration {at}: {acceptance}");
    }
    for (at, _) in &evals {
        assert_eq!(at % EVAL_EVERY, 0);
    }
    assert_eq!(evals.len(), report.iterations / EVAL_EVERY);
    // The checks' cost is reported apart from |Φ_train|.
    assert_eq!(report.configs_seen, (report.iterations * BATCH) as u64);
    assert_eq!(report.eval_configs, (evals.len() * EVAL_SAMPLES) as u64);
    assert!(report.eval_seconds > 0.0 && report.seconds > 0.0);
    // The model records the target with the run.
    let model = FlowModel::load(dir.join("m.json")).unwrap();
    assert_eq!(
        model.metadata()["run"]["train"]["until_acceptance"],
        serde_json::json!(REACHABLE)
    );
}

/// The learning-rate schedule spans the budget, so a run stopped at its target holds the
/// parameters of a run without a target after as many steps; and the same seed stops at
/// the same iteration.
#[test]
fn stopping_early_changes_nothing_before_the_stop_and_is_reproducible() {
    let dir = scratch("same");
    let target = spec(Some(REACHABLE), BUDGET, EVAL_EVERY, dir.join("a.json"));
    let (first, _) = run(&target);
    let (again, _) = run(&TrainSpec {
        out: dir.join("b.json"),
        ..target.clone()
    });
    assert_eq!(first.reached_target, Some(true));
    assert_eq!(first.iterations, again.iterations);
    let a = FlowModel::load(dir.join("a.json")).unwrap();
    let b = FlowModel::load(dir.join("b.json")).unwrap();
    assert_eq!(a.params(), b.params());

    // The same run without a target, stepped by hand as far as the target run went.
    let plain = spec(None, BUDGET, EVAL_EVERY, dir.join("c.json"));
    let action = Arc::new(plain.action.build(&plain.lattice).unwrap());
    let flow = plain.recipe.build(&plain.lattice).unwrap();
    let model = FlowModel::new(&flow, &plain.lattice, plain.train.seed).unwrap();
    let mut trainer = Trainer::new(model, action, plain.train.clone()).unwrap();
    for _ in 0..first.iterations {
        trainer.step().unwrap();
    }
    assert!(!trainer.is_finished());
    assert_eq!(trainer.model().params(), a.params());
}

#[test]
fn an_unreachable_target_runs_the_whole_budget() {
    let dir = scratch("unreachable");
    // eval_every = 0: the checks come every DEFAULT_CHECK_INTERVAL iterations.
    let budget = 2 * DEFAULT_CHECK_INTERVAL;
    let (report, steps) = run(&spec(Some(0.99), budget, 0, dir.join("m.json")));
    assert_eq!(report.reached_target, Some(false));
    assert_eq!(report.iterations, budget);
    assert_eq!(steps.len(), budget);
    let evals = evaluations(&steps);
    let at: Vec<usize> = evals.iter().map(|e| e.0).collect();
    assert_eq!(at, [DEFAULT_CHECK_INTERVAL, 2 * DEFAULT_CHECK_INTERVAL]);
    assert!(evals.iter().all(|e| e.1 < 0.99), "{evals:?}");
    assert_eq!(report.eval_configs, (2 * EVAL_SAMPLES) as u64);
    assert_eq!(report.configs_seen, (budget * BATCH) as u64);

    // Without a target nothing is checked and nothing is reported as reached.
    let (plain, steps) = run(&spec(None, 5, 0, dir.join("p.json")));
    assert_eq!(plain.reached_target, None);
    assert_eq!((plain.eval_configs, plain.eval_seconds), (0, 0.0));
    assert!(steps.iter().all(|m| m.eval.is_none()));
}

/// A run stopped (by a stop request) before its target and resumed from the checkpoint
/// stops at the same iteration with the same parameters as an uninterrupted run.
#[test]
fn a_resumed_run_stops_where_the_uninterrupted_one_does() {
    let dir = scratch("resume");
    let full_spec = spec(Some(REACHABLE), BUDGET, EVAL_EVERY, dir.join("full.json"));
    let (full, full_steps) = run(&full_spec);
    assert_eq!(full.reached_target, Some(true));
    assert!(full.iterations > EVAL_EVERY, "{}", full.iterations);

    let stop = StopToken::new();
    let checkpoint = dir.join("ckpt.json");
    let control = TrainControl {
        checkpoint: Some(&checkpoint),
        stop: &stop,
        ..TrainControl::default()
    };
    let parted = TrainSpec {
        out: dir.join("parted.json"),
        ..full_spec.clone()
    };
    // Stop after the first evaluation, so the checkpoint carries checking cost already.
    let asker = stop.clone();
    let mut ask = on_progress(|_, done| {
        if done == EVAL_EVERY as u64 {
            asker.stop();
        }
    });
    let outcome = latflow::run::train(&parted, &control, &mut ask).unwrap();
    assert!(
        matches!(outcome, TrainOutcome::Stopped { iteration, .. } if iteration == EVAL_EVERY),
        "{outcome:?}"
    );
    let control = TrainControl {
        stop: &StopToken::never(),
        ..control
    };
    let mut resumed_steps = Steps::default();
    let outcome = latflow::run::resume(&checkpoint, None, &control, &mut resumed_steps).unwrap();
    let resumed_steps = resumed_steps.0;
    let TrainOutcome::Finished(resumed) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(resumed.reached_target, Some(true));
    assert_eq!(resumed.iterations, full.iterations);
    assert_eq!(resumed.eval_configs, full.eval_configs);
    assert_eq!(
        resumed_steps.iter().map(deterministic).collect::<Vec<_>>(),
        full_steps[EVAL_EVERY..]
            .iter()
            .map(deterministic)
            .collect::<Vec<_>>()
    );
    let a = FlowModel::load(dir.join("full.json")).unwrap();
    let b = FlowModel::load(dir.join("parted.json")).unwrap();
    assert_eq!(a.params(), b.params());
}

/// A checkpoint without the evaluation counters and the target flag (as written before
/// they existed) still resumes, bit for bit.
#[test]
fn checkpoints_without_the_new_fields_still_resume() {
    let dir = scratch("old");
    let plain = spec(None, 8, 4, dir.join("m.json"));
    let action = Arc::new(plain.action.build(&plain.lattice).unwrap());
    let flow = plain.recipe.build(&plain.lattice).unwrap();
    let fresh = || {
        let model = FlowModel::new(&flow, &plain.lattice, 3).unwrap();
        Trainer::new(model, action.clone(), plain.train.clone()).unwrap()
    };
    let mut full = fresh();
    full.train(&mut (), &latflow::StopToken::never()).unwrap();

    let mut first = fresh();
    for _ in 0..5 {
        first.step().unwrap();
    }
    let path = dir.join("ckpt.json");
    first.save_checkpoint(&path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = json.as_object_mut().unwrap();
    for key in ["eval_seconds", "eval_configs", "target_reached"] {
        assert!(fields.remove(key).is_some(), "{key}");
    }
    assert!(
        !fields["config"]
            .as_object()
            .unwrap()
            .contains_key("until_acceptance")
    );
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let mut resumed = Trainer::resume(&path, action.clone()).unwrap();
    assert_eq!(resumed.iteration(), 5);
    let summary = resumed
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    assert_eq!(summary.reached_target, None);
    // The evaluation after iteration 4 was dropped with the counters; the one after 8 is
    // counted.
    assert_eq!(summary.eval_configs, EVAL_SAMPLES as u64);
    assert_eq!(resumed.model().params(), full.model().params());
}

#[test]
fn bad_targets_are_refused_by_name() {
    for target in [0.0, 1.0, f64::NAN, -0.5, 1.5, f64::INFINITY] {
        let mut config = TrainConfig::new(10, 10, 0.01);
        config.until_acceptance = Some(target);
        match config.validate() {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "until_acceptance"),
            other => panic!("target {target}: {other:?}"),
        }
    }
    let dir = scratch("card");
    let card = |value: &str| {
        let path = dir.join("train.toml");
        std::fs::write(
            &path,
            format!(
                "lattice = [4, 4]\nout = \"m.json\"\n[action]\nform = \"phi4\"\nbeta = 0.5\n\
                 lambda = 0.5\n[train]\nuntil_acceptance = {value}\n"
            ),
        )
        .unwrap();
        TrainSpec::from_toml_file(&path)
    };
    assert_eq!(card("0.5").unwrap().train.until_acceptance, Some(0.5));
    match card("1.0") {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "train.until_acceptance"),
        other => panic!("{other:?}"),
    }
    // A runcard without the key has no target.
    let path = dir.join("plain.toml");
    std::fs::write(
        &path,
        "lattice = [4, 4]\nout = \"m.json\"\n[action]\nform = \"phi4\"\nbeta = 0.5\nlambda = 0.5\n\
         [train]\nbatch = 16\n",
    )
    .unwrap();
    assert_eq!(
        TrainSpec::from_toml_file(&path)
            .unwrap()
            .train
            .until_acceptance,
        None
    );
}

/// A time limit ends training early as the end of the budget does: the model is evaluated
/// and written, the report says the limit ended it, and the steps made are those of a run
/// without a limit.
#[test]
fn a_time_limit_ends_training_with_a_written_model() {
    let dir = scratch("time");
    // A limit far below one step's time: the run stops after its first step.
    let mut limited = spec(None, BUDGET, 0, dir.join("limited.json"));
    limited.train.time_limit = Some(1e-9);
    let (report, steps) = run(&limited);
    assert!(report.ran_out_of_time);
    assert_eq!(report.iterations, 1);
    assert_eq!(steps.len(), 1);
    assert_eq!(report.configs_seen, BATCH as u64);
    assert!(report.acceptance > 0.0, "the flow is evaluated");
    let written = FlowModel::load(dir.join("limited.json")).unwrap();
    // The same first step without a limit (the schedule spans the same budget).
    let unlimited = spec(None, BUDGET, 0, dir.join("unused.json"));
    let model = FlowModel::new(
        &unlimited.recipe.build(&unlimited.lattice).unwrap(),
        &unlimited.lattice,
        unlimited.train.seed,
    )
    .unwrap();
    let action = Arc::new(unlimited.action.build(&unlimited.lattice).unwrap());
    let mut trainer = Trainer::new(model, action, unlimited.train.clone()).unwrap();
    let first = trainer.step().unwrap();
    assert!(!trainer.is_finished());
    assert_eq!(deterministic(&first), deterministic(&steps[0]));
    assert_eq!(trainer.model().params(), written.params());
    // A generous limit changes nothing.
    let mut generous = spec(None, 20, 0, dir.join("generous.json"));
    generous.train.time_limit = Some(1e6);
    let (report, _) = run(&generous);
    assert!(!report.ran_out_of_time);
    assert_eq!(report.iterations, 20);
    for limit in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut config = TrainConfig::new(10, 10, 0.01);
        config.time_limit = Some(limit);
        match config.validate() {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "time_limit"),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
}

/// `check_samples` sizes the evaluations during training and nothing else: each check is
/// the evaluation of that many samples at its step, the final evaluation keeps
/// `eval_samples`, and the parameters are those of a run with full-size checks.
#[test]
fn a_smaller_check_sample_sizes_the_checks_alone() {
    const CHECK: usize = 200;
    let dir = scratch("check");
    let iterations = 3 * EVAL_EVERY;
    let mut small = spec(None, iterations, EVAL_EVERY, dir.join("small.json"));
    small.train.check_samples = Some(CHECK);
    let (report, steps) = run(&small);
    let (full, full_steps) = run(&spec(None, iterations, EVAL_EVERY, dir.join("full.json")));
    assert_eq!(report.eval_configs, (3 * CHECK) as u64);
    assert_eq!(full.eval_configs, (3 * EVAL_SAMPLES) as u64);
    let a = FlowModel::load(dir.join("small.json")).unwrap();
    let b = FlowModel::load(dir.join("full.json")).unwrap();
    assert_eq!(a.params(), b.params());

    // The same run stepped by hand: each check equals an evaluation of CHECK samples at
    // its step, and differs from the full-size check there.
    let action = Arc::new(small.action.build(&small.lattice).unwrap());
    let flow = small.recipe.build(&small.lattice).unwrap();
    let model = FlowModel::new(&flow, &small.lattice, small.train.seed).unwrap();
    let mut trainer = Trainer::new(model, action, small.train.clone()).unwrap();
    for (m, full_m) in steps.iter().zip(&full_steps) {
        let stepped = trainer.step().unwrap();
        assert_eq!(deterministic(&stepped), deterministic(m));
        if let Some(check) = m.eval {
            assert_eq!(check, trainer.evaluate(CHECK).unwrap());
            let full_check = full_m.eval.expect("the same steps are checked");
            assert_eq!(full_check, trainer.evaluate(EVAL_SAMPLES).unwrap());
            assert_ne!(check.acceptance, full_check.acceptance);
        }
    }
    // The final evaluation has eval_samples samples, as without check_samples.
    assert_eq!(
        report.acceptance,
        trainer.evaluate(EVAL_SAMPLES).unwrap().acceptance
    );
    assert_eq!(report.acceptance, full.acceptance);

    for bad in [0, 1] {
        let mut config = TrainConfig::new(10, 10, 0.01);
        config.check_samples = Some(bad);
        match config.validate() {
            Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "check_samples"),
            other => panic!("check_samples {bad}: {other:?}"),
        }
    }
}
