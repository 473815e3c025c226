//! One Dispatch reconcile against a mocked API server (`tower-test`): each test pins the exact
//! calls, in order (method, path, query, content type and the body fields that matter), and
//! answers them as the API server would. A call the script does not expect, a call that never
//! comes, or a reconcile that hangs fails the test with a message naming the call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::api_server::{ApiServer, Call, Watched};
use vexa_operator::controllers::workspace::storage::Storage;

/// The uid of every Dispatch here (the build goldens use the same one, so an applied Job can
/// be compared with them).
const UID: &str = "0b7c4f1e-5d1a-4e0c-9a51-6f2d7e3c8a10";
/// A model credential value; it must never show up outside the per-dispatch Secret.
const CREDENTIAL: &str = "sk-mock-not-a-real-key";

// ---- inputs ----

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A YAML file of the repository (a golden or a fixture) as JSON.
fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A namespaced object as the API server returns it.
fn stored(rel: &str, ns: &str, resource_version: &str) -> Value {
    let mut v = yaml(rel);
    let meta = &mut v["metadata"];
    meta["namespace"] = ns.into();
    meta["resourceVersion"] = resource_version.into();
    meta["uid"] = format!("uid-{}", meta["name"].as_str().unwrap()).into();
    v
}

/// A cluster-scoped AgentRunner as the API server returns it.
fn runner(rel: &str) -> Value {
    let mut v = yaml(rel);
    v["metadata"]["resourceVersion"] = "7".into();
    v
}

/// A Dispatch from a golden, created in `ns` at generation 1.
fn dispatch(rel: &str, ns: &str) -> Value {
    let mut v = yaml(rel);
    let meta = &mut v["metadata"];
    meta["namespace"] = ns.into();
    meta["uid"] = UID.into();
    meta["generation"] = 1.into();
    meta["resourceVersion"] = "100".into();
    meta["creationTimestamp"] = "2026-11-29T08:00:00Z".into();
    v
}

fn status_404(kind: &str, name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{kind} {name:?} not found"), "reason": "NotFound", "code": 404,
        }),
    )
}

/// A build golden (its namespace is `team-a`, its uid `UID`).
fn golden(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join("operator/tests/fixtures").join(rel)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

// ---- assertions on bodies ----

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn assert_event(call: &Call, type_: &str, reason: &str, action: &str, dispatch: &str) {
    let e = &call.body;
    assert_eq!(
        (
            e["type"].as_str(),
            e["reason"].as_str(),
            e["action"].as_str()
        ),
        (Some(type_), Some(reason), Some(action)),
        "{e}"
    );
    assert_eq!(e["regarding"]["kind"], "Dispatch", "{e}");
    assert_eq!(e["regarding"]["name"], dispatch, "{e}");
    assert_eq!(e["regarding"]["uid"], UID, "{e}");
    assert_eq!(e["reportingController"], "vexa-operator", "{e}");
}

/// A Workspace whose folder the Workspace controller has prepared.
fn ready(mut ws: Value) -> Value {
    ws["status"] = json!({"initialized": true, "headCommit": "c0ffee", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "ready",
         "lastTransitionTime": "2026-11-29T07:00:00Z", "observedGeneration": 1}]});
    ws
}

/// The path of the lock of a workspace's folder.
fn lock_path(ns: &str, ws: &Value) -> String {
    let spec: vexa_crds::WorkspaceSpec = serde_json::from_value(ws["spec"].clone()).unwrap();
    let name = Storage::of(&spec).lock_name();
    format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}")
}

/// The lock of a folder as the API server returns it, held by `holder`.
fn lock(ns: &str, ws: &Value, holder: Option<&str>) -> Value {
    let path = lock_path(ns, ws);
    let name = path.rsplit('/').next().unwrap();
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": name, "namespace": ns, "resourceVersion": "77",
                        "labels": {"vexa.ai/workspace-lock": "true"},
                        "annotations": {"vexa.ai/claim": "workspaces", "vexa.ai/path": "alice/notes"}},
           "spec": {"holderIdentity": holder}})
}

