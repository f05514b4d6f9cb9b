//! Flows that are not `FlowModel` plug into sampling and training through the traits: a
//! user's `impl Flow` drives flow-proposal chains (alone, behind `Arc<dyn Flow>`, and mixed
//! with local sweeps) that reproduce the exact free-field values, a user's
//! `impl TrainableFlow` is trained by `Trainer` to its known optimum and resumes from a
//! checkpoint, and every entry point refuses a flow for another lattice with the one typed
//! error.

mod common;

use std::sync::Arc;

use common::{run_from_zero, scratch};
use latflow::action::FreeField;
use latflow::flow::{
    BatchOutput, ChunkSeed, Flow, FlowConfig, FlowModel, LatentPrior, Prior, TrainableFlow,
};
use latflow::kernel::{Cycle, FlowProposal, LocalMetropolis, reweight};
use latflow::observable::Summary;
use latflow::train::{TrainConfig, Trainer, evaluate_flow};
use latflow::{Action, Error, Lattice, Result, rng_from_seed};
use ndarray::{Array1, Array2, ArrayView2, s};

const M0SQ: f64 = 4.0;

fn lattice() -> Lattice {
    Lattice::hypercubic(2, 4).unwrap()
}

fn free_field() -> Arc<FreeField> {
    Arc::new(FreeField::new(lattice(), M0SQ).unwrap())
}

fn shape_error(cols: usize, lattice: &Lattice) -> Result<()> {
    if cols == lattice.volume() {
        Ok(())
    } else {
        Err(Error::Shape(format!(
            "{cols} columns for {} sites",
            lattice.volume()
        )))
    }
}

/// φ = e^s z + b at every site with a standard-normal prior: log|det ∂φ/∂z| = |Λ| s.
/// The parameters are (s, b).
struct GlobalAffine {
    lattice: Lattice,
    prior: Prior,
    params: [f32; 2],
}

impl GlobalAffine {
    fn new(s: f32, b: f32) -> Self {
        GlobalAffine {
            lattice: lattice(),
            prior: Prior::StandardNormal,
            params: [s, b],
        }
    }

    fn log_det(&self) -> f64 {
        self.lattice.volume() as f64 * f64::from(self.params[0])
    }
}

impl Flow for GlobalAffine {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn prior(&self) -> &dyn LatentPrior {
        &self.prior
    }

    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        shape_error(z.ncols(), &self.lattice)?;
        let (scale, shift) = (self.params[0].exp(), self.params[1]);
        let phi = z.mapv(|x| scale * x + shift);
        Ok((phi, Array1::from_elem(z.nrows(), self.log_det())))
    }

    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        shape_error(phi.ncols(), &self.lattice)?;
        let (scale, shift) = (self.params[0].exp(), self.params[1]);
        let z = phi.mapv(|x| (x - shift) / scale);
        Ok((z, Array1::from_elem(phi.nrows(), -self.log_det())))
    }
}

/// The whole-batch buffers of `GlobalAffine`'s training pass (one chunk).
struct AffineWorkspace {
    phi: Array2<f32>,
    log_det: Array1<f64>,
    record: Array1<f64>,
    grad_phi: Array2<f32>,
    grad_log_det: Array1<f32>,
}

impl TrainableFlow for GlobalAffine {
    type Workspace = AffineWorkspace;

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    fn workspace(&self, _chunks: usize) -> AffineWorkspace {
        AffineWorkspace {
            phi: Array2::zeros((0, 0)),
            log_det: Array1::zeros(0),
            record: Array1::zeros(0),
            grad_phi: Array2::zeros((0, 0)),
            grad_log_det: Array1::zeros(0),
        }
    }

    /// ∂L/∂s = Σ_n [Σ_x g_{n,x} e^s z_{n,x} + |Λ| g_ld,n], ∂L/∂b = Σ_{n,x} g_{n,x}.
    fn forward_backward<'w, S>(
        &self,
        z: ArrayView2<f32>,
        ws: &'w mut AffineWorkspace,
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        if grad.len() != 2 {
            return Err(Error::Shape(format!(
                "2 parameters, gradient of {}",
                grad.len()
            )));
        }
        let (phi, log_det) = self.forward(z)?;
        let n = z.nrows();
        ws.phi = phi;
        ws.log_det = log_det;
        ws.record = Array1::zeros(n);
        ws.grad_phi = Array2::zeros(z.dim());
        ws.grad_log_det = Array1::zeros(n);
        seed(ChunkSeed {
            phi: ws.phi.view(),
            logdet: ws.log_det.view(),
            grad_phi: ws.grad_phi.view_mut(),
            grad_logdet: ws.grad_log_det.view_mut(),
            record: ws.record.view_mut(),
            score: None,
            first_row: 0,
        });
        let scale = f64::from(self.params[0].exp());
        let volume = z.ncols() as f64;
        let (mut grad_s, mut grad_b) = (0.0f64, 0.0f64);
        for ((z_row, g_row), &g_ld) in z
            .outer_iter()
            .zip(ws.grad_phi.outer_iter())
            .zip(ws.grad_log_det.iter())
        {
            for (&x, &g) in z_row.iter().zip(g_row.iter()) {
                grad_s += f64::from(g) * scale * f64::from(x);
                grad_b += f64::from(g);
            }
            grad_s += volume * f64::from(g_ld);
        }
        grad[0] = grad_s as f32;
        grad[1] = grad_b as f32;
        Ok(BatchOutput {
            phi: ws.phi.view(),
            logdet: ws.log_det.view(),
            record: ws.record.view(),
        })
    }

    fn description(&self) -> serde_json::Value {
        serde_json::json!({ "flow": "global affine" })
    }
}

