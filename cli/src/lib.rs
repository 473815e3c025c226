//! `kubectl vexa`: chat with Vexa agents, send turns to a running dispatch, follow a dispatch's
//! stream with an exact resume, and stop a dispatch.
//!
//! Layers, from pure to I/O: [`args`] (the command line), [`dispatch`] (reading a Dispatch),
//! [`chat`] (which dispatch a message goes to), [`render`] (how events look), [`safe`] (control
//! sequences neutralised before the terminal), [`pump`] (printing a log until a turn or the run
//! ends), [`streams`] (the streams API, through the API server: the CLI holds no Redis
//! credentials), [`cluster`] (Dispatches), [`knowledge`] (a workspace's history, files, diffs
//! and uploads), and [`commands`] wiring them together.

pub mod args;
pub mod audit;
pub mod cards;
pub mod chat;
pub mod cluster;
pub mod commands;
pub mod dispatch;
pub mod error;
pub mod knowledge;
pub mod pump;
pub mod render;
pub mod safe;
pub mod schedule;
pub mod streams;
pub mod version;

pub use commands::{Outcome, resume_hint, run};
pub use error::CliError;