/// The claim of a free folder: its lock is read, then created for this dispatch (a create,
/// so a concurrent claimant gets a conflict instead of a silent overwrite).
async fn expect_claim(api: &mut ApiServer, ns: &str, ws: Value, dispatch: &str) {
    let path = lock_path(ns, &ws);
    let (code, body) = status_404("leases.coordination.k8s.io", "lock");
    api.expect(Method::GET, &path).await.respond(code, body);
    let collection = path.rsplit_once('/').unwrap().0.to_owned();
    let call = api.expect(Method::POST, &collection).await;
    let b = &call.body;
    assert_eq!(b["spec"]["holderIdentity"], dispatch, "{b}");
    assert_eq!(
        b["metadata"]["labels"]["vexa.ai/workspace-lock"], "true",
        "{b}"
    );
    assert_eq!(
        b["metadata"]["annotations"],
        json!({"vexa.ai/claim": "workspaces", "vexa.ai/path": "alice/notes"}),
        "the lock names the folder, not the Workspace object"
    );
    call.echo();
}

// ---- the tests ----

/// (a) A chat Dispatch without a Job: read, authorize, claim, then apply the Secret and the
/// Job (exactly the build golden), announce it, record `starting`.
#[tokio::test]
async fn a_new_dispatch_creates_its_secret_and_job() {
    let ns = "team-a"; // the build goldens' namespace
    let name = "agent-alice-chat-main";
    let d = dispatch("goldens/dispatches/valid/chat-message.yaml", ns);
    let ws = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    let mut api = ApiServer::start(&d, &[]);

    // The Job cache has none: the Job is applied without asking the API server first.
    api.expect(Method::GET, "/apis/vexa.ai/v1/agentrunners/test-agent")
        .await
        .ok(runner("goldens/agentrunners/valid/test-agent.yaml"));
    api.expect(
        Method::GET,
        &format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes"),
    )
    .await
    .ok(ws.clone());
    expect_claim(&mut api, ns, ws, name).await;

    let secret = api
        .expect(Method::POST, &format!("/api/v1/namespaces/{ns}/secrets"))
        .await;
    // Created, never applied: an apply would take over a Secret of that name made by
    // someone else.
    secret.query(&[("fieldManager", "vexa-operator")]);
    // The golden's Secret carries a Redis user; this operator runs without Redis users.
    let mut want = golden("chat-message/secret.yaml");
    want["data"] = serde_json::json!({});
    assert_eq!(secret.body, want);
    secret.echo();

    let job = api
        .expect(
            Method::POST,
            &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        )
        .await;
    job.query(&[("fieldManager", "vexa-operator")]);
    assert_eq!(
        job.body,
        golden("chat-message/job.yaml"),
        "the reconciler applies exactly what the build golden pins"
    );
    job.echo();

    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "JobCreated", "Create", name);
    assert_eq!(event.body["note"], format!("created Job {name}"));
    event.echo();

    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    st.server_side_apply();
    let b = &st.body;
    assert_eq!(
        (b["apiVersion"].as_str(), b["kind"].as_str()),
        (Some("vexa.ai/v1"), Some("Dispatch"))
    );
    let s = &b["status"];
    assert_eq!(s["phase"], "starting");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(s["jobName"], name);
    assert_eq!(s["trust"], "trusted");
    assert_eq!(
        s["streams"],
        json!({"out": format!("unit:{ns}/{name}:out"), "in": format!("unit:{ns}/{name}:in")})
    );
    assert_eq!(s["sessionRef"], ".claude/sessions/main.session");
    assert_eq!(
        s["provenance"],
        json!([{"workspace": "alice-notes", "mode": "rw"}])
    );
    for (type_, status, reason) in [
        ("Valid", "True", "ReferencesResolved"),
        ("Authorized", "True", "Authorized"),
        ("Ready", "False", "Starting"),
    ] {
        let c = condition(s, type_);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some(status), Some(reason)),
            "{c}"
        );
        assert_eq!(c["observedGeneration"], 1);
    }
    assert!(
        s.get("podName").is_none() && s.get("stopReason").is_none(),
        "{s}"
    );
    st.status_written(&d);

    let (action, audit) = api.done_with_audit().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(audit, [serde_json::json!({"type": "admitted"})]);
}

