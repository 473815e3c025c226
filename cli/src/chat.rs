//! Which dispatch a chat message goes to. Pure: the caller lists the namespace's dispatches.
//!
//! A chat thread (subject, thread) is a chain of dispatches named per SPEC §8:
//! `agent-<subject>-chat-<thread>`, then `…-2`, `…-3`, … Only one of them runs at a time (they
//! write the same workspace and session). A message goes:
//! - to the chain's live dispatch (pending, queued, starting or running) as its next turn: the
//!   worker reads its input stream from the start, so a turn sent before it runs is not lost;
//! - otherwise to a new dispatch, the next name of the chain. When an earlier dispatch of the
//!   thread recorded a session file (`status.sessionRef`), the new one starts with
//!   `start.session` = that file and the message as its prompt, so the conversation continues;
//!   else it starts fresh with the message as `start.entrypoint.inline`.
//!
//! A live dispatch with another runner or other workspaces is not silently reused, nor is a
//! second one started beside it: the user is told to stop it or use another thread.

use kube::ResourceExt;
use sha2::{Digest, Sha256};
use vexa_core::trace::TraceParent;
use vexa_crds::{
    ContextKind, Dispatch, DispatchContext, DispatchIdentity, DispatchSpec, Entrypoint,
    SessionStart, Start, Trigger, WorkspaceUse,
};

use crate::dispatch;
use crate::error::CliError;

/// Room left after the base name for the `-<n>` of later dispatches (names are at most 253).
const MAX_BASE_NAME: usize = 240;

/// One chat message.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// On whose behalf.
    pub subject: String,
    /// Who sends it: `user:<the requesting user's name>`.
    pub launcher: String,
    /// The thread.
    pub thread: String,
    /// The AgentRunner.
    pub runner: String,
    /// The workspaces.
    pub workspaces: Vec<WorkspaceUse>,
    /// The message.
    pub prompt: String,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The thread's live dispatch takes it as a turn.
    Send {
        /// Its name.
        name: String,
    },
    /// A new dispatch: the first name of the chain after `after` that is free.
    Create {
        /// The chain position of the newest dispatch of the thread (0: none).
        after: u32,
        /// How it starts.
        start: Start,
    },
}

/// The first name of a thread's chain: `agent-<subject>-chat-<thread>` when that is a valid
/// object name; otherwise lowercased, with other characters as `-` and a hash of the pair
/// appended, so distinct pairs keep distinct names.
pub fn base_name(subject: &str, thread: &str) -> String {
    let raw = format!("agent-{subject}-chat-{thread}");
    let valid = raw
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.ends_with('-');
    let name = if valid {
        raw
    } else {
        let clean: String = raw
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '-',
            })
            .collect();
        let digest = Sha256::digest(format!("{subject}\0{thread}").as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{}-{hash}", clean.trim_end_matches('-'))
    };
    vexa_core::bounded_name(&name, MAX_BASE_NAME)
}

/// The name at chain position `n` (1 is the base name itself).
pub fn chain_name(base: &str, n: u32) -> String {
    if n <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{n}")
    }
}

/// The chain position of `name`, if it is a name of the chain.
fn chain_position(base: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(1);
    }
    let n = rest.strip_prefix('-')?;
    // `-01` or `-1` are not names the chain makes.
    if n.starts_with('0') || n.is_empty() {
        return None;
    }
    n.parse().ok().filter(|n| *n >= 2)
}

