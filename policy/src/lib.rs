//! Pure policy shared by the operator and the gateway, so the two can never disagree: which
//! mode each workspace gets, whether a run is trusted, and whether a dispatch may run at all.
//! It decides on plain data ([`DispatchRequest`] and facts about the objects it names): no
//! I/O, no Kubernetes types. Who may act (admission's rules and the operator's second check of
//! the chain of custody) is in [`custody`]. The dispatch token (its claims, the signing keys
//! and their rotation, minting and verification) is in [`token`]; what a schedule or
//! integration may do under its delegation grant (the scope that goes into the token) is in
//! [`delegation`].
//!
//! The names (dispatch id, topics, children) live in `vexa-core`; they are re-exported here
//! for the crates that reach them through the policy.

pub mod custody;
pub mod delegation;
pub mod token;
pub mod trust;

pub use custody::*;
pub use delegation::{DelegatedWorkspace, DelegationRequest, Scope, person_scope};
pub use trust::*;
pub use vexa_core::names::{self, *};
