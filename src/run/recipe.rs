//! Flow recipes and training methods: which flow is built for a lattice ([`RecipeSpec`]),
//! and the default, dense and scalable methods with their reference budgets.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::transform::MAX_BINS;
use crate::flow::{ConvFamily, FlowConfig, FreeFieldKind};
use crate::lattice::Lattice;
use crate::train::TrainConfig;

/// Which flow recipe (docs/flows.md#recipes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeKind {
    /// Z2-equivariant affine blocks, then one rational-quadratic-spline block.
    Seed,
    /// Affine blocks only.
    RealNvp,
    /// Additive blocks only (enough for the free field).
    Additive,
    /// Z2-equivariant affine blocks only.
    Z2Affine,
    /// Z2-equivariant affine blocks with convolutional nets.
    Conv,
    /// Convolutional Z2-affine blocks on a coarse lattice, refined level by level.
    Multiscale,
}

impl RecipeKind {
    /// Whether the flow's nets are convolutional (`conv`, `multiscale`).
    pub fn is_convolutional(self) -> bool {
        matches!(self, RecipeKind::Conv | RecipeKind::Multiscale)
    }

    /// Whether the setting `key` of a [`RecipeSpec`] (`hidden`, `depth`, `segments`,
    /// `channels`, `kernel`, ...) has an effect on a flow of this kind; keys that are not
    /// recipe settings are taken to.
    pub fn uses(self, key: &str) -> bool {
        match key {
            "segments" => matches!(
                self,
                RecipeKind::Seed | RecipeKind::Conv | RecipeKind::Multiscale
            ),
            "channels" | "kernel" | "spline" | "free_field" => self.is_convolutional(),
            "levels" => self == RecipeKind::Multiscale,
            "hidden" => !self.is_convolutional(),
            "depth" => {
                self.is_convolutional()
                    || matches!(self, RecipeKind::RealNvp | RecipeKind::Additive)
            }
            _ => true,
        }
    }
}

/// A flow recipe and its sizes; only the fields the kind uses are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeSpec {
    /// The recipe.
    pub kind: RecipeKind,
    /// Hidden width of the dense nets (0: |Λ|).
    pub hidden: usize,
    /// Hidden layers of the dense nets (real-nvp and additive).
    pub depth: usize,
    /// Affine (or additive, or convolutional) blocks.
    pub affine_blocks: usize,
    /// Spline segments K of the seed recipe's RQS block.
    pub segments: usize,
    /// Hidden channels of the convolutional nets.
    pub channels: usize,
    /// Convolution kernel size.
    pub kernel: usize,
    /// Coarse levels of the multiscale recipe.
    pub levels: usize,
    /// A spline block (of `segments` segments) on top of the conv or multiscale recipe.
    pub spline: bool,
    /// A free-field layer in front of the conv or multiscale recipe.
    pub free_field: FreeFieldKind,
}

impl Default for RecipeSpec {
    fn default() -> Self {
        RecipeSpec {
            kind: RecipeKind::Seed,
            hidden: 0,
            depth: 1,
            affine_blocks: 2,
            segments: 8,
            channels: 8,
            kernel: 3,
            levels: 2,
            spline: false,
            free_field: FreeFieldKind::None,
        }
    }
}

