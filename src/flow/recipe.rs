//! Flow configurations: a serde-able [`FlowConfig`] that describes a flow completely (prior,
//! layers, transforms, networks), and the recipes (docs/flows.md#recipes) that build one (`seed`,
//! `real_nvp`, `additive`, convolutional and multiscale variants, and a free-field layer in
//! front of any of them). A user's transform or net appears
//! as a `custom` entry: a name and a free-form JSON configuration, turned into the object by
//! the constructor registered under that name in a
//! [`LayerRegistry`](crate::flow::LayerRegistry).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::flow::free_field::FreeFieldConfig;
use crate::flow::transform::Rqs;
use crate::lattice::Lattice;

/// The latent distribution r(z).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PriorConfig {
    /// Independent N(0, 1) at every site.
    #[default]
    StandardNormal,
    /// The exact free field of mass² `m0sq` (standard form, docs/actions.md#free-field):
    /// the flow then only has to learn the interacting part.
    FreeField {
        /// Bare mass squared m0² (> 0).
        m0sq: f64,
    },
}

/// The pointwise transform of a coupling block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransformKind {
    /// C = v − t.
    Additive,
    /// C = (v − t) e^{−s}.
    Affine,
    /// C = (v − t) e^{−|s|}, with bias-free nets: Z2-equivariant.
    Z2Affine,
    /// Rational-quadratic spline (segments, interval, minimum bin sizes).
    Rqs(Rqs),
    /// A user's transform: built by the layer registry's transform entry `name` from
    /// `config`.
    Custom {
        /// The registry entry.
        name: String,
        /// The entry's configuration (null if absent).
        #[serde(default)]
        config: serde_json::Value,
    },
}

/// The network that computes a block's transform parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NetConfig {
    /// Fully connected over the passive sites, tanh between layers, linear output.
    Dense {
        /// Hidden widths (one entry per hidden layer).
        hidden: Vec<usize>,
        /// Whether the layers have biases (must be false for Z2-affine).
        bias: bool,
    },
    /// Periodic convolutions over the lattice with the active sites zeroed.
    Conv {
        /// Hidden channels (one entry per hidden layer).
        channels: Vec<usize>,
        /// Kernel extent k (odd): k^d taps.
        kernel: usize,
        /// Whether the layers have biases (must be false for Z2-affine).
        bias: bool,
    },
    /// A user's conditioner net: built by the layer registry's net entry `name` from
    /// `config`.
    Custom {
        /// The registry entry.
        name: String,
        /// The entry's configuration (null if absent).
        #[serde(default)]
        config: serde_json::Value,
    },
}

impl NetConfig {
    /// Whether the net's layers carry biases (a custom net's own business: false).
    pub fn has_bias(&self) -> bool {
        match self {
            NetConfig::Dense { bias, .. } | NetConfig::Conv { bias, .. } => *bias,
            NetConfig::Custom { .. } => false,
        }
    }
}

/// How the sites are split into the two halves of a block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Partition {
    /// Even sites first, then odd sites (the parity of Σ_μ x_μ).
    #[default]
    Checkerboard,
    /// The given sites first, then their complement.
    Sites {
        /// The sites updated by the first layer of the block.
        first: Vec<usize>,
    },
    /// The checkerboard without the sites whose coordinates are all even: those stay
    /// passive in both layers, so that the block refines a field given on the coarse
    /// sublattice (multiscale flows). Every extent must be even.
    Refine,
}

/// Two coupling layers: the first updates one half of the partition, the second the other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// The pointwise transform of both layers.
    pub transform: TransformKind,
    /// The network of both layers.
    pub net: NetConfig,
    /// One network per transform parameter (e.g. separate s and t nets) instead of one net
    /// with all parameters as outputs.
    pub separate_nets: bool,
    /// The split of the sites.
    #[serde(default)]
    pub partition: Partition,
}

