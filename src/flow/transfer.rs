//! Transfer across lattice sizes: the rules by which a flow trained on one lattice starts a
//! flow on another ([`transfer`]), and the check of a rule without copying
//! ([`transfer_rule`]). Layers whose size does not depend on the lattice keep their
//! weights; a free-field layer with one σ per class of momenta has its spectrum
//! interpolated onto the new lattice's momenta; anything else is refused with an error
//! naming both lattices.

use serde::{Deserialize, Serialize};

use std::ops::Range;

use crate::error::{Error, Result};
use crate::flow::free_field::{FreeFieldConfig, Spectrum, momentum_classes};
use crate::flow::model::FlowModel;
use crate::flow::recipe::{FlowConfig, LayerConfig, Partition};
use crate::flow::traits::Flow;
use crate::lattice::Lattice;

/// How a flow's parameters carry over to another flow (see [`transfer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferRule {
    /// The same configuration (convolutional nets, free-field layers and multiscale flows
    /// with the same number of levels on any lattice the levels divide; any flow on the
    /// same lattice): the weights as they are, a free-field spectrum per class of momenta
    /// interpolated onto the new momenta.
    SameWeights,
    /// The target is the source's multiscale flow with one more level: the source's levels
    /// become the target's coarser ones (the coarse lattice of the target is the source's
    /// lattice), its finest refinement blocks also start the new finest level, and every
    /// other layer (a free-field layer, a spline block on top) carries over as under
    /// [`TransferRule::SameWeights`].
    NewLevel,
}

/// Which rule carries `source` to `target`, or an [`Error::Incompatible`] naming both
/// lattices and why none does.
pub fn transfer_rule(source: &FlowModel, target: &FlowModel) -> Result<TransferRule> {
    Ok(plan(source, target)?.0)
}

/// Starts `target` from the parameters of `source` by the rule that relates them (see
/// [`TransferRule`]), returning the rule; `target` is unchanged on error.
pub fn transfer(source: &FlowModel, target: &mut FlowModel) -> Result<TransferRule> {
    let (rule, steps) = plan(source, target)?;
    let (from, lattice) = (source.params(), target.lattice().clone());
    let to = target.params_mut();
    for step in steps {
        match step {
            Step::Copy(src, dst) => to[dst..dst + src.len()].copy_from_slice(&from[src]),
            Step::Spectrum(src, dst) => {
                let theta = interpolate_spectrum(source.lattice(), &from[src], &lattice);
                to[dst].copy_from_slice(&theta);
            }
        }
    }
    Ok(rule)
}

/// One step of a transfer.
enum Step {
    /// Copy the source's parameters in the range to the target from the position.
    Copy(Range<usize>, usize),
    /// Interpolate a free-field layer's σ per class of momenta onto the target's momenta.
    Spectrum(Range<usize>, Range<usize>),
}

/// A rule and its steps.
type Plan = (TransferRule, Vec<Step>);

fn plan(source: &FlowModel, target: &FlowModel) -> Result<Plan> {
    let (a, b) = (source.lattice(), target.lattice());
    let (s, t) = (source.layer_params(), target.layer_params());
    let layers = &target.config().layers;
    let mut steps = Vec::new();
    // The step that carries layer `k` of the target from the source's `src` (or the
    // parameter counts that do not match).
    let mut carry = |k: usize,
                     src: Range<usize>,
                     dst: Range<usize>|
     -> std::result::Result<(), (usize, usize)> {
        if src.len() == dst.len() {
            steps.push(Step::Copy(src, dst.start));
        } else if is_class_spectrum(&layers[k]) && a.dim() == b.dim() {
            steps.push(Step::Spectrum(src, dst));
        } else {
            return Err((src.len(), dst.len()));
        }
        Ok(())
    };
    let rule = if source.config() == target.config() {
        for k in 0..t.len() {
            carry(k, s[k].clone(), t[k].clone()).map_err(|_| {
                Error::Incompatible(format!(
                    "the flow has {} parameters on the {a} lattice and {} on the {b} \
                     lattice: its layers depend on the lattice size (dense nets do; \
                     convolutional and multiscale recipes carry over)",
                    source.n_params(),
                    target.n_params()
                ))
            })?;
        }
        TransferRule::SameWeights
    } else {
        let Some((coarse, refine)) = new_level(source.config(), target.config()) else {
            return Err(Error::Incompatible(format!(
                "the flow of the {a} lattice has another configuration than the one for the \
                 {b} lattice, and no transfer rule relates them (the same configuration, or \
                 a multiscale flow with one more level)"
            )));
        };
        // Source layers coarse..=coarse+refine become the target's coarse layer; the
        // source's refinement blocks also start the target's new ones; the rest maps one
        // to one.
        let mismatch = |(from, to): (usize, usize)| {
            Error::Incompatible(format!(
                "the flow of the {a} lattice has one level fewer than the one for the {b} \
                 lattice, but a layer outside the levels has {from} parameters there and {to} \
                 here"
            ))
        };
        for k in 0..t.len() {
            let src = if k == coarse {
                s[coarse].start..s[coarse + refine].end
            } else {
                s[k].clone()
            };
            carry(k, src, t[k].clone()).map_err(mismatch)?;
        }
        TransferRule::NewLevel
    };
    Ok((rule, steps))
}

