//! The blocked bootstrap: resampling non-overlapping blocks of a chain, for errors of any
//! function of means (including non-smooth ones), with a seeded stream.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::stream;

/// The result of a blocked bootstrap.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapEstimate {
    /// F of the means of the full data.
    pub mean: f64,
    /// The standard deviation of F over the resamples.
    pub err: f64,
    /// The bootstrap estimate of the bias, mean of the resampled F minus `mean`.
    pub bias: f64,
    /// The number of blocks resampled.
    pub n_blocks: usize,
}

/// Blocked bootstrap of F(⟨A_1⟩, …, ⟨A_k⟩): `series[α]` is the chain of A_α (all of equal
/// length N), cut into ⌊N / `block_size`⌋ non-overlapping blocks (a remainder at the end is
/// left out); each of `n_resamples` resamples draws that many blocks with replacement from
/// the stream `seed`. Blocks much longer than τ_int make the error honest.
pub fn blocked_bootstrap(
    series: &[&[f64]],
    f: impl Fn(&[f64]) -> f64,
    block_size: usize,
    n_resamples: usize,
    seed: u64,
) -> Result<BootstrapEstimate> {
    let n_series = series.len();
    let len = series
        .first()
        .ok_or_else(|| Error::param("series", "no series given"))?
        .len();
    if let Some(alpha) = series.iter().position(|s| s.len() != len) {
        return Err(Error::Shape(format!(
            "series {alpha} has {} measurements, series 0 has {len}",
            series[alpha].len()
        )));
    }
    if block_size == 0 {
        return Err(Error::param("block_size", "must be at least 1"));
    }
    let n_blocks = len / block_size;
    if n_blocks < 2 {
        return Err(Error::param(
            "block_size",
            format!("{block_size} leaves fewer than 2 blocks in {len} measurements"),
        ));
    }
    if n_resamples < 2 {
        return Err(Error::param("n_resamples", "must be at least 2"));
    }
    if let Some((alpha, i)) = series
        .iter()
        .enumerate()
        .find_map(|(alpha, s)| s.iter().position(|x| !x.is_finite()).map(|i| (alpha, i)))
    {
        return Err(Error::NonFinite(format!("series {alpha}, measurement {i}")));
    }

    // block_sums[b * n_series + α] = Σ of A_α over block b.
    let mut block_sums = vec![0.0; n_blocks * n_series];
    for (alpha, s) in series.iter().enumerate() {
        for (b, block) in s.chunks_exact(block_size).take(n_blocks).enumerate() {
            block_sums[b * n_series + alpha] = block.iter().sum();
        }
    }
    let used = (n_blocks * block_size) as f64;
    let mut means = vec![0.0; n_series];
    for block in block_sums.chunks_exact(n_series) {
        means.iter_mut().zip(block).for_each(|(m, s)| *m += s);
    }
    means.iter_mut().for_each(|m| *m /= used);
    let central = f(&means);
    if !central.is_finite() {
        return Err(Error::NonFinite("F at the means".into()));
    }

    let mut rng = stream(seed, 0);
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for _ in 0..n_resamples {
        means.fill(0.0);
        for _ in 0..n_blocks {
            let b = rng.random_range(0..n_blocks);
            let block = &block_sums[b * n_series..(b + 1) * n_series];
            means.iter_mut().zip(block).for_each(|(m, s)| *m += s);
        }
        means.iter_mut().for_each(|m| *m /= used);
        let value = f(&means);
        if !value.is_finite() {
            return Err(Error::NonFinite("F on a bootstrap resample".into()));
        }
        let d = value - central;
        sum += d;
        sum_sq += d * d;
    }
    let nr = n_resamples as f64;
    let shift = sum / nr;
    let variance = (sum_sq - nr * shift * shift) / (nr - 1.0);
    Ok(BootstrapEstimate {
        mean: central,
        err: variance.max(0.0).sqrt(),
        bias: shift,
        n_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let id = |m: &[f64]| m[0];
        assert!(blocked_bootstrap(&[], id, 1, 10, 0).is_err());
        assert!(blocked_bootstrap(&[&a], id, 0, 10, 0).is_err());
        assert!(blocked_bootstrap(&[&a], id, 3, 10, 0).is_err());
        assert!(blocked_bootstrap(&[&a], id, 1, 1, 0).is_err());
        assert!(blocked_bootstrap(&[&a, &a[..3]], id, 1, 10, 0).is_err());
        assert!(blocked_bootstrap(&[&[1.0, f64::INFINITY]], id, 1, 10, 0).is_err());
    }

    #[test]
    fn same_seed_same_result() {
        let a: Vec<f64> = (0..100).map(|i| (i as f64 * 0.7).sin()).collect();
        let id = |m: &[f64]| m[0];
        let x = blocked_bootstrap(&[&a], id, 5, 50, 9).unwrap();
        assert_eq!(x, blocked_bootstrap(&[&a], id, 5, 50, 9).unwrap());
        assert_ne!(x, blocked_bootstrap(&[&a], id, 5, 50, 10).unwrap());
    }
}