/// Decides where `req` goes, given every dispatch of the namespace.
pub fn plan(existing: &[Dispatch], req: &ChatRequest) -> Result<Plan, CliError> {
    let base = base_name(&req.subject, &req.thread);
    let mut chain: Vec<(u32, &Dispatch)> = existing
        .iter()
        .filter(|d| in_thread(d, req))
        .filter_map(|d| chain_position(&base, &d.name_any()).map(|n| (n, d)))
        .collect();
    chain.sort_by_key(|(n, _)| *n);

    if let Some((_, live)) = chain.iter().rev().find(|(_, d)| dispatch::is_live(d)) {
        if let Some(what) = mismatch(live, req) {
            return Err(CliError::ThreadBusy {
                subject: req.subject.clone(),
                thread: req.thread.clone(),
                id: dispatch::id(live),
                what,
            });
        }
        return Ok(Plan::Send {
            name: live.name_any(),
        });
    }
    let after = chain.last().map_or(0, |(n, _)| *n);
    let session = chain
        .iter()
        .rev()
        .find_map(|(_, d)| d.status.as_ref()?.session_ref.clone());
    let start = match session {
        Some(reference) => Start {
            entrypoint: None,
            session: Some(SessionStart {
                reference,
                prompt: Some(req.prompt.clone()),
            }),
        },
        None => Start {
            entrypoint: Some(Entrypoint {
                inline: Some(req.prompt.clone()),
                path: None,
            }),
            session: None,
        },
    };
    Ok(Plan::Create { after, start })
}

/// The names a new dispatch may take, in order: the chain's names after position `after` that
/// no dispatch has. (The caller also skips names whose streams still exist in Redis.)
pub fn free_names<'a>(
    existing: &'a [Dispatch],
    req: &ChatRequest,
    after: u32,
) -> impl Iterator<Item = String> + 'a {
    let base = base_name(&req.subject, &req.thread);
    (after.saturating_add(1)..)
        .map(move |n| chain_name(&base, n))
        .filter(|name| !existing.iter().any(|d| d.name_any() == *name))
}

/// The Dispatch for a new chat message.
pub fn new_dispatch(namespace: &str, name: &str, req: &ChatRequest, start: Start) -> Dispatch {
    let mut d = Dispatch::new(
        name,
        DispatchSpec {
            identity: DispatchIdentity {
                subject: req.subject.clone(),
                launcher: req.launcher.clone(),
            },
            runner: req.runner.clone(),
            workspaces: req.workspaces.clone(),
            tools: Vec::new(),
            trigger: Trigger::Message,
            context: Some(DispatchContext {
                kind: ContextKind::None,
                meeting: None,
                source: None,
                session: Some(req.thread.clone()),
            }),
            start,
            limits: None,
            stop: None,
        },
    );
    d.metadata.namespace = Some(namespace.to_owned());
    d
}

/// The trace a new Dispatch starts: the caller's (`TRACEPARENT`, e.g. a CI pipeline's), so the
/// run joins it, or else a fresh one. A caller's value that is not a valid `traceparent` is
/// said and replaced, never passed on.
pub fn trace_context(caller: Option<&str>) -> Option<TraceParent> {
    if let Some(text) = caller.filter(|t| !t.is_empty()) {
        match TraceParent::parse(text) {
            Ok(tp) => return Some(tp),
            Err(e) => eprintln!("ignoring {}: {e}", vexa_core::trace::ENV),
        }
    }
    TraceParent::random()
}

fn in_thread(d: &Dispatch, req: &ChatRequest) -> bool {
    let thread =
        vexa_core::thread_or_default(d.spec.context.as_ref().and_then(|c| c.session.as_deref()));
    d.spec.trigger == Trigger::Message
        && d.spec.identity.subject == req.subject
        && thread == req.thread
}

