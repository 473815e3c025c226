//! `Dispatch`: one run of one agent, in one isolated short-lived container.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{
    LAUNCHER_PATTERN, MeetingRef, OBJECT_NAME_PATTERN, RELATIVE_PATH_MSG, RELATIVE_PATH_RULE,
    RunLimits, SUBJECT_PATTERN, Trigger, WorkspaceMode,
};

// Shared with the worker, the policy and the CLI: defined (with their schema docs) in vexa-core.
pub use vexa_core::{ContextKind, DispatchPhase, ModelUsage, StopReason, Trust};

/// The desired run. Immutable once created, except that `stop` may be set to ask the run to end.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Dispatch",
    doc = "One run of one agent in one isolated, short-lived container, on behalf of a subject.",
    plural = "dispatches",
    namespaced,
    shortname = "dsp",
    category = "vexa",
    status = "DispatchStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.stopReason"),
    printcolumn(name = "Trigger", type_ = "string", json_path = ".spec.trigger"),
    printcolumn(
        name = "Subject",
        type_ = "string",
        json_path = ".spec.identity.subject"
    ),
    printcolumn(name = "Runner", type_ = "string", json_path = ".spec.runner"),
    printcolumn(
        name = "Trust",
        type_ = "string",
        json_path = ".status.trust",
        priority = 1
    ),
    printcolumn(
        name = "Job",
        type_ = "string",
        json_path = ".status.jobName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(SPEC_IMMUTABLE_RULE)
        .message("spec is immutable once created; only 'stop' may be set to true"),
    validation = Rule::new("!has(oldSelf.stop) || !oldSelf.stop || (has(self.stop) && self.stop)")
        .message("a stop request cannot be withdrawn")
)]
pub struct DispatchSpec {
    /// On whose behalf the run happens and who started it.
    pub identity: DispatchIdentity,
    /// Name of the AgentRunner (cluster-scoped) that says how to run the agent CLI.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub runner: String,
    /// Workspaces the run may use, each by the name of a Workspace in this namespace. At least
    /// one; at most one may be written (`rw`) by one dispatch at a time.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workspaces: Vec<WorkspaceUse>,
    /// Names of Tool objects in this namespace: the scoped toolbelt the agent may call
    /// through the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN)))]
    pub tools: Vec<String>,
    /// What started this run. `event` and `transcription` are untrusted: their workspaces are
    /// read-only and their effects become proposals (Cards).
    pub trigger: Trigger,
    /// What the run is about: a meeting, an email, or generic source material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<DispatchContext>,
    /// How the agent begins: a fresh entrypoint, or resuming a saved session.
    pub start: Start,
    /// Limits of this run; unset fields come from the AgentRunner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RunLimits>,
    /// Set to true to ask the run to stop gracefully (stop reason `stopped`). Cannot be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<bool>,
}

// Each field is compared with its old value; optional fields must also keep their presence.
// `stop` is deliberately absent: it is the one field a user may change.
const SPEC_IMMUTABLE_RULE: &str = "self.identity == oldSelf.identity && self.runner == oldSelf.runner \
    && self.workspaces == oldSelf.workspaces && self.trigger == oldSelf.trigger && self.start == oldSelf.start \
    && has(self.tools) == has(oldSelf.tools) && (!has(self.tools) || self.tools == oldSelf.tools) \
    && has(self.context) == has(oldSelf.context) && (!has(self.context) || self.context == oldSelf.context) \
    && has(self.limits) == has(oldSelf.limits) && (!has(self.limits) || self.limits == oldSelf.limits)";

/// The chain of custody of a run: every effect resolves to (subject, launcher, scope).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchIdentity {
    /// The principal on whose behalf the agent runs; owns the data and the quota. Must match
    /// an Identity in this namespace.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub subject: String,
    /// Who or what started the run: `user:<name>`, `schedule:<namespace>/<name>` or
    /// `integration:<name>`. A person must be the requesting user; a schedule or integration
    /// must hold a delegation grant from the subject.
    #[schemars(length(min = 6, max = 300), regex(pattern = LAUNCHER_PATTERN))]
    pub launcher: String,
}

