//! The writer: one append-only file per writer, each line synced before `append` returns.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::chain::{GENESIS, line_hash};
use crate::line::{Body, Effect, Event, Line};
use crate::sign::{Signer, checkpoint_message};

/// Records between two checkpoints, unless the writer says otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 64;

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed (full disk, permissions, a missing volume).
    #[error("the audit log {path} cannot be {action}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done (`read`, `written`, …).
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A complete line of the file is not an audit line of this writer: the chain is broken
    /// and the writer will not continue it blindly.
    #[error(
        "the audit log {path} is damaged at line {line}: {why}; run `kubectl vexa audit verify \
         --file` on it, keep it as evidence, and move it aside to start a new chain"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Its 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A writer name that is not a plain file name.
    #[error("{0:?} is not a writer name (lowercase letters, digits and '-')")]
    BadWriter(String),
    /// An earlier write failed part-way; the log must be reopened (which recovers the torn
    /// line) before it takes more.
    #[error("an earlier write to the audit log {0} failed; it takes no more lines until reopened")]
    Poisoned(PathBuf),
    /// The signer could not sign a checkpoint (no key yet); the records stay, unsigned.
    #[error("the audit log's checkpoint could not be signed: {0}")]
    Sign(String),
    /// A line could not be serialized (a bug).
    #[error("an audit line could not be serialized: {0}")]
    Serde(#[from] serde_json::Error),
}

/// The file of `writer`'s chain.
pub fn file_name(writer: &str) -> String {
    format!("{writer}.jsonl")
}

/// One writer's chain, open for appending.
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    writer: String,
    file: File,
    seq: u64,
    prev: String,
    /// (dispatch uid, once key) of every record in the file.
    seen: HashSet<(String, String)>,
    signer: Option<Box<dyn Signer>>,
    every: u64,
    since_checkpoint: u64,
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_owned();
    move |source| LogError::Io {
        path,
        action,
        source,
    }
}

