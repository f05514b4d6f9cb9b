//! A user action written outside the crate: φ⁶ theory in the hopping convention,
//!
//!     S = Σ_x [ −β Σ_μ φ_x φ_{x+e_μ} + φ_x² + λ (φ_x² − 1)² + g φ_x⁶ ],
//!
//! implemented through `latflow::Action` (action, force, local change) on the lattice's
//! neighbour tables, with a kernel of the user's own beside it: a global reflection
//! φ → −φ accepted by Metropolis. Both are registered by name in a `latflow::run::Registry`,
//! and a whole study runs on them exactly as on the built-in φ⁴ — local Metropolis, HMC with
//! its trajectory tuned by the pilot scan, HMC followed by the reflection, and a flow
//! (seed recipe) trained by reverse KL against the user's action — and writes the full
//! report (tables, plots, `index.html`) into `latflow-out/phi6-L6`.
//!
//! The samplers must agree on ⟨φ²⟩ and χ within 4σ of the combined Γ-method error; the
//! program prints a table and exits with status 1 if any pair disagrees.
//!
//! Run with `cargo run --release --example custom_action`.

use std::path::{Path, PathBuf};

use latflow::kernel::{MoveDetail, MoveLabel};
use latflow::run::{Estimate, KernelContext, Registry};
use latflow::study::{StudyOutcome, StudySpec};
use latflow::{Action, Error, Lattice, MoveInfo, Proposal, SimRng, State, StopToken};
use rand::RngExt;

/// The study, as a user writes it: the custom action by name with its couplings, the
/// user's kernel `reflect` in a kernel expression like any built-in one.
const RUNCARD: &str = r#"
name = "phi6-L6"
seed = 7
lattice = [6, 6]

[action]
form = "custom"
name = "phi6"
config = { beta = 0.45, lambda = 0.5, g = 0.1 }

[flow.recipe]
kind = "seed"
hidden = 36
affine_blocks = 2
segments = 8

[flow.train]
batch = 300
iterations = 350
lr = 0.02
eval_every = 50
eval_samples = 2000

[measure]
n = 20000
therm = 500
saved_configs = 100

[[sampler]]
name = "local"
kernel = "local"

[[sampler]]
name = "hmc"
kernel = "hmc"
tune = true

[[sampler]]
name = "hmc+reflect"
kernel = { kind = "hmc+reflect", settings = { reflect = { probability = 0.5 } } }

[[sampler]]
name = "flow"
kernel = "flow"
"#;

/// Agreement tolerance in units of the combined error.
const TOLERANCE_SIGMAS: f64 = 4.0;

/// The couplings of [`PhiSix`] as the runcard gives them.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhiSixCouplings {
    /// Hopping coupling β.
    pub beta: f64,
    /// Quartic coupling λ.
    pub lambda: f64,
    /// Sextic coupling g.
    pub g: f64,
}

/// φ⁶ theory: S = Σ_x [−β Σ_μ φ_x φ_{x+e_μ} + φ_x² + λ(φ_x² − 1)² + g φ_x⁶].
pub struct PhiSix {
    lattice: Lattice,
    beta: f64,
    lambda: f64,
    g: f64,
}

impl PhiSix {
    /// The action with couplings β, λ ≥ 0 and g ≥ 0 (finite), so that it is bounded below.
    pub fn new(lattice: Lattice, beta: f64, lambda: f64, g: f64) -> Result<Self, Error> {
        for (name, value) in [("beta", beta), ("lambda", lambda), ("g", g)] {
            if !value.is_finite() {
                return Err(Error::param(name, format!("must be finite, got {value}")));
            }
        }
        if lambda < 0.0 || g < 0.0 {
            return Err(Error::param(
                "couplings",
                format!("λ and g must be ≥ 0, got λ = {lambda}, g = {g}"),
            ));
        }
        Ok(PhiSix {
            lattice,
            beta,
            lambda,
            g,
        })
    }

    /// The on-site potential V(φ) = φ² + λ(φ² − 1)² + g φ⁶.
    fn potential(&self, x: f64) -> f64 {
        let x2 = x * x;
        x2 + self.lambda * (x2 - 1.0) * (x2 - 1.0) + self.g * x2 * x2 * x2
    }

