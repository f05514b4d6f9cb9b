//! Helpers shared by the integration tests: observers that record what the library reports,
//! the `latflow` binary with its output, scratch folders, model files, and the small runs
//! several test files make (a chain from the zero field, a training run to its end, a flow
//! with random parameters, a convolutional recipe), and a checked CSV reader.
//!
//! Each test file that uses them starts with `mod common;`; a helper a file does not use
//! costs it nothing (dead code is allowed here).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;

use latflow::flow::{FlowConfig, FlowModel};
use latflow::kernel::{Chain, ChainRecord};
use latflow::observable::{
    ActionDensity, FieldSquared, Magnetisation, MagnetisationSquared, Measurements, Observable,
    Summary,
};
use latflow::run::{RecipeKind, RecipeSpec, TrainControl, TrainOutcome, TrainReport, TrainSpec};
use latflow::stats::{GammaEstimate, gamma_method, gamma_method_derived};
use latflow::{Action, Lattice, Metric, Observer, Proposal, State, rng_from_seed};
use rand::RngExt;

/// One stage an observer saw: its name, size and unit, every progress report with its
/// metrics, and how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeenStage {
    pub name: String,
    pub total: u64,
    pub unit: String,
    pub progress: Vec<(u64, Vec<(String, f64)>)>,
    pub outcome: Option<String>,
}

/// An observer that records every stage.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub stages: Vec<SeenStage>,
}

impl Recorder {
    /// The stages whose name ends with `suffix`.
    pub fn named<'a>(&'a self, suffix: &'a str) -> impl Iterator<Item = &'a SeenStage> + 'a {
        self.stages.iter().filter(move |s| s.name.ends_with(suffix))
    }

    /// The values of metric `name` across the stage's progress reports, in order.
    pub fn metric(stage: &SeenStage, name: &str) -> Vec<f64> {
        stage
            .progress
            .iter()
            .flat_map(|(_, m)| m.iter().filter(|(n, _)| n == name).map(|(_, v)| *v))
            .collect()
    }
}

impl Observer for Recorder {
    fn begin(&mut self, stage: &str, total: u64, unit: &str) {
        self.stages.push(SeenStage {
            name: stage.to_string(),
            total,
            unit: unit.to_string(),
            ..SeenStage::default()
        });
    }

    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        if let Some(stage) = self.stages.last_mut() {
            stage.progress.push((
                done,
                metrics
                    .iter()
                    .map(|m| (m.name.to_string(), m.value))
                    .collect(),
            ));
        }
    }

    fn end(&mut self, outcome: &str) {
        if let Some(stage) = self.stages.last_mut() {
            stage.outcome = Some(outcome.to_string());
        }
    }
}

/// An observer that calls `f(stage, done)` at every progress report.
pub struct OnProgress<F> {
    stage: String,
    f: F,
}

/// An observer that calls `f(stage, done)` at every progress report.
pub fn on_progress<F: FnMut(&str, u64)>(f: F) -> OnProgress<F> {
    OnProgress {
        stage: String::new(),
        f,
    }
}

impl<F: FnMut(&str, u64)> Observer for OnProgress<F> {
    fn begin(&mut self, stage: &str, _total: u64, _unit: &str) {
        self.stage = stage.to_string();
    }

