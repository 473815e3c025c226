//! `vexa-agent-shim`: the entrypoint of a dispatch's agent container. It runs the agent CLI on
//! the trusted worker's behalf (`vexa_agent_worker::shim`), holds no credential, and exits with
//! the code the worker gives when the run is over ([`SHIM_WORKER_GONE_EXIT`] when the worker
//! hung up without one). On SIGTERM (the pod is stopping) it stops the agent and exits 143.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use vexa_agent_worker::process::StopHandle;
use vexa_agent_worker::shim::server::{self, SHIM_WORKER_GONE_EXIT};
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
    /// Seconds the agent has to exit after SIGTERM before it is killed.
    #[arg(long, env = "VEXA_SHIM_STOP_GRACE_SEC", default_value_t = 5)]
    stop_grace_sec: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let stop = StopHandle::default();
    stop_on_sigterm(stop.clone(), Duration::from_secs(cli.stop_grace_sec));
    match server::serve(
        &cli.socket,
        Duration::from_secs(cli.accept_timeout_sec),
        stop,
    ) {
        Ok(Some(code)) => ExitCode::from(code),
        Ok(None) => {
            tracing::error!(
                "the worker hung up without ending the run (it crashed or was killed); exiting {SHIM_WORKER_GONE_EXIT}"
            );
            ExitCode::from(SHIM_WORKER_GONE_EXIT)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// As PID 1 the shim would ignore SIGTERM and hold the pod's stop for its whole grace period
/// (the kubelet stops the agent container before the worker's): on SIGTERM the agent gets
/// SIGTERM, then SIGKILL after `grace`, and the shim exits 143.
fn stop_on_sigterm(stop: StopHandle, grace: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shim-sigterm".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot handle SIGTERM");
                    return;
                }
            };
            let received = runtime.block_on(async {
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => term.recv().await.is_some(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot handle SIGTERM");
                        false
                    }
                }
            });
            if !received {
                return;
            }
            tracing::info!("SIGTERM: stopping the agent");
            stop.terminate();
            let deadline = Instant::now() + grace;
            while stop.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.kill();
            std::process::exit(128 + 15);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot handle SIGTERM");
    }
}
