//! Training flows by reverse Kullback–Leibler divergence: optimisers, learning-rate
//! schedules, and the trainer of any [`TrainableFlow`](crate::flow::TrainableFlow) with its
//! metrics stream and checkpoints, alone or as the first half of a stochastic normalizing
//! flow ([`Snf`]).

mod checkpoint;
mod config;
mod metrics;
pub mod optim;
pub mod schedule;
mod snf;
mod trainer;

pub use checkpoint::{CHECKPOINT_FORMAT_VERSION, checkpoint_chunk_change, checkpoint_rank_change};
pub use config::{DEFAULT_CHECK_INTERVAL, GradientEstimator, MIN_EVAL_SAMPLES, TrainConfig};
pub use metrics::{EvalMetrics, StepMetrics, TrainSummary};
pub use optim::{Optimizer, OptimizerKind};
pub use schedule::Schedule;
pub use snf::{Snf, SnfSeeds, evaluate_snf};
pub use trainer::{AnnealFn, EVAL_CHUNK, Trainer, evaluate_flow};
