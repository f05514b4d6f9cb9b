//! The layers a flow is made of: coupling layers (a pointwise transform of the active sites
//! with parameters from a network of the passive sites), global rescalings and free-field
//! layers (diagonal in momentum space). Each layer
//! records its forward map on a [`Tape`] and inverts itself without one. Transforms and
//! networks may be the built-in ones or a user's ([`TransformPair::new`], [`Net::custom`]).

use std::sync::Arc;

use ndarray::{Array1, Array2};

use crate::error::{Error, Result};
use crate::flow::conv::ConvNet;
use crate::flow::free_field::{FreeFieldLayer, FreeFieldScratch};
use crate::flow::multiscale::CoarseLayer;
use crate::flow::net::{
    AnyFloatConditioner, ConditionerOnTape, DenseNet, Net, NetContext, NetInput, ParamBuilder,
};
use crate::flow::recipe::{BlockConfig, NetConfig, TransformKind};
use crate::flow::registry::LayerRegistry;
use crate::flow::transform::{Additive, Affine, DualTransform, Z2Affine};
use crate::flow::{PointwiseTransform, Real};
use crate::lattice::Lattice;
use crate::tape::{Dual, Tape, Var, ensure_shape};

/// Most networks one coupling layer may use (one per transform parameter at most).
const MAX_NETS: usize = 4;

/// A float type flows can run in: picks the transform and conditioner objects built for it
/// (f32, f64 and [`Dual`]; sealed through [`Real`]).
pub trait FlowFloat: Real {
    /// The transform of a layer in this float type.
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<Self>>;

    /// A user's conditioner net recording itself in this float type.
    fn conditioner(net: &dyn AnyFloatConditioner) -> &dyn ConditionerOnTape<Self>;
}

/// One pointwise transform instantiated in f32 (training, sampling) and f64 (checks), and
/// its f64 version lifted to [`Dual`] numbers (exact Jacobians by forward mode).
#[derive(Clone)]
pub struct TransformPair {
    single: Arc<dyn PointwiseTransform<f32>>,
    double: Arc<dyn PointwiseTransform<f64>>,
    dual: Arc<dyn PointwiseTransform<Dual>>,
}

impl FlowFloat for f32 {
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<f32>> {
        &pair.single
    }

    fn conditioner(net: &dyn AnyFloatConditioner) -> &dyn ConditionerOnTape<f32> {
        net
    }
}

impl FlowFloat for f64 {
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<f64>> {
        &pair.double
    }

    fn conditioner(net: &dyn AnyFloatConditioner) -> &dyn ConditionerOnTape<f64> {
        net
    }
}

impl FlowFloat for Dual {
    fn transform(pair: &TransformPair) -> &Arc<dyn PointwiseTransform<Dual>> {
        &pair.dual
    }

    fn conditioner(net: &dyn AnyFloatConditioner) -> &dyn ConditionerOnTape<Dual> {
        net
    }
}

impl TransformPair {
    /// A user's pointwise transform, implemented for both f32 and f64 (typically by one
    /// generic `impl<T: Real> PointwiseTransform<T>`, or by
    /// [`ForwardMode`](crate::flow::transform::ForwardMode)). Fails unless both
    /// instantiations have the same, positive number of parameters per site.
    pub fn new<P>(transform: P) -> Result<Self>
    where
        P: PointwiseTransform<f32> + PointwiseTransform<f64> + 'static,
    {
        let single = PointwiseTransform::<f32>::params_per_site(&transform);
        let double = PointwiseTransform::<f64>::params_per_site(&transform);
        if single == 0 || single != double {
            return Err(Error::param(
                "params_per_site",
                format!(
                    "a transform needs the same positive number of parameters per site in \
                     f32 and f64, got {single} and {double}"
                ),
            ));
        }
        Ok(Self::of(transform))
    }

    fn of<P>(t: P) -> Self
    where
        P: PointwiseTransform<f32> + PointwiseTransform<f64> + 'static,
    {
        let t = Arc::new(t);
        Self::from_parts(t.clone(), t)
    }

