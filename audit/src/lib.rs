//! The audit log (SPEC §5.6): every effect of a dispatch resolved to (subject · launcher ·
//! scope), written so that an edit, a deletion or a reordering is detected and named.
//!
//! # Shape
//! One file per writer (`<writer>.jsonl`: the operator, later the gateway), each its own chain
//! of JSON lines. Every line carries its `seq` (from 1, per writer) and `prev`, the SHA-256 of
//! the previous line's exact bytes (without its newline; [`GENESIS`] for the first line). The
//! hash is taken over the bytes as written, so a verifier needs no canonical JSON: it hashes
//! what it reads. Every [`DEFAULT_CHECKPOINT_EVERY`] records (and on a clean shutdown) the
//! writer appends a checkpoint line signed by a [`Signer`] (the operator's token key set, whose
//! public half it publishes as a JWKS): the signature covers the writer, the seq and the hash
//! of the last line before it, so every line up to there is fixed by a key the log's holder
//! does not have to be trusted with.
//!
//! # What is detected
//! [`verify`] names the first bad line: an edit (its hash no longer matches the next line's
//! `prev`), a deletion (a gap in `seq`), a reordering (a `seq` that goes back, or one that
//! skips ahead to a line found later), a checkpoint whose signature is bad or whose key is
//! unknown. Lines after the last checkpoint are reported as the unsigned tail: a deletion of
//! that tail, or a rewrite of the whole file by someone holding no key, cannot be proven from
//! the file alone, only bounded by the checkpoints.
//!
//! # Crash safety
//! [`AuditLog::append`] writes one line with a single `write` on a file opened append-only and
//! syncs it before it returns, so a caller can record before it acts. A crash can leave a torn
//! last line (no newline): [`AuditLog::open`] moves those bytes to a file of their own, cuts
//! them from the chain and appends a `recovered` line naming that file and its SHA-256.
//!
//! # Recording once
//! A reconcile runs many times; [`AuditLog::append_once`] records an event for a dispatch only
//! once, keyed by the dispatch's UID and [`Event::once_key`] (its kind, plus what makes two
//! events of that kind different, e.g. a token's key and expiry). The keys are read back from
//! the file when it is opened, so a restart does not record an event again.

mod chain;
mod export;
mod line;
mod log;
mod sign;
mod verify;

pub use chain::{GENESIS, line_hash};
pub use export::{DispatchAudit, Export, read_chains, records_of};
pub use line::{Body, DispatchRef, Effect, Event, Line, ScopeRecord, WorkspaceGrant};
pub use log::{AuditLog, DEFAULT_CHECKPOINT_EVERY, LogError, file_name};
pub use sign::{CheckpointKeys, KeyError, Signer, checkpoint_message};
pub use verify::{Report, Tamper, verify};
pub use vexa_policy::token::{DetachedSignature, Jwks};

#[cfg(test)]
mod tests;
