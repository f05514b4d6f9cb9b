//! The reverse-mode tape: a list of nodes, each holding an operation, its value and its
//! gradient, evaluated eagerly on the way forward and differentiated by hand-derived rules on
//! the way back. Buffers are kept by node position across [`Tape::reset`], so a training step
//! that rebuilds the same graph allocates nothing.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::matmul::mat_mul;
use super::{PointwiseTransform, Real};

/// A handle to a node of a [`Tape`]: valid until the next [`Tape::reset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

impl Var {
    /// The node's position on its tape: nodes are numbered in the order they were
    /// recorded, so the nodes recorded after a point are `tape.len()` onwards.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A `rows × cols` row-major block of the flat parameter vector, starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamSlice {
    /// Position of the first element in the flat parameter vector.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

impl ParamSlice {
    /// Number of parameters in the block.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True when the block holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the last position of the block.
    pub fn end(&self) -> usize {
        self.offset + self.len()
    }

    fn view<'a, T>(&self, params: &'a [T]) -> ArrayView2<'a, T> {
        ArrayView2::from_shape((self.rows, self.cols), &params[self.offset..self.end()])
            .expect("parameter block lies inside the parameter vector")
    }

    fn view_mut<'a, T>(&self, params: &'a mut [T]) -> ArrayViewMut2<'a, T> {
        ArrayViewMut2::from_shape((self.rows, self.cols), &mut params[self.offset..self.end()])
            .expect("parameter block lies inside the parameter vector")
    }
}

/// Neighbourhood table of a periodic convolution: `taps[site * n_taps + t]` is the site read
/// by kernel tap `t` when the output sits at `site`.
#[derive(Clone, Debug)]
pub struct ConvTaps {
    /// Number of sites.
    pub volume: usize,
    /// Kernel taps per site (k^d).
    pub n_taps: usize,
    /// The table, `volume * n_taps` long.
    pub taps: Arc<[u32]>,
}

enum Op<T: Real> {
    Input,
    Linear {
        x: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    },
    MatMul {
        a: usize,
        b: usize,
    },
    BiasAdd {
        x: usize,
        b: ParamSlice,
    },
    Tanh(usize),
    Exp(usize),
    Abs(usize),
    Softplus(usize),
    Softmax {
        x: usize,
        group: usize,
    },
    CumSum {
        x: usize,
        group: usize,
    },
    Gather {
        x: usize,
        cols: Arc<[usize]>,
        group: usize,
    },
    Scatter {
        base: usize,
        src: usize,
        cols: Arc<[usize]>,
        group: usize,
    },
    Interleave {
        first: usize,
        count: usize,
        sites: usize,
    },
    Conv {
        x: usize,
        taps: ConvTaps,
        c_in: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    },
    SumRows(usize),
    SumAll(usize),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Scale(usize, T),
    ScaleByExpParam {
        x: usize,
        c: usize,
    },
    AddParam {
        x: usize,
        c: usize,
        factor: T,
    },
    Pointwise {
        v: usize,
        theta: usize,
        transform: Arc<dyn PointwiseTransform<T>>,
    },
    PointwiseLogDet(usize),
}

struct Node<T: Real> {
    op: Op<T>,
    needs_grad: bool,
    value: Array2<T>,
    grad: Array2<T>,
    /// Op-specific forward scratch (per-site log-derivatives, im2col matrix).
    aux: Array2<T>,
    /// Op-specific backward scratch (gradient of per-site log-derivatives, im2col gradient).
    aux_grad: Array2<T>,
    /// State a pointwise transform saved for its backward pass (empty: none saved).
    saved: Vec<T>,
}

impl<T: Real> Node<T> {
    /// Zeroes the gradient (and a pointwise node's gradient of its log-derivatives),
    /// allocating only on a change of shape.
    fn zero_grad(&mut self) {
        let shape = self.value.dim();
        if self.grad.dim() == shape {
            self.grad.fill(T::zero());
        } else {
            ensure_shape(&mut self.grad, shape);
        }
        if let Op::Pointwise { .. } = self.op {
            if self.aux_grad.dim() == shape {
                self.aux_grad.fill(T::zero());
            } else {
                ensure_shape(&mut self.aux_grad, shape);
            }
        }
    }
}

/// Gives `buf` the shape `shape` (zero-filled if it changes), reusing its allocation when
/// it is large enough, so that graphs of alternating shapes on one tape stop allocating once
/// every buffer has reached its largest size.
pub(crate) fn ensure_shape<T: Real>(buf: &mut Array2<T>, shape: (usize, usize)) {
    if buf.dim() != shape {
        let (mut data, _) = std::mem::replace(buf, Array2::zeros((0, 0))).into_raw_vec_and_offset();
        data.clear();
        data.resize(shape.0 * shape.1, T::zero());
        *buf = Array2::from_shape_vec(shape, data).expect("the buffer holds rows × cols values");
    }
}

fn contiguous<T>(a: &Array2<T>) -> &[T] {
    a.as_slice().expect("tape buffers are standard-layout")
}

fn contiguous_mut<T>(a: &mut Array2<T>) -> &mut [T] {
    a.as_slice_mut().expect("tape buffers are standard-layout")
}