/// (b) An untrusted trigger that asks to write: refused before anything is created.
#[tokio::test]
async fn an_event_that_wants_to_write_is_refused() {
    let ns = "mock-refuse";
    let name = "agent-alice-event-5f2a9c";
    let mut d = dispatch("goldens/dispatches/valid/email-event.yaml", ns);
    d["spec"]["workspaces"][0]["mode"] = "rw".into();
    let mut api = ApiServer::start(&d, &[]);

    api.expect(Method::GET, "/apis/vexa.ai/v1/agentrunners/claude-code")
        .await
        .ok(runner("goldens/agentrunners/valid/claude-code.yaml"));
    api.expect(
        Method::GET,
        &format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes"),
    )
    .await
    .ok(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    for tool in ["email-read", "email-send"] {
        api.expect(
            Method::GET,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/tools/{tool}"),
        )
        .await
        .ok(stored(&format!("goldens/tools/valid/{tool}.yaml"), ns, "5"));
    }
    // No claim, no model credential, no Secret, no Job: straight to the Warning and the status.
    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(
        &event,
        "Warning",
        "UntrustedTriggerWrites",
        "Authorize",
        name,
    );
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("use mode 'ro'"),
        "{}",
        event.body
    );
    event.echo();

    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    st.server_side_apply();
    let s = &st.body["status"];
    assert_eq!(s["phase"], "refused");
    let c = condition(s, "Authorized");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("UntrustedTriggerWrites"))
    );
    assert!(
        c["message"].as_str().unwrap().contains("\"alice-notes\""),
        "{c}"
    );
    assert_eq!(condition(s, "Valid")["status"], "True");
    assert!(
        s.get("jobName").is_none() && s.get("trust").is_none(),
        "nothing ran: {s}"
    );
    st.status_written(&d);

    let (action, audit) = api.done_with_audit().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["type"], "refused");
    assert_eq!(audit[0]["reason"], "UntrustedTriggerWrites");
}

/// A running Dispatch as the API server holds it after a stop request.
fn running(ns: &str) -> (Value, Value) {
    let name = "agent-alice-chat-main";
    let mut d = dispatch("goldens/dispatches/valid/chat-message.yaml", ns);
    d["spec"]["stop"] = true.into();
    d["metadata"]["generation"] = 2.into();
    d["status"] = json!({
        "observedGeneration": 1,
        "phase": "running",
        "jobName": name,
        "podName": format!("{name}-x7k2p"),
        "startTime": "2026-11-29T08:00:05Z",
        "trust": "trusted",
        "streams": {"out": format!("unit:{ns}/{name}:out"), "in": format!("unit:{ns}/{name}:in")},
        "sessionRef": ".claude/sessions/main.session",
        "provenance": [{"workspace": "alice-notes", "mode": "rw"}],
        "conditions": [
            {"type": "Valid", "status": "True", "reason": "ReferencesResolved", "message": "runner, workspaces and tools exist", "observedGeneration": 1, "lastTransitionTime": "2026-11-29T08:00:00Z"},
            {"type": "Authorized", "status": "True", "reason": "Authorized", "message": "the dispatch may run as specified", "observedGeneration": 1, "lastTransitionTime": "2026-11-29T08:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Running", "message": "the agent worker runs", "observedGeneration": 1, "lastTransitionTime": "2026-11-29T08:00:05Z"},
        ],
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-x7k2p"), "namespace": ns, "creationTimestamp": "2026-11-29T08:00:01Z",
                     "labels": {"vexa.ai/dispatch": name},
                     // Only a pod its Job controls is the run's.
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": JOB_UID, "controller": true}]},
        "spec": {"containers": [
            {"name": "worker", "image": "localhost/vexa-agent-worker:dev"},
            {"name": "agent", "image": "localhost/vexa-agent-worker:dev"},
        ]},
        // The worker first, as the operator builds the pod.
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "worker", "image": "localhost/vexa-agent-worker:dev", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-11-29T08:00:05Z"}},
        }, {
            "name": "agent", "image": "localhost/vexa-agent-worker:dev", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-11-29T08:00:05Z"}},
        }]},
    });
    (d, pod)
}

const JOB_UID: &str = "uid-job";

fn job_object(ns: &str, suspended: bool) -> Value {
    let mut job = golden("chat-message/job.yaml");
    job["metadata"]["namespace"] = ns.into();
    job["metadata"]["resourceVersion"] = "300".into();
    job["metadata"]["uid"] = JOB_UID.into();
    job["spec"]["suspend"] = suspended.into();
    job["status"] = json!({"active": 1, "ready": 1, "startTime": "2026-11-29T08:00:01Z"});
    job
}

