//! `vexa-workspace-init`: prepares a workspace's folder on its volume (the Workspace
//! controller's prepare Job). Leaves a JSON report as the termination message and on stdout;
//! exits 0 when the folder is ready, 1 when it is not.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vexa_agent_worker::init::{self, Request};
use vexa_agent_worker::workspace::Provenance;
use vexa_core::termination::MAX_BYTES;

/// Prepare a workspace folder: create it, write the seed, make it a git repository.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Where the workspace's volume is mounted.
    #[arg(long, env = "VEXA_VOLUME", default_value = "/volume")]
    volume: PathBuf,
    /// The workspace's folder, relative to the volume.
    #[arg(long, env = "VEXA_WORKSPACE_SUBPATH")]
    path: String,
    /// The mounted seed ConfigMap (only written into an empty folder).
    #[arg(long, env = "VEXA_SEED")]
    seed: Option<PathBuf>,
    /// The workspace's owner: the author of the first commits.
    #[arg(long, env = "VEXA_OWNER")]
    owner: String,
    /// The Workspace (`<namespace>/<name>`), named in the commits' trailers.
    #[arg(long, env = "VEXA_WORKSPACE")]
    workspace: String,
    /// Where the termination message goes.
    #[arg(
        long,
        env = "VEXA_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    termination_log: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = Request {
        volume: cli.volume,
        path: cli.path,
        seed: cli.seed,
        who: Provenance {
            subject: cli.owner,
            dispatch: format!("workspace:{}", cli.workspace),
            launcher: "operator".into(),
            runner: "vexa-workspace-init".into(),
        },
    };
    let (report, code) = match init::prepare(&req) {
        Ok(report) => (report, ExitCode::SUCCESS),
        Err(e) => (e.report(), ExitCode::FAILURE),
    };
    let message = report.to_message();
    println!("{message}");
    debug_assert!(message.len() <= MAX_BYTES);
    if let Err(e) = std::fs::write(&cli.termination_log, &message) {
        eprintln!(
            "could not write the termination message to {}: {e}",
            cli.termination_log.display()
        );
    }
    code
}
