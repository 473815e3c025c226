//! Golden tests of a dispatch's children: the pure `build::job` and `build::secret` run on
//! real inputs (the project's goldens where one fits, `fixtures/inputs/` otherwise) and their
//! output is compared with the committed `fixtures/<case>/{job,secret}.yaml`.
//!
//! After an intended change to the children, rewrite the expected files and review the diff:
//!
//! ```sh
//! VEXA_BLESS=1 cargo test -p vexa-operator --test build
//! git diff operator/tests/fixtures
//! ```
//!
//! The goldens cover what a reviewer reads; the property tests below pin, by name, what must
//! never change by accident (isolation, limits, ownership, the worker's environment).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rstest::rstest;
use serde_json::{Value, json};
use vexa_core::pod::{PodContract, var};
use vexa_crds::{AgentRunner, Dispatch, Tool, Trust, Workspace, WorkspaceMode};
use vexa_operator::controllers::dispatch::children::{
    self, BuildSettings, DISPATCH_ANNOTATION, DISPATCH_LABEL, Inputs, MountedWorkspace,
};
use vexa_operator::controllers::dispatch::{decide::authorize, observe::Resolved};
use vexa_policy::Authorization;

/// The namespace every case's namespaced objects live in (`kubectl -n team-a apply`).
const NAMESPACE: &str = "team-a";
/// The uid the API server gave the Dispatch; the owner reference must carry it.
const DISPATCH_UID: &str = "0b7c4f1e-5d1a-4e0c-9a51-6f2d7e3c8a10";
/// The key the operator signs gateway tokens with.
const GATEWAY_KEY: &[u8] = b"fixture-gateway-key-of-32-bytes!";

/// The operator's defaults (those of `Config`).
fn settings() -> BuildSettings {
    BuildSettings {
        redis_url: "redis://redis.vexa-system.svc:6379".into(),
        job_ttl_seconds: 300,
        default_max_lifetime_seconds: 3600,
        default_idle_timeout_seconds: 120,
        default_resources: vexa_operator::controllers::dispatch::children::resources(
            "100m", "256Mi", "2Gi",
        ),
        worker_image: "localhost/vexa-agent-worker:dev".into(),
        worker_resources: vexa_operator::controllers::dispatch::children::resources(
            "20m", "32Mi", "512Mi",
        ),
        model_gateway_url: "http://vexa-operator.vexa-system.svc:8082".into(),
        model_gateway_key: Some(std::sync::Arc::from(GATEWAY_KEY)),
        stream_max_len: 10_000,
        await_network_policy_seconds: 0,
        spire_trust_domain: None,
        mcp_gateway_url: None,
        mcp_port: vexa_core::pod::DEFAULT_MCP_PORT,
    }
}

/// The repository root: input paths are relative to it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One case: its input files.
struct CaseDef {
    name: &'static str,
    inputs: &'static [&'static str],
}

const CASES: &[CaseDef] = &[
    // A person chats: trusted, one rw workspace, inline start, no model credential.
    CaseDef {
        name: "chat-message",
        inputs: &[
            "goldens/dispatches/valid/chat-message.yaml",
            "goldens/agentrunners/valid/test-agent.yaml",
            "goldens/workspaces/valid/alice-notes.yaml",
        ],
    },
    // A Schedule's routine: alice-notes rw and team-handbook ro, both on the PVC `workspaces`.
    CaseDef {
        name: "scheduled-routine",
        inputs: &[
            "goldens/dispatches/valid/scheduled-routine.yaml",
            "goldens/agentrunners/valid/claude-code.yaml",
            "goldens/workspaces/valid/alice-notes.yaml",
            "goldens/workspaces/valid/team-handbook.yaml",
            "operator/tests/fixtures/inputs/calendar-read.yaml",
        ],
    },
    // An email arrived: untrusted, propose-only, the send tool gated.
    CaseDef {
        name: "email-event",
        inputs: &[
            "goldens/dispatches/valid/email-event.yaml",
            "goldens/agentrunners/valid/claude-code.yaml",
            "goldens/workspaces/valid/alice-notes.yaml",
            "goldens/tools/valid/email-read.yaml",
            "goldens/tools/valid/email-send.yaml",
        ],
    },
    // A resumed chat on a self-hosted model whose credential lives in another namespace.
    CaseDef {
        name: "model-credential",
        inputs: &[
            "operator/tests/fixtures/inputs/chat-local-model.yaml",
            "operator/tests/fixtures/inputs/local-model.yaml",
            "goldens/workspaces/valid/alice-notes.yaml",
        ],
    },
];

