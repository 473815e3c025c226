//! `Transcript`: a meeting's transcript. Segments live in a Redis stream, not in etcd.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{MeetingRef, SUBJECT_PATTERN};

/// A meeting's transcript.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vexa.ai",
    version = "v1",
    kind = "Transcript",
    doc = "A meeting transcript; its segments live in a Redis stream.",
    namespaced,
    shortname = "tx",
    category = "vexa",
    status = "TranscriptStatus",
    printcolumn(
        name = "Meeting",
        type_ = "string",
        json_path = ".spec.meeting.meetingId"
    ),
    printcolumn(
        name = "Platform",
        type_ = "string",
        json_path = ".spec.meeting.platform"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Segments",
        type_ = "integer",
        json_path = ".status.segmentCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Transcript's spec is immutable"))]
pub struct TranscriptSpec {
    /// The meeting.
    pub meeting: MeetingRef,
    /// The subject who owns the transcript.
    #[schemars(length(min = 1, max = 128), regex(pattern = SUBJECT_PATTERN))]
    pub owner: String,
    /// The Redis stream holding the segments (default `tc:meeting:<meetingId>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub stream: Option<String>,
}

/// Whether the meeting is still going.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptPhase {
    /// Segments are still arriving.
    Live,
    /// The session ended; `transcript.completed` has fired.
    Completed,
}

/// The observed state of a transcript.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `live` or `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TranscriptPhase>,
    /// Number of completed segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_count: Option<i64>,
    /// Id of the last segment seen (`<sessionUid>:<speakerKey>:<startMs>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_segment_id: Option<String>,
    /// SHA-256 over the completed segments, in order, for tamper evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When the transcript completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One transcript segment as carried on the stream (not a Kubernetes object).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// `<sessionUid>:<speakerKey>:<startMs>`.
    pub segment_id: String,
    /// Who spoke.
    pub speaker: String,
    /// What was said.
    pub text: String,
    /// Start, in seconds from the session start.
    pub start: f64,
    /// End, in seconds from the session start.
    pub end: f64,
    /// Whether the segment is final.
    pub completed: bool,
    /// Word-level timing, when the transcriber gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<serde_json::Value>>,
    /// Detected language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Transcriber confidence, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}
