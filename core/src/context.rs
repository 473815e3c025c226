//! What a run is about: the kind of material, a meeting, an opaque source reference, the chat
//! thread. The envelope never carries the source's bytes: a tool resolves the reference.
//!
//! [`ContextKind`] and [`MeetingRef`] are also CRD types (vexa-crds re-exports them; their
//! `///` docs are schema descriptions). [`RunContext`] and [`SourceRef`] are the same context
//! as the worker receives it in `VEXA_CONTEXT`: the Dispatch's `spec.context` without its
//! validation rules, which only the API server enforces.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What kind of material a run works on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContextKind {
    /// No particular context.
    #[default]
    None,
    /// A meeting: `meeting` must be set.
    Meeting,
    /// An email or mailbox: `source` refers to it.
    Email,
    /// Any other source material referred to by `source`.
    Generic,
}

/// A reference to a meeting. For the platforms supported today the three ids are equal: the
/// platform's native meeting id (for example a Meet code `abc-defg-hij`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeetingRef {
    /// The meeting's id.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    )]
    pub meeting_id: String,
    /// The id of this session of the meeting (equal to `meetingId` for current platforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    )]
    pub session_uid: Option<String>,
    /// The meeting platform, for example `google_meet`, `teams` or `zoom`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub platform: String,
}

/// The context of a run as the worker receives it (`VEXA_CONTEXT`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunContext {
    /// `none`, `meeting`, `email` or `generic`.
    #[serde(default)]
    pub kind: ContextKind,
    /// The meeting the run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting: Option<MeetingRef>,
    /// An opaque reference to the source material, resolved by a tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// The chat thread the run continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// An opaque reference to source material, as the worker receives it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// The source's URI, for example `imap://mailbox/INBOX;UID=4711`.
    pub uri: String,
    /// The version of the source the run was started for (an ETag or content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}