    /// Σ_μ (φ_{x+e_μ} + φ_{x−e_μ}).
    fn neighbour_sum(&self, phi: &[f64], site: usize) -> f64 {
        (0..self.lattice.dim())
            .map(|mu| phi[self.lattice.fwd(site, mu)] + phi[self.lattice.bwd(site, mu)])
            .sum()
    }
}

impl Action for PhiSix {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn action(&self, phi: &[f64]) -> f64 {
        let d = self.lattice.dim();
        phi.iter()
            .zip(self.lattice.fwd_table().chunks_exact(d))
            .map(|(&x, forward)| {
                let hop: f64 = forward.iter().map(|&y| phi[y]).sum();
                -self.beta * x * hop + self.potential(x)
            })
            .sum()
    }

    fn force(&self, phi: &[f64], out: &mut [f64]) {
        for (site, (o, &x)) in out.iter_mut().zip(phi).enumerate() {
            let x2 = x * x;
            *o = -self.beta * self.neighbour_sum(phi, site)
                + 2.0 * x
                + 4.0 * self.lambda * x * (x2 - 1.0)
                + 6.0 * self.g * x2 * x2 * x;
        }
    }

    fn delta_local(&self, phi: &[f64], site: usize, new: f64) -> f64 {
        let old = phi[site];
        -self.beta * self.neighbour_sum(phi, site) * (new - old) + self.potential(new)
            - self.potential(old)
    }
}

/// A global reflection φ → −φ, proposed with probability `probability` per step and
/// accepted with min(1, e^{−ΔS}) (always, for an even action): a user's kernel that moves
/// between the two vacua, which local updates and HMC cross only slowly.
pub struct Reflect {
    action: std::sync::Arc<dyn Action>,
    probability: f64,
    label: MoveLabel,
    flipped: Vec<f64>,
}

/// The settings of [`Reflect`] as the runcard gives them.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReflectSettings {
    /// Probability of proposing the reflection in a step (default 1).
    #[serde(default = "one")]
    pub probability: f64,
}

fn one() -> f64 {
    1.0
}

impl Reflect {
    /// The kernel for the run described by `context`.
    pub fn new(settings: ReflectSettings, context: &KernelContext<'_>) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&settings.probability) {
            return Err(Error::param(
                "probability",
                format!("must lie in [0, 1], got {}", settings.probability),
            ));
        }
        let action = context.action();
        let volume = action.lattice().volume();
        Ok(Reflect {
            action,
            probability: settings.probability,
            label: context.label.clone(),
            flipped: vec![0.0; volume],
        })
    }
}

impl Proposal for Reflect {
    fn name(&self) -> String {
        format!("reflect(p = {})", self.probability)
    }

    fn step(&mut self, state: &mut State, rng: &mut SimRng, moves: &mut Vec<MoveInfo>) {
        if rng.random::<f64>() >= self.probability {
            return;
        }
        for (f, &x) in self.flipped.iter_mut().zip(state.phi()) {
            *f = -x;
        }
        let new_action = self.action.action(&self.flipped);
        let delta = new_action - state.action();
        let accept = delta <= 0.0 || rng.random::<f64>() < (-delta).exp();
        if accept {
            state.assign(&self.flipped, new_action);
        }
        moves.push(MoveInfo {
            kernel: self.label.clone(),
            proposed: 1,
            accepted: u32::from(accept),
            detail: MoveDetail::Metropolis {
                log_acceptance_ratio: -delta,
            },
        });
    }
}

/// The registry that names the user's pieces: the action `phi6` and the kernel `reflect`.
pub fn registry() -> Result<Registry, Error> {
    Registry::new()
        .with_action("phi6", |c: PhiSixCouplings, lattice: &Lattice| {
            PhiSix::new(lattice.clone(), c.beta, c.lambda, c.g)
        })?
        .with_kernel("reflect", Reflect::new)
}

/// ⟨φ²⟩ and χ of one sampler, with its acceptance.
#[derive(Clone, Debug)]
pub struct Row {
    /// The sampler's name.
    pub sampler: String,
    /// Acceptance of its Metropolis decisions.
    pub acceptance: f64,
    /// ⟨φ²⟩ = ⟨(1/|Λ|) Σ_x φ_x²⟩.
    pub phi2: Estimate,
    /// χ = |Λ| (⟨m²⟩ − ⟨m⟩²).
    pub chi: Estimate,
}

