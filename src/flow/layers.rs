//! The layers a flow is made of: coupling layers (a pointwise transform of the active sites
//! with parameters from a network of the passive sites) and global rescalings. Each layer
//! records its forward map on a [`Tape`] and inverts itself without one.

use std::sync::Arc;

use ndarray::{Array1, Array2};

use crate::error::{Error, Result};
use crate::flow::net::{ConvNet, DenseNet, Net, ParamBuilder};
use crate::flow::recipe::{BlockConfig, NetConfig, TransformKind};
use crate::flow::transform::{Additive, Affine, Z2Affine};
use crate::flow::{PointwiseTransform, Real};
use crate::lattice::Lattice;
use crate::tape::{Tape, Var, ensure_shape};

/// Most networks one coupling layer may use (one per transform parameter at most).
const MAX_NETS: usize = 4;

/// A float type flows can run in: picks the transform object built for it.
pub trait FlowFloat: Real {
    /// The transform of a layer in this float type.
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<Self>>;
}

/// One pointwise transform instantiated in f32 (training, sampling) and f64 (checks).
#[derive(Clone)]
pub struct TransformPair {
    single: Arc<dyn PointwiseTransform<f32>>,
    double: Arc<dyn PointwiseTransform<f64>>,
}

impl FlowFloat for f32 {
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<f32>> {
        &pair.single
    }
}

impl FlowFloat for f64 {
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<f64>> {
        &pair.double
    }
}

impl TransformPair {
    fn of<P>(t: P) -> Self
    where
        P: PointwiseTransform<f32> + PointwiseTransform<f64> + 'static,
    {
        let t = Arc::new(t);
        TransformPair {
            single: t.clone(),
            double: t,
        }
    }

    pub(crate) fn new(kind: &TransformKind) -> Result<Self> {
        Ok(match kind {
            TransformKind::Additive => Self::of(Additive),
            TransformKind::Affine => Self::of(Affine),
            TransformKind::Z2Affine => Self::of(Z2Affine),
            TransformKind::Rqs(spline) => Self::of(*spline),
        })
    }

    fn params_per_site(&self) -> usize {
        self.single.params_per_site()
    }
}

/// A coupling layer: y_A = C(x_A; θ(x_P)), y_P = x_P.
#[derive(Clone)]
pub struct Coupling {
    active: Arc<[usize]>,
    passive: Arc<[usize]>,
    nets: Vec<Net>,
    transform: TransformPair,
}

impl Coupling {
    pub(crate) fn new(
        lattice: &Lattice,
        active: Vec<usize>,
        config: &BlockConfig,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        let volume = lattice.volume();
        let mut is_active = vec![false; volume];
        for &s in &active {
            if s >= volume || is_active[s] {
                return Err(Error::param(
                    "partition",
                    format!("site {s} is out of range or repeated on a {lattice} lattice"),
                ));
            }
            is_active[s] = true;
        }
        let passive: Vec<usize> = (0..volume).filter(|&s| !is_active[s]).collect();
        if active.is_empty() || passive.is_empty() {
            return Err(Error::param(
                "partition",
                "both halves of a coupling layer need at least one site",
            ));
        }
        let transform = TransformPair::new(&config.transform)?;
        if config.transform == TransformKind::Z2Affine && config.net.has_bias() {
            return Err(Error::param(
                "bias",
                "Z2-affine layers need bias-free networks to stay Z2-equivariant",
            ));
        }
        let k = transform.params_per_site();
        let outputs: Vec<usize> = if config.separate_nets {
            vec![1; k]
        } else {
            vec![k]
        };
        if outputs.len() > MAX_NETS {
            return Err(Error::param(
                "separate_nets",
                format!("at most {MAX_NETS} networks per layer, the transform needs {k}"),
            ));
        }
        let nets = outputs
            .iter()
            .map(|&per_site| match &config.net {
                NetConfig::Dense { hidden, bias } => {
                    let mut widths = vec![passive.len()];
                    widths.extend_from_slice(hidden);
                    widths.push(active.len() * per_site);
                    DenseNet::new(&widths, *bias, params).map(Net::Dense)
                }
                NetConfig::Conv {
                    channels,
                    kernel,
                    bias,
                } => {
                    ConvNet::new(lattice, *kernel, channels, per_site, *bias, params).map(Net::Conv)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Coupling {
            active: active.into(),
            passive: passive.into(),
            nets,
            transform,
        })
    }

    /// Transform parameters θ `[n, |A| · k]` from the passive sites of `x` (`[n, volume]`).
    fn parameters<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> Var {
        let a = self.active.len();
        let dense_input =
            matches!(self.nets[0], Net::Dense(_)).then(|| tape.gather(x, &self.passive, 1));
        let conv_input = matches!(self.nets[0], Net::Conv(_)).then(|| {
            let active = tape.gather(x, &self.active, 1);
            let zero = tape.scale(active, T::zero());
            tape.scatter(x, zero, &self.active, 1)
        });
        let mut outs = [x; MAX_NETS];
        for (out, net) in outs.iter_mut().zip(&self.nets) {
            *out = match net {
                Net::Dense(net) => net.build(tape, params, dense_input.unwrap_or(x)),
                Net::Conv(net) => {
                    let per_site = net.build(tape, params, conv_input.unwrap_or(x));
                    let channels = tape.shape(per_site).1 / tape.shape(x).1;
                    tape.gather(per_site, &self.active, channels)
                }
            };
        }
        let n_nets = self.nets.len();
        if n_nets == 1 {
            outs[0]
        } else {
            tape.interleave(&outs[..n_nets], a)
        }
    }

    /// Records the layer; returns the output, its log-det (`[n, 1]`) and the pointwise node
    /// holding the per-site log-derivatives.
    fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> (Var, Var, Var) {
        let theta = self.parameters(tape, params, x);
        let v = tape.gather(x, &self.active, 1);
        let (y, ld) = tape.pointwise(v, theta, T::transform(&self.transform));
        (tape.scatter(x, y, &self.active, 1), ld, y)
    }

    fn invert<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: &mut Array2<T>,
        logdet: &mut Array1<f64>,
        scratch: &mut InvertScratch<T>,
    ) {
        tape.reset();
        let xv = tape.input(x.view());
        let theta = self.parameters(tape, params, xv);
        let y = tape.gather(xv, &self.active, 1);
        let shape = tape.shape(y);
        ensure_shape(&mut scratch.v, shape);
        ensure_shape(&mut scratch.ld, shape);
        let (v, ld) = (&mut scratch.v, &mut scratch.ld);
        T::transform(&self.transform).inverse(
            tape.value(y).as_slice().expect("standard layout"),
            tape.value(theta).as_slice().expect("standard layout"),
            v.as_slice_mut().expect("standard layout"),
            ld.as_slice_mut().expect("standard layout"),
        );
        for (r, (vr, ldr)) in v.outer_iter().zip(ld.outer_iter()).enumerate() {
            for (&s, &value) in self.active.iter().zip(vr.iter()) {
                x[[r, s]] = value;
            }
            logdet[r] += ldr
                .iter()
                .map(|l| l.to_f64().unwrap_or(f64::NAN))
                .sum::<f64>();
        }
    }
}

/// Buffers a coupling layer's inversion reuses from call to call.
pub(crate) struct InvertScratch<T> {
    v: Array2<T>,
    ld: Array2<T>,
}

impl<T: FlowFloat> Default for InvertScratch<T> {
    fn default() -> Self {
        InvertScratch {
            v: Array2::zeros((0, 0)),
            ld: Array2::zeros((0, 0)),
        }
    }
}

/// One layer of a flow.
#[derive(Clone)]
pub enum Layer {
    /// A coupling layer.
    Coupling(Coupling),
    /// φ → e^c φ with the scalar parameter at this position; log-det |Λ| c.
    Scale(usize),
}

impl Layer {
    /// Records z → φ on the tape; `logdet` (`[n, 1]`) is updated.
    pub fn build<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        logdet: Var,
    ) -> (Var, Var) {
        self.record(tape, params, x, logdet, None)
    }

