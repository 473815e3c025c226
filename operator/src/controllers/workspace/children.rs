//! Pure construction of a Workspace's children: the claim it asks for and the Job that
//! prepares its folder. Same inputs, same objects, so a retry applies exactly what was applied.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use vexa_crds::{ClaimTemplate, Workspace};
use vexa_policy::bounded_name;

use super::storage::Storage;
use crate::runtime::security::{JobBounds, trusted_job};

/// The command of the prepare container, in the agent worker's image.
pub const INIT_COMMAND: &str = "vexa-workspace-init";
/// Label naming the Workspace on its children.
pub const WORKSPACE_LABEL: &str = "vexa.ai/workspace";
/// `app.kubernetes.io/component` of a prepare Job.
pub const PREPARE_COMPONENT: &str = "workspace-prepare";
/// Where the prepare container sees the whole volume.
const VOLUME_MOUNT: &str = "/volume";
/// Where the prepare container sees the seed ConfigMap.
const SEED_MOUNT: &str = "/seed";
/// Seconds a prepare Job may run (it copies a seed and makes one commit).
const PREPARE_DEADLINE_SECONDS: i64 = 300;
/// Seconds a finished prepare Job is kept: long enough to read why it failed.
const PREPARE_TTL_SECONDS: i32 = 3600;

/// Operator settings that shape a Workspace's children.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image with `vexa-workspace-init` (the agent worker's image).
    pub init_image: String,
}

fn labels(ws: &Workspace, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vexa-workspace".into()),
        ("app.kubernetes.io/component".into(), component.into()),
        ("app.kubernetes.io/part-of".into(), "vexa".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            crate::FIELD_MANAGER.into(),
        ),
        (WORKSPACE_LABEL.into(), bounded_name(&ws.name_any(), 63)),
    ])
}

/// The name of the Job preparing generation `generation` of the workspace: a changed spec
/// (a fixed seed) gets a new Job, a retry of the same one does not.
pub fn prepare_job_name(ws: &Workspace) -> String {
    let generation = ws.metadata.generation.unwrap_or_default();
    let name = ws.name_any();
    let suffix = format!("-prepare-{generation}");
    format!("{}{suffix}", bounded_name(&name, 63 - suffix.len()))
}

/// The claim a Workspace asks the operator to create. It is not owned by the Workspace: the
/// files outlive the object unless its reclaim policy says `Delete`.
pub fn claim(ws: &Workspace, template: &ClaimTemplate) -> PersistentVolumeClaim {
    let pvc = &ws.spec.storage.persistent_volume_claim;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(pvc.claim_name.clone()),
            namespace: ws.metadata.namespace.clone(),
            labels: Some(labels(ws, "workspace-storage")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: template.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(template.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The Job that prepares the workspace's folder: `vexa-workspace-init` with the whole volume
/// mounted (the folder may not exist yet), as the agents' non-root user under the `restricted`
/// Pod Security profile, with no service-account token.
pub fn prepare_job(ws: &Workspace, settings: &Settings) -> Job {
    let storage = Storage::of(&ws.spec);
    let ns = ws.metadata.namespace.clone();
    let mut env = vec![
        env("VEXA_VOLUME", VOLUME_MOUNT),
        env("VEXA_WORKSPACE_SUBPATH", storage.path.clone()),
        env("VEXA_OWNER", ws.spec.owner.clone()),
        env(
            "VEXA_WORKSPACE",
            format!("{}/{}", ns.as_deref().unwrap_or_default(), ws.name_any()),
        ),
    ];
    let mut volumes = vec![Volume {
        name: "volume".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: storage.claim.clone(),
            read_only: None,
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "volume".into(),
        mount_path: VOLUME_MOUNT.into(),
        ..VolumeMount::default()
    }];
    if let Some(seed) = &ws.spec.seed {
        env.push(self::env("VEXA_SEED", SEED_MOUNT));
        volumes.push(Volume {
            name: "seed".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: seed.config_map.clone(),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "seed".into(),
            mount_path: SEED_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let metadata = ObjectMeta {
        name: Some(prepare_job_name(ws)),
        namespace: ns,
        labels: Some(labels(ws, PREPARE_COMPONENT)),
        owner_references: ws.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let bounds = JobBounds {
        backoff_limit: 1,
        deadline_seconds: PREPARE_DEADLINE_SECONDS,
        ttl_seconds: PREPARE_TTL_SECONDS,
    };
    let container = Container {
        name: "prepare".into(),
        image: Some(settings.init_image.clone()),
        command: Some(vec![INIT_COMMAND.into()]),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    trusted_job(metadata, bounds, container, volumes)
}