impl RecipeSpec {
    /// Checks the sizes the kind uses on `lattice`: counts at least 1, `segments` within
    /// 1..=[`MAX_BINS`], `kernel` odd, and the parameters (with gradient and optimiser
    /// state) against the memory available, naming the size furthest above its default.
    pub fn validate(&self, lattice: &Lattice) -> Result<()> {
        let conv = matches!(self.kind, RecipeKind::Conv | RecipeKind::Multiscale);
        if self.kind == RecipeKind::Multiscale {
            if self.levels == 0 {
                return Err(Error::param("levels", "must be at least 1"));
            }
            crate::flow::check_levels(lattice, self.levels)?;
        }
        if self.affine_blocks == 0 && self.kind != RecipeKind::Seed {
            return Err(Error::param("affine_blocks", "must be at least 1"));
        }
        if self.depth == 0 {
            return Err(Error::param("depth", "must be at least 1"));
        }
        let splines = self.kind == RecipeKind::Seed || conv && self.spline;
        if splines && !(1..=MAX_BINS).contains(&self.segments) {
            return Err(Error::param(
                "segments",
                format!("must be between 1 and {MAX_BINS}, got {}", self.segments),
            ));
        }
        if conv && self.channels == 0 {
            return Err(Error::param("channels", "must be at least 1"));
        }
        if conv && self.kernel.is_multiple_of(2) {
            return Err(Error::param(
                "kernel",
                format!("must be odd and positive, got {}", self.kernel),
            ));
        }
        let (params, suspects) = self.parameter_estimate(lattice);
        let name = suspects
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("hidden", |s| s.0);
        crate::limits::check_memory(
            name,
            &format!(
                "a {} flow of at least {} parameters (with gradient and optimiser state)",
                serde_json::to_value(self.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                crate::limits::format_count(params)
            ),
            params.saturating_mul(4 * std::mem::size_of::<f32>() as u128),
        )
    }

    /// A lower estimate of the flow's parameter count on `lattice`, and each size the kind
    /// uses with its ratio to its default (the largest ratio names the culprit of a flow
    /// too large).
    fn parameter_estimate(&self, lattice: &Lattice) -> (u128, Vec<(&'static str, f64)>) {
        let volume = lattice.volume() as u128;
        let half = volume / 2;
        let hidden = if self.hidden == 0 {
            volume
        } else {
            self.hidden as u128
        };
        let (blocks, depth) = (self.affine_blocks as u128, self.depth as u128);
        let mut suspects = vec![
            ("affine_blocks", self.affine_blocks as f64 / 2.0),
            ("hidden", hidden as f64 / volume.max(1) as f64),
        ];
        // Each block is two coupling layers; a dense layer maps |P| → hidden … → |A| · k.
        let dense = |depth: u128, outputs_per_site: u128| {
            half.saturating_mul(hidden)
                .saturating_add((depth - 1).saturating_mul(hidden.saturating_mul(hidden)))
                .saturating_add(hidden.saturating_mul(half).saturating_mul(outputs_per_site))
        };
        let per_layer = match self.kind {
            RecipeKind::Seed => {
                suspects.push(("segments", self.segments as f64 / 8.0));
                let rqs = dense(1, 3 * self.segments as u128 + 1);
                // The RQS block's two layers on top of the affine blocks'.
                return (
                    blocks
                        .saturating_mul(2)
                        .saturating_mul(dense(1, 2))
                        .saturating_add(rqs.saturating_mul(2)),
                    suspects,
                );
            }
            RecipeKind::RealNvp | RecipeKind::Additive => {
                suspects.push(("depth", self.depth as f64));
                dense(depth, 1)
            }
            RecipeKind::Z2Affine => dense(1, 2),
            RecipeKind::Conv | RecipeKind::Multiscale => {
                suspects.retain(|s| s.0 != "hidden");
                suspects.push(("depth", self.depth as f64));
                suspects.push(("channels", self.channels as f64 / 8.0));
                suspects.push(("kernel", self.kernel as f64 / 3.0));
                let taps = u32::try_from(lattice.dim())
                    .ok()
                    .and_then(|d| (self.kernel as u128).checked_pow(d))
                    .unwrap_or(u128::MAX);
                let channels = self.channels as u128;
                let levels = match self.kind {
                    RecipeKind::Multiscale => self.levels as u128 + 1,
                    _ => 1,
                };
                levels.saturating_mul(taps).saturating_mul(
                    channels.saturating_mul(2).saturating_add(
                        (depth - 1).saturating_mul(channels.saturating_mul(channels)),
                    ),
                )
            }
        };
        (blocks.saturating_mul(2).saturating_mul(per_layer), suspects)
    }

    /// The flow configuration this recipe describes on `lattice` (after
    /// [`RecipeSpec::validate`]).
    pub fn build(&self, lattice: &Lattice) -> Result<FlowConfig> {
        self.validate(lattice)?;
        let hidden = if self.hidden == 0 {
            FlowConfig::default_hidden(lattice)
        } else {
            self.hidden
        };
        let widths = vec![hidden; self.depth];
        Ok(match self.kind {
            RecipeKind::Seed => FlowConfig::seed(hidden, self.affine_blocks, self.segments)?,
            RecipeKind::RealNvp => FlowConfig::real_nvp(self.affine_blocks, &widths),
            RecipeKind::Additive => FlowConfig::additive(self.affine_blocks, &widths),
            RecipeKind::Z2Affine => FlowConfig::z2_affine(self.affine_blocks, hidden),
            RecipeKind::Conv | RecipeKind::Multiscale => ConvFamily {
                levels: if self.kind == RecipeKind::Conv {
                    0
                } else {
                    self.levels
                },
                blocks: self.affine_blocks,
                refine_blocks: self.affine_blocks,
                channels: vec![self.channels; self.depth],
                kernel: self.kernel,
                spline: self.spline.then_some(self.segments),
                free_field: self.free_field.config(),
            }
            .config()?,
        })
    }
}

/// The seed recipe's reference budgets, by lattice volume |Λ|: (batch, iterations, initial
/// learning rate) of the runs that reached about 70 % acceptance at L = 6, 8, 10, 12, 14 on
/// the ξ ≈ L/4 line (docs/reference.md#training-recipes); larger volumes take the L = 14
/// row.
pub fn reference_budget(volume: usize) -> (usize, usize, f64) {
    match volume {
        0..=36 => (300, 350, 0.02),
        37..=64 => (500, 750, 0.01),
        65..=100 => (1250, 2000, 0.005),
        101..=144 => (4000, 5000, 0.003),
        _ => (7000, 14000, 0.001),
    }
}

/// latflow's default training method for a run that sets a target acceptance and nothing
/// else about the flow or its training (`latflow train --until-acceptance A`): the best
/// method measured so far (docs/benchmarks-history.md, "Training
/// methods"). Up to
/// |Λ| = [`DENSE_DEFAULT_UP_TO`] it is the dense family's [`dense_method`], beyond the
/// scalable family's [`scalable_method`], measured cheaper there.
pub fn default_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    if lattice.volume() > DENSE_DEFAULT_UP_TO {
        scalable_method(lattice)
    } else {
        dense_method(lattice)
    }
}

/// The dense family's best method measured (the default up to |Λ| = 100). It is the seed
/// recipe's
/// architecture with fewer or narrower nets, ending in one spline block of 8 segments:
/// up to |Λ| = 64 that spline block alone at the full width H = |Λ|, up to |Λ| = 100 one
/// Z2-equivariant affine block before it and beyond three, both at half width H = |Λ|/2;
/// trained with path gradients ([`GradientEstimator::Path`]), always with an iteration
/// budget worth the reference |Φ_train| ([`reference_budget`]):
/// - up to |Λ| = 100, the reference learning rate and batches of at most 500 on a cosine
///   schedule over the budget;
/// - beyond, batches of 1000 at L = 12's reference rate (0.003; the reference recipe's
///   0.001 beyond |Λ| = 144 learns slower) on cosine periods restarted at the rate
///   ([`Schedule::WarmRestarts`]), the first over 125|Λ|/3 steps (6000 at L = 12, 8167 at
///   L = 14) and each next twice as long: at L = 12 the rate falls within the first
///   6 million configurations, where the flow reaches the seed recipe's acceptance, and a
///   higher target gets further periods.
///
/// The acceptance is checked every 1/30 of the budget on the cosine schedule and nine
/// times per first period on restarts (at least every [`DEFAULT_CHECK_INTERVAL`]
/// iterations), on [`DEFAULT_METHOD_CHECK_SAMPLES`] samples, so that the checks cost a
/// small part of the training; seed, chunks and the other evaluation settings keep their
/// defaults.
///
/// [`DEFAULT_CHECK_INTERVAL`]: crate::train::DEFAULT_CHECK_INTERVAL
/// [`Schedule::WarmRestarts`]: crate::train::Schedule::WarmRestarts
/// [`GradientEstimator::Path`]: crate::train::GradientEstimator::Path
pub fn dense_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    use crate::train::Schedule;
    let volume = lattice.volume();
    let (reference_batch, reference_iterations, reference_lr) = reference_budget(volume);
    let budget = reference_batch * reference_iterations;
    // Beyond |Λ| = 100: batches of 1000 at L = 12's reference rate (0.003, also where the
    // reference recipe's is 0.001), on cosine periods restarted at that rate, the first
    // over 6000 steps at L = 12 and longer in proportion to |Λ| (8167 at L = 14).
    let (batch, lr) = match volume {
        0..=100 => (reference_batch.min(500), reference_lr),
        _ => (1000, reference_budget(144).2),
    };
    let iterations = budget.div_ceil(batch);
    let (schedule, eval_every) = match volume {
        0..=100 => (Schedule::Cosine, iterations / 30),
        _ => {
            let period = (125 * volume).div_ceil(3);
            (
                Schedule::WarmRestarts {
                    period,
                    growth: 2.0,
                },
                period / 9,
            )
        }
    };
    // Up to |Λ| = 64 the spline block alone at full width reaches an acceptance with
    // fewer configurations than affine blocks before it, and each costs less; up to
    // |Λ| = 100 one affine block at half width trains fastest, beyond three.
    let (hidden, affine_blocks) = match volume {
        0..=64 => (volume, 0),
        65..=100 => (volume / 2, 1),
        _ => (volume / 2, 3),
    };
    let recipe = RecipeSpec {
        kind: RecipeKind::Seed,
        hidden: hidden.max(1),
        affine_blocks,
        segments: 8,
        ..RecipeSpec::default()
    };
    let mut train = TrainConfig::new(batch, iterations, lr);
    train.schedule = schedule;
    train.gradient = crate::train::GradientEstimator::Path;
    train.eval_every = eval_every.max(crate::train::DEFAULT_CHECK_INTERVAL);
    train.check_samples = Some(DEFAULT_METHOD_CHECK_SAMPLES);
    (recipe, train)
}

