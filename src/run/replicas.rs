//! Independent replica chains of one run, one per process: their seeds, how a chain travels
//! between processes, and the report of all of them analysed together.

use serde::{Deserialize, Serialize};

use super::report::report_from;
use super::{Registry, SampleReport, SampleSpec, sample_data};
use crate::control::{Observer, StopToken};
use crate::diagnostics::{Verdict, diagnose};
use crate::error::{Error, Result};
use crate::kernel::{ChainRecord, MoveRows};
use crate::lattice::Lattice;
use crate::observable::Measurements;
use crate::parallel::Collective;
use crate::rng::splitmix64;

/// Separates the seeds of replica chains from other seeds derived from the user seed.
const REPLICA_SALT: u64 = 0x5245_504C_4943_4153;
/// The chain seed of replica `replica` of a run with seed `seed`: `seed` itself for replica
/// 0 (so that it is the chain a single process runs), a seed derived from both for the
/// others.
pub fn replica_seed(seed: u64, replica: usize) -> u64 {
    if replica == 0 {
        seed
    } else {
        splitmix64(splitmix64(seed ^ REPLICA_SALT) ^ replica as u64)
    }
}

/// Runs `spec` on every rank of `ranks` and combines all chains: rank r runs the run of
/// seed [`replica_seed`]`(spec.seed, r)` (its `chains` chains, the same thermalisation and
/// length), rank 0 gathers every chain's series and move history and returns the report of
/// all of them ([`combine_replicas`]); the other ranks return `None`. Every rank must make
/// the call. With one rank it is [`sample_with`](super::sample_with).
pub fn sample_replicas(
    spec: &SampleSpec,
    registry: &Registry,
    ranks: &dyn Collective,
    observer: &mut dyn Observer,
    stop: &StopToken,
) -> Result<Option<SampleReport>> {
    let own = SampleSpec {
        seed: replica_seed(spec.seed, ranks.rank()),
        ..spec.clone()
    };
    let data = sample_data(&own, registry, observer, stop, 0)?;
    if ranks.size() == 1 {
        return Ok(Some(data.report));
    }
    let gathered = ranks.gather_bytes(&encode_chains(&data.chains))?;
    if !ranks.is_root() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for (r, bytes) in gathered.iter().enumerate() {
        parts.extend(
            decode_chains(bytes, &spec.lattice)
                .map_err(|e| Error::Communication(format!("the chains of rank {r}: {e}")))?,
        );
    }
    let mut report = combine_replicas(spec, &parts)?;
    report.chains = data.report.chains;
    Ok(Some(report))
}

/// Several chains as bytes: a u64 count, then each chain as a u64 length and
/// [`encode_replica`]'s bytes.
fn encode_chains(chains: &[ReplicaChain]) -> Vec<u8> {
    let mut bytes = (chains.len() as u64).to_le_bytes().to_vec();
    for chain in chains {
        let encoded = encode_replica(chain);
        bytes.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&encoded);
    }
    bytes
}

/// Reads what [`encode_chains`] wrote.
fn decode_chains(bytes: &[u8], lattice: &Lattice) -> Result<Vec<ReplicaChain>> {
    let bad = |why: &str| Error::format("replica chains", why.to_string());
    let mut at = 0usize;
    let take_u64 = |at: &mut usize| -> Result<u64> {
        let word = bytes
            .get(*at..*at + 8)
            .ok_or_else(|| bad("the data ends early"))?;
        *at += 8;
        Ok(u64::from_le_bytes(word.try_into().unwrap_or_default()))
    };
    let count = take_u64(&mut at)?;
    let mut chains = Vec::new();
    for _ in 0..count {
        let len = usize::try_from(take_u64(&mut at)?).map_err(|_| bad("bad chain length"))?;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("the data ends early"))?;
        chains.push(decode_replica(&bytes[at..end], lattice)?);
        at = end;
    }
    if at != bytes.len() {
        return Err(bad("trailing bytes after the chains"));
    }
    Ok(chains)
}

/// One chain's share of a replica run: its move history, its measured series, its wall
/// seconds (thermalisation included) and whether it was stopped early.
pub struct ReplicaChain {
    /// The move history of the measured steps.
    pub record: ChainRecord,
    /// The measured series.
    pub measurements: Measurements,
    /// Wall seconds of the chain, thermalisation included.
    pub seconds: f64,
    /// True when the chain stopped before `spec.n` measured steps.
    pub interrupted: bool,
}

