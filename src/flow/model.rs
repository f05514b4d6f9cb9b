//! [`FlowModel`]: a prior and a sequence of layers with all parameters in one flat vector;
//! exact sampling and density evaluation, the data-parallel forward + backward pass that
//! training needs ([`FlowModel::forward_backward`] with its reusable [`Workspace`]), and
//! model files (JSON of config, lattice, parameters and metadata, written atomically).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::{Error, Result};
use crate::flow::layers::{Coupling, FlowFloat, InvertScratch, Layer, ScoreScratch};
use crate::flow::net::{Net, ParamBuilder};
use crate::flow::prior::{LatentPrior, Prior};
use crate::flow::recipe::{FlowConfig, LayerConfig, NetConfig, Partition};
use crate::flow::registry::LayerRegistry;
use crate::flow::traits::{Flow, FlowScratch, TrainableFlow, check_output};
use crate::lattice::Lattice;
use crate::rng::rng_from_seed;
use crate::tape::{Tape, Var, ensure_shape};

/// Version of the model-file format written by [`FlowModel::save`].
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// Gradient entries per parallel task of the reduction over chunks.
const REDUCE_BLOCK: usize = 8192;

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
        let mut builder = ParamBuilder::new(rng_from_seed(seed));
        let mut layers = Vec::new();
        // The size key of the first block whose parameters went past the builder's capacity.
        let mut too_large: Option<&str> = None;
        for layer in &config.layers {
            match layer {
                LayerConfig::Scale => layers.push(Layer::Scale(builder.zeros(1, 1).offset)),
                LayerConfig::Block(block) => {
                    let first = match &block.partition {
                        Partition::Checkerboard => lattice.sites_of_parity(0),
                        Partition::Sites { first } => first.clone(),
                    };
                    let mut is_first = vec![false; lattice.volume()];
                    for &site in first.iter().filter(|&&s| s < lattice.volume()) {
                        is_first[site] = true;
                    }
                    let second = (0..lattice.volume()).filter(|&s| !is_first[s]).collect();
                    for active in [first, second] {
                        let c =
                            Coupling::from_config(lattice, active, block, registry, &mut builder)?;
                        layers.push(Layer::Coupling(c));
                    }
                    if too_large.is_none() && builder.is_over_capacity() {
                        too_large = Some(match &block.net {
                            NetConfig::Dense { .. } => "hidden",
                            NetConfig::Conv { .. } => "channels",
                            NetConfig::Custom { name, .. } => name,
                        });
                    }
                }
            }
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
            let values = match layer {
                Layer::Scale(_) => volume,
                Layer::Coupling(c) => {
                    let active = c.active().len();
                    let k = c.transform().params_per_site();
                    let nets = c.nets().iter().fold(0usize, |acc, net| {
                        acc.saturating_add(match net {
                            Net::Dense(dense) => dense.tape_values_per_row(),
                            Net::Conv(conv) => conv.tape_values_per_row().saturating_add(volume),
                            Net::Custom(_) => 0,
                        })
                    });
                    // Passive gather, θ, active gather, transform output and the scatter.
                    let own = c.passive().len() + active.saturating_mul(k) + 2 * active + volume;
                    nets.saturating_add(own)
                }
            };
            acc.saturating_add(values)
        })
    }

    /// Multiply-adds of the networks in one configuration's forward pass (custom nets
    /// counted by their parameters).
    pub fn multiply_adds_per_row(&self) -> usize {
        let volume = self.lattice.volume();
        self.layers.iter().fold(0usize, |acc, layer| {
            let work = match layer {
                Layer::Scale(_) => volume,
                Layer::Coupling(c) => c.nets().iter().fold(volume, |acc, net| {
                    acc.saturating_add(match net {
                        Net::Dense(dense) => dense.multiply_adds_per_row(),
                        Net::Conv(conv) => conv.multiply_adds_per_row(),
                        Net::Custom(_) => 0,
                    })
                }),
            };
            acc.saturating_add(work)
        })
    }

    /// The configuration the flow was built from.
    pub fn config(&self) -> &FlowConfig {
        &self.config
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

    /// z → φ with `params`; returns φ and the forward log-det per row. Panics unless `z` has
    /// one column per site and `params` the model's length (see [`FlowModel::n_params`]);
    /// [`FlowModel::forward_in`] returns an error instead and reuses its buffers.
    pub fn forward_with<T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
    ) -> (Array2<T>, Array1<f64>) {
        let mut ws = Workspace::per_thread();
        match self.forward_in(params, z, &mut ws) {
            Ok((phi, logdet)) => (phi.to_owned(), logdet.to_owned()),
            Err(e) => panic!("{e}"),
        }
    }

    /// z → (φ, log|det ∂φ/∂z| per row) with `params`, data-parallel over the workspace's
    /// batch chunks and reusing its tapes and buffers, so that repeated calls with batches of
    /// one size allocate nothing. Returns views into the workspace.
    pub fn forward_in<'w, T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
    ) -> Result<(ArrayView2<'w, T>, ArrayView1<'w, f64>)> {
        self.check_batch(&z)?;
        self.check_params(params.len())?;
        ws.fit(z.dim());
        let (n, parts) = (z.nrows(), ws.chunks.len());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            chunk.phi_var = None;
            if a == b {
                return;
            }
            let (x, _) = chunk.record_forward(self, params, z.slice(s![a..b, ..]), false);
            chunk.phi_var = Some(x);
        });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            if let Some(x) = chunk.phi_var {
                ws.phi.slice_mut(s![a..b, ..]).assign(&chunk.tape.value(x));
                ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
            }
        }
        Ok((ws.phi.view(), ws.logdet.view()))
    }

    /// φ → z with `params`; returns z and the inverse log-det per row. Panics unless `phi`
    /// has one column per site and `params` the model's length;
    /// [`FlowModel::inverse_in`] returns an error instead and reuses its buffers.
    pub fn inverse_with<T: FlowFloat>(
        &self,
        params: &[T],
        phi: ArrayView2<T>,
    ) -> (Array2<T>, Array1<f64>) {
        let mut ws = Workspace::per_thread();
        match self.inverse_in(params, phi, &mut ws) {
            Ok((z, logdet)) => (z.to_owned(), logdet.to_owned()),
            Err(e) => panic!("{e}"),
        }
    }

    /// φ → (z, log|det ∂z/∂φ| per row) with `params`, data-parallel over the workspace's
    /// batch chunks and reusing its tapes and buffers, so that repeated calls with batches of
    /// one size allocate nothing. Returns views into the workspace.
    pub fn inverse_in<'w, T: FlowFloat>(
        &self,
        params: &[T],
        phi: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
    ) -> Result<(ArrayView2<'w, T>, ArrayView1<'w, f64>)> {
        self.check_batch(&phi)?;
        self.check_params(params.len())?;
        ws.fit(phi.dim());
        let (n, parts) = (phi.nrows(), ws.chunks.len());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            let rows = phi.slice(s![a..b, ..]);
            ensure_shape(&mut chunk.x, rows.dim());
            chunk.x.assign(&rows);
            if chunk.logdet.len() != b - a {
                chunk.logdet = Array1::zeros(b - a);
            }
            chunk.logdet.fill(0.0);
            if a == b {
                return;
            }
            for layer in self.layers.iter().rev() {
                layer.invert_reusing(
                    &mut chunk.tape,
                    params,
                    &mut chunk.x,
                    &mut chunk.logdet,
                    &mut chunk.invert_scratch,
                );
            }
        });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            ws.phi.slice_mut(s![a..b, ..]).assign(&chunk.x);
            ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
        }
        Ok((ws.phi.view(), ws.logdet.view()))
    }

    /// [`Flow::log_density`] of every row into `out`, reusing the workspace's buffers
    /// (with the standard-normal prior, repeated calls allocate nothing but the matrix
    /// products' small flag vectors).
    pub fn log_density_in(
        &self,
        phi: ArrayView2<f32>,
        ws: &mut Workspace<f32>,
        mut out: ArrayViewMut1<f64>,
    ) -> Result<()> {
        if out.len() != phi.nrows() {
            return Err(Error::Shape(format!(
                "{} rows need {} log-densities, got room for {}",
                phi.nrows(),
                phi.nrows(),
                out.len()
            )));
        }
        let (z, logdet) = self.inverse_in(&self.params, phi, ws)?;
        self.prior.log_density_into(z, out.view_mut())?;
        out.zip_mut_with(&logdet, |o, &l| *o += l);
        Ok(())
    }

    /// One training pass in f32 with the model's own parameters: see
    /// [`FlowModel::forward_backward_with`].
    pub fn forward_backward<'w, F>(
        &self,
        z: ArrayView2<f32>,
        ws: &'w mut Workspace<f32>,
        seed: F,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        F: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.pass(&self.params, z, ws, seed, grad, false)
    }

    /// [`FlowModel::forward_backward`] whose seed also receives the score ∇_φ log p̃(φ) of
    /// every row ([`ChunkSeed::score`]): see [`FlowModel::forward_backward_scored_with`].
    pub fn forward_backward_scored<'w, F>(
        &self,
        z: ArrayView2<f32>,
        ws: &'w mut Workspace<f32>,
        seed: F,
        grad: &mut [f32],
    ) -> Result<BatchOutput<'w, f32>>
    where
        F: Fn(ChunkSeed<'_, f32>) + Sync,
    {
        self.pass(&self.params, z, ws, seed, grad, true)
    }

    /// [`FlowModel::forward_backward_with`] whose seed also receives, in
    /// [`ChunkSeed::score`], the score ∇_φ log p̃_θ(φ) of every row at φ = f(z) and fixed
    /// θ, which the path gradient of the reverse KL needs. It is carried forward layer by
    /// layer from the prior's ∇_z log r(z) while the forward pass is recorded, so the flow
    /// is never inverted: each coupling layer adds one vector–Jacobian product through its
    /// conditioner on the recorded graph (no parameter gradients).
    pub fn forward_backward_scored_with<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.pass(params, z, ws, seed, grad, true)
    }

    /// φ = f(z) and the score ∇_φ log p̃(φ) of every row with `params`, by the forward
    /// recursion of [`FlowModel::forward_backward_scored_with`].
    pub fn forward_score_with<T: FlowFloat>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
    ) -> Result<(Array2<T>, Array2<T>)> {
        self.check_batch(&z)?;
        self.check_params(params.len())?;
        let mut ws = Workspace::<T>::new(1);
        let chunk = &mut ws.chunks[0];
        let (phi, _) = chunk.record_forward_scored(self, params, z);
        Ok((chunk.tape.value(phi).to_owned(), chunk.score.clone()))
    }

    /// Forward pass z → (φ, log-det) and backward pass to the parameters, data-parallel over
    /// the workspace's fixed number of batch chunks.
    ///
    /// For each chunk, `seed` receives a [`ChunkSeed`]: φ and the log-det of the chunk's rows,
    /// where it writes ∂L/∂φ and ∂L/∂logdet (for reverse KL, ∂S/∂φ / N and −1/N) and may
    /// record one f64 per row (e.g. S(φ)). `grad` is overwritten with ∂L/∂θ, summed over
    /// chunks in chunk order, so the result depends only on the inputs and the workspace's
    /// chunk count. Returns φ, the log-det and the recorded values of the whole batch. The
    /// log-det here is the tape's own sum (what the gradient flows through), which equals the
    /// f64 per-layer sum of [`FlowModel::forward_in`] up to the rounding of the network
    /// float type.
    pub fn forward_backward_with<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.pass(params, z, ws, seed, grad, false)
    }

    /// The training pass, carrying the score of every row along when `with_score`.
    fn pass<'w, T, F>(
        &self,
        params: &[T],
        z: ArrayView2<T>,
        ws: &'w mut Workspace<T>,
        seed: F,
        grad: &mut [T],
        with_score: bool,
    ) -> Result<BatchOutput<'w, T>>
    where
        T: FlowFloat,
        F: Fn(ChunkSeed<'_, T>) + Sync,
    {
        self.check_batch(&z)?;
        let np = self.params.len();
        if params.len() != np || grad.len() != np {
            return Err(Error::Shape(format!(
                "the flow has {np} parameters, got {} values and a gradient of {}",
                params.len(),
                grad.len()
            )));
        }
        let n = z.nrows();
        let parts = ws.chunks.len();
        ws.fit(z.dim());
        ws.chunks.par_iter_mut().enumerate().for_each(|(i, chunk)| {
            let (a, b) = crate::parallel::share(n, parts, i);
            chunk.grad.clear();
            chunk.grad.resize(np, T::zero());
            if a == b {
                return;
            }
            let rows = z.slice(s![a..b, ..]);
            let (phi, ld) = if with_score {
                chunk.record_forward_scored(self, params, rows)
            } else {
                chunk.record_forward(self, params, rows, true)
            };
            if chunk.grad_logdet.len() != b - a {
                chunk.grad_logdet = Array1::zeros(b - a);
                chunk.record = Array1::zeros(b - a);
            }
            let tape = &mut chunk.tape;
            chunk.grad_logdet.fill(T::zero());
            chunk.record.fill(0.0);
            tape.zero_grads();
            {
                let (phi_value, phi_grad) = tape.value_and_grad_mut(phi);
                seed(ChunkSeed {
                    phi: phi_value,
                    logdet: chunk.logdet.view(),
                    grad_phi: phi_grad,
                    grad_logdet: chunk.grad_logdet.view_mut(),
                    record: chunk.record.view_mut(),
                    score: with_score.then(|| chunk.score.view()),
                });
            }
            tape.grad_mut(ld).column_mut(0).assign(&chunk.grad_logdet);
            tape.backward(params, &mut chunk.grad);
            chunk.phi_var = Some(phi);
        });
        // Every element sums the chunks in chunk order, whichever thread adds it up.
        let chunks = &ws.chunks;
        grad.par_chunks_mut(REDUCE_BLOCK)
            .enumerate()
            .for_each(|(j, out)| {
                out.fill(T::zero());
                for chunk in chunks {
                    let part = &chunk.grad[j * REDUCE_BLOCK..j * REDUCE_BLOCK + out.len()];
                    for (g, &c) in out.iter_mut().zip(part) {
                        *g = *g + c;
                    }
                }
            });
        for (i, chunk) in ws.chunks.iter().enumerate() {
            let (a, b) = crate::parallel::share(n, parts, i);
            if let (Some(phi), true) = (chunk.phi_var, a < b) {
                ws.phi
                    .slice_mut(s![a..b, ..])
                    .assign(&chunk.tape.value(phi));
                ws.logdet.slice_mut(s![a..b]).assign(&chunk.logdet);
                ws.record.slice_mut(s![a..b]).assign(&chunk.record);
            }
        }
        Ok(BatchOutput {
            phi: ws.phi.view(),
            logdet: ws.logdet.view(),
            record: ws.record.view(),
        })
    }

    /// Writes the model (format version, config, lattice, parameters, metadata) as JSON,
    /// atomically: a temporary file in the same directory is renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let file = ModelFile {
            format_version: MODEL_FORMAT_VERSION,
            config: self.config.clone(),
            lattice: self.lattice.clone(),
            params: self.params.clone(),
            metadata: self.metadata.clone(),
        };
        let text =
            serde_json::to_vec(&file).map_err(|e| Error::format("model file", e.to_string()))?;
        crate::io::write_atomic(path, &text)
    }

    /// Reads a model file, checking its format version and that its parameter vector fits
    /// its configuration on its lattice. A model with custom transforms or nets needs
    /// [`FlowModel::load_with`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LayerRegistry::new())
    }

    /// [`FlowModel::load`] for a model that may name custom transforms and nets, built by
    /// the constructors `registry` holds under their names; a name it does not hold is an
    /// [`Error::Unregistered`].
    pub fn load_with(path: impl AsRef<Path>, registry: &LayerRegistry) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let file: ModelFile = serde_json::from_slice(&text)
            .map_err(|e| Error::format(format!("model file {}", path.display()), e.to_string()))?;
        if file.format_version != MODEL_FORMAT_VERSION {
            return Err(Error::Incompatible(format!(
                "{} has model format version {}, this library reads version {}",
                path.display(),
                file.format_version,
                MODEL_FORMAT_VERSION
            )));
        }
        let mut model = FlowModel::new_with(&file.config, &file.lattice, 0, registry)
            .map_err(|e| e.in_file("model file", path))?;
        if file.params.len() != model.params.len() {
            return Err(Error::Incompatible(format!(
                "{} holds {} parameters, its configuration on a {} lattice needs {}",
                path.display(),
                file.params.len(),
                file.lattice,
                model.params.len()
            )));
        }
        if let Some(i) = file.params.iter().position(|p| !p.is_finite()) {
            return Err(Error::NonFinite(format!(
                "parameter {i} of {}",
                path.display()
            )));
        }
        model.params = file.params;
        model.metadata = file.metadata;
        Ok(model)
    }

    /// [`FlowModel::load`], refusing a model made for a different lattice.
    pub fn load_for(path: impl AsRef<Path>, lattice: &Lattice) -> Result<Self> {
        let model = Self::load(path.as_ref())?;
        if model.lattice != *lattice {
            return Err(Error::Incompatible(format!(
                "{} was made for a {} lattice, not {}",
                path.as_ref().display(),
                model.lattice,
                lattice
            )));
        }
        Ok(model)
    }
}

