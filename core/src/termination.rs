//! The termination message: how the worker tells the operator why its run ended and what it
//! did to git. The worker writes it to the container's `terminationMessagePath`; the operator
//! reads it from the pod's status.
//!
//! It is one JSON document, at most [`MAX_BYTES`] long (Kubernetes keeps no more), for example
//! `{"reason":"idle_timeout","provenance":[{"workspace":"notes","base":"…","result":"…"}]}`.
//! [`Termination::parse`] also accepts plain text: what an older worker wrote (a bare stop
//! reason or an error), and the log tail Kubernetes substitutes when a worker died without
//! writing anything.

use serde::{Deserialize, Serialize};

use crate::lifecycle::StopReason;
use crate::model::ModelUsage;
use crate::trace::Milestones;

/// The most Kubernetes keeps of a termination message, in bytes.
pub const MAX_BYTES: usize = 4096;

/// Marks a message shortened to fit [`MAX_BYTES`].
pub const TRUNCATED: &str = "…";

/// Why the run ended and what it left in git, as the worker reports it.
// Unknown fields are refused so that a JSON log line (the log tail Kubernetes falls back to)
// is read as plain text, not as an empty report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Termination {
    /// Why the run ended, when the worker can tell: `idle_timeout` (no turn came in time),
    /// `stopped` (a stop turn), `failed`. Absent after SIGTERM: the operator knows whether that
    /// was a stop request or the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StopReason>,
    /// Detail for a person: what failed and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One entry per rw workspace the worker prepared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<CommitRange>,
    /// Model tokens the run used through the brokered credential, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ModelUsage>,
    /// When the worker reached each step of the first turn, for the run's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestones: Option<Milestones>,
    /// What the worker wrote to the output stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
}

/// What a run wrote to its output stream: entries, and their bytes (the events' JSON).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub events: u64,
    pub bytes: u64,
}

/// What git says a run did to one workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommitRange {
    /// The Workspace object's name.
    pub workspace: String,
    /// HEAD when the worker had prepared the workspace, before turn `t0` (none: no commit
    /// yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// HEAD when the worker exited; equal to `base` when the run committed nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

impl Termination {
    /// The document as JSON of at most [`MAX_BYTES`] bytes, always valid: a message too long
    /// is cut (at a character boundary, ending in [`TRUNCATED`]); should the provenance alone
    /// not fit, entries are left out from the end.
    pub fn encode(&self) -> String {
        let text = to_json(self);
        if text.len() <= MAX_BYTES {
            return text;
        }
        let mut doc = self.clone();
        if let Some(full) = self.message.as_deref() {
            // The JSON grows with the part of the message kept (escapes make it grow faster
            // than the text): find the longest prefix, cut at a character, that fits.
            let starts: Vec<usize> = full.char_indices().map(|(i, _)| i).collect();
            let fitting = starts
                .partition_point(|&keep| to_json(&shortened(&doc, full, keep)).len() <= MAX_BYTES);
            let keep = fitting.checked_sub(1).map_or(0, |i| starts[i]);
            doc = shortened(&doc, full, keep);
        }
        let mut text = to_json(&doc);
        while text.len() > MAX_BYTES && doc.provenance.pop().is_some() {
            text = to_json(&doc);
        }
        text
    }

    /// Reads a termination message: the JSON document, or else plain text, where a bare stop
    /// reason (`idle_timeout`, `stopped`) is that reason and anything else is the message.
    pub fn parse(text: &str) -> Self {
        let trimmed = text.trim();
        if trimmed.starts_with('{')
            && let Ok(doc) = serde_json::from_str(trimmed)
        {
            return doc;
        }
        match StopReason::from_word(trimmed) {
            Some(reason) => Self {
                reason: Some(reason),
                ..Self::default()
            },
            None => Self {
                message: (!trimmed.is_empty()).then(|| text.to_owned()),
                ..Self::default()
            },
        }
    }
}

/// Serialising strings, an enum and lists of them cannot fail; should it, the empty message
/// reads as "no report" and the operator goes by the exit code.
fn to_json(doc: &Termination) -> String {
    serde_json::to_string(doc).unwrap_or_default()
}