impl AuditLog {
    /// Opens (or creates) `<dir>/<writer>.jsonl` and continues its chain: the next seq and
    /// prev come from its last line, the once-keys from all of them. A torn last line (a crash
    /// mid-write) is moved to a file of its own and a `recovered` line names it.
    pub fn open(dir: &Path, writer: &str) -> Result<Self, LogError> {
        if writer.is_empty()
            || !writer
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(LogError::BadWriter(writer.into()));
        }
        std::fs::create_dir_all(dir).map_err(io(dir, "created"))?;
        let path = dir.join(file_name(writer));
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io(&path, "read"))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, "read")(e)),
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let torn = bytes.split_off(complete);

        let mut log = AuditLog {
            dir: dir.to_owned(),
            file: OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io(&path, "opened for appending"))?,
            path,
            writer: writer.into(),
            seq: 0,
            prev: GENESIS.into(),
            seen: HashSet::new(),
            signer: None,
            every: DEFAULT_CHECKPOINT_EVERY,
            since_checkpoint: 0,
            poisoned: false,
        };
        // The new file's name must survive a crash too.
        sync_dir(dir)?;
        for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            log.take(i + 1, raw)?;
        }
        if !torn.is_empty() {
            log.recover(&torn, complete as u64)?;
        }
        Ok(log)
    }

    /// Reads back one complete line of the file.
    fn take(&mut self, number: usize, raw: &[u8]) -> Result<(), LogError> {
        if raw.is_empty() {
            // The split leaves one empty piece after the final newline.
            return Ok(());
        }
        let damaged = |why: String| LogError::Damaged {
            path: self.path.clone(),
            line: number,
            why,
        };
        let line: Line =
            serde_json::from_slice(raw).map_err(|e| damaged(format!("not an audit line ({e})")))?;
        if line.writer != self.writer {
            return Err(damaged(format!(
                "written by {:?}, not {:?}",
                line.writer, self.writer
            )));
        }
        self.seq = line.seq;
        self.prev = line_hash(raw);
        match line.body {
            Body::Record { effect, event } => {
                self.since_checkpoint += 1;
                if let Some(key) = event.once_key() {
                    self.seen.insert((effect.dispatch.uid, key));
                }
            }
            Body::Checkpoint { .. } => self.since_checkpoint = 0,
            Body::Recovered { .. } => {}
        }
        Ok(())
    }

    /// Moves a torn last line aside and records that in the chain.
    fn recover(&mut self, torn: &[u8], offset: u64) -> Result<(), LogError> {
        let name = format!("{}.torn-at-{offset}", self.writer);
        let aside = self.dir.join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&aside)
            .map_err(io(&aside, "written (torn line set aside)"))?;
        f.write_all(torn).map_err(io(&aside, "written"))?;
        f.sync_all().map_err(io(&aside, "synced"))?;
        sync_dir(&self.dir)?;
        // Only now cut it from the chain's file.
        self.file
            .set_len(offset)
            .map_err(io(&self.path, "truncated"))?;
        self.file.sync_all().map_err(io(&self.path, "synced"))?;
        self.write(Body::Recovered {
            file: name,
            bytes: torn.len() as u64,
            sha256: line_hash(torn),
        })?;
        Ok(())
    }

    /// Signs a checkpoint every `every` records (and when asked) with `signer`.
    pub fn with_signer(mut self, signer: Box<dyn Signer>, every: u64) -> Self {
        self.set_signer(signer, every);
        self
    }

    /// [`Self::with_signer`] on an open log (the operator's keys load after it opens).
    pub fn set_signer(&mut self, signer: Box<dyn Signer>, every: u64) {
        self.signer = Some(signer);
        self.every = every.max(1);
    }

    /// The file of this chain.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq of the last line written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether `event` was already recorded for the dispatch with `uid`.
    pub fn has(&self, uid: &str, event: &Event) -> bool {
        event
            .once_key()
            .is_some_and(|k| self.seen.contains(&(uid.to_owned(), k)))
    }

    /// Appends a record and syncs it; returns its seq. A checkpoint follows when one is due.
    pub fn append(&mut self, effect: &Effect, event: Event) -> Result<u64, LogError> {
        let key = event.once_key();
        let uid = effect.dispatch.uid.clone();
        let seq = self.write(Body::Record {
            effect: effect.clone(),
            event,
        })?;
        if let Some(key) = key {
            self.seen.insert((uid, key));
        }
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.every {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// [`Self::append`] unless this event of this dispatch is already in the log (see
    /// [`Event::once_key`]); `None` then.
    pub fn append_once(&mut self, effect: &Effect, event: Event) -> Result<Option<u64>, LogError> {
        if self.has(&effect.dispatch.uid, &event) {
            return Ok(None);
        }
        self.append(effect, event).map(Some)
    }

    /// Signs the chain so far, unless there is no signer or nothing new to sign.
    pub fn checkpoint(&mut self) -> Result<Option<u64>, LogError> {
        if self.since_checkpoint == 0 {
            return Ok(None);
        }
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let signature = signer
            .sign(&checkpoint_message(&self.writer, self.seq, &self.prev))
            .map_err(LogError::Sign)?;
        let seq = self.write(Body::Checkpoint {
            covers: self.seq,
            hash: self.prev.clone(),
            signature,
        })?;
        self.since_checkpoint = 0;
        Ok(Some(seq))
    }

    /// Writes one line in one `write` on the append-only file and syncs it.
    fn write(&mut self, body: Body) -> Result<u64, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned(self.path.clone()));
        }
        let line = Line {
            seq: self.seq + 1,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            writer: self.writer.clone(),
            prev: self.prev.clone(),
            body,
        };
        // Compact JSON escapes newlines inside strings: one line, always.
        let mut bytes = serde_json::to_vec(&line)?;
        let hash = line_hash(&bytes);
        bytes.push(b'\n');
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.poisoned = true;
            return Err(io(&self.path, "written")(e));
        }
        self.seq = line.seq;
        self.prev = hash;
        Ok(line.seq)
    }
}

/// Syncs a folder, so the files created in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "synced"))
}