/// One element of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerConfig {
    /// A pair of coupling layers.
    Block(BlockConfig),
    /// Global rescaling φ → e^c φ with a learnable c (initially 0).
    Scale,
    /// A learnable Gaussian map diagonal in momentum space, φ → F⁻¹ diag(σ) F φ.
    FreeField(FreeFieldConfig),
    /// The layers `layers` applied to the sites whose coordinates are all even, as a flow
    /// on the coarse lattice of half the extents; the other sites are left as they are.
    /// Every extent must be even.
    Coarse {
        /// The coarse flow's layers (built for the coarse lattice).
        layers: Vec<LayerConfig>,
    },
}

/// A complete description of a flow: enough to rebuild it (given a lattice and parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    /// The latent distribution.
    pub prior: PriorConfig,
    /// The layers, applied in order from latent to field.
    pub layers: Vec<LayerConfig>,
}

/// The family of flows whose size does not grow with the lattice (docs/flows.md#recipes):
/// Z2-affine coupling blocks with periodic convolutional nets (bias-free, one net for s
/// and one for t), optionally arranged in coarse levels, with an optional spline block on
/// top and an optional free-field layer in front.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvFamily {
    /// Coarse levels (0: every block acts on the whole lattice).
    pub levels: usize,
    /// Z2-affine blocks on the coarsest lattice (the whole lattice without levels).
    pub blocks: usize,
    /// Z2-affine refinement blocks at every finer level.
    pub refine_blocks: usize,
    /// Hidden channels of every net (one entry per hidden layer).
    pub channels: Vec<usize>,
    /// Kernel extent (odd).
    pub kernel: usize,
    /// Segments of a spline block on top (convolutional nets with biases, between two
    /// learnable scales, on [−5, 5]); `None`: none, and the flow is exactly
    /// Z2-equivariant.
    pub spline: Option<usize>,
    /// A free-field layer in front.
    pub free_field: Option<FreeFieldConfig>,
}

impl ConvFamily {
    /// The flow configuration. Without levels, spline or free-field layer it is
    /// [`FlowConfig::convolutional`] with Z2-affine blocks.
    pub fn config(&self) -> Result<FlowConfig> {
        let block = |bias| NetConfig::Conv {
            channels: self.channels.clone(),
            kernel: self.kernel,
            bias,
        };
        let z2 = BlockConfig {
            transform: TransformKind::Z2Affine,
            net: block(false),
            separate_nets: true,
            partition: Partition::Checkerboard,
        };
        let coarsest = vec![LayerConfig::Block(z2.clone()); self.blocks];
        let refine = vec![z2; self.refine_blocks];
        let mut config = FlowConfig::multiscale(self.levels, &coarsest, &refine);
        if let Some(segments) = self.spline {
            config.layers.push(LayerConfig::Scale);
            config.layers.push(LayerConfig::Block(BlockConfig {
                transform: TransformKind::Rqs(Rqs::new(segments, 5.0)?),
                net: block(true),
                separate_nets: false,
                partition: Partition::Checkerboard,
            }));
            config.layers.push(LayerConfig::Scale);
        }
        if let Some(free_field) = &self.free_field {
            config = config.with_free_field(free_field.clone());
        }
        Ok(config)
    }
}

impl FlowConfig {
    /// `affine_blocks` Z2-equivariant affine blocks with separate bias-free s and t nets of
    /// one hidden layer of width `hidden`, then a learnable output scale: a flow that
    /// commutes with φ → −φ.
    pub fn z2_affine(affine_blocks: usize, hidden: usize) -> Self {
        let block = BlockConfig {
            transform: TransformKind::Z2Affine,
            net: NetConfig::Dense {
                hidden: vec![hidden],
                bias: false,
            },
            separate_nets: true,
            partition: Partition::Checkerboard,
        };
        let mut layers = vec![LayerConfig::Block(block); affine_blocks];
        layers.push(LayerConfig::Scale);
        FlowConfig {
            prior: PriorConfig::StandardNormal,
            layers,
        }
    }

