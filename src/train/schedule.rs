//! Learning-rate schedules: constant, cosine annealing and cosine with warm restarts.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the learning rate evolves over `total` iterations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// η_t = η0.
    Constant,
    /// η_t = ½ η0 [1 + cos(π t / T)] over the whole run.
    Cosine,
    /// Cosine annealing restarted every `period` iterations (t reset to 0 at each restart);
    /// with `growth` > 1 each period is that many times longer than the previous one.
    WarmRestarts {
        /// Length of the first period.
        period: usize,
        /// Factor by which each period grows (1 for equal periods).
        growth: f64,
    },
}

impl Schedule {
    /// Checks the schedule's parameters.
    pub fn validate(&self) -> Result<()> {
        if let Schedule::WarmRestarts { period, growth } = *self {
            if period == 0 {
                return Err(Error::param("period", "must be at least 1"));
            }
            if !(growth >= 1.0 && growth.is_finite()) {
                return Err(Error::param("growth", format!("must be ≥ 1, got {growth}")));
            }
        }
        Ok(())
    }

    /// The restart index and position (t, T) within the current cosine period.
    pub fn position(&self, iteration: usize, total: usize) -> (usize, usize, usize) {
        match *self {
            Schedule::Constant | Schedule::Cosine => (0, iteration, total.max(1)),
            Schedule::WarmRestarts { period, growth } => {
                let mut start = 0usize;
                let mut len = period.max(1);
                let mut restart = 0usize;
                // `start ≤ iteration` throughout, so nothing overflows.
                while iteration - start >= len {
                    start += len;
                    restart += 1;
                    let next = ((len as f64) * growth).round().max(1.0) as usize;
                    if next == len {
                        // The periods stop growing: count the remaining ones at once.
                        let periods = (iteration - start) / len;
                        return (restart + periods, (iteration - start) % len, len);
                    }
                    len = next;
                }
                (restart, iteration - start, len)
            }
        }
    }

    /// The learning rate at `iteration` (0-based) of a run of `total` iterations.
    pub fn learning_rate(&self, lr0: f64, iteration: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => lr0,
            _ => {
                let (_, t, len) = self.position(iteration, total);
                0.5 * lr0 * (1.0 + (PI * t as f64 / len as f64).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_lr0_halves_midway_and_restarts() {
        let c = Schedule::Cosine;
        assert_eq!(c.learning_rate(0.1, 0, 100), 0.1);
        assert!((c.learning_rate(0.1, 50, 100) - 0.05).abs() < 1e-12);
        assert!(c.learning_rate(0.1, 99, 100) < 1e-4);
        let w = Schedule::WarmRestarts {
            period: 10,
            growth: 2.0,
        };
        assert_eq!(w.learning_rate(0.1, 10, 100), 0.1);
        assert_eq!(w.position(29, 100), (1, 19, 20));
        assert_eq!(w.position(30, 100), (2, 0, 40));
        assert_eq!(Schedule::Constant.learning_rate(0.3, 77, 100), 0.3);
        assert!(
            Schedule::WarmRestarts {
                period: 0,
                growth: 1.0
            }
            .validate()
            .is_err()
        );
    }
}
