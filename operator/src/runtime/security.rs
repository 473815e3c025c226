//! The Pod Security `restricted` profile, as every pod the operator creates wears it: non-root,
//! no privilege escalation, no capabilities, the runtime's default seccomp profile.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

/// The non-root user (and group) of every container the operator starts.
pub const RUN_AS: i64 = 65532;

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The pod-level context: user, group and `fsGroup` [`RUN_AS`], so volumes that honour
/// `fsGroup` are writable by the container.
pub fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// The container-level context, with a read-only root filesystem.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

/// The bounds of a short trusted Job (a workspace's prepare Job, a Card's apply Job, a
/// workspace's reader).
#[derive(Debug, Clone, Copy)]
pub struct JobBounds {
    /// Pods retried after a failure.
    pub backoff_limit: i32,
    /// Seconds the Job may run.
    pub deadline_seconds: i64,
    /// Seconds a finished Job is kept.
    pub ttl_seconds: i32,
}

/// A Job of one trusted container: its pod never restarts, mounts no service-account token,
/// gets no Service variables and wears the `restricted` profile (the container gets
/// [`restricted_container`], `IfNotPresent`, and requests of 10m CPU and 32 MiB with a 256 MiB
/// memory limit); `metadata`'s labels go on the pod too.
pub fn trusted_job(
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    bounds: JobBounds,
    container: k8s_openapi::api::core::v1::Container,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
) -> k8s_openapi::api::batch::v1::Job {
    use k8s_openapi::api::batch::v1::{Job, JobSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let labels = metadata.labels.clone();
    let quantity = |q: &str| Quantity(q.into());
    let resources = ResourceRequirements {
        requests: Some(
            [("cpu", "10m"), ("memory", "32Mi")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), quantity(v)))
                .collect(),
        ),
        limits: Some([("memory".to_owned(), quantity("256Mi"))].into()),
        ..ResourceRequirements::default()
    };
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(bounds.backoff_limit),
            active_deadline_seconds: Some(bounds.deadline_seconds),
            ttl_seconds_after_finished: Some(bounds.ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod()),
                    containers: vec![Container {
                        image_pull_policy: Some("IfNotPresent".into()),
                        security_context: Some(restricted_container()),
                        resources: Some(resources),
                        ..container
                    }],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
