//! The worker's life as the pod's native sidecar (an init container with `restartPolicy:
//! Always`; see `vexa_core::pod::layout`). Two files in the worker's own folder, which only the
//! worker mounts and which outlives a restart of its container:
//!
//! - `started`, created (exclusively) when the worker starts. The kubelet restarts a sidecar
//!   that exits or crashes; a worker that finds the file is such a restart and must never run
//!   the dispatch a second time (a second `t0`, a second set of commits). It fails the run
//!   instead, naming when the first worker started.
//! - `ready`, written when the agent may start: the worker holds its identity, or it has
//!   already decided that the run failed (then the agent container starts only to be told to
//!   exit). The startup probe (`vexa-agent-worker ready`) passes once it exists, and only then
//!   does the kubelet start the agent container.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::shim::Shim;

/// The marker file of a started worker.
pub const STARTED: &str = "started";
/// The file the startup probe checks.
pub const READY: &str = "ready";

/// The worker's own folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// The worker container was restarted by the kubelet: its first run already started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// This is a restart.
    #[error(
        "the worker container was restarted (the first worker started at {first}) after it crashed or was killed; a dispatch never runs twice, so this run failed: look at the worker's previous log (kubectl logs --previous -c worker) for why it ended"
    )]
    Restarted {
        /// When the first worker started, as it wrote it.
        first: String,
    },
    /// The folder cannot be written.
    #[error(
        "the worker's state folder {path} cannot be written ({source}): the operator mounts an emptyDir there"
    )]
    Io {
        /// The marker's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl StateDir {
    /// The folder at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Records that the worker starts; fails if a worker already started in this pod.
    pub fn claim_start(&self) -> Result<(), StartError> {
        let path = self.path.join(STARTED);
        let io = |source| StartError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.path).map_err(io)?;
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                let now = now_utc();
                file.write_all(now.as_bytes()).map_err(io)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StartError::Restarted {
                first: std::fs::read_to_string(&path)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "an unknown time".into()),
            }),
            Err(e) => Err(io(e)),
        }
    }

    /// Lets the agent start (the startup probe passes from now on).
    pub fn mark_ready(&self) {
        let path = self.path.join(READY);
        if let Err(e) = std::fs::write(&path, b"") {
            // The probe then never passes and the kubelet restarts the worker, which fails the
            // run as a restart: loud, and never a second run.
            tracing::error!(path = %path.display(), error = %e, "cannot mark the worker ready");
        }
    }

    /// Whether the worker is ready (what the startup probe asks).
    pub fn is_ready(&self) -> bool {
        self.path.join(READY).exists()
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Ends the agent container: tells its shim to exit with `code`, over `shim` or, when the
/// worker never connected (the run failed before it reached the agent), over a new connection
/// once the agent container has started. Gives up at SIGTERM or after `timeout`.
pub async fn end_agent(
    shim: Option<Shim>,
    socket: &Path,
    code: u8,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let shim = match shim {
        Some(shim) => shim,
        None if *shutdown.borrow() => return,
        None => {
            let socket = socket.to_owned();
            let connecting = tokio::task::spawn_blocking(move || Shim::connect(&socket, timeout));
            tokio::select! {
                joined = connecting => match joined {
                    Ok(Ok(shim)) => shim,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not reach the agent container to end it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reach the agent container to end it");
                        return;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    };
    match shim.finish(code) {
        Ok(()) => tracing::info!(code, "told the agent container to exit"),
        // It is gone already (it exited, or the pod is stopping).
        Err(e) => tracing::info!(error = %e, "the agent container is gone"),
    }
}

/// Waits for SIGTERM: a native sidecar that exits on its own is restarted by the kubelet, so
/// the worker leaves only when the kubelet stops it (after the agent container has ended).
pub async fn linger(mut shutdown: watch::Receiver<bool>) {
    if !*shutdown.borrow() {
        tracing::info!("the run is over; waiting for the kubelet to stop the worker");
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_restarted_worker_is_refused_and_told_when_the_first_started() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("worker"));
        state.claim_start().unwrap();
        let first = std::fs::read_to_string(dir.path().join("worker").join(STARTED)).unwrap();
        // The kubelet restarts the container; the emptyDir keeps the marker.
        let again = StateDir::new(dir.path().join("worker"));
        let err = again.claim_start().unwrap_err();
        assert!(
            matches!(&err, StartError::Restarted { first: f } if *f == first),
            "{err}"
        );
        assert!(err.to_string().contains("never runs twice"), "{err}");
    }

    #[test]
    fn ready_only_once_marked() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.claim_start().unwrap();
        assert!(!state.is_ready(), "starting is not ready");
        state.mark_ready();
        assert!(state.is_ready());
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = StateDir::new(&file).claim_start().unwrap_err();
        assert!(matches!(err, StartError::Io { .. }), "{err}");
    }
}
