//! `Workspace`: a git folder with an id. Vexa sets no schema for its content.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    OBJECT_NAME_PATTERN, QUANTITY_PATTERN, RELATIVE_PATH_MSG, RELATIVE_PATH_RULE, SUBJECT_PATTERN,
    WorkspaceMode,
};

/// A git folder that dispatches mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Workspace",
    doc = "A git folder with an id that dispatches mount read-only or read-write.",
    namespaced,
    shortname = "ws",
    category = "vexa",
    status = "WorkspaceStatus",
    printcolumn(name = "Id", type_ = "string", json_path = ".spec.id"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.defaultMode"),
    printcolumn(name = "Head", type_ = "string", json_path = ".status.headCommit"),
    printcolumn(name = "Held-By", type_ = "string", json_path = ".status.heldBy"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.id == oldSelf.id").message("id is immutable"))]
#[x_kube(validation = Rule::new("self.storage == oldSelf.storage").message("storage is immutable"))]
pub struct WorkspaceSpec {
    /// Stable id of the workspace (survives renames of the object).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub id: String,
    /// Where the files live.
    pub storage: WorkspaceStorage,
    /// At-rest encryption. Reserved: accepted and shown, not yet enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Mode a dispatch gets when it does not say (`ro` unless set). Untrusted triggers always
    /// get `ro`.
    #[serde(default = "default_mode")]
    pub default_mode: WorkspaceMode,
    /// The subject who owns the workspace.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub owner: String,
    /// Files to seed a new (empty) workspace with before its first commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
}

fn default_mode() -> WorkspaceMode {
    WorkspaceMode::ReadOnly
}

/// The storage of a workspace. Exactly one kind is set; only a PVC exists in v1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStorage {
    /// A folder on a PersistentVolumeClaim in this namespace.
    pub persistent_volume_claim: PvcStorage,
}

/// A folder on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorage {
    /// Name of the PVC in the Workspace's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub claim_name: String,
    /// Folder on the volume holding the workspace's git repository (default: the workspace id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message(RELATIVE_PATH_MSG))]
    pub sub_path: Option<String>,
    /// Create the claim when it does not exist. Without it, an existing claim is adopted and
    /// the workspace waits (`Ready=False`, reason `ClaimNotFound`) until it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ClaimTemplate>,
}

/// The PersistentVolumeClaim the operator creates for a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTemplate {
    /// Requested size, as a Kubernetes quantity (for example `1Gi`).
    #[schemars(length(min = 1, max = 32), regex(pattern = QUANTITY_PATTERN))]
    pub size: String,
    /// StorageClass of the claim (default: the cluster's default class). The class must give
    /// the pod's `fsGroup` write access to the volume, as most CSI drivers do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub storage_class_name: Option<String>,
    /// What happens to the created claim when the Workspace is deleted: `Retain` (default;
    /// the files outlive the object) or `Delete` (only when no other Workspace uses the claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<ReclaimPolicy>,
}

/// What happens to a claim the operator created once its Workspace is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the claim and its files.
    Retain,
    /// Delete the claim, unless another Workspace still uses it.
    Delete,
}

/// At-rest encryption settings (reserved).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Reference to the key, for example a KMS key id or `secret:<name>/<key>`.
    #[schemars(length(min = 1, max = 512))]
    pub key_ref: String,
}

/// Seed content for a new workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    /// A ConfigMap in this namespace; each key becomes a file (keys may use `__` for `/`).
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub config_map: String,
}

/// The observed state of a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the workspace holds an initialised git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialized: Option<bool>,
    /// The last commit seen on the workspace's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<String>,
    /// The Dispatch that currently holds the workspace's folder for writing (the lock is
    /// keyed on the storage, so Workspaces naming the same claim and folder show one holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Standard conditions: `Ready` (reasons `Ready`, `Preparing`, `ClaimNotFound`,
    /// `SeedNotFound`, `StorageOverlaps`, `PrepareFailed`, `Terminating`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
