//! Imperative actions on a Schedule, read from its annotations (pure): run now, backfill a
//! range, resume after a failed run. Each carries an id; an id already in `status.actions` is
//! done, so GitOps re-applying the same annotation does nothing. A malformed annotation becomes
//! an action whose error is recorded once (under an id derived from its text), never a crash.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use vexa_core::names::{
    MAX_JOB_NAME, SCHEDULE_BACKFILL_ANNOTATION, SCHEDULE_RESUME_ANNOTATION,
    SCHEDULE_RUN_NOW_ANNOTATION, bounded_name,
};
use vexa_crds::ActionRecord;

/// The most records `status.actions` keeps.
pub const MAX_ACTIONS: usize = 20;
/// The most nominal times one backfill may ask for.
pub const MAX_BACKFILL: usize = 100;
/// The longest action id.
const MAX_ID_LEN: usize = 128;

/// The kinds of action, as `status.actions[].kind` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `vexa.ai/resume`.
    Resume,
    /// `vexa.ai/run-now`.
    RunNow,
    /// `vexa.ai/backfill`.
    Backfill,
}

impl Kind {
    /// The kind as the status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Resume => "Resume",
            Kind::RunNow => "RunNow",
            Kind::Backfill => "Backfill",
        }
    }
}

/// One action asked for by an annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Which.
    pub kind: Kind,
    /// Its id (for a malformed annotation: `invalid-<hash of its text>`).
    pub id: String,
    /// What it asks, or why it cannot be read.
    pub what: Result<What, String>,
}

