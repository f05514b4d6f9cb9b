//! The traits through which sampling and training use a flow: [`Flow`] (an invertible map
//! with a latent prior and exact log-densities), [`TrainableFlow`] (parameters and the
//! data-parallel forward + backward pass the trainer needs), the opaque per-caller buffers
//! [`FlowScratch`] of the allocation-free methods, and the shared lattice check
//! [`ensure_same_lattice`].

use std::any::Any;
use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::model::{BatchOutput, ChunkSeed, InterleaveSeed, InterleavedFlow};
use crate::flow::prior::LatentPrior;
use crate::lattice::Lattice;
use crate::rng::SimRng;

/// An invertible map f: z ↦ φ between latent and field configurations on a lattice, with
/// a latent distribution r(z): the flow density
///
/// log p̃(φ) = log r(z) − log|det ∂f/∂z|,  z = f⁻¹(φ).
///
/// Batches are `[n, volume]` arrays in f32 (network math), one configuration per row;
/// log-determinants and log-densities are f64. A flow's log-density is a fixed function of
/// one configuration: rows never influence each other (no batch statistics). Bad input (a
/// batch of the wrong width) is an [`Error`], never a panic.
///
/// An implementation provides [`Flow::lattice`], [`Flow::prior`], [`Flow::forward`] and
/// [`Flow::inverse`]; sampling and density evaluation follow. The `_into` methods write
/// into caller buffers and may keep reusable buffers in a [`FlowScratch`]: their provided
/// versions allocate, a flow used in long chains overrides them (as [`FlowModel`] does) so
/// that the [`FlowProposal`] allocates nothing in its steady state.
///
/// # One log-weight per configuration
///
/// The same φ has its log p̃ computed on two paths: forward, when φ is drawn
/// ([`Flow::sample`], log r(z) − ld_f(z)), and inverse, when a given φ is evaluated
/// ([`Flow::log_density`], log r(f⁻¹(φ)) + ld_i(φ)). Implementations accumulate both
/// log-determinants in f64 from the same per-site terms, so that the paths differ only by
/// the rounding of the network math; [`FlowModel`] states the resulting bound.
///
/// # Example: a user's flow as a proposal
///
/// A global affine map φ = a z + b with a standard-normal prior, so that
/// log|det ∂φ/∂z| = |Λ| log a, used as an independence proposal for the free field:
///
/// ```
/// use std::sync::Arc;
/// use latflow::action::FreeField;
/// use latflow::flow::{Flow, LatentPrior, Prior};
/// use latflow::kernel::{Chain, FlowProposal};
/// use latflow::{Error, Lattice, Result, State};
/// use ndarray::{Array1, Array2, ArrayView2};
///
/// struct GlobalAffine {
///     lattice: Lattice,
///     prior: Prior,
///     a: f32,
///     b: f32,
/// }
///
/// impl GlobalAffine {
///     fn check(&self, x: &ArrayView2<f32>) -> Result<()> {
///         if x.ncols() == self.lattice.volume() {
///             Ok(())
///         } else {
///             Err(Error::Shape(format!("{} columns, {} sites", x.ncols(), self.lattice.volume())))
///         }
///     }
///
///     /// log|det ∂φ/∂z| = |Λ| log a.
///     fn log_det(&self) -> f64 {
///         self.lattice.volume() as f64 * f64::from(self.a).ln()
///     }
/// }
///
/// impl Flow for GlobalAffine {
///     fn lattice(&self) -> &Lattice {
///         &self.lattice
///     }
///
///     fn prior(&self) -> &dyn LatentPrior {
///         &self.prior
///     }
///
///     fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
///         self.check(&z)?;
///         let phi = z.mapv(|x| self.a * x + self.b);
///         Ok((phi, Array1::from_elem(z.nrows(), self.log_det())))
///     }
///
///     fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
///         self.check(&phi)?;
///         let z = phi.mapv(|x| (x - self.b) / self.a);
///         Ok((z, Array1::from_elem(phi.nrows(), -self.log_det())))
///     }
/// }
///
/// let lattice = Lattice::hypercubic(2, 4)?;
/// let action = Arc::new(FreeField::new(lattice.clone(), 4.0)?);
/// // The free field's local variance is about 1/(2d + m0²) = 1/8: a = 0.35 is a fair guess.
/// let flow = Arc::new(GlobalAffine { lattice, prior: Prior::StandardNormal, a: 0.35, b: 0.0 });
///
/// let (phi, log_p) = flow.sample(5, &mut latflow::rng_from_seed(1))?;
/// let again = flow.log_density(phi.view())?;
/// assert!((log_p[0] - again[0]).abs() < 1e-4);
///
/// let proposal = FlowProposal::new(flow, action.clone(), 100)?;
/// let mut chain = Chain::new(proposal, State::zero(&*action), 2);
/// let record = chain.run_with(500, 1, |_state| Ok(()))?;
/// assert!(record.acceptance_of("flow") > 0.05);
/// # Ok::<(), Error>(())
/// ```
///
/// [`FlowModel`]: crate::flow::FlowModel
/// [`FlowProposal`]: crate::kernel::FlowProposal
pub trait Flow: Send + Sync {
    /// The lattice the flow acts on: batches have one column per site.
    fn lattice(&self) -> &Lattice;

