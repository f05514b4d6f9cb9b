//! Automatic differentiation for the flows: a reverse-mode [`Tape`] over ndarray tensors with
//! hand-derived backward passes (dense layers, convolutions by direct kernels, elementwise
//! maps, softmax, cumulative sums, partition gather/scatter, reductions, and a fused op that
//! applies any [`PointwiseTransform`]), and [`Dual`] numbers on which the tape and whole flows also run,
//! for exact Jacobian-vector products by forward mode. The float trait [`Real`] and the
//! [`PointwiseTransform`] interface live here, so that the tape depends on nothing from the
//! flows.
//!
//! ```
//! use latflow::tape::{ParamSlice, Tape};
//! use ndarray::array;
//!
//! // L = Σ tanh(x·W) for W a 2×1 block of the flat parameter vector.
//! let params = [0.5f64, -1.0];
//! let w = ParamSlice { offset: 0, rows: 2, cols: 1 };
//! let mut tape = Tape::new();
//! let x = tape.input(array![[1.0, 2.0]].view());
//! let h = tape.linear(&params, x, w, None);
//! let y = tape.tanh(h);
//! let loss = tape.sum_all(y);
//! tape.zero_grads();
//! tape.grad_mut(loss).fill(1.0);
//! let mut grad = [0.0; 2];
//! tape.backward(&params, &mut grad);
//! let slope = 1.0 - (-1.5f64).tanh().powi(2);
//! assert!((grad[0] - slope * 1.0).abs() < 1e-12 && (grad[1] - slope * 2.0).abs() < 1e-12);
//! ```

mod conv_kernel;
mod dual;
mod fastmath;
mod graph;
mod matmul;
mod pointwise;
mod real;

pub use dual::Dual;
pub use fastmath::{exp_f32, ln_f32, tanh_f32};
pub(crate) use graph::ensure_shape;
pub use graph::{ConvTaps, FourierPlan, ParamSlice, Tape, Var, sigmoid, softplus};
pub use pointwise::PointwiseTransform;
pub use real::Real;