/// One workspace granted to a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUse {
    /// Name of a Workspace in this namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub name: String,
    /// `ro` or `rw`. Unset means the Workspace's default mode, and always `ro` for untrusted
    /// triggers (`event`, `transcription`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkspaceMode>,
}

/// The context of a run. The envelope never carries the source's bytes: a tool resolves
/// `source` when the agent asks for it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'meeting' || has(self.meeting)")
        .message("context.kind 'meeting' requires context.meeting"),
    validation = Rule::new("!has(self.meeting) || self.kind == 'meeting'")
        .message("context.meeting is only allowed with context.kind 'meeting'")
)]
pub struct DispatchContext {
    /// `none`, `meeting`, `email` or `generic`.
    #[serde(default)]
    pub kind: ContextKind,
    /// The meeting this run belongs to (for `kind: meeting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting: Option<MeetingRef>,
    /// An opaque reference to the source material (a message in a mailbox, a document) that a
    /// tool resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// The chat thread this run continues; selects the session file
    /// `.claude/sessions/<session>.session`. Defaults to `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    )]
    pub session: Option<String>,
}

/// An opaque reference to source material, resolved by a tool (never by the operator).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// The source's URI, for example `imap://mailbox/INBOX;UID=4711`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9+.-]*:')").message("source.uri must be a URI with a scheme"))]
    pub uri: String,
    /// The version of the source the run was started for (an ETag or content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub etag: Option<String>,
}

/// How the agent begins. Exactly one of `entrypoint` and `session`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.entrypoint) != has(self.session)")
    .message("start must set exactly one of entrypoint or session"))]
pub struct Start {
    /// Start fresh with a prompt and/or a plan file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Entrypoint>,
    /// Resume a saved agent session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionStart>,
}

/// The first turn of a fresh run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.inline) || has(self.path)")
    .message("start.entrypoint must set inline, path or both"))]
pub struct Entrypoint {
    /// The prompt of the first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub inline: Option<String>,
    /// A plan file in the (first) workspace; the first turn becomes "read and execute the plan
    /// at <path>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message(RELATIVE_PATH_MSG))]
    pub path: Option<String>,
}

/// Resume a saved agent session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStart {
    /// The session file to resume, relative to the rw workspace, for example
    /// `.claude/sessions/main.session`.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message(RELATIVE_PATH_MSG))]
    pub reference: String,
    /// An optional prompt for the resumed session's first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub prompt: Option<String>,
}

/// The Redis streams of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamKeys {
    /// Stream of unit events written by the worker (`unit:<dispatch-id>:out`).
    pub out: String,
    /// Stream of turns read by the worker (`unit:<dispatch-id>:in`).
    #[serde(rename = "in")]
    pub input: String,
}

/// What git says a run did to one workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceProvenance {
    /// Name of the Workspace.
    pub workspace: String,
    /// The mode the run had.
    pub mode: WorkspaceMode,
    /// The commit the run started from (the folder's HEAD once the worker prepared it), as the
    /// worker reports it when it exits; rw workspaces only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The commit the run ended on (the folder's HEAD when the worker exited; equal to
    /// `baseCommit` when the run committed nothing). The Workspace's `headCommit` follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_commit: Option<String>,
}

/// The observed state of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispatchStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle: pending, refused, queued, starting, running, stopping, stopped, destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DispatchPhase>,
    /// Why the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// Exit code of the agent worker, once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the agent worker started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<Time>,
    /// Name of the Job that runs the dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Name of the Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Derived trust: `trusted` or `proposeOnly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Trust>,
    /// The run's Redis streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamKeys>,
    /// The session file the run reads and writes, relative to its rw workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ref: Option<String>,
    /// Model tokens the run used through the brokered credential, as its worker counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ModelUsage>,
    /// Git provenance per workspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<WorkspaceProvenance>,
    /// Standard conditions: `Valid`, `Authorized`, `Queued`, `Ready`, `Finished`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
