//! Elementwise maps: tanh, exp, ln, |x|, softplus, sums, differences and products of two nodes,
//! constant scaling, and the scalar-parameter maps x·e^θ and x + c·θ.

use crate::tape::fastmath::tanh_into;

use super::{Backward, Op, Real, Tape, Var, add_into, contiguous, contiguous_mut, two_mut};

/// An elementwise node.
pub(super) enum ElementwiseOp<T: Real> {
    Tanh(usize),
    Exp(usize),
    Ln(usize),
    Abs(usize),
    Softplus(usize),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    Scale(usize, T),
    /// x · e^θ with θ = params[c].
    ScaleByExpParam {
        x: usize,
        c: usize,
    },
    /// x + factor·θ with θ = params[c].
    AddParam {
        x: usize,
        c: usize,
        factor: T,
    },
}

impl<T: Real> Tape<T> {
    fn unary(&mut self, x: Var, op: ElementwiseOp<T>, f: impl Fn(T) -> T) -> Var {
        let shape = self.shape(x);
        let ng = self.needs(x.0);
        let i = self.push(Op::Elementwise(op), shape, ng);
        let (prev, node) = self.split(i);
        let xs = contiguous(&prev[x.0].value);
        for (y, &x) in contiguous_mut(&mut node.value).iter_mut().zip(xs) {
            *y = f(x);
        }
        Var(i)
    }

    fn binary(&mut self, a: Var, b: Var, op: ElementwiseOp<T>, f: impl Fn(T, T) -> T) -> Var {
        let shape = self.shape(a);
        assert_eq!(shape, self.shape(b), "elementwise op: shapes differ");
        let ng = self.needs(a.0) || self.needs(b.0);
        let i = self.push(Op::Elementwise(op), shape, ng);
        let (prev, node) = self.split(i);
        ndarray::Zip::from(&mut node.value)
            .and(&prev[a.0].value)
            .and(&prev[b.0].value)
            .for_each(|y, &a, &b| *y = f(a, b));
        Var(i)
    }

    /// tanh elementwise (in f32 a branch-free rational approximation accurate to a few
    /// ulp, which vectorises; the backward pass uses 1 − y² of the value computed).
    pub fn tanh(&mut self, x: Var) -> Var {
        let shape = self.shape(x);
        let ng = self.needs(x.0);
        let i = self.push(Op::Elementwise(ElementwiseOp::Tanh(x.0)), shape, ng);
        let (prev, node) = self.split(i);
        tanh_into(
            contiguous(&prev[x.0].value),
            contiguous_mut(&mut node.value),
        );
        Var(i)
    }

    /// exp elementwise.
    pub fn exp(&mut self, x: Var) -> Var {
        self.unary(x, ElementwiseOp::Exp(x.0), |x| x.exp())
    }

    /// ln x elementwise (x > 0; the backward pass divides by x).
    pub fn ln(&mut self, x: Var) -> Var {
        self.unary(x, ElementwiseOp::Ln(x.0), |x| x.ln())
    }

    /// |x| elementwise (the derivative at 0 is taken as 0).
    pub fn abs(&mut self, x: Var) -> Var {
        self.unary(x, ElementwiseOp::Abs(x.0), |x| x.abs())
    }

    /// softplus(x) = log(1 + e^x), evaluated stably.
    pub fn softplus(&mut self, x: Var) -> Var {
        self.unary(x, ElementwiseOp::Softplus(x.0), softplus)
    }

