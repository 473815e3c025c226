//! The Vexa agent worker: the generic entrypoint of every dispatch's pod (SPEC §4).
//!
//! The pure core, each part testable on its own: [`env`] reads the environment the operator
//! sets (the pod contract of `vexa-core`, plus the runner's argv parsed), [`argv`] renders the runner's command line without a shell, [`claude`] and [`jsonl`]
//! turn the agent CLI's output into [`events`], [`session`] finds and keeps the agent's session
//! id in the workspace, [`turn`] runs one turn. At the edges: [`process`] supervises the agent
//! child process, [`workspace`] prepares and commits the rw workspace with libgit2, and
//! [`worker`] drives a whole run against the unit streams (the `vexa-agent-worker` binary) and
//! reports its ending and commits as the typed termination message of `vexa-core`.
//! [`knowledge`] is a workspace's trusted read-only git reader and its HTTP server (the
//! `serve-knowledge` subcommand, one Job per workspace, queried by the operator).

pub mod argv;
pub mod claude;
pub mod env;
pub mod identity;
pub mod init;
/// The unit events, defined with the streams they travel on.
pub use vexa_stream::events;
pub mod jsonl;
pub mod knowledge;
pub mod loopback;
pub mod mcp;
pub mod model_proxy;
pub mod network_gate;
pub mod process;
pub mod proposals;
pub mod record;
pub mod session;
pub mod shim;
pub mod sidecar;
pub mod stream;
pub mod transcripts;
pub mod turn;
pub mod untrusted_fs;
pub mod worker;
pub mod workspace;

pub use events::{Event, TurnId, UnitEvent};
pub use stream::{StreamParser, TurnOutcome, parser};
