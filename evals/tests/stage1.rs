//! The Stage 1 proof (SPEC §6): a Dispatch applied to the cluster runs the real agent worker
//! (`localhost/vexa-agent-worker:dev`, built by `hack/images/agent-worker`) with the project's
//! test agent over a git workspace on a PVC; its reply streams on `unit:<id>:out` in the
//! cluster's Redis; a turn sent on `unit:<id>:in` is answered by the same pod; it exits when
//! idle; a second Dispatch resumes the session; a propose-only run cannot change its workspace.
//!
//! Needs `eval "$(hack/cluster env)"` (KUBECONFIG, REDIS_URL for this process, POD_REDIS_URL
//! for the pods) and the worker image; `hack/test` provides both.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, chat_dispatch, claim_folder, describe, git, golden_doc, stop_reason,
    test_agent_runner, wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::{Operator, assert_chart_operator_running, chart_installed};
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

const TIMEOUT: Duration = Duration::from_secs(180);
const IDLE_SECONDS: i64 = 6;

/// The operator under test: by default one in this process, pointing the pods at the
/// cluster's Redis; with `VEXA_EVAL_OPERATOR=chart`, the one the Helm chart installed (as users
/// run it: its image, its service account and RBAC), which `hack/test` installs with a Job TTL
/// of 5 s like the in-process one.
async fn operator() {
    if chart_installed() {
        assert_chart_operator_running(&client().await).await;
        return;
    }
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    let redis = cluster_env("POD_REDIS_URL");
    OPERATOR
        .get_or_init(|| Operator::start(&["--job-ttl-seconds", "5", "--redis-url", &redis]))
        .ready()
        .await;
}

struct World {
    client: Client,
    ns: TestNamespace,
    runner: String,
    dispatches: Api<Dispatch>,
    redis: redis::Client,
}

impl World {
    async fn new(prefix: &str) -> Self {
        operator().await;
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let runner = format!("test-agent-{}", ns.name);
        let idle = json!({"defaults": {"idleTimeoutSeconds": IDLE_SECONDS}});
        test_agent_runner(&client, &ns, &runner, idle).await;
        workspace_volume(&client, &ns.name).await;
        workspace(&client, &ns.name, "alice-notes", "alice/notes", "rw").await;
        workspace_ready(&client, &ns.name, "alice-notes").await;
        let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
        let dispatches = Api::namespaced(client.clone(), &ns.name);
        Self {
            client,
            ns,
            runner,
            dispatches,
            redis,
        }
    }

    fn out_topic(&self, name: &str) -> String {
        vexa_policy::names::out_topic(&vexa_policy::names::dispatch_id(&self.ns.name, name))
    }

    fn in_topic(&self, name: &str) -> String {
        vexa_policy::names::in_topic(&vexa_policy::names::dispatch_id(&self.ns.name, name))
    }

    /// The events of `name` until (and with) the `turn-complete` of turn `turn`.
    async fn events_until_turn_complete(&self, name: &str, turn: &str) -> Vec<UnitEvent> {
        let stream = follow::<UnitEvent>(self.redis.clone(), self.out_topic(name), EntryId::ZERO);
        let mut stream = std::pin::pin!(stream);
        let mut events = Vec::new();
        let collected = tokio::time::timeout(TIMEOUT, async {
            while let Some(item) = stream.next().await {
                let (_, e) = item.expect("a well-formed unit event");
                let done =
                    e.turn_id.to_string() == turn && matches!(e.event, Event::TurnComplete {});
                events.push(e);
                if done {
                    return;
                }
            }
        })
        .await;
        assert!(
            collected.is_ok(),
            "no turn-complete of {turn} on {} within {TIMEOUT:?}; events so far: {events:#?}",
            self.out_topic(name)
        );
        events
    }

    async fn wait_stopped(&self, name: &str) -> Dispatch {
        wait_dispatch(&self.dispatches, name, "stopped", TIMEOUT, |d| {
            !stop_reason(d).is_empty()
        })
        .await
    }

    /// The workspace folder on the host.
    async fn workspace_dir(&self) -> PathBuf {
        claim_folder(&self.client, &self.ns.name, WORKSPACE_CLAIM, "alice/notes").await
    }
}