/// Whether a layer is a free-field layer with one σ per class of momenta.
fn is_class_spectrum(layer: &LayerConfig) -> bool {
    matches!(
        layer,
        LayerConfig::FreeField(FreeFieldConfig {
            spectrum: Spectrum::Classes { .. }
        })
    )
}

/// log σ per class of momenta of `to`, interpolated from `theta` (one per class of `from`)
/// in the variables u_μ = p̂_μ² = 4 sin²(q_μ/2): a momentum of `to` takes the multilinear
/// interpolation of the values at the 2^d momenta of `from` around it in u (exact for a
/// spectrum linear in each p̂_μ², close for the free field's −½ ln(p̂² + m²)).
fn interpolate_spectrum(from: &Lattice, theta: &[f32], to: &Lattice) -> Vec<f32> {
    let (from_classes, _) = momentum_classes(from);
    let (to_classes, n) = momentum_classes(to);
    let d = to.dim();
    let (fe, te) = (from.extents(), to.extents());
    let u = |k: usize, l: usize| {
        let s = (std::f64::consts::PI * k as f64 / l as f64).sin();
        4.0 * s * s
    };
    let mut out = vec![0.0f32; n];
    let mut done = vec![false; n];
    let (mut k, mut corner) = (vec![0usize; d], vec![0usize; d]);
    // Per axis: the grid cell of `from` holding the component and the fraction across it.
    let mut cells = vec![(0usize, 0.0f64); d];
    for (p, &c) in to_classes.iter().enumerate() {
        let c = c as usize;
        if done[c] {
            continue;
        }
        done[c] = true;
        to.coords(p, &mut k);
        for mu in 0..d {
            let target = u(k[mu].min(te[mu] - k[mu]), te[mu]);
            let top = fe[mu] / 2;
            let low = (0..top)
                .rev()
                .find(|&m| u(m, fe[mu]) <= target)
                .unwrap_or(0);
            cells[mu] = if low >= top {
                (top, 0.0)
            } else {
                let (a, b) = (u(low, fe[mu]), u(low + 1, fe[mu]));
                (low, ((target - a) / (b - a)).clamp(0.0, 1.0))
            };
        }
        let mut value = 0.0f64;
        for bits in 0..1usize << d {
            let mut weight = 1.0;
            for mu in 0..d {
                let up = bits >> mu & 1 == 1;
                let (low, frac) = cells[mu];
                corner[mu] = (low + up as usize).min(fe[mu] / 2);
                weight *= if up { frac } else { 1.0 - frac };
            }
            if weight > 0.0 {
                value += weight * f64::from(theta[from_classes[from.site(&corner)] as usize]);
            }
        }
        out[c] = value as f32;
    }
    out
}

/// Whether `target` is `source` with one more level: the position of the source's
/// top-level coarse layer and the number of refinement blocks after it, if so.
fn new_level(source: &FlowConfig, target: &FlowConfig) -> Option<(usize, usize)> {
    if source.prior != target.prior || target.layers.len() != source.layers.len() {
        return None;
    }
    let is_refine =
        |l: &LayerConfig| matches!(l, LayerConfig::Block(b) if b.partition == Partition::Refine);
    let coarse = source
        .layers
        .iter()
        .position(|l| matches!(l, LayerConfig::Coarse { .. }))?;
    let refine = source.layers[coarse + 1..]
        .iter()
        .take_while(|l| is_refine(l))
        .count();
    let levels = coarse..=coarse + refine;
    let LayerConfig::Coarse { layers: inner } = &target.layers[coarse] else {
        return None;
    };
    let same_outside = source
        .layers
        .iter()
        .zip(&target.layers)
        .enumerate()
        .all(|(i, (s, t))| levels.contains(&i) || s == t);
    (same_outside
        && inner[..] == source.layers[levels.clone()]
        && target.layers[coarse + 1..=coarse + refine]
            == source.layers[coarse + 1..=coarse + refine])
        .then_some((coarse, refine))
}
