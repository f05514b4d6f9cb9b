//! Curricula: a convolutional flow trained at L = 4 then L = 6 is exactly the chain of
//! training runs each started from the model before (`TrainSpec::init`); a curriculum
//! stopped during a stage continues from that stage's checkpoint to the same model without
//! retraining finished stages; a recipe that cannot carry across the sizes, a stage model
//! from another run and an empty curriculum are refused by name before anything trains.

mod common;

use std::path::PathBuf;

use common::{Recorder, conv_recipe, on_progress, scratch};

use latflow::flow::FlowModel;
use latflow::run::{
    ActionSpec, CurriculumOutcome, CurriculumSpec, RecipeKind, RecipeSpec, StageSpec, TrainControl,
    TrainOutcome, TrainSpec, curriculum, train,
};
use latflow::train::TrainConfig;
use latflow::{Error, Lattice, StopToken};

fn stage(l: usize, beta: f64, iterations: usize, lr: f64, seed: u64) -> StageSpec {
    let mut train = TrainConfig::new(64, iterations, lr);
    train.seed = seed;
    train.chunks = 2;
    train.eval_samples = 1000;
    StageSpec {
        lattice: Lattice::hypercubic(2, l).unwrap(),
        action: ActionSpec::Phi4 { beta, lambda: 0.5 },
        train,
        anneal: None,
    }
}

/// L = 4 at β = 0.45, then L = 6 at β = 0.537 with a smaller rate.
fn two_stages(out: PathBuf) -> CurriculumSpec {
    CurriculumSpec {
        recipe: conv_recipe(4),
        init: None,
        out,
        stages: vec![stage(4, 0.45, 40, 0.01, 1), stage(6, 0.537, 30, 0.003, 2)],
    }
}