    /// The seed recipe (docs/flows.md#recipes): `affine_blocks`
    /// Z2-affine blocks (separate bias-free s and t nets, one hidden layer of width
    /// `hidden`), a learnable scale, one RQS block with `bins` segments on [−5, 5] (one net
    /// with biases, same width), and a learnable output scale.
    pub fn seed(hidden: usize, affine_blocks: usize, bins: usize) -> Result<Self> {
        let mut config = Self::z2_affine(affine_blocks, hidden);
        config.layers.pop();
        config.layers.push(LayerConfig::Scale);
        config.layers.push(LayerConfig::Block(BlockConfig {
            transform: TransformKind::Rqs(Rqs::new(bins, 5.0)?),
            net: NetConfig::Dense {
                hidden: vec![hidden],
                bias: true,
            },
            separate_nets: false,
            partition: Partition::Checkerboard,
        }));
        config.layers.push(LayerConfig::Scale);
        Ok(config)
    }

    /// Real NVP: `blocks` affine blocks, one dense net with biases and the given hidden widths.
    pub fn real_nvp(blocks: usize, hidden: &[usize]) -> Self {
        Self::dense_blocks(TransformKind::Affine, blocks, hidden)
    }

    /// Additive (NICE) blocks, one dense net with biases and the given hidden widths.
    pub fn additive(blocks: usize, hidden: &[usize]) -> Self {
        Self::dense_blocks(TransformKind::Additive, blocks, hidden)
    }

    fn dense_blocks(transform: TransformKind, blocks: usize, hidden: &[usize]) -> Self {
        let block = BlockConfig {
            transform,
            net: NetConfig::Dense {
                hidden: hidden.to_vec(),
                bias: true,
            },
            separate_nets: false,
            partition: Partition::Checkerboard,
        };
        FlowConfig {
            prior: PriorConfig::StandardNormal,
            layers: vec![LayerConfig::Block(block); blocks],
        }
    }

    /// Convolutional variant: `blocks` blocks of `transform` with periodic `kernel^d`
    /// convolutions and the given hidden channels (bias-free for Z2-affine).
    pub fn convolutional(
        transform: TransformKind,
        blocks: usize,
        channels: &[usize],
        kernel: usize,
    ) -> Self {
        let z2 = transform == TransformKind::Z2Affine;
        let block = BlockConfig {
            separate_nets: z2,
            transform,
            net: NetConfig::Conv {
                channels: channels.to_vec(),
                kernel,
                bias: !z2,
            },
            partition: Partition::Checkerboard,
        };
        FlowConfig {
            prior: PriorConfig::StandardNormal,
            layers: vec![LayerConfig::Block(block); blocks],
        }
    }

    /// A multiscale flow of `levels` levels (docs/flows.md#multiscale-flows): the layers
    /// `coarsest` on the lattice of extents L/2^levels, then at every finer level the
    /// blocks `refine`, whose partition is replaced by [`Partition::Refine`], so that each
    /// level adds the sites between those of the level below. With `levels = 0` it is
    /// `coarsest` alone. Its lattices need extents divisible by 2^levels.
    pub fn multiscale(levels: usize, coarsest: &[LayerConfig], refine: &[BlockConfig]) -> Self {
        let mut layers = coarsest.to_vec();
        for _ in 0..levels {
            let inner = std::mem::take(&mut layers);
            layers.push(LayerConfig::Coarse { layers: inner });
            layers.extend(refine.iter().map(|block| {
                LayerConfig::Block(BlockConfig {
                    partition: Partition::Refine,
                    ..block.clone()
                })
            }));
        }
        FlowConfig {
            prior: PriorConfig::StandardNormal,
            layers,
        }
    }

    /// The same flow with a free-field layer in front (acting on the latent first).
    pub fn with_free_field(mut self, free_field: FreeFieldConfig) -> Self {
        self.layers.insert(0, LayerConfig::FreeField(free_field));
        self
    }

    /// Number of coarse levels: the deepest nesting of [`LayerConfig::Coarse`] layers.
    pub fn levels(&self) -> usize {
        fn depth(layers: &[LayerConfig]) -> usize {
            layers
                .iter()
                .map(|l| match l {
                    LayerConfig::Coarse { layers } => 1 + depth(layers),
                    _ => 0,
                })
                .max()
                .unwrap_or(0)
        }
        depth(&self.layers)
    }

    /// Hidden width |Λ| of the seed recipe for a lattice.
    pub fn default_hidden(lattice: &Lattice) -> usize {
        lattice.volume()
    }
}