    /// The latent distribution r(z).
    fn prior(&self) -> &dyn LatentPrior;

    /// z → φ = f(z); returns φ and log|det ∂f/∂z| (f64) for every row.
    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)>;

    /// φ → z = f⁻¹(φ); returns z and log|det ∂f⁻¹/∂φ| (f64, minus the forward log-det at z)
    /// for every row.
    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)>;

    /// Draws `n` configurations with `rng`: φ = f(z), z ~ r, and the exact
    /// log p̃(φ) = log r(z) − log|det ∂f/∂z| of each.
    fn sample(&self, n: usize, rng: &mut SimRng) -> Result<(Array2<f32>, Array1<f64>)> {
        let mut z = Array2::zeros((n, self.lattice().volume()));
        self.prior().sample_into(z.view_mut(), rng)?;
        let mut log_p = Array1::zeros(n);
        self.prior().log_density_into(z.view(), log_p.view_mut())?;
        let (phi, log_det) = self.forward(z.view())?;
        check_output("forward", phi.dim(), log_det.len(), z.dim())?;
        log_p -= &log_det;
        Ok((phi, log_p))
    }

    /// The exact log p̃(φ) = log r(f⁻¹(φ)) + log|det ∂f⁻¹/∂φ| of every row.
    fn log_density(&self, phi: ArrayView2<f32>) -> Result<Array1<f64>> {
        let mut out = Array1::zeros(phi.nrows());
        self.log_density_into(phi, out.view_mut(), &mut FlowScratch::new())?;
        Ok(out)
    }

    /// [`Flow::forward`] into caller buffers: φ into `phi` (shaped like `z`), the log-dets
    /// into `log_det` (one per row). `scratch` holds whatever buffers the flow reuses from
    /// call to call; the provided version allocates through [`Flow::forward`].
    fn forward_into(
        &self,
        z: ArrayView2<f32>,
        mut phi: ArrayViewMut2<f32>,
        mut log_det: ArrayViewMut1<f64>,
        _scratch: &mut FlowScratch,
    ) -> Result<()> {
        check_output("output buffers of", phi.dim(), log_det.len(), z.dim())?;
        let (value, ld) = self.forward(z)?;
        check_output("forward", value.dim(), ld.len(), z.dim())?;
        phi.assign(&value);
        log_det.assign(&ld);
        Ok(())
    }

    /// [`Flow::log_density`] into `out` (one entry per row of `phi`), reusing buffers kept
    /// in `scratch`; the provided version allocates through [`Flow::inverse`].
    fn log_density_into(
        &self,
        phi: ArrayView2<f32>,
        mut out: ArrayViewMut1<f64>,
        _scratch: &mut FlowScratch,
    ) -> Result<()> {
        check_output("output buffer of", phi.dim(), out.len(), phi.dim())?;
        let (z, log_det) = self.inverse(phi)?;
        check_output("inverse", z.dim(), log_det.len(), phi.dim())?;
        self.prior().log_density_into(z.view(), out.view_mut())?;
        out += &log_det;
        Ok(())
    }

    /// One configuration pulled back through the flow, in f64 (what flow HMC integrates):
    /// φ = f(z) into `phi`, then `action(φ, g)`, which returns S(φ) and writes ∂S/∂φ into
    /// `g`, then the gradient of the pulled-back potential
    ///
    /// ∇_z U(z) = J_f(z)ᵀ ∂S/∂φ − ∇_z log|det J_f(z)|,  U(z) = S(f(z)) − log|det J_f(z)|,
    ///
    /// into `grad_z` by reverse mode through the flow. All slices have one value per site.
    /// U must be a deterministic function of z (the same z gives the same bits), so that a
    /// Metropolis test on it is exact. The provided version refuses with an
    /// [`Error::Incompatible`]: a flow that can differentiate itself with respect to its
    /// input overrides it, and [`Flow::inverse_f64`] with it.
    fn pull_back(
        &self,
        z: &[f64],
        phi: &mut [f64],
        action: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
        grad_z: &mut [f64],
        scratch: &mut FlowScratch,
    ) -> Result<LatentPoint> {
        let _ = (z, phi, action, grad_z, scratch);
        Err(Error::Incompatible(
            "flow HMC needs the flow's gradient with respect to its input in f64, which \
             this flow does not compute (it does not override Flow::pull_back)"
                .into(),
        ))
    }

    /// One configuration's z = f⁻¹(φ) in f64 into `z`; returns log|det ∂f⁻¹/∂φ|. Pairs with
    /// [`Flow::pull_back`] (flow HMC takes over a field another kernel changed through it);
    /// the provided version refuses like it.
    fn inverse_f64(&self, phi: &[f64], z: &mut [f64], scratch: &mut FlowScratch) -> Result<f64> {
        let _ = (phi, z, scratch);
        Err(Error::Incompatible(
            "flow HMC needs the flow's inverse in f64, which this flow does not compute \
             (it does not override Flow::inverse_f64)"
                .into(),
        ))
    }
}

