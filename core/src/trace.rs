//! A run's trace context (W3C Trace Context `traceparent`) and the milestones its worker
//! reports, so that one trace shows a Dispatch from `kubectl apply` to the agent's commit.
//!
//! Whoever creates a Dispatch may start its trace by setting [`ANNOTATION`] (the CLI does);
//! otherwise the trace is the Dispatch's own, its id the object's UID. The run's root span has
//! an id derived from the UID ([`span_id`]), so every reconcile, on any replica and after any
//! restart, hangs its spans under the same parent, and the worker gets it as [`ENV`].
//!
//! The value is read strictly: anything but a version-00 `traceparent` with non-zero ids is
//! ignored (the operator then starts the trace itself), so a hostile annotation can at worst
//! name a trace, never smuggle text into one.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The Dispatch annotation that carries the trace the run belongs to.
pub const ANNOTATION: &str = "vexa.ai/traceparent";

/// The variable the worker container gets its run's context in (the name OpenTelemetry's
/// environment-carrier convention uses).
pub const ENV: &str = "TRACEPARENT";

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's sampling decision (flag bit 0): a trace not sampled is not exported.
    pub sampled: bool,
}

/// Why a `traceparent` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("a traceparent is 55 characters, `00-<32 hex>-<16 hex>-<2 hex>`; this one has {0}")]
    Length(usize),
    #[error("only traceparent version 00 is understood")]
    Version,
    #[error("a traceparent's fields are lowercase hexadecimal separated by `-`")]
    Syntax,
    #[error("an all-zero trace id or span id is invalid")]
    Zero,
}

impl TraceParent {
    /// Reads a version-00 `traceparent`, strictly (no whitespace, lowercase only).
    pub fn parse(text: &str) -> Result<Self, TraceParentError> {
        if text.len() != 55 {
            return Err(TraceParentError::Length(text.len()));
        }
        if !text.is_ascii() {
            return Err(TraceParentError::Syntax);
        }
        let bytes = text.as_bytes();
        if [2, 35, 52].iter().any(|&i| bytes[i] != b'-') {
            return Err(TraceParentError::Syntax);
        }
        let field = |from: usize, to: usize| hex(&text[from..to]);
        let version = field(0, 2).ok_or(TraceParentError::Syntax)?;
        if version != [0] {
            return Err(TraceParentError::Version);
        }
        let trace: [u8; 16] = field(3, 35)
            .and_then(|v| v.try_into().ok())
            .ok_or(TraceParentError::Syntax)?;
        let span: [u8; 8] = field(36, 52)
            .and_then(|v| v.try_into().ok())
            .ok_or(TraceParentError::Syntax)?;
        let flags = field(53, 55).ok_or(TraceParentError::Syntax)?[0];
        if trace == [0; 16] || span == [0; 8] {
            return Err(TraceParentError::Zero);
        }
        Ok(Self {
            trace_id: trace,
            span_id: span,
            sampled: flags & 1 == 1,
        })
    }

