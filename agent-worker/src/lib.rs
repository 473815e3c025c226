//! The Vexa agent worker: the generic entrypoint of every dispatch's pod (SPEC §4).
//!
//! This crate holds the worker's pure core, each part testable on its own:
//! [`env`] reads the environment the operator sets, [`argv`] renders the runner's command line
//! without a shell, [`claude`] and [`jsonl`] turn the agent CLI's output into [`events`], and
//! [`session`] finds and keeps the agent's session id in the workspace.

pub mod argv;
pub mod claude;
pub mod env;
pub mod events;
pub mod jsonl;
pub mod session;
pub mod stream;
pub mod turn;

pub use events::{Event, TurnId, UnitEvent};
pub use stream::{StreamParser, TurnOutcome, parser};
