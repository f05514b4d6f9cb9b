//! Maps diagonal in momentum space: y = F⁻¹ diag(σ) F x on every row of a batch of real
//! fields over a periodic lattice (F the discrete Fourier transform), with σ = e^s for a
//! row node s of one log-factor per momentum, and the log-determinant Σ_p s_p. The
//! transforms are rustfft's along each axis for f32 and f64, and a direct DFT in any other
//! float type (the forward-mode duals of the exact-Jacobian checks).

use std::any::TypeId;
use std::cell::RefCell;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};

use super::{Backward, Op, Real, Tape, Var, contiguous, contiguous_mut, ensure_shape, two_mut};
use crate::error::{Error, Result};

/// Planned d-dimensional discrete Fourier transforms of one lattice shape (row-major sites,
/// last axis fastest), unnormalised both ways: X_p = Σ_x e^{−ip·x} x_x and
/// x_x = Σ_p e^{ip·x} X_p, p_μ = 2π n_μ / L_μ.
pub struct FourierPlan {
    extents: Vec<usize>,
    strides: Vec<usize>,
    single: AxisPlans<f32>,
    double: AxisPlans<f64>,
}

impl std::fmt::Debug for FourierPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FourierPlan")
            .field("extents", &self.extents)
            .finish()
    }
}

/// One float type's plans, one per axis and direction.
struct AxisPlans<F: FftNum> {
    forward: Vec<Arc<dyn Fft<F>>>,
    inverse: Vec<Arc<dyn Fft<F>>>,
}

impl<F: FftNum> AxisPlans<F> {
    fn new(extents: &[usize]) -> Self {
        let mut planner = FftPlanner::<F>::new();
        AxisPlans {
            forward: extents
                .iter()
                .map(|&l| planner.plan_fft_forward(l))
                .collect(),
            inverse: extents
                .iter()
                .map(|&l| planner.plan_fft_inverse(l))
                .collect(),
        }
    }

    /// The in-place transform of `data` (one field), axis by axis; strided axes go through
    /// the `line` buffer.
    fn run(
        &self,
        data: &mut [Complex<F>],
        extents: &[usize],
        strides: &[usize],
        forward: bool,
        buffers: &mut Buffers<F>,
    ) {
        let plans = if forward {
            &self.forward
        } else {
            &self.inverse
        };
        for (mu, plan) in plans.iter().enumerate() {
            let (l, stride) = (extents[mu], strides[mu]);
            let need = plan.get_inplace_scratch_len();
            if buffers.scratch.len() < need {
                buffers
                    .scratch
                    .resize(need, Complex::new(F::zero(), F::zero()));
            }
            if buffers.line.len() < l {
                buffers.line.resize(l, Complex::new(F::zero(), F::zero()));
            }
            if stride == 1 {
                for chunk in data.chunks_exact_mut(l) {
                    plan.process_with_scratch(chunk, &mut buffers.scratch[..need]);
                }
                continue;
            }
            let line = &mut buffers.line[..l];
            for start in (0..data.len()).step_by(l * stride) {
                for offset in 0..stride {
                    let base = start + offset;
                    for (k, v) in line.iter_mut().enumerate() {
                        *v = data[base + k * stride];
                    }
                    plan.process_with_scratch(line, &mut buffers.scratch[..need]);
                    for (k, v) in line.iter().enumerate() {
                        data[base + k * stride] = *v;
                    }
                }
            }
        }
    }
}

/// A transform's line and scratch buffers, kept per thread.
struct Buffers<F> {
    line: Vec<Complex<F>>,
    scratch: Vec<Complex<F>>,
}

thread_local! {
    static SINGLE: RefCell<Buffers<f32>> = const {
        RefCell::new(Buffers { line: Vec::new(), scratch: Vec::new() })
    };
    static DOUBLE: RefCell<Buffers<f64>> = const {
        RefCell::new(Buffers { line: Vec::new(), scratch: Vec::new() })
    };
}

/// `data` (2V reals) as V complex numbers of `F`, when `T` is `F`.
fn as_complex<T: 'static, F: 'static>(data: &mut [T]) -> Option<&mut [Complex<F>]> {
    if TypeId::of::<T>() != TypeId::of::<F>() {
        return None;
    }
    // SAFETY: T is F (checked through their TypeIds); `Complex<F>` is `#[repr(C)]` with
    // fields re and im, so 2V consecutive F values are V complex numbers.
    Some(unsafe {
        std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<Complex<F>>(), data.len() / 2)
    })
}