/// χ = 1/m0² and ⟨φ²⟩ = G(0) exactly, within 4σ; the errors are small enough (5 % of the
/// values) for a biased chain to fail.
fn agrees_with_the_free_field(summary: &Summary, label: &str) {
    let action = free_field();
    for (name, exact) in [
        ("chi", action.susceptibility()),
        ("phi2", action.propagator()[0]),
    ] {
        let e = summary.get(name).unwrap();
        assert!(
            (e.mean - exact).abs() < 4.0 * e.err,
            "{label} {name}: {} ± {} vs exact {exact}",
            e.mean,
            e.err
        );
        assert!(
            e.err < 0.05 * exact,
            "{label} {name}: error {} too large",
            e.err
        );
    }
}

/// The reverse-KL optimum of a global scale for the free field: with φ = a z,
/// E[S(a z)] = a² |Λ| (2d + m0²)/2 and log det = |Λ| log a, so a² = 1/(2d + m0²).
fn optimal_log_scale() -> f64 {
    -0.5 * (4.0 + M0SQ).ln()
}

#[test]
fn a_user_flow_drives_flow_proposal_chains_to_the_exact_free_field() {
    let action = free_field();
    let flow = Arc::new(GlobalAffine::new(optimal_log_scale() as f32, 0.0));

    let proposal = FlowProposal::new(flow.clone(), action.clone(), 500).unwrap();
    agrees_with_the_free_field(
        &run_from_zero(proposal, &*free_field(), 1, 200, 40_000).1,
        "flow",
    );

    // Behind `dyn Flow`, mixed with local sweeps: every flow step after a sweep evaluates
    // the moved state's density through the provided `log_density_into`.
    let dyn_flow: Arc<dyn Flow> = flow;
    let proposal = FlowProposal::new(dyn_flow, action.clone(), 256).unwrap();
    let local = LocalMetropolis::new(action.clone(), 1.0).unwrap();
    agrees_with_the_free_field(
        &run_from_zero(Cycle::new(proposal, local), &*free_field(), 2, 200, 20_000).1,
        "flow+local",
    );
}

#[test]
fn a_user_flow_reweights_to_the_exact_free_field() {
    let action = free_field();
    let flow = GlobalAffine::new(optimal_log_scale() as f32, 0.0);
    let volume = action.lattice().volume() as f64;
    // ⟨M²⟩/|Λ| = χ since ⟨M⟩ = 0 exactly.
    let mut m2 = |phi: &[f64]| phi.iter().sum::<f64>().powi(2) / volume;
    let r = reweight(&flow, &*action, 40_000, 3, &mut m2).unwrap();
    let exact = action.susceptibility();
    let e = &r.estimate;
    assert!(
        (e.mean - exact).abs() < 4.0 * e.err,
        "reweighted χ = {} ± {} vs exact {exact}",
        e.mean,
        e.err
    );
    assert!(e.err < 0.05 * exact, "error {} too large", e.err);
}

