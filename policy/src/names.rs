//! Deterministic names: the dispatch id, its stream keys and its child objects.

use sha2::{Digest, Sha256};

/// The longest name a Job may have (its name becomes a label value).
pub const MAX_JOB_NAME: usize = 63;

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

/// The session file of a chat thread, relative to the rw workspace.
pub fn session_file(session_path: &str, thread: &str) -> String {
    format!("{}/{thread}.session", session_path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