/// (c) A stop request on a live run suspends its Job with a merge patch (the pod then
/// terminates gracefully) and records `stopping`. The Job and its pod are read from the
/// controller's caches.
#[tokio::test]
async fn a_stop_request_suspends_the_job() {
    let ns = "mock-stop";
    let name = "agent-alice-chat-main";
    let (d, pod) = running(ns);
    let jobs = [job_object(ns, false)];
    let pods = [pod];
    let mut api = ApiServer::start_with(
        &d,
        &[],
        Watched::Synced {
            jobs: &jobs,
            pods: &pods,
            references: &[],
        },
    );

    let job_path = format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}");
    let suspend = api.expect(Method::PATCH, &job_path).await;
    suspend
        .merge_patch()
        .query(&[("fieldManager", "vexa-operator-stop")]);
    assert_eq!(suspend.body, json!({"spec": {"suspend": true}}));
    suspend.ok(job_object(ns, true));

    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    st.server_side_apply();
    let s = &st.body["status"];
    assert_eq!(s["phase"], "stopping");
    assert_eq!(s["observedGeneration"], 2);
    let ready = condition(s, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Stopping"))
    );
    assert_eq!(ready["observedGeneration"], 2);
    assert_ne!(
        ready["lastTransitionTime"], "2026-11-29T08:00:05Z",
        "Ready changed status"
    );
    assert_eq!(s["startTime"], "2026-11-29T08:00:05Z");
    st.status_written(&d);

    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(60)));
}

/// A run that is stopping, as the API server holds it after (c).
fn stopping(ns: &str) -> (Value, Value) {
    let (mut d, pod) = running(ns);
    d["status"]["phase"] = "stopping".into();
    d["status"]["observedGeneration"] = 2.into();
    d["status"]["conditions"][2] = json!({"type": "Ready", "status": "False", "reason": "Stopping", "message": "stop requested; the pod is terminating", "observedGeneration": 2, "lastTransitionTime": "2026-11-29T08:01:00Z"});
    (d, pod)
}

/// (c') Once the Job is suspended, a later reconcile does not patch it again; with the Job and
/// its pod cached and nothing changed, it makes no call at all.
#[tokio::test]
async fn a_suspended_job_is_not_patched_again() {
    let ns = "mock-stop-again";
    let (d, pod) = stopping(ns);
    let jobs = [job_object(ns, true)];
    let pods = [pod];
    let api = ApiServer::start_with(
        &d,
        &[],
        Watched::Synced {
            jobs: &jobs,
            pods: &pods,
            references: &[],
        },
    );
    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(60)));
}

/// Just after a start, before the Job and pod watches have listed everything, the reconcile
/// reads the Job and the pods from the API server: an empty cache proves nothing.
#[tokio::test]
async fn before_the_caches_sync_the_job_and_pods_are_read_from_the_api() {
    let ns = "mock-unsynced";
    let name = "agent-alice-chat-main";
    let (d, pod) = stopping(ns);
    let mut api = ApiServer::start_with(&d, &[], Watched::NotSynced);

    api.expect(
        Method::GET,
        &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
    )
    .await
    .ok(job_object(ns, true));
    let pods = api
        .expect(Method::GET, &format!("/api/v1/namespaces/{ns}/pods"))
        .await;
    pods.query(&[("labelSelector", &format!("vexa.ai/dispatch={name}"))]);
    pods.ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}));
    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(60)));
}

/// A live run whose Job the cache has not seen (the watch lags): the API server is asked
/// before the run is declared over, and the run goes on.
#[tokio::test]
async fn a_job_missing_from_the_cache_is_confirmed_before_the_run_ends() {
    let ns = "mock-lagging-cache";
    let name = "agent-alice-chat-main";
    let (mut d, pod) = running(ns);
    d["spec"]["stop"] = false.into();
    d["metadata"]["generation"] = 1.into();
    let pods = [pod];
    let mut api = ApiServer::start_with(
        &d,
        &[],
        Watched::Synced {
            jobs: &[],
            pods: &pods,
            references: &[],
        },
    );

    api.expect(
        Method::GET,
        &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
    )
    .await
    .ok(job_object(ns, false));
    // Still running, as recorded: no status write.
    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(60)));
}