#[test]
fn a_user_trainable_flow_is_trained_to_its_known_optimum_and_resumes() {
    let action = free_field();
    let mut config = TrainConfig::new(256, 300, 0.05);
    config.seed = 4;
    let mut trainer = Trainer::new(GlobalAffine::new(0.0, 0.3), action.clone(), config).unwrap();
    for _ in 0..150 {
        trainer.step().unwrap();
    }
    let dir = scratch("checkpoint");
    let path = dir.join("affine.ckpt.json");
    trainer.save_checkpoint(&path).unwrap();
    let summary = trainer
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    let [s, b] = trainer.model().params;

    // One batch of 256 fixes s to about ½ sd(S)/(⟨S⟩ √256) ≈ 0.012 (for unit latent fields
    // ⟨S⟩ = |Λ|(2d + m0²)/2 = 64 and sd(S) ≈ 23 here); the decaying learning rate averages
    // many batches at the end of the run, so 0.02 is loose, while a wrong gradient (wrong
    // factor or sign) ends far from the optimum.
    let s_exact = optimal_log_scale();
    assert!(
        (f64::from(s) - s_exact).abs() < 0.02,
        "s = {s}, optimum {s_exact}"
    );
    assert!(f64::from(b).abs() < 0.02, "b = {b}, optimum 0");
    assert!(summary.eval.acceptance > 0.1, "{:?}", summary.eval);

    // Resuming into a fresh flow of the same structure gives the same parameters bit for
    // bit; a flow of another structure is refused.
    let mut resumed =
        Trainer::resume_with_flow(&path, GlobalAffine::new(0.0, 0.0), action.clone()).unwrap();
    resumed
        .train(&mut (), &latflow::StopToken::never())
        .unwrap();
    assert_eq!(resumed.model().params, [s, b]);
    let model = FlowModel::new(&FlowConfig::real_nvp(1, &[]), &lattice(), 0).unwrap();
    let err = Trainer::resume_with_flow(&path, model, action)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Incompatible(_)), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_entry_point_refuses_a_flow_for_another_lattice() {
    let other = Arc::new(FreeField::new(Lattice::hypercubic(2, 6).unwrap(), M0SQ).unwrap());
    let flow = Arc::new(GlobalAffine::new(0.0, 0.0));
    let incompatible = |r: Result<()>| matches!(r, Err(Error::Incompatible(_)));
    assert!(incompatible(
        FlowProposal::new(flow.clone(), other.clone(), 10).map(|_| ())
    ));
    assert!(incompatible(
        reweight(&*flow, &*other, 10, 0, &mut |_| 0.0).map(|_| ())
    ));
    assert!(incompatible(
        evaluate_flow(&*flow, &*other, 10, &mut rng_from_seed(0)).map(|_| ())
    ));
    let trainer = Trainer::new(
        GlobalAffine::new(0.0, 0.0),
        other,
        TrainConfig::new(8, 1, 0.1),
    );
    assert!(incompatible(trainer.map(|_| ())));
}

#[test]
fn provided_methods_check_the_batch_width() {
    let flow = GlobalAffine::new(0.1, 0.2);
    let narrow = Array2::<f32>::zeros((3, 15));
    assert!(matches!(
        flow.log_density(narrow.view()),
        Err(Error::Shape(_))
    ));
    // `sample` and `log_density` are consistent: log p̃ from the forward path equals the
    // inverse path's to f32 rounding of φ.
    let (phi, log_p) = flow.sample(20, &mut rng_from_seed(5)).unwrap();
    let again = flow.log_density(phi.view()).unwrap();
    for (a, b) in log_p.iter().zip(&again) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // The provided `_into` methods refuse buffers of the wrong size.
    let mut scratch = latflow::flow::FlowScratch::new();
    let mut out = Array2::<f32>::zeros((20, 16));
    let mut short = Array1::<f64>::zeros(19);
    let z = phi.slice(s![.., ..]);
    assert!(matches!(
        flow.forward_into(z, out.view_mut(), short.view_mut(), &mut scratch),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        flow.log_density_into(z, short.view_mut(), &mut scratch),
        Err(Error::Shape(_))
    ));
    let prior: &dyn LatentPrior = flow.prior();
    let mut log_r = Array1::<f64>::zeros(2);
    assert!(matches!(
        prior.log_density_into(narrow.view(), log_r.view_mut()),
        Err(Error::Shape(_))
    ));
}

#[test]
fn the_free_field_prior_refuses_a_batch_of_the_wrong_width() {
    let prior = Prior::FreeField(FreeField::new(lattice(), M0SQ).unwrap());
    let mut z = Array2::<f32>::zeros((2, 15));
    assert!(matches!(
        prior.sample_into(z.view_mut(), &mut rng_from_seed(1)),
        Err(Error::Shape(_))
    ));
    let mut out = Array1::zeros(2);
    assert!(matches!(
        prior.log_density_into(z.view(), out.view_mut()),
        Err(Error::Shape(_))
    ));
}

#[test]
fn path_gradients_are_refused_for_a_flow_without_a_score() {
    // The provided `forward_backward_scored` refuses; the step leaves the parameters.
    let mut config = TrainConfig::new(16, 10, 0.05);
    config.gradient = latflow::train::GradientEstimator::Path;
    let mut trainer = Trainer::new(GlobalAffine::new(0.1, 0.2), free_field(), config).unwrap();
    let err = trainer.step().err().unwrap();
    assert!(matches!(err, Error::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("score"), "{err}");
    assert_eq!(trainer.model().params, [0.1, 0.2]);
}
