//! The MCP gateway's authorization filter (SPEC §5.4–5.5): Envoy asks it, over the ext_authz
//! gRPC API, about every request a dispatch pod's worker sends to `/tools/<namespace>/<tool>`.
//!
//! # Shape
//! observe → decide → act. [`decide`] is pure: from what Envoy saw ([`Facts`]: path, the
//! `authorization` header, the client certificate's SPIFFE ID, the buffered body), the
//! [`vexa_policy::token::Verifier`], the Tool objects ([`Tools`]) and the time, it returns a
//! [`Decision`]: forward (after a token exchange for the Tool's audience), propose (a gated call
//! becomes a Card; nothing is forwarded), answer (`tools/list`, from the Tools in scope) or
//! refuse (a JSON-RPC error). Every decision carries the audit record it must leave
//! ([`CallRecord`]).
//!
//! # What it refuses
//! A path that names no tool; a missing, forged, expired, unsigned or otherwise invalid dispatch
//! token; a token presented by another workload than the one it is bound to (`cnf.spiffe_id` ≠
//! the client certificate's SPIFFE ID); a path naming another namespace than the dispatch's, or
//! a Tool not in the token's `tools`; a body that is not one JSON-RPC request (batch, malformed,
//! oversized); a `tools/call` naming another MCP tool than the path's Tool's `toolName`.

pub mod audit_keys;
mod card;
mod decide;
pub mod envoy;
pub mod exchange;
mod jsonrpc;
pub mod jwks;
pub mod metrics;
mod record;
pub mod service;

pub use card::{CardProposal, card_name};
pub use decide::{
    Decision, Facts, MAX_BODY, Outcome, Reply, ToolView, Tools, Upstream, decide, sha256_hex,
};
pub use jsonrpc::{Call, CallError, parse_call};
pub use record::{CallRecord, Verdict};
