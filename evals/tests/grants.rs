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
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vexa_core::pod::layout::secret_key;
use vexa_crds::{Dispatch, Identity, Tool, Trigger, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, condition, describe, fake_runner, free_port, phase,
    stop_reason, wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, wait_for};
use vexa_operator::model_gateway::JWKS_PATH;
use vexa_operator::runtime::signing_keys::{SECRET_NAME, SigningKeys};
use vexa_policy::token::{Jwks, KeySet, Verifier};

const TIMEOUT: Duration = Duration::from_secs(120);

/// The operator's namespace (its token keys live there) and its model gateway's port (which
/// serves the JWKS too). Tokens last 60 s here, so a run sees its token renewed.
static OPERATOR: OnceLock<(Operator, String, u16)> = OnceLock::new();

async fn operator(admin: &Client) -> (String, u16) {
    if OPERATOR.get().is_none() {
        let home = TestNamespace::new(admin, "grants-home").await;
        let port = free_port();
        let _ = OPERATOR.set((
            Operator::start(&[
                "--job-ttl-seconds",
                "30",
                "--worker-image",
                FAKE_WORKER_IMAGE,
                "--namespace",
                &home.name,
                "--model-gateway-addr",
                &format!("127.0.0.1:{port}"),
                "--token-lifetime-seconds",
                "60",
            ]),
            home.name.clone(),
            port,
        ));
        std::mem::forget(home);
    }
    let (operator, home, port) = OPERATOR.get().unwrap();
    operator.ready().await;
    (home.clone(), *port)
}

/// The schedule every dispatch here is launched by.
fn schedule(ns: &str) -> String {
    format!("schedule:{ns}/nightly")
}