/// A case's inputs, parsed, with what the API server adds (namespace, uid).
struct Case {
    dispatch: Dispatch,
    resolved: Resolved,
}

fn read_yaml(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"))
}

fn parse<T: serde::de::DeserializeOwned>(rel: &str, doc: Value) -> T {
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load(name: &str) -> Case {
    let def = CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let (mut dispatch, mut runner, mut workspaces, mut tools) =
        (None, None, Vec::new(), Vec::new());
    for rel in def.inputs {
        let mut doc = read_yaml(rel);
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        if kind != "AgentRunner" {
            doc["metadata"]["namespace"] = NAMESPACE.into();
        }
        match kind.as_str() {
            "Dispatch" => {
                let mut d: Dispatch = parse(rel, doc);
                d.metadata.uid = Some(DISPATCH_UID.into());
                d.metadata.generation = Some(1);
                dispatch = Some(d);
            }
            "AgentRunner" => runner = Some(parse(rel, doc)),
            "Workspace" => workspaces.push(parse::<Workspace>(rel, doc)),
            "Tool" => tools.push(parse::<Tool>(rel, doc)),
            other => panic!("{rel}: unexpected kind {other:?}"),
        }
    }
    let dispatch: Dispatch = dispatch.expect("a case has a Dispatch");
    let runner: AgentRunner = runner.expect("a case has an AgentRunner");
    // The reconciler resolves references in spec order; so do the cases.
    let order = |name: &str, names: &[String]| names.iter().position(|n| n == name);
    let ws_names: Vec<String> = dispatch
        .spec
        .workspaces
        .iter()
        .map(|w| w.name.clone())
        .collect();
    workspaces.sort_by_key(|w| order(w.metadata.name.as_deref().unwrap(), &ws_names));
    tools.sort_by_key(|t| order(t.metadata.name.as_deref().unwrap(), &dispatch.spec.tools));
    assert_eq!(
        workspaces.len(),
        ws_names.len(),
        "{name}: every workspace is an input"
    );
    assert_eq!(
        tools.len(),
        dispatch.spec.tools.len(),
        "{name}: every tool is an input"
    );
    Case {
        dispatch,
        resolved: Resolved {
            runner,
            workspaces,
            tools,
        },
    }
}

/// What the reconciler derives before building: the authorization and the mounted workspaces.
fn authorization(case: &Case) -> Authorization {
    authorize(
        &case.dispatch.spec,
        &case.resolved.workspace_facts(),
        &case.resolved.tool_facts(),
    )
    .unwrap_or_else(|r| panic!("the case must be authorized: {r}"))
}

fn children(case: &Case) -> (Job, Secret) {
    children_with(case, &settings())
}

fn children_with(case: &Case, settings: &BuildSettings) -> (Job, Secret) {
    let auth = authorization(case);
    let workspaces = case
        .resolved
        .workspaces
        .iter()
        .zip(&auth.modes)
        .map(|(w, (_, mode))| MountedWorkspace {
            name: w.metadata.name.clone().unwrap(),
            spec: w.spec.clone(),
            mode: *mode,
        })
        .collect();
    let redis_user = vexa_operator::redis_users::user(
        b"fixture-redis-admin-password",
        &vexa_operator::redis_users::DispatchKey {
            namespace: case.dispatch.metadata.namespace.clone().unwrap_or_default(),
            name: case.dispatch.metadata.name.clone().unwrap_or_default(),
            uid: case.dispatch.metadata.uid.clone().unwrap_or_default(),
        },
    );
    let inputs = Inputs {
        dispatch: &case.dispatch,
        runner: &case.resolved.runner.spec,
        workspaces,
        authorization: &auth,
        settings,
        redis_user: Some(&redis_user),
        dispatch_token: None,
        tools: case.resolved.granted_tools(),
    };
    (children::job(&inputs), children::secret(&inputs))
}

/// YAML with keys in a stable order (via `serde_json::Value`).
fn to_yaml(value: &impl serde::Serialize) -> String {
    let value = serde_json::to_value(value).unwrap();
    serde_saphyr::to_string(&value).unwrap()
}

/// Compares `actual` with the committed file, or rewrites the file under `VEXA_BLESS=1`.
fn check_golden(case: &str, file: &str, actual: &impl serde::Serialize) {
    let path = fixtures().join(case).join(file);
    let actual = to_yaml(actual);
    if std::env::var_os("VEXA_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with VEXA_BLESS=1 cargo test -p vexa-operator --test build",
            path.display()
        )
    });
    // Compare values, then text: formatting alone must not fail a golden.
    let expected_value: Value = serde_saphyr::from_str(&expected).unwrap();
    let actual_value: Value = serde_saphyr::from_str(&actual).unwrap();
    if expected_value != actual_value {
        panic!(
            "{} differs from what build produces.\n--- expected\n{expected}\n--- actual\n{actual}\n\
             If the change is intended: VEXA_BLESS=1 cargo test -p vexa-operator --test build",
            path.display()
        );
    }
}

