//! A throwaway `redis-server` for tests (cargo feature `testing`).
//!
//! Each [`RedisServer`] is its own child process on a free loopback port with its own data
//! directory, so tests never touch a shared Redis (such as the one `hack/cluster` runs). It keeps
//! an append-only file with `appendfsync always`: an entry Redis acknowledged survives
//! [`RedisServer::restart`] and even [`RedisServer::kill`], which is what the "Redis restarts in
//! the middle of a stream" tests need. This module is test support: it panics with a clear
//! message instead of returning errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "redis-server";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1:<free port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server (empty data directory) and waits until it answers `PING`.
    ///
    /// Panics when `redis-server` is not installed or does not come up.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vexa-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        // A port taken between probing and binding makes redis-server exit at once: try another.
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>` (database 0).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (append-only file, server log `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (false between [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server gracefully (`SHUTDOWN`, falling back to a kill) and waits for the
    /// process to exit. Clients see connection errors until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SHUTDOWN closes the connection without a reply when it succeeds; errors are irrelevant
        // because the kill below covers a server that ignored it.
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.write_all(b"SHUTDOWN\r\n");
            let mut sink = [0u8; 64];
            let _ = conn.read(&mut sink);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }

    /// Kills the server with SIGKILL, like a crash (no `SHUTDOWN`). Every acknowledged write is
    /// already in the append-only file.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port and data directory,
    /// so the data survives; waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        // The old process released the port when it exited; redis-server binds with
        // SO_REUSEADDR, but retry briefly in case the kernel is slow to free it.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("redis-server did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let child = Command::new(REDIS_SERVER)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            // DEBUG SLEEP stalls the server, which is how tests make a request time out after
            // Redis has received it (an ambiguous failure).
            .args(["--enable-debug-command", "local"])
            .args(["--dir"])
            .arg(self.dir.path())
            .args(["--logfile"])
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{REDIS_SERVER}` is not installed (not found on PATH): run `hack/cluster deps` \
                 to install Debian's redis-server"
            ),
            Err(e) => panic!("could not run `{REDIS_SERVER}`: {e}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}; log:\n{}", self.log_tail()));
            }
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PONG within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on the loopback interface.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// Whether a Redis server answers `PING` on the loopback port.
fn ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    if conn.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    conn.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_keeps_data_across_restart_and_kill() {
        let mut server = RedisServer::start();
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        assert!(ping(server.port()));
        send(
            server.port(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"+OK\r\n",
        );

        let port = server.port();
        server.restart();
        assert_eq!(server.port(), port);
        send(port, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"$1\r\nv\r\n");

        server.kill();
        assert!(!ping(port));
        server.restart();
        send(port, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"$1\r\nv\r\n");

        drop(server);
        assert!(!ping(port), "dropping the server stops it");
    }

    fn send(port: u16, command: &[u8], expected: &[u8]) {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        conn.write_all(command).unwrap();
        let mut reply = vec![0u8; expected.len()];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(reply, expected, "{}", String::from_utf8_lossy(&reply));
    }
}
