//! The Transcript decision, pure: from the Transcript, which stream it may read, what reading
//! it found and `now`, its status (phase, segment count, last segment, digest, completion
//! time, conditions `Valid` and `Ready`) and the events of a change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vexa_crds::{Transcript, TranscriptPhase, TranscriptStatus};

use super::tally::Tally;
use crate::runtime::conditions::{ConditionType, Conditions};
use crate::runtime::events::Note;

/// The only streams a Transcript may name: a meeting's, of its own meeting.
pub const STREAM_PREFIX: &str = "tc:meeting:";

/// Which stream `t` reads, or why it may not: its `spec.stream` (default
/// `tc:meeting:<meetingId>`) must be `tc:meeting:` followed by its own meeting id or session
/// uid. Anything else (a dispatch's `unit:…:out`, another meeting's stream) would let whoever
/// writes the Transcript read, count and fire on data that is not theirs.
pub fn stream_of(t: &Transcript) -> Result<String, String> {
    let meeting = &t.spec.meeting;
    let default = format!("{STREAM_PREFIX}{}", meeting.meeting_id);
    let Some(stream) = &t.spec.stream else {
        return Ok(default);
    };
    let own = stream
        .strip_prefix(STREAM_PREFIX)
        .is_some_and(|id| id == meeting.meeting_id || Some(id) == meeting.session_uid.as_deref());
    if own {
        Ok(stream.clone())
    } else {
        Err(format!(
            "spec.stream {stream:?} is not this meeting's stream: it must be {default:?}{}",
            meeting
                .session_uid
                .as_ref()
                .map_or_else(String::new, |s| format!(" or \"{STREAM_PREFIX}{s}\""))
        ))
    }
}

/// What the reconcile found before deciding.
#[derive(Debug, Clone)]
pub enum Observed {
    /// `spec.stream` names a stream this Transcript may not read.
    StreamNotAllowed(String),
    /// An older Transcript (`namespace/name`) reads the same stream.
    StreamClaimed {
        /// The stream.
        stream: String,
        /// The Transcript that reads it.
        by: String,
    },
    /// The stream was read up to the tally's cursor; `error` says why the last read failed.
    Read {
        /// The stream.
        stream: String,
        /// The transcript as read so far.
        tally: Box<Tally>,
        /// Refusals since the last decision, by reason (for one aggregated event).
        new_refusals: Vec<(&'static str, u64)>,
        /// A Redis failure of this read.
        error: Option<String>,
    },
    /// The Transcript already completed: its status is final and nothing is read.
    Final,
}

/// What the reconcile should do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (`None`: unchanged).
    pub status: Option<TranscriptStatus>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Whether it completed in this reconcile (what fires `transcript.completed`).
    pub completed_now: bool,
    /// Whether to read again later (still live).
    pub live: bool,
}

