//! The networks that compute a coupling layer's transform parameters from its passive sites:
//! dense (fully connected) nets over the passive values and periodic convolutional nets over
//! the whole lattice, plus the builder that lays parameters out in one flat vector and
//! initialises them from a seed.

use rand::RngExt;

use crate::error::{Error, Result};
use crate::flow::Real;
use crate::lattice::Lattice;
use crate::rng::SimRng;
use crate::tape::{ConvTaps, ParamSlice, Tape, Var};

/// Lays out parameter blocks in one flat `Vec<f32>` and initialises them.
pub(crate) struct ParamBuilder {
    values: Vec<f32>,
    rng: SimRng,
}

impl ParamBuilder {
    pub(crate) fn new(rng: SimRng) -> Self {
        ParamBuilder {
            values: Vec::new(),
            rng,
        }
    }

    /// A `rows × cols` block uniform in (−limit, limit).
    pub(crate) fn uniform(&mut self, rows: usize, cols: usize, limit: f32) -> ParamSlice {
        let offset = self.values.len();
        for _ in 0..rows * cols {
            let u: f32 = self.rng.random_range(-1.0f32..1.0f32);
            self.values.push(u * limit);
        }
        ParamSlice { offset, rows, cols }
    }

    /// A `rows × cols` block of zeros.
    pub(crate) fn zeros(&mut self, rows: usize, cols: usize) -> ParamSlice {
        let offset = self.values.len();
        self.values.resize(offset + rows * cols, 0.0);
        ParamSlice { offset, rows, cols }
    }

    pub(crate) fn finish(self) -> Vec<f32> {
        self.values
    }
}

/// Scale of the last layer's initial weights relative to Glorot, so that a fresh flow is
/// close to the identity.
const OUTPUT_GAIN: f32 = 0.1;

/// Glorot-uniform limit √(6 / (fan_in + fan_out)).
fn glorot(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in + fan_out) as f32).sqrt()
}

/// A fully connected net: `x → tanh(x W_1 + b_1) → … → x W_L + b_L` (linear output).
#[derive(Clone, Debug)]
pub struct DenseNet {
    layers: Vec<(ParamSlice, Option<ParamSlice>)>,
}

impl DenseNet {
    /// Widths `[inputs, hidden…, outputs]`, with or without biases.
    pub(crate) fn new(widths: &[usize], bias: bool, params: &mut ParamBuilder) -> Result<Self> {
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
                let w = params.uniform(fan_in, fan_out, gain * glorot(fan_in, fan_out));
                let b = bias.then(|| params.zeros(1, fan_out));
                (w, b)
            })
            .collect();
        Ok(DenseNet { layers })
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
        self.layers.iter().map(|(w, _)| w.rows * w.cols).sum()
    }
}

/// A periodic convolutional net over the whole lattice (one input channel), tanh between
/// layers, `outputs` channels per site at the end.
#[derive(Clone, Debug)]
pub struct ConvNet {
    taps: ConvTaps,
    layers: Vec<(ParamSlice, Option<ParamSlice>, usize)>,
}

impl ConvNet {
    /// Kernel `kernel^d` (odd), hidden `channels`, `outputs` channels at the end.
    pub(crate) fn new(
        lattice: &Lattice,
        kernel: usize,
        channels: &[usize],
        outputs: usize,
        bias: bool,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        if kernel.is_multiple_of(2) {
            return Err(Error::param(
                "kernel",
                format!("must be odd and positive, got {kernel}"),
            ));
        }
        if channels.contains(&0) {
            return Err(Error::param("channels", "every layer needs a channel"));
        }
        let taps = conv_taps(lattice, kernel);
        let mut widths = vec![1];
        widths.extend_from_slice(channels);
        widths.push(outputs);
        let n = widths.len() - 1;
        let layers = (0..n)
            .map(|l| {
                let (c_in, c_out) = (widths[l], widths[l + 1]);
                let rows = taps.n_taps * c_in;
                let gain = if l + 1 == n { OUTPUT_GAIN } else { 1.0 };
                let w = params.uniform(rows, c_out, gain * glorot(rows, c_out));
                let b = bias.then(|| params.zeros(1, c_out));
                (w, b, c_in)
            })
            .collect();
        Ok(ConvNet { taps, layers })
    }

    /// Records the net on the tape; `x` is `[n, volume]`, the output `[n, volume * outputs]`.
    pub fn build<T: Real>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> Var {
        let mut h = x;
        for (l, &(w, b, c_in)) in self.layers.iter().enumerate() {
            h = tape.conv(params, h, &self.taps, c_in, w, b);
            if l + 1 < self.layers.len() {
                h = tape.tanh(h);
            }
        }
        h
    }
}

/// The periodic `kernel^d` neighbourhood of every site, offsets −r..=r per axis (first axis
/// slowest), r = kernel / 2.
pub fn conv_taps(lattice: &Lattice, kernel: usize) -> ConvTaps {
    let d = lattice.dim();
    let ext = lattice.extents();
    let r = kernel / 2;
    let n_taps = kernel.pow(d as u32);
    let mut taps = Vec::with_capacity(lattice.volume() * n_taps);
    let mut x = vec![0usize; d];
    let mut y = vec![0usize; d];
    for s in 0..lattice.volume() {
        lattice.coords(s, &mut x);
        for t in 0..n_taps {
            let mut rem = t;
            for mu in (0..d).rev() {
                let offset = rem % kernel;
                rem /= kernel;
                y[mu] = (x[mu] + ext[mu] * (r + 1) + offset - r) % ext[mu];
            }
            taps.push(lattice.site(&y) as u32);
        }
    }
    ConvTaps {
        volume: lattice.volume(),
        n_taps,
        taps: taps.into(),
    }
}

/// A network of either kind.
#[derive(Clone, Debug)]
pub enum Net {
    /// Fully connected over the passive sites.
    Dense(DenseNet),
    /// Convolutional over the whole lattice with the active sites zeroed.
    Conv(ConvNet),
}