/// A namespace with alice's two workspaces, two tools (one gated), and alice's Identity: the
/// schedule `nightly` may read `alice-notes` and use `search`; `weekly`'s grant has expired.
async fn world(admin: &Client) -> (TestNamespace, String) {
    operator(admin).await;
    let ns = TestNamespace::new(admin, "grants").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(admin, &ns, &runner, json!({})).await;
    workspace_volume(admin, &ns.name).await;
    workspace(admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace(admin, &ns.name, "alice-drafts", "alice/drafts", "rw").await;
    for (name, grant) in [("search", "auto"), ("send-mail", "gate")] {
        let tool: Tool = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Tool", "metadata": {"name": name},
            "spec": {"toolName": name.replace('-', "_"), "scope": format!("{name}:use"), "grant": grant,
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

/// The run's token, as its Secret holds it.
async fn token_of(admin: &Client, ns: &str, dispatch: &str) -> Option<String> {
    let secret = Api::<Secret>::namespaced(admin.clone(), ns)
        .get_opt(&vexa_policy::secret_name(dispatch))
        .await
        .unwrap()?;
    let token = secret.data?.remove(secret_key::DISPATCH_TOKEN)?;
    Some(String::from_utf8(token.0).unwrap())
}

/// The keys as the operator keeps them (its Secret).
async fn keys(admin: &Client, home: &str) -> KeySet {
    let secret = Api::<Secret>::namespaced(admin.clone(), home)
        .get(SECRET_NAME)
        .await
        .unwrap();
    let data = secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    KeySet::from_secret_data(&data).unwrap()
}

/// The JWKS the operator serves (an HTTP/1.0 GET on its gateway port).
async fn served_jwks(port: u16) -> Jwks {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(format!("GET {JWKS_PATH} HTTP/1.0\r\nHost: operator\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Issue 10, evals 1 and 3 on the cluster: the token of a schedule's run carries exactly what
/// the grant allows, the pod's SPIFFE ID and the launcher as actor; it verifies against the
/// JWKS the operator serves; a key rotation while the run lasts keeps its token valid, and the
/// run gets its next token, signed by the new key, before the first expires.
#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_running_dispatch_keeps_a_valid_token_across_key_rotation() {
    let admin = client().await;
    let (ns, runner) = world(&admin).await;
    let (home, port) = operator(&admin).await;
    let nightly = schedule(&ns.name);
    let mut d = scheduled(
        "long-nightly",
        &runner,
        &nightly,
        &[("alice-notes", WorkspaceMode::ReadOnly)],
        &["search"],
    );
    d.spec.start = serde_json::from_value(json!({"entrypoint": {"inline": "sleep 75"}})).unwrap();
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches.create(&PostParams::default(), &d).await.unwrap();
    let first = wait_for("the run's token in its Secret", TIMEOUT, || {
        token_of(&admin, &ns.name, "long-nightly")
    })
    .await;

    let verify = |jwks: &Jwks, token: &str| {
        Verifier::new(jwks, "vexa-operator", "vexa-gateway")
            .unwrap()
            .verify(token, now())
    };
    let claims = verify(&served_jwks(port).await, &first).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.act.sub, nightly);
    assert_eq!(claims.jti, format!("{}/long-nightly", ns.name));
    assert_eq!(
        claims.cnf.spiffe_id,
        format!("spiffe://vexa.local/ns/{}/dispatch/long-nightly", ns.name)
    );
    assert_eq!(
        claims.workspace("alice-notes"),
        Some(WorkspaceMode::ReadOnly)
    );
    assert_eq!(claims.workspace("alice-drafts"), None);
    assert_eq!(claims.tool("search"), Some(vexa_crds::Grant::Auto));
    assert_eq!(claims.tool("send-mail"), None);
    assert!(
        claims.exp - claims.iat <= 60,
        "minutes, not hours: {claims:?}"
    );
    // Another key set (an attacker's, or a stale one) does not verify it.
    let stranger = KeySet::generate(now()).unwrap().jwks();
    assert!(verify(&stranger, &first).is_err());

    // Rotate the operator's keys now (as a replica whose rotation period passed would).
    let old_kid = keys(&admin, &home).await.current_kid().to_owned();
    let rotator = SigningKeys::load_or_create(admin.clone(), &home, Duration::from_secs(60))
        .await
        .unwrap();
    drop(rotator);
    let mut rotated = keys(&admin, &home).await;
    if rotated.current_kid() == old_kid {
        // The key was younger than a minute: force it.
        rotated
            .rotate(
                now() + 3600,
                Duration::from_secs(60),
                Duration::from_secs(3600),
            )
            .unwrap();
        let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = rotated
            .to_secret_data()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
            .collect();
        Api::<Secret>::namespaced(admin.clone(), &home)
            .patch(
                SECRET_NAME,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&json!({"data": data})),
            )
            .await
            .unwrap();
    }
    let new_kid = keys(&admin, &home).await.current_kid().to_owned();
    assert_ne!(new_kid, old_kid);
    // The operator publishes the new key within its refresh period and keeps the old one.
    let jwks = wait_for(
        "the served JWKS to list the new key",
        Duration::from_secs(90),
        || async {
            let jwks = served_jwks(port).await;
            jwks.keys.iter().any(|k| k.kid == new_kid).then_some(jwks)
        },
    )
    .await;
    assert!(jwks.keys.iter().any(|k| k.kid == old_kid), "{jwks:?}");
    verify(&jwks, &first).expect("the running dispatch's token stays valid across the rotation");
    // Its next token comes before the first expires, signed by the new key.
    let next = wait_for("the run's next token", Duration::from_secs(60), || async {
        token_of(&admin, &ns.name, "long-nightly")
            .await
            .filter(|t| *t != first)
    })
    .await;
    let renewed = verify(&jwks, &next).unwrap();
    assert!(
        renewed.iat > claims.iat && renewed.exp > claims.exp,
        "{renewed:?}"
    );
    println!(
        "token iat {} → {} (keys {old_kid} → {new_kid} published), renewed after {} s",
        claims.iat,
        renewed.iat,
        renewed.iat - claims.iat
    );
}