/// A live run whose Job is gone from the cache and from the API server: the run is over, and
/// the workspace it held is released.
#[tokio::test]
async fn a_deleted_job_ends_the_run() {
    let ns = "mock-job-deleted";
    let name = "agent-alice-chat-main";
    let (mut d, _pod) = running(ns);
    d["spec"]["stop"] = false.into();
    d["metadata"]["generation"] = 1.into();
    let mut api = ApiServer::start(&d, &[]);

    let (code, body) = status_404("jobs.batch", name);
    api.expect(
        Method::GET,
        &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
    )
    .await
    .respond(code, body);
    let ws_path = format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes");
    let ws = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    api.expect(Method::GET, &ws_path).await.ok(ws.clone());
    let lock_path = lock_path(ns, &ws);
    api.expect(Method::GET, &lock_path)
        .await
        .ok(lock(ns, &ws, Some(name)));
    let release = api.expect(Method::PUT, &lock_path).await;
    assert_eq!(
        release.body["metadata"]["resourceVersion"], "77",
        "the release is conditional on the lock it read"
    );
    assert!(
        release.body["spec"]["holderIdentity"].is_null(),
        "{}",
        release.body
    );
    release.echo();

    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Warning", "Stopped", "Finish", name);
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    let s = &st.body["status"];
    assert_eq!(s["phase"], "stopped");
    assert_eq!(s["stopReason"], "failed");
    st.status_written(&d);
    let (action, audit) = api.done_with_audit().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(
        audit,
        [serde_json::json!({"type": "stopped", "reason": "failed"})]
    );
}

/// A run whose worker went idle: the stop reason and the commits the worker reports in its
/// termination message reach the status (the rw workspace's `provenance` entry), and the
/// workspace is released.
#[tokio::test]
async fn a_finished_run_records_the_commits_the_worker_reports() {
    let ns = "mock-finished";
    let name = "agent-alice-chat-main";
    let (mut d, mut pod) = running(ns);
    d["spec"]["stop"] = false.into();
    d["metadata"]["generation"] = 1.into();
    let (base, result) = ("1".repeat(40), "2".repeat(40));
    let report = json!({
        "reason": "idle_timeout",
        "provenance": [
            {"workspace": "alice-notes", "base": base, "result": result},
            {"workspace": "not-in-this-run", "base": base, "result": result},
        ],
    });
    pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
        "exitCode": 0, "reason": "Completed", "message": report.to_string(),
        "startedAt": "2026-11-29T08:00:05Z", "finishedAt": "2026-11-29T08:02:05Z",
    }});
    let mut job = job_object(ns, false);
    job["status"] = json!({"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-29T08:02:06Z"},
    ]});
    let ws = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    let (jobs, pods, references) = ([job], [pod], [ws.clone()]);
    let mut api = ApiServer::start_with(
        &d,
        &[],
        Watched::Synced {
            jobs: &jobs,
            pods: &pods,
            references: &references,
        },
    );

    // The folder's lock is released with the commit the run ended on, for the Workspace's
    // headCommit.
    let lock_path = lock_path(ns, &ws);
    api.expect(Method::GET, &lock_path)
        .await
        .ok(lock(ns, &ws, Some(name)));
    let release = api.expect(Method::PUT, &lock_path).await;
    assert!(
        release.body["spec"]["holderIdentity"].is_null(),
        "{}",
        release.body
    );
    assert_eq!(
        release.body["metadata"]["annotations"]["vexa.ai/head-commit"],
        result.as_str()
    );
    release.echo();
    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "Stopped", "Finish", name);
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    let s = &st.body["status"];
    assert_eq!(s["phase"], "stopped");
    assert_eq!(s["stopReason"], "idle_timeout");
    assert_eq!(s["stopTime"], "2026-11-29T08:02:05Z");
    assert_eq!(
        s["provenance"],
        json!([{"workspace": "alice-notes", "mode": "rw", "baseCommit": base, "resultCommit": result}]),
        "only the run's own rw workspace"
    );
    st.status_written(&d);
    assert_eq!(api.done().await, Action::await_change());
}