/// A reverse-mode tape over `[rows, cols]` tensors of `T`.
///
/// Operations evaluate immediately and return a [`Var`]. Parameters are not copied onto the
/// tape: operations that use them take `params` and a [`ParamSlice`], and
/// [`Tape::backward`] adds their gradients into a caller-provided flat buffer laid out like
/// `params`. Shape mismatches between operands are programming errors and panic.
pub struct Tape<T: Real> {
    nodes: Vec<Node<T>>,
    len: usize,
    group_ids: Vec<usize>,
    mask: Vec<bool>,
    save_for_backward: bool,
}

impl<T: Real> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            len: 0,
            group_ids: Vec::new(),
            mask: Vec::new(),
            save_for_backward: true,
        }
    }

    /// Whether pointwise transforms keep per-site state for the backward pass (on by
    /// default; forward-only passes turn it off to skip the stores).
    pub fn set_save_for_backward(&mut self, on: bool) {
        self.save_for_backward = on;
    }

    /// Forgets the graph but keeps every buffer for the next one.
    pub fn reset(&mut self) {
        self.len = 0;
        self.group_ids.clear();
    }

    /// Number of nodes in the current graph.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the current graph has no node.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of a node.
    pub fn value(&self, v: Var) -> ArrayView2<'_, T> {
        self.nodes[v.0].value.view()
    }

    /// The gradient of a node (meaningful after [`Tape::zero_grads`] / [`Tape::backward`]).
    pub fn grad(&self, v: Var) -> ArrayView2<'_, T> {
        self.nodes[v.0].grad.view()
    }

    /// Mutable gradient of a node, to seed the backward pass after [`Tape::zero_grads`].
    pub fn grad_mut(&mut self, v: Var) -> ArrayViewMut2<'_, T> {
        self.nodes[v.0].grad.view_mut()
    }

    /// The value of a node together with its mutable gradient (seed ∂L/∂v from v itself).
    pub fn value_and_grad_mut(&mut self, v: Var) -> (ArrayView2<'_, T>, ArrayViewMut2<'_, T>) {
        let node = &mut self.nodes[v.0];
        (node.value.view(), node.grad.view_mut())
    }

    /// `(rows, cols)` of a node.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.nodes[v.0].value.dim()
    }

    fn push(&mut self, op: Op<T>, shape: (usize, usize), needs_grad: bool) -> usize {
        let i = self.len;
        if i == self.nodes.len() {
            self.nodes.push(Node {
                op,
                needs_grad,
                value: Array2::zeros(shape),
                grad: Array2::zeros((0, 0)),
                aux: Array2::zeros((0, 0)),
                aux_grad: Array2::zeros((0, 0)),
                saved: Vec::new(),
            });
        } else {
            let node = &mut self.nodes[i];
            node.op = op;
            node.needs_grad = needs_grad;
            ensure_shape(&mut node.value, shape);
        }
        self.len += 1;
        i
    }

    fn split(&mut self, i: usize) -> (&[Node<T>], &mut Node<T>) {
        let (prev, rest) = self.nodes.split_at_mut(i);
        (prev, &mut rest[0])
    }

    fn needs(&self, i: usize) -> bool {
        self.nodes[i].needs_grad
    }

    /// A constant input (no gradient is propagated into it).
    pub fn input(&mut self, x: ArrayView2<T>) -> Var {
        let i = self.push(Op::Input, x.dim(), false);
        self.nodes[i].value.assign(&x);
        Var(i)
    }

    /// A constant `rows × cols` block of zeros.
    pub fn zeros(&mut self, rows: usize, cols: usize) -> Var {
        let i = self.push(Op::Input, (rows, cols), false);
        self.nodes[i].value.fill(T::zero());
        Var(i)
    }

    /// An input whose gradient is wanted (e.g. to check a backward pass).
    pub fn input_with_grad(&mut self, x: ArrayView2<T>) -> Var {
        let v = self.input(x);
        self.nodes[v.0].needs_grad = true;
        v
    }

    /// x·W (+ b): a dense layer with weights `[in, out]` and an optional bias `[1, out]`.
    pub fn linear(&mut self, params: &[T], x: Var, w: ParamSlice, b: Option<ParamSlice>) -> Var {
        let (n, k) = self.shape(x);
        assert_eq!(
            k, w.rows,
            "linear: input width {k} vs weight rows {}",
            w.rows
        );
        if let Some(b) = b {
            assert_eq!((b.rows, b.cols), (1, w.cols), "linear: bias shape");
        }
        let i = self.push(Op::Linear { x: x.0, w, b }, (n, w.cols), true);
        let (prev, node) = self.split(i);
        let beta = match b {
            Some(b) => {
                node.value.assign(&b.view(params));
                T::one()
            }
            None => T::zero(),
        };
        mat_mul(
            &prev[x.0].value.view(),
            &w.view(params),
            beta,
            &mut node.value.view_mut(),
        );
        Var(i)
    }

    /// a·b of two nodes.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (n, k) = self.shape(a);
        let (k2, m) = self.shape(b);
        assert_eq!(k, k2, "matmul: inner dimensions {k} vs {k2}");
        let ng = self.needs(a.0) || self.needs(b.0);
        let i = self.push(Op::MatMul { a: a.0, b: b.0 }, (n, m), ng);
        let (prev, node) = self.split(i);
        mat_mul(
            &prev[a.0].value.view(),
            &prev[b.0].value.view(),
            T::zero(),
            &mut node.value.view_mut(),
        );
        Var(i)
    }

    /// x + b with a bias row `[1, cols]` from the parameters.
    pub fn bias_add(&mut self, params: &[T], x: Var, b: ParamSlice) -> Var {
        let shape = self.shape(x);
        assert_eq!((b.rows, b.cols), (1, shape.1), "bias_add: bias shape");
        let i = self.push(Op::BiasAdd { x: x.0, b }, shape, true);
        let (prev, node) = self.split(i);
        node.value.assign(&prev[x.0].value);
        add_into(&mut node.value, &b.view(params));
        Var(i)
    }

    fn unary(&mut self, x: Var, op: Op<T>, f: impl Fn(T) -> T) -> Var {
        let shape = self.shape(x);
        let ng = self.needs(x.0);
        let i = self.push(op, shape, ng);
        let (prev, node) = self.split(i);
        node.value.zip_mut_with(&prev[x.0].value, |y, &x| *y = f(x));
        Var(i)
    }

    /// tanh elementwise (in f32 a branch-free rational approximation accurate to a few
    /// ulp, which vectorises; the backward pass uses 1 − y² of the value computed).
    pub fn tanh(&mut self, x: Var) -> Var {
        self.unary(x, Op::Tanh(x.0), T::tanh_map)
    }

    /// exp elementwise.
    pub fn exp(&mut self, x: Var) -> Var {
        self.unary(x, Op::Exp(x.0), |x| x.exp())
    }

    /// |x| elementwise (the derivative at 0 is taken as 0).
    pub fn abs(&mut self, x: Var) -> Var {
        self.unary(x, Op::Abs(x.0), |x| x.abs())
    }

    /// softplus(x) = log(1 + e^x), evaluated stably.
    pub fn softplus(&mut self, x: Var) -> Var {
        self.unary(x, Op::Softplus(x.0), softplus)
    }

    /// Softmax over each run of `group` consecutive columns (the last axis of a
    /// `[rows, cols / group, group]` view).
    pub fn softmax(&mut self, x: Var, group: usize) -> Var {
        let shape = self.shape(x);
        assert!(
            group > 0 && shape.1.is_multiple_of(group),
            "softmax: group {group}"
        );
        let ng = self.needs(x.0);
        let i = self.push(Op::Softmax { x: x.0, group }, shape, ng);
        let (prev, node) = self.split(i);
        let xs = contiguous(&prev[x.0].value);
        let ys = contiguous_mut(&mut node.value);
        for (xg, yg) in xs.chunks_exact(group).zip(ys.chunks_exact_mut(group)) {
            let m = xg.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
            let mut sum = T::zero();
            for (y, &x) in yg.iter_mut().zip(xg) {
                *y = (x - m).exp();
                sum = sum + *y;
            }
            let inv = T::one() / sum;
            yg.iter_mut().for_each(|y| *y = *y * inv);
        }
        Var(i)
    }

    /// Cumulative sum over each run of `group` consecutive columns.
    pub fn cumsum(&mut self, x: Var, group: usize) -> Var {
        let shape = self.shape(x);
        assert!(
            group > 0 && shape.1.is_multiple_of(group),
            "cumsum: group {group}"
        );
        let ng = self.needs(x.0);
        let i = self.push(Op::CumSum { x: x.0, group }, shape, ng);
        let (prev, node) = self.split(i);
        let xs = contiguous(&prev[x.0].value);
        let ys = contiguous_mut(&mut node.value);
        for (xg, yg) in xs.chunks_exact(group).zip(ys.chunks_exact_mut(group)) {
            let mut acc = T::zero();
            for (y, &x) in yg.iter_mut().zip(xg) {
                acc = acc + x;
                *y = acc;
            }
        }
        Var(i)
    }

    /// Picks column groups: `out[:, j*group + c] = x[:, cols[j]*group + c]`.
    pub fn gather(&mut self, x: Var, cols: &Arc<[usize]>, group: usize) -> Var {
        let (n, m) = self.shape(x);
        assert!(
            cols.iter().all(|&c| (c + 1) * group <= m),
            "gather: column out of range"
        );
        let ng = self.needs(x.0);
        let op = Op::Gather {
            x: x.0,
            cols: cols.clone(),
            group,
        };
        let i = self.push(op, (n, cols.len() * group), ng);
        let (prev, node) = self.split(i);
        for (xr, mut yr) in prev[x.0]
            .value
            .outer_iter()
            .zip(node.value.outer_iter_mut())
        {
            let xr = xr.as_slice().expect("standard layout");
            let yr = yr.as_slice_mut().expect("standard layout");
            for (yg, &c) in yr.chunks_exact_mut(group).zip(cols.iter()) {
                yg.copy_from_slice(&xr[c * group..(c + 1) * group]);
            }
        }
        Var(i)
    }

    /// `base` with column groups replaced: `out[:, cols[j]*group + c] = src[:, j*group + c]`
    /// (the columns in `cols` must be distinct).
    pub fn scatter(&mut self, base: Var, src: Var, cols: &Arc<[usize]>, group: usize) -> Var {
        let (n, m) = self.shape(base);
        assert_eq!(
            self.shape(src),
            (n, cols.len() * group),
            "scatter: source shape"
        );
        assert!(
            cols.iter().all(|&c| (c + 1) * group <= m),
            "scatter: column out of range"
        );
        let ng = self.needs(base.0) || self.needs(src.0);
        let op = Op::Scatter {
            base: base.0,
            src: src.0,
            cols: cols.clone(),
            group,
        };
        let i = self.push(op, (n, m), ng);
        let (prev, node) = self.split(i);
        node.value.assign(&prev[base.0].value);
        for (sr, mut yr) in prev[src.0]
            .value
            .outer_iter()
            .zip(node.value.outer_iter_mut())
        {
            let sr = sr.as_slice().expect("standard layout");
            let yr = yr.as_slice_mut().expect("standard layout");
            for (sg, &c) in sr.chunks_exact(group).zip(cols.iter()) {
                yr[c * group..(c + 1) * group].copy_from_slice(sg);
            }
        }
        Var(i)
    }

    /// Per-site concatenation: inputs `[n, sites * k_i]` give `[n, sites * Σk_i]` with the
    /// `k_i` numbers of input i for site s at `s * Σk + Σ_{j<i} k_j`.
    pub fn interleave(&mut self, inputs: &[Var], sites: usize) -> Var {
        assert!(!inputs.is_empty() && sites > 0, "interleave: no input");
        let n = self.shape(inputs[0]).0;
        let mut total = 0;
        for &v in inputs {
            let (r, c) = self.shape(v);
            assert!(r == n && c.is_multiple_of(sites), "interleave: input shape");
            total += c / sites;
        }
        let ng = inputs.iter().any(|v| self.needs(v.0));
        let first = self.group_ids.len();
        self.group_ids.extend(inputs.iter().map(|v| v.0));
        let op = Op::Interleave {
            first,
            count: inputs.len(),
            sites,
        };
        let i = self.push(op, (n, sites * total), ng);
        let (prev, rest) = self.nodes.split_at_mut(i);
        let node = &mut rest[0];
        let mut offset = 0;
        for &id in &self.group_ids[first..first + inputs.len()] {
            let k = prev[id].value.ncols() / sites;
            for (xr, mut yr) in prev[id].value.outer_iter().zip(node.value.outer_iter_mut()) {
                let xr = xr.as_slice().expect("standard layout");
                let yr = yr.as_slice_mut().expect("standard layout");
                for (s, xg) in xr.chunks_exact(k).enumerate() {
                    let at = s * total + offset;
                    yr[at..at + k].copy_from_slice(xg);
                }
            }
            offset += k;
        }
        Var(i)
    }

    /// Periodic convolution. `x` is `[n, volume * c_in]` (channels last), the kernel is a
    /// `[n_taps * c_in, c_out]` parameter block, the optional bias `[1, c_out]`; the output is
    /// `[n, volume * c_out]`.
    pub fn conv(
        &mut self,
        params: &[T],
        x: Var,
        taps: &ConvTaps,
        c_in: usize,
        w: ParamSlice,
        b: Option<ParamSlice>,
    ) -> Var {
        let (n, m) = self.shape(x);
        let vol = taps.volume;
        assert_eq!(m, vol * c_in, "conv: input width");
        assert_eq!(w.rows, taps.n_taps * c_in, "conv: kernel rows");
        let c_out = w.cols;
        let op = Op::Conv {
            x: x.0,
            taps: taps.clone(),
            c_in,
            w,
            b,
        };
        let i = self.push(op, (n, vol * c_out), true);
        let (prev, node) = self.split(i);
        let width = taps.n_taps * c_in;
        ensure_shape(&mut node.aux, (n * vol, width));
        im2col(&prev[x.0].value, &mut node.aux, taps, c_in);
        let mut out = node
            .value
            .view_mut()
            .into_shape_with_order((n * vol, c_out))
            .expect("standard layout");
        let beta = match b {
            Some(b) => {
                out.assign(&b.view(params));
                T::one()
            }
            None => T::zero(),
        };
        mat_mul(&node.aux.view(), &w.view(params), beta, &mut out);
        Var(i)
    }

    /// Row sums: `[n, m]` → `[n, 1]`.
    pub fn sum_rows(&mut self, x: Var) -> Var {
        let n = self.shape(x).0;
        let ng = self.needs(x.0);
        let i = self.push(Op::SumRows(x.0), (n, 1), ng);
        let (prev, node) = self.split(i);
        for (xr, y) in prev[x.0].value.outer_iter().zip(node.value.iter_mut()) {
            *y = xr.sum();
        }
        Var(i)
    }

    /// Sum of all elements: `[n, m]` → `[1, 1]`.
    pub fn sum_all(&mut self, x: Var) -> Var {
        let ng = self.needs(x.0);
        let i = self.push(Op::SumAll(x.0), (1, 1), ng);
        let (prev, node) = self.split(i);
        node.value[[0, 0]] = prev[x.0].value.sum();
        Var(i)
    }

    fn binary(&mut self, a: Var, b: Var, op: Op<T>, f: impl Fn(T, T) -> T) -> Var {
        let shape = self.shape(a);
        assert_eq!(shape, self.shape(b), "elementwise op: shapes differ");
        let ng = self.needs(a.0) || self.needs(b.0);
        let i = self.push(op, shape, ng);
        let (prev, node) = self.split(i);
        ndarray::Zip::from(&mut node.value)
            .and(&prev[a.0].value)
            .and(&prev[b.0].value)
            .for_each(|y, &a, &b| *y = f(a, b));
        Var(i)
    }

    /// a + b elementwise.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Add(a.0, b.0), |a, b| a + b)
    }

    /// a − b elementwise.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Sub(a.0, b.0), |a, b| a - b)
    }

    /// a ⊙ b elementwise.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, Op::Mul(a.0, b.0), |a, b| a * b)
    }

    /// c·x for a constant c.
    pub fn scale(&mut self, x: Var, c: T) -> Var {
        self.unary(x, Op::Scale(x.0, c), |x| c * x)
    }

    /// x · e^θ with the scalar parameter θ = `params[c]`.
    pub fn scale_by_exp_param(&mut self, params: &[T], x: Var, c: usize) -> Var {
        let factor = params[c].exp();
        let shape = self.shape(x);
        let i = self.push(Op::ScaleByExpParam { x: x.0, c }, shape, true);
        let (prev, node) = self.split(i);
        node.value
            .zip_mut_with(&prev[x.0].value, |y, &x| *y = x * factor);
        Var(i)
    }

    /// x + factor·θ with the scalar parameter θ = `params[c]`.
    pub fn add_param(&mut self, params: &[T], x: Var, c: usize, factor: T) -> Var {
        let shift = factor * params[c];
        let shape = self.shape(x);
        let i = self.push(Op::AddParam { x: x.0, c, factor }, shape, true);
        let (prev, node) = self.split(i);
        node.value
            .zip_mut_with(&prev[x.0].value, |y, &x| *y = x + shift);
        Var(i)
    }

    /// Applies a pointwise transform: `v` is `[n, m]`, `theta` is `[n, m·k]`. Returns y
    /// (`[n, m]`) and the per-row sum of log|∂C/∂v| (`[n, 1]`).
    pub fn pointwise(
        &mut self,
        v: Var,
        theta: Var,
        transform: &Arc<dyn PointwiseTransform<T>>,
    ) -> (Var, Var) {
        let (n, m) = self.shape(v);
        let k = transform.params_per_site();
        assert_eq!(self.shape(theta), (n, m * k), "pointwise: parameter shape");
        let ng = self.needs(v.0) || self.needs(theta.0);
        let op = Op::Pointwise {
            v: v.0,
            theta: theta.0,
            transform: transform.clone(),
        };
        let i = self.push(op, (n, m), ng);
        let save = ng && self.save_for_backward;
        let (prev, node) = self.split(i);
        ensure_shape(&mut node.aux, (n, m));
        let saved_len = if save { transform.saved_len(n * m) } else { 0 };
        // Resized only when the length changes, so steady-state passes allocate nothing.
        if node.saved.len() != saved_len {
            node.saved.resize(saved_len, T::zero());
        }
        transform.forward_saving(
            contiguous(&prev[v.0].value),
            contiguous(&prev[theta.0].value),
            contiguous_mut(&mut node.value),
            contiguous_mut(&mut node.aux),
            &mut node.saved,
        );
        let j = self.push(Op::PointwiseLogDet(i), (n, 1), ng);
        let (prev, node) = self.split(j);
        for (lr, y) in prev[i].aux.outer_iter().zip(node.value.iter_mut()) {
            *y = lr.sum();
        }
        (Var(i), Var(j))
    }

    /// Per-site log-derivatives of a pointwise node (from [`Tape::pointwise`]).
    pub fn pointwise_log_derivatives(&self, y: Var) -> ArrayView2<'_, T> {
        assert!(matches!(self.nodes[y.0].op, Op::Pointwise { .. }));
        self.nodes[y.0].aux.view()
    }

    /// The vector–Jacobian product of a pointwise node (from [`Tape::pointwise`]) on its
    /// own: given ∂L/∂y (`gy`) and ∂L/∂ld per site (`gld`), *adds* ∂L/∂v into `gv` and ∂L/∂θ
    /// into `gtheta` (flat, laid out like the node's operands), from the state the
    /// transform saved in the forward pass when there is one.
    pub fn pointwise_backward(&self, y: Var, gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]) {
        let node = &self.nodes[y.0];
        let Op::Pointwise {
            v,
            theta,
            transform,
        } = &node.op
        else {
            panic!("pointwise_backward: not a pointwise node");
        };
        let (v, theta) = (
            contiguous(&self.nodes[*v].value),
            contiguous(&self.nodes[*theta].value),
        );
        if node.saved.len() == transform.saved_len(v.len()) {
            transform.backward_saved(v, theta, &node.saved, gy, gld, gv, gtheta);
        } else {
            transform.backward(v, theta, gy, gld, gv, gtheta);
        }
    }

    /// Sets every gradient of the current graph to zero (allocating only on shape change).
    pub fn zero_grads(&mut self) {
        for node in &mut self.nodes[..self.len] {
            node.zero_grad();
        }
    }

    /// Propagates the seeded gradients (set after [`Tape::zero_grads`]) back through the
    /// graph, *adding* parameter gradients into `param_grad` (laid out like `params`).
    pub fn backward(&mut self, params: &[T], param_grad: &mut [T]) {
        assert_eq!(params.len(), param_grad.len(), "backward: gradient length");
        self.propagate(params, Some(param_grad), 0..self.len);
    }

    /// [`Tape::backward`] to the nodes only: the gradients of inputs made by
    /// [`Tape::input_with_grad`] (and of every node between), without the parameter
    /// gradients and their cost.
    pub fn backward_to_inputs(&mut self, params: &[T]) {
        self.propagate(params, None, 0..self.len);
    }

    /// Sets the gradients of the nodes `nodes` (indices, see [`Var::index`]) to zero, so
    /// that a part of the graph can be differentiated on its own
    /// ([`Tape::backward_nodes_to_inputs`]).
    pub fn zero_grads_of(&mut self, nodes: std::ops::Range<usize>) {
        let end = nodes.end.min(self.len);
        for node in &mut self.nodes[nodes.start.min(end)..end] {
            node.zero_grad();
        }
    }

    /// Propagates seeded gradients back through the nodes `nodes` only (in reverse order),
    /// without parameter gradients: a vector–Jacobian product of one stretch of the graph,
    /// such as one layer, into the nodes it reads. The gradients of those nodes and of
    /// every node of the stretch must have been zeroed ([`Tape::zero_grads_of`]) before the
    /// seeds were set; a full [`Tape::zero_grads`] afterwards makes the tape ready for the
    /// whole graph's backward pass again.
    pub fn backward_nodes_to_inputs(&mut self, params: &[T], nodes: std::ops::Range<usize>) {
        let end = nodes.end.min(self.len);
        self.propagate(params, None, nodes.start.min(end)..end);
    }

    fn propagate(
        &mut self,
        params: &[T],
        mut param_grad: Option<&mut [T]>,
        nodes: std::ops::Range<usize>,
    ) {
        for i in nodes.rev() {
            if !self.nodes[i].needs_grad {
                continue;
            }
            let (prev, rest) = self.nodes.split_at_mut(i);
            let node = &mut rest[0];
            let g = &node.grad;
            match &node.op {
                Op::Input => {}
                Op::Linear { x, w, b } => {
                    let xn = &mut prev[*x];
                    if let Some(param_grad) = param_grad.as_deref_mut() {
                        let mut gw = w.view_mut(param_grad);
                        mat_mul(&xn.value.t(), &g.view(), T::one(), &mut gw);
                        if let Some(b) = b {
                            add_column_sums(&g.view(), &mut b.view_mut(param_grad));
                        }
                    }
                    if xn.needs_grad {
                        mat_mul(
                            &g.view(),
                            &w.view(params).t(),
                            T::one(),
                            &mut xn.grad.view_mut(),
                        );
                    }
                }
                Op::MatMul { a, b } => {
                    let (a, b) = (*a, *b);
                    if a == b {
                        let xv = prev[a].value.clone();
                        let xn = &mut prev[a];
                        mat_mul(&g.view(), &xv.t(), T::one(), &mut xn.grad.view_mut());
                        mat_mul(&xv.t(), &g.view(), T::one(), &mut xn.grad.view_mut());
                    } else {
                        let (na, nb) = two_mut(prev, a, b);
                        if na.needs_grad {
                            mat_mul(&g.view(), &nb.value.t(), T::one(), &mut na.grad.view_mut());
                        }
                        if nb.needs_grad {
                            mat_mul(&na.value.t(), &g.view(), T::one(), &mut nb.grad.view_mut());
                        }
                    }
                }
                Op::BiasAdd { x, b } => {
                    if let Some(param_grad) = param_grad.as_deref_mut() {
                        add_column_sums(&g.view(), &mut b.view_mut(param_grad));
                    }
                    if prev[*x].needs_grad {
                        add_into(&mut prev[*x].grad, &g.view());
                    }
                }
                Op::Tanh(x) => {
                    ndarray::Zip::from(&mut prev[*x].grad)
                        .and(g)
                        .and(&node.value)
                        .for_each(|gx, &g, &y| *gx = *gx + g * (T::one() - y * y));
                }
                Op::Exp(x) => {
                    ndarray::Zip::from(&mut prev[*x].grad)
                        .and(g)
                        .and(&node.value)
                        .for_each(|gx, &g, &y| *gx = *gx + g * y);
                }
                Op::Abs(x) => {
                    let xn = &mut prev[*x];
                    ndarray::Zip::from(&mut xn.grad)
                        .and(g)
                        .and(&xn.value)
                        .for_each(|gx, &g, &x| *gx = *gx + g * sign(x));
                }
                Op::Softplus(x) => {
                    let xn = &mut prev[*x];
                    ndarray::Zip::from(&mut xn.grad)
                        .and(g)
                        .and(&xn.value)
                        .for_each(|gx, &g, &x| *gx = *gx + g * sigmoid(x));
                }
                Op::Softmax { x, group } => {
                    let gs = contiguous(g);
                    let ys = contiguous(&node.value);
                    let gxs = contiguous_mut(&mut prev[*x].grad);
                    for ((gg, yg), gxg) in gs
                        .chunks_exact(*group)
                        .zip(ys.chunks_exact(*group))
                        .zip(gxs.chunks_exact_mut(*group))
                    {
                        let dot = gg.iter().zip(yg).fold(T::zero(), |a, (&g, &y)| a + g * y);
                        for ((gx, &g), &y) in gxg.iter_mut().zip(gg).zip(yg) {
                            *gx = *gx + y * (g - dot);
                        }
                    }
                }
                Op::CumSum { x, group } => {
                    let gs = contiguous(g);
                    let gxs = contiguous_mut(&mut prev[*x].grad);
                    for (gg, gxg) in gs.chunks_exact(*group).zip(gxs.chunks_exact_mut(*group)) {
                        let mut acc = T::zero();
                        for (gx, &g) in gxg.iter_mut().zip(gg).rev() {
                            acc = acc + g;
                            *gx = *gx + acc;
                        }
                    }
                }
                Op::Gather { x, cols, group } => {
                    let group = *group;
                    for (gr, mut gxr) in g.outer_iter().zip(prev[*x].grad.outer_iter_mut()) {
                        let gr = gr.as_slice().expect("standard layout");
                        let gxr = gxr.as_slice_mut().expect("standard layout");
                        for (gg, &c) in gr.chunks_exact(group).zip(cols.iter()) {
                            for (gx, &g) in gxr[c * group..(c + 1) * group].iter_mut().zip(gg) {
                                *gx = *gx + g;
                            }
                        }
                    }
                }
                Op::Scatter {
                    base,
                    src,
                    cols,
                    group,
                } => {
                    let group = *group;
                    if prev[*src].needs_grad {
                        for (gr, mut gsr) in g.outer_iter().zip(prev[*src].grad.outer_iter_mut()) {
                            let gr = gr.as_slice().expect("standard layout");
                            let gsr = gsr.as_slice_mut().expect("standard layout");
                            for (gs, &c) in gsr.chunks_exact_mut(group).zip(cols.iter()) {
                                for (s, &g) in gs.iter_mut().zip(&gr[c * group..(c + 1) * group]) {
                                    *s = *s + g;
                                }
                            }
                        }
                    }
                    if prev[*base].needs_grad {
                        let m = g.ncols();
                        self.mask.clear();
                        self.mask.resize(m, true);
                        for &c in cols.iter() {
                            self.mask[c * group..(c + 1) * group].fill(false);
                        }
                        for (gr, mut gbr) in g.outer_iter().zip(prev[*base].grad.outer_iter_mut()) {
                            for ((gb, &g), &keep) in gbr.iter_mut().zip(gr.iter()).zip(&self.mask) {
                                if keep {
                                    *gb = *gb + g;
                                }
                            }
                        }
                    }
                }
                Op::Interleave {
                    first,
                    count,
                    sites,
                } => {
                    let ids = &self.group_ids[*first..*first + *count];
                    let sum_k = g.ncols() / *sites;
                    let mut offset = 0;
                    for &id in ids {
                        let k = prev[id].value.ncols() / *sites;
                        if prev[id].needs_grad {
                            for (gr, mut gxr) in g.outer_iter().zip(prev[id].grad.outer_iter_mut())
                            {
                                let gr = gr.as_slice().expect("standard layout");
                                let gxr = gxr.as_slice_mut().expect("standard layout");
                                for (s, gxg) in gxr.chunks_exact_mut(k).enumerate() {
                                    let at = s * sum_k + offset;
                                    for (gx, &g) in gxg.iter_mut().zip(&gr[at..at + k]) {
                                        *gx = *gx + g;
                                    }
                                }
                            }
                        }
                        offset += k;
                    }
                }
                Op::Conv {
                    x,
                    taps,
                    c_in,
                    w,
                    b,
                } => {
                    let n = g.nrows();
                    let c_out = w.cols;
                    let g2 = g
                        .view()
                        .into_shape_with_order((n * taps.volume, c_out))
                        .expect("standard layout");
                    if let Some(param_grad) = param_grad.as_deref_mut() {
                        let mut gw = w.view_mut(param_grad);
                        mat_mul(&node.aux.t(), &g2.view(), T::one(), &mut gw);
                        if let Some(b) = b {
                            add_column_sums(&g2, &mut b.view_mut(param_grad));
                        }
                    }
                    if prev[*x].needs_grad {
                        ensure_shape(&mut node.aux_grad, node.aux.dim());
                        mat_mul(
                            &g2.view(),
                            &w.view(params).t(),
                            T::zero(),
                            &mut node.aux_grad.view_mut(),
                        );
                        col2im_add(&node.aux_grad, &mut prev[*x].grad, taps, *c_in);
                    }
                }
                Op::SumRows(x) => {
                    for (mut gxr, &g) in prev[*x].grad.outer_iter_mut().zip(g.iter()) {
                        gxr.iter_mut().for_each(|gx| *gx = *gx + g);
                    }
                }
                Op::SumAll(x) => {
                    let g = g[[0, 0]];
                    prev[*x].grad.iter_mut().for_each(|gx| *gx = *gx + g);
                }
                Op::Add(a, b) => {
                    add_into(&mut prev[*a].grad, &g.view());
                    add_into(&mut prev[*b].grad, &g.view());
                }
                Op::Sub(a, b) => {
                    add_into(&mut prev[*a].grad, &g.view());
                    prev[*b].grad.zip_mut_with(g, |a, &g| *a = *a - g);
                }
                Op::Mul(a, b) => {
                    let (a, b) = (*a, *b);
                    if a == b {
                        let xn = &mut prev[a];
                        ndarray::Zip::from(&mut xn.grad)
                            .and(g)
                            .and(&xn.value)
                            .for_each(|gx, &g, &x| *gx = *gx + (g + g) * x);
                    } else {
                        let (na, nb) = two_mut(prev, a, b);
                        ndarray::Zip::from(&mut na.grad)
                            .and(g)
                            .and(&nb.value)
                            .for_each(|gx, &g, &y| *gx = *gx + g * y);
                        ndarray::Zip::from(&mut nb.grad)
                            .and(g)
                            .and(&na.value)
                            .for_each(|gx, &g, &y| *gx = *gx + g * y);
                    }
                }
                Op::Scale(x, c) => {
                    let c = *c;
                    prev[*x].grad.zip_mut_with(g, |gx, &g| *gx = *gx + c * g);
                }
                Op::ScaleByExpParam { x, c } => {
                    let factor = params[*c].exp();
                    if let Some(param_grad) = param_grad.as_deref_mut() {
                        let dot = g
                            .iter()
                            .zip(node.value.iter())
                            .fold(T::zero(), |a, (&g, &y)| a + g * y);
                        param_grad[*c] = param_grad[*c] + dot;
                    }
                    if prev[*x].needs_grad {
                        prev[*x]
                            .grad
                            .zip_mut_with(g, |gx, &g| *gx = *gx + factor * g);
                    }
                }
                Op::AddParam { x, c, factor } => {
                    if let Some(param_grad) = param_grad.as_deref_mut() {
                        param_grad[*c] = param_grad[*c] + *factor * g.sum();
                    }
                    if prev[*x].needs_grad {
                        add_into(&mut prev[*x].grad, &g.view());
                    }
                }
                Op::Pointwise {
                    v,
                    theta,
                    transform,
                } => {
                    let (nv, nt) = two_mut(prev, *v, *theta);
                    transform.backward_saved(
                        contiguous(&nv.value),
                        contiguous(&nt.value),
                        &node.saved,
                        contiguous(g),
                        contiguous(&node.aux_grad),
                        contiguous_mut(&mut nv.grad),
                        contiguous_mut(&mut nt.grad),
                    );
                }
                Op::PointwiseLogDet(pw) => {
                    let pwn = &mut prev[*pw];
                    for (mut gl, &g) in pwn.aux_grad.outer_iter_mut().zip(g.iter()) {
                        gl.iter_mut().for_each(|x| *x = *x + g);
                    }
                }
            }
        }
    }
}

