//! Model files: a [`FlowModel`]'s format version, configuration, lattice, flat parameter
//! vector and metadata as JSON, written atomically and checked when read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::FlowModel;
use crate::error::{Error, Result};
use crate::flow::recipe::FlowConfig;
use crate::flow::registry::LayerRegistry;
use crate::lattice::Lattice;

/// Version of the model-file format written by [`FlowModel::save`]. Version 2 added
/// free-field layers, coarse (multiscale) layers and the refinement partition; files of
/// version 1 (which hold none of them) read unchanged.
pub const MODEL_FORMAT_VERSION: u32 = 2;

/// The oldest model-file format version [`FlowModel::load`] reads.
pub const OLDEST_MODEL_FORMAT_VERSION: u32 = 1;

impl FlowModel {
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
        if !(OLDEST_MODEL_FORMAT_VERSION..=MODEL_FORMAT_VERSION).contains(&file.format_version) {
            return Err(Error::Incompatible(format!(
                "{} has model format version {}, this library reads versions \
                 {OLDEST_MODEL_FORMAT_VERSION} to {MODEL_FORMAT_VERSION}",
                path.display(),
                file.format_version,
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

#[derive(Serialize, Deserialize)]
struct ModelFile {
    format_version: u32,
    config: FlowConfig,
    lattice: Lattice,
    params: Vec<f32>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}
