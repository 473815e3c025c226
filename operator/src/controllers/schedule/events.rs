//! Event triggers, pure: which events fire a Schedule, the Dispatch each one gets, and how far
//! each source has been read.
//!
//! An event fires a Schedule when one of its `spec.events` binds it and it is the subject's own
//! (a completed Transcript whose owner is the Schedule's subject: a Schedule never runs on
//! someone else's meeting). Each event gets one Dispatch, named from the event's id
//! (`<schedule>-ev-<hash>`), so a replay adopts it instead of running twice; and each source
//! keeps a position in `status.eventCursors`, so an event at or before it never fires again,
//! even after its Dispatch was deleted by the history limits. The first position of a source
//! is the Schedule's creation: what happened before it does not fire.
//!
//! Email (`email.received`): the mailbox a trigger names must belong to the Schedule's subject
//! (`--mail-config`); `observe` reads the headers of new messages from the source's cursor
//! (`<uidValidity>/<uid>`, zero-padded) and keeps those the trigger's `from`/`subjectPattern`
//! filters match; each is one `event` run whose context is an opaque `imap://` reference (never
//! the body). The first time, the cursor starts at the mailbox's current end: mail that was
//! already there does not fire.
//!
//! Event runs are untrusted input: their trigger is `event` or `transcription`, their
//! workspaces are read-only (the Dispatch controller makes them propose-only), and they are not
//! subject to the concurrency policy (each event is its own run, read-only runs do not
//! collide). A blocked Schedule (unauthorized, suspended, paused) skips the event with that
//! reason and moves past it. At most [`MAX_EVENT_RUNS`] start per reconcile; the rest wait for
//! the next.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use vexa_core::names::{EVENT_ID_ANNOTATION, MAX_JOB_NAME, bounded_name};
use vexa_crds::{
    DispatchContext, EventCursor, EventType, Schedule, Transcript, TranscriptPhase, Trigger,
    WorkspaceMode,
};

use super::overlap::Work;
use super::run::from_time;

/// The most event runs one reconcile starts.
pub const MAX_EVENT_RUNS: usize = 20;
/// The source name of transcript completions.
pub const TRANSCRIPT_SOURCE: &str = "transcript.completed";

/// One event that may fire the Schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its source (the cursor it advances).
    pub source: String,
    /// Its position in the source; positions of one source sort as strings.
    pub position: String,
    /// Its id, unique in the source (names the run).
    pub id: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The run's trigger.
    pub trigger: Trigger,
    /// The run's context.
    pub context: DispatchContext,
}

/// The source name of a mailbox's new mail.
pub fn email_source(mailbox: &str) -> String {
    format!("email.received:{mailbox}")
}

/// A mailbox cursor as a position (sorts as the cursor does within one UIDVALIDITY).
pub fn email_position(c: vexa_email::Cursor) -> String {
    format!("{:010}/{:010}", c.uid_validity, c.uid)
}

/// The cursor a position holds (`None`: not a mailbox position).
pub fn email_cursor(position: &str) -> Option<vexa_email::Cursor> {
    let (v, u) = position.split_once('/')?;
    Some(vexa_email::Cursor {
        uid_validity: v.parse().ok()?,
        uid: u.parse().ok()?,
    })
}

/// The cursor of mailbox `mailbox` that `schedule`'s status keeps (`None`: never read).
pub fn mail_cursor(schedule: &Schedule, mailbox: &str) -> Option<vexa_email::Cursor> {
    let source = email_source(mailbox);
    let status = schedule.status.as_ref()?;
    let kept = status.event_cursors.iter().find(|c| c.source == source)?;
    email_cursor(&kept.position)
}

/// The events of new mail `headers` of `mailbox` (read at UIDVALIDITY `validity`): one per
/// header `keep` accepts, oldest first.
pub fn email_events(
    mailbox: &str,
    validity: u32,
    headers: &[vexa_email::Header],
    keep: impl Fn(&vexa_email::Header) -> bool,
    now: DateTime<Utc>,
) -> Vec<Event> {
    headers
        .iter()
        .filter(|h| keep(h))
        .map(|h| {
            let position = email_position(vexa_email::Cursor {
                uid_validity: validity,
                uid: h.uid,
            });
            Event {
                source: email_source(mailbox),
                id: format!("email/{mailbox}/{validity}/{}", h.uid),
                position,
                at: now,
                trigger: Trigger::Event,
                context: DispatchContext {
                    kind: vexa_core::ContextKind::Email,
                    meeting: None,
                    source: Some(vexa_crds::SourceRef {
                        uri: format!(
                            "imap://{mailbox}/INBOX;UIDVALIDITY={validity};UID={}",
                            h.uid
                        ),
                        etag: None,
                    }),
                    session: None,
                },
            }
        })
        .collect()
}

