//! Convolutional conditioner nets and the neighbourhood tables they run on: periodic
//! convolutions over a lattice ([`conv_taps`]), strided ones onto the coarser lattice of the
//! sites whose coordinates are multiples of a stride ([`strided_conv_taps`]), and their
//! transposes from the coarser lattice back onto the finer one ([`upsampling_conv_taps`]).
//! A [`ConvNet`]'s weights are shared by every site, so its size does not depend on the
//! lattice and it commutes with the lattice translations.

use crate::error::{Error, Result};
use crate::flow::Real;
use crate::flow::net::{OUTPUT_GAIN, ParamBuilder};
use crate::lattice::Lattice;
use crate::tape::{ConvTaps, ParamSlice, Tape, Var};

/// A periodic convolutional net over a lattice: `inputs` channels per site in (one, the
/// masked field, for a coupling layer), tanh between layers, `outputs` channels per site
/// at the end.
#[derive(Clone, Debug)]
pub struct ConvNet {
    taps: ConvTaps,
    layers: Vec<(ParamSlice, Option<ParamSlice>, usize)>,
}

impl ConvNet {
    /// Kernel `kernel^d` (odd), one input channel, hidden `channels`, `outputs` channels at
    /// the end.
    pub(crate) fn new(
        lattice: &Lattice,
        kernel: usize,
        channels: &[usize],
        outputs: usize,
        bias: bool,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        Self::with_inputs(lattice, kernel, 1, channels, outputs, bias, params)
    }

    /// A net of kernel `kernel^d` (odd) on `lattice` from `inputs` channels through the
    /// hidden `channels` to `outputs` channels, with or without biases, its weights
    /// allocated in `params` (Glorot-uniform, the last layer scaled by 0.1, zero biases).
    pub fn with_inputs(
        lattice: &Lattice,
        kernel: usize,
        inputs: usize,
        channels: &[usize],
        outputs: usize,
        bias: bool,
        params: &mut ParamBuilder,
    ) -> Result<Self> {
        if inputs == 0 || outputs == 0 || channels.contains(&0) {
            return Err(Error::param("channels", "every layer needs a channel"));
        }
        let n_taps = checked_taps(lattice, kernel)?;
        for &c_in in channels {
            crate::limits::checked_product("channels", "convolution weights", &[n_taps, c_in])?;
        }
        let taps = conv_taps(lattice, kernel)?;
        let mut widths = vec![inputs];
        widths.extend_from_slice(channels);
        widths.push(outputs);
        let n = widths.len() - 1;
        let layers = (0..n)
            .map(|l| {
                let (c_in, c_out) = (widths[l], widths[l + 1]);
                let rows = taps.n_taps() * c_in;
                let gain = if l + 1 == n { OUTPUT_GAIN } else { 1.0 };
                let w = params.glorot_uniform(rows, c_out, gain);
                let b = bias.then(|| params.zeros(1, c_out));
                (w, b, c_in)
            })
            .collect();
        Ok(ConvNet { taps, layers })
    }

    /// Input channels per site.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |(_, _, c_in)| *c_in)
    }

    /// Output channels per site.
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |(w, _, _)| w.cols)
    }

    /// Multiply-adds per configuration of one forward pass (every weight at every site).
    pub fn multiply_adds_per_row(&self) -> usize {
        self.layers.iter().fold(0usize, |acc, (w, _, _)| {
            acc.saturating_add(
                w.rows
                    .saturating_mul(w.cols)
                    .saturating_mul(self.taps.out_sites()),
            )
        })
    }

    /// Values the net's forward pass records per configuration (each layer's output
    /// channels at every site, and a buffer of the same size for the backward pass).
    pub(crate) fn tape_values_per_row(&self) -> usize {
        self.layers.iter().fold(0usize, |acc, (w, _, _)| {
            acc.saturating_add(
                w.cols
                    .saturating_mul(2)
                    .saturating_mul(self.taps.out_sites()),
            )
        })
    }

    /// Number of sites of the lattice the net convolves over.
    pub fn volume(&self) -> usize {
        self.taps.out_sites()
    }

    /// Records the net on the tape; `x` is `[n, volume * inputs]` (channels last), the
    /// output `[n, volume * outputs]`.
    pub fn build<T: Real>(&self, tape: &mut Tape<T>, params: &[T], x: Var) -> Var {
        let mut h = x;
        for (l, &(w, b, c_in)) in self.layers.iter().enumerate() {
            h = if l + 1 < self.layers.len() {
                tape.conv_tanh(params, h, &self.taps, c_in, w, b)
            } else {
                tape.conv(params, h, &self.taps, c_in, w, b)
            };
        }
        h
    }
}

/// Taps per site of a `kernel^d` convolution on `lattice`, refusing an even kernel and a
/// table larger than the memory available.
fn checked_taps(lattice: &Lattice, kernel: usize) -> Result<usize> {
    if kernel.is_multiple_of(2) {
        return Err(Error::param(
            "kernel",
            format!("must be odd and positive, got {kernel}"),
        ));
    }
    let n_taps = u32::try_from(lattice.dim())
        .ok()
        .and_then(|d| kernel.checked_pow(d))
        .ok_or_else(|| {
            Error::param(
                "kernel",
                format!(
                    "{kernel}^{} taps per site do not fit in a {}-bit integer",
                    lattice.dim(),
                    usize::BITS
                ),
            )
        })?;
    crate::limits::check_memory(
        "kernel",
        &format!("the tap table of a {kernel}^{} convolution", lattice.dim()),
        (lattice.volume() as u128)
            .saturating_mul(n_taps as u128)
            .saturating_mul(2 * std::mem::size_of::<u32>() as u128),
    )?;
    Ok(n_taps)
}

