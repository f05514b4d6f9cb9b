//! A user action written outside the crate: φ⁶ theory in the hopping convention,
//!
//!     S = Σ_x [ −β Σ_μ φ_x φ_{x+e_μ} + φ_x² + λ (φ_x² − 1)² + g φ_x⁶ ],
//!
//! implemented through `latflow::Action` (action, force, local change) on the lattice's
//! neighbour tables, then sampled on a 6 × 6 lattice three ways: local Metropolis, HMC, and
//! the independence sampler of a flow (seed recipe) trained by reverse KL against this
//! action. The three chains must agree on ⟨φ²⟩ and χ within 4σ of the combined Γ-method
//! error; the program prints a table and exits with status 1 if any pair disagrees.
//!
//! Run with `cargo run --release --example custom_action`.

use std::sync::Arc;

use latflow::flow::{FlowConfig, FlowModel};
use latflow::kernel::{Chain, FlowProposal, Hmc, LocalMetropolis};
use latflow::observable::Measurements;
use latflow::stats::GammaEstimate;
use latflow::train::{TrainConfig, Trainer};
use latflow::{Action, Error, Lattice, Proposal, State};

/// Lattice extent L of the L × L lattice.
const EXTENT: usize = 6;
/// Hopping coupling β.
const BETA: f64 = 0.45;
/// Quartic coupling λ.
const LAMBDA: f64 = 0.5;
/// Sextic coupling g.
const G: f64 = 0.1;
/// Thermalisation steps and measured steps of every chain.
const THERMALISATION: usize = 500;
const STEPS: usize = 20_000;
/// Agreement tolerance in units of the combined error.
const TOLERANCE_SIGMAS: f64 = 4.0;

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

/// ⟨φ²⟩ and χ of one sampler, with its acceptance.
#[derive(Clone, Debug)]
pub struct Row {
    /// The sampler's name.
    pub sampler: &'static str,
    /// Acceptance of its Metropolis decisions.
    pub acceptance: f64,
    /// ⟨φ²⟩ = ⟨(1/|Λ|) Σ_x φ_x²⟩.
    pub phi2: GammaEstimate,
    /// χ = |Λ| (⟨m²⟩ − ⟨m⟩²).
    pub chi: GammaEstimate,
}

/// The three samplers' results.
#[derive(Clone, Debug)]
pub struct Report {
    /// Local Metropolis, HMC and flow, in that order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Every (observable, sampler, sampler, |Δ|/σ) whose difference reaches 4σ of the
    /// combined error σ = √(σ_a² + σ_b²), or cannot be compared (NaN).
    pub fn disagreements(&self) -> Vec<(&'static str, &'static str, &'static str, f64)> {
        let mut out = Vec::new();
        for (i, a) in self.rows.iter().enumerate() {
            for b in &self.rows[i + 1..] {
                for (name, x, y) in [("phi2", &a.phi2, &b.phi2), ("chi", &a.chi, &b.chi)] {
                    let sigmas = pull(x, y);
                    if sigmas.is_nan() || sigmas >= TOLERANCE_SIGMAS {
                        out.push((name, a.sampler, b.sampler, sigmas));
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
pub fn pull(a: &GammaEstimate, b: &GammaEstimate) -> f64 {
    (a.mean - b.mean).abs() / (a.err * a.err + b.err * b.err).sqrt()
}

/// Thermalises and runs `kernel` from the cold start, measuring after every step; `sampler`
/// is also the label its moves carry.
fn sample<K: Proposal>(
    kernel: K,
    action: &PhiSix,
    seed: u64,
    sampler: &'static str,
) -> Result<Row, Error> {
    let mut chain = Chain::new(kernel, State::zero(action), seed);
    chain.thermalise(THERMALISATION);
    let mut measurements = Measurements::new(action.lattice());
    let record = chain.run_with(STEPS, 1, |state| measurements.record(state.phi()))?;
    let summary = measurements.summary()?;
    let get = |name: &str| {
        summary
            .get(name)
            .copied()
            .ok_or_else(|| Error::NonFinite(format!("{sampler}: no estimate of {name}")))
    };
    Ok(Row {
        sampler,
        acceptance: record.acceptance_of(sampler),
        phi2: get("phi2")?,
        chi: get("chi")?,
    })
}

/// Samples the φ⁶ action by local Metropolis, HMC and a trained flow.
pub fn run() -> Result<Report, Error> {
    let action = Arc::new(PhiSix::new(
        Lattice::hypercubic(2, EXTENT)?,
        BETA,
        LAMBDA,
        G,
    )?);

    let local = LocalMetropolis::new(action.clone(), 1.0)?;
    let local = sample(local, &action, 1, "local")?;

    let hmc = Hmc::new(action.clone(), 1.0, 8)?;
    let hmc = sample(hmc, &action, 2, "hmc")?;

    // The seed recipe at |Λ| = 36 (hidden width 36, two Z2-affine blocks, one spline block
    // with K = 8), trained by reverse KL against the user action.
    let volume = action.lattice().volume();
    let model = FlowModel::new(&FlowConfig::seed(volume, 2, 8)?, action.lattice(), 1)?;
    let mut config = TrainConfig::new(300, 350, 0.02);
    config.seed = 3;
    config.chunks = 2;
    let mut trainer = Trainer::new(model, action.clone(), config)?;
    trainer.train(&mut (), &latflow::StopToken::never())?;
    let model = Arc::new(trainer.into_model());
    let flow = FlowProposal::new(model, action.clone(), 500)?;
    let flow = sample(flow, &action, 4, "flow")?;

    Ok(Report {
        rows: vec![local, hmc, flow],
    })
}

fn main() {
    let report = match run() {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("φ⁶ on {EXTENT}x{EXTENT}: β = {BETA}, λ = {LAMBDA}, g = {G}, {STEPS} steps per chain");
    println!(
        "{:<7} {:>10} {:>20} {:>20}",
        "sampler", "acceptance", "⟨φ²⟩", "χ"
    );
    for row in &report.rows {
        println!(
            "{:<7} {:>10.3} {:>20} {:>20}",
            row.sampler,
            row.acceptance,
            format!("{:.5} ± {:.5}", row.phi2.mean, row.phi2.err),
            format!("{:.4} ± {:.4}", row.chi.mean, row.chi.err),
        );
    }
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