/// A position before every event after `t` (seconds, zero-padded so positions sort as
/// strings; an event in the same second sorts after it).
pub fn position_at(t: DateTime<Utc>) -> String {
    format!("{:012}", t.timestamp().max(0))
}

/// The completed Transcripts among `transcripts` that fire `schedule`: bound by a
/// `transcript.completed` trigger (by name if it names one), and owned by its subject.
pub fn transcript_events(schedule: &Schedule, transcripts: &[Transcript]) -> Vec<Event> {
    let bindings: Vec<Option<&str>> = schedule
        .spec
        .events
        .iter()
        .filter(|e| e.event_type == EventType::TranscriptCompleted)
        .map(|e| e.transcript.as_deref())
        .collect();
    if bindings.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Event> = transcripts
        .iter()
        .filter(|t| t.spec.owner == schedule.spec.subject)
        .filter(|t| {
            let name = t.name_any();
            bindings.iter().any(|b| b.is_none_or(|b| b == name))
        })
        .filter_map(|t| {
            let status = t.status.as_ref()?;
            if status.phase != Some(TranscriptPhase::Completed) {
                return None;
            }
            let at = from_time(status.completion_time.as_ref()?);
            let uid = t.uid()?;
            Some(Event {
                source: TRANSCRIPT_SOURCE.to_owned(),
                position: format!("{}/{}", position_at(at), t.name_any()),
                id: format!("transcript/{uid}"),
                at,
                trigger: Trigger::Transcription,
                context: DispatchContext {
                    kind: vexa_core::ContextKind::Meeting,
                    meeting: Some(t.spec.meeting.clone()),
                    source: None,
                    session: None,
                },
            })
        })
        .collect();
    out.sort_by(|a, b| a.position.cmp(&b.position));
    out
}