/// The study's samplers and where its report went.
#[derive(Clone, Debug)]
pub struct Report {
    /// One row per sampler, in the runcard's order.
    pub rows: Vec<Row>,
    /// The study folder.
    pub folder: PathBuf,
}

impl Report {
    /// Every (observable, sampler, sampler, |Δ|/σ) whose difference reaches 4σ of the
    /// combined error σ = √(σ_a² + σ_b²), or cannot be compared (NaN).
    pub fn disagreements(&self) -> Vec<(&'static str, String, String, f64)> {
        let mut out = Vec::new();
        for (i, a) in self.rows.iter().enumerate() {
            for b in &self.rows[i + 1..] {
                for (name, x, y) in [("phi2", &a.phi2, &b.phi2), ("chi", &a.chi, &b.chi)] {
                    let sigmas = pull(x, y);
                    if sigmas.is_nan() || sigmas >= TOLERANCE_SIGMAS {
                        out.push((name, a.sampler.clone(), b.sampler.clone(), sigmas));
                    }
                }
            }
        }
        out
    }

    /// The largest relative error of any ⟨φ²⟩ or χ estimate (how sharp the comparison is).
    pub fn largest_relative_error(&self) -> f64 {
        self.rows
            .iter()
            .flat_map(|r| [&r.phi2, &r.chi])
            .map(|e| e.err / e.mean.abs())
            .fold(0.0, f64::max)
    }
}

/// |a − b| in units of the combined error.
pub fn pull(a: &Estimate, b: &Estimate) -> f64 {
    (a.mean - b.mean).abs() / (a.err * a.err + b.err * b.err).sqrt()
}

/// Runs the study into `out` (its folder is `out/phi6-L6`) and reads its samplers' rows.
pub fn run_in(out: &Path) -> Result<Report, Error> {
    let set = [latflow::study::Override::parse(&format!(
        "out={}",
        toml::Value::String(out.display().to_string())
    ))?];
    let study = StudySpec::parse_with(RUNCARD, "the φ⁶ study", &set, registry()?)?;
    let result = match latflow::study::run_study(&study, &StopToken::never(), &mut ())? {
        StudyOutcome::Finished(result) => result,
        StudyOutcome::Stopped { stage, .. } => {
            return Err(Error::Interrupted(format!("stopped during {stage}")));
        }
    };
    let rows = result
        .summary
        .samplers
        .iter()
        .map(|s| {
            let get =
                |name: &str| {
                    s.report.observables.get(name).cloned().ok_or_else(|| {
                        Error::NonFinite(format!("{}: no estimate of {name}", s.name))
                    })
                };
            Ok(Row {
                sampler: s.name.clone(),
                acceptance: s.report.acceptance,
                phi2: get("phi2")?,
                chi: get("chi")?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Report {
        rows,
        folder: result.folder,
    })
}

/// Runs the study into `latflow-out/`.
pub fn run() -> Result<Report, Error> {
    run_in(Path::new("latflow-out"))
}

fn main() {
    let report = match run() {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("φ⁶ on 6x6: β = 0.45, λ = 0.5, g = 0.1");
    println!(
        "{:<12} {:>10} {:>20} {:>20}",
        "sampler", "acceptance", "⟨φ²⟩", "χ"
    );
    for row in &report.rows {
        println!(
            "{:<12} {:>10.3} {:>20} {:>20}",
            row.sampler,
            row.acceptance,
            format!("{:.5} ± {:.5}", row.phi2.mean, row.phi2.err),
            format!("{:.4} ± {:.4}", row.chi.mean, row.chi.err),
        );
    }
    println!("report: {}", report.folder.join("index.html").display());
    let disagreements = report.disagreements();
    if disagreements.is_empty() {
        println!("all pairs agree within {TOLERANCE_SIGMAS}σ");
    } else {
        for (name, a, b, sigmas) in &disagreements {
            println!("{name}: {a} and {b} differ by {sigmas:.1}σ");
        }
        std::process::exit(1);
    }
}
