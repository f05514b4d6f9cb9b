//! [`FlowModel`]: a prior and a sequence of layers with all parameters in one flat vector;
//! exact sampling and density evaluation (`passes`: the data-parallel forward, inverse and
//! training passes, with their reusable [`Workspace`] from `workspace`), and model files
//! (`file`: JSON of config, lattice, parameters and metadata, written atomically).

mod file;
mod interleave;
mod latent;
mod passes;
mod workspace;

use std::collections::BTreeMap;
use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::error::{Error, Result};
use crate::flow::free_field::FreeFieldLayer;
use crate::flow::layers::{Coupling, FlowFloat, Layer};
use crate::flow::multiscale::{CoarseLayer, check_levels, refine_partition};
use crate::flow::net::ParamBuilder;
use crate::flow::prior::{LatentPrior, Prior};
use crate::flow::recipe::{FlowConfig, LayerConfig, NetConfig, Partition};
use crate::flow::registry::LayerRegistry;
use crate::flow::traits::{Flow, FlowScratch, LatentPoint, TrainableFlow, check_output};
use crate::lattice::Lattice;
use crate::rng::rng_from_seed;
use crate::tape::{Tape, Var};

pub use file::{MODEL_FORMAT_VERSION, OLDEST_MODEL_FORMAT_VERSION};
pub use interleave::{InterleavedFlow, LayerMap};
pub use latent::PullBack;
use passes::scratch_workspace;
pub use workspace::{BatchOutput, ChunkSeed, InterleaveSeed, Workspace};

/// A normalizing flow: latent prior, layers, and the flat parameter vector; the built-in
/// [`Flow`] and [`TrainableFlow`].
///
/// # Forward and inverse log-densities
///
/// Both paths sum the log-determinant in f64 from f32 per-site terms: the forward pass from
/// the log-derivatives ℓ of every coupling layer's pointwise transform (read off the tape,
/// so training keeps its f32 log-det node for the gradient), the inverse pass from those of
/// the inverse transforms, and |Λ| c for a scale layer c in both. With u = 2⁻²⁴ the f32
/// unit roundoff, N_ℓ = Σ_layers |A_l| the number of per-site terms of the coupling layers,
/// and φ = f(z) drawn by [`Flow::sample`], the two values of log p̃(φ) satisfy
///
/// |log p̃_fwd(φ) − log p̃_inv(φ)| ≤ 16 u (N_ℓ + |Λ|)
///
/// for layers that are well conditioned (per-site terms, latent values and the products
/// |∂ℓ/∂x|·|x|, |∂ℓ/∂θ|·|θ| of order one, as in trained flows). To first order in u: the
/// f64 sums contribute at most N_ℓ 2⁻⁵³ Σ|ℓ|, nothing at f32 scale. Each per-site term is
/// evaluated in a few f32 operations (relative error u each) from inputs on which the two
/// paths agree up to the inverse's reconstruction error, itself a few u; so is each of the
/// |Λ| prior terms, at z and at the reconstructed latent. A budget of 8 u per term and
/// path covers both, and the term errors add at most linearly. (Accumulating the forward
/// log-det in f32 instead would add up to u Σ_k |partial sum_k| ≈ u N_ℓ |log det| / 2.)
#[derive(Clone)]
pub struct FlowModel {
    config: FlowConfig,
    lattice: Lattice,
    prior: Prior,
    layers: Vec<Layer>,
    /// The parameters of each element of `config.layers`.
    layer_params: Vec<Range<usize>>,
    /// The positions in `layers` of each element of `config.layers` (its layer group).
    groups: Vec<Range<usize>>,
    params: Vec<f32>,
    metadata: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for FlowModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowModel")
            .field("lattice", &self.lattice.to_string())
            .field("config", &self.config)
            .field("n_params", &self.params.len())
            .finish()
    }
}

impl FlowModel {
    /// Builds the flow described by `config` on `lattice`, with parameters initialised
    /// deterministically from `seed` (Glorot-uniform hidden layers, small output layers and
    /// zero biases and scales, so that a fresh flow is close to the identity). Custom
    /// transforms and nets need [`FlowModel::new_with`].
    pub fn new(config: &FlowConfig, lattice: &Lattice, seed: u64) -> Result<Self> {
        Self::new_with(config, lattice, seed, &LayerRegistry::new())
    }

