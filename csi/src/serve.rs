//! The driver's two sockets and their servers.
//!
//! - `<kubelet root>/plugins/csi.vexa.ai/csi.sock`: CSI Identity and Node.
//! - `<kubelet root>/plugins_registry/csi.vexa.ai-reg.sock`: the kubelet's plugin watcher finds
//!   the driver here and learns where the CSI socket is. Served through [`crate::authority`]'s
//!   front by the gRPC server on `<kubelet root>/plugins/csi.vexa.ai/registration.sock`.
//!
//! Who can reach them decides who can mount: only root on the node. The CSI socket's folder is
//! 0700, both sockets are 0600 and root-owned (and the process's umask is 077 from the start, so
//! there is no window in which a socket is open to others).

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::authority;
use crate::grpc::Service;
use crate::publish::Publisher;
use crate::services::{DRIVER_NAME, Identity, Node, Registration};

/// What the driver needs to run on a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The kubelet's root folder (`--root-dir`; `/var/lib/kubelet` by default).
    pub kubelet_root: PathBuf,
    /// The folder every volume shows: the SPIRE agent's Workload API socket folder.
    pub workload_api_dir: PathBuf,
    /// This node's Kubernetes name.
    pub node_name: String,
}

impl Config {
    /// The CSI socket.
    pub fn csi_socket(&self) -> PathBuf {
        self.kubelet_root
            .join("plugins")
            .join(DRIVER_NAME)
            .join("csi.sock")
    }

    /// The gRPC server behind the registration socket (private: next to the CSI socket).
    pub fn registration_server_socket(&self) -> PathBuf {
        self.kubelet_root
            .join("plugins")
            .join(DRIVER_NAME)
            .join("registration.sock")
    }

    /// The registration socket, in the kubelet's plugin watcher folder.
    pub fn registration_socket(&self) -> PathBuf {
        self.kubelet_root
            .join("plugins_registry")
            .join(format!("{DRIVER_NAME}-reg.sock"))
    }
}

/// Serves both sockets until `shutdown` completes, then removes them.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let pods_dir = config.kubelet_root.join("pods");
    let pods_dir = pods_dir.canonicalize().with_context(|| {
        format!(
            "the kubelet's pods folder {} (is --kubelet-root-dir right?)",
            pods_dir.display()
        )
    })?;
    ensure_source(&config.workload_api_dir)?;

    let csi_socket = config.csi_socket();
    let registration_socket = config.registration_socket();
    let csi_listener = listen(&csi_socket)?;
    let registration_server_socket = config.registration_server_socket();
    let registration_listener = listen(&registration_server_socket)?;

    let node = Node {
        node_id: config.node_name.clone(),
        publisher: Arc::new(Publisher::new(config.workload_api_dir.clone(), pods_dir)),
    };
    let csi = Server::builder()
        .add_service(Service(Identity))
        .add_service(Service(node))
        .serve_with_incoming(UnixListenerStream::new(csi_listener));
    let registration = Server::builder()
        .add_service(Service(Registration {
            endpoint: csi_socket.clone(),
        }))
        .serve_with_incoming(UnixListenerStream::new(registration_listener));
    // Last: once this socket exists the kubelet calls.
    let front = authority::serve(
        listen(&registration_socket)?,
        registration_server_socket.clone(),
    );
    tracing::info!(
        csi = %csi_socket.display(),
        registration = %registration_socket.display(),
        source = %config.workload_api_dir.display(),
        node = %config.node_name,
        "serving"
    );
    let result = tokio::select! {
        r = csi => r.context("the CSI server stopped"),
        r = registration => r.context("the registration server stopped"),
        r = front => r.context("the registration socket stopped"),
        () = shutdown => Ok(()),
    };
    // The registration socket first: the kubelet then deregisters the driver.
    for socket in [
        &registration_socket,
        &registration_server_socket,
        &csi_socket,
    ] {
        let _ = std::fs::remove_file(socket);
    }
    tracing::info!("stopped");
    result
}

/// Binds a Unix socket at `path` (0600, in a folder that exists), replacing a stale socket
/// left by an earlier run (but never another kind of file).
fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path.parent().context("socket path has no folder")?;
    let fresh = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if fresh || dir.file_name().is_some_and(|n| n == DRIVER_NAME) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// The Workload API folder must be a folder; it is created (0755, so a non-root worker can reach
/// the socket in it) when the driver starts before the SPIRE agent.
fn ensure_source(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("the Workload API folder {} is not a folder", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("opening {} to pods", dir.display()))?;
            tracing::info!(dir = %dir.display(), "created the Workload API folder (the SPIRE agent puts its socket there)");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("inspecting {}", dir.display())),
    }
}
