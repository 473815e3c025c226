//! Pure construction of a dispatch's children: its Secret and its Job. No I/O: given the same
//! inputs these functions always return the same objects, so a retry or a restart of the
//! operator applies exactly what was applied before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Container, EmptyDirVolumeSource, EnvVar, ExecAction,
    PersistentVolumeClaimVolumeSource, PodSchedulingGate, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use vexa_core::identity::IDENTITY_GATE;
use vexa_core::identity::spiffe_id;
use vexa_core::model::{DEFAULT_BASE_URL_ENV, GatewayToken};
use vexa_core::pod::layout::secret_key;
use vexa_core::pod::layout::{
    AGENT_CONFIG_DIR, AGENT_SOCKET_DIR, DISPATCH_SECRET_DIR, READY_SUBCOMMAND, SHIM_COMMAND,
    WORKER_COMMAND, WORKER_STATE_DIR,
};
use vexa_core::pod::layout::{WORKLOAD_API_CSI_DRIVER, WORKLOAD_API_DIR, WORKLOAD_API_SOCKET};
use vexa_core::pod::{
    GrantedTool, McpGateway, ModelAccess, PodContract, SpiffeAccess, WorkspaceMount,
};
use vexa_core::{dispatch_id, in_topic, job_name, out_topic, secret_name, thread_or_default};
use vexa_crds::{AgentRunnerSpec, Dispatch, RunLimits, WorkspaceMode, WorkspaceSpec};
use vexa_policy::Authorization;
use vexa_stream::acl::DispatchUser;

use crate::runtime::security;

/// Label holding the (bounded) dispatch name on Jobs and pods.
pub const DISPATCH_LABEL: &str = "vexa.ai/dispatch";
/// Annotation holding the full dispatch name on Jobs and pods.
pub const DISPATCH_ANNOTATION: &str = "vexa.ai/dispatch-name";
pub use vexa_core::pod::layout::{AGENT_CONTAINER, WORKER_CONTAINER};
/// The worker's variable for the output stream's cap (a worker setting, not the pod contract).
pub const STREAM_MAX_LEN_ENV: &str = "VEXA_STREAM_MAX_LEN";
/// The worker's variable that makes it the pod's native sidecar (a worker setting).
pub const SIDECAR_ENV: &str = "VEXA_SIDECAR";
/// The worker's variable for how long it waits for the pod's network policy (a worker setting).
pub const AWAIT_NETWORK_POLICY_ENV: &str = "VEXA_AWAIT_NETWORK_POLICY_SEC";
/// Where workspaces are mounted: `/workspaces/<name>`.
pub const WORKSPACES_ROOT: &str = "/workspaces";
/// The agent's home folder (a scratch volume of its own).
pub const AGENT_HOME: &str = "/home/agent";
/// The volume of the SPIRE agent's Workload API (the worker's only).
pub const WORKLOAD_API_VOLUME: &str = "spiffe-workload-api";
/// How long the worker may take to become ready (its startup probe runs every second) before
/// the kubelet restarts it, which fails the run. The worker itself gives up sooner, with a
/// reason (e.g. no SVID within its timeout), and then lets the agent start only to end it.
pub const WORKER_STARTUP_SECONDS: i32 = 180;