/// Decides `t`'s status from `seen` at `now`.
pub fn decide(t: &Transcript, seen: &Observed, now: &Time) -> Decision {
    let old = t.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = t.metadata.generation;
    let mut notes = Vec::new();
    let mut completed_now = false;
    let mut live = false;
    {
        let mut c = Conditions::new(&mut status.conditions, t.metadata.generation, now);
        match seen {
            Observed::Final => {}
            Observed::StreamNotAllowed(why) => {
                c.set(ConditionType::Valid, false, "StreamNotAllowed", why);
                c.ready(
                    false,
                    "StreamNotAllowed",
                    "the transcript's stream is not read",
                );
            }
            Observed::StreamClaimed { stream, by } => {
                let why = format!(
                    "stream {stream:?} is already read by the older Transcript {by}; one meeting has one Transcript"
                );
                c.set(ConditionType::Valid, false, "StreamClaimed", &why);
                c.ready(
                    false,
                    "StreamClaimed",
                    "the transcript's stream is not read",
                );
            }
            Observed::Read {
                stream,
                tally,
                new_refusals,
                error,
            } => {
                c.set(
                    ConditionType::Valid,
                    true,
                    "StreamAllowed",
                    &format!("segments are read from {stream:?}"),
                );
                match error {
                    Some(e) => c.ready(
                        false,
                        "RedisUnavailable",
                        format!("reading {stream:?} failed (retried): {e}"),
                    ),
                    None if tally.ended => c.ready(
                        true,
                        "Completed",
                        format!("the session ended after {} segments", tally.segment_count),
                    ),
                    None => c.ready(
                        true,
                        "Live",
                        format!("{} segments so far", tally.segment_count),
                    ),
                }
                status.segment_count = Some(i64::try_from(tally.segment_count).unwrap_or(i64::MAX));
                status.last_segment_id.clone_from(&tally.last_segment_id);
                status.digest = Some(tally.digest());
                if tally.ended {
                    status.phase = Some(TranscriptPhase::Completed);
                    if status.completion_time.is_none() {
                        status.completion_time = Some(now.clone());
                        completed_now = true;
                        notes.push(Note::normal(
                            "Completed",
                            Some(format!(
                                "the session ended: {} segments, digest {}",
                                tally.segment_count,
                                tally.digest()
                            )),
                            "Read",
                        ));
                    }
                } else {
                    status.phase = Some(TranscriptPhase::Live);
                    live = true;
                }
                if !new_refusals.is_empty() {
                    let list: Vec<String> = new_refusals
                        .iter()
                        .map(|(r, n)| format!("{r} {n}"))
                        .collect();
                    notes.push(Note::warning(
                        "EntriesRefused",
                        Some(format!(
                            "entries or segments of {stream:?} changed nothing: {}",
                            list.join(", ")
                        )),
                        "Read",
                    ));
                }
            }
        }
    }
    Decision {
        status: (status != old).then_some(status),
        notes,
        completed_now,
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transcript(stream: Option<&str>, status: serde_json::Value) -> Transcript {
        let mut doc = json!({
            "apiVersion": "vexa.ai/v1", "kind": "Transcript",
            "metadata": {"name": "standup", "namespace": "team-a", "generation": 1},
            "spec": {"meeting": {"meetingId": "abc-defg-hij", "platform": "google_meet"},
                     "owner": "alice"},
            "status": status,
        });
        if let Some(s) = stream {
            doc["spec"]["stream"] = json!(s);
        }
        serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> Time {
        Time("2026-12-06T10:00:00Z".parse().unwrap_or_default())
    }

    #[test]
    fn a_transcript_reads_only_its_own_meetings_stream() {
        assert_eq!(
            stream_of(&transcript(None, json!({}))).as_deref(),
            Ok("tc:meeting:abc-defg-hij")
        );
        assert!(stream_of(&transcript(Some("tc:meeting:abc-defg-hij"), json!({}))).is_ok());
        for hostile in [
            "unit:team-b/agent-bob-chat-main:out",
            "tc:meeting:zzz-zzzz-zzz",
            "tc:meeting:abc-defg-hij:extra",
            "tc:meeting:",
            "TC:MEETING:abc-defg-hij",
        ] {
            let t = transcript(Some(hostile), json!({}));
            let why = stream_of(&t).expect_err(hostile);
            let d = decide(&t, &Observed::StreamNotAllowed(why), &now());
            let s = d.status.unwrap_or_default();
            let valid = s.conditions.iter().find(|c| c.type_ == "Valid");
            assert_eq!(valid.map(|c| c.reason.as_str()), Some("StreamNotAllowed"));
            assert!(s.segment_count.is_none() && s.phase.is_none(), "{hostile}");
        }
    }

    #[test]
    fn completion_is_recorded_once_and_then_final() {
        let mut tally = Tally::new("abc-defg-hij");
        tally.feed(
            "1-0",
            Some(br#"{"type":"session_end","segments":[{"segmentId":"abc-defg-hij:ann:0","speaker":"ann","text":"bye","start":0,"end":1,"completed":true}]}"#),
        );
        let t = transcript(None, json!({}));
        let seen = Observed::Read {
            stream: "tc:meeting:abc-defg-hij".into(),
            tally: Box::new(tally),
            new_refusals: vec![],
            error: None,
        };
        let d = decide(&t, &seen, &now());
        assert!(d.completed_now && !d.live);
        let s = d.status.clone().unwrap_or_default();
        assert_eq!(s.phase, Some(TranscriptPhase::Completed));
        assert_eq!(s.segment_count, Some(1));
        assert_eq!(s.completion_time, Some(now()));
        // The next reconcile sees the completed status: nothing changes, nothing fires again.
        let mut done = t.clone();
        done.status = d.status;
        let again = decide(&done, &seen, &now());
        assert!(!again.completed_now && again.status.is_none() && again.notes.is_empty());
    }
}