    /// A context with fresh random ids (sampled), or `None` when the system has no randomness.
    pub fn random() -> Option<Self> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).ok()?;
        let trace_id: [u8; 16] = bytes[..16].try_into().ok()?;
        let span_id: [u8; 8] = bytes[16..].try_into().ok()?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            sampled: true,
        })
    }

    /// The trace id as 32 lowercase hex digits (how trace backends show and look it up).
    pub fn trace_hex(&self) -> String {
        to_hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// The trace id of a Dispatch nobody started a trace for: its UID's 128 bits.
pub fn trace_id_of_uid(uid: &str) -> Option<[u8; 16]> {
    let digits: String = uid.chars().filter(|c| *c != '-').collect();
    if digits.len() != 32 {
        return None;
    }
    hex(&digits.to_ascii_lowercase())
        .and_then(|v| v.try_into().ok())
        .filter(|id| *id != [0; 16])
}

/// The span id of the span `name` of the run whose Dispatch has `uid`: the same on every
/// replica and after every restart, never zero.
pub fn span_id(uid: &str, name: &str) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(uid.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// The name of a run's root span (the one [`ENV`] names as the parent).
pub const ROOT_SPAN: &str = "dispatch";

/// The context a run's spans belong to: the caller's trace when `annotation` is a valid
/// `traceparent`, else the UID's; the span id is the run's root span. `None` without a UID.
/// The caller's own span id is returned beside it: the root span's parent.
pub fn run_context(uid: &str, annotation: Option<&str>) -> Option<(TraceParent, Option<[u8; 8]>)> {
    let root = span_id(uid, ROOT_SPAN);
    match annotation.map(TraceParent::parse) {
        Some(Ok(caller)) => Some((
            TraceParent {
                span_id: root,
                ..caller
            },
            Some(caller.span_id),
        )),
        _ => Some((
            TraceParent {
                trace_id: trace_id_of_uid(uid)?,
                span_id: root,
                sampled: true,
            },
            None,
        )),
    }
}

/// When the worker reached each step of the run's first turn, in milliseconds since the Unix
/// epoch by its clock. Only times: never prompts, replies or paths.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Milestones {
    /// Workspaces prepared, agent reached: waiting for the first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i64>,
    /// The first turn began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<i64>,
    /// The agent's first event of that turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_event: Option<i64>,
    /// The agent finished the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<i64>,
    /// The turn's changes were committed (absent: nothing to commit, or no rw workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<i64>,
}

/// Now, in milliseconds since the Unix epoch (a milestone's unit).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time a milestone names; a negative one is no time at all.
pub fn time_of_ms(ms: i64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UID: &str = "6f1c2a34-95b1-4d7e-8a4f-0c9e2b7d1a55";

    #[test]
    fn a_valid_traceparent_reads_and_writes_back() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert!(tp.sampled);
        assert_eq!(tp.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.to_string(), VALID);
        let not_sampled = VALID.replace("-01", "-00");
        assert!(!TraceParent::parse(&not_sampled).unwrap().sampled);
    }

    #[rstest]
    #[case::empty("")]
    #[case::uppercase("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")]
    #[case::zero_trace("00-00000000000000000000000000000000-00f067aa0ba902b7-01")]
    #[case::zero_span("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")]
    #[case::version_ff("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    #[case::trailing_text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nX-Injected: 1")]
    #[case::spaces(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")]
    #[case::wrong_separator("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    #[case::sign_in_hex("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    #[case::multibyte("00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-0")]
    fn hostile_or_malformed_values_are_refused(#[case] text: &str) {
        assert!(TraceParent::parse(text).is_err(), "{text:?} was accepted");
    }

    #[test]
    fn without_a_caller_the_trace_is_the_uids_and_the_root_is_fixed() {
        let (ctx, parent) = run_context(UID, None).unwrap();
        assert_eq!(ctx.trace_hex(), "6f1c2a3495b14d7e8a4f0c9e2b7d1a55");
        assert_eq!(ctx.span_id, span_id(UID, ROOT_SPAN));
        assert_eq!(parent, None);
        // A bad annotation is the same as none.
        assert_eq!(run_context(UID, Some("garbage")).unwrap(), (ctx, None));
        assert_eq!(run_context("not-a-uid", None), None);
    }

    #[test]
    fn a_callers_trace_is_joined_under_its_span() {
        let (ctx, parent) = run_context(UID, Some(VALID)).unwrap();
        assert_eq!(ctx.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id, span_id(UID, ROOT_SPAN));
        assert_eq!(
            parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
    }

    #[test]
    fn span_ids_differ_by_run_and_by_name() {
        let a = span_id(UID, "pod scheduled");
        assert_eq!(a, span_id(UID, "pod scheduled"));
        assert_ne!(a, span_id(UID, "worker ready"));
        assert_ne!(a, span_id("another-uid", "pod scheduled"));
    }

    #[test]
    fn a_random_context_is_valid() {
        let tp = TraceParent::random().unwrap();
        assert_eq!(TraceParent::parse(&tp.to_string()).unwrap(), tp);
    }
}