/// The workspace a [`FlowScratch`] keeps for batches of `rows` rows: one chunk per rayon
/// thread, or per row when there are fewer rows than threads.
fn scratch_workspace(scratch: &mut FlowScratch, rows: usize) -> &mut Workspace<f32> {
    let chunks = rows.clamp(1, rayon::current_num_threads());
    let ws = scratch.get_or_insert_with(|| Workspace::<f32>::new(chunks));
    if ws.n_chunks() != chunks {
        *ws = Workspace::new(chunks);
    }
    ws
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

#[derive(Serialize, Deserialize)]
struct ModelFile {
    format_version: u32,
    config: FlowConfig,
    lattice: Lattice,
    params: Vec<f32>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

/// What the gradient seed of [`FlowModel::forward_backward`] sees and writes for one chunk of
/// the batch.
pub struct ChunkSeed<'a, T> {
    /// φ of the chunk's rows, `[rows, volume]`.
    pub phi: ArrayView2<'a, T>,
    /// log|det ∂φ/∂z| of the chunk's rows.
    pub logdet: ArrayView1<'a, f64>,
    /// ∂L/∂φ to be written (zero on entry).
    pub grad_phi: ArrayViewMut2<'a, T>,
    /// ∂L/∂logdet to be written (zero on entry).
    pub grad_logdet: ArrayViewMut1<'a, T>,
    /// One free f64 per row (zero on entry), returned in [`BatchOutput::record`], e.g. S(φ).
    pub record: ArrayViewMut1<'a, f64>,
    /// The score ∇_φ log p̃(φ) of the chunk's rows at fixed parameters, `[rows, volume]`,
    /// when the pass was asked for it (path gradients), else `None`.
    pub score: Option<ArrayView2<'a, T>>,
}

/// The whole batch after [`FlowModel::forward_backward`] (views into the workspace).
pub struct BatchOutput<'w, T> {
    /// φ = f(z), `[n, volume]`.
    pub phi: ArrayView2<'w, T>,
    /// log|det ∂φ/∂z| per row.
    pub logdet: ArrayView1<'w, f64>,
    /// The values the seed recorded per row.
    pub record: ArrayView1<'w, f64>,
}

