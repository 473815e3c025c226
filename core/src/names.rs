//! Deterministic names: the dispatch id, its stream keys, its child objects, its chat thread and
//! the thread's session file.

use sha2::{Digest, Sha256};

/// The longest name a Job may have (its name becomes a label value).
pub const MAX_JOB_NAME: usize = 63;
/// The chat thread of a dispatch that names none (`spec.context.session`).
pub const DEFAULT_THREAD: &str = "main";
/// Where an AgentRunner keeps its session files when it says nothing (`spec.sessionPath`),
/// relative to the rw workspace.
pub const DEFAULT_SESSION_PATH: &str = ".claude/sessions";
/// The longest chat thread name (the Dispatch schema's `context.session` limit).
pub const MAX_THREAD_LEN: usize = 63;

/// Label on each Dispatch a Schedule created: the Schedule's name.
pub const SCHEDULE_LABEL: &str = "vexa.ai/schedule";
/// Annotation on each Dispatch a Schedule created: its nominal time (RFC 3339, UTC).
pub const SCHEDULED_TIME_ANNOTATION: &str = "vexa.ai/scheduled-time";
/// Annotation on a Schedule asking for one run now; its value is an id, carried out once.
pub const SCHEDULE_RUN_NOW_ANNOTATION: &str = "vexa.ai/run-now";
/// Annotation on a Schedule asking to run every nominal time of a range:
/// `{"id": …, "from": RFC 3339, "to": RFC 3339}`, carried out once per id.
pub const SCHEDULE_BACKFILL_ANNOTATION: &str = "vexa.ai/backfill";
/// Annotation on a Schedule lifting a pause after a failed run; its value is an id.
pub const SCHEDULE_RESUME_ANNOTATION: &str = "vexa.ai/resume";
/// Annotation on a Schedule, honoured only by an operator started with
/// `--schedule-seconds-field` (tests): a six-field cron expression with seconds that replaces
/// `spec.schedule`.
pub const TEST_CRON_SECONDS_ANNOTATION: &str = "vexa.ai/test-cron-seconds";

/// The dispatch id: `<namespace>/<name>`. Unique in the cluster and stable across restarts.
pub fn dispatch_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The stream the worker writes unit events to.
pub fn out_topic(dispatch_id: &str) -> String {
    format!("unit:{dispatch_id}:out")
}

/// The stream the worker reads turns from.
pub fn in_topic(dispatch_id: &str) -> String {
    format!("unit:{dispatch_id}:in")
}

/// A name of at most `max` characters derived from `name`: the name itself when it fits,
/// otherwise a prefix and a hash of the whole name, so distinct names stay distinct.
pub fn bounded_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = max.saturating_sub(hash.len() + 1);
    let prefix = name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

/// Name of the Job (and pod prefix) of a dispatch.
pub fn job_name(dispatch_name: &str) -> String {
    bounded_name(dispatch_name, MAX_JOB_NAME)
}

/// Name of the per-dispatch Secret.
pub fn secret_name(dispatch_name: &str) -> String {
    format!(
        "{}-credentials",
        bounded_name(dispatch_name, 253 - "-credentials".len())
    )
}

/// The chat thread a dispatch continues: the one it names, else [`DEFAULT_THREAD`].
pub fn thread_or_default(thread: Option<&str>) -> &str {
    thread.filter(|t| !t.is_empty()).unwrap_or(DEFAULT_THREAD)
}

/// Whether `thread` is a valid chat thread name (the Dispatch schema's rule). It becomes a file
/// name, so it can never hold a path separator or start with a dot.
pub fn valid_thread(thread: &str) -> bool {
    let mut chars = thread.chars();
    thread.len() <= MAX_THREAD_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The session file of a chat thread, relative to the rw workspace:
/// `<sessionPath>/<thread>.session`.
pub fn session_file(session_path: &str, thread: &str) -> String {
    format!("{}/{thread}.session", session_path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(job_name("agent-alice-chat-main"), "agent-alice-chat-main");
    }

    #[test]
    fn long_names_are_bounded_and_distinct() {
        let a = "a".repeat(80);
        let b = format!("{}b", "a".repeat(79));
        let (ja, jb) = (job_name(&a), job_name(&b));
        assert!(ja.len() <= MAX_JOB_NAME && jb.len() <= MAX_JOB_NAME);
        assert_ne!(ja, jb);
        assert_eq!(ja, job_name(&a), "deterministic");
    }

    #[test]
    fn bounded_names_do_not_end_in_a_separator_before_the_hash() {
        let name = format!("{}-x", "ab-".repeat(30));
        let n = job_name(&name);
        assert!(!n.contains("--"), "{n}");
    }

    #[test]
    fn topics_follow_the_contract() {
        let id = dispatch_id("team-a", "agent-alice-chat-main");
        assert_eq!(out_topic(&id), "unit:team-a/agent-alice-chat-main:out");
        assert_eq!(in_topic(&id), "unit:team-a/agent-alice-chat-main:in");
        assert_eq!(
            session_file(".claude/sessions/", "main"),
            ".claude/sessions/main.session"
        );
        assert_eq!(
            session_file(DEFAULT_SESSION_PATH, thread_or_default(None)),
            ".claude/sessions/main.session"
        );
    }

    #[rstest]
    #[case::default("main", true)]
    #[case::dotted("2026.q1_plan-b", true)]
    #[case::longest(&"a".repeat(MAX_THREAD_LEN), true)]
    #[case::too_long(&"a".repeat(MAX_THREAD_LEN + 1), false)]
    #[case::empty("", false)]
    #[case::hidden(".hidden", false)]
    #[case::traversal("../main", false)]
    #[case::separator("a/b", false)]
    fn thread_names(#[case] thread: &str, #[case] valid: bool) {
        assert_eq!(valid_thread(thread), valid, "{thread:?}");
    }

    #[test]
    fn an_unnamed_or_empty_thread_is_the_default() {
        assert_eq!(thread_or_default(None), DEFAULT_THREAD);
        assert_eq!(thread_or_default(Some("")), DEFAULT_THREAD);
        assert_eq!(thread_or_default(Some("ideas")), "ideas");
    }
}
