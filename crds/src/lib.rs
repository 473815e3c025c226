//! The Vexa primitives as Kubernetes custom resources (`vexa.ai/v1`).
//!
//! Types and schema only: no I/O, no reconcile logic. Every field's `///` doc becomes the
//! `kubectl explain` text of the generated CRD. The enums several crates share (workspace
//! modes, triggers, phases, stop reasons, trust, grants, stream formats, meeting references)
//! are defined in `vexa-core` and re-exported here; [`pod`] turns the kinds' fields into the
//! pod contract the worker reads.

// kube-derive takes one `printcolumn(...)` per column; clippy mistakes their repeated
// `type_ = "string"` for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod card;
pub mod common;
pub mod compat;
pub mod contract;
pub mod dispatch;
pub mod identity;
pub mod pod;
pub mod runner;
pub mod schedule;
pub mod tool;
pub mod transcript;
pub mod workspace;

pub use card::*;
pub use common::*;
pub use dispatch::*;
pub use identity::*;
pub use runner::*;
pub use schedule::*;
pub use tool::*;
pub use transcript::*;
pub use workspace::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Vexa kind.
pub const GROUP: &str = "vexa.ai";

/// Every CRD of the project, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        AgentRunner::crd(),
        Card::crd(),
        Dispatch::crd(),
        Identity::crd(),
        Schedule::crd(),
        Tool::crd(),
        Transcript::crd(),
        Workspace::crd(),
    ]
}
