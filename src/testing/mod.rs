//! Public helpers for testing a user's own kernels, layers and transforms.

pub mod balance;
