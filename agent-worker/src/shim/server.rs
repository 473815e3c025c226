//! `vexa-agent-shim`, the agent container's entrypoint: it listens on the shared socket, takes
//! one connection (the worker's), runs what it is asked to, one run at a time, and sends back
//! the agent's output and exit. When the worker says the run is over ([`Frame::Finish`]),
//! whatever still runs is killed and the shim exits with the code the worker gave, so the
//! agent container (the pod's only regular container) ends the pod as the worker decided. A
//! worker that hangs up without saying so crashed or was killed: the shim then exits with
//! [`SHIM_WORKER_GONE_EXIT`], never 0. Either way the operator reads the outcome from the
//! worker's termination message, never from this container.
//!
//! Nothing here trusts the agent, and nothing the agent can do here reaches the worker: the shim
//! holds no credential and the worker treats every frame it sends as untrusted.

use std::io::{self, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::frame::{ExitReport, Frame, PROTOCOL_VERSION, RunError, RunRequest};
use crate::process::{StopHandle, run_supervised};
pub use vexa_core::pod::layout::SHIM_WORKER_GONE_EXIT;

/// How often a listening shim checks whether the worker has connected.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Errors of the shim itself (not of the agent it runs).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Nobody connected in time.
    #[error(
        "the worker did not connect to {path} within {waited:?}; is the worker container running?"
    )]
    NoWorker {
        /// The socket's path.
        path: PathBuf,
        /// How long the shim waited.
        waited: Duration,
    },
    /// The connection failed.
    #[error("the connection to the worker failed: {0}")]
    Connection(#[from] io::Error),
}

/// Listens on `socket`, serves the first connection until it closes, and returns the exit code
/// the worker asked for (`None`: it hung up without one). `stop` stops the agent from outside
/// (the container's SIGTERM).
pub fn serve(
    socket: &Path,
    accept_timeout: Duration,
    stop: StopHandle,
) -> Result<Option<u8>, ShimError> {
    let listen = |source| ShimError::Listen {
        path: socket.to_owned(),
        source,
    };
    // A socket left by an earlier incarnation (or planted) is replaced.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen(e)),
    }
    let listener = UnixListener::bind(socket).map_err(listen)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let deadline = Instant::now() + accept_timeout;
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ShimError::NoWorker {
                        path: socket.to_owned(),
                        waited: accept_timeout,
                    });
                }
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(listen(e)),
        }
    };
    // Nobody else gets in once the worker is connected.
    drop(listener);
    let _ = std::fs::remove_file(socket);
    conn.set_nonblocking(false)?;
    Ok(serve_connection(conn, stop)?)
}

/// Serves one worker: runs each requested run in turn; signals apply to the run in flight.
/// Returns the exit code of [`Frame::Finish`], or `None` when the worker hung up without one.
pub fn serve_connection(conn: UnixStream, stop: StopHandle) -> io::Result<Option<u8>> {
    let mut reader = conn.try_clone()?;
    let mut writer = BufWriter::new(conn);
    Frame::Hello {
        version: PROTOCOL_VERSION,
    }
    .write_to(&mut writer)?;
    let (runs, requested) = mpsc::channel::<RunRequest>();
    let signals = stop.clone();
    let control = std::thread::Builder::new()
        .name("shim-control".into())
        .spawn(move || {
            let mut finish = None;
            loop {
                match Frame::read_from(&mut reader) {
                    Ok(Some(Frame::Run(r))) => {
                        if runs.send(r).is_err() {
                            break;
                        }
                    }
                    Ok(Some(Frame::Terminate)) => {
                        signals.terminate();
                    }
                    Ok(Some(Frame::Kill)) => {
                        signals.kill();
                    }
                    Ok(Some(Frame::Finish { code })) => {
                        tracing::info!(code, "the worker ended the run");
                        finish = Some(code);
                        break;
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(frame = ?other, "ignored a frame only the shim sends");
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "the worker's connection failed");
                        break;
                    }
                }
            }
            // The run is over or the worker is gone: nothing may keep running on its behalf.
            signals.kill();
            finish
        })?;
    for request in requested {
        tracing::info!(program = ?request.argv.first(), cwd = %request.cwd.display(), "run starts");
        let result = run_supervised(
            &request.argv,
            &request.cwd,
            &request.env,
            &stop,
            &mut |chunk| Frame::Stdout(chunk.to_vec()).write_to(&mut writer),
        );
        let report = match result {
            Ok(code) => ExitReport { code, error: None },
            Err(e) => ExitReport {
                code: None,
                error: Some(RunError::from_io(&e)),
            },
        };
        tracing::info!(code = ?report.code, error = ?report.error, "run ends");
        Frame::Exit(report).write_to(&mut writer)?;
    }
    Ok(control.join().unwrap_or_default())
}
