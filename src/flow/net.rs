//! The networks that compute a coupling layer's transform parameters from its passive sites:
//! dense (fully connected) nets over the passive values, periodic convolutional nets over
//! the whole lattice, and user-written conditioner nets ([`ConditionerNet`]); plus the
//! [`ParamBuilder`] that lays every parameter out in one flat vector and initialises it from
//! a seed.

use std::sync::Arc;

use rand::RngExt;

use crate::error::{Error, Result};
use crate::flow::Real;
use crate::flow::conv::ConvNet;
use crate::flow::layers::FlowFloat;
use crate::lattice::Lattice;
use crate::rng::SimRng;
use crate::tape::{Dual, ParamSlice, Tape, Var};

/// Lays out a flow's parameter blocks in one flat `Vec<f32>` and initialises them.
///
/// Every network of a flow allocates its weights here, in construction order, and keeps the
/// returned [`ParamSlice`]s; at run time it reads them from the flat parameter vector it is
/// given (in whatever float type the flow runs in), so training updates every layer through
/// one vector. Random initial values come from the builder's generator, so a flow built
/// from the same seed gets the same parameters.
///
/// ```
/// use latflow::flow::ParamBuilder;
///
/// let mut params = ParamBuilder::new(latflow::rng_from_seed(1));
/// let w = params.glorot_uniform(4, 3, 1.0); // a 4 × 3 weight block
/// let b = params.zeros(1, 3); // its bias
/// assert_eq!((w.offset, b.offset), (0, 12));
/// assert_eq!(params.finish().len(), 15);
/// ```
///
/// The builder allocates at most [`ParamBuilder::capacity`] parameters (by default as many
/// as the memory available holds, see [`crate::limits`]). Requests beyond it allocate
/// nothing: they are only counted, [`ParamBuilder::requested`] then exceeds the capacity,
/// and the slices returned from then on do not lie in [`ParamBuilder::values`] — whoever
/// builds a flow checks [`ParamBuilder::is_over_capacity`] and reports the size instead of
/// using them.
#[derive(Debug)]
pub struct ParamBuilder {
    values: Vec<f32>,
    rng: SimRng,
    capacity: u128,
    requested: u128,
}

impl ParamBuilder {
    /// An empty parameter vector whose random initial values are drawn from `rng`, with a
    /// capacity of the memory available (in f32 values).
    pub fn new(rng: SimRng) -> Self {
        // A malformed limit variable is reported by the setup's own memory checks.
        let memory = crate::limits::Limits::current().map_or_else(
            |_| u128::from(crate::limits::available_memory()),
            |l| l.memory_bytes,
        );
        let capacity = memory / std::mem::size_of::<f32>() as u128;
        Self::with_capacity(rng, capacity)
    }

    /// [`ParamBuilder::new`] with room for at most `capacity` parameters.
    pub fn with_capacity(rng: SimRng, capacity: u128) -> Self {
        ParamBuilder {
            values: Vec::new(),
            rng,
            capacity: capacity.min(isize::MAX as u128 / std::mem::size_of::<f32>() as u128),
            requested: 0,
        }
    }

    /// Counts a request for a `rows × cols` block; true when it fits the capacity and is to
    /// be allocated.
    fn request(&mut self, rows: usize, cols: usize) -> bool {
        self.requested = self.requested.saturating_add(rows as u128 * cols as u128);
        self.requested <= self.capacity
    }

    /// A `rows × cols` block uniform in (−limit, limit).
    pub fn uniform(&mut self, rows: usize, cols: usize, limit: f32) -> ParamSlice {
        let offset = self.values.len();
        if self.request(rows, cols) {
            for _ in 0..rows * cols {
                let u: f32 = self.rng.random_range(-1.0f32..1.0f32);
                self.values.push(u * limit);
            }
        }
        ParamSlice { offset, rows, cols }
    }

    /// A `fan_in × fan_out` weight block, Glorot-uniform times `gain`: uniform in ±gain ·
    /// √(6 / (fan_in + fan_out)). A small gain on a net's last layer starts the flow near
    /// the identity.
    pub fn glorot_uniform(&mut self, fan_in: usize, fan_out: usize, gain: f32) -> ParamSlice {
        self.uniform(fan_in, fan_out, gain * glorot(fan_in, fan_out))
    }

    /// A `rows × cols` block of zeros.
    pub fn zeros(&mut self, rows: usize, cols: usize) -> ParamSlice {
        let offset = self.values.len();
        if self.request(rows, cols) {
            self.values.resize(offset + rows * cols, 0.0);
        }
        ParamSlice { offset, rows, cols }
    }

    /// Overwrites the initial values of an allocated block (initial values other than the
    /// builder's draws, e.g. a spectrum). Refused unless `values` fills `block` and the
    /// block lies in what was allocated.
    pub fn set(&mut self, block: ParamSlice, values: &[f32]) -> Result<()> {
        if values.len() != block.len() || block.end() > self.values.len() {
            return Err(Error::Shape(format!(
                "{} initial values for a block of {} parameters at {} of {}",
                values.len(),
                block.len(),
                block.offset,
                self.values.len()
            )));
        }
        self.values[block.offset..block.end()].copy_from_slice(values);
        Ok(())
    }

