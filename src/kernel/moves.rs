//! What every accept/reject leaves behind: the [`MoveInfo`] record with its kernel's
//! [`MoveLabel`], the kind-specific [`MoveDetail`], and the five-number rows in which move
//! histories are stored.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name a move is recorded under: its kernel's kind (`local`, `hmc`, `flow`, or a
/// user kernel's own name) or, when a kernel expression holds several kernels of one kind,
/// the kind numbered by occurrence (`hmc#1`, `hmc#2`; see
/// [`KernelExpr::build`](super::KernelExpr::build)).
///
/// Cheap to clone (a shared string); compares and serialises as its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct MoveLabel(Arc<str>);

impl MoveLabel {
    /// The label `text`.
    pub fn new(text: &str) -> Self {
        MoveLabel(Arc::from(text))
    }

    /// The label's text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for MoveLabel {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MoveLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MoveLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for MoveLabel {
    fn from(text: &str) -> Self {
        MoveLabel::new(text)
    }
}

impl From<String> for MoveLabel {
    fn from(text: String) -> Self {
        MoveLabel(Arc::from(text))
    }
}

impl From<MoveLabel> for String {
    fn from(label: MoveLabel) -> String {
        label.0.to_string()
    }
}

impl PartialEq<str> for MoveLabel {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for MoveLabel {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// What one Metropolis decision (or a group of them, for a local sweep) did.
///
/// Kernels append one record per decision group to a history, so that acceptance and the
/// rejection-based autocorrelation can be computed afterwards without printing anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveInfo {
    /// The kernel that made the move (see [`MoveLabel`]).
    pub kernel: MoveLabel,
    /// Proposals made (|Λ|·hits for a local sweep, 1 for HMC or a flow proposal).
    pub proposed: u32,
    /// Proposals accepted.
    pub accepted: u32,
    /// What the move measured, by kind of move.
    pub detail: MoveDetail,
}

/// The kind-specific part of a [`MoveInfo`]: each kind of move records its own quantity
/// under its own name.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MoveDetail {
    /// A local Metropolis sweep.
    LocalSweep {
        /// Σ ΔS over the accepted single-site proposals: S after the sweep − S before.
        delta_action: f64,
        /// The proposal half-width δ the sweep used.
        step_size: f64,
    },
    /// An HMC trajectory.
    Hmc {
        /// ΔH = H(end of trajectory) − H(start) of the proposed trajectory.
        delta_h: f64,
        /// Integrator steps the trajectory took.
        md_steps: u32,
    },
    /// A flow independence proposal.
    Flow {
        /// log w(φ') − log w(φ) with w = e^{−S}/p̃: the log-acceptance ratio (NaN when
        /// neither weight is finite).
        log_weight_ratio: f64,
        /// log w(φ') = −S(φ') − log p̃(φ') of the proposal itself, the importance weight
        /// of the flow's sample (NaN when the flow failed on it).
        log_weight: f64,
    },
    /// Any other Metropolis–Hastings proposal, e.g. a user's kernel.
    Metropolis {
        /// log of the Metropolis–Hastings ratio [q(φ|φ′) p(φ′)] / [q(φ′|φ) p(φ)].
        log_acceptance_ratio: f64,
    },
}

/// The kinds of [`MoveDetail`], by the names stored move histories use.
pub const MOVE_KINDS: [&str; 4] = ["local", "hmc", "flow", "metropolis"];

/// What the two detail columns of a stored move row hold, per kind of [`MOVE_KINDS`].
pub const MOVE_DETAIL_COLUMNS: [(&str, &str); 4] = [
    (
        "ΔS of the sweep (sum over accepted single-site proposals)",
        "proposal half-width δ",
    ),
    (
        "ΔH of the proposed trajectory",
        "integrator steps of the trajectory",
    ),
    (
        "log w(φ′) − log w(φ), the log-acceptance ratio",
        "log w(φ′) = −S(φ′) − log p̃(φ′) of the proposal",
    ),
    ("log Metropolis–Hastings ratio", "unused (NaN)"),
];

