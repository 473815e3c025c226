//! Who may act (issue 9, eval 1), on a real cluster: the chart's ValidatingAdmissionPolicies
//! meet a real tenant (bob, a client certificate the cluster signed, with RBAC to create
//! Dispatches in one namespace), and the operator checks the chain of custody again for what
//! admission lets through (here: the admin, whom admission exempts).
//!
//! The operator runs in this process on the fake worker (`evals/fake-worker`); the admission
//! objects are the chart's own (`helm template --show-only templates/admission.yaml`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use vexa_crds::{Dispatch, Trigger, Workspace, WorkspaceMode, WorkspaceUse};
use vexa_evals::admission::ChartAdmission;
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, WORKSPACE_CLAIM, chat_dispatch, condition, describe, fake_runner, phase,
    stop_reason, wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::users::user_client;
use vexa_evals::{TestNamespace, client, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn operator() {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR
        .get_or_init(|| {
            Operator::start(&[
                "--job-ttl-seconds",
                "30",
                "--worker-image",
                FAKE_WORKER_IMAGE,
                "--ceiling-max-lifetime-seconds",
                "7200",
                "--ceiling-memory",
                "4Gi",
            ])
        })
        .ready()
        .await;
}

/// A namespace with a runner on the fake worker and two ready workspaces on one volume:
/// `alice-notes` (owner alice) and `bob-notes` (owner bob).
struct World {
    admin: Client,
    ns: TestNamespace,
    runner: String,
}

impl World {
    async fn new(prefix: &str) -> Self {
        operator().await;
        let admin = client().await;
        let ns = TestNamespace::new(&admin, prefix).await;
        let runner = format!("fake-{}", ns.name);
        fake_runner(&admin, &ns, &runner, json!({})).await;
        workspace_volume(&admin, &ns.name).await;
        workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
        let bobs: Workspace = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Workspace", "metadata": {"name": "bob-notes"},
            "spec": {"id": "bob-notes", "owner": "bob", "defaultMode": "rw",
                     "storage": {"persistentVolumeClaim": {"claimName": WORKSPACE_CLAIM, "subPath": "bob/notes"}}},
        }))
        .unwrap();
        Api::<Workspace>::namespaced(admin.clone(), &ns.name)
            .create(&PostParams::default(), &bobs)
            .await
            .unwrap();
        workspace_ready(&admin, &ns.name, "alice-notes").await;
        workspace_ready(&admin, &ns.name, "bob-notes").await;
        Self { admin, ns, runner }
    }

    /// A chat Dispatch `name` on `workspace`, with `subject` and `launcher`.
    fn dispatch(
        &self,
        name: &str,
        subject: &str,
        launcher: &str,
        workspace: &str,
        mode: WorkspaceMode,
    ) -> Dispatch {
        let mut d = chat_dispatch(name, &self.runner, "echo ran");
        d.spec.identity.subject = subject.into();
        d.spec.identity.launcher = launcher.into();
        d.spec.workspaces = vec![WorkspaceUse {
            name: workspace.into(),
            mode: Some(mode),
        }];
        d
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(client.clone(), &self.ns.name)
    }

    /// A Role with `rules`, bound to the user `user`.
    async fn grant(&self, name: &str, user: &str, rules: Value) {
        let role: Role =
            serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap();
        self.api::<Role>(&self.admin)
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .unwrap();
        self.api::<RoleBinding>(&self.admin)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }

    /// Dispatch Jobs in the namespace (the Workspace controller's prepare Jobs are not runs).
    async fn run_jobs(&self) -> Vec<String> {
        self.api::<Job>(&self.admin)
            .list(&ListParams::default().labels("app.kubernetes.io/name=vexa-dispatch"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }
}

/// The message of an API refusal, or a panic naming what was let through.
fn refusal(result: Result<Dispatch, kube::Error>, what: &str) -> String {
    match result {
        Ok(d) => panic!("{what} was admitted: {}", describe(&d)),
        Err(kube::Error::Api(s)) => format!("{} {}", s.code, s.message),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_tenant_acts_only_as_themselves() {
    let w = World::new("admission").await;
    let _policies = ChartAdmission::install(&[]);
    // bob may create and read Dispatches here, and write their status as far as RBAC goes:
    // what refuses him below is admission, not RBAC.
    w.grant(
        "dispatcher",
        "bob",
        json!([
            {"apiGroups": ["vexa.ai"], "resources": ["dispatches"], "verbs": ["create", "get", "list", "watch", "patch"]},
            {"apiGroups": ["vexa.ai"], "resources": ["dispatches/status"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": ["vexa.ai"], "resources": ["workspaces"], "verbs": ["get", "list"]},
            {"apiGroups": ["vexa.ai"], "resources": ["identities"], "verbs": ["create", "get", "update", "patch", "delete"]},
        ]),
    )
    .await;
    let bob = user_client(&w.admin, "bob").await;
    let as_bob = w.api::<Dispatch>(&bob);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };

    // The binding takes effect once the API server's informers have it.
    let probe = w.dispatch(
        "probe",
        "alice",
        "user:alice",
        "alice-notes",
        WorkspaceMode::ReadOnly,
    );
    wait_for(
        "the chart's admission policy to be in force",
        Duration::from_secs(30),
        || async {
            match as_bob.create(&dry_run, &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains("LauncherNotRequester") => Some(()),
                _ => None,
            }
        },
    )
    .await;

    let mut event_rw = w.dispatch(
        "bob-event",
        "bob",
        "user:bob",
        "bob-notes",
        WorkspaceMode::ReadWrite,
    );
    event_rw.spec.trigger = Trigger::Event;
    let mut schedule = w.dispatch(
        "bob-schedule",
        "alice",
        &format!("schedule:{}/nightly", w.ns.name),
        "alice-notes",
        WorkspaceMode::ReadWrite,
    );
    schedule.spec.trigger = Trigger::Scheduled;
    let cases = [
        (
            w.dispatch(
                "for-alice",
                "alice",
                "user:bob",
                "alice-notes",
                WorkspaceMode::ReadWrite,
            ),
            "SubjectNotPermitted: user bob may not act for subject \"alice\"",
        ),
        (
            w.dispatch(
                "as-alice",
                "alice",
                "user:alice",
                "alice-notes",
                WorkspaceMode::ReadWrite,
            ),
            "LauncherNotRequester: launcher must be user:bob (the requesting user), not \"user:alice\"",
        ),
        (schedule, "LauncherReserved: launcher \"schedule:"),
        (
            event_rw,
            "TriggerNotPersons: a person's dispatch has trigger 'message'; 'event'",
        ),
    ];
    for (d, expected) in &cases {
        let name = d.metadata.name.clone().unwrap();
        let message = refusal(as_bob.create(&PostParams::default(), d).await, &name);
        assert!(
            message.contains(expected) && message.starts_with("403"),
            "{name}: wanted a 403 with {expected:?}, got: {message}"
        );
        println!("refused at admission: {name}: {message}");
        assert!(
            w.api::<Dispatch>(&w.admin)
                .get_opt(&name)
                .await
                .unwrap()
                .is_none(),
            "{name} must not exist"
        );
    }
    assert_eq!(
        w.run_jobs().await,
        Vec::<String>::new(),
        "no Job for a refused Dispatch"
    );

    // Nor may bob write himself into alice's Identity (which the operator trusts); his own he may.
    let identities = w.api::<vexa_crds::Identity>(&bob);
    let identity = |subject: &str| -> vexa_crds::Identity {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": subject},
            "spec": {"subject": subject, "kubernetesUsers": ["bob"]},
        }))
        .unwrap()
    };
    // (Each policy reaches the API server's informers on its own: wait for this one too.)
    let alices = identity("alice");
    let err = wait_for(
        "the chart's Identity policy to be in force",
        Duration::from_secs(30),
        || async {
            match identities.create(&dry_run, &alices).await {
                Err(e) if e.to_string().contains("IdentityNotOwn") => Some(e),
                _ => None,
            }
        },
    )
    .await;
    assert!(
        identities
            .create(&PostParams::default(), &alices)
            .await
            .is_err(),
        "bob may not write alice's Identity"
    );
    assert!(
        err.to_string()
            .contains("IdentityNotOwn: only the subject \"alice\""),
        "{err}"
    );
    println!("refused at admission: alice's Identity by bob: {err}");
    identities
        .create(&PostParams::default(), &identity("bob"))
        .await
        .unwrap_or_else(|e| panic!("bob writes his own Identity: {e}"));

    // bob's own Dispatch, on his own workspace, runs to the end.
    let mine = w.dispatch(
        "mine",
        "bob",
        "user:bob",
        "bob-notes",
        WorkspaceMode::ReadWrite,
    );
    as_bob
        .create(&PostParams::default(), &mine)
        .await
        .unwrap_or_else(|e| panic!("bob's own Dispatch is admitted: {e}"));
    let done = wait_dispatch(&as_bob, "mine", "a stop reason", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));
    assert_eq!(
        condition(&done, "Authorized").map(|c| c.0),
        Some("True".into())
    );

    // Only the operator writes status: bob cannot mark his run as anything.
    let err = as_bob
        .patch_status(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"stopReason": "failed"}})),
        )
        .await
        .map(|_| ())
        .expect_err("bob's status write is refused");
    assert!(
        err.to_string()
            .contains("StatusReserved: only the operator"),
        "{err}"
    );

    // With the RBAC verb act-as on alice's Identity, bob may act for alice (launching as
    // himself), and the operator agrees (it asks RBAC the same question).
    w.grant(
        "act-as-alice",
        "bob",
        json!([{"apiGroups": ["vexa.ai"], "resources": ["identities"], "resourceNames": ["alice"], "verbs": ["act-as"]}]),
    )
    .await;
    let for_alice = w.dispatch(
        "for-alice-granted",
        "alice",
        "user:bob",
        "alice-notes",
        WorkspaceMode::ReadWrite,
    );
    wait_for(
        "bob's act-as grant to reach the authorizer",
        Duration::from_secs(30),
        || async { as_bob.create(&dry_run, &for_alice).await.ok() },
    )
    .await;
    as_bob
        .create(&PostParams::default(), &for_alice)
        .await
        .unwrap();
    let done = wait_dispatch(
        &as_bob,
        "for-alice-granted",
        "a stop reason",
        TIMEOUT,
        |d| !stop_reason(d).is_empty(),
    )
    .await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn the_operator_checks_the_chain_of_custody_again() {
    let w = World::new("custody").await;
    let dispatches = w.api::<Dispatch>(&w.admin);
    let mut email = w.dispatch(
        "email-without-grant",
        "alice",
        "integration:email",
        "alice-notes",
        WorkspaceMode::ReadOnly,
    );
    email.spec.trigger = Trigger::Event;
    // Alice's own chat, asking for more than the cluster's ceilings.
    let mut greedy = w.dispatch(
        "greedy",
        "alice",
        "user:alice",
        "alice-notes",
        WorkspaceMode::ReadOnly,
    );
    greedy.spec.limits = Some(vexa_crds::RunLimits {
        max_lifetime_seconds: Some(100_000),
        ..Default::default()
    });
    // The admin is exempt from admission (system:masters may impersonate anyone): these reach
    // the operator, which refuses them from what it can see.
    let cases = [
        (
            w.dispatch(
                "mallory-for-alice",
                "alice",
                "user:mallory",
                "alice-notes",
                WorkspaceMode::ReadWrite,
            ),
            "SubjectNotPermitted",
        ),
        (email, "NoDelegationGrant"),
        (greedy, "LimitAboveCeiling"),
        (
            w.dispatch(
                "bob-on-alices",
                "bob",
                "user:bob",
                "alice-notes",
                WorkspaceMode::ReadOnly,
            ),
            "WorkspaceNotGranted",
        ),
    ];
    for (d, _) in &cases {
        dispatches.create(&PostParams::default(), d).await.unwrap();
    }
    for (d, reason) in &cases {
        let name = d.metadata.name.clone().unwrap();
        let refused = wait_dispatch(&dispatches, &name, "phase refused", TIMEOUT, |d| {
            phase(d) == "refused"
        })
        .await;
        let (status, got, message) = condition(&refused, "Authorized").unwrap();
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", *reason),
            "{message}"
        );
        println!("refused by the operator: {name}: {got}: {message}");
        let events = w.api::<Event>(&w.admin);
        wait_for(
            &format!("a Warning event {reason} on {name}"),
            Duration::from_secs(30),
            || async {
                events
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .find(|e| {
                        e.involved_object.name.as_deref() == Some(&name)
                            && e.reason.as_deref() == Some(*reason)
                    })
            },
        )
        .await;
    }
    // An alice Identity that maps mallory lets the same kind of Dispatch run.
    let identity: vexa_crds::Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "kubernetesUsers": ["mallory"]},
    }))
    .unwrap();
    w.api::<vexa_crds::Identity>(&w.admin)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    let mapped = w.dispatch(
        "mallory-mapped",
        "alice",
        "user:mallory",
        "alice-notes",
        WorkspaceMode::ReadOnly,
    );
    dispatches
        .create(&PostParams::default(), &mapped)
        .await
        .unwrap();
    let done = wait_dispatch(
        &dispatches,
        "mallory-mapped",
        "a stop reason",
        TIMEOUT,
        |d| !stop_reason(d).is_empty(),
    )
    .await;
    assert_eq!(stop_reason(&done), "completed", "{}", describe(&done));
    assert_eq!(
        w.run_jobs().await,
        vec!["mallory-mapped".to_string()],
        "only the admitted run has a Job"
    );
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_namespace_that_is_not_a_tenant_runs_nothing() {
    operator().await;
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "not-tenant").await;
    // The same namespace without the tenant label.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"vexa.ai/tenant": null}}})),
        )
        .await
        .unwrap();
    let runner = format!("fake-{}", ns.name);
    fake_runner(&admin, &ns, &runner, json!({})).await;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("elsewhere", &runner, "echo ran"),
        )
        .await
        .unwrap();
    let refused = wait_dispatch(&dispatches, "elsewhere", "phase refused", TIMEOUT, |d| {
        phase(d) == "refused"
    })
    .await;
    let (status, reason, message) = condition(&refused, "Authorized").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NamespaceNotTenant")
    );
    assert!(message.contains("vexa.ai/tenant=true"), "{message}");
    println!("refused: {message}");
    let jobs = Api::<Job>::namespaced(admin.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        jobs.items.is_empty(),
        "nothing runs outside tenant namespaces"
    );
}
