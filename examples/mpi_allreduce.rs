//! The cost of the gradient sum over MPI ranks, `Collective::sum_f32`, for vectors of 10² to
//! 10⁷ floats: the median over repetitions of the time of one sum, measured on rank 0, and a
//! least-squares fit T = a + b · bytes (a the latency term, 1/b the effective bandwidth).
//!
//! ```sh
//! cargo build --release --features mpi --example mpi_allreduce
//! mpirun -np 2 target/release/examples/mpi_allreduce
//! ```

use std::time::Instant;

use latflow::parallel::Collective;
use latflow::parallel::mpi::MpiRanks;

fn main() -> latflow::Result<()> {
    let ranks = MpiRanks::init()?;
    let sizes = [
        100usize, 1_000, 10_000, 42_374, 132_674, 1_000_000, 4_000_000, 10_000_000,
    ];
    let mut points = Vec::new();
    if ranks.is_root() {
        println!("ranks {}", ranks.size());
        println!("{:>10} {:>12} {:>14}", "floats", "median µs", "GB/s (4P/T)");
    }
    for &n in &sizes {
        let mut values = vec![1.0f32; n];
        let repeats = (2_000_000 / n).clamp(5, 2000);
        // Warm up the connections and buffers.
        for _ in 0..3 {
            ranks.sum_f32(&mut values)?;
        }
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            ranks.barrier()?;
            let start = Instant::now();
            ranks.sum_f32(&mut values)?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        points.push(((4 * n) as f64, median));
        if ranks.is_root() {
            println!(
                "{n:>10} {:>12.1} {:>14.2}",
                median * 1e6,
                (4 * n) as f64 / median / 1e9
            );
        }
    }
    if ranks.is_root() {
        let k = points.len() as f64;
        let (sx, sy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
        let (mx, my) = (sx / k, sy / k);
        let sxx: f64 = points.iter().map(|&(x, _)| (x - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        println!(
            "fit T = a + b·bytes: a = {:.1} µs, 1/b = {:.2} GB/s",
            intercept * 1e6,
            1.0 / slope / 1e9
        );
    }
    Ok(())
}