impl MoveDetail {
    /// The position of this kind in [`MOVE_KINDS`].
    pub fn kind_code(&self) -> usize {
        match self {
            MoveDetail::LocalSweep { .. } => 0,
            MoveDetail::Hmc { .. } => 1,
            MoveDetail::Flow { .. } => 2,
            MoveDetail::Metropolis { .. } => 3,
        }
    }

    /// The kind's name in [`MOVE_KINDS`].
    pub fn kind(&self) -> &'static str {
        MOVE_KINDS[self.kind_code()]
    }

    /// The two kind-specific numbers (see [`MOVE_DETAIL_COLUMNS`]).
    pub fn values(&self) -> (f64, f64) {
        match *self {
            MoveDetail::LocalSweep {
                delta_action,
                step_size,
            } => (delta_action, step_size),
            MoveDetail::Hmc { delta_h, md_steps } => (delta_h, f64::from(md_steps)),
            MoveDetail::Flow {
                log_weight_ratio,
                log_weight,
            } => (log_weight_ratio, log_weight),
            MoveDetail::Metropolis {
                log_acceptance_ratio,
            } => (log_acceptance_ratio, f64::NAN),
        }
    }

    /// The detail of kind `kind` (a name of [`MOVE_KINDS`]) from its two numbers; an
    /// unknown kind or a step count that is not a count is an error saying which.
    pub fn from_values(kind: &str, a: f64, b: f64) -> std::result::Result<Self, String> {
        Ok(match kind {
            "local" => MoveDetail::LocalSweep {
                delta_action: a,
                step_size: b,
            },
            "hmc" => MoveDetail::Hmc {
                delta_h: a,
                md_steps: count(b)?,
            },
            "flow" => MoveDetail::Flow {
                log_weight_ratio: a,
                log_weight: b,
            },
            "metropolis" => MoveDetail::Metropolis {
                log_acceptance_ratio: a,
            },
            other => {
                return Err(format!(
                    "unknown move kind `{other}` (the kinds are {})",
                    MOVE_KINDS.join(", ")
                ));
            }
        })
    }
}

fn count(x: f64) -> std::result::Result<u32, String> {
    if (0.0..=f64::from(u32::MAX)).contains(&x) && x.fract() == 0.0 {
        Ok(x as u32)
    } else {
        Err(format!("{x} is not a count"))
    }
}

impl MoveInfo {
    /// The move as five numbers for storage: `label` (the caller's index of its label in a
    /// table stored beside the rows), proposals, acceptances and the detail's two values
    /// (see [`MOVE_DETAIL_COLUMNS`]).
    pub fn to_row(&self, label: usize) -> [f64; 5] {
        let (a, b) = self.detail.values();
        [
            label as f64,
            f64::from(self.proposed),
            f64::from(self.accepted),
            a,
            b,
        ]
    }

    /// The move [`MoveInfo::to_row`] wrote, given its label table: `labels[i]` is the label
    /// of index i with its kind (a name of [`MOVE_KINDS`]). A row of another length, an
    /// index outside the table or counts that are not counts are an error saying which.
    pub fn from_row(
        row: &[f64],
        labels: &[(MoveLabel, String)],
    ) -> std::result::Result<MoveInfo, String> {
        let &[index, proposed, accepted, a, b] = row else {
            return Err(format!("{} values, 5 expected", row.len()));
        };
        let (label, kind) = labels
            .get(index as usize)
            .filter(|_| index >= 0.0 && index.fract() == 0.0)
            .ok_or_else(|| format!("label index {index} outside the {} labels", labels.len()))?;
        Ok(MoveInfo {
            kernel: label.clone(),
            proposed: count(proposed)?,
            accepted: count(accepted)?,
            detail: MoveDetail::from_values(kind, a, b)?,
        })
    }