    /// [`Layer::build`], also adding the layer's log-det of every row to `exact`, summed in
    /// f64 from the per-site log-derivatives (as [`Layer::invert`] sums its own).
    pub(crate) fn build_exact<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        logdet: Var,
        exact: &mut Array1<f64>,
    ) -> (Var, Var) {
        self.record(tape, params, x, logdet, Some(exact))
    }

    fn record<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        logdet: Var,
        exact: Option<&mut Array1<f64>>,
    ) -> (Var, Var) {
        match self {
            Layer::Coupling(c) => {
                let (y, ld, pointwise) = c.build(tape, params, x);
                if let Some(exact) = exact {
                    let per_site = tape.pointwise_log_derivatives(pointwise);
                    for (row, e) in per_site.outer_iter().zip(exact.iter_mut()) {
                        *e += row
                            .iter()
                            .map(|l| l.to_f64().unwrap_or(f64::NAN))
                            .sum::<f64>();
                    }
                }
                (y, tape.add(logdet, ld))
            }
            Layer::Scale(c) => {
                let sites = tape.shape(x).1;
                if let Some(exact) = exact {
                    let shift = sites as f64 * params[*c].to_f64().unwrap_or(f64::NAN);
                    exact.mapv_inplace(|e| e + shift);
                }
                let volume = T::from_usize(sites).expect("volume fits the float type");
                let y = tape.scale_by_exp_param(params, x, *c);
                (y, tape.add_param(params, logdet, *c, volume))
            }
        }
    }

    /// Inverts the layer in place on `x` (`[n, volume]`), adding log|det ∂x_in/∂x_out| to
    /// `logdet`.
    pub fn invert<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: &mut Array2<T>,
        logdet: &mut Array1<f64>,
    ) {
        self.invert_reusing(tape, params, x, logdet, &mut InvertScratch::default());
    }

    /// [`Layer::invert`] with buffers kept between calls.
    pub(crate) fn invert_reusing<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: &mut Array2<T>,
        logdet: &mut Array1<f64>,
        scratch: &mut InvertScratch<T>,
    ) {
        match self {
            Layer::Coupling(c) => c.invert(tape, params, x, logdet, scratch),
            Layer::Scale(c) => {
                let factor = (-params[*c]).exp();
                x.mapv_inplace(|v| v * factor);
                let shift = x.ncols() as f64 * params[*c].to_f64().unwrap_or(f64::NAN);
                logdet.mapv_inplace(|l| l - shift);
            }
        }
    }
}