fn kinds(events: &[UnitEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e.event {
            Event::MessageDelta { .. } => "message-delta",
            Event::ToolCall { .. } => "tool-call",
            Event::ToolResult { .. } => "tool-result",
            Event::Done { .. } => "done",
            Event::Commit { .. } => "commit",
            Event::TurnComplete {} => "turn-complete",
            Event::AuthError { .. } => "auth-error",
            Event::ModelError { .. } => "model-error",
            Event::Card { .. } => "card",
            Event::Note { .. } => "note",
        })
        .collect()
}

/// Whether `wanted` appear in `seen` in this order (others may come between).
fn in_order(seen: &[&str], wanted: &[&str]) -> bool {
    let mut it = seen.iter();
    wanted.iter().all(|w| it.any(|s| s == w))
}

fn reply(events: &[UnitEvent]) -> String {
    events
        .iter()
        .find_map(|e| match &e.event {
            Event::Done { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn commit_sha(events: &[UnitEvent]) -> Option<String> {
    events.iter().find_map(|e| match &e.event {
        Event::Commit { sha } => Some(sha.clone()),
        _ => None,
    })
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_chat_streams_commits_answers_a_second_turn_exits_idle_and_resumes() {
    let w = World::new("stage1").await;

    // 1. A chat Dispatch asking to write notes/hello.md.
    let prompt = "remember the greeting is for alice\nwrite notes/hello.md Hello, alice!\nsay I wrote notes/hello.md";
    let first = chat_dispatch("agent-alice-chat-main", &w.runner, prompt);
    w.dispatches
        .create(&PostParams::default(), &first)
        .await
        .unwrap();

    // 2. Deltas, a tool call and its result, done, commit and turn-complete, in that order.
    let t0 = w
        .events_until_turn_complete("agent-alice-chat-main", "t0")
        .await;
    let k = kinds(&t0);
    // The test agent runs its tools before it streams its reply, as Claude Code often does.
    let wanted = [
        "tool-call",
        "tool-result",
        "done",
        "commit",
        "turn-complete",
    ];
    assert!(
        in_order(&k, &wanted) && in_order(&k, &["message-delta", "done"]),
        "t0 events: {k:?}"
    );
    assert!(
        t0.iter()
            .all(|e| !matches!(e.event, Event::ModelError { .. } | Event::AuthError { .. })),
        "{t0:#?}"
    );
    let sha0 = commit_sha(&t0).expect("a commit event");
    let dir = w.workspace_dir().await;
    assert_eq!(
        std::fs::read_to_string(dir.join("notes/hello.md"))
            .unwrap()
            .trim(),
        "Hello, alice!"
    );
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), sha0);
    assert_eq!(
        git(&dir, &["show", "--format=", "--name-only", "HEAD"]),
        "notes/hello.md",
        "the commit holds the file and nothing else (.claude/ is ignored)"
    );
    assert_eq!(git(&dir, &["log", "-1", "--format=%an"]), "alice");
    let running = wait_dispatch(
        &w.dispatches,
        "agent-alice-chat-main",
        "running",
        TIMEOUT,
        |d| d.status.as_ref().and_then(|s| s.pod_name.clone()).is_some(),
    )
    .await;
    let pod = running.status.unwrap().pod_name.unwrap();

    // 5. A turn sent on the input stream while the pod lives is answered by the same pod.
    let mut conn = w.redis.get_multiplexed_async_connection().await.unwrap();
    vexa_stream::follow::send_turn(
        &mut conn,
        &w.in_topic("agent-alice-chat-main"),
        "append notes/hello.md second line\nsay appended",
    )
    .await
    .unwrap();
    let both = w
        .events_until_turn_complete("agent-alice-chat-main", "t1")
        .await;
    let t1: Vec<_> = both
        .into_iter()
        .filter(|e| e.turn_id.to_string() == "t1")
        .collect();
    assert!(reply(&t1).contains("appended"), "{t1:#?}");
    let sha1 = commit_sha(&t1).expect("the second turn commits too");
    assert_ne!(sha0, sha1);
    let pods = Api::<Pod>::namespaced(w.client.clone(), &w.ns.name);
    let p = pods.get(&pod).await.expect("the same pod still runs");
    let status = p.status.unwrap();
    let all = status
        .init_container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.container_statuses.unwrap_or_default());
    assert!(all.into_iter().all(|c| c.restart_count == 0));

    // 3. Nothing more is sent: the worker exits on idle and the run ends idle_timeout; the pod
    // is gone after the Job's TTL.
    let done = w.wait_stopped("agent-alice-chat-main").await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    let session = done.status.as_ref().unwrap().session_ref.clone();
    wait_for("the pod to be removed", TIMEOUT, || async {
        pods.get_opt(&pod).await.unwrap().is_none().then_some(())
    })
    .await;

    // 4. A second Dispatch on the same workspace resumes the session: the agent remembers.
    let mut doc = golden_doc("goldens/dispatches/valid/resume-session.yaml");
    doc["spec"]["runner"] = json!(w.runner);
    doc["spec"]["start"]["session"]["prompt"] =
        json!("recall\nwrite notes/again.md resumed\nsay resumed");
    if let Some(s) = session {
        doc["spec"]["start"]["session"]["ref"] = json!(s);
    }
    let second: Dispatch = serde_json::from_value(doc).unwrap();
    w.dispatches
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    let r0 = w
        .events_until_turn_complete("agent-alice-chat-main-2", "t0")
        .await;
    let answer = reply(&r0);
    assert!(
        answer.contains("the greeting is for alice"),
        "the resumed agent remembers the first conversation: {answer:?}"
    );
    let sha2 = commit_sha(&r0).expect("the resumed run commits");
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), sha2);
    assert_eq!(git(&dir, &["rev-parse", "HEAD~1"]), sha1);
    assert_eq!(git(&dir, &["rev-parse", "HEAD~2"]), sha0);
    // The worker's first commit (the .gitignore keeping .claude/ out of git), then three turns.
    assert_eq!(git(&dir, &["rev-list", "--count", "HEAD"]), "4");
    assert_eq!(
        git(&dir, &["show", "--format=", "--name-only", "HEAD~3"]),
        ".gitignore"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_propose_only_run_over_a_read_only_workspace_cannot_change_it() {
    let w = World::new("stage1-ro").await;
    // Seed the workspace with one commit through a trusted run first.
    let seed = chat_dispatch("seed", &w.runner, "write notes/keep.md kept\nsay seeded");
    w.dispatches
        .create(&PostParams::default(), &seed)
        .await
        .unwrap();
    w.events_until_turn_complete("seed", "t0").await;
    let mut conn = w.redis.get_multiplexed_async_connection().await.unwrap();
    vexa_stream::follow::send_stop(&mut conn, &w.in_topic("seed"))
        .await
        .unwrap();
    w.wait_stopped("seed").await;
    let dir = w.workspace_dir().await;
    let head = git(&dir, &["rev-parse", "HEAD"]);

    // An email event: untrusted, so propose-only over the workspace read-only, under the
    // grant alice gives the email integration (without it the operator refuses the run).
    let identity: vexa_crds::Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": [{"name": "email-triage", "launcher": "integration:email",
                 "workspaces": [{"name": "alice-notes", "mode": "ro"}]}]},
    }))
    .unwrap();
    Api::<vexa_crds::Identity>::namespaced(w.client.clone(), &w.ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    let mut d = chat_dispatch(
        "triage",
        &w.runner,
        "write notes/keep.md overwritten\nwrite notes/new.md injected\nsay tried",
    );
    d.spec.trigger = vexa_crds::Trigger::Event;
    d.spec.identity.launcher = "integration:email".into();
    d.spec.workspaces = vec![vexa_crds::WorkspaceUse {
        name: "alice-notes".into(),
        mode: Some(vexa_crds::WorkspaceMode::ReadOnly),
    }];
    w.dispatches
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let events = w.events_until_turn_complete("triage", "t0").await;
    assert!(
        commit_sha(&events).is_none(),
        "nothing is committed: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::ToolResult { ok: false, .. })),
        "the write is refused by the read-only mount: {events:#?}"
    );
    let done = w.wait_stopped("triage").await;
    assert_eq!(
        done.status
            .as_ref()
            .unwrap()
            .trust
            .map(|t| format!("{t:?}")),
        Some("ProposeOnly".into()),
        "{}",
        describe(&done)
    );
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&dir, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes/keep.md"))
            .unwrap()
            .trim(),
        "kept"
    );
    assert!(!dir.join("notes/new.md").exists());
}