/// The report of independent chains of `spec` analysed together: every observable by the
/// Γ-method for replicas (Γ(t) of the fluctuations about the common mean, summed over
/// the chains), diagnostics over all the move histories (plus each
/// chain's own findings when its verdict is worse), `seconds` the longest chain's wall time
/// (they run side by side), `n` the shortest chain's measured steps.
pub fn combine_replicas(spec: &SampleSpec, chains: &[ReplicaChain]) -> Result<SampleReport> {
    let first = chains
        .first()
        .ok_or_else(|| Error::param("replicas", "no chains to combine"))?;
    let views: Vec<&Measurements> = chains.iter().map(|c| &c.measurements).collect();
    let summary = Measurements::summarise(&views)?;
    let mut record = first.record.clone();
    for chain in &chains[1..] {
        record.append(chain.record.clone())?;
    }
    let seconds = chains.iter().map(|c| c.seconds).fold(0.0, f64::max);
    let mut report = report_from(spec, &record, &summary, seconds)?;
    for (r, chain) in chains.iter().enumerate() {
        let own = diagnose(&chain.record);
        if own.verdict > report.diagnostics.verdict {
            report.diagnostics.verdict = own.verdict;
            report.verdict = own.verdict;
        }
        for mut finding in own.findings {
            if finding.severity > Verdict::Reliable
                && !report
                    .diagnostics
                    .findings
                    .iter()
                    .any(|f| f.code == finding.code)
            {
                finding.message = format!("chain {r}: {}", finding.message);
                report.diagnostics.findings.push(finding);
            }
        }
    }
    report.replicas = chains.len();
    report.n = chains.iter().map(|c| c.record.steps).min().unwrap_or(0);
    report.interrupted = chains.iter().any(|c| c.interrupted);
    Ok(report)
}

/// The header of an encoded replica chain; the numbers follow it in little-endian binary.
#[derive(Serialize, Deserialize)]
struct ReplicaHeader {
    names: Vec<String>,
    /// The move labels with their kinds, which the first number of a move row indexes.
    labels: Vec<(String, String)>,
    rows: usize,
    moves: usize,
    steps: usize,
    wall_seconds: f64,
    seconds: f64,
    interrupted: bool,
}