    fn progress(&mut self, done: u64, _metrics: &[Metric<'_>]) {
        (self.f)(&self.stage, done);
    }
}

/// An observer that keeps every training step it is shown (stages named `… train`).
#[derive(Default)]
pub struct Steps(pub Vec<latflow::train::StepMetrics>);

impl Observer for Steps {
    fn progress(&mut self, done: u64, metrics: &[Metric<'_>]) {
        // A resumed run first reports where it starts, with no metrics.
        if let Some(step) = latflow::train::StepMetrics::from_metrics(done, metrics) {
            self.0.push(step);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The `latflow` binary.

/// The `latflow` binary of this build, ready for its arguments.
pub fn latflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latflow"))
}

/// Runs `latflow ARGS` to its end and returns what it printed and its exit status.
pub fn run_latflow(args: &[&str]) -> Output {
    latflow()
        .args(args)
        .output()
        .expect("the latflow binary runs")
}

/// Checks that a finished run succeeded; otherwise fails showing its status, stdout and
/// stderr.
pub fn assert_success(output: &Output) -> &Output {
    assert!(
        output.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `latflow sample` on a chain of 10⁷ steps at L = 8 (minutes of work) that writes
/// its report to `report`, with progress lines on its piped stderr: for tests that stop it.
pub fn spawn_long_sample(report: &Path) -> Child {
    latflow()
        .args([
            "sample",
            "--lattice",
            "8x8",
            "--beta",
            "0.5",
            "--lambda",
            "0.5",
            "--n",
            "10000000",
            "--therm",
            "100",
            "--progress-interval",
            "0",
        ])
        .arg("--out")
        .arg(report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the latflow binary starts")
}

/// Sends the signal `name` (`TERM`, `INT`, …) to a running child process.
pub fn send_signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The flow parameters stored in a model or checkpoint file.
pub fn model_params(path: &Path) -> Vec<f32> {
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).expect("a model file");
    serde_json::from_value(file["params"].clone()).expect("the parameters of a model file")
}

// ---------------------------------------------------------------------------------------
// Scratch folders, unique to the test binary, the process and the test.

/// The name of the running test binary (`study` for tests/study.rs; cargo builds it as
/// `study-HASH`).
fn test_binary_name() -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("tests");
    stem.rsplit_once('-')
        .map_or(stem, |(name, _hash)| name)
        .to_string()
}

/// A fresh empty folder for one test: `latflow-<test binary>-<tag>-<process id>` under the
/// system's temporary folder (whatever an earlier run left there is removed first), removed
/// again when the returned guard is dropped, unless the test is failing (its files are then
/// kept to look at). Tags are unique within a test file.
pub fn scratch(tag: &str) -> latflow::testing::TempDir {
    latflow::testing::TempDir::new(&format!(
        "latflow-{}-{tag}-{}",
        test_binary_name(),
        std::process::id()
    ))
}

/// The path of file `name` in a fresh folder of its own, `latflow-<test binary>-<process
/// id>-<name>`, removed with whatever was written there (e.g. `m.train.csv` beside
/// `m.json`) when the returned guard is dropped; a failing test's files are kept.
pub fn scratch_file(name: &str) -> ScratchFile {
    let dir = latflow::testing::TempDir::new(&format!(
        "latflow-{}-{}-{name}",
        test_binary_name(),
        std::process::id()
    ));
    let path = dir.join(name);
    ScratchFile { path, _dir: dir }
}

/// A file in a scratch folder of its own ([`scratch_file`]), used as the [`Path`] it is.
pub struct ScratchFile {
    path: PathBuf,
    _dir: latflow::testing::TempDir,
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

// ---------------------------------------------------------------------------------------
// Runs several test files make.

/// Runs `kernel` on `action` from the zero field: `therm` steps, then `n` measured steps;
/// the chain's record and the summary of the φ⁴ observables.
pub fn run_from_zero<K: Proposal, A: Action + ?Sized>(
    kernel: K,
    action: &A,
    seed: u64,
    therm: usize,
    n: usize,
) -> (ChainRecord, Summary) {
    let mut chain = Chain::new(kernel, State::zero(action), seed);
    chain.thermalise(therm);
    let mut m = Measurements::new(action.lattice());
    let record = chain.run_with(n, 1, |s| m.record(s.phi())).unwrap();
    (record, m.summary().unwrap())
}

/// A chain of `kernel` from the zero field: `therm` steps, then `n` measured with
/// [`field_observables`].
pub fn run_measured<K: Proposal, A: Action + 'static>(
    kernel: K,
    action: &Arc<A>,
    seed: u64,
    therm: usize,
    n: usize,
) -> ChainRecord {
    let mut chain = Chain::new(kernel, State::zero(&**action), seed);
    chain.thermalise(therm);
    chain
        .run_observables(n, 1, &mut field_observables(action))
        .unwrap()
}

/// Fails unless the ⟨φ²⟩, χ and S/|Λ| of `record` agree with `reference` within 4σ.
pub fn assert_agrees_with(
    record: &ChainRecord,
    reference: &[GammaEstimate; 3],
    volume: usize,
    name: &str,
) {
    for ((a, b), what) in
        field_estimates(record, volume)
            .iter()
            .zip(reference)
            .zip(["⟨φ²⟩", "χ", "S/|Λ|"])
    {
        assert_agree(a, b, &format!("{name} {what}"));
    }
}

/// Trains as `spec` says, reporting to `observer`, and returns the report of the finished
/// run (nothing asks it to stop).
pub fn train_to_the_end(spec: &TrainSpec, observer: &mut dyn Observer) -> TrainReport {
    match latflow::run::train(spec, &TrainControl::default(), observer).unwrap() {
        TrainOutcome::Finished(report) => report,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// A model of `config` on the L × L lattice with parameters uniform in (−scale, scale): far
/// from the identity.
pub fn random_model(config: &FlowConfig, l: usize, scale: f32, seed: u64) -> FlowModel {
    let mut model = FlowModel::new(config, &Lattice::new(&[l, l]).unwrap(), seed).unwrap();
    let mut rng = rng_from_seed(seed + 1000);
    for p in model.params_mut() {
        *p = rng.random_range(-scale..scale);
    }
    model
}

/// The convolutional recipe (two affine blocks of depth 1) with `channels` channels: a flow
/// whose size does not grow with L.
pub fn conv_recipe(channels: usize) -> RecipeSpec {
    RecipeSpec {
        kind: RecipeKind::Conv,
        affine_blocks: 2,
        channels,
        depth: 1,
        ..RecipeSpec::default()
    }
}

// ---------------------------------------------------------------------------------------
// Studies.

/// A study small enough to run in about a second: L = 4, a seed flow trained 30 steps,
/// the four samplers of the default study (HMC with a fixed trajectory), 3000 steps each.
pub const TINY_STUDY: &str = r#"
name = "tiny"
seed = 7
lattice = [4, 4]

[action]
form = "phi4"
beta = 0.5
lambda = 0.5

[flow]
checkpoint_every = 10

[flow.recipe]
kind = "seed"
hidden = 16
affine_blocks = 1
segments = 4

[flow.train]
batch = 64
iterations = 30
lr = 0.01
eval_every = 10
eval_samples = 500

[measure]
n = 3000
therm = 200
saved_configs = 50

[[sampler]]
name = "flow"
kernel = "flow"

[[sampler]]
name = "flow+local"
kernel = "flow+local"

[[sampler]]
name = "hmc"
kernel = { kind = "hmc", tau = 1.0, md_steps = 5 }

[[sampler]]
name = "local"
kernel = "local"
"#;

/// Splits one CSV line into fields, honouring double quotes.
pub fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quote in {line}");
    fields.push(field);
    fields
}

/// The values of every `attribute="…"` in an HTML text, in order.
pub fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let pattern = format!("{attribute}=\"");
    html.match_indices(&pattern)
        .map(|(i, _)| {
            let rest = &html[i + pattern.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// Checks an npy file's magic, header and that its data length matches the shape; returns
/// the shape.
pub fn check_npy(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => panic!("{}: npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let item = if header.contains("'<f8'") || header.contains("'<u8'") {
        8
    } else if header.contains("'<u4'") {
        4
    } else {
        panic!("{}: unexpected dtype in {header}", path.display())
    };
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let count: usize = shape.iter().product();
    assert_eq!(
        bytes.len() - start - len,
        count * item,
        "{}: data length vs shape {shape:?}",
        path.display()
    );
    shape
}

// ---------------------------------------------------------------------------------------
// Exactness checks of chains.

/// m, m², φ² and S/|Λ|: the series [`field_estimates`] reads.
pub fn field_observables<A: Action + 'static>(action: &Arc<A>) -> Vec<Box<dyn Observable>> {
    vec![
        Box::new(Magnetisation),
        Box::new(MagnetisationSquared),
        Box::new(FieldSquared),
        Box::new(ActionDensity::new(action.clone())),
    ]
}

/// ⟨φ²⟩, χ = |Λ|(⟨m²⟩ − ⟨m⟩²) and S/|Λ| of a chain measured with [`field_observables`],
/// with their Γ-method errors.
pub fn field_estimates(record: &ChainRecord, volume: usize) -> [GammaEstimate; 3] {
    let series = |name: &str| record.series(name, 0).unwrap();
    let (m, m2) = (series("m"), series("m2"));
    let v = volume as f64;
    [
        gamma_method(&series("phi2")).unwrap(),
        gamma_method_derived(&[&m, &m2], |a| v * (a[1] - a[0] * a[0])).unwrap(),
        gamma_method(&series("action_density")).unwrap(),
    ]
}

/// Fails unless two estimates agree within 4σ of their combined error.
pub fn assert_agree(a: &GammaEstimate, b: &GammaEstimate, what: &str) {
    let sigma = (a.err * a.err + b.err * b.err).sqrt();
    assert!(
        (a.mean - b.mean).abs() < 4.0 * sigma,
        "{what}: {a} vs {b} (combined σ {sigma})"
    );
}

/// Fails unless an estimate is within 4σ of its exact value.
pub fn assert_within(est: &GammaEstimate, exact: f64, what: &str) {
    assert!(
        (est.mean - exact).abs() < 4.0 * est.err,
        "{what}: {est} vs exact {exact}"
    );
}

/// A CSV file with a header and rows of the same width whose non-empty fields after the
/// text columns are numbers; returns the header and the rows.
pub fn check_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("a header"));
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert!(!rows.is_empty(), "{} has no rows", path.display());
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{}: row {row:?}", path.display());
    }
    (header, rows)
}