    /// [`FlowModel::new`] for a configuration that may name custom transforms and nets,
    /// built by the constructors `registry` holds under their names; a name it does not
    /// hold is an [`Error::Unregistered`].
    pub fn new_with(
        config: &FlowConfig,
        lattice: &Lattice,
        seed: u64,
        registry: &LayerRegistry,
    ) -> Result<Self> {
        check_levels(lattice, config.levels())?;
        let mut builder = ParamBuilder::new(rng_from_seed(seed));
        // The size key of the first block whose parameters went past the builder's capacity.
        let mut too_large: Option<&str> = None;
        let mut layers = Vec::new();
        let mut layer_params = Vec::new();
        let mut groups = Vec::new();
        for layer in &config.layers {
            let start = builder.len();
            let first = layers.len();
            layers.extend(build_layers(
                std::slice::from_ref(layer),
                lattice,
                registry,
                &mut builder,
                &mut too_large,
            )?);
            layer_params.push(start..builder.len());
            groups.push(first..layers.len());
        }
        if let Some(name) = too_large {
            let f32_bytes = std::mem::size_of::<f32>() as u128;
            return Err(crate::limits::memory_error(
                name,
                &format!(
                    "a flow of {} parameters on a {lattice} lattice",
                    crate::limits::format_count(builder.requested())
                ),
                builder.requested().saturating_mul(f32_bytes),
                builder.capacity() * f32_bytes,
            ));
        }
        Ok(FlowModel {
            config: config.clone(),
            lattice: lattice.clone(),
            prior: Prior::new(&config.prior, lattice)?,
            layers,
            layer_params,
            groups,
            params: builder.finish(),
            metadata: BTreeMap::new(),
        })
    }

    /// Values one configuration's forward pass records on the tape: the networks' layer
    /// outputs and the coupling layers' gathers, transform parameters and outputs (a lower
    /// estimate of the memory a batch needs, per row, in the network float type; a
    /// training pass keeps a gradient of each as well).
    pub fn tape_values_per_row(&self) -> usize {
        let volume = self.lattice.volume();
        self.layers.iter().fold(0usize, |acc, layer| {
            acc.saturating_add(layer.tape_values_per_row(volume))
        })
    }

    /// Multiply-adds of the networks in one configuration's forward pass (custom nets
    /// counted by their parameters).
    pub fn multiply_adds_per_row(&self) -> usize {
        let volume = self.lattice.volume();
        self.layers.iter().fold(0usize, |acc, layer| {
            acc.saturating_add(layer.multiply_adds_per_row(volume))
        })
    }

    /// The configuration the flow was built from.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// The positions in [`FlowModel::params`] of the parameters of each element of the
    /// configuration's `layers` (a block's two coupling layers together, a coarse layer's
    /// whole inner flow).
    pub fn layer_params(&self) -> &[Range<usize>] {
        &self.layer_params
    }

    /// Number of trainable parameters.
    pub fn n_params(&self) -> usize {
        self.params.len()
    }

    /// The flat parameter vector.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat parameter vector, for optimisers.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Free-form metadata saved with the model (e.g. the action it was trained for).
    pub fn metadata(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.metadata
    }

    /// Mutable access to the metadata.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, serde_json::Value> {
        &mut self.metadata
    }

    fn check_batch(&self, x: &ArrayView2<impl Sized>) -> Result<()> {
        if x.ncols() != self.lattice.volume() {
            return Err(Error::Shape(format!(
                "batch has {} columns, the {} lattice has {} sites",
                x.ncols(),
                self.lattice,
                self.lattice.volume()
            )));
        }
        Ok(())
    }

    fn check_params(&self, len: usize) -> Result<()> {
        if len != self.params.len() {
            return Err(Error::Shape(format!(
                "the flow has {} parameters, got {len} values",
                self.params.len()
            )));
        }
        Ok(())
    }

    /// Records z → (φ, log|det ∂φ/∂z| as `[n, 1]`) on a tape, with parameters `params`
    /// (laid out like [`FlowModel::params`], in any float type).
    pub fn build_forward<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        z: Var,
    ) -> (Var, Var) {
        let n = tape.shape(z).0;
        let mut logdet = tape.zeros(n, 1);
        let mut x = z;
        for layer in &self.layers {
            (x, logdet) = layer.build(tape, params, x, logdet);
        }
        (x, logdet)
    }
}

/// The layers `configs` describe on `lattice`, in order, their parameters allocated in
/// `builder`; a coarse layer's are built recursively for its coarse lattice. `too_large`
/// receives the size key of the first block whose parameters went past the builder's
/// capacity.
fn build_layers<'c>(
    configs: &'c [LayerConfig],
    lattice: &Lattice,
    registry: &LayerRegistry,
    builder: &mut ParamBuilder,
    too_large: &mut Option<&'c str>,
) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for layer in configs {
        match layer {
            LayerConfig::Scale => layers.push(Layer::Scale(builder.zeros(1, 1).offset)),
            LayerConfig::FreeField(config) => layers.push(Layer::FreeField(FreeFieldLayer::new(
                config, lattice, builder,
            )?)),
            LayerConfig::Coarse { layers: inner } => {
                let coarse = CoarseLayer::new(lattice, |coarse| {
                    build_layers(inner, coarse, registry, builder, too_large)
                })?;
                layers.push(Layer::Coarse(coarse));
            }
            LayerConfig::Block(block) => {
                let (first, second) = match &block.partition {
                    Partition::Checkerboard => {
                        (lattice.sites_of_parity(0), lattice.sites_of_parity(1))
                    }
                    Partition::Sites { first } => {
                        let mut is_first = vec![false; lattice.volume()];
                        for &site in first.iter().filter(|&&s| s < lattice.volume()) {
                            is_first[site] = true;
                        }
                        let second = (0..lattice.volume()).filter(|&s| !is_first[s]).collect();
                        (first.clone(), second)
                    }
                    Partition::Refine => refine_partition(lattice)?,
                };
                for active in [first, second] {
                    let c = Coupling::from_config(lattice, active, block, registry, builder)?;
                    layers.push(Layer::Coupling(c));
                }
                if too_large.is_none() && builder.is_over_capacity() {
                    *too_large = Some(match &block.net {
                        NetConfig::Dense { .. } => "hidden",
                        NetConfig::Conv { .. } => "channels",
                        NetConfig::Custom { name, .. } => name,
                    });
                }
            }
        }
    }
    Ok(layers)
}