/// The largest volume for which [`default_method`] trains the dense seed-recipe family: at
/// L = 10 (|Λ| = 100) both families reached acceptance 0.65 in the same wall time (82 and
/// 87 s, one after the other on a loaded two-core machine: about 1,000,000 configurations
/// against 100,000), at L = 12 the scalable family needs about 120,000 configurations
/// where the dense one needs millions.
pub const DENSE_DEFAULT_UP_TO: usize = 100;

/// The scalable family's default method ([`default_method`] beyond |Λ| = 100): a multiscale
/// flow of [`default_levels`] levels (a convolutional flow on the whole lattice when an
/// extent is odd) behind a free-field layer with one σ per class of momenta, two Z2-affine
/// blocks on the coarsest lattice and two at every finer level, with convolutional nets of
/// two hidden layers of 16 channels (3 × 3 kernels), and a spline block of 8 segments with
/// the same nets between two learnable scales; trained with path gradients on batches of
/// 256 at η = 0.003 on a cosine schedule over 40|Λ| iterations (about 10|Λ|² / 1000
/// thousand configurations, a budget the target usually ends long before), checked every
/// 50 iterations on [`DEFAULT_METHOD_CHECK_SAMPLES`] samples.
pub fn scalable_method(lattice: &Lattice) -> (RecipeSpec, TrainConfig) {
    let levels = default_levels(lattice);
    let recipe = RecipeSpec {
        kind: if levels == 0 {
            RecipeKind::Conv
        } else {
            RecipeKind::Multiscale
        },
        levels: levels.max(1),
        affine_blocks: 2,
        channels: 16,
        depth: 2,
        kernel: 3,
        spline: true,
        segments: 8,
        free_field: FreeFieldKind::Classes,
        ..RecipeSpec::default()
    };
    let mut train = TrainConfig::new(256, 40 * lattice.volume(), 0.003);
    train.schedule = crate::train::Schedule::Cosine;
    train.gradient = crate::train::GradientEstimator::Path;
    train.eval_every = 50;
    train.check_samples = Some(DEFAULT_METHOD_CHECK_SAMPLES);
    (recipe, train)
}