/// A runner with a model credential: the operator checks that it exists in its own namespace,
/// and the per-dispatch Secret gets only the dispatch's token at the model gateway; neither the
/// Secret, the Job nor the status holds the credential.
#[tokio::test]
async fn the_model_credential_stays_in_the_operators_namespace() {
    let ns = "team-a"; // the build goldens' namespace
    let name = "morning-brief-28912400";
    let d = dispatch("goldens/dispatches/valid/scheduled-routine.yaml", ns);
    let notes = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    // The runner, the workspaces and the tool are in the controller's caches: none is read
    // from the API server; the lock of the folder to write is read fresh.
    let references = [
        runner("goldens/agentrunners/valid/claude-code.yaml"),
        notes.clone(),
        ready(stored(
            "goldens/workspaces/valid/team-handbook.yaml",
            ns,
            "12",
        )),
        stored("operator/tests/fixtures/inputs/calendar-read.yaml", ns, "3"),
        // The schedule acts for alice under her grant, and reads the team's handbook under
        // the team's.
        stored("goldens/identities/valid/alice.yaml", ns, "5"),
        stored("goldens/identities/valid/team-a.yaml", ns, "6"),
    ];
    let mut api = ApiServer::start_with(
        &d,
        &[],
        Watched::Synced {
            jobs: &[],
            pods: &[],
            references: &references,
        },
    );

    // The credential is checked before the claim, so a missing Secret never holds a workspace.
    let b64 = serde_json::to_value(k8s_openapi::ByteString(CREDENTIAL.into())).unwrap();
    api.expect(
        Method::GET,
        "/api/v1/namespaces/vexa-system/secrets/anthropic",
    )
    .await
    .ok(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic", "namespace": "vexa-system"},
               "data": {"api-key": b64, "other": "b3RoZXI="}}));

    // Only the rw workspace is claimed.
    expect_claim(&mut api, ns, notes, name).await;

    let secret = api
        .expect(Method::POST, &format!("/api/v1/namespaces/{ns}/secrets"))
        .await;
    // Created, never applied: an apply would take over a Secret of that name made by
    // someone else.
    secret.query(&[("fieldManager", "vexa-operator")]);
    let data = secret.body["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["model-token"]);
    let token: k8s_openapi::ByteString =
        serde_json::from_value(data["model-token"].clone()).unwrap();
    let token = vexa_core::model::GatewayToken::verify(
        b"mock-gateway-key-of-32-bytes-len",
        std::str::from_utf8(&token.0).unwrap(),
    )
    .unwrap();
    assert_eq!((token.namespace.as_str(), token.name.as_str()), (ns, name));
    let text = secret.body.to_string();
    assert!(!text.contains(CREDENTIAL) && !text.contains(b64.as_str().unwrap()));
    secret.echo();

    let job = api
        .expect(
            Method::POST,
            &format!("/apis/batch/v1/namespaces/{ns}/jobs"),
        )
        .await;
    job.query(&[("fieldManager", "vexa-operator")]);
    assert_eq!(job.body, golden("scheduled-routine/job.yaml"));
    job.echo();

    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "JobCreated", "Create", name);
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    let text = st.body.to_string();
    assert!(
        !text.contains(CREDENTIAL) && !text.contains(b64.as_str().unwrap()),
        "the status holds the credential: {text}"
    );
    assert_eq!(
        st.body["status"]["provenance"],
        json!([{"workspace": "alice-notes", "mode": "rw"}, {"workspace": "team-handbook", "mode": "ro"}])
    );
    st.status_written(&d);

    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(60)));
}

/// The rw workspace is held by another live dispatch: wait, create nothing.
#[tokio::test]
async fn a_busy_workspace_queues_the_dispatch() {
    let ns = "mock-busy";
    let name = "agent-alice-chat-main";
    let d = dispatch("goldens/dispatches/valid/chat-message.yaml", ns);
    let ws = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    let mut holder = dispatch("goldens/dispatches/valid/scheduled-routine.yaml", ns);
    holder["metadata"]["uid"] = "uid-holder".into();
    holder["status"] = json!({"phase": "running"});
    let mut api = ApiServer::start(&d, &[]);

    api.expect(Method::GET, "/apis/vexa.ai/v1/agentrunners/test-agent")
        .await
        .ok(runner("goldens/agentrunners/valid/test-agent.yaml"));
    let ws_path = format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes");
    api.expect(Method::GET, &ws_path).await.ok(ws.clone());
    api.expect(Method::GET, &lock_path(ns, &ws)).await.ok(lock(
        ns,
        &ws,
        Some("morning-brief-28912400"),
    ));
    api.expect(
        Method::GET,
        &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/morning-brief-28912400"),
    )
    .await
    .ok(holder);

    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "Queued", "Schedule", name);
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("morning-brief-28912400")
    );
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    let s = &st.body["status"];
    assert_eq!(s["phase"], "queued");
    let q = condition(s, "Queued");
    assert_eq!(
        (q["status"].as_str(), q["reason"].as_str()),
        (Some("True"), Some("WorkspaceBusy"))
    );
    assert!(s.get("jobName").is_none(), "{s}");
    st.status_written(&d);

    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(30)));
}