#[rstest]
#[case::chat_message("chat-message")]
#[case::scheduled_routine("scheduled-routine")]
#[case::email_event("email-event")]
#[case::model_credential("model-credential")]
fn children_match_goldens(#[case] name: &str) {
    let case = load(name);
    let (job, secret) = children(&case);
    check_golden(name, "job.yaml", &job);
    check_golden(name, "secret.yaml", &secret);
}

#[test]
fn every_case_has_fixtures_and_no_fixture_is_stale() {
    // Only `children_match_goldens` writes fixtures, so this also fails when a case is added
    // to CASES but not to that test's table.
    if std::env::var_os("VEXA_BLESS").is_some() {
        return; // the goldens are being written right now
    }
    let dirs: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "inputs")
        .collect();
    for c in CASES {
        assert!(dirs.contains(&c.name.to_owned()), "no fixtures/{}", c.name);
    }
    assert_eq!(
        dirs.len(),
        CASES.len(),
        "stale fixture directories: {dirs:?}"
    );
}

// ---- properties, by name ----

/// Runs `check` on every case; the captured output names the case that failed.
fn for_each_case(check: fn(&str)) {
    for c in CASES {
        eprintln!("case {}", c.name);
        check(c.name);
    }
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// Every container of the pod: the worker (a native sidecar, the only init container) and
/// the agent (the only regular container).
fn all_containers(job: &Job) -> Vec<&Container> {
    let pod = pod_spec(job);
    let init = pod.init_containers.as_deref().unwrap_or_default();
    assert_eq!(init.len(), 1, "one init container: the worker");
    assert_eq!(pod.containers.len(), 1, "one container: the agent");
    init.iter().chain(&pod.containers).collect()
}

fn container<'a>(job: &'a Job, name: &str) -> &'a Container {
    all_containers(job)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} container"))
}

/// The trusted side: the agent worker.
fn worker(job: &Job) -> &Container {
    container(job, "worker")
}

/// The untrusted side: the agent CLI under the shim.
fn agent(job: &Job) -> &Container {
    container(job, "agent")
}

/// A variable of the worker's environment.
fn env<'a>(job: &'a Job, name: &str) -> &'a EnvVar {
    worker(job)
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

fn env_value<'a>(job: &'a Job, name: &str) -> &'a str {
    env(job, name)
        .value
        .as_deref()
        .unwrap_or_else(|| panic!("env {name} has no literal value"))
}

#[test]
fn every_job_is_isolated_and_short_lived() {
    for_each_case(every_job_is_isolated_and_short_lived_in);
}