/// How a live dispatch differs from what the message asks for, if it does.
fn mismatch(d: &Dispatch, req: &ChatRequest) -> Option<String> {
    let sorted = |w: &[WorkspaceUse]| {
        let mut w = w.to_vec();
        w.sort_by(|a, b| a.name.cmp(&b.name));
        w
    };
    if d.spec.runner != req.runner {
        return Some(format!("runner {}, not {}", d.spec.runner, req.runner));
    }
    if sorted(&d.spec.workspaces) != sorted(&req.workspaces) {
        let list = |w: &[WorkspaceUse]| {
            w.iter()
                .map(|w| match w.mode {
                    Some(vexa_crds::WorkspaceMode::ReadWrite) => format!("{}:rw", w.name),
                    Some(vexa_crds::WorkspaceMode::ReadOnly) => format!("{}:ro", w.name),
                    None => w.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        return Some(format!(
            "workspaces {}, not {}",
            list(&d.spec.workspaces),
            list(&req.workspaces)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::dispatch::tests::dispatch;
    use rstest::rstest;
    use serde_json::json;
    use vexa_crds::WorkspaceMode;

    fn request() -> ChatRequest {
        ChatRequest {
            subject: "alice".into(),
            launcher: "user:alice".into(),
            thread: "main".into(),
            runner: "test-agent".into(),
            workspaces: vec![WorkspaceUse {
                name: "alice-notes".into(),
                mode: Some(WorkspaceMode::ReadWrite),
            }],
            prompt: "What did I ask you last time?".into(),
        }
    }

    fn entrypoint(prompt: &str) -> Start {
        Start {
            entrypoint: Some(Entrypoint {
                inline: Some(prompt.into()),
                path: None,
            }),
            session: None,
        }
    }

    #[rstest]
    #[case::spec_form("alice", "main", "agent-alice-chat-main")]
    #[case::digits("u42", "t-1", "agent-u42-chat-t-1")]
    #[case::email("Alice@Example.com", "main", "agent-alice-example-com-chat-main-")]
    #[case::underscore("alice", "my_thread", "agent-alice-chat-my-thread-")]
    #[case::trailing_dash("alice", "x-", "agent-alice-chat-x-")]
    fn base_names(#[case] subject: &str, #[case] thread: &str, #[case] prefix: &str) {
        let name = base_name(subject, thread);
        if prefix.ends_with('-') {
            // Not a valid name as is: cleaned, plus 8 hex digits of the pair.
            let hash = name
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{name}"));
            assert_eq!(hash.len(), 8, "{name}");
            assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        } else {
            assert_eq!(name, prefix);
        }
    }

    #[test]
    fn cleaned_names_stay_distinct() {
        assert_ne!(base_name("Alice", "main"), base_name("alice", "main"));
        assert_ne!(base_name("a_b", "main"), base_name("a.b", "main"));
        assert!(base_name(&"a".repeat(128), &"t".repeat(63)).len() <= MAX_BASE_NAME);
    }

    #[rstest]
    #[case("agent-alice-chat-main", Some(1))]
    #[case("agent-alice-chat-main-2", Some(2))]
    #[case("agent-alice-chat-main-17", Some(17))]
    #[case("agent-alice-chat-main-1", None)]
    #[case("agent-alice-chat-main-02", None)]
    #[case("agent-alice-chat-main-x", None)]
    #[case("agent-alice-chat-mainly", None)]
    fn chain_positions(#[case] name: &str, #[case] want: Option<u32>) {
        assert_eq!(chain_position("agent-alice-chat-main", name), want);
    }

    #[test]
    fn the_first_message_creates_the_spec_named_dispatch() {
        let req = request();
        let plan = plan(&[], &req).unwrap();
        assert_eq!(
            plan,
            Plan::Create {
                after: 0,
                start: entrypoint(&req.prompt)
            }
        );
        let names: Vec<String> = free_names(&[], &req, 0).take(2).collect();
        assert_eq!(names, ["agent-alice-chat-main", "agent-alice-chat-main-2"]);
    }

    #[test]
    fn a_callers_trace_is_joined_and_a_bad_one_replaced() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_context(Some(caller)).unwrap().to_string(), caller);
        for bad in [None, Some(""), Some("00-zz"), Some("ff-bad\nX: y")] {
            let fresh = trace_context(bad).unwrap();
            assert_ne!(fresh.to_string(), caller);
            assert!(TraceParent::parse(&fresh.to_string()).is_ok());
        }
    }

    #[test]
    fn a_new_dispatch_matches_the_chat_golden() {
        let req = ChatRequest {
            prompt: "Write notes/hello.md with a greeting; don't touch anything else.".into(),
            ..request()
        };
        let d = new_dispatch(
            "team-a",
            "agent-alice-chat-main",
            &req,
            entrypoint(&req.prompt),
        );
        let golden = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../goldens/dispatches/valid/chat-message.yaml"
        ))
        .unwrap();
        let mut golden: Dispatch = serde_saphyr::from_str(&golden).unwrap();
        assert_eq!(d.metadata.name, golden.metadata.name);
        assert_eq!(d.metadata.namespace.as_deref(), Some("team-a"));
        // The golden sets an idle timeout; a chat takes the runner's.
        golden.spec.limits = None;
        assert_eq!(d.spec, golden.spec);
    }

    #[test]
    fn a_live_dispatch_of_the_thread_takes_the_message_as_a_turn() {
        let live = dispatch(
            "agent-alice-chat-main-2",
            json!({}),
            json!({"phase": "queued"}),
        );
        let old = dispatch(
            "agent-alice-chat-main",
            json!({}),
            json!({"phase": "stopped", "sessionRef": ".claude/sessions/main.session"}),
        );
        assert_eq!(
            plan(&[old, live], &request()).unwrap(),
            Plan::Send {
                name: "agent-alice-chat-main-2".into()
            }
        );
    }

    #[test]
    fn a_finished_thread_continues_in_the_next_dispatch_from_its_session() {
        let req = request();
        let existing = [
            dispatch(
                "agent-alice-chat-main",
                json!({}),
                json!({"phase": "destroyed", "sessionRef": ".claude/sessions/main.session"}),
            ),
            // The newest was refused before it described a session: the older one's counts.
            dispatch(
                "agent-alice-chat-main-2",
                json!({}),
                json!({"phase": "refused"}),
            ),
            // Another thread's dispatch has the next name of this chain.
            dispatch(
                "agent-alice-chat-main-3",
                json!({"context": {"kind": "none", "session": "main-3"}}),
                json!({"phase": "running"}),
            ),
        ];
        let p = plan(&existing, &req).unwrap();
        assert_eq!(
            p,
            Plan::Create {
                after: 2,
                start: Start {
                    entrypoint: None,
                    session: Some(SessionStart {
                        reference: ".claude/sessions/main.session".into(),
                        prompt: Some(req.prompt.clone()),
                    }),
                }
            }
        );
        assert_eq!(
            free_names(&existing, &req, 2).next().unwrap(),
            "agent-alice-chat-main-4"
        );
    }

    #[test]
    fn a_stopping_dispatch_is_followed_by_a_new_one() {
        let stopping = dispatch(
            "agent-alice-chat-main",
            json!({"stop": true}),
            json!({"phase": "running", "sessionRef": ".claude/sessions/main.session"}),
        );
        assert!(matches!(
            plan(&[stopping], &request()).unwrap(),
            Plan::Create { after: 1, .. }
        ));
    }

    #[rstest]
    #[case::runner(json!({"runner": "claude"}), "runner claude, not test-agent")]
    #[case::workspaces(json!({"workspaces": [{"name": "alice-notes", "mode": "ro"}]}),
        "workspaces alice-notes:ro, not alice-notes:rw")]
    fn a_live_dispatch_that_differs_is_not_reused(
        #[case] spec: serde_json::Value,
        #[case] words: &str,
    ) {
        let live = dispatch("agent-alice-chat-main", spec, json!({"phase": "running"}));
        let e = plan(&[live], &request()).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
        assert!(
            e.contains("kubectl vexa stop team-a/agent-alice-chat-main"),
            "{e}"
        );
    }

    #[test]
    fn other_subjects_threads_and_triggers_are_not_the_thread() {
        let req = request();
        let others = [
            dispatch(
                "agent-alice-chat-main",
                json!({"identity": {"subject": "bob", "launcher": "user:bob"}}),
                json!({"phase": "running"}),
            ),
            dispatch(
                "agent-alice-chat-main-2",
                json!({"trigger": "scheduled"}),
                json!({"phase": "running"}),
            ),
        ];
        assert_eq!(
            plan(&others, &req).unwrap(),
            Plan::Create {
                after: 0,
                start: entrypoint(&req.prompt)
            }
        );
        // The names are taken all the same.
        assert_eq!(
            free_names(&others, &req, 0).next().unwrap(),
            "agent-alice-chat-main-3"
        );
    }
}