/// The Dispatch of `event` for `schedule`: `<schedule>-ev-<hash of the event id>`.
pub fn dispatch_name(schedule: &str, event_id: &str) -> String {
    let hash: String = Sha256::digest(event_id.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let suffix = format!("-ev-{hash}");
    format!(
        "{}{suffix}",
        bounded_name(schedule, MAX_JOB_NAME - suffix.len())
    )
}

/// Fires the events after each source's cursor, at most [`MAX_EVENT_RUNS`], moving the
/// cursors past what was decided. `blocked` skips them with its reason instead.
///
/// `advance`: sources that `observe` already read from their cursor (a mailbox): their events
/// are all new, and the cursor moves to the given position afterwards (past the messages the
/// filters did not keep too), or is set there the first time.
pub(super) fn fire(
    work: &mut Work<'_>,
    events: &[Event],
    advance: &[EventCursor],
    cursors: &mut Vec<EventCursor>,
    created: DateTime<Utc>,
    blocked: Option<&(&'static str, String)>,
) {
    let mut started = 0;
    let read_already = |source: &str| advance.iter().any(|a| a.source == source);
    for e in events.iter().filter(|e| read_already(&e.source)) {
        if started == MAX_EVENT_RUNS {
            break;
        }
        let name = dispatch_name(&work.name, &e.id);
        match blocked {
            Some((reason, message)) => work.skip(e.at, reason, Some(message.clone())),
            None if work.existing.contains(&name) => {}
            None => {
                start_event_run(work, e, &name);
                started += 1;
            }
        }
    }
    if started < MAX_EVENT_RUNS {
        for a in advance {
            match cursors.iter_mut().find(|c| c.source == a.source) {
                Some(c) => c.position.clone_from(&a.position),
                None => cursors.push(a.clone()),
            }
        }
    }
    for e in events.iter().filter(|e| !read_already(&e.source)) {
        let cursor = match cursors.iter_mut().find(|c| c.source == e.source) {
            Some(c) => c,
            None => {
                cursors.push(EventCursor {
                    source: e.source.clone(),
                    position: position_at(created),
                });
                let last = cursors.len() - 1;
                &mut cursors[last]
            }
        };
        if e.position <= cursor.position {
            continue;
        }
        if started == MAX_EVENT_RUNS {
            break;
        }
        let name = dispatch_name(&work.name, &e.id);
        match blocked {
            Some((reason, message)) => work.skip(e.at, reason, Some(message.clone())),
            None if work.existing.contains(&name) => {}
            None => {
                start_event_run(work, e, &name);
                started += 1;
            }
        }
        cursor.position.clone_from(&e.position);
    }
}

/// Creates `e`'s run `name`: the template's, read-only, with the event's trigger and context.
fn start_event_run(work: &mut Work<'_>, e: &Event, name: &str) {
    let mut d = work.new_dispatch(name, e.at);
    d.spec.trigger = e.trigger;
    d.spec.context = Some(e.context.clone());
    for w in &mut d.spec.workspaces {
        w.mode = Some(WorkspaceMode::ReadOnly);
    }
    d.annotations_mut()
        .insert(EVENT_ID_ANNOTATION.to_owned(), e.id.clone());
    work.create_event_run(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(events: serde_json::Value) -> Schedule {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Schedule",
            "metadata": {"name": "post-meeting", "namespace": "team-a", "uid": "s-1",
                         "creationTimestamp": "2026-12-06T09:00:00Z"},
            "spec": {"subject": "alice", "grant": "post-meeting", "events": events,
                     "template": {"runner": "r", "workspaces": [{"name": "notes", "mode": "rw"}],
                                  "start": {"entrypoint": {"inline": "summarise"}}}},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn transcript(name: &str, owner: &str, completed: Option<&str>) -> Transcript {
        let mut doc = json!({
            "apiVersion": "vexa.ai/v1", "kind": "Transcript",
            "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}")},
            "spec": {"meeting": {"meetingId": name, "platform": "google_meet"}, "owner": owner},
            "status": {"phase": "live"},
        });
        if let Some(t) = completed {
            doc["status"] = json!({"phase": "completed", "completionTime": t});
        }
        serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_the_subjects_own_completed_and_bound_transcripts_fire() {
        let all = vec![
            transcript("standup", "alice", Some("2026-12-06T10:00:00Z")),
            transcript("bobs-1on1", "bob", Some("2026-12-06T10:05:00Z")),
            transcript("retro", "alice", None),
            transcript("planning", "alice", Some("2026-12-06T11:00:00Z")),
        ];
        let any = schedule(json!([{"type": "transcript.completed"}]));
        let ids: Vec<String> = transcript_events(&any, &all)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids, ["transcript/uid-standup", "transcript/uid-planning"]);
        let named = schedule(json!([{"type": "transcript.completed", "transcript": "planning"}]));
        assert_eq!(transcript_events(&named, &all).len(), 1);
        let email_only = schedule(json!([{"type": "email.received"}]));
        assert!(transcript_events(&email_only, &all).is_empty());
    }

    #[test]
    fn event_run_names_are_stable_distinct_and_fit() {
        let a = dispatch_name("post-meeting", "transcript/uid-1");
        assert_eq!(a, dispatch_name("post-meeting", "transcript/uid-1"));
        assert_ne!(a, dispatch_name("post-meeting", "transcript/uid-2"));
        let long = dispatch_name(&"x".repeat(80), "transcript/uid-1");
        assert!(long.len() <= MAX_JOB_NAME, "{long}");
    }

    fn header(uid: u32, from: &str, subject: &str) -> vexa_email::Header {
        vexa_email::Header {
            uid,
            message_id: Some(format!("m{uid}@x")),
            from: Some(from.into()),
            to: vec!["triage@vexa.test".into()],
            subject: Some(subject.into()),
            date: None,
            size: 10,
        }
    }

    #[test]
    fn mail_events_carry_a_reference_never_the_message_and_their_positions_sort() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let headers = [
            header(7, "boss@corp.test", "Invoice"),
            header(8, "spam@x.test", "Buy"),
        ];
        let filter =
            vexa_email::Filter::new(Some("@corp.test"), None).unwrap_or_else(|e| panic!("{e}"));
        let events = email_events("triage", 42, &headers, |h| filter.matches(h), now);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.trigger, Trigger::Event);
        assert_eq!(e.id, "email/triage/42/7");
        let uri = e
            .context
            .source
            .as_ref()
            .map(|s| s.uri.clone())
            .unwrap_or_default();
        assert_eq!(uri, "imap://triage/INBOX;UIDVALIDITY=42;UID=7");
        assert!(
            !format!("{e:?}").contains("Invoice"),
            "no header text reaches the run"
        );
        let c = vexa_email::Cursor {
            uid_validity: 42,
            uid: 9,
        };
        assert_eq!(email_cursor(&email_position(c)), Some(c));
        assert!(
            email_position(vexa_email::Cursor {
                uid_validity: 42,
                uid: 10
            }) > email_position(c)
        );
    }
}
