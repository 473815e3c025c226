//! The few messages of SPIRE's server API that this crate sends and reads, written by hand.
//!
//! Field numbers and types follow the public protos of `github.com/spiffe/spire-api-sdk`
//! (`spire/api/types/{entry,selector,spiffeid,status}.proto` and
//! `spire/api/server/entry/v1/entry.proto`). Only the fields we use are declared: protobuf
//! decoders skip unknown fields, and an absent field is its default on the server's side, so a
//! subset is wire-compatible in both directions. The tests in `tests/server.rs` talk to a real
//! spire-server, which is what pins these numbers.

/// `spire.api.types.SPIFFEID`: a SPIFFE ID split into trust domain and path.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SpiffeIdMsg {
    #[prost(string, tag = "1")]
    pub trust_domain: String,
    #[prost(string, tag = "2")]
    pub path: String,
}

/// `spire.api.types.Selector`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SelectorMsg {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `spire.api.types.Entry` (the fields we set or read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryMsg {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub spiffe_id: Option<SpiffeIdMsg>,
    #[prost(message, optional, tag = "3")]
    pub parent_id: Option<SpiffeIdMsg>,
    #[prost(message, repeated, tag = "4")]
    pub selectors: Vec<SelectorMsg>,
    #[prost(int32, tag = "5")]
    pub x509_svid_ttl: i32,
    /// Seconds since the Unix epoch after which SPIRE drops the entry; 0 = never.
    #[prost(int64, tag = "9")]
    pub expires_at: i64,
    #[prost(string, tag = "14")]
    pub hint: String,
}

/// `spire.api.types.Status`: a per-item result of a batch call (gRPC code and message).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StatusMsg {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `BatchCreateEntryRequest` (no output mask: the server then returns whole entries).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchCreateEntryRequest {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<EntryMsg>,
}

/// `BatchCreateEntryResponse.Result`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateResult {
    #[prost(message, optional, tag = "1")]
    pub status: Option<StatusMsg>,
    #[prost(message, optional, tag = "2")]
    pub entry: Option<EntryMsg>,
}

/// `BatchCreateEntryResponse`: one result per requested entry, in request order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchCreateEntryResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<CreateResult>,
}

/// `BatchDeleteEntryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchDeleteEntryRequest {
    #[prost(string, repeated, tag = "1")]
    pub ids: Vec<String>,
}

/// `BatchDeleteEntryResponse.Result`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteResult {
    #[prost(message, optional, tag = "1")]
    pub status: Option<StatusMsg>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `BatchDeleteEntryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchDeleteEntryResponse {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<DeleteResult>,
}

/// `ListEntriesRequest.Filter` (only by parent ID).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListFilter {
    #[prost(message, optional, tag = "2")]
    pub by_parent_id: Option<SpiffeIdMsg>,
}

/// `ListEntriesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListEntriesRequest {
    #[prost(message, optional, tag = "1")]
    pub filter: Option<ListFilter>,
    #[prost(int32, tag = "3")]
    pub page_size: i32,
    #[prost(string, tag = "4")]
    pub page_token: String,
}

/// `ListEntriesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListEntriesResponse {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<EntryMsg>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

/// The gRPC paths of the entry service's methods we call.
pub mod path {
    pub const BATCH_CREATE: &str = "/spire.api.server.entry.v1.Entry/BatchCreateEntry";
    pub const BATCH_DELETE: &str = "/spire.api.server.entry.v1.Entry/BatchDeleteEntry";
    pub const LIST: &str = "/spire.api.server.entry.v1.Entry/ListEntries";
}
