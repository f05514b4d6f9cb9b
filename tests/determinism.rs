//! The same seed gives the same numbers however a run is grouped into blocks and however
//! busy the machine is: for every kernel the command line offers (local, hmc, flow, flowhmc,
//! noneq) and their compositions, a chain run in blocks of 1 step, of 13 steps, in automatic
//! blocks, and in automatic blocks with every step slowed down, makes bit-identical moves,
//! measurements and final states; a whole `sample` run alone and beside busy threads gives
//! the same report.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use latflow::action::Phi4;
use latflow::flow::{FlowConfig, FlowModel};
use latflow::kernel::{BlockSize, Chain, KernelExpr, MoveRows, RunPlan};
use latflow::observable::Measurements;
use latflow::run::{
    ActionSpec, KernelSpec, NoneqStart, Registry, SampleSpec, replica_seed, sample, sample_data,
};
use latflow::train::{TrainConfig, Trainer};
use latflow::{Action, Lattice, MoveInfo, Proposal, SimRng, State, StopToken};

const EXPRESSIONS: [&str; 14] = [
    "local",
    "hmc",
    "flow",
    "flow+local",
    "flow+hmc",
    "flow+local*2+hmc",
    "mix(0.3: flow, 0.7: hmc)",
    "(flow+local)*2+hmc",
    "local+local",
    "mix(1: local, 1: hmc)+flow",
    "flowhmc",
    "flowhmc+local",
    "noneq",
    "noneq+local",
];

fn action() -> Arc<Phi4> {
    Arc::new(Phi4::hopping(Lattice::new(&[4, 4]).unwrap(), 0.5, 0.5).unwrap())
}

/// A small seed-recipe flow, trained briefly (its acceptance is well inside (0, 1), so
/// both outcomes of every flow proposal occur).
fn model() -> Arc<FlowModel> {
    static MODEL: OnceLock<Arc<FlowModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let flow = FlowModel::new(&FlowConfig::seed(16, 1, 4).unwrap(), action().lattice(), 3)
                .unwrap();
            let mut trainer = Trainer::new(flow, action(), TrainConfig::new(64, 30, 0.01)).unwrap();
            trainer.train(&mut (), &StopToken::never()).unwrap();
            Arc::new(trainer.into_model())
        })
        .clone()
}

/// [`model`] saved as the scratch file `name` (removed when the returned guard is dropped),
/// recording the target it was trained for (φ⁴ at β = 0.5, λ = 0.5), as `sample` reads
/// model files; returns the file and the target.
fn model_file(name: &str) -> (common::ScratchFile, ActionSpec) {
    let path = common::scratch_file(name);
    let target = ActionSpec::Phi4 {
        beta: 0.5,
        lambda: 0.5,
    };
    let mut flow = (*model()).clone();
    flow.metadata_mut()
        .insert("action".into(), serde_json::to_value(&target).unwrap());
    flow.save(&*path).unwrap();
    (path, target)
}

/// A kernel that sleeps before every step of the kernel it wraps: the same moves, slower.
struct Slow(Box<dyn Proposal>);

impl Proposal for Slow {
    fn name(&self) -> String {
        self.0.name()
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        std::thread::sleep(Duration::from_micros(300));
        self.0.step(state, rng, moves)
    }

    fn set_adapting(&mut self, on: bool) {
        self.0.set_adapting(on)
    }
}

/// Everything a run produced, as bits.
#[derive(Debug, PartialEq)]
struct Outcome {
    moves: Vec<[u64; 5]>,
    labels: Vec<String>,
    per_step: Vec<u32>,
    series: Vec<Vec<u64>>,
    state: Vec<u64>,
    action: u64,
}

