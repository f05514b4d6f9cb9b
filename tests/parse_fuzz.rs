//! Fuzz targets of everything latflow parses: sampling and training runcards (TOML), model
//! files and training checkpoints (JSON). Each target feeds arbitrary or mutated input —
//! truncations, byte flips, dropped, duplicated, retyped and unknown keys, numbers replaced
//! by huge, negative, fractional or non-finite values, arrays resized, network widths of
//! 10⁹ — and asserts that parsing and validation return (an error is fine) without a panic
//! or an abort on allocation, and that what is accepted round-trips. Every target has a
//! fixed case budget and seed; failing cases are kept in
//! `proptest-regressions/parse_fuzz.txt`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::scratch_file;

use latflow::action::FreeField;
use latflow::flow::{FlowConfig, FlowModel, TransformKind};
use latflow::limits::{self, Limits};
use latflow::run::{ActionSpec, RecipeSpec, SampleSpec, TrainSpec};
use latflow::testing::strategies::proptest_config;
use latflow::train::{TrainConfig, Trainer};
use latflow::{Error, Lattice};
use proptest::prelude::*;
use serde_json::Value as Json;

/// `cases` cases from the fixed seed, failures kept in this file's regression list.
fn config(cases: u32) -> ProptestConfig {
    proptest_config(cases, "proptest-regressions/parse_fuzz.txt")
}

/// Every target runs with a 256 MiB memory budget, so that sizes the checks let through
/// stay small on any machine.
fn fixed_limits() {
    limits::set_limits(Some(Limits {
        memory_bytes: 256 << 20,
        max_site_updates: limits::MAX_SITE_UPDATES,
        max_multiply_adds: limits::MAX_MULTIPLY_ADDS,
    }));
}

// ---------------------------------------------------------------------------------------
// Mutations of structured documents (TOML and JSON alike, through serde_json values).