/// Operator settings that shape the children.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Redis URL as seen from the pod.
    pub redis_url: String,
    /// TTL of a finished Job.
    pub job_ttl_seconds: i32,
    /// Fallback maximum lifetime.
    pub default_max_lifetime_seconds: i64,
    /// Fallback idle timeout.
    pub default_idle_timeout_seconds: i64,
    /// Fallback resources, when neither the Dispatch nor its runner sets any.
    pub default_resources: Option<ResourceRequirements>,
    /// Image of the trusted worker container.
    pub worker_image: String,
    /// Resources of the worker container (the agent's are the run's).
    pub worker_resources: Option<ResourceRequirements>,
    /// The model gateway's base URL, as pods reach it.
    pub model_gateway_url: String,
    /// The key gateway tokens are signed with (`None`: the gateway is not set up, and a run
    /// with a model credential gets no token).
    pub model_gateway_key: Option<std::sync::Arc<[u8]>>,
    /// About how many entries the worker keeps on the output stream (`VEXA_STREAM_MAX_LEN`).
    pub stream_max_len: u64,
    /// How long the worker waits for the pod's network policy before the agent runs (0: not).
    pub await_network_policy_seconds: u64,
    /// Pod identity's trust domain (`None`: off). On: the pod is created behind the
    /// scheduling gate `vexa.ai/identity` (the identity controller releases it once SPIRE has
    /// the pod's entry) and its worker, only it, mounts the Workload API read-only.
    pub spire_trust_domain: Option<String>,
    /// The MCP gateway's base URL as pods reach it (`None`: no gateway; the agent gets no
    /// tools). Only with pod identity: the worker reaches it over mutual TLS with its SVID.
    pub mcp_gateway_url: Option<String>,
    /// The loopback port of the worker's MCP endpoint.
    pub mcp_port: u16,
}

/// Resources from quantities (an empty one is left out; all empty: none).
pub fn resources(
    cpu_request: &str,
    memory_request: &str,
    memory_limit: &str,
) -> Option<ResourceRequirements> {
    let map = |pairs: &[(&str, &str)]| {
        let m: BTreeMap<String, Quantity> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let requests = map(&[("cpu", cpu_request), ("memory", memory_request)]);
    let limits = map(&[("memory", memory_limit)]);
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    })
}

/// A workspace the run uses, resolved.
#[derive(Debug, Clone)]
pub struct MountedWorkspace {
    /// The Workspace object's name.
    pub name: String,
    /// Its spec.
    pub spec: WorkspaceSpec,
    /// The mode the run gets.
    pub mode: WorkspaceMode,
}

/// Everything the children are built from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The dispatch.
    pub dispatch: &'a Dispatch,
    /// Its runner's spec.
    pub runner: &'a AgentRunnerSpec,
    /// Its workspaces, in spec order, with their modes.
    pub workspaces: Vec<MountedWorkspace>,
    /// The authorization (modes and trust).
    pub authorization: &'a Authorization,
    /// Operator settings.
    pub settings: &'a BuildSettings,
    /// The dispatch's own Redis user, which its Secret carries (`None`: the worker connects as
    /// `REDIS_URL` says).
    pub redis_user: Option<&'a DispatchUser>,
    /// The run's first dispatch token (`None`: the operator mints none).
    pub dispatch_token: Option<&'a str>,
    /// The granted Tools, in spec order, with the MCP tool names the agent sees.
    pub tools: Vec<GrantedTool>,
}

/// The standard labels of every child.
pub fn labels(dispatch_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vexa-dispatch".into()),
        ("app.kubernetes.io/component".into(), "agent".into()),
        ("app.kubernetes.io/part-of".into(), "vexa".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            crate::FIELD_MANAGER.into(),
        ),
        (DISPATCH_LABEL.into(), job_name(dispatch_name)),
    ])
}

fn annotations(d: &Dispatch) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            DISPATCH_ANNOTATION.into(),
            d.metadata.name.clone().unwrap_or_default(),
        ),
        ("vexa.ai/subject".into(), d.spec.identity.subject.clone()),
        ("vexa.ai/launcher".into(), d.spec.identity.launcher.clone()),
    ])
}

fn owner(d: &Dispatch) -> Vec<OwnerReference> {
    d.controller_owner_ref(&()).into_iter().collect()
}

fn meta(d: &Dispatch, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: d.metadata.namespace.clone(),
        labels: Some(labels(d.metadata.name.as_deref().unwrap_or_default())),
        annotations: Some(annotations(d)),
        owner_references: Some(owner(d)),
        ..ObjectMeta::default()
    }
}

