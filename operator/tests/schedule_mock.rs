//! One Schedule reconcile against a mocked API server (`tower-test`): the exact calls, in
//! order. A run is due; its Dispatch exists already (a retry after a status write that did not
//! land): the create meets `AlreadyExists` and the Dispatch is adopted, never doubled; the
//! status is written by server-side apply with the operator's field manager, and no `Fired`
//! event or fire is counted for it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use vexa_operator::config::Config;
use vexa_operator::controllers::schedule::{Reconciler, reconcile};
use vexa_operator::runtime::context::Context;
use vexa_operator::runtime::metrics::Metrics;

const STEP: Duration = Duration::from_secs(10);

struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: Option<String>,
    body: Value,
}

fn schedule() -> Value {
    // Every minute, created just before the current minute began: that minute is due now,
    // and nothing else.
    let now = chrono::Utc::now().timestamp();
    let created = chrono::DateTime::from_timestamp(now - now % 60 - 1, 0).unwrap();
    json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule",
        "metadata": {
            "name": "digest", "namespace": "team", "uid": "uid-digest", "generation": 1,
            "resourceVersion": "10",
            "creationTimestamp": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        },
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Allow",
            "subject": "alice", "grant": "nightly",
            "template": {
                "runner": "claude-code",
                "workspaces": [{"name": "alice-notes", "mode": "ro"}],
                "start": {"entrypoint": {"path": "routines/digest.md"}}
            }
        }
    })
}

fn identity() -> Value {
    json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity",
        "metadata": {"name": "alice", "namespace": "team", "resourceVersion": "3"},
        "spec": {"subject": "alice", "grants": [{
            "name": "nightly", "launcher": "schedule:team/digest",
            "workspaces": [{"name": "alice-notes", "mode": "rw"}]
        }]}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "vexa.ai/v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

#[tokio::test]
async fn a_due_run_whose_dispatch_exists_is_adopted_and_the_status_applied() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let audit_dir = tempfile::tempdir().unwrap();
    let config = <Config as clap::Parser>::try_parse_from([
        "vexa-operator",
        &format!("--audit-dir={}", audit_dir.path().display()),
    ])
    .unwrap();
    let base = Context {
        signing_keys: None,
        audit: vexa_operator::runtime::audit::Audit::open(audit_dir.path(), None, 64).unwrap(),
        gateway_key: None,
        redis_users: None,
        client,
        config: Arc::new(config),
        metrics: Arc::new(Metrics::new()),
        reporter: Reporter {
            controller: "vexa-operator".into(),
            instance: None,
        },
    };
    let metrics = base.metrics.clone();
    let object: vexa_crds::Schedule = serde_json::from_value(schedule()).unwrap();
    let run = tokio::spawn(reconcile(Arc::new(object), Arc::new(Reconciler::new(base))));

    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(STEP, handle.next_request()).await;
        let Ok(Some((request, send))) = next else {
            break;
        };
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let call = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned()),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let (status, reply) = match (call.method.clone(), call.path.as_str()) {
            (Method::GET, "/apis/vexa.ai/v1/namespaces/team/schedules/digest") => {
                (StatusCode::OK, schedule())
            }
            (Method::GET, "/apis/vexa.ai/v1/namespaces/team/dispatches") => {
                (StatusCode::OK, list("Dispatch", vec![]))
            }
            (Method::GET, "/apis/vexa.ai/v1/namespaces/team/identities") => {
                (StatusCode::OK, list("Identity", vec![identity()]))
            }
            (Method::POST, "/apis/vexa.ai/v1/namespaces/team/dispatches") => (
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "already exists", "reason": "AlreadyExists", "code": 409}),
            ),
            (Method::PATCH, "/apis/vexa.ai/v1/namespaces/team/schedules/digest/status") => {
                let mut o = schedule();
                o["status"] = call.body["status"].clone();
                (StatusCode::OK, o)
            }
            (Method::POST, "/apis/events.k8s.io/v1/namespaces/team/events") => {
                (StatusCode::OK, call.body.clone())
            }
            (m, p) => panic!("unexpected call {m} {p} {}", call.body),
        };
        let mut response = Response::new(Body::from(serde_json::to_vec(&reply).unwrap()));
        *response.status_mut() = status;
        send.send_response(response);
        let last = call.path.ends_with("/events");
        seen.push(call);
        if last {
            break;
        }
    }
    let action = tokio::time::timeout(STEP, run)
        .await
        .expect("the reconcile returns")
        .unwrap()
        .expect("the reconcile succeeds");
    assert!(
        format!("{action:?}").contains("requeue_after: Some("),
        "{action:?}"
    );

    let calls: Vec<String> = seen
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        calls,
        vec![
            "GET /apis/vexa.ai/v1/namespaces/team/schedules/digest",
            "GET /apis/vexa.ai/v1/namespaces/team/dispatches",
            "GET /apis/vexa.ai/v1/namespaces/team/identities",
            "POST /apis/vexa.ai/v1/namespaces/team/dispatches",
            "PATCH /apis/vexa.ai/v1/namespaces/team/schedules/digest/status",
        ]
    );
    // Only this Schedule's Dispatches, by label (the owner UID is checked too).
    assert_eq!(seen[1].query, "&labelSelector=vexa.ai%2Fschedule%3Ddigest");
    let created = &seen[3].body;
    let name = created["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("digest-"), "{name}");
    assert_eq!(created["metadata"]["labels"]["vexa.ai/schedule"], "digest");
    assert_eq!(
        created["metadata"]["ownerReferences"][0]["uid"],
        "uid-digest"
    );
    assert_eq!(
        created["spec"]["identity"]["launcher"],
        "schedule:team/digest"
    );
    assert_eq!(created["spec"]["trigger"], "scheduled");
    let apply = &seen[4];
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        apply.query.contains("fieldManager=vexa-operator"),
        "{}",
        apply.query
    );
    assert!(apply.query.contains("force=true"), "{}", apply.query);
    assert_eq!(apply.body["status"]["active"], json!([name]));
    assert!(apply.body["status"]["consideredUntil"].is_string());
    // Adopted, not created: no `Fired` event (no call above), not counted as a fire.
    let text = metrics.encode().unwrap();
    assert!(text.contains("vexa_schedule_fires_total 0"), "{text}");
}