struct ChunkWork<T: FlowFloat> {
    tape: Tape<T>,
    /// The chunk's rows during an inverse pass.
    x: Array2<T>,
    invert_scratch: InvertScratch<T>,
    grad: Vec<T>,
    logdet: Array1<f64>,
    grad_logdet: Array1<T>,
    record: Array1<f64>,
    phi_var: Option<Var>,
    /// ∇_φ log p̃(φ) of the chunk's rows after [`ChunkWork::record_forward_scored`].
    score: Array2<T>,
    score_scratch: ScoreScratch<T>,
    /// One row and the free field's force, for a free-field prior's score.
    prior_row: Vec<f64>,
    prior_force: Vec<f64>,
}

impl<T: FlowFloat> ChunkWork<T> {
    /// [`ChunkWork::record_forward`] for a backward pass that also carries the score from
    /// the prior's ∇_z log r(z) into `score` = ∇_φ log p̃(φ) (see [`Layer::build_scored`]).
    fn record_forward_scored(
        &mut self,
        model: &FlowModel,
        params: &[T],
        z: ArrayView2<T>,
    ) -> (Var, Var) {
        self.tape.reset();
        self.tape.set_save_for_backward(true);
        ensure_shape(&mut self.score, z.dim());
        match &model.prior {
            Prior::StandardNormal => self.score.zip_mut_with(&z, |w, &x| *w = -x),
            Prior::FreeField(field) => {
                self.prior_row.resize(z.ncols(), 0.0);
                self.prior_force.resize(z.ncols(), 0.0);
                for (row, mut w) in z.outer_iter().zip(self.score.outer_iter_mut()) {
                    for (a, &b) in self.prior_row.iter_mut().zip(row.iter()) {
                        *a = b.to_f64().unwrap_or(f64::NAN);
                    }
                    field.force(&self.prior_row, &mut self.prior_force);
                    for (w, &f) in w.iter_mut().zip(&self.prior_force) {
                        *w = T::from_f64(-f).unwrap_or_else(T::nan);
                    }
                }
            }
        }
        let n = z.nrows();
        let mut x = self.tape.input_with_grad(z);
        let mut ld = self.tape.zeros(n, 1);
        for layer in &model.layers {
            (x, ld) = layer.build_scored(
                &mut self.tape,
                params,
                x,
                ld,
                &mut self.score,
                &mut self.score_scratch,
            );
        }
        if self.logdet.len() != n {
            self.logdet = Array1::zeros(n);
        }
        for (o, &l) in self.logdet.iter_mut().zip(self.tape.value(ld).iter()) {
            *o = l.to_f64().unwrap_or(f64::NAN);
        }
        (x, ld)
    }