/// The per-dispatch Secret: the dispatch's own credentials, mounted only into the trusted
/// worker container. With a brokered model credential it holds the dispatch's token at the
/// model gateway (never the credential itself, which stays in the operator's namespace).
pub fn secret(inputs: &Inputs<'_>) -> Secret {
    let d = inputs.dispatch;
    let mut data = BTreeMap::new();
    if inputs.runner.model_credential.is_some()
        && let Some(key) = &inputs.settings.model_gateway_key
    {
        let token = GatewayToken {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            name: d.metadata.name.clone().unwrap_or_default(),
            uid: d.metadata.uid.clone().unwrap_or_default(),
        }
        .sign(key);
        data.insert(
            secret_key::MODEL_TOKEN.to_owned(),
            ByteString(token.into_bytes()),
        );
    }
    if let Some(token) = inputs.dispatch_token {
        data.insert(
            secret_key::DISPATCH_TOKEN.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        );
    }
    if let Some(user) = inputs.redis_user {
        data.insert(
            secret_key::REDIS_USERNAME.to_owned(),
            ByteString(user.username.clone().into_bytes()),
        );
        data.insert(
            secret_key::REDIS_PASSWORD.to_owned(),
            ByteString(user.password.clone().into_bytes()),
        );
    }
    Secret {
        metadata: meta(
            d,
            secret_name(d.metadata.name.as_deref().unwrap_or_default()),
        ),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The limits in force: the dispatch's, else the runner's, else the operator's defaults.
pub fn effective_limits(
    d: &Dispatch,
    runner: &AgentRunnerSpec,
    s: &BuildSettings,
) -> (i64, i64, Option<ResourceRequirements>) {
    let own = d.spec.limits.clone().unwrap_or_default();
    let dflt: RunLimits = runner.defaults.clone().unwrap_or_default();
    let idle = own
        .idle_timeout_seconds
        .or(dflt.idle_timeout_seconds)
        .unwrap_or(s.default_idle_timeout_seconds);
    let life = own
        .max_lifetime_seconds
        .or(dflt.max_lifetime_seconds)
        .unwrap_or(s.default_max_lifetime_seconds);
    let resources = own
        .resources
        .or(dflt.resources)
        .or_else(|| s.default_resources.clone());
    (idle, life, resources)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// What the worker is told about its run (SPEC §4): the dispatch's pod contract, with the idle
/// timeout in force.
pub fn contract(inputs: &Inputs<'_>, idle_seconds: i64) -> PodContract {
    let d = inputs.dispatch;
    let spec = &d.spec;
    let id = dispatch_id(
        d.metadata.namespace.as_deref().unwrap_or_default(),
        d.metadata.name.as_deref().unwrap_or_default(),
    );
    let mount_path = |w: &MountedWorkspace| PathBuf::from(format!("{WORKSPACES_ROOT}/{}", w.name));
    let workspaces = inputs
        .workspaces
        .iter()
        .map(|w| WorkspaceMount {
            id: w.spec.id.clone(),
            mode: w.mode,
            name: w.name.clone(),
            path: mount_path(w),
        })
        .collect();
    // The agent runs in the workspace it writes, else in the first.
    let primary = inputs
        .workspaces
        .iter()
        .find(|w| w.mode == WorkspaceMode::ReadWrite)
        .or(inputs.workspaces.first())
        .map(mount_path)
        .unwrap_or_default();
    let thread = thread_or_default(spec.context.as_ref().and_then(|c| c.session.as_deref()));
    PodContract {
        unit_id: id.clone(),
        trigger: spec.trigger,
        out_topic: out_topic(&id),
        in_topic: in_topic(&id),
        start: (&spec.start).into(),
        workspaces,
        workspace_path: primary,
        owner: spec.identity.subject.clone(),
        launcher: spec.identity.launcher.clone(),
        runner: spec.runner.clone(),
        runner_spec: inputs.runner.into(),
        tools: inputs.tools.clone(),
        context: spec.context.as_ref().map(Into::into),
        thread: thread.to_owned(),
        idle_timeout: Duration::from_secs(u64::try_from(idle_seconds).unwrap_or_default()),
        redis_url: inputs.settings.redis_url.clone(),
        model: inputs
            .runner
            .model_credential
            .as_ref()
            .map(|c| ModelAccess {
                gateway: inputs.settings.model_gateway_url.clone(),
                key_env: c.env.clone(),
                base_url_env: c
                    .base_url_env
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BASE_URL_ENV.into()),
                token_budget: spec
                    .limits
                    .as_ref()
                    .and_then(|l| l.model_tokens)
                    .or_else(|| inputs.runner.defaults.as_ref().and_then(|l| l.model_tokens)),
            }),
        // With SPIRE, the worker holds this identity before the agent starts.
        spiffe: inputs
            .settings
            .spire_trust_domain
            .as_deref()
            .map(|trust_domain| SpiffeAccess {
                spiffe_id: spiffe_id(
                    trust_domain,
                    d.metadata.namespace.as_deref().unwrap_or_default(),
                    d.metadata.name.as_deref().unwrap_or_default(),
                ),
                socket: WORKLOAD_API_SOCKET.into(),
            }),
        // Tool calls leave the pod through the gateway, over mutual TLS with the pod's SVID.
        mcp_gateway: inputs
            .settings
            .mcp_gateway_url
            .clone()
            .filter(|_| inputs.settings.spire_trust_domain.is_some())
            .map(|url| McpGateway {
                url,
                port: inputs.settings.mcp_port,
            }),
    }
}

/// The worker container's environment: the pod contract, and the stream's cap.
fn worker_environment(inputs: &Inputs<'_>, idle: i64) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = contract(inputs, idle)
        .to_env()
        .into_iter()
        .map(|(name, value)| env(&name, value))
        .collect();
    vars.push(env(
        STREAM_MAX_LEN_ENV,
        inputs.settings.stream_max_len.to_string(),
    ));
    vars.push(env(SIDECAR_ENV, "true"));
    // The run's trace, so the worker's log lines carry its id (the worker exports nothing).
    if let Some(run) = super::trace::context(inputs.dispatch) {
        vars.push(env(vexa_core::trace::ENV, run.to_string()));
    }
    if inputs.settings.await_network_policy_seconds > 0 {
        vars.push(env(
            AWAIT_NETWORK_POLICY_ENV,
            inputs.settings.await_network_policy_seconds.to_string(),
        ));
    }
    vars
}

/// The agent container's environment: its home and the runner's non-secret variables. Nothing
/// of the contract, and no credential: the worker passes what a run needs over the shim.
fn agent_environment(runner: &AgentRunnerSpec) -> Vec<EnvVar> {
    let mut vars = vec![env("HOME", AGENT_HOME)];
    vars.extend(
        runner
            .env
            .iter()
            .filter(|e| e.name != "HOME")
            .map(|e| env(&e.name, e.value.clone())),
    );
    vars
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The pod's volumes and each container's mounts. Both containers see the workspaces (read-only
/// unless the run writes them), the shim's socket folder and the agent CLI's config folder (the
/// pod's own, so no later run inherits what an agent leaves there; the worker carries only a
/// session's transcript across); each has a scratch `/tmp` of its own, so nothing the agent
/// leaves there is read by the worker; only the agent has a home; only the worker has the
/// dispatch's Secret and its state folder (restart marker, ready file).
struct Storage {
    volumes: Vec<Volume>,
    worker: Vec<VolumeMount>,
    agent: Vec<VolumeMount>,
}

fn storage(inputs: &Inputs<'_>) -> Storage {
    let name = inputs.dispatch.metadata.name.as_deref().unwrap_or_default();
    let mut volumes = vec![
        empty_dir("agent-socket"),
        empty_dir("worker-tmp"),
        empty_dir("agent-tmp"),
        empty_dir("agent-home"),
        empty_dir("agent-config"),
        empty_dir("worker-state"),
        Volume {
            name: "dispatch-secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name(name)),
                default_mode: Some(0o440),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut worker = vec![
        mount("agent-socket", AGENT_SOCKET_DIR, false),
        mount("worker-tmp", "/tmp", false),
        mount("dispatch-secret", DISPATCH_SECRET_DIR, true),
        mount("agent-config", AGENT_CONFIG_DIR, false),
        mount("worker-state", WORKER_STATE_DIR, false),
    ];
    let mut agent = vec![
        mount("agent-socket", AGENT_SOCKET_DIR, false),
        mount("agent-tmp", "/tmp", false),
        mount("agent-home", AGENT_HOME, false),
        mount("agent-config", AGENT_CONFIG_DIR, false),
    ];
    if inputs.settings.spire_trust_domain.is_some() {
        volumes.push(Volume {
            name: WORKLOAD_API_VOLUME.into(),
            csi: Some(CSIVolumeSource {
                driver: WORKLOAD_API_CSI_DRIVER.into(),
                read_only: Some(true),
                ..CSIVolumeSource::default()
            }),
            ..Volume::default()
        });
        worker.push(mount(WORKLOAD_API_VOLUME, WORKLOAD_API_DIR, true));
    }
    let mut claims: Vec<String> = Vec::new();
    for w in &inputs.workspaces {
        let pvc = &w.spec.storage.persistent_volume_claim;
        let index = match claims.iter().position(|c| c == &pvc.claim_name) {
            Some(i) => i,
            None => {
                claims.push(pvc.claim_name.clone());
                volumes.push(Volume {
                    name: format!("ws-{}", claims.len() - 1),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: pvc.claim_name.clone(),
                        read_only: None,
                    }),
                    ..Volume::default()
                });
                claims.len() - 1
            }
        };
        let ws = VolumeMount {
            name: format!("ws-{index}"),
            mount_path: format!("{WORKSPACES_ROOT}/{}", w.name),
            sub_path: Some(pvc.sub_path.clone().unwrap_or_else(|| w.spec.id.clone())),
            read_only: Some(w.mode == WorkspaceMode::ReadOnly),
            ..VolumeMount::default()
        };
        worker.push(ws.clone());
        agent.push(ws);
    }
    Storage {
        volumes,
        worker,
        agent,
    }
}

/// The Job that runs the dispatch: one pod, never restarted, no service-account token, no shared
/// process namespace, both containers non-root with a read-only root filesystem, no privilege
/// escalation and no capabilities (Pod Security `restricted`).
///
/// The worker is a native sidecar (an init container with `restartPolicy: Always`): the
/// kubelet starts the agent container only once the worker's startup probe passes (the worker
/// is ready: it holds the pod's identity, or it has decided the run failed), and stops the
/// worker after the agent container has ended. The pod's (and the Job's) success is the agent
/// container's exit, which the worker sets; the operator reads the outcome only from the
/// worker's termination message (`run_state`).
pub fn job(inputs: &Inputs<'_>) -> Job {
    let d = inputs.dispatch;
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let runner = inputs.runner;
    let settings = inputs.settings;
    let (idle, lifetime, resources) = effective_limits(d, runner, settings);
    let storage = storage(inputs);
    let stop = d.spec.stop == Some(true);
    let pull = runner
        .image_pull_policy
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "IfNotPresent".into());
    let worker = Container {
        name: WORKER_CONTAINER.into(),
        restart_policy: Some("Always".into()),
        startup_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![WORKER_COMMAND.into(), READY_SUBCOMMAND.into()]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(WORKER_STARTUP_SECONDS),
            timeout_seconds: Some(1),
            ..Probe::default()
        }),
        image: Some(settings.worker_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![WORKER_COMMAND.into()]),
        env: Some(worker_environment(inputs, idle)),
        resources: settings.worker_resources.clone(),
        volume_mounts: Some(storage.worker),
        working_dir: Some(WORKSPACES_ROOT.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security::restricted_container()),
        ..Container::default()
    };
    let agent = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(runner.image.clone()),
        image_pull_policy: Some(pull),
        command: Some(vec![SHIM_COMMAND.into()]),
        env: Some(agent_environment(runner)),
        resources,
        volume_mounts: Some(storage.agent),
        working_dir: Some(WORKSPACES_ROOT.into()),
        // The agent's container has no say in how the run ended: only the worker's message is
        // read, and nothing the agent writes here is.
        termination_message_policy: Some("File".into()),
        security_context: Some(security::restricted_container()),
        ..Container::default()
    };
    let mut pod_meta = meta(d, String::new());
    pod_meta.name = None;
    pod_meta.namespace = None;
    pod_meta.owner_references = None;
    Job {
        metadata: meta(d, job_name(name)),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(lifetime),
            ttl_seconds_after_finished: Some(settings.job_ttl_seconds),
            suspend: Some(stop),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    share_process_namespace: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(security::restricted_pod()),
                    init_containers: Some(vec![worker]),
                    containers: vec![agent],
                    volumes: Some(storage.volumes),
                    scheduling_gates: settings.spire_trust_domain.as_ref().map(|_| {
                        vec![PodSchedulingGate {
                            name: IDENTITY_GATE.into(),
                        }]
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn settings() -> BuildSettings {
        BuildSettings {
            redis_url: String::new(),
            job_ttl_seconds: 300,
            default_max_lifetime_seconds: 3600,
            default_idle_timeout_seconds: 120,
            default_resources: resources("100m", "256Mi", "2Gi"),
            worker_image: "worker".into(),
            worker_resources: None,
            model_gateway_url: String::new(),
            model_gateway_key: None,
            stream_max_len: 10_000,
            await_network_policy_seconds: 0,
            spire_trust_domain: None,
            mcp_gateway_url: None,
            mcp_port: vexa_core::pod::DEFAULT_MCP_PORT,
        }
    }

    fn dispatch(limits: serde_json::Value) -> Dispatch {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Dispatch", "metadata": {"name": "d"},
            "spec": {
                "identity": {"subject": "alice", "launcher": "user:alice"},
                "runner": "r", "workspaces": [{"name": "w", "mode": "rw"}],
                "trigger": "message", "start": {"entrypoint": {"inline": "hi"}},
                "limits": limits,
            },
        }))
        .unwrap()
    }

    fn runner(defaults: serde_json::Value) -> AgentRunnerSpec {
        serde_json::from_value(json!({
            "image": "img", "argv": ["agent"], "streamFormat": "unit-jsonl", "defaults": defaults,
        }))
        .unwrap()
    }

    fn memory_limit(r: Option<ResourceRequirements>) -> Option<String> {
        Some(r?.limits?.get("memory")?.0.clone())
    }

    #[test]
    fn resources_come_from_the_dispatch_then_the_runner_then_the_operator() {
        let own = json!({"resources": {"limits": {"memory": "1Gi"}}});
        let runner_set = runner(json!({"resources": {"limits": {"memory": "512Mi"}}}));
        let (.., r) = effective_limits(&dispatch(own), &runner_set, &settings());
        assert_eq!(memory_limit(r).as_deref(), Some("1Gi"));
        let (.., r) = effective_limits(&dispatch(json!({})), &runner_set, &settings());
        assert_eq!(memory_limit(r).as_deref(), Some("512Mi"));
        // Neither sets any: the operator's defaults, so the pod is never BestEffort.
        let (.., r) = effective_limits(&dispatch(json!({})), &runner(json!({})), &settings());
        let r = r.expect("default resources");
        assert_eq!(r.requests.unwrap()["cpu"].0, "100m");
        assert_eq!(r.limits.unwrap()["memory"].0, "2Gi");
    }

    #[test]
    fn empty_defaults_mean_none() {
        assert_eq!(resources("", "", ""), None);
        let r = resources("", "128Mi", "").unwrap();
        assert_eq!(r.limits, None);
        assert_eq!(r.requests.unwrap().len(), 1);
    }
}
