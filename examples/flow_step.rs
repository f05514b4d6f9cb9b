//! A fixed forward + backward workload of the seed recipe, for instruction-count profiling
//! (`perf stat -e instructions`, `valgrind --tool=callgrind`), which is robust to other load
//! on the machine. Usage: `flow_step L BATCH BLOCKS ITERATIONS`.

use latflow::flow::{ChunkSeed, FlowConfig, FlowModel, Workspace};
use latflow::{Lattice, rng_from_seed};
use ndarray::Array2;
use rand_distr::{Distribution, StandardNormal};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [l, batch, blocks, iterations] = args[..] else {
        anyhow::bail!("usage: flow_step L BATCH BLOCKS ITERATIONS");
    };
    let lattice = Lattice::new(&[l, l])?;
    let v = lattice.volume();
    let model = FlowModel::new(&FlowConfig::seed(v, blocks, 8)?, &lattice, 0)?;
    let mut rng = rng_from_seed(1);
    let z = Array2::from_shape_fn((batch, v), |_| {
        let x: f64 = StandardNormal.sample(&mut rng);
        x as f32
    });
    let n = batch as f32;
    let seed = |mut c: ChunkSeed<f32>| {
        for (row, mut g) in c.phi.outer_iter().zip(c.grad_phi.outer_iter_mut()) {
            for x in 0..v {
                g[x] = row[x] * (2.0 + row[x] * row[x]) / n;
            }
        }
        c.grad_logdet.fill(-1.0 / n);
    };
    let mut ws = Workspace::<f32>::per_thread();
    let mut grad = vec![0.0f32; model.n_params()];
    let start = std::time::Instant::now();
    for _ in 0..iterations {
        model.forward_backward(z.view(), &mut ws, seed, &mut grad)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let norm: f64 = grad.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
    println!(
        "L={l} batch={batch}: {:.0} configs/s (wall, shared machine), |grad| = {norm:.6e}",
        (batch * iterations) as f64 / seconds
    );
    Ok(())
}