fn finished(outcome: CurriculumOutcome) -> latflow::run::CurriculumReport {
    match outcome {
        CurriculumOutcome::Finished(report) => report,
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[test]
fn a_curriculum_is_the_chain_of_its_stages() {
    let dir = scratch("chain");
    let spec = two_stages(dir.join("c"));
    let mut seen = Recorder::default();
    let report = finished(curriculum(&spec, &TrainControl::default(), &mut seen).unwrap());
    let steps: Vec<(String, usize)> = seen
        .stages
        .iter()
        .map(|s| (s.name.clone(), s.progress.len()))
        .collect();
    assert_eq!(
        steps,
        [("stage 1: train".into(), 40), ("stage 2: train".into(), 30)]
    );
    assert_eq!(report.stages.len(), 2);
    assert_eq!(report.configs_seen, 64 * (40 + 30));
    let expected = 64.0 * 40.0 * 16.0 / 36.0 + 64.0 * 30.0;
    assert!((report.last_lattice_configs - expected).abs() < 1e-9);
    assert_eq!(report.acceptance, report.stages[1].acceptance);
    assert_eq!(report.model, spec.stage_model(1));
    // The stage files are in the folder; no checkpoint is left behind.
    for name in [
        "stage-1.json",
        "stage-2.json",
        "stage-1.train.csv",
        "curriculum.json",
    ] {
        assert!(spec.out.join(name).exists(), "{name}");
    }
    assert!(!spec.out.join("stage-2.checkpoint.json").exists());

    // By hand: train L = 4 from scratch, then L = 6 from its model.
    let first = TrainSpec {
        out: dir.join("a.json"),
        ..spec.stage_spec(0)
    };
    let second = TrainSpec {
        init: Some(dir.join("a.json")),
        out: dir.join("b.json"),
        ..spec.stage_spec(1)
    };
    for run in [&first, &second] {
        match train(run, &TrainControl::default(), &mut ()).unwrap() {
            TrainOutcome::Finished(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let by_hand = FlowModel::load(dir.join("b.json")).unwrap();
    let staged = FlowModel::load(spec.stage_model(1)).unwrap();
    assert_eq!(by_hand.params(), staged.params());
    // And the second stage did start from the first: from scratch it ends elsewhere.
    let fresh = TrainSpec {
        init: None,
        out: dir.join("fresh.json"),
        ..spec.stage_spec(1)
    };
    train(&fresh, &TrainControl::default(), &mut ()).unwrap();
    assert_ne!(
        FlowModel::load(dir.join("fresh.json")).unwrap().params(),
        staged.params()
    );

    // The report on disk holds both stages.
    let text = std::fs::read_to_string(spec.out.join("curriculum.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["report"]["stages"].as_array().unwrap().len(), 2);
    assert_eq!(json["report"]["configs_seen"], serde_json::json!(64 * 70));
}

#[test]
fn a_stopped_curriculum_continues_to_the_same_model() {
    let dir = scratch("resume");
    let whole = two_stages(dir.join("whole"));
    finished(curriculum(&whole, &TrainControl::default(), &mut ()).unwrap());

    let spec = two_stages(dir.join("parts"));
    let stop = StopToken::new();
    let control = TrainControl {
        stop: &stop,
        ..TrainControl::default()
    };
    // Ask to stop after the 12th step of the second stage.
    let mut seen = 0;
    let asker = stop.clone();
    let outcome = curriculum(
        &spec,
        &control,
        &mut on_progress(|stage, done| {
            seen += 1;
            if stage == "stage 2: train" && done == 12 {
                asker.stop();
            }
        }),
    )
    .unwrap();
    match outcome {
        CurriculumOutcome::Stopped {
            stage,
            iteration,
            iterations,
            checkpoint,
        } => {
            assert_eq!((stage, iteration, iterations), (2, 12, 30));
            assert_eq!(checkpoint, spec.out.join("stage-2.checkpoint.json"));
            assert!(checkpoint.exists());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen, 40 + 12);
    let stage_one = std::fs::read(spec.stage_model(0)).unwrap();
    // Again: the first stage is kept, the second continues from step 12.
    let mut seen = Recorder::default();
    let control = TrainControl {
        stop: &StopToken::never(),
        ..control
    };
    let report = finished(curriculum(&spec, &control, &mut seen).unwrap());
    let stages: Vec<&str> = seen.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["stage 2: train"]);
    let done: Vec<u64> = seen.stages[0].progress.iter().map(|p| p.0).collect();
    assert_eq!(
        done,
        (12..=30).collect::<Vec<u64>>(),
        "resumed at 12, then 18 steps"
    );
    assert_eq!(std::fs::read(spec.stage_model(0)).unwrap(), stage_one);
    assert!(!spec.out.join("stage-2.checkpoint.json").exists());
    for k in 0..2 {
        assert_eq!(
            FlowModel::load(spec.stage_model(k)).unwrap().params(),
            FlowModel::load(whole.stage_model(k)).unwrap().params(),
            "stage {}",
            k + 1
        );
    }
    // The kept stage is reported from its model file.
    assert_eq!(
        report.stages[0],
        latflow::run::trained_model_report(&spec.stage_model(0)).unwrap()
    );
}

#[test]
fn curricula_that_cannot_run_are_refused_before_training() {
    let dir = scratch("refused");
    // Dense nets depend on |Λ|: the seed recipe cannot go from L = 4 to L = 6.
    let dense = CurriculumSpec {
        recipe: RecipeSpec {
            kind: RecipeKind::Seed,
            hidden: 8,
            affine_blocks: 1,
            ..RecipeSpec::default()
        },
        ..two_stages(dir.join("dense"))
    };
    match curriculum(&dense, &TrainControl::default(), &mut ()) {
        Err(Error::Incompatible(why)) => {
            assert!(why.contains("stage 2") && why.contains("stage 1"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!dense.out.join("stage-1.json").exists(), "nothing trained");
    // The same recipe carries over to other couplings on the same lattice.
    let couplings = CurriculumSpec {
        stages: vec![stage(4, 0.3, 5, 0.01, 1), stage(4, 0.45, 5, 0.003, 1)],
        ..dense.clone()
    };
    couplings.validate().unwrap();

    let empty = CurriculumSpec {
        stages: Vec::new(),
        ..two_stages(dir.join("empty"))
    };
    match empty.validate() {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "stage"),
        other => panic!("{other:?}"),
    }
    // A bad setting names its stage.
    let mut bad = two_stages(dir.join("bad"));
    bad.stages[1].train.batch = 0;
    match bad.validate() {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, "stage.2.train.batch"),
        other => panic!("{other:?}"),
    }

    // A model of another run in a stage's place is not taken for the stage's.
    let spec = two_stages(dir.join("other"));
    finished(curriculum(&spec, &TrainControl::default(), &mut ()).unwrap());
    let mut changed = spec.clone();
    changed.stages[0].train.lr = 0.02;
    match curriculum(&changed, &TrainControl::default(), &mut ()) {
        Err(Error::Incompatible(why)) => assert!(why.contains("stage 1"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_curriculum_runcard_reads_and_names_its_errors() {
    let dir = scratch("card");
    let path = dir.join("c.toml");
    let card = |extra: &str| {
        std::fs::write(
            &path,
            format!(
                "out = \"out\"\n[recipe]\nkind = \"conv\"\nchannels = 4\n\n\
                 [[stage]]\nlattice = [4, 4]\naction = {{ form = \"phi4\", beta = 0.45, lambda = 0.5 }}\n\
                 train = {{ batch = 32, iterations = 5{extra} }}\n\n\
                 [[stage]]\nlattice = [6, 6]\n[stage.action]\nform = \"phi4\"\nbeta = 0.537\nlambda = 0.5\n\
                 [stage.train]\nbatch = 32\niterations = 5\nuntil_acceptance = 0.5\n"
            ),
        )
        .unwrap();
        CurriculumSpec::from_toml_file(&path)
    };
    let spec = card("").unwrap();
    assert_eq!(spec.stages.len(), 2);
    assert_eq!(spec.stages[1].lattice, Lattice::hypercubic(2, 6).unwrap());
    assert_eq!(spec.stages[1].train.until_acceptance, Some(0.5));
    assert_eq!(spec.stage_spec(1).init, Some(spec.stage_model(0)));
    // A refused key is named as the runcard writes it, with its line.
    match card(", lr = -1.0") {
        Err(e @ Error::InvalidParameter { .. }) => {
            let message = e.to_string();
            assert!(message.contains("`stage.1.train.lr`"), "{message}");
            assert!(message.contains("(line 9 of runcard"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match card(", speed = 2") {
        Err(Error::Format { reason, .. }) => assert!(reason.contains("speed"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
