//! Histograms with fixed bins: of field values, and of the magnetisation split by its sign
//! (a flow that lost one of the two Z2 modes shows up as a lopsided split).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A histogram with `bins` equal bins on [lo, hi), counting what falls outside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    lo: f64,
    hi: f64,
    counts: Vec<u64>,
    underflow: u64,
    overflow: u64,
    non_finite: u64,
}

impl Histogram {
    /// An empty histogram; needs lo < hi (both finite) and at least one bin.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Result<Self> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::param(
                "histogram range",
                format!("need finite lo < hi, got [{lo}, {hi})"),
            ));
        }
        if bins == 0 {
            return Err(Error::param("bins", "must be at least 1"));
        }
        Ok(Histogram {
            lo,
            hi,
            counts: vec![0; bins],
            underflow: 0,
            overflow: 0,
            non_finite: 0,
        })
    }

    /// Counts one value.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.non_finite += 1;
        } else if x < self.lo {
            self.underflow += 1;
        } else if x >= self.hi {
            self.overflow += 1;
        } else {
            let bins = self.counts.len();
            let k = ((x - self.lo) / (self.hi - self.lo) * bins as f64) as usize;
            self.counts[k.min(bins - 1)] += 1;
        }
    }

    /// Counts every value of a slice (e.g. all field values of a configuration).
    pub fn add_all(&mut self, xs: &[f64]) {
        xs.iter().for_each(|&x| self.add(x));
    }

    /// The counts per bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The bin edges, `bins + 1` of them.
    pub fn edges(&self) -> Vec<f64> {
        let bins = self.counts.len();
        (0..=bins)
            .map(|k| self.lo + (self.hi - self.lo) * k as f64 / bins as f64)
            .collect()
    }

    /// The bin centres.
    pub fn centres(&self) -> Vec<f64> {
        let width = (self.hi - self.lo) / self.counts.len() as f64;
        (0..self.counts.len())
            .map(|k| self.lo + width * (k as f64 + 0.5))
            .collect()
    }

    /// Values below the range, above it (or at `hi`), and NaN/infinite values.
    pub fn outside(&self) -> (u64, u64, u64) {
        (self.underflow, self.overflow, self.non_finite)
    }

    /// All values counted, inside and outside the range.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.underflow + self.overflow + self.non_finite
    }

    /// The probability density per bin: count / (total · bin width).
    pub fn density(&self) -> Vec<f64> {
        let total = self.total().max(1) as f64;
        let width = (self.hi - self.lo) / self.counts.len() as f64;
        self.counts
            .iter()
            .map(|&c| c as f64 / (total * width))
            .collect()
    }
}

/// Histograms of |M| for configurations with M > 0 and with M < 0, on a common range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignSplitHistogram {
    /// |M| of configurations with M > 0.
    pub positive: Histogram,
    /// |M| of configurations with M < 0.
    pub negative: Histogram,
    /// Configurations with M = 0 exactly.
    pub zero: u64,
    /// NaN or infinite magnetisations.
    pub non_finite: u64,
}

impl SignSplitHistogram {
    /// Empty histograms of |M| on [0, `max_abs`) with `bins` bins.
    pub fn new(max_abs: f64, bins: usize) -> Result<Self> {
        let h = Histogram::new(0.0, max_abs, bins)?;
        Ok(SignSplitHistogram {
            positive: h.clone(),
            negative: h,
            zero: 0,
            non_finite: 0,
        })
    }

    /// Counts one magnetisation.
    pub fn add(&mut self, m: f64) {
        if m.is_infinite() {
            self.non_finite += 1;
        } else if m > 0.0 {
            self.positive.add(m);
        } else if m < 0.0 {
            self.negative.add(-m);
        } else if m == 0.0 {
            self.zero += 1;
        } else {
            self.non_finite += 1;
        }
    }

    /// The fraction of signed configurations with M > 0 (½ for a Z2-symmetric ensemble);
    /// NaN before any signed value.
    pub fn fraction_positive(&self) -> f64 {
        let p = self.positive.total() as f64;
        let n = self.negative.total() as f64;
        p / (p + n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_right_bins() {
        let mut h = Histogram::new(-1.0, 1.0, 4).unwrap();
        h.add_all(&[-1.0, -0.6, -0.5, 0.0, 0.49, 0.999, 1.0, -3.0, f64::NAN]);
        assert_eq!(h.counts(), &[2, 1, 2, 1]);
        assert_eq!(h.outside(), (1, 1, 1));
        assert_eq!(h.total(), 9);
        assert_eq!(h.edges(), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(h.centres(), vec![-0.75, -0.25, 0.25, 0.75]);
        let area: f64 = h.density().iter().map(|d| d * 0.5).sum();
        assert!((area - 6.0 / 9.0).abs() < 1e-15);
        assert!(Histogram::new(1.0, 1.0, 3).is_err());
        assert!(Histogram::new(0.0, 1.0, 0).is_err());
    }

    #[test]
    fn sign_split_counts_each_side() {
        let mut s = SignSplitHistogram::new(2.0, 4).unwrap();
        for m in [0.3, -0.3, -1.2, 0.0, 1.9, 0.7, f64::NAN, f64::NEG_INFINITY] {
            s.add(m);
        }
        assert_eq!(s.positive.counts(), &[1, 1, 0, 1]);
        assert_eq!(s.negative.counts(), &[1, 0, 1, 0]);
        assert_eq!((s.zero, s.non_finite), (1, 2));
        assert!((s.fraction_positive() - 0.6).abs() < 1e-15);
    }
}