    /// Records z → φ of the chunk's rows `z` on the chunk's tape and stores the log-det of
    /// each row, summed in f64 from the per-site terms, in `logdet`; returns the φ and
    /// log-det variables (the latter in `T`, for the backward pass).
    /// `for_backward` keeps the state pointwise transforms save for a backward pass.
    fn record_forward(
        &mut self,
        model: &FlowModel,
        params: &[T],
        z: ArrayView2<T>,
        for_backward: bool,
    ) -> (Var, Var) {
        self.tape.reset();
        self.tape.set_save_for_backward(for_backward);
        let n = z.nrows();
        if self.logdet.len() != n {
            self.logdet = Array1::zeros(n);
        }
        self.logdet.fill(0.0);
        let mut x = self.tape.input(z);
        if for_backward {
            // Training needs the log-det only through its gradient and the loss: the tape's
            // own sum serves, and the pass stays as lean as it can be.
            let ld;
            (x, ld) = model.build_forward(&mut self.tape, params, x);
            for (o, &l) in self.logdet.iter_mut().zip(self.tape.value(ld).iter()) {
                *o = l.to_f64().unwrap_or(f64::NAN);
            }
            return (x, ld);
        }
        // The graph of `build_forward`, with the log-det also summed in f64 per layer, so
        // that log p̃ of a drawn φ matches the inverse path's (the bound on `FlowModel`).
        let mut ld = self.tape.zeros(n, 1);
        for layer in &model.layers {
            (x, ld) = layer.build_exact(&mut self.tape, params, x, ld, &mut self.logdet);
        }
        (x, ld)
    }
}

