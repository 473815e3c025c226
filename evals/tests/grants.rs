//! Delegation grants (issue 10, eval 1), on a real cluster: a Dispatch launched by a schedule
//! runs only inside the grant its subject's Identity gives that schedule. A request for a
//! workspace the grant lacks, for `rw` where the grant says `ro`, for a tool the grant does not
//! name, or under an expired grant is refused with `Authorized=False` and creates no Job; the
//! request that stays inside the grant runs.
//!
//! Only the scheduler's service account (and the admin, whom admission exempts) may create a
//! Dispatch with a `schedule:` launcher, so these are created by the admin: what is proved
//! here is the operator's own check, which holds whoever got past admission.
//!
//! The operator runs in this process on the fake worker (`evals/fake-worker`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vexa_crds::{Dispatch, Identity, Tool, Trigger, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, condition, describe, fake_runner, phase, stop_reason,
    wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn operator() {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR
        .get_or_init(|| {
            Operator::start(&["--job-ttl-seconds", "30", "--worker-image", FAKE_WORKER_IMAGE])
        })
        .ready()
        .await;
}

/// The schedule every dispatch here is launched by.
fn schedule(ns: &str) -> String {
    format!("schedule:{ns}/nightly")
}

/// A namespace with alice's two workspaces, two tools (one gated), and alice's Identity: the
/// schedule `nightly` may read `alice-notes` and use `search`; `weekly`'s grant has expired.
async fn world(admin: &Client) -> (TestNamespace, String) {
    operator().await;
    let ns = TestNamespace::new(admin, "grants").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(admin, &ns, &runner, json!({})).await;
    workspace_volume(admin, &ns.name).await;
    workspace(admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace(admin, &ns.name, "alice-drafts", "alice/drafts", "rw").await;
    for (name, grant) in [("search", "auto"), ("send-mail", "gate")] {
        let tool: Tool = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Tool", "metadata": {"name": name},
            "spec": {"toolName": name, "scope": format!("{name}:use"), "grant": grant,
                     "irreversible": grant == "gate",
                     "server": {"url": "https://tools.invalid/mcp"}, "audience": name},
        }))
        .unwrap();
        Api::<Tool>::namespaced(admin.clone(), &ns.name)
            .create(&PostParams::default(), &tool)
            .await
            .unwrap();
    }
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": [
            {"name": "nightly", "launcher": schedule(&ns.name),
             "workspaces": [{"name": "alice-notes", "mode": "ro"}],
             "tools": ["search"], "maxTokenLifetimeSeconds": 600},
            {"name": "weekly", "launcher": format!("schedule:{}/weekly", ns.name),
             "workspaces": [{"name": "alice-notes", "mode": "ro"}],
             "expires": "2026-01-01T00:00:00Z"},
        ]},
    }))
    .unwrap();
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    workspace_ready(admin, &ns.name, "alice-notes").await;
    workspace_ready(admin, &ns.name, "alice-drafts").await;
    (ns, runner)
}

/// A Dispatch `name` for alice, launched by `launcher` on a schedule.
fn scheduled(
    name: &str,
    runner: &str,
    launcher: &str,
    workspaces: &[(&str, WorkspaceMode)],
    tools: &[&str],
) -> Dispatch {
    let mut d = chat_dispatch(name, runner, "echo ran");
    d.spec.identity.subject = "alice".into();
    d.spec.identity.launcher = launcher.into();
    d.spec.trigger = Trigger::Scheduled;
    d.spec.workspaces = workspaces
        .iter()
        .map(|(w, mode)| WorkspaceUse {
            name: (*w).into(),
            mode: Some(*mode),
        })
        .collect();
    d.spec.tools = tools.iter().map(|t| (*t).to_owned()).collect();
    d
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_schedule_runs_only_inside_its_grant() {
    let admin = client().await;
    let (ns, runner) = world(&admin).await;
    let nightly = schedule(&ns.name);
    let weekly = format!("schedule:{}/weekly", ns.name);
    use WorkspaceMode::{ReadOnly as Ro, ReadWrite as Rw};
    let cases = [
        (
            scheduled(
                "extra-workspace",
                &runner,
                &nightly,
                &[("alice-notes", Ro), ("alice-drafts", Ro)],
                &[],
            ),
            "GrantTooNarrow",
            "alice-drafts",
        ),
        (
            scheduled("rw-on-ro", &runner, &nightly, &[("alice-notes", Rw)], &[]),
            "GrantTooNarrow",
            "'rw'",
        ),
        (
            scheduled(
                "extra-tool",
                &runner,
                &nightly,
                &[("alice-notes", Ro)],
                &["search", "send-mail"],
            ),
            "GrantTooNarrow",
            "send-mail",
        ),
        (
            scheduled("expired", &runner, &weekly, &[("alice-notes", Ro)], &[]),
            "GrantExpired",
            "expired",
        ),
    ];
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    for (d, _, _) in &cases {
        dispatches.create(&PostParams::default(), d).await.unwrap();
    }
    let inside = scheduled(
        "inside-the-grant",
        &runner,
        &nightly,
        &[("alice-notes", Ro)],
        &["search"],
    );
    dispatches
        .create(&PostParams::default(), &inside)
        .await
        .unwrap();

    for (d, reason, names) in &cases {
        let name = d.metadata.name.clone().unwrap();
        let refused = wait_dispatch(&dispatches, &name, "phase refused", TIMEOUT, |d| {
            phase(d) == "refused"
        })
        .await;
        let (status, got, message) = condition(&refused, "Authorized").unwrap();
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", *reason),
            "{name}: {message}"
        );
        assert!(
            message.contains(names),
            "{name}: the refusal names what is outside the grant ({names}): {message}"
        );
        println!("refused: {name}: {got}: {message}");
    }
    let done = wait_dispatch(
        &dispatches,
        "inside-the-grant",
        "a stop reason",
        TIMEOUT,
        |d| !stop_reason(d).is_empty(),
    )
    .await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));

    // No refused dispatch ever had a Job; only the one inside the grant ran.
    let jobs: Vec<String> = Api::<Job>::namespaced(admin.clone(), &ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/name=vexa-dispatch"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert!(
        jobs.iter().all(|j| j.contains("inside-the-grant")),
        "a refused dispatch got a Job: {jobs:?}"
    );
}
