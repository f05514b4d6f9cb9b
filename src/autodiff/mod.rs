//! Automatic differentiation for the flows: a reverse-mode [`Tape`] over ndarray tensors with
//! hand-derived backward passes (dense and convolutional layers, elementwise maps, softmax,
//! cumulative sums, partition gather/scatter, reductions, and a fused op that applies any
//! [`PointwiseTransform`](crate::flow::PointwiseTransform)).

mod tape;

pub use tape::{ConvTaps, ParamSlice, Tape, Var, sigmoid, softplus, tanh_f32};
