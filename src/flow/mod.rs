//! Normalizing flows: the [`Flow`] trait (an invertible map z → φ with a latent prior
//! [`LatentPrior`] and exact log-densities) that sampling uses, the [`TrainableFlow`] trait
//! that training uses, and the built-in [`FlowModel`] made of pointwise transforms, coupling
//! layers and networks (built-in or a user's [`ConditionerNet`], registered by name in a
//! [`LayerRegistry`]), with its recipes and model files.
//!
//! ```
//! use latflow::flow::{Flow, FlowConfig, FlowModel};
//!
//! let lattice = latflow::Lattice::new(&[6, 6])?;
//! // The seed recipe: 2 Z2-affine blocks and one RQS block (K = 8), hidden width |Λ|.
//! let model = FlowModel::new(&FlowConfig::seed(36, 2, 8)?, &lattice, 1)?;
//! let (phi, log_p) = model.sample(10, &mut latflow::rng_from_seed(2))?;
//! let again = model.log_density(phi.view())?;
//! assert!((log_p[0] - again[0]).abs() < 1e-3);
//! # Ok::<(), latflow::Error>(())
//! ```

mod conv;
mod free_field;
mod layers;
mod model;
mod multiscale;
mod net;
mod prior;
mod recipe;
mod registry;
mod traits;
mod transfer;
pub mod transform;

pub use conv::{ConvNet, coarse_lattice, conv_taps, strided_conv_taps, upsampling_conv_taps};
pub use free_field::{FreeFieldConfig, FreeFieldKind, FreeFieldLayer, Spectrum, momentum_classes};
pub use layers::{Coupling, FlowFloat, Layer, TransformPair};
pub use model::{
    BatchOutput, ChunkSeed, FlowModel, InterleaveSeed, InterleavedFlow, LayerMap,
    MODEL_FORMAT_VERSION, OLDEST_MODEL_FORMAT_VERSION, PullBack, Workspace,
};
pub use multiscale::{CoarseLayer, check_levels};
pub use net::{
    AnyFloatConditioner, ConditionerNet, ConditionerOnTape, CustomNet, DenseNet, Net, NetContext,
    NetInput, ParamBuilder,
};
pub use prior::{LatentPrior, Prior};
pub use recipe::{
    BlockConfig, ConvFamily, FlowConfig, LayerConfig, NetConfig, Partition, PriorConfig,
    TransformKind,
};
pub use registry::LayerRegistry;
pub use traits::{Flow, FlowScratch, LatentPoint, TrainableFlow, ensure_same_lattice};
pub use transfer::{TransferRule, transfer, transfer_rule};
pub use transform::{PointwiseTransform, Real};
