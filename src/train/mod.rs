//! Training flows by reverse Kullback–Leibler divergence: optimisers, learning-rate
//! schedules, and the trainer of any [`TrainableFlow`](crate::flow::TrainableFlow) with its
//! metrics stream and checkpoints.

mod checkpoint;
pub mod optim;
pub mod schedule;
mod trainer;

pub use checkpoint::CHECKPOINT_FORMAT_VERSION;
pub use optim::{Optimizer, OptimizerKind};
pub use schedule::Schedule;
pub use trainer::{
    AnnealFn, DEFAULT_CHECK_INTERVAL, EVAL_CHUNK, EvalMetrics, GradientEstimator, StepMetrics,
    TrainConfig, TrainSummary, Trainer, evaluate_flow,
};