    /// The most parameters the builder allocates.
    pub fn capacity(&self) -> u128 {
        self.capacity
    }

    /// Parameters requested so far, allocated or not.
    pub fn requested(&self) -> u128 {
        self.requested
    }

    /// True once the requests exceed the capacity (nothing is allocated from then on).
    pub fn is_over_capacity(&self) -> bool {
        self.requested > self.capacity
    }

    /// Number of parameters allocated so far.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True before the first block is allocated.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The initial values allocated so far.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The flat parameter vector.
    pub fn finish(self) -> Vec<f32> {
        self.values
    }
}

/// Scale of the last layer's initial weights relative to Glorot, so that a fresh flow is
/// close to the identity.
pub(crate) const OUTPUT_GAIN: f32 = 0.1;

/// Glorot-uniform limit √(6 / (fan_in + fan_out)).
fn glorot(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in as f32 + fan_out as f32)).sqrt()
}

/// A fully connected net: `x → tanh(x W_1 + b_1) → … → x W_L + b_L` (linear output).
#[derive(Clone, Debug)]
pub struct DenseNet {
    layers: Vec<(ParamSlice, Option<ParamSlice>)>,
}

impl DenseNet {
    /// A net with layer widths `[inputs, hidden…, outputs]`, with or without biases, its
    /// weights allocated in `params` (Glorot-uniform hidden layers, a last layer scaled by
    /// 0.1 so that a fresh coupling layer is close to the identity, zero biases).
    ///
    /// As a coupling layer's conditioner it reads the passive values, so `inputs` is
    /// [`NetContext::passive`]'s length and `outputs` is [`NetContext::outputs`].
    pub fn new(widths: &[usize], bias: bool, params: &mut ParamBuilder) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::param(
                "hidden",
                format!("a dense net needs positive widths, got {widths:?}"),
            ));
        }
        let n = widths.len() - 1;
        let layers = (0..n)
            .map(|l| {
                let (fan_in, fan_out) = (widths[l], widths[l + 1]);
                let gain = if l + 1 == n { OUTPUT_GAIN } else { 1.0 };
                let w = params.glorot_uniform(fan_in, fan_out, gain);
                let b = bias.then(|| params.zeros(1, fan_out));
                (w, b)
            })
            .collect();
        Ok(DenseNet { layers })
    }

    /// Input width (columns of the first layer's input).
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |(w, _)| w.rows)
    }

    /// Output width (columns of the last layer's output).
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |(w, _)| w.cols)
    }

    /// Records the net on the tape.
    pub fn build<T: Real>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> Var {
        let mut h = x;
        for (l, &(w, b)) in self.layers.iter().enumerate() {
            h = tape.linear(params, h, w, b);
            if l + 1 < self.layers.len() {
                h = tape.tanh(h);
            }
        }
        h
    }

    /// Multiply-adds per configuration of one forward pass.
    pub fn multiply_adds_per_row(&self) -> usize {
        self.layers.iter().fold(0usize, |acc, (w, _)| {
            acc.saturating_add(w.rows.saturating_mul(w.cols))
        })
    }

    /// Values the net's forward pass records per configuration (each layer's output and
    /// its tanh).
    pub(crate) fn tape_values_per_row(&self) -> usize {
        self.layers.iter().fold(0usize, |acc, (w, _)| {
            acc.saturating_add(w.cols.saturating_mul(2))
        })
    }
}

/// A network of a coupling layer.
#[derive(Clone, Debug)]
pub enum Net {
    /// Fully connected over the passive sites.
    Dense(DenseNet),
    /// Convolutional over the whole lattice with the active sites zeroed.
    Conv(ConvNet),
    /// A user's [`ConditionerNet`].
    Custom(CustomNet),
}

impl Net {
    /// Wraps a user's conditioner net.
    pub fn custom<N: ConditionerNet>(net: N) -> Self {
        Net::Custom(CustomNet { net: Arc::new(net) })
    }

    /// What the net reads from the layer's input.
    pub fn input(&self) -> NetInput {
        match self {
            Net::Dense(_) => NetInput::Passive,
            Net::Conv(_) => NetInput::MaskedField,
            Net::Custom(net) => net.net.input(),
        }
    }
}

/// What a conditioner net reads from a coupling layer's input x (`[n, volume]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetInput {
    /// The passive values, `[n, |P|]`, columns in the order of [`NetContext::passive`]
    /// (what dense nets read).
    Passive,
    /// The whole field, `[n, volume]`, with the active sites set to zero (what
    /// convolutional nets read).
    MaskedField,
}

/// The coupling layer a conditioner net is built for: its lattice, its active sites A (the
/// ones the transform updates) and passive sites P (the ones the net may read), and the
/// number of transform parameters k the net computes for each active site.
#[derive(Clone, Copy, Debug)]
pub struct NetContext<'a> {
    pub(crate) lattice: &'a Lattice,
    pub(crate) active: &'a Arc<[usize]>,
    pub(crate) passive: &'a Arc<[usize]>,
    pub(crate) outputs_per_site: usize,
}