fn every_job_is_isolated_and_short_lived_in(name: &str) {
    let case = load(name);
    let (job, _) = children(&case);
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0), "a failed run is not retried");
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.suspend, Some(false));
    assert_eq!(spec.ttl_seconds_after_finished, Some(300));
    assert!(spec.active_deadline_seconds.is_some_and(|s| s > 0));

    let pod = pod_spec(&job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.service_account_name, None);
    assert_eq!(pod.host_network, None);
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    assert_eq!(
        pod.share_process_namespace,
        Some(false),
        "the agent cannot see the worker's processes"
    );
    for c in [worker(&job), agent(&job)] {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert!(sc.run_as_user.is_some_and(|u| u != 0));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(caps.add, None);
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
    }
    assert_eq!(
        worker(&job).command.as_deref(),
        Some(&["vexa-agent-worker".to_owned()][..])
    );
    assert_eq!(
        worker(&job).image.as_deref(),
        Some("localhost/vexa-agent-worker:dev")
    );
    // The worker is a native sidecar, ready only once its own check passes; the agent starts
    // after it and is the pod's only regular container.
    let w = worker(&job);
    assert_eq!(w.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.init_containers.as_ref().unwrap()[0].name, "worker");
    assert_eq!(pod.containers[0].name, "agent");
    let probe = w.startup_probe.as_ref().expect("a startup probe");
    assert_eq!(
        probe.exec.as_ref().and_then(|e| e.command.as_deref()),
        Some(&["vexa-agent-worker".to_owned(), "ready".to_owned()][..])
    );
    assert_eq!(probe.period_seconds, Some(1));
    let a = agent(&job);
    assert_eq!(a.restart_policy, None);
    assert_eq!(
        a.command.as_deref(),
        Some(&["vexa-agent-shim".to_owned()][..])
    );
    assert_eq!(
        a.image.as_deref(),
        Some(case.resolved.runner.spec.image.as_str())
    );
    assert_eq!(
        a.termination_message_policy.as_deref(),
        Some("File"),
        "never the agent's log as a termination message"
    );
}

#[test]
fn the_agent_container_holds_nothing_secret() {
    for_each_case(the_agent_container_holds_nothing_secret_in);
}

fn the_agent_container_holds_nothing_secret_in(name: &str) {
    let case = load(name);
    let (job, _) = children(&case);
    let a = agent(&job);
    for e in a.env.as_deref().unwrap_or_default() {
        assert!(
            e.value_from.is_none(),
            "{}: no variable from elsewhere",
            e.name
        );
        assert!(
            !e.name.starts_with("VEXA_") && e.name != "REDIS_URL",
            "{}: the contract is the worker's",
            e.name
        );
    }
    assert!(a.env_from.is_none());
    let mounts = a.volume_mounts.as_deref().unwrap_or_default();
    let volumes = pod_spec(&job).volumes.as_deref().unwrap_or_default();
    for m in mounts {
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        assert!(
            v.secret.is_none() && v.projected.is_none(),
            "{}: a secret volume",
            m.name
        );
        assert_ne!(m.mount_path, "/var/run/vexa/dispatch");
        assert_ne!(
            m.name, "worker-state",
            "the worker's restart marker and ready file are its own"
        );
    }
    let secret_mount = worker(&job)
        .volume_mounts
        .as_deref()
        .unwrap()
        .iter()
        .find(|m| m.name == "dispatch-secret")
        .expect("the worker mounts the dispatch's Secret");
    assert_eq!(secret_mount.read_only, Some(true));
}

#[test]
fn children_are_owned_by_the_dispatch_and_labelled() {
    for_each_case(children_are_owned_by_the_dispatch_and_labelled_in);
}

