//! `Tool`: one capability an agent reaches over MCP, through the gateway.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

// Shared with the policy: defined (with its schema docs) in vexa-core.
pub use vexa_core::Grant;

/// One capability reached over MCP.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Tool",
    doc = "One capability an agent reaches over MCP through the gateway, auto-granted or gated.",
    namespaced,
    category = "vexa",
    status = "ToolStatus",
    printcolumn(name = "Tool", type_ = "string", json_path = ".spec.toolName"),
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope"),
    printcolumn(name = "Grant", type_ = "string", json_path = ".spec.grant"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// The name the agent sees, for example `email.send`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
    )]
    pub tool_name: String,
    /// The capability string the dispatch token must carry, for example `email:send`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9:._/-]*$")
    )]
    pub scope: String,
    /// `auto`: calls run when the agent makes them. `gate`: a call never runs on the agent's
    /// say-so; it becomes a Card a person approves.
    pub grant: Grant,
    /// Whether a call has effects that cannot be undone (sending, paying, deleting). A dispatch
    /// is trusted only if each irreversible tool it holds is gated. Defaults to true.
    #[serde(default = "default_true")]
    pub irreversible: bool,
    /// The protocol: `mcp`.
    #[serde(default)]
    pub transport: Transport,
    /// The MCP server behind the gateway.
    pub server: ToolServer,
    /// The audience the gateway asks for when it exchanges the dispatch token for this tool.
    #[schemars(length(min = 1, max = 256))]
    pub audience: String,
    /// The credential the gateway brokers to the server (a reference; never a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<SecretKeyRef>,
    /// Governance tags, for example `pii` or `external-send`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub barriers: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The protocol a tool speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Model Context Protocol over streamable HTTP.
    #[default]
    Mcp,
}

/// Address of an MCP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolServer {
    /// URL of the MCP endpoint, for example `https://mail-mcp.vexa-system.svc:8443/mcp`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("server.url must be an http(s) URL"))]
    pub url: String,
}

/// The observed state of a Tool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
