//! The Workspace controller on the real cluster: a brand-new Workspace gets its claim and a
//! prepared folder (seed, git, first commit) from the operator, as the agents' non-root user in
//! a namespace that enforces Pod Security `restricted`; a Dispatch applied at the same moment
//! waits for it, then runs and commits, and the provenance matches the folder's git. And the
//! walls a tenant would test: one folder is never written by two runs at once, whatever the
//! Workspace objects are called; a Workspace cannot reach into another's folder; a seed cannot
//! write outside its folder; a Workspace is not deleted from under a run.
//!
//! Needs `eval "$(hack/cluster env)"` and the worker image; `hack/test` provides both.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vexa_crds::{Dispatch, Workspace, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    chat_dispatch, claim_folder, condition, describe, git, phase, stop_reason, test_agent_runner,
    wait_dispatch, workspace_ready,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

const TIMEOUT: Duration = Duration::from_secs(180);

async fn operator() {
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
    workspaces: Api<Workspace>,
}

impl World {
    async fn new(prefix: &str, idle_seconds: i64) -> Self {
        operator().await;
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let runner = format!("test-agent-{}", ns.name);
        let idle = json!({"defaults": {"idleTimeoutSeconds": idle_seconds}});
        test_agent_runner(&client, &ns, &runner, idle).await;
        Self {
            dispatches: Api::namespaced(client.clone(), &ns.name),
            workspaces: Api::namespaced(client.clone(), &ns.name),
            client,
            ns,
            runner,
        }
    }