impl FourierPlan {
    /// The transforms of a lattice with these extents (at least one axis, every extent at
    /// least 1).
    pub fn new(extents: &[usize]) -> Result<Self> {
        if extents.is_empty() || extents.contains(&0) {
            return Err(Error::InvalidLattice(format!(
                "a Fourier transform needs positive extents, got {extents:?}"
            )));
        }
        let d = extents.len();
        let mut strides = vec![1usize; d];
        for mu in (0..d - 1).rev() {
            strides[mu] = strides[mu + 1] * extents[mu + 1];
        }
        Ok(FourierPlan {
            extents: extents.to_vec(),
            strides,
            single: AxisPlans::new(extents),
            double: AxisPlans::new(extents),
        })
    }

    /// The lattice extents.
    pub fn extents(&self) -> &[usize] {
        &self.extents
    }

    /// Number of sites (and momenta).
    pub fn volume(&self) -> usize {
        self.extents.iter().product()
    }

    /// The in-place transform of one field held as 2V interleaved (re, im) values.
    pub fn transform<T: Real>(&self, data: &mut [T], forward: bool) {
        assert_eq!(data.len(), 2 * self.volume(), "Fourier transform: length");
        if let Some(c) = as_complex::<T, f32>(data) {
            SINGLE.with(|b| {
                self.single.run(
                    c,
                    &self.extents,
                    &self.strides,
                    forward,
                    &mut b.borrow_mut(),
                )
            });
        } else if let Some(c) = as_complex::<T, f64>(data) {
            DOUBLE.with(|b| {
                self.double.run(
                    c,
                    &self.extents,
                    &self.strides,
                    forward,
                    &mut b.borrow_mut(),
                )
            });
        } else {
            self.direct(data, forward);
        }
    }

    /// The transform by the direct sum along each axis, in `T`'s own arithmetic.
    fn direct<T: Real>(&self, data: &mut [T], forward: bool) {
        let sign = if forward { -1.0 } else { 1.0 };
        let mut line = Vec::new();
        for (&l, &stride) in self.extents.iter().zip(&self.strides) {
            for start in (0..self.volume()).step_by(l * stride) {
                for offset in 0..stride {
                    let base = start + offset;
                    line.clear();
                    line.extend((0..l).map(|k| {
                        (
                            data[2 * (base + k * stride)],
                            data[2 * (base + k * stride) + 1],
                        )
                    }));
                    for k in 0..l {
                        let (mut re, mut im) = (T::zero(), T::zero());
                        for (j, &(a, b)) in line.iter().enumerate() {
                            let phase =
                                sign * 2.0 * std::f64::consts::PI * ((j * k) % l) as f64 / l as f64;
                            let (c, s) = (
                                T::from_f64(phase.cos()).unwrap_or_else(T::nan),
                                T::from_f64(phase.sin()).unwrap_or_else(T::nan),
                            );
                            re = re + a * c - b * s;
                            im = im + a * s + b * c;
                        }
                        data[2 * (base + k * stride)] = re;
                        data[2 * (base + k * stride) + 1] = im;
                    }
                }
            }
        }
    }

    /// y = F⁻¹ diag(e^{±s}) F x in place on every row of `rows` (`[n, V]` flat), with `+`
    /// unless `inverse`; `buffer` holds 2V values of scratch.
    pub fn apply<T: Real>(
        &self,
        rows: &mut [T],
        log_sigma: &[T],
        inverse: bool,
        buffer: &mut Vec<T>,
    ) {
        let v = self.volume();
        assert_eq!(
            log_sigma.len(),
            v,
            "Fourier scaling: one factor per momentum"
        );
        buffer.resize(2 * v, T::zero());
        let norm = T::one() / T::from_usize(v).unwrap_or_else(T::nan);
        for row in rows.chunks_exact_mut(v) {
            for (c, &x) in buffer.chunks_exact_mut(2).zip(row.iter()) {
                c[0] = x;
                c[1] = T::zero();
            }
            self.transform(buffer, true);
            for (c, &s) in buffer.chunks_exact_mut(2).zip(log_sigma) {
                let f = if inverse { (-s).exp() } else { s.exp() } * norm;
                c[0] = c[0] * f;
                c[1] = c[1] * f;
            }
            self.transform(buffer, false);
            for (x, c) in row.iter_mut().zip(buffer.chunks_exact(2)) {
                *x = c[0];
            }
        }
    }
}

/// A Fourier-scaling node.
pub(super) enum FourierOp {
    /// y = F⁻¹ diag(e^s) F x; `aux` holds F x of every row (interleaved), `aux_grad` is
    /// scratch.
    Scale {
        x: usize,
        log_sigma: usize,
        plan: Arc<FourierPlan>,
    },
    /// Σ_p s_p on every row.
    LogDet { log_sigma: usize },
}