/// First come, first served: an older dispatch queued for the same workspace goes first, even
/// when the workspace is free at this moment.
#[tokio::test]
async fn an_older_queued_dispatch_goes_first() {
    let ns = "mock-fifo";
    let name = "agent-alice-chat-main";
    let d = dispatch("goldens/dispatches/valid/chat-message.yaml", ns);
    let mut older = dispatch("goldens/dispatches/valid/resume-session.yaml", ns);
    older["metadata"]["uid"] = "uid-older".into();
    older["metadata"]["creationTimestamp"] = "2026-11-29T07:59:00Z".into();
    older["status"] = json!({"phase": "queued"});
    let ws = ready(stored(
        "goldens/workspaces/valid/alice-notes.yaml",
        ns,
        "41",
    ));
    let mut api = ApiServer::start(&d, &[older]);

    api.expect(Method::GET, "/apis/vexa.ai/v1/agentrunners/test-agent")
        .await
        .ok(runner("goldens/agentrunners/valid/test-agent.yaml"));
    let ws_path = format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes");
    api.expect(Method::GET, &ws_path).await.ok(ws.clone());
    let (code, body) = status_404("leases.coordination.k8s.io", "lock");
    api.expect(Method::GET, &lock_path(ns, &ws))
        .await
        .respond(code, body);
    // The lock is free, but no lock is created: the claim is left to the older dispatch.
    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "Queued", "Schedule", name);
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("agent-alice-chat-main-2")
    );
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    assert_eq!(st.body["status"]["phase"], "queued");
    st.status_written(&d);
    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(30)));
}

/// A workspace whose folder is not prepared yet: the dispatch waits with the Workspace's own
/// reason, takes no lock and creates nothing; the Workspace's change wakes it (no poll).
#[tokio::test]
async fn a_workspace_that_is_not_ready_queues_the_dispatch() {
    let ns = "mock-not-ready";
    let name = "agent-alice-chat-main";
    let d = dispatch("goldens/dispatches/valid/chat-message.yaml", ns);
    let mut ws = stored("goldens/workspaces/valid/alice-notes.yaml", ns, "41");
    ws["status"] = json!({"conditions": [
        {"type": "Ready", "status": "False", "reason": "Preparing",
         "message": "preparing folder \"alice/notes\" on claim \"workspaces\"",
         "lastTransitionTime": "2026-11-29T07:00:00Z", "observedGeneration": 1}]});
    let mut api = ApiServer::start(&d, &[]);

    api.expect(Method::GET, "/apis/vexa.ai/v1/agentrunners/test-agent")
        .await
        .ok(runner("goldens/agentrunners/valid/test-agent.yaml"));
    api.expect(
        Method::GET,
        &format!("/apis/vexa.ai/v1/namespaces/{ns}/workspaces/alice-notes"),
    )
    .await
    .ok(ws);
    // No lock read or written, no Secret, no Job.
    let event = api
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        )
        .await;
    assert_event(&event, "Normal", "Queued", "Schedule", name);
    event.echo();
    let st = api
        .expect(
            Method::PATCH,
            &format!("/apis/vexa.ai/v1/namespaces/{ns}/dispatches/{name}/status"),
        )
        .await;
    let s = &st.body["status"];
    assert_eq!(s["phase"], "queued");
    let q = condition(s, "Queued");
    assert_eq!(q["reason"], "WorkspaceNotReady");
    assert!(
        q["message"].as_str().unwrap().contains("Preparing"),
        "the workspace's own reason is passed on: {q}"
    );
    assert!(s.get("jobName").is_none(), "{s}");
    st.status_written(&d);
    assert_eq!(api.done().await, Action::requeue(Duration::from_secs(30)));
}