/// The offset of tap `t` along axis `mu` (−r..=r, first axis slowest).
fn tap_offset(t: usize, mu: usize, d: usize, kernel: usize) -> isize {
    let mut rem = t;
    for _ in mu + 1..d {
        rem /= kernel;
    }
    (rem % kernel) as isize - (kernel / 2) as isize
}

/// The periodic `kernel^d` neighbourhood of every site: tap t of site x reads x + o_t, the
/// offsets o_t ∈ {−r, …, r}^d (r = kernel / 2) in lexicographic order, first axis slowest.
/// Refused: an even kernel.
pub fn conv_taps(lattice: &Lattice, kernel: usize) -> Result<ConvTaps> {
    let n_taps = checked_taps(lattice, kernel)?;
    let d = lattice.dim();
    let ext = lattice.extents();
    let mut table = Vec::with_capacity(lattice.volume() * n_taps);
    let (mut x, mut y) = (vec![0usize; d], vec![0usize; d]);
    for s in 0..lattice.volume() {
        lattice.coords(s, &mut x);
        for t in 0..n_taps {
            for mu in 0..d {
                y[mu] = shifted(x[mu], tap_offset(t, mu, d, kernel), ext[mu]);
            }
            table.push(lattice.site(&y) as u32);
        }
    }
    ConvTaps::new(lattice.volume(), n_taps, table)
}

/// (x + o) mod l for an offset of any size.
fn shifted(x: usize, offset: isize, l: usize) -> usize {
    (x as isize + offset).rem_euclid(l as isize) as usize
}

/// The coarse lattice of the sites of `lattice` whose coordinates are all multiples of
/// `stride`: extents divided by the stride. Refused unless every extent is a multiple of
/// it (the error names the extents).
pub fn coarse_lattice(lattice: &Lattice, stride: usize) -> Result<Lattice> {
    if stride == 0 || lattice.extents().iter().any(|&l| !l.is_multiple_of(stride)) {
        return Err(Error::InvalidLattice(format!(
            "a {lattice} lattice has no coarse lattice of stride {stride}: every extent must \
             be a multiple of {stride}"
        )));
    }
    let extents: Vec<usize> = lattice.extents().iter().map(|l| l / stride).collect();
    Lattice::new(&extents)
}

/// A strided convolution onto the coarse lattice ([`coarse_lattice`]): output site c (a
/// site of the coarse lattice, at coordinates y) reads the `kernel^d` neighbourhood of the
/// fine site at coordinates stride·y, tap t at offset o_t as in [`conv_taps`].
pub fn strided_conv_taps(lattice: &Lattice, kernel: usize, stride: usize) -> Result<ConvTaps> {
    let coarse = coarse_lattice(lattice, stride)?;
    let n_taps = checked_taps(lattice, kernel)?;
    let d = lattice.dim();
    let ext = lattice.extents();
    let mut table = Vec::with_capacity(coarse.volume() * n_taps);
    let (mut c, mut y) = (vec![0usize; d], vec![0usize; d]);
    for s in 0..coarse.volume() {
        coarse.coords(s, &mut c);
        for t in 0..n_taps {
            for mu in 0..d {
                y[mu] = shifted(stride * c[mu], tap_offset(t, mu, d, kernel), ext[mu]);
            }
            table.push(lattice.site(&y) as u32);
        }
    }
    ConvTaps::new(lattice.volume(), n_taps, table)
}

/// The transpose of [`strided_conv_taps`]: from the coarse lattice onto `lattice`. Tap t of
/// fine site x reads the coarse site c with stride·c + o_t = x, or nothing when x − o_t is
/// not on the coarse lattice; a convolution with this table is the adjoint (up to its own
/// kernel) of the strided one, an upsampling.
pub fn upsampling_conv_taps(lattice: &Lattice, kernel: usize, stride: usize) -> Result<ConvTaps> {
    let coarse = coarse_lattice(lattice, stride)?;
    let n_taps = checked_taps(lattice, kernel)?;
    let d = lattice.dim();
    let ext = lattice.extents();
    let mut table = Vec::with_capacity(lattice.volume() * n_taps);
    let (mut x, mut c) = (vec![0usize; d], vec![0usize; d]);
    for s in 0..lattice.volume() {
        lattice.coords(s, &mut x);
        for t in 0..n_taps {
            let mut on_coarse = true;
            for mu in 0..d {
                let from = shifted(x[mu], -tap_offset(t, mu, d, kernel), ext[mu]);
                on_coarse &= from.is_multiple_of(stride);
                c[mu] = from / stride;
            }
            table.push(if on_coarse {
                coarse.site(&c) as u32
            } else {
                ConvTaps::NO_SITE
            });
        }
    }
    ConvTaps::new(coarse.volume(), n_taps, table)
}