    /// ΔH when this is an HMC trajectory.
    pub fn delta_h(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Hmc { delta_h, .. } => Some(delta_h),
            _ => None,
        }
    }

    /// log w(φ′) − log w(φ) when this is a flow proposal.
    pub fn log_weight_ratio(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Flow {
                log_weight_ratio, ..
            } => Some(log_weight_ratio),
            _ => None,
        }
    }

    /// The proposal's own log-weight log w(φ′) = −S(φ′) − log p̃(φ′) when this is a flow
    /// proposal.
    pub fn proposal_log_weight(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Flow { log_weight, .. } => Some(log_weight),
            _ => None,
        }
    }

    /// The log-acceptance ratio of a single Metropolis–Hastings proposal: −ΔH for HMC, the
    /// log-weight ratio for a flow proposal, the recorded ratio of other proposals; `None`
    /// for a local sweep (many decisions).
    pub fn log_acceptance_ratio(&self) -> Option<f64> {
        match self.detail {
            MoveDetail::Hmc { delta_h, .. } => Some(-delta_h),
            MoveDetail::Flow {
                log_weight_ratio, ..
            } => Some(log_weight_ratio),
            MoveDetail::Metropolis {
                log_acceptance_ratio,
            } => Some(log_acceptance_ratio),
            MoveDetail::LocalSweep { .. } => None,
        }
    }
}

/// A move history as a label table and rows of five numbers ([`MoveInfo::to_row`]): how
/// histories are stored and sent between processes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoveRows {
    /// Each label with its kind, in order of first appearance.
    pub labels: Vec<(MoveLabel, String)>,
    /// One row per move.
    pub rows: Vec<[f64; 5]>,
}

impl MoveRows {
    /// The rows of `moves`.
    pub fn from_moves(moves: &[MoveInfo]) -> Self {
        let mut labels: Vec<(MoveLabel, String)> = Vec::new();
        let rows = moves
            .iter()
            .map(|m| {
                let kind = m.detail.kind();
                let index = match labels.iter().position(|(l, k)| *l == m.kernel && k == kind) {
                    Some(i) => i,
                    None => {
                        labels.push((m.kernel.clone(), kind.to_string()));
                        labels.len() - 1
                    }
                };
                m.to_row(index)
            })
            .collect();
        MoveRows { labels, rows }
    }

    /// The moves back; the error names the first bad row.
    pub fn to_moves(&self) -> std::result::Result<Vec<MoveInfo>, String> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                MoveInfo::from_row(row, &self.labels).map_err(|e| format!("row {i}: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_labels_kinds_and_values() {
        let moves = vec![
            MoveInfo {
                kernel: "hmc#1".into(),
                proposed: 1,
                accepted: 1,
                detail: MoveDetail::Hmc {
                    delta_h: 0.25,
                    md_steps: 7,
                },
            },
            MoveInfo {
                kernel: "flip".into(),
                proposed: 1,
                accepted: 0,
                detail: MoveDetail::Metropolis {
                    log_acceptance_ratio: -3.0,
                },
            },
            MoveInfo {
                kernel: "hmc#2".into(),
                proposed: 1,
                accepted: 0,
                detail: MoveDetail::Hmc {
                    delta_h: 2.5,
                    md_steps: 9,
                },
            },
            MoveInfo {
                kernel: "hmc#1".into(),
                proposed: 1,
                accepted: 0,
                detail: MoveDetail::Hmc {
                    delta_h: 1.5,
                    md_steps: 8,
                },
            },
        ];
        let rows = MoveRows::from_moves(&moves);
        assert_eq!(rows.labels.len(), 3);
        assert_eq!(rows.to_moves().unwrap(), moves);
        let mut bad = rows.clone();
        bad.rows[1][0] = 7.0;
        assert!(bad.to_moves().unwrap_err().contains("row 1"));
    }
}
