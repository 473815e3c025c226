//! Types shared by several kinds: workspace modes, references, limits and the rule strings that
//! several schemas repeat.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Shared with the worker, the policy and the CLI: defined (with their schema docs) in vexa-core.
pub use vexa_core::{MeetingRef, Trigger, WorkspaceMode};

/// A reference to a key of a Secret. Only the reference is stored; the value never appears in
/// any Vexa object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret. For namespaced objects it defaults to the object's namespace;
    /// for cluster-scoped objects it defaults to the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Bounds on a run. Unset fields fall back to the AgentRunner's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunLimits {
    /// Seconds without a new turn after which the agent worker exits (stop reason
    /// `idle_timeout`). Chat and routines default to 120; meetings may use up to 14400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: Option<i64>,
    /// Longest the run may live, in seconds; the Job's `activeDeadlineSeconds` (stop reason
    /// `max_lifetime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_lifetime_seconds: Option<i64>,
    /// Compute resources of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Most model tokens (input and output together) the run may use through the brokered
    /// model credential; past it, model requests are refused and the agent's turn fails.
    /// Unset: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub model_tokens: Option<i64>,
}

/// CEL: a workspace-relative path: not absolute, no `..` segment, no empty segment.
pub(crate) const RELATIVE_PATH_RULE: &str =
    "!self.startsWith('/') && !self.split('/').exists(s, s == '..' || s == '')";
/// Message for [`RELATIVE_PATH_RULE`].
pub(crate) const RELATIVE_PATH_MSG: &str =
    "must be a path relative to the workspace root, without '..' or empty segments";
/// Pattern of a subject (a principal's stable id, for example a user name or an email address).
pub(crate) const SUBJECT_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$";
/// Pattern of a launcher: who or what started a dispatch.
pub(crate) const LAUNCHER_PATTERN: &str = r"^(user:[A-Za-z0-9][A-Za-z0-9._@+-]*|schedule:[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?|integration:[a-z0-9]([-.a-z0-9]*[a-z0-9])?)$";
/// A Kubernetes quantity such as `512Mi`, `1Gi` or `10G`.
pub(crate) const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[kmu]|e[0-9]+)?$";
/// Pattern of a name that refers to another object (an RFC 1123 subdomain).
pub(crate) const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$";