    /// A Workspace on claim `claim` (created by the operator when `create`), folder `path`.
    async fn workspace(&self, name: &str, claim: &str, path: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "id": name, "owner": "alice", "defaultMode": "rw",
            "storage": {"persistentVolumeClaim": {"claimName": claim, "subPath": path}},
        });
        vexa_evals::fixtures::merge(&mut spec, extra);
        let ws: Workspace = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Workspace",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.workspaces
            .create(&PostParams::default(), &ws)
            .await
            .unwrap_or_else(|e| panic!("create Workspace {name}: {e}"));
    }

    /// A seed ConfigMap `name` with `data` (keys spell `/` as `__`).
    async fn seed(&self, name: &str, data: serde_json::Value) {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("create ConfigMap {name}: {e}"));
    }

    /// A chat Dispatch on the test agent writing `workspace`.
    fn chat(&self, name: &str, workspace: &str, prompt: &str) -> Dispatch {
        let mut d = chat_dispatch(name, &self.runner, prompt);
        d.spec.workspaces = vec![WorkspaceUse {
            name: workspace.into(),
            mode: Some(WorkspaceMode::ReadWrite),
        }];
        d
    }

    async fn create(&self, d: &Dispatch) {
        self.dispatches
            .create(&PostParams::default(), d)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", d.metadata.name.as_deref().unwrap()));
    }

    async fn ready_condition(&self, name: &str) -> Option<(String, String, String)> {
        let ws = self.workspaces.get(name).await.ok()?;
        let c = ws
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        Some((c.status, c.reason, c.message))
    }

    async fn wait_workspace_reason(&self, name: &str, reason: &str) -> String {
        wait_for(
            &format!("Workspace {name} to be Ready=False/{reason}"),
            TIMEOUT,
            || async {
                let (status, r, message) = self.ready_condition(name).await?;
                (status == "False" && r == reason).then_some(message)
            },
        )
        .await
    }

    async fn stopped(&self, name: &str) -> Dispatch {
        wait_dispatch(&self.dispatches, name, "stopped", TIMEOUT, |d| {
            !stop_reason(d).is_empty()
        })
        .await
    }

    async fn stop(&self, name: &str) {
        self.dispatches
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"stop": true}})),
            )
            .await
            .unwrap();
    }

    /// The notes of the Events about `kind`/`name`.
    async fn event_notes(&self, kind: &str, name: &str) -> Vec<String> {
        let events = Api::<Event>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind={kind},involvedObject.name={name}"
            )))
            .await
            .unwrap();
        events
            .items
            .into_iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect()
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_brand_new_workspace_is_prepared_and_its_first_dispatch_waits_then_commits() {
    let w = World::new("ws-fresh", 4).await;
    w.seed(
        "fresh-seed",
        json!({"README.md": "# fresh\n", "plans__week.md": "- ship\n"}),
    )
    .await;
    // The Workspace (with a claim nobody made yet) and the Dispatch over it, at once.
    w.workspace(
        "fresh",
        "fresh-claim",
        "alice/fresh",
        json!({"seed": {"configMap": "fresh-seed"},
               "storage": {"persistentVolumeClaim": {"create": {"size": "1Gi"}}}}),
    )
    .await;
    w.create(&w.chat(
        "first-run",
        "fresh",
        "write notes/hello.md hello from the first run\nsay done",
    ))
    .await;

    let d = w.stopped("first-run").await;
    assert_eq!(stop_reason(&d), "idle_timeout", "{}", describe(&d));
    let queued = w.event_notes("Dispatch", "first-run").await;
    assert!(
        queued
            .iter()
            .any(|n| n.starts_with("Queued:") && n.contains("to be ready")),
        "the dispatch waited for the workspace: {queued:?}"
    );

    let dir = claim_folder(&w.client, &w.ns.name, "fresh-claim", "alice/fresh").await;
    let head = git(&dir, &["rev-parse", "HEAD"]);
    let log = git(&dir, &["log", "--format=%s", "--reverse"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(
        subjects.first(),
        Some(&"Ignore .claude/: agent sessions stay on the volume, out of history"),
        "{log}"
    );
    assert_eq!(subjects.get(1), Some(&"Seed the workspace"), "{log}");
    assert_eq!(subjects.len(), 3, "seed, then one turn's commit: {log}");
    assert_eq!(git(&dir, &["show", "HEAD:plans/week.md"]), "- ship");
    assert_eq!(
        git(&dir, &["show", "HEAD:notes/hello.md"]),
        "hello from the first run"
    );
    let seeded = git(&dir, &["rev-parse", "HEAD~1"]);

    let provenance = &d.status.as_ref().unwrap().provenance;
    assert_eq!(provenance.len(), 1, "{provenance:?}");
    assert_eq!(
        provenance[0].base_commit.as_deref(),
        Some(seeded.as_str()),
        "{provenance:?}"
    );
    assert_eq!(
        provenance[0].result_commit.as_deref(),
        Some(head.as_str()),
        "{provenance:?}"
    );
    let ws = wait_for("the Workspace's headCommit to follow", TIMEOUT, || async {
        let ws = w.workspaces.get("fresh").await.ok()?;
        (ws.status.as_ref()?.head_commit.as_deref() == Some(head.as_str())).then_some(ws)
    })
    .await;
    assert_eq!(ws.status.unwrap().held_by, None);

    // Nothing ran as root: the namespace enforces `restricted`, and every pod says so.
    let pods = Api::<Pod>::namespaced(w.client.clone(), &w.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(pods.items.len() >= 2, "the prepare pod and the run's pod");
    for p in pods.items {
        let sc = p.spec.unwrap().security_context.unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.run_as_user),
            (Some(true), Some(65532))
        );
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn two_workspaces_naming_one_folder_are_never_written_at_once() {
    let w = World::new("ws-alias", 60).await;
    let create = json!({"storage": {"persistentVolumeClaim": {"create": {"size": "1Gi"}}}});
    w.workspace("notes", "shared-claim", "alice/notes", create.clone())
        .await;
    // The same folder under another name: the lock is the folder's, not the object's.
    w.workspace("notes-alias", "shared-claim", "alice/notes", create)
        .await;
    workspace_ready(&w.client, &w.ns.name, "notes").await;
    workspace_ready(&w.client, &w.ns.name, "notes-alias").await;

    w.create(&w.chat("writer-1", "notes", "write a.md one\nsay one"))
        .await;
    wait_dispatch(&w.dispatches, "writer-1", "running", TIMEOUT, |d| {
        phase(d) == "running"
    })
    .await;
    w.create(&w.chat("writer-2", "notes-alias", "write b.md two\nsay two"))
        .await;
    let d2 = wait_dispatch(&w.dispatches, "writer-2", "queued", TIMEOUT, |d| {
        phase(d) == "queued"
    })
    .await;
    let (_, reason, message) = condition(&d2, "Queued").unwrap();
    assert_eq!(reason, "WorkspaceBusy", "{message}");
    assert!(message.contains("writer-1"), "{message}");
    // Both Workspace objects show the one holder of their folder.
    for name in ["notes", "notes-alias"] {
        let held = wait_for(&format!("{name} to show its holder"), TIMEOUT, || async {
            let ws = w.workspaces.get(name).await.ok()?;
            ws.status?.held_by
        })
        .await;
        assert_eq!(held, "writer-1");
    }
    assert!(
        Api::<k8s_openapi::api::batch::v1::Job>::namespaced(w.client.clone(), &w.ns.name)
            .get_opt("writer-2")
            .await
            .unwrap()
            .is_none(),
        "no Job for the second writer while the first writes"
    );

    // The first run ends: the second starts, woken by the Workspace (not a poll).
    w.stop("writer-1").await;
    let d2 = wait_dispatch(&w.dispatches, "writer-2", "running", TIMEOUT, |d| {
        matches!(
            phase(d).as_str(),
            "running" | "stopping" | "stopped" | "destroyed"
        )
    })
    .await;
    assert_ne!(stop_reason(&d2), "failed", "{}", describe(&d2));
    w.stop("writer-2").await;
    w.stopped("writer-2").await;
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_workspace_cannot_reach_into_another_workspaces_folder() {
    let w = World::new("ws-nested", 4).await;
    let create = json!({"storage": {"persistentVolumeClaim": {"create": {"size": "1Gi"}}}});
    w.workspace("alice-notes", "team-claim", "alice/notes", create)
        .await;
    workspace_ready(&w.client, &w.ns.name, "alice-notes").await;
    // A tenant's Workspace on the parent folder would let its runs rewrite alice's files.
    w.workspace("everything", "team-claim", "alice", json!({}))
        .await;
    let message = w
        .wait_workspace_reason("everything", "StorageOverlaps")
        .await;
    assert!(message.contains("alice-notes"), "{message}");
    w.create(&w.chat("sneaky", "everything", "write notes/evil.md pwned"))
        .await;
    let d = wait_dispatch(&w.dispatches, "sneaky", "queued", TIMEOUT, |d| {
        phase(d) == "queued"
    })
    .await;
    let (_, reason, message) = condition(&d, "Queued").unwrap();
    assert_eq!(reason, "WorkspaceNotReady", "{message}");
    assert!(message.contains("StorageOverlaps"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = w.dispatches.get("sneaky").await.unwrap();
    assert_eq!(phase(&d), "queued", "{}", describe(&d));
    let dir = claim_folder(&w.client, &w.ns.name, "team-claim", "alice/notes").await;
    assert!(!dir.join("notes/evil.md").exists());
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_seed_cannot_write_outside_its_folder() {
    let w = World::new("ws-seed", 4).await;
    w.seed(
        "evil-seed",
        json!({"ok.md": "fine", "x__..__..__escape.md": "outside"}),
    )
    .await;
    w.workspace(
        "seeded",
        "seed-claim",
        "alice/seeded",
        json!({"seed": {"configMap": "evil-seed"},
               "storage": {"persistentVolumeClaim": {"create": {"size": "1Gi"}}}}),
    )
    .await;
    let message = w.wait_workspace_reason("seeded", "PrepareFailed").await;
    assert!(message.contains("x__..__..__escape.md"), "{message}");
    let root = claim_folder(&w.client, &w.ns.name, "seed-claim", "").await;
    assert!(!root.join("escape.md").exists() && !root.join("alice/escape.md").exists());
    let notes = w.event_notes("Workspace", "seeded").await;
    assert!(
        notes.iter().any(|n| n.starts_with("PrepareFailed:")),
        "{notes:?}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn a_workspace_is_not_deleted_from_under_a_run() {
    let w = World::new("ws-delete", 60).await;
    w.workspace(
        "doomed",
        "doomed-claim",
        "d",
        json!({"storage": {"persistentVolumeClaim": {"create": {"size": "1Gi", "reclaimPolicy": "Delete"}}}}),
    )
    .await;
    workspace_ready(&w.client, &w.ns.name, "doomed").await;
    w.create(&w.chat("holder", "doomed", "say still here"))
        .await;
    wait_dispatch(&w.dispatches, "holder", "running", TIMEOUT, |d| {
        phase(d) == "running"
    })
    .await;

    w.workspaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let message = w.wait_workspace_reason("doomed", "Terminating").await;
    assert!(message.contains("holder"), "{message}");
    let claims = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        w.client.clone(),
        &w.ns.name,
    );
    assert!(claims.get_opt("doomed-claim").await.unwrap().is_some());

    w.stop("holder").await;
    w.stopped("holder").await;
    wait_for(
        "the Workspace to go once the run ended",
        TIMEOUT,
        || async {
            w.workspaces
                .get_opt("doomed")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    // Its reclaim policy is Delete and nothing else uses the claim.
    wait_for("the claim to go with it", TIMEOUT, || async {
        claims
            .get_opt("doomed-claim")
            .await
            .unwrap()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}