/// `doc` with the first `keep` bytes of `full` as its message, marked as cut.
fn shortened(doc: &Termination, full: &str, keep: usize) -> Termination {
    Termination {
        message: Some(format!("{}{TRUNCATED}", &full[..keep])),
        ..doc.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn range(i: usize) -> CommitRange {
        CommitRange {
            workspace: format!("workspace-{i}"),
            base: Some(format!("{i:040x}")),
            result: Some(format!("{:040x}", i + 1)),
        }
    }

    #[test]
    fn a_small_document_is_plain_json_and_round_trips() {
        let doc = Termination {
            reason: Some(StopReason::IdleTimeout),
            message: None,
            provenance: vec![range(1)],
            ..Termination::default()
        };
        let text = doc.encode();
        assert_eq!(
            text,
            format!(
                r#"{{"reason":"idle_timeout","provenance":[{{"workspace":"workspace-1","base":"{:040x}","result":"{:040x}"}}]}}"#,
                1, 2
            )
        );
        assert_eq!(Termination::parse(&text), doc);
    }

    /// Quotes, newlines, control characters and multi-byte characters: escaping makes the
    /// JSON longer than the text, and a cut must never split a character.
    #[rstest]
    #[case::ascii("x")]
    #[case::quotes("\"")]
    #[case::control("\u{1}")]
    #[case::newlines("line\n")]
    #[case::multibyte("é👋")]
    #[case::mixed("a\"b\\c\u{7}d é 👋\n")]
    fn a_long_message_is_cut_and_the_document_stays_valid(#[case] unit: &str) {
        let message = unit.repeat(10_240 / unit.len() + 1);
        let doc = Termination {
            reason: Some(StopReason::Failed),
            message: Some(message.clone()),
            provenance: (0..8).map(range).collect(),
            usage: Some(crate::ModelUsage {
                input_tokens: i64::MAX,
                output_tokens: i64::MAX,
                requests: i64::MAX,
            }),
            milestones: Some(crate::trace::Milestones {
                ready: Some(i64::MAX),
                turn: Some(i64::MAX),
                first_event: Some(i64::MAX),
                done: Some(i64::MAX),
                commit: Some(i64::MAX),
            }),
            published: Some(crate::Published {
                events: u64::MAX,
                bytes: u64::MAX,
            }),
        };
        let text = doc.encode();
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let back: Termination = serde_json::from_str(&text).unwrap();
        assert_eq!(back.reason, Some(StopReason::Failed));
        assert_eq!(
            back.provenance, doc.provenance,
            "the message gives way first"
        );
        assert_eq!(back.usage, doc.usage);
        assert_eq!(back.milestones, doc.milestones);
        assert_eq!(back.published, doc.published);
        let cut = back.message.unwrap();
        let kept = cut.strip_suffix(TRUNCATED).unwrap();
        assert!(message.starts_with(kept));
        assert!(!kept.is_empty());
    }

    #[test]
    fn provenance_that_cannot_fit_is_left_out_from_the_end() {
        let doc = Termination {
            reason: Some(StopReason::Stopped),
            message: Some("m".repeat(10_000)),
            provenance: (0..100).map(range).collect(),
            ..Termination::default()
        };
        let text = doc.encode();
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let back = Termination::parse(&text);
        assert_eq!(back.reason, Some(StopReason::Stopped));
        assert!(!back.provenance.is_empty());
        assert_eq!(back.provenance[..], doc.provenance[..back.provenance.len()]);
    }

    #[rstest]
    #[case::idle("idle_timeout", Some(StopReason::IdleTimeout), None)]
    #[case::stopped("stopped\n", Some(StopReason::Stopped), None)]
    #[case::error("REDIS_URL: bad", None, Some("REDIS_URL: bad"))]
    #[case::empty("", None, None)]
    #[case::not_ours(
        r#"{"level":"ERROR","fields":{"message":"boom"}}"#,
        None,
        Some(r#"{"level":"ERROR","fields":{"message":"boom"}}"#)
    )]
    #[case::log_tail("{\"a\":1}\n{\"b\":2}", None, Some("{\"a\":1}\n{\"b\":2}"))]
    fn plain_text_from_an_older_worker_or_the_log_tail(
        #[case] text: &str,
        #[case] reason: Option<StopReason>,
        #[case] message: Option<&str>,
    ) {
        let t = Termination::parse(text);
        assert_eq!(t.reason, reason);
        assert_eq!(t.message.as_deref(), message);
        assert!(t.provenance.is_empty());
    }
}
