//! The boundary between the two sides of a dispatch's pod (SPEC §4).
//!
//! The agent CLI runs in its own container under `vexa-agent-shim` ([`server`]); the trusted
//! worker drives it from the other container ([`client`]) over a Unix socket on a volume the
//! two share. The containers share no process namespace and no files besides that socket and
//! the workspaces, so nothing the worker holds (Redis credentials, the model credential's
//! stand-in, later the dispatch token) is visible to the agent.
//!
//! The protocol is a few length-prefixed [`frame`]s: the worker asks for a run (argv, working
//! directory, extra environment; never a shell) and may ask to terminate or kill it; the shim
//! answers with the agent's standard output as raw chunks and its exit. The worker treats
//! everything from the socket as untrusted: a frame has a size cap, output lines have a size
//! cap, and a peer that breaks the protocol ends the run with a clear error.

pub mod client;
pub mod frame;
pub mod server;

pub use client::{Shim, ShimAgent, ShimStop};
pub use frame::{Frame, PROTOCOL_VERSION, RunRequest};