fn children_are_owned_by_the_dispatch_and_labelled_in(name: &str) {
    let case = load(name);
    let d = &case.dispatch;
    let dname = d.metadata.name.as_deref().unwrap();
    let (job, secret) = children(&case);
    for (kind, meta) in [("Job", &job.metadata), ("Secret", &secret.metadata)] {
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{kind}");
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{kind}: exactly one owner");
        let o = &owners[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("vexa.ai/v1", "Dispatch", dname, DISPATCH_UID),
            "{kind}"
        );
        assert_eq!(
            o.controller,
            Some(true),
            "{kind}: the Dispatch is its controller"
        );
        // blockOwnerDeletion stays unset: setting it would need RBAC on dispatches/finalizers.
        assert_eq!(o.block_owner_deletion, None, "{kind}");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("vexa-operator"),
            "{kind}: the controller's watches select on this label"
        );
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("vexa")
        );
        assert_eq!(
            labels.get(DISPATCH_LABEL).map(String::as_str),
            Some(dname),
            "{kind}"
        );
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.get(DISPATCH_ANNOTATION).map(String::as_str),
            Some(dname)
        );
        assert_eq!(
            annotations.get("vexa.ai/subject"),
            Some(&d.spec.identity.subject)
        );
        assert_eq!(
            annotations.get("vexa.ai/launcher"),
            Some(&d.spec.identity.launcher)
        );
    }
    assert_eq!(job.metadata.name.as_deref(), Some(dname));
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some(format!("{dname}-credentials").as_str())
    );
    // The pod template carries what the pod watch maps back to the Dispatch, and no owner
    // (the Job owns its pods).
    let tmeta = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let tlabels = tmeta.labels.as_ref().unwrap();
    assert_eq!(
        tlabels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("vexa-operator")
    );
    assert_eq!(tlabels.get(DISPATCH_LABEL).map(String::as_str), Some(dname));
    assert_eq!(
        tmeta
            .annotations
            .as_ref()
            .unwrap()
            .get(DISPATCH_ANNOTATION)
            .map(String::as_str),
        Some(dname)
    );
    assert_eq!(tmeta.owner_references, None);
    assert_eq!(tmeta.name, None);
}

#[test]
fn the_worker_gets_the_contract_environment() {
    for_each_case(the_worker_gets_the_contract_environment_in);
}

fn the_worker_gets_the_contract_environment_in(name: &str) {
    let case = load(name);
    let d = &case.dispatch;
    let dname = d.metadata.name.as_deref().unwrap();
    let (job, _) = children(&case);
    // SPEC §4, by name, and the worker's reading of them is what the operator meant.
    let mut contract = Vec::new();
    for var in var::ALL {
        contract.push((var, env_value(&job, var)));
    }
    let parsed = PodContract::from_vars(contract).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(parsed.unit_id, format!("{NAMESPACE}/{dname}"));
    assert_eq!(parsed.trigger, d.spec.trigger);
    let names: Vec<&str> = parsed.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, d.spec.tools);
    let names: Vec<&str> = worker(&job)
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "no variable twice: {names:?}");

    let id = format!("{NAMESPACE}/{dname}");
    assert_eq!(env_value(&job, "VEXA_UNIT_ID"), id);
    assert_eq!(
        env_value(&job, "VEXA_UNIT_OUT_TOPIC"),
        format!("unit:{id}:out")
    );
    assert_eq!(
        env_value(&job, "VEXA_UNIT_IN_TOPIC"),
        format!("unit:{id}:in")
    );
    assert_eq!(env_value(&job, "VEXA_OWNER"), d.spec.identity.subject);
    assert_eq!(env_value(&job, "VEXA_LAUNCHER"), d.spec.identity.launcher);
    assert_eq!(env_value(&job, "VEXA_RUNNER"), d.spec.runner);
    assert_eq!(
        env_value(&job, "REDIS_URL"),
        "redis://redis.vexa-system.svc:6379"
    );
    let start: Value = serde_json::from_str(env_value(&job, "VEXA_START")).unwrap();
    assert_eq!(start, serde_json::to_value(&d.spec.start).unwrap());
    // Every workspace the worker is told about is mounted where it is told.
    let workspaces: Vec<Value> = serde_json::from_str(env_value(&job, "VEXA_WORKSPACES")).unwrap();
    let mounts = agent(&job).volume_mounts.as_ref().unwrap();
    assert_eq!(workspaces.len(), d.spec.workspaces.len());
    for w in &workspaces {
        let path = w["path"].as_str().unwrap();
        let m = mounts
            .iter()
            .find(|m| m.mount_path == path)
            .unwrap_or_else(|| panic!("{path} is not mounted"));
        assert_eq!(m.read_only, Some(w["mode"] == "ro"), "{path}");
    }
}