impl<'a> NetContext<'a> {
    /// The lattice of the flow.
    pub fn lattice(&self) -> &'a Lattice {
        self.lattice
    }

    /// The active sites, in the order of the net's output; ready for [`Tape::gather`].
    pub fn active(&self) -> &'a Arc<[usize]> {
        self.active
    }

    /// The passive sites, in the order of the [`NetInput::Passive`] columns (ascending).
    pub fn passive(&self) -> &'a Arc<[usize]> {
        self.passive
    }

    /// Transform parameters per active site the net outputs, k (1 per net when the layer
    /// has one net per parameter).
    pub fn outputs_per_site(&self) -> usize {
        self.outputs_per_site
    }

    /// Width of the net's output, |A| · k.
    pub fn outputs(&self) -> usize {
        self.active.len() * self.outputs_per_site
    }

    /// Width of the net's input when it reads `input`: |P| or the volume.
    pub fn input_width(&self, input: NetInput) -> usize {
        match input {
            NetInput::Passive => self.passive.len(),
            NetInput::MaskedField => self.lattice.volume(),
        }
    }
}

/// A user-written conditioner network: computes a coupling layer's transform parameters θ
/// from what the layer lets it read.
///
/// The net allocates its parameters through a [`ParamBuilder`] when it is constructed
/// (keeping the [`ParamSlice`]s), and [`build`](Self::build) records its forward pass on a
/// [`Tape`] with the tape's operations (`linear`, `tanh`, `add`, `conv`, …), which supply
/// the backward pass. It is generic over the flow float type, so one implementation serves
/// training (f32), gradient checks (f64) and any other [`FlowFloat`].
///
/// Contract of `build`:
/// - `input` is `[n, width]` with `width` = [`NetContext::input_width`] of
///   [`input`](Self::input): the passive values, or the whole field with the active sites
///   zeroed. The net must not read anything else of the configuration;
/// - the result is `[n, |A| · k]` ([`NetContext::outputs`]) with the k parameters of the
///   i-th active site in columns i·k .. (i+1)·k;
/// - `params` is the flow's whole flat parameter vector, laid out like the builder the net
///   allocated from.
///
/// The layer checks the output shape once when the net is added to it.
///
/// ```
/// use latflow::flow::{ConditionerNet, FlowFloat, NetContext, ParamBuilder};
/// use latflow::tape::{ParamSlice, Tape, Var};
///
/// /// θ = x W: one linear map of the passive values.
/// struct Linear {
///     w: ParamSlice,
/// }
///
/// impl Linear {
///     fn new(context: &NetContext<'_>, params: &mut ParamBuilder) -> Self {
///         let w = params.glorot_uniform(context.passive().len(), context.outputs(), 0.1);
///         Linear { w }
///     }
/// }
///
/// impl ConditionerNet for Linear {
///     fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
///         tape.linear(params, input, self.w, None)
///     }
/// }
/// ```
pub trait ConditionerNet: Send + Sync + 'static {
    /// What the net reads (default: the passive values).
    fn input(&self) -> NetInput {
        NetInput::Passive
    }

    /// Records θ = net(input) on the tape (see the trait's contract).
    fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var;
}

/// [`ConditionerNet::build`] for one float type, in object-safe form; implemented for
/// every [`ConditionerNet`] (sealed: implement [`ConditionerNet`] instead).
pub trait ConditionerOnTape<T: FlowFloat>: Send + Sync + crate::sealed::Conditioner {
    /// Records the net on the tape.
    fn build_on(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var;
}

impl<N: ConditionerNet> crate::sealed::Conditioner for N {}

impl<T: FlowFloat, N: ConditionerNet> ConditionerOnTape<T> for N {
    fn build_on(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
        self.build(tape, params, input)
    }
}

/// A [`ConditionerNet`] as a trait object that records itself in every flow float type
/// (each one reached through [`FlowFloat::conditioner`]); implemented for every
/// [`ConditionerNet`] (sealed, as [`ConditionerOnTape`] is).
pub trait AnyFloatConditioner:
    ConditionerOnTape<f32> + ConditionerOnTape<f64> + ConditionerOnTape<Dual>
{
    /// What the net reads.
    fn input(&self) -> NetInput;
}

impl<N: ConditionerNet> AnyFloatConditioner for N {
    fn input(&self) -> NetInput {
        ConditionerNet::input(self)
    }
}

/// A user's conditioner net inside a coupling layer (see [`Net::custom`]).
#[derive(Clone)]
pub struct CustomNet {
    net: Arc<dyn AnyFloatConditioner>,
}

impl CustomNet {
    /// Records the net on the tape.
    pub fn build<T: FlowFloat>(&self, tape: &mut Tape<T>, params: &[T], input: Var) -> Var {
        T::conditioner(&*self.net).build_on(tape, params, input)
    }
}

impl std::fmt::Debug for CustomNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomNet")
            .field("input", &self.net.input())
            .finish_non_exhaustive()
    }
}
