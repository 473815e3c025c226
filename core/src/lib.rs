//! The vocabulary and contracts that the operator, the agent worker, the policy, the CLI and
//! (later) the gateway share, defined once so they can never disagree. No Kubernetes types and
//! no I/O: every crate can depend on this one.
//!
//! - [`names`]: the dispatch id, its stream topics (`unit:<id>:out|in`), its children's names,
//!   the default chat thread and the session file of a thread.
//! - [`lifecycle`]: the phases of a run, which are final, and the stop reasons.
//! - [`access`]: triggers, workspace modes, tool grants and trust.
//! - [`context`]: what a run is about.
//! - [`identity`]: a dispatch pod's SPIFFE ID and the shape of its SPIRE entry.
//! - [`gateway`]: how a worker addresses a tool through the MCP gateway, and the gateway's ID.
//! - [`pod`]: the environment the operator sets and the worker reads, as one typed value.
//! - [`termination`]: the message the worker leaves when it exits, and how the operator reads
//!   it (also from an older worker).
//! - [`trace`]: a run's trace context (`traceparent`) and the milestones its worker reports.
//! - [`knowledge`]: a workspace's trusted reader (files, history, diffs) and uploads, as the
//!   operator relays them to the console.
//! - [`prepare`]: the report of a workspace's preparation (the Workspace controller's prepare
//!   Job), read into the Workspace's status.
//!
//! The enums the CRDs use derive `JsonSchema` here and are re-exported by vexa-crds, so their
//! `///` docs are also `kubectl explain` text.

pub mod access;
pub mod cards;
pub mod context;
pub mod gateway;
pub mod identity;
pub mod knowledge;
pub mod lifecycle;
pub mod model;
pub mod names;
pub mod pod;
pub mod prepare;
pub mod termination;
pub mod trace;

pub use access::{Grant, Trigger, Trust, WorkspaceMode};
pub use context::{ContextKind, MeetingRef};
pub use lifecycle::{DispatchPhase, StopReason};
pub use model::ModelUsage;
pub use names::*;
pub use pod::{PodContract, StreamFormat};
pub use prepare::PrepareReport;
pub use termination::{CommitRange, Published, Termination};