/// What [`Flow::pull_back`] returns besides φ and the gradient: S(f(z)) and
/// log|det ∂f/∂z| of the configuration, both f64. The pulled-back potential of flow HMC is
/// U(z) = `action` − `log_det`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentPoint {
    /// S(φ) at φ = f(z), as the caller's action function returned it.
    pub action: f64,
    /// log|det ∂f/∂z| at z.
    pub log_det: f64,
}

impl LatentPoint {
    /// U(z) = S(f(z)) − log|det ∂f/∂z|: minus the log-density, up to a constant, of the
    /// latent field whose image under f is distributed as e^{−S}.
    pub fn potential(&self) -> f64 {
        self.action - self.log_det
    }
}

/// Checks that a flow's batch output (`dim` and `rows` log-dets) fits its input `want`.
pub(crate) fn check_output(
    what: &str,
    dim: (usize, usize),
    rows: usize,
    want: (usize, usize),
) -> Result<()> {
    if dim == want && rows == want.0 {
        Ok(())
    } else {
        Err(Error::Shape(format!(
            "{what} the flow: {} × {} values and {rows} log-dets for a {} × {} batch",
            dim.0, dim.1, want.0, want.1
        )))
    }
}

/// Buffers a flow keeps between calls of its `_into` methods, owned by the caller (one per
/// use, e.g. one for proposals and one for density evaluations), so that [`Flow`] stays
/// object-safe and a flow shared between chains needs no lock.
///
/// A flow stores one value of its own choosing in it ([`FlowScratch::get_or_insert_with`]);
/// a fresh scratch is empty.
#[derive(Default)]
pub struct FlowScratch {
    buffers: Option<Box<dyn Any + Send>>,
}