/// A chain's series and move history as bytes: a u64 header length, the JSON header, the
/// series column by column (f64), the moves ([`MoveRows`], f64) and the moves per step
/// (u32).
fn encode_replica(chain: &ReplicaChain) -> Vec<u8> {
    let m = &chain.measurements;
    let record = &chain.record;
    let moves = MoveRows::from_moves(&record.moves);
    let header = ReplicaHeader {
        names: m.names().to_vec(),
        labels: moves
            .labels
            .iter()
            .map(|(l, k)| (l.to_string(), k.clone()))
            .collect(),
        rows: m.len(),
        moves: record.moves.len(),
        steps: record.steps,
        wall_seconds: record.wall_seconds,
        seconds: chain.seconds,
        interrupted: chain.interrupted,
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut bytes = Vec::with_capacity(
        8 + header.len()
            + 8 * header_values(m.names().len(), m.len(), record.moves.len())
            + 4 * record.moves_per_step.len(),
    );
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for name in m.names() {
        for x in m.series(name).unwrap_or(&[]) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    for row in &moves.rows {
        for x in row {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    for k in &record.moves_per_step {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    bytes
}

/// The f64 values of an encoded chain with `names` series of `rows` values and `moves` moves.
fn header_values(names: usize, rows: usize, moves: usize) -> usize {
    names
        .saturating_mul(rows)
        .saturating_add(moves.saturating_mul(5))
}

/// Reads what [`encode_replica`] wrote.
fn decode_replica(bytes: &[u8], lattice: &Lattice) -> Result<ReplicaChain> {
    let bad = |why: &str| Error::format("replica chain", why.to_string());
    let take = |at: usize, len: usize| {
        bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| bad("the data ends early"))
    };
    let header_len = u64::from_le_bytes(take(0, 8)?.try_into().unwrap_or_default());
    let header_len = usize::try_from(header_len).map_err(|_| bad("bad header length"))?;
    let header: ReplicaHeader = serde_json::from_slice(take(8, header_len)?)
        .map_err(|e| Error::format("replica chain header", e.to_string()))?;
    let mut at = 8 + header_len;
    let values = header_values(header.names.len(), header.rows, header.moves);
    let numbers: Vec<f64> = take(at, values.saturating_mul(8))?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    at += values * 8;
    let per_step: Vec<u32> = take(at, header.steps.saturating_mul(4))?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    if at + header.steps * 4 != bytes.len() {
        return Err(bad("trailing bytes after the moves per step"));
    }
    let (series, moves) = numbers.split_at(header.names.len() * header.rows);
    let series: Vec<Vec<f64>> = if header.rows == 0 {
        vec![Vec::new(); header.names.len()]
    } else {
        series.chunks(header.rows).map(<[f64]>::to_vec).collect()
    };
    let measurements = Measurements::from_series(lattice, header.names, series)?;
    let rows = MoveRows {
        labels: header
            .labels
            .iter()
            .map(|(l, k)| (l.as_str().into(), k.clone()))
            .collect(),
        rows: moves
            .chunks_exact(5)
            .map(|r| [r[0], r[1], r[2], r[3], r[4]])
            .collect(),
    };
    let moves = rows.to_moves().map_err(|why| bad(&format!("move {why}")))?;
    let mut record = ChainRecord::from_moves(moves, per_step, header.steps, header.wall_seconds);
    record.interrupted = header.interrupted;
    Ok(ReplicaChain {
        record,
        measurements,
        seconds: header.seconds,
        interrupted: header.interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::SingleProcess;
    use crate::run::{ActionSpec, KernelSpec, sample};

    fn hmc_spec(seed: u64) -> SampleSpec {
        SampleSpec {
            lattice: Lattice::new(&[6, 6]).unwrap(),
            action: ActionSpec::Phi4 {
                beta: 0.537,
                lambda: 0.5,
            },
            kernel: KernelSpec::default(),
            n: 3000,
            therm: 200,
            thin: 1,
            seed,
            model: None,
            chains: 1,
        }
    }

    #[test]
    fn encoded_chains_decode_to_the_same_series_and_moves() {
        let spec = SampleSpec {
            chains: 2,
            ..hmc_spec(4)
        };
        let data = sample_data(&spec, Registry::builtin(), &mut (), &StopToken::new(), 0).unwrap();
        assert_eq!(data.chains.len(), 2);
        let bytes = encode_chains(&data.chains);
        let chains = decode_chains(&bytes, &spec.lattice).unwrap();
        assert_eq!(chains.len(), 2);
        for (chain, original) in chains.iter().zip(&data.chains) {
            let (m, o) = (&chain.measurements, &original.measurements);
            assert_eq!(m.names(), o.names());
            for name in o.names() {
                assert_eq!(m.series(name), o.series(name));
            }
            assert_eq!(chain.record.moves.len(), original.record.moves.len());
            for (a, b) in chain.record.moves.iter().zip(&original.record.moves) {
                assert_eq!(a.to_row(0).map(f64::to_bits), b.to_row(0).map(f64::to_bits));
                assert_eq!(a.kernel, b.kernel);
            }
            assert_eq!(chain.record.moves_per_step, original.record.moves_per_step);
            assert_eq!(chain.seconds, original.seconds);
        }
        // Cut or padded data is refused.
        assert!(decode_chains(&bytes[..bytes.len() - 1], &spec.lattice).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_chains(&longer, &spec.lattice).is_err());
    }

    #[test]
    fn replicas_combine_into_one_report_over_all_measurements() {
        let spec = hmc_spec(8);
        // One process: the replica run is the plain run, seed and all.
        let alone = sample_replicas(
            &spec,
            Registry::builtin(),
            &SingleProcess,
            &mut (),
            &StopToken::new(),
        )
        .unwrap()
        .unwrap();
        let plain = sample(&spec, &mut (), &StopToken::new()).unwrap();
        assert_eq!(alone.observables, plain.observables);
        assert_eq!(alone.replicas, 1);
        // Two chains: replica 0 is the plain chain, replica 1 another seed.
        assert_eq!(replica_seed(spec.seed, 0), spec.seed);
        assert_ne!(replica_seed(spec.seed, 1), spec.seed);
        let chains: Vec<ReplicaChain> = (0..2)
            .map(|r| {
                let own = SampleSpec {
                    seed: replica_seed(spec.seed, r),
                    ..spec.clone()
                };
                sample_data(&own, Registry::builtin(), &mut (), &StopToken::new(), 0)
                    .unwrap()
                    .chains
                    .remove(0)
            })
            .collect();
        let combined = combine_replicas(&spec, &chains).unwrap();
        assert_eq!(combined.replicas, 2);
        assert_eq!(combined.n, spec.n);
        // The mean is the mean over both chains' measurements.
        let pooled: Vec<f64> = chains
            .iter()
            .flat_map(|c| c.measurements.series("abs_m").unwrap().to_vec())
            .collect();
        let mean = pooled.iter().sum::<f64>() / pooled.len() as f64;
        assert!((combined.observables["abs_m"].mean - mean).abs() < 1e-12);
        let steps: usize = chains.iter().map(|c| c.record.steps).sum();
        assert_eq!(combined.diagnostics.steps, steps);
        assert!(combined.observables["abs_m"].err < plain.observables["abs_m"].err);
        assert!(combine_replicas(&spec, &[]).is_err());
        // The same two chains as an ensemble in one process: the same report.
        let ensemble = sample(
            &SampleSpec {
                chains: 2,
                ..spec.clone()
            },
            &mut (),
            &StopToken::new(),
        )
        .unwrap();
        assert_eq!(ensemble.observables, combined.observables);
        assert_eq!((ensemble.replicas, ensemble.chains), (2, 2));
    }
}
