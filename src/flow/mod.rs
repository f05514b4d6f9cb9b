//! Normalizing flows: the [`Flow`] trait (forward z → φ and inverse φ → z on batches, with
//! exact log-Jacobians), pointwise transforms, coupling layers, networks (built-in or a
//! user's [`ConditionerNet`]), the [`LayerRegistry`] of user layers, priors, recipes and
//! model files.
//!
//! ```
//! use latflow::flow::{Flow, FlowConfig, FlowModel};
//!
//! let lattice = latflow::Lattice::new(&[6, 6])?;
//! // The seed recipe: 2 Z2-affine blocks and one RQS block (K = 8), hidden width |Λ|.
//! let model = FlowModel::new(&FlowConfig::seed(36, 2, 8)?, &lattice, 1)?;
//! let (phi, log_p) = model.sample(10, &mut latflow::rng_from_seed(2));
//! let again = model.log_density(phi.view())?;
//! assert!((log_p[0] - again[0]).abs() < 1e-3);
//! # Ok::<(), latflow::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayView2};

use crate::lattice::Lattice;

mod layers;
mod model;
mod net;
mod prior;
mod recipe;
mod registry;
pub mod transform;

pub use layers::{Coupling, FlowFloat, Layer, TransformPair};
pub use model::{BatchOutput, ChunkSeed, FlowModel, MODEL_FORMAT_VERSION, Workspace};
pub use net::{
    AnyFloatConditioner, ConditionerNet, ConditionerOnTape, ConvNet, CustomNet, DenseNet, Net,
    NetContext, NetInput, ParamBuilder, conv_taps,
};
pub use prior::Prior;
pub use recipe::{
    BlockConfig, FlowConfig, LayerConfig, NetConfig, Partition, PriorConfig, TransformKind,
};
pub use registry::LayerRegistry;
pub use transform::{PointwiseTransform, Real};

/// An invertible map between latent and field configurations on a lattice.
///
/// Batches are `[n, volume]` arrays in f32 (network math); log-Jacobians are f64. A flow's
/// log-density is a fixed function of one configuration: no batch statistics.
pub trait Flow: Send + Sync {
    /// The lattice the flow acts on.
    fn lattice(&self) -> &Lattice;

    /// z → φ; returns φ and log|det ∂φ/∂z| for every row.
    fn forward(&self, z: ArrayView2<f32>) -> (Array2<f32>, Array1<f64>);

    /// φ → z; returns z and log|det ∂z/∂φ| (the negative of the forward log-det) for every row.
    fn inverse(&self, phi: ArrayView2<f32>) -> (Array2<f32>, Array1<f64>);
}
