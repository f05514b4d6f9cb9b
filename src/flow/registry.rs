//! The [`LayerRegistry`]: named constructors of user transforms and conditioner nets, so that
//! a [`FlowConfig`](crate::flow::FlowConfig) can name them (`custom` entries with a JSON
//! configuration) and a flow built or loaded from it gets the user's objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::flow::PointwiseTransform;
use crate::flow::layers::TransformPair;
use crate::flow::net::{ConditionerNet, Net, NetContext, ParamBuilder};

type TransformConstructor = dyn Fn(&serde_json::Value) -> Result<TransformPair> + Send + Sync;
type NetConstructor =
    dyn Fn(&serde_json::Value, &NetContext<'_>, &mut ParamBuilder) -> Result<Net> + Send + Sync;

/// Constructors of user transforms and conditioner nets by name, given to
/// [`FlowModel::new_with`](crate::flow::FlowModel::new_with) and
/// [`FlowModel::load_with`](crate::flow::FlowModel::load_with).
///
/// A configuration entry `{"kind": "custom", "name": N, "config": C}` in a block's
/// `transform` (or `net`) is built by the transform (or net) constructor registered under
/// `N`, which receives `C` deserialised into its own configuration type. The registry is
/// not saved with a model: whoever loads a model with custom entries registers the same
/// constructors again. The built-in transforms and nets need no registration.
///
/// ```
/// use latflow::flow::transform::Affine;
/// use latflow::flow::{FlowConfig, FlowModel, LayerConfig, LayerRegistry, TransformKind};
///
/// // The built-in affine transform, registered again as if it were a user's.
/// let registry = LayerRegistry::new().with_transform("my_affine", |_: ()| Ok(Affine));
/// let mut config = FlowConfig::real_nvp(1, &[8]);
/// if let LayerConfig::Block(block) = &mut config.layers[0] {
///     block.transform = TransformKind::Custom {
///         name: "my_affine".into(),
///         config: serde_json::Value::Null,
///     };
/// }
/// let lattice = latflow::Lattice::new(&[4, 4])?;
/// let model = FlowModel::new_with(&config, &lattice, 1, &registry)?;
/// // Without the registry the configuration cannot be built.
/// assert!(FlowModel::new(&config, &lattice, 1).is_err());
/// # let _ = model;
/// # Ok::<(), latflow::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct LayerRegistry {
    transforms: BTreeMap<String, Arc<TransformConstructor>>,
    nets: BTreeMap<String, Arc<NetConstructor>>,
}

impl std::fmt::Debug for LayerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerRegistry")
            .field("transforms", &self.transforms.keys().collect::<Vec<_>>())
            .field("nets", &self.nets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Deserialises a custom entry's configuration, naming the entry in the error.
fn parse_config<C: DeserializeOwned>(
    kind: &str,
    name: &str,
    config: &serde_json::Value,
) -> Result<C> {
    C::deserialize(config).map_err(|e| {
        Error::format(
            format!("configuration of the custom {kind} `{name}`"),
            e.to_string(),
        )
    })
}

impl LayerRegistry {
    /// An empty registry: only the built-in transforms and nets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the transform constructor `make` under `name` (replacing any previous
    /// one of that name). `make` receives the entry's JSON configuration deserialised into
    /// `C` (use `()` for none, `serde_json::Value` for the raw JSON); a configuration that
    /// does not deserialise is an [`Error::Format`] naming the entry.
    pub fn with_transform<C, P, F>(mut self, name: impl Into<String>, make: F) -> Self
    where
        C: DeserializeOwned,
        P: PointwiseTransform<f32> + PointwiseTransform<f64> + 'static,
        F: Fn(C) -> Result<P> + Send + Sync + 'static,
    {
        let name = name.into();
        let entry = name.clone();
        let constructor = move |config: &serde_json::Value| {
            TransformPair::new(make(parse_config("transform", &entry, config)?)?)
        };
        self.transforms.insert(name, Arc::new(constructor));
        self
    }

    /// Registers the conditioner-net constructor `make` under `name` (replacing any
    /// previous one of that name). `make` receives the entry's JSON configuration
    /// deserialised into `C`, the [`NetContext`] of the coupling layer the net is for, and
    /// the [`ParamBuilder`] to allocate its parameters in; a configuration that does not
    /// deserialise is an [`Error::Format`] naming the entry.
    pub fn with_net<C, N, F>(mut self, name: impl Into<String>, make: F) -> Self
    where
        C: DeserializeOwned,
        N: ConditionerNet,
        F: Fn(C, &NetContext<'_>, &mut ParamBuilder) -> Result<N> + Send + Sync + 'static,
    {
        let name = name.into();
        let entry = name.clone();
        let constructor = move |config: &serde_json::Value,
                                context: &NetContext<'_>,
                                params: &mut ParamBuilder| {
            let config = parse_config("net", &entry, config)?;
            make(config, context, params).map(Net::custom)
        };
        self.nets.insert(name, Arc::new(constructor));
        self
    }

    /// Names of the registered transforms.
    pub fn transform_names(&self) -> impl Iterator<Item = &str> {
        self.transforms.keys().map(String::as_str)
    }

    /// Names of the registered nets.
    pub fn net_names(&self) -> impl Iterator<Item = &str> {
        self.nets.keys().map(String::as_str)
    }

    /// Builds the transform registered under `name` from `config`.
    pub fn transform(&self, name: &str, config: &serde_json::Value) -> Result<TransformPair> {
        let make = self
            .transforms
            .get(name)
            .ok_or_else(|| Error::unregistered("transform", name))?;
        make(config)
    }

    /// Builds the net registered under `name` from `config` for the layer of `context`,
    /// allocating its parameters in `params`.
    pub fn net(
        &self,
        name: &str,
        config: &serde_json::Value,
        context: &NetContext<'_>,
        params: &mut ParamBuilder,
    ) -> Result<Net> {
        let make = self
            .nets
            .get(name)
            .ok_or_else(|| Error::unregistered("net", name))?;
        make(config, context, params)
    }
}