#[test]
fn chat_writes_its_workspace_and_starts_inline() {
    let case = load("chat-message");
    let (job, _) = children(&case);
    assert_eq!(env_value(&job, "VEXA_UNIT_TRIGGER"), "message");
    assert_eq!(
        env_value(&job, "VEXA_UNIT_OUT_TOPIC"),
        "unit:team-a/agent-alice-chat-main:out"
    );
    assert_eq!(
        env_value(&job, "VEXA_WORKSPACE_PATH"),
        "/workspaces/alice-notes"
    );
    assert_eq!(env_value(&job, "VEXA_CHAT_SESSION"), "main");
    assert_eq!(env_value(&job, "VEXA_IDLE_TIMEOUT_SEC"), "120");
    let start: Value = serde_json::from_str(env_value(&job, "VEXA_START")).unwrap();
    assert_eq!(
        start["entrypoint"]["inline"],
        "Write notes/hello.md with a greeting; don't touch anything else."
    );
    // The Dispatch sets only the idle timeout: lifetime and resources come from the runner.
    assert_eq!(
        job.spec.as_ref().unwrap().active_deadline_seconds,
        Some(3600)
    );
    let r = agent(&job).resources.as_ref().unwrap();
    let q = |m: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&r.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(q(&r.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(q(&r.limits, "memory").as_deref(), Some("256Mi"));
    let m = agent(&job)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/workspaces/alice-notes")
        .unwrap();
    assert_eq!(m.read_only, Some(false));
    assert_eq!(m.sub_path.as_deref(), Some("alice/notes"));
    // No model credential: the Secret holds only the dispatch's own Redis user, no
    // secretKeyRef anywhere.
    let (_, secret) = children(&case);
    let data = secret.data.unwrap_or_default();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["redis-password", "redis-username"]
    );
    assert_eq!(
        std::str::from_utf8(&data["redis-username"].0).unwrap(),
        format!(
            "vexa-dispatch:{}/{}/{}",
            case.dispatch.metadata.namespace.as_deref().unwrap(),
            case.dispatch.metadata.name.as_deref().unwrap(),
            case.dispatch.metadata.uid.as_deref().unwrap()
        )
    );
    assert!(
        agent(&job)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .all(|e| e.value_from.is_none())
    );
}

#[test]
fn two_workspaces_on_one_claim_share_a_volume() {
    let case = load("scheduled-routine");
    let (job, _) = children(&case);
    let pod = pod_spec(&job);
    let pvc_volumes: Vec<_> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|p| (v.name.as_str(), p))
        })
        .collect();
    assert_eq!(
        pvc_volumes.len(),
        1,
        "one volume per distinct PVC: {pvc_volumes:?}"
    );
    let (volume, pvc) = pvc_volumes[0];
    assert_eq!(pvc.claim_name, "workspaces");
    assert_ne!(
        pvc.read_only,
        Some(true),
        "the rw mount needs a writable volume"
    );
    let mounts: Vec<_> = agent(&job)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.name == volume)
        .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("/workspaces/alice-notes", Some("alice/notes"), Some(false)),
            // No subPath in the Workspace: its id is the folder.
            (
                "/workspaces/team-handbook",
                Some("team-handbook"),
                Some(true)
            ),
        ]
    );
    assert_eq!(env_value(&job, "VEXA_UNIT_TRIGGER"), "scheduled");
    assert_eq!(
        env_value(&job, "VEXA_LAUNCHER"),
        "schedule:team-a/morning-brief"
    );
    // The rw workspace is the one the worker commits in.
    assert_eq!(
        env_value(&job, "VEXA_WORKSPACE_PATH"),
        "/workspaces/alice-notes"
    );
    // The Dispatch's own limits win over the runner's.
    assert_eq!(
        job.spec.as_ref().unwrap().active_deadline_seconds,
        Some(1800)
    );
    let r = agent(&job).resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "250m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "1Gi");
    assert_eq!(authorization(&case).trust, Trust::Trusted);
}