/// What a well-formed action asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Resume after a failure.
    Resume,
    /// One run now.
    RunNow,
    /// Every nominal time in `[from, to]`.
    Backfill {
        /// First instant of the range.
        from: DateTime<Utc>,
        /// Last instant of the range.
        to: DateTime<Utc>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillBody {
    id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// The actions `annotations` ask for, resume first (so a resumed schedule fires what is due in
/// the same reconcile), then run-now, then backfill.
pub fn read(annotations: &BTreeMap<String, String>) -> Vec<Action> {
    let mut out = Vec::new();
    for (kind, key) in [
        (Kind::Resume, SCHEDULE_RESUME_ANNOTATION),
        (Kind::RunNow, SCHEDULE_RUN_NOW_ANNOTATION),
        (Kind::Backfill, SCHEDULE_BACKFILL_ANNOTATION),
    ] {
        let Some(raw) = annotations.get(key) else {
            continue;
        };
        out.push(parse(kind, key, raw.trim()));
    }
    out
}

fn parse(kind: Kind, key: &str, raw: &str) -> Action {
    let invalid = |why: String| Action {
        kind,
        id: format!("invalid-{}", short_hash(raw)),
        what: Err(format!("annotation {key}: {why}")),
    };
    let (id, what) = match kind {
        Kind::Resume => (raw.to_owned(), What::Resume),
        Kind::RunNow => (raw.to_owned(), What::RunNow),
        Kind::Backfill => match serde_json::from_str::<BackfillBody>(raw) {
            Ok(b) if b.from > b.to => {
                return invalid(format!("from {} is after to {}", b.from, b.to));
            }
            Ok(b) => (
                b.id,
                What::Backfill {
                    from: b.from,
                    to: b.to,
                },
            ),
            Err(e) => {
                return invalid(format!(
                    "expected {{\"id\":\"…\",\"from\":\"<RFC 3339>\",\"to\":\"<RFC 3339>\"}}: {e}"
                ));
            }
        },
    };
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return invalid(format!(
            "the id must be 1 to {MAX_ID_LEN} printable characters"
        ));
    }
    Action {
        kind,
        id,
        what: Ok(what),
    }
}

/// Whether `action` was carried out already.
pub fn done(records: &[ActionRecord], action: &Action) -> bool {
    records
        .iter()
        .any(|r| r.kind == action.kind.as_str() && r.id == action.id)
}

/// Adds `record` (newest first) and keeps at most [`MAX_ACTIONS`], never dropping the record of
/// an action its annotation still asks for (else it would run again).
pub fn record(records: &mut Vec<ActionRecord>, record: ActionRecord, current: &[Action]) {
    records.insert(0, record);
    let pinned = |r: &ActionRecord| {
        current
            .iter()
            .any(|a| a.kind.as_str() == r.kind && a.id == r.id)
    };
    while records.len() > MAX_ACTIONS {
        match records.iter().rposition(|r| !pinned(r)) {
            Some(i) => {
                records.remove(i);
            }
            None => break,
        }
    }
}

/// The Dispatch a run-now with `id` creates: `<schedule>-now-<hash of id>`, at most 63
/// characters, the same for the same id.
pub fn run_now_name(schedule: &str, id: &str) -> String {
    let suffix = format!("now-{}", short_hash(id));
    let keep = MAX_JOB_NAME - 1 - suffix.len();
    format!("{}-{suffix}", bounded_name(schedule, keep))
}

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn one(key: &str, value: &str) -> Action {
        let a = read(&BTreeMap::from([(key.to_owned(), value.to_owned())]));
        assert_eq!(a.len(), 1);
        a.into_iter().next().unwrap()
    }

    #[test]
    fn well_formed_actions_are_read() {
        assert_eq!(
            one(SCHEDULE_RUN_NOW_ANNOTATION, "r1").what,
            Ok(What::RunNow)
        );
        assert_eq!(one(SCHEDULE_RESUME_ANNOTATION, " r2 ").id, "r2");
        let b = one(
            SCHEDULE_BACKFILL_ANNOTATION,
            r#"{"id":"b1","from":"2026-06-01T00:00:00Z","to":"2026-06-01T01:00:00Z"}"#,
        );
        assert_eq!(b.id, "b1");
        assert!(matches!(b.what, Ok(What::Backfill { .. })));
    }

    #[rstest]
    #[case::not_json(SCHEDULE_BACKFILL_ANNOTATION, "yesterday")]
    #[case::no_id(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"from":"2026-06-01T00:00:00Z","to":"2026-06-01T01:00:00Z"}"#
    )]
    #[case::bad_time(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"id":"x","from":"June","to":"2026-06-01T01:00:00Z"}"#
    )]
    #[case::reversed(
        SCHEDULE_BACKFILL_ANNOTATION,
        r#"{"id":"x","from":"2026-06-02T00:00:00Z","to":"2026-06-01T01:00:00Z"}"#
    )]
    #[case::empty_id(SCHEDULE_RUN_NOW_ANNOTATION, "")]
    #[case::long_id(SCHEDULE_RUN_NOW_ANNOTATION, &"x".repeat(200))]
    fn malformed_actions_carry_their_error_under_a_stable_id(
        #[case] key: &str,
        #[case] value: &str,
    ) {
        let a = one(key, value);
        assert!(a.what.is_err(), "{a:?}");
        assert!(a.id.starts_with("invalid-"));
        assert_eq!(one(key, value).id, a.id);
    }

    #[test]
    fn a_record_still_asked_for_is_never_dropped() {
        let now = crate::runtime::conditions::now();
        let rec = |kind: Kind, id: &str| ActionRecord {
            kind: kind.as_str().into(),
            id: id.into(),
            time: now.clone(),
            message: None,
        };
        let current = read(&BTreeMap::from([(
            SCHEDULE_RUN_NOW_ANNOTATION.to_owned(),
            "keep".to_owned(),
        )]));
        let mut records = Vec::new();
        record(&mut records, rec(Kind::RunNow, "keep"), &current);
        for i in 0..30 {
            record(&mut records, rec(Kind::Resume, &i.to_string()), &current);
        }
        assert_eq!(records.len(), MAX_ACTIONS);
        assert!(done(&records, &current[0]));
        assert_eq!(records[0].id, "29");
    }

    #[test]
    fn run_now_names_are_stable_and_short() {
        let a = run_now_name("daily", "r1");
        assert_eq!(a, run_now_name("daily", "r1"));
        assert_ne!(a, run_now_name("daily", "r2"));
        assert!(a.starts_with("daily-now-"));
        assert!(run_now_name(&"s".repeat(253), "r1").len() <= 63);
    }
}