    /// The pair of the two transform objects, with the dual one lifted from the f64 one.
    fn from_parts(
        single: Arc<dyn PointwiseTransform<f32>>,
        double: Arc<dyn PointwiseTransform<f64>>,
    ) -> Self {
        TransformPair {
            single,
            dual: Arc::new(DualTransform::new(double.clone())),
            double,
        }
    }

    /// The transform `kind` names, custom ones constructed by `registry`.
    pub(crate) fn from_kind(kind: &TransformKind, registry: &LayerRegistry) -> Result<Self> {
        Ok(match kind {
            TransformKind::Additive => Self::of(Additive),
            TransformKind::Affine => Self::of(Affine),
            TransformKind::Z2Affine => Self::of(Z2Affine),
            TransformKind::Rqs(spline) => Self::of(*spline),
            TransformKind::Custom { name, config } => registry.transform(name, config)?,
        })
    }

    /// Parameters per active site, k.
    pub fn params_per_site(&self) -> usize {
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
    /// A coupling layer on `lattice` that updates the `active` sites with `transform`, its
    /// parameters computed from the other (passive) sites by nets that `make_net` builds:
    /// one net with all k parameters per active site, or with `separate_nets` one net per
    /// parameter (k ≤ 4). `make_net` receives the [`NetContext`] the net must fit and the
    /// builder to allocate its parameters in; every net's output shape is checked here.
    ///
    /// ```
    /// use latflow::flow::transform::Affine;
    /// use latflow::flow::{Coupling, DenseNet, Layer, Net, ParamBuilder, TransformPair};
    ///
    /// let lattice = latflow::Lattice::new(&[4, 4])?;
    /// let mut params = ParamBuilder::new(latflow::rng_from_seed(3));
    /// let layer = Coupling::new(
    ///     &lattice,
    ///     lattice.sites_of_parity(0),
    ///     TransformPair::new(Affine)?,
    ///     false,
    ///     &mut params,
    ///     |context, params| {
    ///         let widths = [context.passive().len(), 16, context.outputs()];
    ///         Ok(Net::Dense(DenseNet::new(&widths, true, params)?))
    ///     },
    /// )?;
    /// let layers = vec![Layer::Coupling(layer)];
    /// # let _ = layers;
    /// # Ok::<(), latflow::Error>(())
    /// ```
    pub fn new(
        lattice: &Lattice,
        active: Vec<usize>,
        transform: TransformPair,
        separate_nets: bool,
        params: &mut ParamBuilder,
        mut make_net: impl FnMut(&NetContext<'_>, &mut ParamBuilder) -> Result<Net>,
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
        let (active, passive): (Arc<[usize]>, Arc<[usize]>) = (active.into(), passive.into());
        let k = transform.params_per_site();
        let outputs: Vec<usize> = if separate_nets { vec![1; k] } else { vec![k] };
        if outputs.len() > MAX_NETS {
            return Err(Error::param(
                "separate_nets",
                format!("at most {MAX_NETS} networks per layer, the transform needs {k}"),
            ));
        }
        let mut nets = Vec::with_capacity(outputs.len());
        for per_site in outputs {
            let context = NetContext {
                lattice,
                active: &active,
                passive: &passive,
                outputs_per_site: per_site,
            };
            let net = make_net(&context, params)?;
            if !params.is_over_capacity() {
                // Past the capacity nothing is allocated: the flow's builder reports the size.
                check_net_fits(&net, &context, params)?;
            }
            nets.push(net);
        }
        Ok(Coupling {
            active,
            passive,
            nets,
            transform,
        })
    }

    /// The coupling layer of a block configuration that updates `active`; custom
    /// transforms and nets are constructed by `registry`.
    pub(crate) fn from_config(
        lattice: &Lattice,
        active: Vec<usize>,
        config: &BlockConfig,
        registry: &LayerRegistry,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        let transform = TransformPair::from_kind(&config.transform, registry)?;
        if config.transform == TransformKind::Z2Affine && config.net.has_bias() {
            return Err(Error::param(
                "bias",
                "Z2-affine layers need bias-free networks to stay Z2-equivariant",
            ));
        }
        let make_net = |context: &NetContext<'_>, params: &mut ParamBuilder| match &config.net {
            NetConfig::Dense { hidden, bias } => {
                let mut widths = vec![context.passive().len()];
                widths.extend_from_slice(hidden);
                widths.push(context.outputs());
                DenseNet::new(&widths, *bias, params).map(Net::Dense)
            }
            NetConfig::Conv {
                channels,
                kernel,
                bias,
            } => ConvNet::new(
                lattice,
                *kernel,
                channels,
                context.outputs_per_site(),
                *bias,
                params,
            )
            .map(Net::Conv),
            NetConfig::Custom { name, config } => registry.net(name, config, context, params),
        };
        Self::new(
            lattice,
            active,
            transform,
            config.separate_nets,
            params,
            make_net,
        )
    }

    /// The sites the layer updates.
    pub fn active(&self) -> &Arc<[usize]> {
        &self.active
    }

    /// The sites the layer's nets read.
    pub fn passive(&self) -> &Arc<[usize]> {
        &self.passive
    }

    /// The layer's pointwise transform.
    pub fn transform(&self) -> &TransformPair {
        &self.transform
    }

    /// The layer's networks (one, or one per transform parameter).
    pub fn nets(&self) -> &[Net] {
        &self.nets
    }

    /// Transform parameters θ `[n, |A| · k]` from the passive sites of `x` (`[n, volume]`).
    fn parameters<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> Var {
        let a = self.active.len();
        let reads = |input| self.nets.iter().any(|net| net.input() == input);
        let passive_input = reads(NetInput::Passive).then(|| tape.gather(x, &self.passive, 1));
        let masked_input = reads(NetInput::MaskedField).then(|| {
            let active = tape.gather(x, &self.active, 1);
            let zero = tape.scale(active, T::zero());
            tape.scatter(x, zero, &self.active, 1)
        });
        let input_of = |net: &Net| match net.input() {
            NetInput::Passive => passive_input.unwrap_or(x),
            NetInput::MaskedField => masked_input.unwrap_or(x),
        };
        let mut outs = [x; MAX_NETS];
        for (out, net) in outs.iter_mut().zip(&self.nets) {
            *out = match net {
                Net::Dense(dense) => dense.build(tape, params, input_of(net)),
                Net::Conv(conv) => {
                    let per_site = conv.build(tape, params, input_of(net));
                    let channels = tape.shape(per_site).1 / tape.shape(x).1;
                    tape.gather(per_site, &self.active, channels)
                }
                Net::Custom(custom) => custom.build(tape, params, input_of(net)),
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
        let nodes = self.record_nodes(tape, params, x);
        (nodes.out, nodes.ld, nodes.y)
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

impl Coupling {
    /// Records the layer's nodes on the tape (see [`CouplingNodes`]).
    fn record_nodes<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
    ) -> CouplingNodes {
        let first = tape.len();
        let theta = self.parameters(tape, params, x);
        let v = tape.gather(x, &self.active, 1);
        let (y, ld) = tape.pointwise(v, theta, T::transform(&self.transform));
        let out = tape.scatter(x, y, &self.active, 1);
        CouplingNodes {
            first,
            theta,
            y,
            ld,
            out,
        }
    }

    /// ∂ld/∂v of every active site into `scratch.grad_v` (zero on entry), from the
    /// transform's backward pass (on its saved state) with seeds 0 on y and 1 on the
    /// log-derivatives.
    fn log_derivative_gradient<T: FlowFloat>(
        &self,
        tape: &Tape<T>,
        nodes: &CouplingNodes,
        scratch: &mut ScoreScratch<T>,
    ) {
        let sites = scratch.grad_v.len();
        // Seeds only: never written, so refilled only when the size changes.
        if scratch.ones.len() != sites {
            scratch.zeros = vec![T::zero(); sites];
            scratch.ones = vec![T::one(); sites];
        }
        let (rows, cols) = tape.shape(nodes.theta);
        scratch.grad_theta.clear();
        scratch.grad_theta.resize(rows * cols, T::zero());
        tape.pointwise_backward(
            nodes.y,
            &scratch.zeros,
            &scratch.ones,
            &mut scratch.grad_v,
            &mut scratch.grad_theta,
        );
    }

    /// Turns `score`, the gradient ∇ₓ log q(x) of the density of the layer's input rows
    /// `x`, into that of its output rows, from the nodes the layer recorded. With
    /// J = ∂y/∂x and ld = log|det J|,
    ///
    /// ∇_y log q_y(y) = J⁻ᵀ (∇ₓ log q(x) − ∇ₓ ld),
    ///
    /// a triangular solve for a coupling layer: on the active sites
    /// u = (wₐ − ∂ld/∂xₐ)/C′(xₐ), on the passive sites w_p − ∂ld/∂x_p − (∂yₐ/∂x_p)ᵀ u, where
    /// the last two terms are one vector–Jacobian product through the conditioner (seeds u
    /// on y and 1 on ld, no parameter gradients). `x` must carry gradients
    /// ([`Tape::input_with_grad`] or a node computed from one).
    fn carry_score<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        nodes: &CouplingNodes,
        score: &mut Array2<T>,
        scratch: &mut ScoreScratch<T>,
    ) {
        let (n, a) = tape.shape(nodes.y);
        let sites = n * a;
        // ∂ld/∂v per active site (zero for affine-type maps).
        scratch.grad_v.clear();
        scratch.grad_v.resize(sites, T::zero());
        if T::transform(&self.transform).log_derivative_depends_on_input() {
            self.log_derivative_gradient(tape, nodes, scratch);
        }
        ensure_shape(&mut scratch.active_score, (n, a));
        let log_derivatives = tape.pointwise_log_derivatives(nodes.y);
        for (r, (mut u, ell)) in scratch
            .active_score
            .outer_iter_mut()
            .zip(log_derivatives.outer_iter())
            .enumerate()
        {
            let grad_v = &scratch.grad_v[r * a..(r + 1) * a];
            for (((u, &l), &s), &d) in u.iter_mut().zip(ell).zip(self.active.iter()).zip(grad_v) {
                *u = (score[[r, s]] - d) * (-l).exp();
            }
        }
        let layer = nodes.first..nodes.ld.index() + 1;
        tape.zero_grads_of(x.index()..x.index() + 1);
        tape.zero_grads_of(layer.clone());
        tape.grad_mut(nodes.y).assign(&scratch.active_score);
        tape.grad_mut(nodes.ld).fill(T::one());
        tape.backward_nodes_to_inputs(params, layer);
        score.zip_mut_with(&tape.grad(x), |w, &g| *w = *w - g);
        for (r, u) in scratch.active_score.outer_iter().enumerate() {
            for (&s, &u) in self.active.iter().zip(u.iter()) {
                score[[r, s]] = u;
            }
        }
    }
}

/// The nodes of one recorded coupling layer: its first node, the transform parameters θ,
/// the transformed values y (the pointwise node), the layer's log-det and the output
/// configuration.
struct CouplingNodes {
    first: usize,
    theta: Var,
    y: Var,
    ld: Var,
    out: Var,
}

/// Buffers of [`Layer::build_scored`], reused from call to call.
pub(crate) struct ScoreScratch<T> {
    active_score: Array2<T>,
    grad_v: Vec<T>,
    grad_theta: Vec<T>,
    zeros: Vec<T>,
    ones: Vec<T>,
    free_field: FreeFieldScratch<T>,
    /// The coarse sites' scores of the coarse layers being recorded (one per level).
    coarse: Vec<Array2<T>>,
}

impl<T: FlowFloat> Default for ScoreScratch<T> {
    fn default() -> Self {
        ScoreScratch {
            active_score: Array2::zeros((0, 0)),
            grad_v: Vec::new(),
            grad_theta: Vec::new(),
            zeros: Vec::new(),
            ones: Vec::new(),
            free_field: FreeFieldScratch::default(),
            coarse: Vec::new(),
        }
    }
}

/// Checks that `net` reads and writes what a layer of `context` gives and expects: widths
/// of the built-in nets, and for a custom net the output shape of one recorded pass on a
/// two-row batch with the parameters allocated so far.
fn check_net_fits(net: &Net, context: &NetContext<'_>, params: &ParamBuilder) -> Result<()> {
    let (expected, got) = match net {
        Net::Dense(dense) => (
            (context.passive().len(), context.outputs()),
            (dense.inputs(), dense.outputs()),
        ),
        Net::Conv(conv) => (
            (context.lattice().volume(), context.outputs_per_site()),
            (conv.volume(), conv.outputs()),
        ),
        Net::Custom(custom) => {
            const ROWS: usize = 2;
            let width = context.input_width(net.input());
            let values: Vec<f64> = params.values().iter().map(|&p| f64::from(p)).collect();
            let mut tape = Tape::<f64>::new();
            let input = tape.zeros(ROWS, width);
            let out = custom.build(&mut tape, &values, input);
            ((ROWS, context.outputs()), tape.shape(out))
        }
    };
    if expected == got {
        Ok(())
    } else {
        let what = match net {
            Net::Dense(_) => "(inputs, outputs) of the dense net",
            Net::Conv(_) => "(sites, output channels) of the convolutional net",
            Net::Custom(_) => "output shape of the custom net on 2 rows",
        };
        Err(Error::Shape(format!(
            "the coupling layer ({} active, {} passive sites, {} parameters per site) needs \
             {what} {expected:?}, got {got:?}",
            context.active().len(),
            context.passive().len(),
            context.outputs_per_site()
        )))
    }
}

/// Buffers a layer's inversion reuses from call to call.
pub(crate) struct InvertScratch<T> {
    v: Array2<T>,
    ld: Array2<T>,
    free_field: FreeFieldScratch<T>,
    /// The coarse sites of the coarse layers being inverted (one per level).
    coarse: Vec<Array2<T>>,
}

impl<T: FlowFloat> Default for InvertScratch<T> {
    fn default() -> Self {
        InvertScratch {
            v: Array2::zeros((0, 0)),
            ld: Array2::zeros((0, 0)),
            free_field: FreeFieldScratch::default(),
            coarse: Vec::new(),
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
    /// φ → F⁻¹ diag(σ) F φ, a learnable Gaussian map diagonal in momentum space.
    FreeField(FreeFieldLayer),
    /// Layers acting on the coarse sublattice (the sites with all coordinates even).
    Coarse(CoarseLayer),
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
            Layer::Coarse(c) => {
                let mut exact = exact;
                let (mut xc, mut ld) = (tape.gather(x, c.sites(), 1), logdet);
                for layer in c.layers() {
                    (xc, ld) = layer.record(tape, params, xc, ld, exact.as_deref_mut());
                }
                (tape.scatter(x, xc, c.sites(), 1), ld)
            }
            Layer::FreeField(f) => {
                let (y, ld) = f.build(tape, params, x);
                if let Some(exact) = exact {
                    let total = f.log_det(params);
                    exact.mapv_inplace(|e| e + total);
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

    /// [`Layer::build`] that also turns `score`, the gradient ∇ₓ log q(x) of the density
    /// of the input rows (`[n, volume]`), into that of the output rows at fixed parameters
    /// (the coupling layer's rule is a triangular solve with one vector–Jacobian product
    /// through its conditioner; a scale layer e^c divides the score by e^c). Applied layer
    /// by layer from the prior's score ∇_z log r(z), it gives ∇_φ log p̃(φ) at φ = f(z)
    /// without inverting the flow. `x` must carry gradients.
    pub(crate) fn build_scored<T: FlowFloat>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        logdet: Var,
        score: &mut Array2<T>,
        scratch: &mut ScoreScratch<T>,
    ) -> (Var, Var) {
        match self {
            Layer::Coupling(c) => {
                let nodes = c.record_nodes(tape, params, x);
                c.carry_score(tape, params, x, &nodes, score, scratch);
                (nodes.out, tape.add(logdet, nodes.ld))
            }
            Layer::Scale(c) => {
                let factor = params[*c].exp();
                score.mapv_inplace(|w| w / factor);
                self.build(tape, params, x, logdet)
            }
            Layer::FreeField(f) => {
                // φ = M z with M symmetric and the log-det constant: the score is M⁻¹ w.
                f.apply(params, score, true, &mut scratch.free_field);
                self.build(tape, params, x, logdet)
            }
            Layer::Coarse(c) => {
                // The Jacobian is block-diagonal: the coarse sites' score is carried
                // through the inner layers, the others' stays.
                let mut coarse_score = scratch
                    .coarse
                    .pop()
                    .unwrap_or_else(|| Array2::zeros((0, 0)));
                gather_columns(score, c.sites(), &mut coarse_score);
                let (mut xc, mut ld) = (tape.gather(x, c.sites(), 1), logdet);
                for layer in c.layers() {
                    (xc, ld) = layer.build_scored(tape, params, xc, ld, &mut coarse_score, scratch);
                }
                scatter_columns(&coarse_score, c.sites(), score);
                scratch.coarse.push(coarse_score);
                (tape.scatter(x, xc, c.sites(), 1), ld)
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
            Layer::FreeField(f) => f.invert(params, x, logdet, &mut scratch.free_field),
            Layer::Coarse(c) => {
                let mut xc = scratch
                    .coarse
                    .pop()
                    .unwrap_or_else(|| Array2::zeros((0, 0)));
                gather_columns(x, c.sites(), &mut xc);
                for layer in c.layers().iter().rev() {
                    layer.invert_reusing(tape, params, &mut xc, logdet, scratch);
                }
                scatter_columns(&xc, c.sites(), x);
                scratch.coarse.push(xc);
            }
            Layer::Scale(c) => {
                let factor = (-params[*c]).exp();
                x.mapv_inplace(|v| v * factor);
                let shift = x.ncols() as f64 * params[*c].to_f64().unwrap_or(f64::NAN);
                logdet.mapv_inplace(|l| l - shift);
            }
        }
    }
}

/// `out` ← the columns `sites` of `x` (resized to `[rows, sites]`).
fn gather_columns<T: FlowFloat>(x: &Array2<T>, sites: &[usize], out: &mut Array2<T>) {
    ensure_shape(out, (x.nrows(), sites.len()));
    for (xr, mut or) in x.outer_iter().zip(out.outer_iter_mut()) {
        for (o, &s) in or.iter_mut().zip(sites) {
            *o = xr[s];
        }
    }
}

/// The columns `sites` of `x` ← `src`.
fn scatter_columns<T: FlowFloat>(src: &Array2<T>, sites: &[usize], x: &mut Array2<T>) {
    for (sr, mut xr) in src.outer_iter().zip(x.outer_iter_mut()) {
        for (&v, &s) in sr.iter().zip(sites) {
            xr[s] = v;
        }
    }
}

impl Layer {
    /// Values one configuration's forward pass records on the tape for this layer on a
    /// lattice of `volume` sites (see [`crate::flow::FlowModel::tape_values_per_row`]).
    pub(crate) fn tape_values_per_row(&self, volume: usize) -> usize {
        match self {
            Layer::Scale(_) => volume,
            Layer::FreeField(_) => 4 * volume,
            Layer::Coarse(c) => {
                let inner = c.lattice().volume();
                c.layers().iter().fold(2 * volume + inner, |acc, l| {
                    acc.saturating_add(l.tape_values_per_row(inner))
                })
            }
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
        }
    }

    /// Multiply-adds of the layer in one configuration's forward pass on a lattice of
    /// `volume` sites (custom nets counted as nothing; a Fourier transform as 5 V log₂ V).
    pub(crate) fn multiply_adds_per_row(&self, volume: usize) -> usize {
        match self {
            Layer::Scale(_) => volume,
            Layer::FreeField(_) => {
                let log = (usize::BITS - volume.leading_zeros()) as usize;
                10 * volume * log
            }
            Layer::Coarse(c) => {
                let inner = c.lattice().volume();
                c.layers().iter().fold(0usize, |acc, l| {
                    acc.saturating_add(l.multiply_adds_per_row(inner))
                })
            }
            Layer::Coupling(c) => c.nets().iter().fold(volume, |acc, net| {
                acc.saturating_add(match net {
                    Net::Dense(dense) => dense.multiply_adds_per_row(),
                    Net::Conv(conv) => conv.multiply_adds_per_row(),
                    Net::Custom(_) => 0,
                })
            }),
        }
    }
}
