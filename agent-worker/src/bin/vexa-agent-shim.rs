//! `vexa-agent-shim`: the entrypoint of a dispatch's agent container. It runs the agent CLI on
//! the trusted worker's behalf (`vexa_agent_worker::shim`), holds no credential, and exits 0
//! once the worker hangs up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vexa_core::pod::layout::AGENT_SOCKET;

/// Runs the agent CLI for the worker in the other container.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The socket the worker connects to (on a volume both containers mount).
    #[arg(long, env = "VEXA_AGENT_SOCKET", default_value = AGENT_SOCKET)]
    socket: PathBuf,
    /// Seconds to wait for the worker before giving up.
    #[arg(long, env = "VEXA_SHIM_ACCEPT_TIMEOUT_SEC", default_value_t = 300)]
    accept_timeout_sec: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    match vexa_agent_worker::shim::server::serve(
        &cli.socket,
        Duration::from_secs(cli.accept_timeout_sec),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
