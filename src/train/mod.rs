//! Training flows by reverse Kullback–Leibler divergence (SPEC 4): optimisers, learning-rate
//! schedules, and the trainer with its metrics stream and checkpoints.

pub mod optim;
pub mod schedule;

pub use optim::{Optimizer, OptimizerKind};
pub use schedule::Schedule;