impl Flow for FlowModel {
    fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    fn prior(&self) -> &dyn LatentPrior {
        &self.prior
    }

    fn forward(&self, z: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        let mut ws = Workspace::per_thread();
        let (phi, logdet) = self.forward_in(&self.params, z, &mut ws)?;
        Ok((phi.to_owned(), logdet.to_owned()))
    }

    fn inverse(&self, phi: ArrayView2<f32>) -> Result<(Array2<f32>, Array1<f64>)> {
        let mut ws = Workspace::per_thread();
        let (z, logdet) = self.inverse_in(&self.params, phi, &mut ws)?;
        Ok((z.to_owned(), logdet.to_owned()))
    }

    /// Allocates nothing once `scratch` has seen a batch of this size (but the matrix
    /// products' small flag vectors).
    fn forward_into(
        &self,
        z: ArrayView2<f32>,
        mut phi: ArrayViewMut2<f32>,
        mut log_det: ArrayViewMut1<f64>,
        scratch: &mut FlowScratch,
    ) -> Result<()> {
        check_output("output buffers of", phi.dim(), log_det.len(), z.dim())?;
        let ws = scratch_workspace(scratch, z.nrows());
        let (value, ld) = self.forward_in(&self.params, z, ws)?;
        phi.assign(&value);
        log_det.assign(&ld);
        Ok(())
    }

    /// Allocates nothing once `scratch` has seen a batch of this size (but the matrix
    /// products' small flag vectors, and the free-field prior's nothing at all).
    fn log_density_into(
        &self,
        phi: ArrayView2<f32>,
        out: ArrayViewMut1<f64>,
        scratch: &mut FlowScratch,
    ) -> Result<()> {
        self.log_density_in(phi, scratch_workspace(scratch, phi.nrows()), out)
    }

    /// In f64 through the tape's backward pass to the input, with the parameters converted
    /// to f64; U = S − log|det| uses the tape's own log-det sum.
    fn pull_back(
        &self,
        z: &[f64],
        phi: &mut [f64],
        action: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
        grad_z: &mut [f64],
        scratch: &mut FlowScratch,
    ) -> Result<LatentPoint> {
        self.pull_back_f64(z, phi, action, grad_z, scratch)
    }

    fn inverse_f64(&self, phi: &[f64], z: &mut [f64], scratch: &mut FlowScratch) -> Result<f64> {
        self.inverse_f64_in(phi, z, scratch)
    }
}

impl TrainableFlow for FlowModel {
    type Workspace = Workspace<f32>;

    fn params(&self) -> &[f32] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    fn workspace(&self, chunks: usize) -> Workspace<f32> {
        Workspace::new(chunks)
    }

    /// Values and gradients of [`FlowModel::tape_values_per_row`] in f32.
    fn training_bytes_per_row(&self) -> usize {
        self.tape_values_per_row()
            .saturating_mul(2 * std::mem::size_of::<f32>())
    }

    fn multiply_adds_per_row(&self) -> usize {
        let custom = self.n_params();
        FlowModel::multiply_adds_per_row(self).max(custom)
    }

    fn forward_backward<'w, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Workspace<f32>,
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.forward_backward_with(&self.params, z, workspace, seed, grad)
    }

    fn forward_backward_scored<'w, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Workspace<f32>,
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        FlowModel::forward_backward_scored(self, z, workspace, seed, grad)
    }

    fn forward_backward_interleaved<'w, B, S>(
        &self,
        z: ArrayView2<f32>,
        workspace: &'w mut Workspace<f32>,
        interleave: (usize, B),
        seed: S,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        B: Fn(InterleaveSeed<'_, f32>) + Sync,
        S: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.forward_backward_interleaved_with(&self.params, z, workspace, interleave, seed, grad)
    }

    fn interleave(&self, k: usize) -> Result<InterleavedFlow> {
        FlowModel::interleave(self, k)
    }

    /// The [`FlowConfig`] as JSON.
    fn description(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null)
    }

    fn metadata(&self) -> Option<&BTreeMap<String, serde_json::Value>> {
        Some(&self.metadata)
    }

    fn metadata_mut(&mut self) -> Option<&mut BTreeMap<String, serde_json::Value>> {
        Some(&mut self.metadata)
    }
}
