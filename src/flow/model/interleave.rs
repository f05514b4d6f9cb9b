//! A [`FlowModel`] cut before its last k layer groups (the elements of its configuration's
//! `layers`: a coupling block, a free-field layer, a scale, a coarse layer), for stochastic
//! normalizing flows that interleave those groups with stochastic steps: the start flow
//! (the prior and the leading groups) and one [`LayerMap`] per cut-off group, applied to
//! one configuration at a time in f64 ([`InterleavedFlow`]).

use std::ops::Range;

use ndarray::Array2;

use super::FlowModel;
use super::workspace::Workspace;
use crate::error::{Error, Result};
use crate::flow::recipe::FlowConfig;
use crate::tape::ensure_shape;

/// A flow f = g_k ∘ … ∘ g_1 ∘ f₀ cut into its start f₀ (the prior and all but the last k
/// layer groups, a flow of its own) and the maps g_1 … g_k of its last k groups.
pub struct InterleavedFlow {
    /// f₀: the prior and the leading groups. It holds the whole model's parameter vector
    /// (its layers address their part of it), so it is meant for sampling, not for saving.
    pub start: FlowModel,
    /// g_1 … g_k, in the order they are applied.
    pub maps: Vec<LayerMap>,
}

/// One layer group of a flow as an invertible map of one configuration, evaluated in f64
/// with the model's parameters converted to f64: φ → g(φ) with log|det ∂g/∂φ|, and back.
pub struct LayerMap {
    flow: FlowModel,
    params: Vec<f64>,
    row: Array2<f64>,
    ws: Workspace<f64>,
}

impl LayerMap {
    /// φ ← g(φ); returns log|det ∂g/∂φ| (summed in f64 from the per-site terms).
    pub fn forward(&mut self, phi: &mut [f64]) -> Result<f64> {
        self.load(phi)?;
        let (out, logdet) = self
            .flow
            .forward_in(&self.params, self.row.view(), &mut self.ws)?;
        phi.iter_mut().zip(out.iter()).for_each(|(o, &x)| *o = x);
        Ok(logdet[0])
    }

    /// φ ← g⁻¹(φ); returns log|det ∂g⁻¹/∂φ| = −log|det ∂g/∂φ| at the new φ.
    pub fn inverse(&mut self, phi: &mut [f64]) -> Result<f64> {
        self.load(phi)?;
        let (out, logdet) = self
            .flow
            .inverse_in(&self.params, self.row.view(), &mut self.ws)?;
        phi.iter_mut().zip(out.iter()).for_each(|(o, &x)| *o = x);
        Ok(logdet[0])
    }

    fn load(&mut self, phi: &[f64]) -> Result<()> {
        let volume = self.flow.lattice.volume();
        if phi.len() != volume {
            return Err(Error::Shape(format!(
                "a field of {} values for a layer on {volume} sites",
                phi.len()
            )));
        }
        ensure_shape(&mut self.row, (1, volume));
        self.row.iter_mut().zip(phi).for_each(|(r, &x)| *r = x);
        Ok(())
    }
}

impl FlowModel {
    /// Number of layer groups: the elements of the configuration's `layers`.
    pub fn layer_groups(&self) -> usize {
        self.groups.len()
    }

    /// The flow cut before its last `k` layer groups (see [`InterleavedFlow`]); more groups
    /// than the flow has is an [`Error::Incompatible`].
    pub fn interleave(&self, k: usize) -> Result<InterleavedFlow> {
        let n = self.check_interleaved(k)?;
        let params: Vec<f64> = self.params.iter().map(|&p| f64::from(p)).collect();
        let maps = (n - k..n)
            .map(|g| LayerMap {
                flow: self.subflow(g..g + 1),
                params: params.clone(),
                row: Array2::zeros((1, self.lattice.volume())),
                ws: Workspace::new(1),
            })
            .collect();
        Ok(InterleavedFlow {
            start: self.subflow(0..n - k),
            maps,
        })
    }

    /// Checks that the flow has at least `k` layer groups; returns its number of groups.
    pub(crate) fn check_interleaved(&self, k: usize) -> Result<usize> {
        let n = self.groups.len();
        if k > n {
            return Err(Error::Incompatible(format!(
                "{k} layer groups are to be interleaved with the stochastic steps, the flow \
                 has {n}"
            )));
        }
        Ok(n)
    }

    /// The flow of the layer groups `groups` alone (with the prior and the whole parameter
    /// vector, which its layers address by position).
    fn subflow(&self, groups: Range<usize>) -> FlowModel {
        let (first, last) = if groups.is_empty() {
            (0, 0)
        } else {
            (
                self.groups[groups.start].start,
                self.groups[groups.end - 1].end,
            )
        };
        FlowModel {
            config: FlowConfig {
                prior: self.config.prior.clone(),
                layers: self.config.layers[groups.clone()].to_vec(),
            },
            lattice: self.lattice.clone(),
            prior: self.prior.clone(),
            layers: self.layers[first..last].to_vec(),
            layer_params: self.layer_params[groups.clone()].to_vec(),
            groups: self.groups[groups]
                .iter()
                .map(|g| g.start - first..g.end - first)
                .collect(),
            params: self.params.clone(),
            metadata: Default::default(),
        }
    }
}
