//! `kubectl-vexa`: parse the command line, run the command, report how it ended.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vexa_cli::args::Cli;
use vexa_cli::safe::for_terminal;
use vexa_cli::{CliError, Outcome, resume_hint, run};

/// The exit status after Ctrl-C, as shells report it.
const INTERRUPTED: u8 = 130;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings only (a Redis reconnect, a failed status read) unless RUST_LOG says otherwise.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted { dispatch, last }) => {
            eprintln!("interrupted; {}", resume_hint(&dispatch, last));
            ExitCode::from(INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {}", for_terminal(&e.to_string()));
            if let CliError::Follow { dispatch, last, .. } = &e {
                eprintln!("{}", resume_hint(dispatch, *last));
            }
            ExitCode::FAILURE
        }
    }
}