/// Reusable buffers of [`FlowModel::forward_backward`]: one tape and gradient buffer per
/// batch chunk. The chunk count fixes the summation order of the gradient, so results are
/// reproducible for a given seed and chunk count.
pub struct Workspace<T: FlowFloat> {
    chunks: Vec<ChunkWork<T>>,
    phi: Array2<T>,
    logdet: Array1<f64>,
    record: Array1<f64>,
}

impl<T: FlowFloat> Workspace<T> {
    /// A workspace that splits batches into `chunks` parts (at least one).
    pub fn new(chunks: usize) -> Self {
        Workspace {
            chunks: (0..chunks.max(1))
                .map(|_| ChunkWork {
                    tape: Tape::new(),
                    x: Array2::zeros((0, 0)),
                    invert_scratch: InvertScratch::default(),
                    grad: Vec::new(),
                    logdet: Array1::zeros(0),
                    grad_logdet: Array1::zeros(0),
                    record: Array1::zeros(0),
                    phi_var: None,
                    score: Array2::zeros((0, 0)),
                    score_scratch: ScoreScratch::default(),
                    prior_row: Vec::new(),
                    prior_force: Vec::new(),
                })
                .collect(),
            phi: Array2::zeros((0, 0)),
            logdet: Array1::zeros(0),
            record: Array1::zeros(0),
        }
    }

    /// One chunk per rayon thread.
    pub fn per_thread() -> Self {
        Self::new(rayon::current_num_threads())
    }

    /// Number of batch chunks.
    pub fn n_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Sizes the whole-batch buffers for a batch of `dim` = (rows, sites).
    fn fit(&mut self, dim: (usize, usize)) {
        if self.phi.dim() != dim {
            self.phi = Array2::zeros(dim);
            self.logdet = Array1::zeros(dim.0);
            self.record = Array1::zeros(dim.0);
        }
    }
}
