//! The interface of a pointwise monotone transform applied to the active sites of a
//! coupling layer, which the tape records as one fused operation.

use super::Real;

/// A monotone scalar map C(v; θ) with `params_per_site()` parameters for each active site.
///
/// Slices hold `n` sites: `v`, `y`, `ld` have length n, `theta` has length n·k with the
/// parameters of site i at `theta[i*k..(i+1)*k]`. `ld[i] = log|∂C/∂v|` at site i.
pub trait PointwiseTransform<T: Real>: Send + Sync {
    /// Parameters per active site, k.
    fn params_per_site(&self) -> usize;

    /// y = C(v; θ) and its log-derivative per site.
    fn forward(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T]);

    /// v = C⁻¹(y; θ) and log|∂C⁻¹/∂y| (= −log|∂C/∂v| at v) per site.
    fn inverse(&self, y: &[T], theta: &[T], v: &mut [T], ld: &mut [T]);

    /// Given ∂L/∂y (`gy`) and ∂L/∂ld (`gld`) per site, *adds* ∂L/∂v into `gv` and ∂L/∂θ
    /// into `gtheta`.
    #[allow(clippy::too_many_arguments)]
    fn backward(&self, v: &[T], theta: &[T], gy: &[T], gld: &[T], gv: &mut [T], gtheta: &mut [T]);

    /// Whether log|∂C/∂v| depends on v. True (the default) is always correct; a map whose
    /// log-derivative is a function of θ alone (affine and additive maps) may say false,
    /// which spares the score of a path gradient one backward call per layer.
    fn log_derivative_depends_on_input(&self) -> bool {
        true
    }

    /// Length of the state [`forward_saving`](Self::forward_saving) keeps for `sites`
    /// sites, so that [`backward_saved`](Self::backward_saved) need not recompute it. The
    /// default, 0, keeps nothing.
    fn saved_len(&self, sites: usize) -> usize {
        let _ = sites;
        0
    }

    /// [`forward`](Self::forward), also writing into `saved` (of length
    /// `saved_len(v.len())`) what the backward pass needs.
    fn forward_saving(&self, v: &[T], theta: &[T], y: &mut [T], ld: &mut [T], saved: &mut [T]) {
        let _ = saved;
        self.forward(v, theta, y, ld)
    }

    /// [`backward`](Self::backward) from the state `forward_saving` wrote for the same v and
    /// θ: the same result, bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn backward_saved(
        &self,
        v: &[T],
        theta: &[T],
        saved: &[T],
        gy: &[T],
        gld: &[T],
        gv: &mut [T],
        gtheta: &mut [T],
    ) {
        let _ = saved;
        self.backward(v, theta, gy, gld, gv, gtheta)
    }
}