impl FlowScratch {
    /// An empty scratch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffers of type `T` held here, made by `make` if the scratch is empty or holds
    /// another type.
    pub fn get_or_insert_with<T: Any + Send>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        if !self.buffers.as_ref().is_some_and(|b| b.is::<T>()) {
            self.buffers = Some(Box::new(make()));
        }
        match self.buffers.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(buffers) => buffers,
            None => unreachable!("the scratch holds a T: it was just checked or replaced"),
        }
    }
}

impl std::fmt::Debug for FlowScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowScratch")
            .field("filled", &self.buffers.is_some())
            .finish()
    }
}

/// A flow that the reverse-KL [`Trainer`] can optimise: a flat f32 parameter vector θ and a
/// data-parallel forward + backward pass with a caller-supplied gradient seed.
///
/// Training minimises the reverse Kullback–Leibler divergence from p̃_θ to e^{−S}/Z, which up
/// to θ-independent constants is
///
/// L(θ) = E_{z∼r}[ S(f_θ(z)) − log|det ∂f_θ/∂z| ],
///
/// estimated on a batch z_1 … z_N by L̂ = (1/N) Σ_n [S(φ_n) − ld_n]. Its gradient is
/// seeded per row with ∂L̂/∂φ_n = ∇S(φ_n)/N and ∂L̂/∂ld_n = −1/N and back-propagated
/// through the flow to θ by [`TrainableFlow::forward_backward`]. The path gradient seeds
/// ∂L̂/∂φ_n = [∇S(φ_n) + ∇_φ log p̃_θ(φ_n)]/N and ∂L̂/∂ld_n = 0 instead, with the score
/// from [`TrainableFlow::forward_backward_scored`].
///
/// Checkpoints store θ, the flow's [`TrainableFlow::description`] (so that a resume can
/// check it was handed the same flow) and its metadata, if it keeps any.
///
/// [`Trainer`]: crate::train::Trainer
pub trait TrainableFlow: Flow {
    /// Reusable buffers of the forward + backward pass.
    type Workspace: Send;

    /// The flat parameter vector θ.
    fn params(&self) -> &[f32];

    /// The flat parameter vector, for optimisers.
    fn params_mut(&mut self) -> &mut [f32];

    /// Number of parameters.
    fn n_params(&self) -> usize {
        self.params().len()
    }

    /// Bytes one configuration of a training batch occupies in the workspace (values and
    /// gradients of the pass), a lower estimate the trainer checks against the memory
    /// available before it allocates. The default, 0, claims nothing beyond the trainer's
    /// own batch buffers.
    fn training_bytes_per_row(&self) -> usize {
        0
    }

    /// Multiply-adds of one configuration's forward pass, for the trainer's work estimate.
    /// The default, [`TrainableFlow::n_params`], counts each parameter once (right for
    /// dense nets).
    fn multiply_adds_per_row(&self) -> usize {
        self.n_params()
    }

    /// A workspace that splits batches into `chunks` parts (at least one). Results must
    /// depend only on the inputs and the chunk count, so that training is reproducible.
    fn workspace(&self, chunks: usize) -> Self::Workspace;

