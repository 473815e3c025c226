//! `vexa-csi-node`: the CSI node driver (see the crate docs), or a probe of its socket.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vexa_csi::proto::{GetPluginInfoRequest, GetPluginInfoResponse, service};
use vexa_csi::serve::{self, Config};
use vexa_csi::{grpc, services::DRIVER_NAME};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "CSI node driver csi.vexa.ai: the SPIRE Workload API folder, read-only, in a pod"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the driver on this node (as root).
    Serve {
        /// This node's Kubernetes name (the CSI node id).
        #[arg(long, env = "VEXA_CSI_NODE_NAME")]
        node_name: String,
        /// The kubelet's root folder (its --root-dir).
        #[arg(
            long,
            env = "VEXA_CSI_KUBELET_ROOT_DIR",
            default_value = "/var/lib/kubelet"
        )]
        kubelet_root_dir: PathBuf,
        /// The folder every volume shows: the SPIRE agent's Workload API socket folder.
        #[arg(long, env = "VEXA_CSI_WORKLOAD_API_DIR")]
        workload_api_dir: PathBuf,
    },
    /// Ask a running driver who it is over its CSI socket; exit 0 if it answers as csi.vexa.ai.
    Probe {
        /// The CSI socket (`<kubelet root>/plugins/csi.vexa.ai/csi.sock`).
        #[arg(long, env = "VEXA_CSI_SOCKET")]
        socket: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            node_name,
            kubelet_root_dir,
            workload_api_dir,
        } => {
            let config = Config {
                kubelet_root: kubelet_root_dir,
                workload_api_dir,
                node_name,
            };
            serve::run(config, shutdown()).await
        }
        Command::Probe { socket } => {
            let channel = grpc::connect(&socket)
                .await
                .with_context(|| format!("connecting to {}", socket.display()))?;
            let info: GetPluginInfoResponse = grpc::call(
                channel,
                service::IDENTITY,
                service::GET_PLUGIN_INFO,
                GetPluginInfoRequest {},
            )
            .await?;
            anyhow::ensure!(
                info.name == DRIVER_NAME,
                "{} answers as {:?}, not {DRIVER_NAME}",
                socket.display(),
                info.name
            );
            println!("{} {}", info.name, info.vendor_version);
            Ok(())
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