fn add_into<T: Real>(dst: &mut Array2<T>, src: &ArrayView2<T>) {
    dst.zip_mut_with(src, |a, &b| *a = *a + b);
}

fn two_mut<T: Real>(nodes: &mut [Node<T>], a: usize, b: usize) -> (&mut Node<T>, &mut Node<T>) {
    assert_ne!(a, b, "an operation's two operands must be distinct nodes");
    if a < b {
        let (lo, hi) = nodes.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = nodes.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

fn add_column_sums<T: Real>(g: &ArrayView2<T>, out: &mut ArrayViewMut2<T>) {
    for gr in g.outer_iter() {
        out.row_mut(0).zip_mut_with(&gr, |o, &g| *o = *o + g);
    }
}

fn im2col<T: Real>(x: &Array2<T>, col: &mut Array2<T>, taps: &ConvTaps, c_in: usize) {
    let vol = taps.volume;
    let nt = taps.n_taps;
    let cs = contiguous_mut(col);
    for (r, xr) in x.outer_iter().enumerate() {
        let xr = xr.as_slice().expect("standard layout");
        for s in 0..vol {
            let row = &mut cs[(r * vol + s) * nt * c_in..(r * vol + s + 1) * nt * c_in];
            for t in 0..nt {
                let src = taps.taps[s * nt + t] as usize * c_in;
                row[t * c_in..(t + 1) * c_in].copy_from_slice(&xr[src..src + c_in]);
            }
        }
    }
}

fn col2im_add<T: Real>(gcol: &Array2<T>, gx: &mut Array2<T>, taps: &ConvTaps, c_in: usize) {
    let vol = taps.volume;
    let nt = taps.n_taps;
    let cs = contiguous(gcol);
    for (r, mut gxr) in gx.outer_iter_mut().enumerate() {
        let gxr = gxr.as_slice_mut().expect("standard layout");
        for s in 0..vol {
            let row = &cs[(r * vol + s) * nt * c_in..(r * vol + s + 1) * nt * c_in];
            for t in 0..nt {
                let dst = taps.taps[s * nt + t] as usize * c_in;
                for (o, &g) in gxr[dst..dst + c_in]
                    .iter_mut()
                    .zip(&row[t * c_in..(t + 1) * c_in])
                {
                    *o = *o + g;
                }
            }
        }
    }
}

/// log(1 + e^x) without overflow.
pub fn softplus<T: Real>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// 1 / (1 + e^{−x}) without overflow.
pub fn sigmoid<T: Real>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

fn sign<T: Real>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}
