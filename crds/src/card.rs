//! `Card`: a proposal awaiting a person (proactive-card.v1). Trusted code, never the agent,
//! applies an approved card.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{OBJECT_NAME_PATTERN, RELATIVE_PATH_MSG, RELATIVE_PATH_RULE, SUBJECT_PATTERN};

/// A proposal or notice for a person.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Card",
    doc = "A proposal (a file to record, a draft, a gated tool call) or a notice awaiting a person.",
    namespaced,
    category = "vexa",
    status = "CardStatus",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Title", type_ = "string", json_path = ".spec.title"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(
        name = "Decision",
        type_ = "string",
        json_path = ".spec.decision.verdict"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'record' || has(self.record)").message("a record card needs record"),
    validation = Rule::new("self.kind != 'send' || has(self.send)").message("a send card needs send"),
    validation = Rule::new("!has(self.record) || self.kind == 'record'").message("record is only allowed on record cards"),
    validation = Rule::new("!has(self.send) || self.kind == 'send'").message("send is only allowed on send cards"),
    validation = Rule::new("!has(self.decision) || self.kind in ['record', 'draft', 'send']")
        .message("only record, draft and send cards take a decision"),
    validation = Rule::new("!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision)")
        .message("a decision is final"),
    validation = Rule::new("self.kind == oldSelf.kind && self.owner == oldSelf.owner && self.title == oldSelf.title && has(self.record) == has(oldSelf.record) && (!has(self.record) || self.record == oldSelf.record) && has(self.send) == has(oldSelf.send) && (!has(self.send) || self.send == oldSelf.send)")
        .message("only decision may change on a Card")
)]
pub struct CardSpec {
    /// `record`, `draft`, `send`, `suggestion`, `alert` or `digest`.
    pub kind: CardKind,
    /// The subject the card is for; only they (or an admin) decide it.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub owner: String,
    /// The Dispatch that produced the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub source_dispatch: Option<String>,
    /// One-line title.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// Markdown body shown to the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
    /// For `record`: the file to commit on approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordProposal>,
    /// For `send`: the gated tool call to execute on approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendProposal>,
    /// The person's decision. Set once; it cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Kinds of cards.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardKind {
    /// A file to commit to a workspace.
    Record,
    /// A draft for the person to edit and use.
    Draft,
    /// A gated tool call (for example sending an email).
    Send,
    /// Informational: a suggestion.
    Suggestion,
    /// Informational: something needs attention.
    Alert,
    /// Informational: a summary.
    Digest,
}

/// A file to commit when approved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordProposal {
    /// Workspace to commit to.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub workspace: String,
    /// Path of the file, relative to the workspace.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(RELATIVE_PATH_RULE).message(RELATIVE_PATH_MSG))]
    pub path: String,
    /// The file's full new content.
    #[schemars(length(max = 262144))]
    pub content: String,
}

/// A tool call to execute when approved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendProposal {
    /// Name of the Tool object.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub tool: String,
    /// The call's arguments, as JSON text.
    #[schemars(length(min = 2, max = 262144))]
    pub arguments: String,
}

/// A person's decision on a card.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `approve` or `reject`.
    pub verdict: Verdict,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Who decided: the Kubernetes username of the person who set the decision. Admission
    /// requires it to be the requesting user, so it cannot name someone else. Optional only
    /// for Cards decided before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub by: Option<String>,
}

/// Approve or reject.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Apply the proposal.
    Approve,
    /// Drop the proposal.
    Reject,
}

/// Where a card is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardPhase {
    /// Waiting for a person.
    Pending,
    /// Approved; being applied.
    Approved,
    /// Rejected; nothing happens.
    Rejected,
    /// Applied (committed or sent).
    Applied,
    /// Applying it failed; see conditions.
    Failed,
}

/// The observed state of a card.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `pending`, `approved`, `rejected`, `applied` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CardPhase>,
    /// Who decided (the authenticated Kubernetes user), recorded by trusted code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_time: Option<Time>,
    /// For an applied `record`: the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
