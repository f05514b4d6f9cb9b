//! The machine's f32 multiply-add peak, against which BENCHMARKS.md quotes the fraction of
//! peak the trainer reaches: independent chains of vector FMAs (256-bit AVX2 and, where the
//! processor has it, 512-bit AVX-512), on one thread and on every core at once.
//! Usage: `cargo run --release --example fma_peak [SECONDS_PER_FIGURE]`.

use std::time::Instant;

/// A peak loop: its name, the kernel, and its f32 lanes per instruction.
type PeakLoop = (&'static str, fn() -> f32, usize);

/// Independent accumulator chains per thread: enough to cover the FMA latency on both ports.
const CHAINS: usize = 12;
/// FMA instructions per chain per call.
const ROUNDS: usize = 1 << 20;

#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{CHAINS, ROUNDS};
    use std::arch::x86_64::*;

    /// Runs `CHAINS × ROUNDS` 256-bit FMAs; returns a value that depends on all of them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f32 {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..ROUNDS {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        let mut out = [0.0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
        // SAFETY: `out` holds eight f32, the width of one 256-bit vector.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// Runs `CHAINS × ROUNDS` 512-bit FMAs; returns a value that depends on all of them.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f32 {
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..ROUNDS {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
        _mm512_reduce_add_ps(sum)
    }
}

/// GFLOP/s of `threads` threads each calling `kernel` (2 flop per lane per FMA) for about
/// `seconds`.
fn measure(kernel: fn() -> f32, lanes: usize, threads: usize, seconds: f64) -> f64 {
    let flop_per_call = (2 * lanes * CHAINS * ROUNDS) as f64;
    let start = Instant::now();
    let calls: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let mut calls = 0;
                    let mut sink = 0.0;
                    while t0.elapsed().as_secs_f64() < seconds {
                        sink += kernel();
                        calls += 1;
                    }
                    std::hint::black_box(sink);
                    calls
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("peak thread"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    calls.iter().sum::<usize>() as f64 * flop_per_call / elapsed / 1e9
}

fn main() -> anyhow::Result<()> {
    let seconds: f64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 2.0,
    };
    let cores = std::thread::available_parallelism()?.get();
    #[cfg(target_arch = "x86_64")]
    {
        let mut rows: Vec<PeakLoop> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the processor has AVX2 and FMA (checked just above).
            rows.push(("256-bit FMA (AVX2)", || unsafe { kernels::fma256() }, 8));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F (checked just above).
            rows.push(("512-bit FMA (AVX-512)", || unsafe { kernels::fma512() }, 16));
        }
        if rows.is_empty() {
            anyhow::bail!("this processor has neither AVX2 + FMA nor AVX-512");
        }
        for (name, kernel, lanes) in rows {
            let one = measure(kernel, lanes, 1, seconds);
            let all = measure(kernel, lanes, cores, seconds);
            println!(
                "{name}: {one:.1} GFLOP/s on one core alone, {all:.1} GFLOP/s on {cores} cores"
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    anyhow::bail!("the peak loops are written for x86_64");
    Ok(())
}
