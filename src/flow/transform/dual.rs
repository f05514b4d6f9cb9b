//! Any f64 pointwise transform lifted to [`Dual`] numbers: [`DualTransform`].
//!
//! Each output site of a pointwise transform depends only on its own v and θ, so the f64
//! backward pass seeded with ones gives every site's partial derivatives at once: with
//! g_y = 1, g_ld = 0 it yields ∂y/∂v and ∂y/∂θ_j, with g_y = 0, g_ld = 1 it yields ∂ld/∂v and
//! ∂ld/∂θ_j. The tangents follow by the chain rule, ẏ = ∂y/∂v v̇ + Σ_j ∂y/∂θ_j θ̇_j (and the
//! same for ld); the inverse differentiates v = C⁻¹(y; θ) implicitly,
//! v̇ = (ẏ − Σ_j ∂C/∂θ_j θ̇_j) / (∂C/∂v).

use std::sync::Arc;

use num_traits::Zero;

use super::PointwiseTransform;
use crate::tape::Dual;

/// A [`PointwiseTransform<Dual>`] built from the f64 version of a transform: values are the
/// f64 transform's own, tangents come from its backward pass (see the module documentation).
///
/// Built-in and user transforms get it alike: every flow layer holds one next to its f32 and
/// f64 transforms. Its `backward` gives the f64 gradient values with NaN tangents
/// (reverse-over-forward derivatives would need second derivatives of the transform). Each
/// call allocates scratch for the f64 slices: the dual path serves checks, not training.
#[derive(Clone)]
pub struct DualTransform {
    inner: Arc<dyn PointwiseTransform<f64>>,
}

impl DualTransform {
    /// Lifts `inner` to dual numbers.
    pub fn new(inner: Arc<dyn PointwiseTransform<f64>>) -> Self {
        DualTransform { inner }
    }

    /// The f64 transform this one evaluates.
    pub fn inner(&self) -> &Arc<dyn PointwiseTransform<f64>> {
        &self.inner
    }

    /// Per-site partial derivatives at (v, θ) for the seeds (g_y, g_ld) — one backward pass
    /// of all sites at once — into `gv` (length n) and `gtheta` (length n·k).
    fn partials(
        &self,
        v: &[f64],
        theta: &[f64],
        (gy, gld): (f64, f64),
        seeds: &mut [f64],
        gv: &mut [f64],
        gtheta: &mut [f64],
    ) {
        let n = v.len();
        let (sy, sld) = seeds.split_at_mut(n);
        sy.fill(gy);
        sld.fill(gld);
        gv.fill(0.0);
        gtheta.fill(0.0);
        self.inner.backward(v, theta, sy, sld, gv, gtheta);
    }
}

/// f64 buffers of one call: v or y, θ, outputs, seeds and partial derivatives.
struct Scratch {
    data: Vec<f64>,
}

impl Scratch {
    fn new(n: usize, k: usize) -> Self {
        Scratch {
            data: vec![0.0; 7 * n + 2 * n * k],
        }
    }

    /// (input, θ, out, ld, seeds (2n), gv, gθ).
    #[allow(clippy::type_complexity)]
    fn split(
        &mut self,
        n: usize,
        k: usize,
    ) -> (
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
        &mut [f64],
    ) {
        let (input, rest) = self.data.split_at_mut(n);
        let (theta, rest) = rest.split_at_mut(n * k);
        let (out, rest) = rest.split_at_mut(n);
        let (ld, rest) = rest.split_at_mut(n);
        let (seeds, rest) = rest.split_at_mut(2 * n);
        let (gv, gtheta) = rest.split_at_mut(n);
        (input, theta, out, ld, seeds, gv, gtheta)
    }
}

fn values_into(src: &[Dual], dst: &mut [f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.value();
    }
}

/// Σ_j ∂/∂θ_j · θ̇_j of one site.
fn theta_term(partials: &[f64], theta: &[Dual]) -> f64 {
    partials
        .iter()
        .zip(theta)
        .map(|(&p, t)| p * t.tangent())
        .sum()
}

