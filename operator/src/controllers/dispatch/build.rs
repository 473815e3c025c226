//! Pure construction of a dispatch's children: its Secret and its Job. No I/O: given the same
//! inputs these functions always return the same objects, so a retry or a restart of the
//! operator applies exactly what was applied before.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde_json::json;
use vexa_crds::{AgentRunnerSpec, Dispatch, RunLimits, WorkspaceMode, WorkspaceSpec};
use vexa_policy::{Authorization, dispatch_id, in_topic, job_name, out_topic, secret_name};

/// Label holding the (bounded) dispatch name on Jobs and pods.
pub const DISPATCH_LABEL: &str = "vexa.ai/dispatch";
/// Annotation holding the full dispatch name on Jobs and pods.
pub const DISPATCH_ANNOTATION: &str = "vexa.ai/dispatch-name";
/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "agent";
/// Key of the brokered model credential in the per-dispatch Secret.
pub const MODEL_CREDENTIAL_KEY: &str = "model-credential";
/// Where workspaces are mounted: `/workspaces/<name>`.
pub const WORKSPACES_ROOT: &str = "/workspaces";
/// The agent worker's entrypoint inside every runner image.
pub const WORKER_COMMAND: &str = "vexa-agent-worker";
/// The non-root user the agent runs as.
pub const AGENT_UID: i64 = 65532;

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
    /// The model credential's value, read from the Secret the runner references.
    pub model_credential: Option<Vec<u8>>,
    /// Operator settings.
    pub settings: &'a BuildSettings,
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

