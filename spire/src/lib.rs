//! A small client for the SPIRE server's entry API.
//!
//! The operator registers one entry per dispatch pod before the pod's containers start, and
//! removes it when the run ends. No Rust crate covers SPIRE's server API, so this crate speaks it
//! directly: gRPC with `tonic` over the server's admin Unix socket (whoever can open that socket
//! is an admin of the server, which is why the socket's file permissions are the access
//! control), with hand-written `prost` messages for the few fields we use ([`proto`]).
//!
//! Three calls: [`EntryClient::create`] (an entry that already exists under the same ID counts
//! as created, so a retry is harmless), [`EntryClient::delete`] (an entry that is already gone
//! counts as deleted) and [`EntryClient::list_by_parent`] (what a sweeper compares with the pods
//! that still exist).

mod client;
mod entry;
pub mod proto;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{EntryClient, Error};
pub use entry::{Entry, Selector, SpiffeId, SpiffeIdError};