/// One step of a path into a document.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every path to a value in `doc` (the root excluded), depth first.
fn paths(doc: &Json) -> Vec<Vec<Step>> {
    fn walk(v: &Json, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        match v {
            Json::Object(map) => {
                for (k, child) in map {
                    prefix.push(Step::Key(k.clone()));
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            Json::Array(items) => {
                // Long arrays (parameters): a few entries stand for all.
                for (i, child) in items.iter().enumerate().take(4) {
                    prefix.push(Step::Index(i));
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &mut out);
    out
}

fn get_mut<'a>(doc: &'a mut Json, path: &[Step]) -> Option<&'a mut Json> {
    path.iter().try_fold(doc, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// Replacement values: huge, negative, fractional, non-finite-like, retyped.
fn replacement(choice: usize) -> Json {
    let values = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(1),
        serde_json::json!(1_000_000_000u64),
        serde_json::json!(1_000_000_000_000_000_000u64),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(0.5),
        serde_json::json!(-2.5),
        serde_json::json!(1e300),
        serde_json::json!(-1e-300),
        serde_json::json!("NaN"),
        serde_json::json!("inf"),
        serde_json::json!("hmc*99999999999"),
        serde_json::json!(true),
        serde_json::json!([]),
        serde_json::json!([1_000_000_000u64]),
        serde_json::json!([
            2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
        ]),
        serde_json::json!({}),
        serde_json::json!({ "kind": "dense", "hidden": [1_000_000_000u64], "bias": true }),
        Json::Null,
    ];
    values[choice % values.len()].clone()
}

/// A structural edit of a document: the path is chosen as `at` modulo the number of paths.
#[derive(Clone, Debug)]
enum Edit {
    /// Drops the value (a key of a table, an entry of an array).
    Remove { at: usize },
    /// Replaces the value by [`replacement`]`(choice)`.
    Replace { at: usize, choice: usize },
    /// Adds an unknown key next to the value (in its table).
    Unknown { at: usize },
    /// Resizes the array at or above the path to `len` (repeating its last entry).
    Resize { at: usize, len: usize },
    /// Replaces a number (chosen as `at` modulo the number of numbers) by an extreme
    /// number of its own type: [`extreme_integer`] or [`extreme_float`] `(choice)`.
    Number { at: usize, choice: usize },
    /// Sets every network width (`hidden`, `channels`) to 10⁹ and every kernel to 10⁹ + 1.
    HugeWidths,
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(|at| Edit::Remove { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, choice)| Edit::Replace { at, choice }),
        any::<usize>().prop_map(|at| Edit::Unknown { at }),
        (
            any::<usize>(),
            prop_oneof![Just(0usize), Just(1), Just(3), Just(100), Just(5000)]
        )
            .prop_map(|(at, len)| Edit::Resize { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, choice)| Edit::Number { at, choice }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, choice)| Edit::Number { at, choice }),
        Just(Edit::HugeWidths),
    ]
}

fn apply(doc: &mut Json, edit: &Edit) {
    let all = paths(doc);
    if all.is_empty() {
        return;
    }
    let pick = |at: usize| all[at % all.len()].clone();
    match *edit {
        Edit::Remove { at } => {
            let path = pick(at);
            let (last, parent) = path.split_last().unwrap();
            if let Some(parent) = get_mut(doc, parent) {
                match (parent, last) {
                    (Json::Object(map), Step::Key(k)) => {
                        map.remove(k);
                    }
                    (Json::Array(items), Step::Index(i)) if *i < items.len() => {
                        items.remove(*i);
                    }
                    _ => {}
                }
            }
        }
        Edit::Replace { at, choice } => {
            if let Some(v) = get_mut(doc, &pick(at)) {
                *v = replacement(choice);
            }
        }
        Edit::Unknown { at } => {
            let path = pick(at);
            if let Some(Json::Object(map)) = get_mut(doc, &path[..path.len() - 1]) {
                map.insert("unexpected_key".into(), serde_json::json!(7));
            }
        }
        Edit::Resize { at, len } => {
            let path = pick(at);
            for end in (0..=path.len()).rev() {
                if let Some(Json::Array(items)) = get_mut(doc, &path[..end]) {
                    let fill = items.last().cloned().unwrap_or(serde_json::json!(0));
                    items.resize(len, fill);
                    break;
                }
            }
        }
        Edit::Number { at, choice } => {
            let numbers: Vec<_> = all
                .iter()
                .filter(|p| get_mut(doc, p).is_some_and(|v| v.is_number()))
                .cloned()
                .collect();
            if numbers.is_empty() {
                return;
            }
            let v = get_mut(doc, &numbers[at % numbers.len()]).unwrap();
            *v = if v.is_f64() {
                extreme_float(choice)
            } else {
                extreme_integer(choice)
            };
        }
        Edit::HugeWidths => huge_widths(doc),
    }
}

/// Integers that break counts: zero, small, huge, the largest a TOML file holds.
fn extreme_integer(choice: usize) -> Json {
    let values: [i64; 10] = [
        0,
        1,
        2,
        -1,
        1_000_000_000,
        1_000_000_000_000,
        1_000_000_000_000_000,
        i64::MAX,
        i64::MIN,
        4_294_967_296,
    ];
    serde_json::json!(values[choice % values.len()])
}

/// Floats that break parameters; NaN and infinities as the [`NAN`], [`INF`] and
/// [`NEG_INF`] markers, which [`mutate_toml`] writes as TOML's `nan`, `inf` and `-inf`
/// (and which stay strings, so type errors, in JSON).
fn extreme_float(choice: usize) -> Json {
    let values = [
        serde_json::json!(0.0),
        serde_json::json!(-1.0),
        serde_json::json!(1e-300),
        serde_json::json!(1e300),
        serde_json::json!(0.5),
        serde_json::json!(2.0),
        serde_json::json!(NAN),
        serde_json::json!(INF),
        serde_json::json!(NEG_INF),
    ];
    values[choice % values.len()].clone()
}

const NAN: &str = "__nan__";
const INF: &str = "__inf__";
const NEG_INF: &str = "__neg_inf__";

fn huge_widths(doc: &mut Json) {
    match doc {
        Json::Object(map) => {
            for (k, v) in map.iter_mut() {
                match k.as_str() {
                    "hidden" | "channels" if v.is_array() => {
                        *v = serde_json::json!([1_000_000_000u64])
                    }
                    "hidden" | "channels" | "affine_blocks" | "depth" => {
                        *v = serde_json::json!(1_000_000_000u64)
                    }
                    "kernel" if v.is_u64() => *v = serde_json::json!(1_000_000_001u64),
                    _ => huge_widths(v),
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(huge_widths),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Runcards.

const SAMPLE_RUNCARD: &str = include_str!("../examples/runcard.toml");

/// The example runcard with a flow kernel, every kernel setting given.
const FLOW_RUNCARD: &str = r#"
lattice = [6, 6]
n = 500
therm = 10
thin = 2
seed = 3
model = "model.json"

[action]
form = "phi4-quartic"
m2 = -4.0
lambda = 8.0

[kernel]
kind = "mix(0.5: flow, 0.5: local*2)+hmc"
step_size = 0.5
sweep_order = "checkerboard"
tau = 1.5
md_steps = 12
integrator = "omelyan"
fixed_length = true
flow_batch = 64
"#;

fn train_runcard() -> String {
    let spec = TrainSpec {
        lattice: Lattice::new(&[4, 4]).unwrap(),
        action: ActionSpec::Free { mass: 0.7 },
        recipe: RecipeSpec::default(),
        train: TrainConfig::new(32, 10, 0.01),
        anneal: Some(latflow::run::AnnealSpec {
            start: 0.5,
            over: 0.5,
        }),
        snf: None,
        init: None,
        out: PathBuf::from("model.json"),
    };
    toml::to_string(&spec).unwrap()
}

/// Parses and validates a sampling runcard; one accepted round-trips through TOML.
fn check_sample_runcard(text: &str) {
    let Ok(spec) = toml::from_str::<SampleSpec>(text) else {
        return;
    };
    if spec.validate().is_err() {
        return;
    }
    let again = toml::to_string(&spec).expect("an accepted runcard serialises");
    let back: SampleSpec = toml::from_str(&again).expect("a written runcard parses");
    back.validate().expect("a written runcard validates");
    assert_eq!(toml::to_string(&back).unwrap(), again);
}

/// Parses and validates a training runcard; one accepted round-trips through TOML.
fn check_train_runcard(text: &str) {
    let Ok(spec) = toml::from_str::<TrainSpec>(text) else {
        return;
    };
    if spec.validate().is_err() {
        return;
    }
    let again = toml::to_string(&spec).expect("an accepted runcard serialises");
    let back: TrainSpec = toml::from_str(&again).expect("a written runcard parses");
    back.validate().expect("a written runcard validates");
    assert_eq!(toml::to_string(&back).unwrap(), again);
}

/// A runcard mutated by `edits` (through its JSON form), written back as TOML; `None` when
/// the result is not expressible in TOML (e.g. a null).
fn mutate_toml(text: &str, edits: &[Edit]) -> Option<String> {
    let value: toml::Value = toml::from_str(text).unwrap();
    let mut doc = serde_json::to_value(&value).unwrap();
    for edit in edits {
        apply(&mut doc, edit);
    }
    let value: toml::Value = serde_json::from_value(doc).ok()?;
    let text = toml::to_string(&value).ok()?;
    Some(
        text.replace(&format!("\"{NAN}\""), "nan")
            .replace(&format!("\"{NEG_INF}\""), "-inf")
            .replace(&format!("\"{INF}\""), "inf"),
    )
}

#[test]
fn the_base_runcards_are_accepted_and_round_trip() {
    fixed_limits();
    for text in [SAMPLE_RUNCARD, FLOW_RUNCARD] {
        toml::from_str::<SampleSpec>(text)
            .unwrap()
            .validate()
            .unwrap();
        check_sample_runcard(text);
    }
    let train = train_runcard();
    toml::from_str::<TrainSpec>(&train)
        .unwrap()
        .validate()
        .unwrap();
    check_train_runcard(&train);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_text_is_no_runcard_to_panic_on(text in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        fixed_limits();
        check_sample_runcard(&text);
        check_train_runcard(&text);
        let lossy = String::from_utf8_lossy(&bytes);
        check_sample_runcard(&lossy);
        check_train_runcard(&lossy);
        // The file reader agrees with parsing and validating the text.
        let path = scratch_file("arbitrary.toml");
        std::fs::write(&path, &bytes).unwrap();
        let from_file = SampleSpec::from_toml_file(&path);
        let direct = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| toml::from_str::<SampleSpec>(t).ok())
            .map(|s| s.validate().is_ok());
        prop_assert_eq!(from_file.is_ok(), direct == Some(true));
    }

    #[test]
    fn mutated_sample_runcards_are_refused_or_round_trip(
        flow in any::<bool>(),
        edits in proptest::collection::vec(arb_edit(), 1..4),
        duplicate in any::<bool>(),
        cut in any::<usize>(),
    ) {
        fixed_limits();
        let base = if flow { FLOW_RUNCARD } else { SAMPLE_RUNCARD };
        if let Some(text) = mutate_toml(base, &edits) {
            check_sample_runcard(&text);
            // A key given twice is a parse error, never a panic.
            if duplicate {
                let doubled = format!("n = 7\nseed = 1\n{text}");
                check_sample_runcard(&doubled);
            }
            let cut = cut % (text.len() + 1);
            if text.is_char_boundary(cut) {
                check_sample_runcard(&text[..cut]);
            }
        }
    }

    #[test]
    fn mutated_train_runcards_are_refused_or_round_trip(
        edits in proptest::collection::vec(arb_edit(), 1..4),
        cut in any::<usize>(),
    ) {
        fixed_limits();
        if let Some(text) = mutate_toml(&train_runcard(), &edits) {
            check_train_runcard(&text);
            let cut = cut % (text.len() + 1);
            if text.is_char_boundary(cut) {
                check_train_runcard(&text[..cut]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Model files and checkpoints.

/// Small valid model files of three kinds (dense real NVP, the seed recipe with a spline,
/// a convolutional flow), as text.
fn model_texts() -> &'static [String] {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let lattice = Lattice::new(&[4, 4]).unwrap();
        let configs = [
            FlowConfig::real_nvp(1, &[4]),
            FlowConfig::seed(4, 1, 4).unwrap(),
            FlowConfig::convolutional(TransformKind::Z2Affine, 1, &[2], 3),
        ];
        configs
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let mut model = FlowModel::new(config, &lattice, 5).unwrap();
                model
                    .metadata_mut()
                    .insert("note".into(), serde_json::json!({ "index": i }));
                let path = scratch_file(&format!("base-model-{i}.json"));
                model.save(&path).unwrap();
                std::fs::read_to_string(&path).unwrap()
            })
            .collect()
    })
}

fn free_field() -> Arc<FreeField> {
    Arc::new(FreeField::new(Lattice::new(&[4, 4]).unwrap(), 0.5).unwrap())
}

/// A checkpoint of a small trainer after two steps, as text.
fn checkpoint_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let lattice = Lattice::new(&[4, 4]).unwrap();
        let model = FlowModel::new(&FlowConfig::real_nvp(1, &[4]), &lattice, 5).unwrap();
        let mut config = TrainConfig::new(8, 6, 0.01);
        config.chunks = 2;
        config.eval_samples = 100;
        let mut trainer = Trainer::new(model, free_field(), config).unwrap();
        trainer.step().unwrap();
        trainer.step().unwrap();
        let path = scratch_file("base-checkpoint.json");
        trainer.save_checkpoint(&path).unwrap();
        std::fs::read_to_string(&path).unwrap()
    })
}

/// Loads a model file; one accepted is consistent and round-trips through a saved copy.
fn check_model_file(path: &Path, copy: &Path) {
    let Ok(model) = FlowModel::load(path) else {
        return;
    };
    assert_eq!(model.params().len(), model.n_params());
    assert!(model.params().iter().all(|p| p.is_finite()));
    model.save(copy).unwrap();
    let back = FlowModel::load(copy).expect("a saved model loads");
    assert_eq!(back.params(), model.params());
    assert_eq!(back.config(), model.config());
}

/// Resumes a trainer from a checkpoint; one accepted is consistent and round-trips.
fn check_checkpoint(path: &Path, copy: &Path) {
    let Ok(trainer) = Trainer::resume(path, free_field()) else {
        return;
    };
    assert!(trainer.iteration() <= trainer.config().iterations);
    trainer.save_checkpoint(copy).unwrap();
    let back = Trainer::resume(copy, free_field()).expect("a saved checkpoint resumes");
    assert_eq!(back.iteration(), trainer.iteration());
    assert_eq!(back.model().params(), trainer.model().params());
}

/// Byte-level damage: a truncation at `cut` or a byte set to `byte` at `at`.
fn damage(text: &str, truncate: bool, at: usize, byte: u8) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    let at = at % bytes.len();
    if truncate {
        bytes.truncate(at);
    } else {
        bytes[at] = byte;
    }
    bytes
}

/// Structural damage through the JSON value.
fn mutate_json(text: &str, edits: &[Edit]) -> String {
    let mut doc: Json = serde_json::from_str(text).unwrap();
    for edit in edits {
        apply(&mut doc, edit);
    }
    serde_json::to_string(&doc).unwrap()
}

#[test]
fn the_base_files_load_and_round_trip() {
    fixed_limits();
    for (i, text) in model_texts().iter().enumerate() {
        let path = scratch_file(&format!("model-base-check-{i}.json"));
        std::fs::write(&path, text).unwrap();
        FlowModel::load(&path).unwrap();
        check_model_file(&path, &scratch_file(&format!("model-base-copy-{i}.json")));
    }
    let path = scratch_file("checkpoint-base-check.json");
    std::fs::write(&path, checkpoint_text()).unwrap();
    Trainer::resume(&path, free_field()).unwrap();
    check_checkpoint(&path, &scratch_file("checkpoint-base-copy.json"));
}

/// Widths of 10⁹ in a model file are refused by the size check, not by an abort.
#[test]
fn model_files_claiming_huge_widths_are_refused() {
    fixed_limits();
    for (i, text) in model_texts().iter().enumerate() {
        let path = scratch_file(&format!("model-huge-{i}.json"));
        std::fs::write(&path, mutate_json(text, &[Edit::HugeWidths])).unwrap();
        match FlowModel::load(&path) {
            // A fault of the file, naming the file and the entry.
            Err(Error::Format { what, reason }) => {
                assert!(what.contains("model file"), "{what}");
                assert!(
                    ["`hidden`", "`channels`", "`kernel`"]
                        .iter()
                        .any(|n| reason.starts_with(n)),
                    "{reason}"
                );
                assert!(reason.contains("would need at least"), "{reason}");
            }
            other => panic!("expected a size refusal, got {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn damaged_model_files_are_refused_or_consistent(
        which in 0usize..3,
        truncate in any::<bool>(),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        fixed_limits();
        let text = &model_texts()[which];
        let path = scratch_file("model-damaged.json");
        std::fs::write(&path, damage(text, truncate, at, byte)).unwrap();
        check_model_file(&path, &scratch_file("model-damaged-copy.json"));
    }

    #[test]
    fn mutated_model_files_are_refused_or_consistent(
        which in 0usize..3,
        edits in proptest::collection::vec(arb_edit(), 1..4),
    ) {
        fixed_limits();
        let path = scratch_file("model-mutated.json");
        std::fs::write(&path, mutate_json(&model_texts()[which], &edits)).unwrap();
        check_model_file(&path, &scratch_file("model-mutated-copy.json"));
    }

    #[test]
    fn damaged_checkpoints_are_refused_or_consistent(
        truncate in any::<bool>(),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        fixed_limits();
        let path = scratch_file("checkpoint-damaged.json");
        std::fs::write(&path, damage(checkpoint_text(), truncate, at, byte)).unwrap();
        check_checkpoint(&path, &scratch_file("checkpoint-damaged-copy.json"));
    }

    #[test]
    fn mutated_checkpoints_are_refused_or_consistent(
        edits in proptest::collection::vec(arb_edit(), 1..4),
    ) {
        fixed_limits();
        let path = scratch_file("checkpoint-mutated.json");
        std::fs::write(&path, mutate_json(checkpoint_text(), &edits)).unwrap();
        check_checkpoint(&path, &scratch_file("checkpoint-mutated-copy.json"));
    }
}
