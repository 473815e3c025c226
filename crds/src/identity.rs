//! `Identity`: a principal and the delegation grants it gives to non-human launchers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LAUNCHER_PATTERN, OBJECT_NAME_PATTERN, SUBJECT_PATTERN, WorkspaceMode};

/// A principal on whose behalf agents run.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Identity",
    doc = "A principal on whose behalf agents run, and the delegation grants it gives to schedules and integrations.",
    plural = "identities",
    namespaced,
    shortname = "vid",
    category = "vexa",
    status = "IdentityStatus",
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.subject == oldSelf.subject").message("subject is immutable"))]
pub struct IdentitySpec {
    /// The principal's stable id, as used in `Dispatch.spec.identity.subject`.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub subject: String,
    /// Kubernetes user names (as the API server authenticates them, for example the OIDC
    /// username) that act as this subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(length(min = 1, max = 256)))]
    pub kubernetes_users: Vec<String>,
    /// Delegation grants: what a schedule or integration may launch on this subject's behalf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub grants: Vec<DelegationGrant>,
}

/// What one non-human launcher may do for the subject. A dispatch may only narrow it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.launcher.startsWith('user:')")
    .message("grants are for schedule: and integration: launchers; people launch as themselves"))]
pub struct DelegationGrant {
    /// Name of the grant, referred to by `Schedule.spec.grant`.
    #[schemars(length(min = 1, max = 63), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// The launcher that may use it: `schedule:<namespace>/<name>` or `integration:<name>`.
    #[schemars(length(min = 6, max = 300), regex(pattern = LAUNCHER_PATTERN))]
    pub launcher: String,
    /// Workspaces the launcher may use, each with the widest mode it may ask for.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workspaces: Vec<GrantedWorkspace>,
    /// Names of the Tools the launcher may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN)))]
    pub tools: Vec<String>,
    /// When the grant stops being valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
    /// Longest dispatch token that may be minted under this grant, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 86400))]
    pub max_token_lifetime_seconds: Option<i64>,
}

/// A workspace in a grant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedWorkspace {
    /// Name of a Workspace in this namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// The widest mode allowed: `rw` allows `ro` too.
    pub mode: WorkspaceMode,
}

/// The observed state of an Identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `Linked` (the identity provider user exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
