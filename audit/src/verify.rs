//! The verifier: reads a chain as written and names the first line that breaks it.

use crate::chain::{GENESIS, line_hash};
use crate::line::{Body, Line};
use crate::sign::{CheckpointKeys, checkpoint_message};

/// What a chain that verified holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The writer (`None` for an empty chain).
    pub writer: Option<String>,
    /// Lines read.
    pub lines: usize,
    /// Of which records.
    pub records: usize,
    /// Of which signed checkpoints.
    pub checkpoints: usize,
    /// The seq of the last line.
    pub last_seq: u64,
    /// The seq the last checkpoint covers (everything up to it is signed).
    pub signed_through: Option<u64>,
    /// Lines after the last checkpoint: linked, but not yet signed, so their deletion from the
    /// end of the file could not be told.
    pub unsigned_tail: usize,
    /// Torn lines the writer set aside after a crash: (seq of the `recovered` line, file).
    pub recovered: Vec<(u64, String)>,
}

/// The first thing wrong with a chain, with the line (1-based) and seq it is found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    /// A line that is not an audit line at all.
    #[error("line {line}: not an audit line ({why}): edited or damaged")]
    Malformed {
        /// The line.
        line: usize,
        /// The parse error.
        why: String,
    },
    /// A line of another writer inside this chain.
    #[error("line {line} (seq {seq}): written by {found:?} inside the chain of {expected:?}")]
    WrongWriter {
        /// The line.
        line: usize,
        /// Its seq.
        seq: u64,
        /// The chain's writer.
        expected: String,
        /// The line's.
        found: String,
    },
    /// A line changed after it was written: its hash no longer matches the next line's `prev`.
    #[error(
        "line {line} (seq {seq}) was edited: its hash does not match the prev of line {next_line}"
    )]
    Edited {
        /// The edited line.
        line: usize,
        /// Its seq.
        seq: u64,
        /// The line whose `prev` no longer matches.
        next_line: usize,
    },
    /// Lines are missing before this one: its seq skips some that appear nowhere.
    #[error(
        "records deleted before line {line}: seq {first_missing}..={last_missing} missing (line {line} has seq {seq})"
    )]
    Deleted {
        /// The line after the gap.
        line: usize,
        /// Its seq.
        seq: u64,
        /// The first missing seq.
        first_missing: u64,
        /// The last missing seq.
        last_missing: u64,
    },
    /// Lines are out of order.
    #[error("line {line} (seq {seq}) is out of order: seq {expected} belongs here{}", found_at.map(|l| format!(" and is found at line {l}")).unwrap_or_default())]
    Reordered {
        /// The first line out of place.
        line: usize,
        /// Its seq.
        seq: u64,
        /// The seq that should be here.
        expected: u64,
        /// Where that seq is, if it is in the file.
        found_at: Option<usize>,
    },
    /// A checkpoint that does not hold: wrong coverage, or a signature that does not verify
    /// with the published keys.
    #[error("line {line} (seq {seq}): bad checkpoint: {why}")]
    BadCheckpoint {
        /// The checkpoint's line.
        line: usize,
        /// Its seq.
        seq: u64,
        /// What is wrong.
        why: String,
    },
}

impl Tamper {
    /// The (1-based) line named.
    pub fn line(&self) -> usize {
        match self {
            Tamper::Malformed { line, .. }
            | Tamper::WrongWriter { line, .. }
            | Tamper::Edited { line, .. }
            | Tamper::Deleted { line, .. }
            | Tamper::Reordered { line, .. }
            | Tamper::BadCheckpoint { line, .. } => *line,
        }
    }

    /// The seq of the line named (`None` when it could not be read).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Tamper::Malformed { .. } => None,
            Tamper::WrongWriter { seq, .. }
            | Tamper::Edited { seq, .. }
            | Tamper::Deleted { seq, .. }
            | Tamper::Reordered { seq, .. }
            | Tamper::BadCheckpoint { seq, .. } => Some(*seq),
        }
    }
}

/// Verifies one writer's chain (the file's text) against the published `keys`.
pub fn verify<K: CheckpointKeys + ?Sized>(text: &str, keys: &K) -> Result<Report, Tamper> {
    let raw: Vec<&str> = text.split_terminator('\n').collect();
    let mut lines = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let line: Line = serde_json::from_str(r).map_err(|e| Tamper::Malformed {
            line: i + 1,
            why: e.to_string(),
        })?;
        lines.push(line);
    }
    let hashes: Vec<String> = raw.iter().map(|r| line_hash(r.as_bytes())).collect();
    let mut report = Report {
        writer: lines.first().map(|l| l.writer.clone()),
        lines: lines.len(),
        ..Report::default()
    };
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        let writer = report.writer.as_deref().unwrap_or_default();
        if line.writer != writer {
            return Err(Tamper::WrongWriter {
                line: number,
                seq: line.seq,
                expected: writer.into(),
                found: line.writer.clone(),
            });
        }
        let expected = if i == 0 { 1 } else { lines[i - 1].seq + 1 };
        if line.seq != expected {
            let found_at = lines[i + 1..]
                .iter()
                .position(|l| l.seq == expected)
                .map(|p| number + 1 + p);
            return Err(if line.seq < expected || found_at.is_some() {
                Tamper::Reordered {
                    line: number,
                    seq: line.seq,
                    expected,
                    found_at,
                }
            } else {
                Tamper::Deleted {
                    line: number,
                    seq: line.seq,
                    first_missing: expected,
                    last_missing: line.seq - 1,
                }
            });
        }
        let prev = if i == 0 {
            GENESIS
        } else {
            hashes[i - 1].as_str()
        };
        if line.prev != prev {
            if i == 0 {
                // The first line claims a predecessor: what came before it was cut off.
                return Err(Tamper::Deleted {
                    line: number,
                    seq: line.seq,
                    first_missing: 0,
                    last_missing: 0,
                });
            }
            // A prev naming a line further down means lines were moved.
            if let Some(p) = hashes[i + 1..].iter().position(|h| *h == line.prev) {
                return Err(Tamper::Reordered {
                    line: number,
                    seq: line.seq,
                    expected: lines[i + 1 + p].seq + 1,
                    found_at: Some(number + 1 + p),
                });
            }
            return Err(Tamper::Edited {
                line: i,
                seq: lines[i - 1].seq,
                next_line: number,
            });
        }
        match &line.body {
            Body::Record { .. } => {
                report.records += 1;
                report.unsigned_tail += 1;
            }
            Body::Recovered { file, .. } => {
                report.recovered.push((line.seq, file.clone()));
                report.unsigned_tail += 1;
            }
            Body::Checkpoint {
                covers,
                hash,
                signature,
            } => {
                let bad = |why: String| Tamper::BadCheckpoint {
                    line: number,
                    seq: line.seq,
                    why,
                };
                if i == 0 || *covers != lines[i - 1].seq || *hash != line.prev {
                    return Err(bad(format!(
                        "it claims to cover seq {covers} with hash {hash}, but follows seq {}",
                        if i == 0 { 0 } else { lines[i - 1].seq }
                    )));
                }
                keys.verify(&checkpoint_message(writer, *covers, hash), signature)
                    .map_err(|e| bad(e.to_string()))?;
                report.checkpoints += 1;
                report.signed_through = Some(*covers);
                report.unsigned_tail = 0;
            }
        }
        report.last_seq = line.seq;
    }
    Ok(report)
}