    /// One pass on the latent batch `z`: φ = f(z) and ld = log|det ∂f/∂z| of every row, then
    /// ∂L/∂θ into `grad` (overwritten, `n_params` long).
    ///
    /// `seed` is called once per batch chunk with a [`ChunkSeed`]: φ and ld of the chunk's
    /// rows, where it writes ∂L/∂φ and ∂L/∂ld and may record one f64 per row (the trainer
    /// records S(φ) − ld). Returns φ, ld and the recorded values of the whole batch.
    fn forward_backward<'w, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Self::Workspace,
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        S: Fn(ChunkSeed<'_, f32>) + Sync;

    /// [`TrainableFlow::forward_backward`] where the seed also receives the score
    /// ∇_φ log p̃_θ(φ) of every row at fixed θ in [`ChunkSeed::score`], which the path
    /// gradient of the reverse KL needs (see [`GradientEstimator::Path`]). The provided
    /// version refuses with an [`Error::Incompatible`]: a flow that can compute its score
    /// overrides it.
    ///
    /// [`GradientEstimator::Path`]: crate::train::GradientEstimator::Path
    fn forward_backward_scored<'w, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Self::Workspace,
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        let _ = (z, workspace, seed, grad);
        Err(Error::Incompatible(
            "path gradients need the flow's score ∇_φ log p̃(φ), which this flow does not \
             compute (it does not override TrainableFlow::forward_backward_scored)"
                .into(),
        ))
    }

    /// [`TrainableFlow::forward_backward`] with a map run before each of the flow's last
    /// `interleave.0` layer groups, `interleave.1`, which sees and moves the field there
    /// and seeds the gradient of its own terms (see
    /// [`FlowModel::forward_backward_interleaved_with`]): the pass of a stochastic
    /// normalizing flow with flow layers between its stochastic steps. The provided
    /// version refuses with an [`Error::Incompatible`]: a flow made of layer groups
    /// overrides it, and [`TrainableFlow::interleave`] with it.
    ///
    /// [`FlowModel::forward_backward_interleaved_with`]: crate::flow::FlowModel::forward_backward_interleaved_with
    fn forward_backward_interleaved<'w, B, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Self::Workspace,
        interleave: (usize, B),
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        B: Fn(InterleaveSeed<'_, f32>) + Sync,
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        let _ = (z, workspace, interleave, seed, grad);
        Err(interleave_refused())
    }

    /// The flow cut before its last `k` layer groups, which a stochastic normalizing flow
    /// interleaves with its stochastic steps (see [`InterleavedFlow`]). The provided
    /// version refuses like [`TrainableFlow::forward_backward_interleaved`].
    fn interleave(&self, k: usize) -> Result<InterleavedFlow> {
        let _ = k;
        Err(interleave_refused())
    }

    /// A JSON description of the flow's structure (not its parameters), saved in
    /// checkpoints; resuming into a flow with another description is refused.
    fn description(&self) -> serde_json::Value;

    /// Free-form metadata saved with the flow and in checkpoints; the trainer records its
    /// summary under `"train"`. `None` (the default): the flow keeps none.
    fn metadata(&self) -> Option<&BTreeMap<String, serde_json::Value>> {
        None
    }

    /// Mutable access to the metadata, if the flow keeps any.
    fn metadata_mut(&mut self) -> Option<&mut BTreeMap<String, serde_json::Value>> {
        None
    }
}

/// Why a flow that is not made of layer groups cannot interleave them with other maps.
fn interleave_refused() -> Error {
    Error::Incompatible(
        "flow layers between stochastic steps need a flow made of layer groups (a \
         FlowModel); this flow does not override TrainableFlow::forward_backward_interleaved"
            .into(),
    )
}

/// Checks that a flow and an action live on the same lattice: an [`Error::Incompatible`]
/// naming both otherwise.
pub fn ensure_same_lattice<F, A>(flow: &F, action: &A) -> Result<()>
where
    F: Flow + ?Sized,
    A: Action + ?Sized,
{
    if flow.lattice() == action.lattice() {
        Ok(())
    } else {
        Err(Error::Incompatible(format!(
            "the flow is for a {} lattice, the action for {}",
            flow.lattice(),
            action.lattice()
        )))
    }
}
