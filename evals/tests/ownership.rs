//! The operator's children are its own (issue 9, least privilege): a tenant who may create
//! Secrets and Jobs can pre-create them under the names a Dispatch's children will take. Such
//! an object is never adopted, changed or deleted; the run ends `start_failed` with a reason
//! that names it, and releases its workspace.
//!
//! The operator runs in this process on the fake worker (`evals/fake-worker`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, Resource};
use serde_json::json;
use vexa_crds::Dispatch;
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
            Operator::start(&[
                "--job-ttl-seconds",
                "5",
                "--worker-image",
                FAKE_WORKER_IMAGE,
            ])
        })
        .ready()
        .await;
}

/// Labels that make a squatter look like the operator's child to a label selector.
fn lookalike_labels(dispatch: &str) -> serde_json::Value {
    json!({
        "app.kubernetes.io/managed-by": "vexa-operator",
        "app.kubernetes.io/name": "vexa-dispatch",
        "vexa.ai/dispatch": dispatch,
    })
}

async fn squat_secret(client: &Client, ns: &str, dispatch: &str) -> Secret {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": vexa_policy::secret_name(dispatch), "labels": lookalike_labels(dispatch)},
        "stringData": {"redis-url": "redis://attacker.example:6379"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap()
}

async fn squat_job(client: &Client, ns: &str, dispatch: &str) -> Job {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": vexa_policy::job_name(dispatch), "labels": lookalike_labels(dispatch)},
        "spec": {
            "suspend": true,
            "template": {"metadata": {"labels": lookalike_labels(dispatch)}, "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "squatter", "image": FAKE_WORKER_IMAGE}],
            }},
        },
    }))
    .unwrap();
    Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .unwrap()
}

/// Who has written the object (its managed fields' managers): the operator must not be one.
fn managers(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    let mut m: Vec<String> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.is_none())
        .filter_map(|f| f.manager.clone())
        .collect();
    m.sort();
    m.dedup();
    assert!(!m.iter().any(|m| m.starts_with("vexa-operator")), "{m:?}");
    m
}

/// Waits for the run to be over and cleaned up, and checks it ended `start_failed` naming the
/// squatter.
async fn refused_start(dispatches: &Api<Dispatch>, name: &str, kind: &str) -> Dispatch {
    let d = wait_dispatch(dispatches, name, "phase destroyed", TIMEOUT, |d| {
        phase(d) == "destroyed"
    })
    .await;
    assert_eq!(stop_reason(&d), "start_failed", "{}", describe(&d));
    let (_, _, message) = condition(&d, "Finished").expect("a Finished condition");
    assert!(
        message.contains(&format!("a {kind} named"))
            && message.contains("does not belong to this Dispatch"),
        "{message}"
    );
    println!("{name}: {message}");
    d
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_precreated_secret_or_job_is_neither_adopted_nor_deleted() {
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "ownership").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(&client, &ns, &runner, json!({})).await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &ns.name, "alice-notes").await;
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);

    // A Secret under the name of the run's credentials: the worker would have read the
    // squatter's values.
    let secret = squat_secret(&client, &ns.name, "squat-secret").await;
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("squat-secret", &runner, "echo ran"),
        )
        .await
        .unwrap();
    refused_start(&dispatches, "squat-secret", "Secret").await;
    let after = secrets
        .get(&secret.meta().name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            &after.metadata.uid,
            &after.metadata.resource_version,
            &after.metadata.owner_references
        ),
        (
            &secret.metadata.uid,
            &secret.metadata.resource_version,
            &None
        ),
        "the squatting Secret is neither adopted, changed nor deleted"
    );
    assert_eq!(managers(&after.metadata), managers(&secret.metadata));
    assert!(
        jobs.get_opt("squat-secret").await.unwrap().is_none(),
        "no Job is created over a foreign Secret"
    );

    // A Job under the run's name, labelled like the operator's: never followed, nor deleted.
    let job = squat_job(&client, &ns.name, "squat-job").await;
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("squat-job", &runner, "echo ran"),
        )
        .await
        .unwrap();
    refused_start(&dispatches, "squat-job", "Job").await;
    let after = jobs.get("squat-job").await.unwrap();
    // (The Job controller writes its status, so its resourceVersion moves: nothing else may.)
    assert_eq!(
        (
            &after.metadata.uid,
            &after.metadata.owner_references,
            &after.spec
        ),
        (&job.metadata.uid, &None, &job.spec),
        "the squatting Job is neither adopted, changed nor deleted"
    );
    assert_eq!(managers(&after.metadata), managers(&job.metadata));
    assert!(
        secrets
            .get_opt(&vexa_policy::secret_name("squat-job"))
            .await
            .unwrap()
            .is_none(),
        "the run's own Secret does not outlive it"
    );

    // Both refused runs released the rw workspace: the next one takes it and completes.
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("after", &runner, "echo ran"),
        )
        .await
        .unwrap();
    let done = wait_dispatch(&dispatches, "after", "a stop reason", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_precreated_prepare_job_does_not_prepare_a_workspace() {
    operator().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "ownership-ws").await;
    workspace_volume(&client, &ns.name).await;
    // The prepare Job of Workspace `squatted` at generation 1; its report would have set the
    // Workspace's head commit.
    let job = squat_job(&client, &ns.name, "squatted-prepare-1").await;
    workspace(&client, &ns.name, "squatted", "squatted", "rw").await;
    let workspaces = Api::<vexa_crds::Workspace>::namespaced(client.clone(), &ns.name);
    let message = vexa_evals::wait_for(
        "the Workspace to refuse the squatting prepare Job",
        TIMEOUT,
        || async {
            let ws = workspaces.get("squatted").await.ok()?;
            ws.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "PrepareFailed")
                .map(|c| c.message)
                .filter(|m| m.contains("does not control"))
        },
    )
    .await;
    println!("squatted: {message}");
    let after = Api::<Job>::namespaced(client.clone(), &ns.name)
        .get("squatted-prepare-1")
        .await
        .unwrap();
    assert_eq!(
        (
            &after.metadata.uid,
            &after.metadata.owner_references,
            &after.spec
        ),
        (&job.metadata.uid, &None, &job.spec),
        "the squatting prepare Job is neither adopted, changed nor deleted"
    );
    assert_eq!(managers(&after.metadata), managers(&job.metadata));
}