    /// a + b elementwise.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, ElementwiseOp::Add(a.0, b.0), |a, b| a + b)
    }

    /// a − b elementwise.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, ElementwiseOp::Sub(a.0, b.0), |a, b| a - b)
    }

    /// a ⊙ b elementwise.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.binary(a, b, ElementwiseOp::Mul(a.0, b.0), |a, b| a * b)
    }

    /// c·x for a constant c.
    pub fn scale(&mut self, x: Var, c: T) -> Var {
        self.unary(x, ElementwiseOp::Scale(x.0, c), |x| c * x)
    }

    /// x · e^θ with the scalar parameter θ = `params[c]`.
    pub fn scale_by_exp_param(&mut self, params: &[T], x: Var, c: usize) -> Var {
        let factor = params[c].exp();
        let shape = self.shape(x);
        let op = Op::Elementwise(ElementwiseOp::ScaleByExpParam { x: x.0, c });
        let i = self.push(op, shape, true);
        let (prev, node) = self.split(i);
        node.value
            .zip_mut_with(&prev[x.0].value, |y, &x| *y = x * factor);
        Var(i)
    }

    /// x + factor·θ with the scalar parameter θ = `params[c]`.
    pub fn add_param(&mut self, params: &[T], x: Var, c: usize, factor: T) -> Var {
        let shift = factor * params[c];
        let shape = self.shape(x);
        let op = Op::Elementwise(ElementwiseOp::AddParam { x: x.0, c, factor });
        let i = self.push(op, shape, true);
        let (prev, node) = self.split(i);
        node.value
            .zip_mut_with(&prev[x.0].value, |y, &x| *y = x + shift);
        Var(i)
    }
}

impl<T: Real> ElementwiseOp<T> {
    pub(super) fn backward(&self, ctx: &mut Backward<'_, T>) {
        let (g, y) = (ctx.grad, ctx.value);
        let prev = &mut *ctx.prev;
        match *self {
            ElementwiseOp::Tanh(x) => {
                let gx = contiguous_mut(&mut prev[x].grad);
                for ((gx, &g), &y) in gx.iter_mut().zip(contiguous(g)).zip(contiguous(y)) {
                    *gx = *gx + g * (T::one() - y * y);
                }
            }
            ElementwiseOp::Exp(x) => {
                ndarray::Zip::from(&mut prev[x].grad)
                    .and(g)
                    .and(y)
                    .for_each(|gx, &g, &y| *gx = *gx + g * y);
            }
            ElementwiseOp::Ln(x) => {
                let xn = &mut prev[x];
                ndarray::Zip::from(&mut xn.grad)
                    .and(g)
                    .and(&xn.value)
                    .for_each(|gx, &g, &x| *gx = *gx + g / x);
            }
            ElementwiseOp::Abs(x) => {
                let xn = &mut prev[x];
                ndarray::Zip::from(&mut xn.grad)
                    .and(g)
                    .and(&xn.value)
                    .for_each(|gx, &g, &x| *gx = *gx + g * sign(x));
            }
            ElementwiseOp::Softplus(x) => {
                let xn = &mut prev[x];
                ndarray::Zip::from(&mut xn.grad)
                    .and(g)
                    .and(&xn.value)
                    .for_each(|gx, &g, &x| *gx = *gx + g * sigmoid(x));
            }
            ElementwiseOp::Add(a, b) => {
                add_into(&mut prev[a].grad, &g.view());
                add_into(&mut prev[b].grad, &g.view());
            }
            ElementwiseOp::Sub(a, b) => {
                add_into(&mut prev[a].grad, &g.view());
                prev[b].grad.zip_mut_with(g, |a, &g| *a = *a - g);
            }
            ElementwiseOp::Mul(a, b) => {
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
            ElementwiseOp::Scale(x, c) => {
                prev[x].grad.zip_mut_with(g, |gx, &g| *gx = *gx + c * g);
            }
            ElementwiseOp::ScaleByExpParam { x, c } => {
                let factor = ctx.params[c].exp();
                if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
                    let dot = g
                        .iter()
                        .zip(y.iter())
                        .fold(T::zero(), |a, (&g, &y)| a + g * y);
                    param_grad[c] = param_grad[c] + dot;
                }
                if prev[x].needs_grad {
                    prev[x]
                        .grad
                        .zip_mut_with(g, |gx, &g| *gx = *gx + factor * g);
                }
            }
            ElementwiseOp::AddParam { x, c, factor } => {
                if let Some(param_grad) = ctx.param_grad.as_deref_mut() {
                    param_grad[c] = param_grad[c] + factor * g.sum();
                }
                if prev[x].needs_grad {
                    add_into(&mut prev[x].grad, &g.view());
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