#[test]
fn an_email_event_is_propose_only() {
    let case = load("email-event");
    let auth = authorization(&case);
    assert_eq!(auth.trust, Trust::ProposeOnly);
    assert_eq!(
        auth.modes,
        vec![("alice-notes".to_owned(), WorkspaceMode::ReadOnly)]
    );
    let (job, _) = children(&case);
    assert_eq!(env_value(&job, "VEXA_UNIT_TRIGGER"), "event");
    let workspace_mounts: Vec<_> = agent(&job)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.mount_path.starts_with("/workspaces/"))
        .collect();
    assert_eq!(workspace_mounts.len(), 1);
    assert!(
        workspace_mounts.iter().all(|m| m.read_only == Some(true)),
        "a propose-only run mounts nothing writable: {workspace_mounts:?}"
    );
    let workspaces: Value = serde_json::from_str(env_value(&job, "VEXA_WORKSPACES")).unwrap();
    assert_eq!(workspaces[0]["mode"], "ro");
    let tools: Vec<Value> = serde_json::from_str(env_value(&job, "VEXA_TOOLS")).unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["email-read", "email-send"]);
}

#[rstest]
fn the_model_credential_never_leaves_the_operators_namespace(
    #[values("scheduled-routine", "email-event", "model-credential")] name: &str,
) {
    let case = load(name);
    let cred = case.resolved.runner.spec.model_credential.clone().unwrap();
    let d = &case.dispatch;
    let (job, secret) = children(&case);
    // The dispatch's Secret holds only its own token at the model gateway, which speaks for
    // this dispatch and no other (and its own Redis user).
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["model-token", "redis-password", "redis-username"]
    );
    let token = std::str::from_utf8(&data["model-token"].0).unwrap();
    let verified = vexa_core::model::GatewayToken::verify(GATEWAY_KEY, token).unwrap();
    assert_eq!(
        (
            verified.namespace.as_str(),
            verified.name.as_str(),
            verified.uid.as_str()
        ),
        (NAMESPACE, d.metadata.name.as_deref().unwrap(), DISPATCH_UID)
    );
    assert!(vexa_core::model::GatewayToken::verify(b"another key", token).is_err());
    // The agent gets a placeholder key and the proxy's address from the worker, never a
    // variable from the Job: no container has the credential's variable.
    for c in all_containers(&job) {
        let env = c.env.as_deref().unwrap_or_default();
        assert!(
            env.iter().all(|e| e.name != cred.env),
            "{}: {}",
            c.name,
            cred.env
        );
    }
    let model: Value = serde_json::from_str(env_value(&job, "VEXA_MODEL")).unwrap();
    assert_eq!(model["keyEnv"], cred.env);
    assert_eq!(
        model["gateway"],
        "http://vexa-operator.vexa-system.svc:8082"
    );
}

#[test]
fn the_model_credential_case_uses_operator_defaults_and_the_workspace_default_mode() {
    let case = load("model-credential");
    let (job, _) = children(&case);
    assert_eq!(
        job.spec.as_ref().unwrap().active_deadline_seconds,
        Some(3600)
    );
    assert_eq!(env_value(&job, "VEXA_IDLE_TIMEOUT_SEC"), "120");
    // Neither the Dispatch nor the runner sets resources: the operator's, never BestEffort.
    let resources = agent(&job).resources.clone().expect("default resources");
    assert_eq!(resources.requests.unwrap()["memory"].0, "256Mi");
    assert_eq!(resources.limits.unwrap()["memory"].0, "2Gi");
    assert_eq!(env_value(&job, "VEXA_CHAT_SESSION"), "ideas");
    // The runner's plain variables are the agent container's.
    let base_url = agent(&job)
        .env
        .as_deref()
        .unwrap()
        .iter()
        .find(|e| e.name == "OPENAI_BASE_URL")
        .and_then(|e| e.value.as_deref());
    assert_eq!(base_url, Some("http://llm.models.svc:8000/v1"));
    assert_eq!(agent(&job).image_pull_policy.as_deref(), Some("Never"));
    // No mode in the Dispatch: the Workspace's default (rw) for a trusted trigger.
    let workspaces: Value = serde_json::from_str(env_value(&job, "VEXA_WORKSPACES")).unwrap();
    assert_eq!(workspaces[0]["mode"], "rw");
}

#[test]
fn a_stopped_dispatch_builds_a_suspended_job() {
    let mut case = load("chat-message");
    case.dispatch.spec.stop = Some(true);
    let (job, _) = children(&case);
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
}

#[test]
fn building_is_deterministic() {
    for c in CASES {
        let case = load(c.name);
        let (a, b) = (children(&case), children(&case));
        assert_eq!(to_yaml(&a.0), to_yaml(&b.0), "{}", c.name);
        assert_eq!(to_yaml(&a.1), to_yaml(&b.1), "{}", c.name);
    }
}