impl<T: Real> Tape<T> {
    /// y = F⁻¹ diag(σ) F x on every row of `x` (`[n, V]`, V the plan's volume), σ_p =
    /// e^{s_p} from the row node `log_sigma` (`[1, V]`, indexed like the sites: momentum
    /// n at the site with coordinates n). The factors must be even, σ(p) = σ(−p), so that
    /// y is real and the map is the symmetric matrix whose determinant is Π_p σ_p. Returns
    /// y and the log-determinant Σ_p s_p of every row (`[n, 1]`).
    pub fn fourier_scale(&mut self, x: Var, log_sigma: Var, plan: &Arc<FourierPlan>) -> (Var, Var) {
        let (n, v) = self.shape(x);
        assert_eq!(v, plan.volume(), "fourier_scale: input width");
        assert_eq!(self.shape(log_sigma), (1, v), "fourier_scale: factors");
        let ng = self.needs(x.0) || self.needs(log_sigma.0);
        let op = Op::Fourier(FourierOp::Scale {
            x: x.0,
            log_sigma: log_sigma.0,
            plan: plan.clone(),
        });
        let i = self.push(op, (n, v), ng);
        let (prev, node) = self.split(i);
        ensure_shape(&mut node.aux, (n, 2 * v));
        ensure_shape(&mut node.aux_grad, (1, 2 * v));
        let s = contiguous(&prev[log_sigma.0].value);
        let norm = T::one() / T::from_usize(v).unwrap_or_else(T::nan);
        let temp = contiguous_mut(&mut node.aux_grad);
        for ((xr, spectrum), yr) in contiguous(&prev[x.0].value)
            .chunks_exact(v)
            .zip(contiguous_mut(&mut node.aux).chunks_exact_mut(2 * v))
            .zip(contiguous_mut(&mut node.value).chunks_exact_mut(v))
        {
            for (c, &x) in spectrum.chunks_exact_mut(2).zip(xr) {
                c[0] = x;
                c[1] = T::zero();
            }
            plan.transform(spectrum, true);
            for ((t, c), &s) in temp
                .chunks_exact_mut(2)
                .zip(spectrum.chunks_exact(2))
                .zip(s)
            {
                let f = s.exp() * norm;
                t[0] = c[0] * f;
                t[1] = c[1] * f;
            }
            plan.transform(temp, false);
            for (y, t) in yr.iter_mut().zip(temp.chunks_exact(2)) {
                *y = t[0];
            }
        }
        let total = s.iter().fold(T::zero(), |a, &s| a + s);
        let j = self.push(
            Op::Fourier(FourierOp::LogDet {
                log_sigma: log_sigma.0,
            }),
            (n, 1),
            ng,
        );
        self.nodes[j].value.fill(total);
        (Var(i), Var(j))
    }
}

impl FourierOp {
    pub(super) fn backward<T: Real>(&self, ctx: &mut Backward<'_, T>) {
        match self {
            FourierOp::Scale { x, log_sigma, plan } => {
                let v = plan.volume();
                let norm = T::one() / T::from_usize(v).unwrap_or_else(T::nan);
                let (xn, sn) = two_mut(ctx.prev, *x, *log_sigma);
                let s = contiguous(&sn.value);
                let temp = contiguous_mut(ctx.aux_grad);
                for ((gr, spectrum), gxr) in contiguous(ctx.grad)
                    .chunks_exact(v)
                    .zip(contiguous(ctx.aux).chunks_exact(2 * v))
                    .zip(contiguous_mut(&mut xn.grad).chunks_exact_mut(v))
                {
                    for (t, &g) in temp.chunks_exact_mut(2).zip(gr) {
                        t[0] = g;
                        t[1] = T::zero();
                    }
                    plan.transform(temp, true);
                    if sn.needs_grad {
                        // ∂L/∂s_p = σ_p Re(X_p conj(G_p)) / V.
                        let gs = contiguous_mut(&mut sn.grad);
                        for (((gs, &s), c), t) in gs
                            .iter_mut()
                            .zip(s)
                            .zip(spectrum.chunks_exact(2))
                            .zip(temp.chunks_exact(2))
                        {
                            *gs = *gs + s.exp() * norm * (c[0] * t[0] + c[1] * t[1]);
                        }
                    }
                    if xn.needs_grad {
                        // The map is symmetric: ∂L/∂x = F⁻¹ diag(σ) F g.
                        for (t, &s) in temp.chunks_exact_mut(2).zip(s) {
                            let f = s.exp() * norm;
                            t[0] = t[0] * f;
                            t[1] = t[1] * f;
                        }
                        plan.transform(temp, false);
                        for (gx, t) in gxr.iter_mut().zip(temp.chunks_exact(2)) {
                            *gx = *gx + t[0];
                        }
                    }
                }
            }
            FourierOp::LogDet { log_sigma } => {
                let total = ctx.grad.iter().fold(T::zero(), |a, &g| a + g);
                for gs in ctx.prev[*log_sigma].grad.iter_mut() {
                    *gs = *gs + total;
                }
            }
        }
    }
}