fn run(expression: &str, block: BlockSize, slow: bool) -> Outcome {
    let action = action();
    let spec = KernelSpec {
        kind: KernelExpr::parse(expression).unwrap(),
        flow_batch: 37,
        md_steps: 4,
        // The test's model records no action to start a protocol from.
        noneq_start: Some(NoneqStart::Gaussian),
        ..KernelSpec::default()
    };
    let model = model();
    let kernel = spec.build(&action, Some(&model)).unwrap();
    let kernel: Box<dyn Proposal> = if slow { Box::new(Slow(kernel)) } else { kernel };
    let mut chain = Chain::new(kernel, State::zero(&*action), 11);
    let mut measurements = Measurements::new(action.lattice());
    let plan = RunPlan::new(300).therm(120).thin(2).block(block);
    let record = chain
        .run(&plan, &mut measurements, &mut (), &StopToken::never())
        .unwrap();
    assert_eq!(record.steps, 300);
    assert_eq!(measurements.len(), 150);
    let rows = MoveRows::from_moves(&record.moves);
    Outcome {
        moves: rows.rows.iter().map(|r| r.map(f64::to_bits)).collect(),
        labels: rows
            .labels
            .iter()
            .map(|(l, k)| format!("{l}:{k}"))
            .collect(),
        per_step: record.moves_per_step,
        series: measurements
            .names()
            .iter()
            .map(|n| {
                measurements
                    .series(n)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect(),
        state: chain.state().phi().iter().map(|x| x.to_bits()).collect(),
        action: chain.state().action().to_bits(),
    }
}

#[test]
fn blocks_never_change_a_run() {
    for expression in EXPRESSIONS {
        let reference = run(expression, BlockSize::Steps(1), false);
        assert!(!reference.moves.is_empty());
        for (block, slow) in [
            (BlockSize::Steps(13), false),
            (BlockSize::Steps(1000), false),
            (BlockSize::Auto, false),
            (BlockSize::Auto, true),
        ] {
            assert!(
                run(expression, block, slow) == reference,
                "{expression}: blocks {block:?} (slowed: {slow}) changed the run"
            );
        }
    }
}

#[test]
fn a_busy_machine_does_not_change_a_report() {
    let (path, target) = model_file("busy.json");
    let action = action();
    let spec = SampleSpec {
        lattice: action.lattice().clone(),
        action: target,
        kernel: KernelSpec {
            kind: KernelExpr::parse("flow+local+hmc").unwrap(),
            ..KernelSpec::default()
        },
        n: 4000,
        therm: 2000,
        thin: 1,
        seed: 3,
        model: Some(path.to_path_buf()),
        chains: 1,
    };
    let strip = |r: &latflow::run::SampleReport| {
        let mut v = serde_json::to_value(r).unwrap();
        v["seconds"] = serde_json::Value::Null;
        v
    };
    let alone = strip(&sample(&spec, &mut (), &StopToken::never()).unwrap());
    let busy = AtomicBool::new(true);
    let beside = std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let mut x = 0u64;
                while busy.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        let report = sample(&spec, &mut (), &StopToken::never()).unwrap();
        busy.store(false, Ordering::Relaxed);
        report
    });
    assert_eq!(strip(&beside), alone);
}

/// An ensemble of chains gives the same report whatever the thread count: the batched
/// flow passes split rows over threads, never change them.
#[test]
fn an_ensemble_does_not_depend_on_the_thread_count() {
    let (path, target) = model_file("ensemble-threads.json");
    let spec = SampleSpec {
        lattice: action().lattice().clone(),
        action: target,
        kernel: KernelSpec {
            kind: KernelExpr::parse("flow+local+mix(1: flow, 1: hmc)").unwrap(),
            flow_batch: 50,
            md_steps: 4,
            ..KernelSpec::default()
        },
        n: 1500,
        therm: 300,
        thin: 1,
        seed: 9,
        model: Some(path.to_path_buf()),
        chains: 7,
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let report = pool
            .install(|| sample(&spec, &mut (), &StopToken::never()))
            .unwrap();
        let mut v = serde_json::to_value(&report).unwrap();
        v["seconds"] = serde_json::Value::Null;
        v
    };
    let one = run(1);
    assert_eq!(one["replicas"], 7);
    assert_eq!(run(2), one);
    assert_eq!(run(3), one);
}

/// Each chain of an ensemble makes exactly the moves and measurements it makes alone with
/// its replica seed: the chains' flow draws share one set of pass buffers (for `flow` and
/// for a flow-started `noneq`) without one chain's batch touching another's.
#[test]
fn each_chain_of_an_ensemble_is_the_chain_alone() {
    let (path, target) = model_file("ensemble-alone.json");
    let spec = |chains: usize, seed: u64| SampleSpec {
        lattice: action().lattice().clone(),
        action: target.clone(),
        kernel: KernelSpec {
            kind: KernelExpr::parse("flow+local+noneq").unwrap(),
            flow_batch: 7,
            noneq_start: Some(NoneqStart::Flow),
            ..KernelSpec::default()
        },
        n: 200,
        therm: 20,
        thin: 1,
        seed,
        model: Some(path.to_path_buf()),
        chains,
    };
    let run = |spec: SampleSpec| {
        sample_data(&spec, &Registry::new(), &mut (), &StopToken::never(), 0).unwrap()
    };
    let together = run(spec(3, 11));
    assert_eq!(together.chains.len(), 3);
    for (j, chain) in together.chains.iter().enumerate() {
        let alone = run(spec(1, replica_seed(11, j)));
        let alone = &alone.chains[0];
        // Both flow kernels moved, so the shared buffers were used by every chain.
        for kind in ["flow", "noneq"] {
            assert!(
                chain.record.acceptance_of(kind) > 0.0,
                "chain {j}: {kind} never accepted"
            );
        }
        assert_eq!(chain.record.moves, alone.record.moves, "chain {j}: moves");
        for name in chain.measurements.names() {
            assert_eq!(
                chain.measurements.series(name),
                alone.measurements.series(name),
                "chain {j}: {name}"
            );
        }
    }
}
