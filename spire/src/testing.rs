//! A throwaway `spire-server` for tests (cargo feature `testing`).
//!
//! Each [`SpireServer`] is its own child process with its own data folder and admin socket,
//! configured from the same template as the local cluster's server (`hack/spire/server.hcl`).
//! The binary is the one `hack/build-tools spire` caches: `$VEXA_SPIRE_BIN_DIR/spire-server`,
//! else `${VEXA_CACHE:-$HOME/.cache/vexa}/bin/spire-<SPIRE_VERSION of hack/versions.env>/`.
//! Test support: it panics with a clear message instead of returning errors.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A `spire-server` child process, killed on drop.
#[derive(Debug)]
pub struct SpireServer {
    dir: tempfile::TempDir,
    binary: PathBuf,
    trust_domain: String,
    child: Option<Child>,
}

impl SpireServer {
    /// Starts a fresh server for `trust_domain` and waits until its health check passes.
    pub fn start(trust_domain: &str) -> Self {
        let binary = spire_bin_dir().join("spire-server");
        assert!(
            binary.is_file(),
            "{} is missing: run `hack/build-tools spire` (builds SPIRE into the cache, ~10 min cold), \
             or point VEXA_SPIRE_BIN_DIR at a folder holding spire-server",
            binary.display()
        );
        // The admin socket path must stay short (Unix sockets: 108 bytes), hence /tmp.
        let dir = tempfile::Builder::new()
            .prefix("vexa-spire-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory for spire-server");
        let template = std::fs::read_to_string(Path::new(REPO).join("hack/spire/server.hcl"))
            .expect("read hack/spire/server.hcl");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let config = template
            .replace("@BIND_PORT@", &free_port().to_string())
            .replace(
                "@SOCKET_PATH@",
                &dir.path().join("api.sock").to_string_lossy(),
            )
            .replace("@TRUST_DOMAIN@", trust_domain)
            .replace("@DATA_DIR@", &data.to_string_lossy());
        std::fs::write(dir.path().join("server.hcl"), config).unwrap();
        let mut server = SpireServer {
            dir,
            binary,
            trust_domain: trust_domain.to_string(),
            child: None,
        };
        server.spawn();
        server
    }

    /// The admin socket (what [`crate::EntryClient::new`] takes).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// The trust domain it serves.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Runs `spire-server <args> -socketPath <socket>` (e.g. `entry show`) and returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("-socketPath")
            .arg(self.socket())
            .output()
            .expect("run spire-server");
        assert!(
            out.status.success(),
            "spire-server {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server, then starts it again on the same data (entries survive).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server (the admin socket stops answering).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut child = Command::new(&self.binary)
            .arg("run")
            .arg("-config")
            .arg(self.dir.path().join("server.hcl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.binary.display()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "spire-server exited with {status}; log:\n{}",
                    self.log_tail()
                );
            }
            let healthy = Command::new(&self.binary)
                .args(["healthcheck", "-shallow", "-socketPath"])
                .arg(self.socket())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if healthy {
                self.child = Some(child);
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "spire-server not healthy within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for SpireServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the cached SPIRE binaries are.
pub fn spire_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VEXA_SPIRE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("VEXA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/vexa")
        });
    let versions = std::fs::read_to_string(Path::new(REPO).join("hack/versions.env"))
        .expect("read hack/versions.env");
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("SPIRE_VERSION="))
        .expect("hack/versions.env names SPIRE_VERSION")
        .trim();
    cache.join(format!("bin/spire-{version}"))
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}
