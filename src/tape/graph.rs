//! The reverse-mode tape: a list of nodes, each holding an operation, its value and its
//! gradient, evaluated eagerly on the way forward and differentiated by hand-derived rules on
//! the way back. Buffers are kept by node position across [`Tape::reset`], so a training step
//! that rebuilds the same graph allocates nothing.
//!
//! This module holds the tape itself (nodes, inputs, gradients, the backward sweep); each
//! family of operations lives in a submodule with its forward builders (methods of
//! [`Tape`]) and its backward rule: matrix products (`products`), elementwise maps
//! (`elementwise`), per-group maps (`groups`), gathers and scatters (`indexing`),
//! convolutions (`conv`), maps diagonal in momentum space (`fourier`), reductions
//! (`reduce`) and pointwise transforms (`transform`).
//! A new operation is a variant of its family's op type, a builder and a backward arm in
//! that one file.

mod conv;
mod elementwise;
mod fourier;
mod groups;
mod indexing;
mod products;
mod reduce;
mod transform;

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::Real;

pub use conv::ConvTaps;
pub use elementwise::{sigmoid, softplus};
pub use fourier::FourierPlan;

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

/// What a node computes: an input, or an operation of one of the families.
enum Op<T: Real> {
    Input,
    Product(products::ProductOp),
    Elementwise(elementwise::ElementwiseOp<T>),
    Group(groups::GroupOp),
    Index(indexing::IndexOp),
    Conv(conv::ConvOp),
    Fourier(fourier::FourierOp),
    Reduce(reduce::ReduceOp),
    Transform(transform::TransformOp<T>),
}

struct Node<T: Real> {
    op: Op<T>,
    needs_grad: bool,
    value: Array2<T>,
    grad: Array2<T>,
    /// Op-specific scratch (a pointwise node's per-site log-derivatives, the gradient
    /// before a fused activation).
    aux: Array2<T>,
    /// Op-specific backward scratch (gradient of per-site log-derivatives, rearranged
    /// weights).
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
        if let Op::Transform(op) = &self.op
            && op.keeps_log_derivative_gradient()
        {
            if self.aux_grad.dim() == shape {
                self.aux_grad.fill(T::zero());
            } else {
                ensure_shape(&mut self.aux_grad, shape);
            }
        }
    }
}

/// What a backward rule sees of the node it differentiates and of the graph before it.
struct Backward<'a, T: Real> {
    /// The nodes recorded before this one (its operands among them).
    prev: &'a mut [Node<T>],
    /// The node's value.
    value: &'a Array2<T>,
    /// ∂L/∂(the node's value).
    grad: &'a Array2<T>,
    /// The node's forward scratch.
    aux: &'a mut Array2<T>,
    /// The node's backward scratch.
    aux_grad: &'a mut Array2<T>,
    /// The state a pointwise transform saved.
    saved: &'a [T],
    params: &'a [T],
    /// Where parameter gradients are added (`None`: only node gradients are wanted).
    param_grad: Option<&'a mut [T]>,
    /// The operand lists of multi-input operations.
    group_ids: &'a [usize],
    /// A reusable mask buffer.
    mask: &'a mut Vec<bool>,
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

    /// A constant `rows × cols` block given in f64 (row-major), converted to `T` (a table
    /// such as p̂² per momentum, in whatever float type the tape runs).
    pub fn constant(&mut self, rows: usize, cols: usize, values: &[f64]) -> Var {
        assert_eq!(
            values.len(),
            rows * cols,
            "constant: {rows} × {cols} values"
        );
        let i = self.push(Op::Input, (rows, cols), false);
        for (y, &v) in self.nodes[i].value.iter_mut().zip(values) {
            *y = T::from_f64(v).unwrap_or_else(T::nan);
        }
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
            let Node {
                op,
                value,
                grad,
                aux,
                aux_grad,
                saved,
                ..
            } = &mut rest[0];
            let mut ctx = Backward {
                prev,
                value,
                grad,
                aux,
                aux_grad,
                saved,
                params,
                param_grad: param_grad.as_deref_mut(),
                group_ids: &self.group_ids,
                mask: &mut self.mask,
            };
            match op {
                Op::Input => {}
                Op::Product(op) => op.backward(&mut ctx),
                Op::Elementwise(op) => op.backward(&mut ctx),
                Op::Group(op) => op.backward(&mut ctx),
                Op::Index(op) => op.backward(&mut ctx),
                Op::Conv(op) => op.backward(&mut ctx),
                Op::Fourier(op) => op.backward(&mut ctx),
                Op::Reduce(op) => op.backward(&mut ctx),
                Op::Transform(op) => op.backward(&mut ctx),
            }
        }
    }
}

/// dst += src elementwise.
fn add_into<T: Real>(dst: &mut Array2<T>, src: &ArrayView2<T>) {
    dst.zip_mut_with(src, |a, &b| *a = *a + b);
}

/// Two distinct nodes, both mutable.
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

/// out[0, :] += Σ_rows g[row, :].
fn add_column_sums<T: Real>(g: &ArrayView2<T>, out: &mut ArrayViewMut2<T>) {
    for gr in g.outer_iter() {
        out.row_mut(0).zip_mut_with(&gr, |o, &g| *o = *o + g);
    }
}