impl PointwiseTransform<Dual> for DualTransform {
    fn params_per_site(&self) -> usize {
        self.inner.params_per_site()
    }

    fn log_derivative_depends_on_input(&self) -> bool {
        self.inner.log_derivative_depends_on_input()
    }

    fn forward(&self, v: &[Dual], theta: &[Dual], y: &mut [Dual], ld: &mut [Dual]) {
        let (n, k) = (v.len(), self.inner.params_per_site());
        let mut scratch = Scratch::new(n, k);
        let (v64, theta64, y64, ld64, seeds, gv, gtheta) = scratch.split(n, k);
        values_into(v, v64);
        values_into(theta, theta64);
        self.inner.forward(v64, theta64, y64, ld64);
        let moving = v.iter().chain(theta).any(|x| !x.tangent().is_zero());
        for (i, (yi, li)) in y.iter_mut().zip(ld.iter_mut()).enumerate() {
            *yi = Dual::constant(y64[i]);
            *li = Dual::constant(ld64[i]);
        }
        if !moving {
            return;
        }
        self.partials(v64, theta64, (1.0, 0.0), seeds, gv, gtheta);
        for (i, yi) in y.iter_mut().enumerate() {
            let site = i * k..(i + 1) * k;
            let dy = gv[i] * v[i].tangent() + theta_term(&gtheta[site.clone()], &theta[site]);
            *yi = Dual::new(y64[i], dy);
        }
        self.partials(v64, theta64, (0.0, 1.0), seeds, gv, gtheta);
        for (i, li) in ld.iter_mut().enumerate() {
            let site = i * k..(i + 1) * k;
            let dld = gv[i] * v[i].tangent() + theta_term(&gtheta[site.clone()], &theta[site]);
            *li = Dual::new(ld64[i], dld);
        }
    }

    fn inverse(&self, y: &[Dual], theta: &[Dual], v: &mut [Dual], ld: &mut [Dual]) {
        let (n, k) = (y.len(), self.inner.params_per_site());
        let mut scratch = Scratch::new(n, k);
        let (y64, theta64, v64, ld64, seeds, gv, gtheta) = scratch.split(n, k);
        values_into(y, y64);
        values_into(theta, theta64);
        self.inner.inverse(y64, theta64, v64, ld64);
        // ∂C/∂v and ∂C/∂θ at the solution v give v̇; then ld_inv = −ld(v; θ) gives its tangent.
        self.partials(v64, theta64, (1.0, 0.0), seeds, gv, gtheta);
        for (i, vi) in v.iter_mut().enumerate() {
            let site = i * k..(i + 1) * k;
            let dv = (y[i].tangent() - theta_term(&gtheta[site.clone()], &theta[site])) / gv[i];
            *vi = Dual::new(v64[i], dv);
        }
        self.partials(v64, theta64, (0.0, 1.0), seeds, gv, gtheta);
        for (i, li) in ld.iter_mut().enumerate() {
            let site = i * k..(i + 1) * k;
            let dld = gv[i] * v[i].tangent() + theta_term(&gtheta[site.clone()], &theta[site]);
            *li = Dual::new(ld64[i], -dld);
        }
    }

    fn backward(
        &self,
        v: &[Dual],
        theta: &[Dual],
        gy: &[Dual],
        gld: &[Dual],
        gv: &mut [Dual],
        gtheta: &mut [Dual],
    ) {
        let (n, k) = (v.len(), self.inner.params_per_site());
        let mut scratch = Scratch::new(n, k);
        let (v64, theta64, gy64, gld64, _, gv64, gtheta64) = scratch.split(n, k);
        values_into(v, v64);
        values_into(theta, theta64);
        values_into(gy, gy64);
        values_into(gld, gld64);
        gv64.fill(0.0);
        gtheta64.fill(0.0);
        self.inner
            .backward(v64, theta64, gy64, gld64, gv64, gtheta64);
        for (g, &d) in gv.iter_mut().zip(gv64.iter()) {
            *g += Dual::new(d, f64::NAN);
        }
        for (g, &d) in gtheta.iter_mut().zip(gtheta64.iter()) {
            *g += Dual::new(d, f64::NAN);
        }
    }
}