/// With an MCP gateway and pod identity the worker is told where to forward tool calls and on
/// which loopback port to serve them, and each granted Tool carries the name the agent sees;
/// without identity there is no gateway (no SVID, no mutual TLS), so no tools reach the agent.
#[test]
fn the_mcp_gateway_reaches_the_worker_only_with_pod_identity() {
    let case = load("email-event");
    let gateway = BuildSettings {
        mcp_gateway_url: Some("https://vexa-gateway.vexa-system.svc:8443".into()),
        spire_trust_domain: Some("vexa.local".into()),
        ..settings()
    };
    let (job, _) = children_with(&case, &gateway);
    let mcp: Value = serde_json::from_str(env_value(&job, "VEXA_MCP_GATEWAY")).unwrap();
    assert_eq!(
        mcp,
        json!({"url": "https://vexa-gateway.vexa-system.svc:8443", "port": vexa_core::pod::DEFAULT_MCP_PORT})
    );
    let tools: Value = serde_json::from_str(env_value(&job, "VEXA_TOOLS")).unwrap();
    let expected: Vec<Value> = case
        .resolved
        .tools
        .iter()
        .map(|t| json!({"name": t.metadata.name, "toolName": t.spec.tool_name}))
        .collect();
    assert_eq!(tools, Value::from(expected));
    // The agent's container is told nothing of it: the worker writes the agent's MCP config.
    assert!(
        agent(&job)
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("VEXA_")),
        "the agent container carries no contract variable"
    );

    let no_identity = BuildSettings {
        spire_trust_domain: None,
        ..gateway
    };
    let (job, _) = children_with(&case, &no_identity);
    assert_eq!(env_value(&job, "VEXA_MCP_GATEWAY"), "null");
}

/// Pod identity on: the pod waits behind the gate the identity controller releases, and only the
/// worker mounts the SPIRE agent's Workload API (read-only, through the CSI driver: tenant
/// namespaces refuse hostPath); off: neither.
#[test]
fn with_pod_identity_the_pod_is_gated_and_only_the_worker_reaches_the_workload_api() {
    let case = load("chat-message");
    let on = BuildSettings {
        spire_trust_domain: Some("vexa.local".into()),
        ..settings()
    };
    let (job, _) = children_with(&case, &on);
    let spec = pod_spec(&job);
    let gates: Vec<&str> = spec
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gates, [vexa_core::identity::IDENTITY_GATE]);
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == children::WORKLOAD_API_VOLUME)
        .expect("the Workload API volume");
    let csi = volume.csi.as_ref().expect("a CSI volume, not hostPath");
    assert_eq!(csi.driver, vexa_core::pod::layout::WORKLOAD_API_CSI_DRIVER);
    assert_eq!(csi.read_only, Some(true));
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == children::WORKLOAD_API_VOLUME)
            .collect();
        if c.name == "worker" {
            assert_eq!(mounts.len(), 1, "the worker mounts the Workload API");
            assert_eq!(
                mounts[0].mount_path,
                vexa_core::pod::layout::WORKLOAD_API_DIR
            );
            assert_eq!(mounts[0].read_only, Some(true));
        } else {
            assert!(
                mounts.is_empty(),
                "{} must not reach the Workload API",
                c.name
            );
        }
    }

    // The worker is told which SVID to hold before the agent starts, and where to fetch it.
    let spiffe: Value = serde_json::from_str(env_value(&job, "VEXA_SPIFFE")).unwrap();
    assert_eq!(
        spiffe,
        json!({
            "spiffeId": format!("spiffe://vexa.local/ns/{NAMESPACE}/dispatch/{}", case.dispatch.metadata.name.as_deref().unwrap()),
            "socket": "/run/spire/agent/api.sock",
        })
    );

    let (job, _) = children(&case);
    assert_eq!(env_value(&job, "VEXA_SPIFFE"), "null");
    let spec = pod_spec(&job);
    assert!(
        spec.scheduling_gates.is_none(),
        "no gate without pod identity"
    );
    assert!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == children::WORKLOAD_API_VOLUME)
    );
}
