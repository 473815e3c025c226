//! `AgentRunner`: how to run one kind of agent CLI. Defined by cluster admins; users name it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{RELATIVE_PATH_MSG, RELATIVE_PATH_RULE, RunLimits, SecretKeyRef};

// Shared with the worker: defined (with its schema docs) in vexa-core.
pub use vexa_core::StreamFormat;

/// The placeholders an argv template may use, written `${name}`.
pub const ARGV_PLACEHOLDERS: &[&str] = &[
    "prompt",
    "sessionId",
    "model",
    "allowedTools",
    "mcpConfig",
    "workspacePath",
    "dispatchId",
];

// RE2 (CEL's regex dialect) has no look-ahead, so "every ${…} is a known placeholder" is written
// as "the whole string is a sequence of non-'$' characters, '$' not followed by '{', or a known
// placeholder".
const ARG_RULE: &str = "self.all(a, a.matches('^([^$]|[$][^{]|[$]$|[$][{](prompt|sessionId|model|allowedTools|mcpConfig|workspacePath|dispatchId)[}])*$'))";
const ARG_MSG: &str = "unknown placeholder: use ${prompt}, ${sessionId}, ${model}, ${allowedTools}, ${mcpConfig}, ${workspacePath} or ${dispatchId}";

/// How to run one agent CLI in a dispatch's pod.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "AgentRunner",
    doc = "How to run one kind of agent CLI: image, argv template, stream format, defaults. Cluster-scoped; defined by admins.",
    shortname = "runner",
    category = "vexa",
    status = "AgentRunnerStatus",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.streamFormat"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunnerSpec {
    /// Container image holding the agent CLI and the Vexa agent worker.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// When to pull the image: `Always`, `IfNotPresent` (default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// The agent CLI's command line, one list item per argument. Rendered without any shell:
    /// `${prompt}` inside an item stays one argument whatever the prompt contains. Known
    /// placeholders: `${prompt}`, `${sessionId}`, `${model}`, `${allowedTools}` (comma
    /// separated), `${mcpConfig}` (path of the generated MCP config file), `${workspacePath}`,
    /// `${dispatchId}`.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new(ARG_RULE).message(ARG_MSG))]
    #[schemars(inner(length(max = 1024)))]
    pub argv: Vec<String>,
    /// Arguments appended only when a placeholder has a value, for example
    /// `{when: sessionId, argv: ["--resume", "${sessionId}"]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub optional_argv: Vec<OptionalArgs>,
    /// How to parse the CLI's standard output into unit events.
    pub stream_format: StreamFormat,
    /// Folder, relative to the rw workspace, where session files (`<thread>.session`, holding
    /// the CLI's session id) live.
    #[serde(default = "default_session_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message(RELATIVE_PATH_MSG))]
    pub session_path: String,
    /// The model passed as `${model}`, when the runner uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
    /// Non-secret environment variables of the agent container. Secrets never go here: use
    /// `modelCredential`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// The model credential the platform brokers to the agent. It is referenced here and never
    /// copied into a Dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_credential: Option<ModelCredential>,
    /// Defaults for dispatches of this runner: idle timeout, maximum lifetime, resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<RunLimits>,
}

fn default_session_path() -> String {
    vexa_core::DEFAULT_SESSION_PATH.to_owned()
}

/// Image pull policy, as for a Pod's containers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the image is missing on the node.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

/// Arguments added when a placeholder has a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionalArgs {
    /// The placeholder that must have a value (without `${}`), for example `sessionId`.
    #[schemars(regex(
        pattern = r"^(prompt|sessionId|model|allowedTools|mcpConfig|workspacePath|dispatchId)$"
    ))]
    pub when: String,
    /// The arguments to append, with placeholders.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new(ARG_RULE).message(ARG_MSG))]
    #[schemars(inner(length(max = 1024)))]
    pub argv: Vec<String>,
}

/// A plain environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    #[x_kube(validation = Rule::new("!self.startsWith('VEXA_') && self != 'REDIS_URL'")
        .message("names starting with VEXA_ and REDIS_URL are set by the platform"))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// A model credential the platform brokers for the agent. The agent never holds it: the agent
/// CLI is pointed at a loopback proxy in its pod's trusted container, which forwards each model
/// request to the operator's model gateway; the gateway adds this credential and sends the
/// request on to `endpoint`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCredential {
    /// The Secret key holding the credential. The Secret must be in the operator's namespace
    /// (the gateway reads no other); `namespace`, if set, must name it.
    pub secret_ref: SecretKeyRef,
    /// The environment variable the CLI reads its key from, for example `ANTHROPIC_API_KEY`.
    /// The agent gets a placeholder in it, never the key.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub env: String,
    /// Base URL of the model API the gateway forwards to (default `https://api.anthropic.com`).
    /// Bring your own inference by naming an endpoint inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub endpoint: Option<String>,
    /// How the gateway presents the credential: `x-api-key` (default; the Anthropic API) or
    /// `bearer` (`Authorization: Bearer`, e.g. OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<CredentialScheme>,
    /// The environment variable the CLI reads its API base URL from (default
    /// `ANTHROPIC_BASE_URL`); the agent gets the loopback proxy's address in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub base_url_env: Option<String>,
}

/// How a brokered credential is presented to the model API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialScheme {
    /// The `x-api-key` header.
    XApiKey,
    /// `Authorization: Bearer <credential>`.
    Bearer,
}

/// The observed state of an AgentRunner.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunnerStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