/// The coarse levels of [`scalable_method`] on `lattice`: the most that leave a coarsest
/// lattice of extents at least 3 (12 → 3, 16 → 4, 20 → 5, 32 → 4, 64 → 4), 0 when an extent
/// is odd or below 6.
pub fn default_levels(lattice: &Lattice) -> usize {
    let mut levels = 0;
    while lattice
        .extents()
        .iter()
        .all(|&l| l.is_multiple_of(2 << levels) && l / (2 << levels) >= 3)
    {
        levels += 1;
    }
    levels
}

/// Samples of each acceptance check of [`default_method`]: a quarter of the command line's
/// 10,000 evaluation samples, which reads an acceptance near 0.65 to about ±0.015 (at
/// L = 8 this cut the checks from a quarter of the run's wall time to a tenth, with the
/// same final acceptance).
pub const DEFAULT_METHOD_CHECK_SAMPLES: usize = 2500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowModel;

    #[test]
    fn scalable_levels_leave_a_coarsest_lattice_of_at_least_three() {
        let levels = |extents: &[usize]| default_levels(&Lattice::new(extents).unwrap());
        assert_eq!(levels(&[12, 12]), 2);
        assert_eq!(levels(&[16, 16]), 2);
        assert_eq!(levels(&[20, 20]), 2);
        assert_eq!(levels(&[24, 24]), 3);
        assert_eq!(levels(&[32, 32]), 3);
        assert_eq!(levels(&[64, 64]), 4);
        assert_eq!(levels(&[10, 10]), 1);
        assert_eq!(levels(&[15, 15]), 0);
        assert_eq!(levels(&[16, 10]), 1);
        let (recipe, _) = scalable_method(&Lattice::new(&[15, 15]).unwrap());
        assert_eq!(recipe.kind, RecipeKind::Conv);
        let (recipe, _) = scalable_method(&Lattice::new(&[32, 32]).unwrap());
        assert_eq!((recipe.kind, recipe.levels), (RecipeKind::Multiscale, 3));
        assert!(recipe.build(&Lattice::new(&[32, 32]).unwrap()).is_ok());
    }

    /// (batch, iterations, lr, eval_every, hidden, affine blocks) of the dense method.
    fn method(l: usize) -> (usize, usize, f64, usize, usize, usize) {
        let (recipe, train) = dense_method(&Lattice::new(&[l, l]).unwrap());
        assert_eq!(train.gradient, crate::train::GradientEstimator::Path);
        assert_eq!(train.check_samples, Some(DEFAULT_METHOD_CHECK_SAMPLES));
        (
            train.batch,
            train.iterations,
            train.lr,
            train.eval_every,
            recipe.hidden,
            recipe.affine_blocks,
        )
    }

    #[test]
    fn the_default_method_spends_the_reference_budget_with_its_own_batches() {
        // L = 6 and 8: the spline block alone at width |Λ|, the reference batch (300, 500),
        // iterations (350, 750) and rate (0.02, 0.01).
        assert_eq!(method(6), (300, 350, 0.02, 25, 36, 0));
        assert_eq!(method(8), (500, 750, 0.01, 25, 64, 0));
        // L = 10: one affine block at half width, the reference 1250 × 2000 in batches of
        // 500.
        assert_eq!(method(10), (500, 5000, 0.005, 166, 50, 1));
        // L = 12: the reference 4000 × 5000 in batches of 1000 at the reference rate.
        assert_eq!(method(12), (1000, 20_000, 0.003, 666, 72, 3));
        // L = 14: the reference 7000 × 14000 configurations in batches of 1000 at η = 0.003.
        assert_eq!(method(14), (1000, 98_000, 0.003, 907, 98, 3));
        assert_eq!(method(20), (1000, 98_000, 0.003, 1851, 200, 3));
        // The rate falls over the whole budget up to |Λ| = 100; beyond, the first cosine
        // period spans 125|Λ|/3 steps.
        let schedule = |l: usize| dense_method(&Lattice::new(&[l, l]).unwrap()).1.schedule;
        for l in [6, 8, 10] {
            assert_eq!(schedule(l), crate::train::Schedule::Cosine, "L = {l}");
        }
        for (l, period) in [(12, 6000), (14, 8167), (16, 10_667), (20, 16_667)] {
            assert_eq!(
                schedule(l),
                crate::train::Schedule::WarmRestarts {
                    period,
                    growth: 2.0
                },
                "L = {l}"
            );
        }
    }

    #[test]
    fn the_default_method_is_dense_up_to_l10_and_scalable_beyond() {
        for l in [6, 8, 10] {
            let lattice = Lattice::new(&[l, l]).unwrap();
            assert_eq!(default_method(&lattice), dense_method(&lattice));
        }
        for l in [12, 16, 32, 64] {
            let lattice = Lattice::new(&[l, l]).unwrap();
            let (recipe, train) = default_method(&lattice);
            assert_eq!(
                (recipe.kind, recipe.levels, recipe.spline),
                (RecipeKind::Multiscale, default_levels(&lattice), true)
            );
            assert_eq!(recipe.free_field, FreeFieldKind::Classes);
            assert_eq!((train.batch, train.iterations), (256, 40 * l * l));
            assert_eq!(train.gradient, crate::train::GradientEstimator::Path);
            let config = recipe.build(&lattice).unwrap();
            FlowModel::new(&config, &lattice, 1).unwrap();
        }
    }
}