/// The per-dispatch Secret: the dispatch's credentials. Today it carries the brokered model
/// credential; the trust stage adds the signed dispatch token (mounted only into a sidecar).
pub fn secret(inputs: &Inputs<'_>) -> Secret {
    let d = inputs.dispatch;
    let mut data = BTreeMap::new();
    if let Some(value) = &inputs.model_credential {
        data.insert(MODEL_CREDENTIAL_KEY.to_owned(), ByteString(value.clone()));
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

fn mode_str(m: WorkspaceMode) -> &'static str {
    match m {
        WorkspaceMode::ReadOnly => "ro",
        WorkspaceMode::ReadWrite => "rw",
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The agent container's environment (SPEC §4 names, plus what the worker needs to render the
/// runner's argv).
fn environment(inputs: &Inputs<'_>, idle: i64) -> Vec<EnvVar> {
    let d = inputs.dispatch;
    let ns = d.metadata.namespace.as_deref().unwrap_or_default();
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let id = dispatch_id(ns, name);
    let spec = &d.spec;
    let workspaces: Vec<_> = inputs
        .workspaces
        .iter()
        .map(|w| json!({"name": w.name, "id": w.spec.id, "mode": mode_str(w.mode), "path": format!("{WORKSPACES_ROOT}/{}", w.name)}))
        .collect();
    let primary = inputs
        .workspaces
        .iter()
        .find(|w| w.mode == WorkspaceMode::ReadWrite)
        .or(inputs.workspaces.first())
        .map(|w| format!("{WORKSPACES_ROOT}/{}", w.name))
        .unwrap_or_default();
    let thread = spec
        .context
        .as_ref()
        .and_then(|c| c.session.clone())
        .unwrap_or_else(|| "main".into());
    let runner = inputs.runner;
    let runner_spec = json!({
        "argv": runner.argv,
        "optionalArgv": runner.optional_argv,
        "streamFormat": runner.stream_format,
        "sessionPath": runner.session_path,
        "model": runner.model,
    });
    let trigger = serde_json::to_value(spec.trigger)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut vars = vec![
        env("VEXA_UNIT_ID", id.clone()),
        env("VEXA_UNIT_TRIGGER", trigger),
        env("VEXA_UNIT_OUT_TOPIC", out_topic(&id)),
        env("VEXA_UNIT_IN_TOPIC", in_topic(&id)),
        env(
            "VEXA_START",
            serde_json::to_string(&spec.start).unwrap_or_default(),
        ),
        env(
            "VEXA_WORKSPACES",
            serde_json::Value::Array(workspaces).to_string(),
        ),
        env("VEXA_WORKSPACE_PATH", primary),
        env("VEXA_OWNER", spec.identity.subject.clone()),
        env("VEXA_LAUNCHER", spec.identity.launcher.clone()),
        env("VEXA_RUNNER", spec.runner.clone()),
        env("VEXA_RUNNER_SPEC", runner_spec.to_string()),
        env(
            "VEXA_TOOLS",
            serde_json::to_string(&spec.tools).unwrap_or_default(),
        ),
        // What the run is about (meeting, opaque source reference); never the source's bytes.
        env(
            "VEXA_CONTEXT",
            serde_json::to_string(&spec.context).unwrap_or_default(),
        ),
        env("VEXA_CHAT_SESSION", thread),
        env("VEXA_IDLE_TIMEOUT_SEC", idle.to_string()),
        env("REDIS_URL", inputs.settings.redis_url.clone()),
        env("HOME", "/home/agent"),
    ];
    // The schema keeps VEXA_* and REDIS_URL out of a runner's env; anything else the platform
    // sets (HOME) wins over the runner so no variable appears twice.
    let platform: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
    vars.extend(
        runner
            .env
            .iter()
            .filter(|e| !platform.contains(&e.name))
            .map(|e| env(&e.name, e.value.clone())),
    );
    if let (Some(cred), Some(_)) = (&runner.model_credential, &inputs.model_credential) {
        vars.push(EnvVar {
            name: cred.env.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(name),
                    key: MODEL_CREDENTIAL_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    vars
}

/// Volumes and mounts: one volume per distinct PVC, one mount per workspace (its folder on
/// the volume, read-only unless the run writes it), and writable scratch space.
fn storage(inputs: &Inputs<'_>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: "home".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "home".into(),
            mount_path: "/home/agent".into(),
            ..VolumeMount::default()
        },
    ];
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
        mounts.push(VolumeMount {
            name: format!("ws-{index}"),
            mount_path: format!("{WORKSPACES_ROOT}/{}", w.name),
            sub_path: Some(pvc.sub_path.clone().unwrap_or_else(|| w.spec.id.clone())),
            read_only: Some(w.mode == WorkspaceMode::ReadOnly),
            ..VolumeMount::default()
        });
    }
    (volumes, mounts)
}

/// The Job that runs the dispatch: one pod, never restarted, no service-account token,
/// non-root with a read-only root filesystem, no privilege escalation, no capabilities.
pub fn job(inputs: &Inputs<'_>) -> Job {
    let d = inputs.dispatch;
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let runner = inputs.runner;
    let (idle, lifetime, resources) = effective_limits(d, runner, inputs.settings);
    let (volumes, mounts) = storage(inputs);
    let stop = d.spec.stop == Some(true);
    let pull = runner
        .image_pull_policy
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "IfNotPresent".into());
    let container = Container {
        name: AGENT_CONTAINER.into(),
        image: Some(runner.image.clone()),
        image_pull_policy: Some(pull),
        command: Some(vec![WORKER_COMMAND.into()]),
        env: Some(environment(inputs, idle)),
        resources,
        volume_mounts: Some(mounts),
        working_dir: Some(WORKSPACES_ROOT.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
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
            ttl_seconds_after_finished: Some(inputs.settings.job_ttl_seconds),
            suspend: Some(stop),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(AGENT_UID),
                        run_as_group: Some(AGENT_UID),
                        fs_group: Some(AGENT_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
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

    fn settings() -> BuildSettings {
        BuildSettings {
            redis_url: String::new(),
            job_ttl_seconds: 300,
            default_max_lifetime_seconds: 3600,
            default_idle_timeout_seconds: 120,
            default_resources: resources("100m", "256Mi", "2Gi"),
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
