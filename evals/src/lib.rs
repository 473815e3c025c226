//! Shared helpers of the cluster-backed evals: a client for the `hack/` cluster (or any
//! cluster in `KUBECONFIG`), throwaway namespaces, golden loading and waiting.
//!
//! The evals are `#[ignore]`d so `cargo test` stays offline; `hack/test` runs them with
//! `--ignored` after `hack/cluster up`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // evals fail by panicking

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;

pub mod admission;
pub mod bench;
pub mod brokered;
pub mod browser;
pub mod cards;
pub mod chart;
pub mod email_tool;
pub mod fake_model;
pub mod fixtures;
pub mod gateway;
pub mod health;
pub mod jaeger;
pub mod keycloak;
pub mod mail;
pub mod meetings;
pub mod network;
pub mod notes_tool;
pub mod operator;
pub mod prometheus;
pub mod streams;
pub mod users;

/// A client for the cluster in `KUBECONFIG` (set by `eval "$(hack/cluster env)"`).
pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("no cluster: run `hack/cluster up` and `eval \"$(hack/cluster env)\"` first")
}

/// A variable `hack/cluster env` exports (`REDIS_URL`, `POD_REDIS_URL`, ...).
pub fn cluster_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `eval \"$(hack/cluster env)\"` first"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("evals/ has a parent")
        .to_path_buf()
}

/// A binary of this workspace as built: `$<env>` if set, else `<name>` in this checkout's build
/// directory (`CARGO_TARGET_DIR` or `target/`, debug). Not built here (an eval holds the cluster
/// while it runs): `cargo build -p <package>` first (hack/test does).
pub fn built_binary(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let binary = target.join("debug").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build -p <its package>`; hack/test does)",
        binary.display()
    );
    binary
}

/// A namespace that is deleted when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    /// Its uid (for owner references of cluster-scoped fixtures).
    pub uid: String,
}

impl TestNamespace {
    /// Creates `vexa-eval-<prefix>-<random>`, a tenant namespace as the product expects them:
    /// Pod Security `restricted` enforced, so anything the operator starts there must pass it.
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("vexa-eval-{prefix}-{:x}", nanos ^ std::process::id());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {
                "vexa.ai/eval": "true",
                // A tenant: the operator runs Dispatches only in such namespaces.
                "vexa.ai/tenant": "true",
                "pod-security.kubernetes.io/enforce": "restricted",
            }}
        }))
        .unwrap();
        let ns = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let uid = ns.metadata.uid.expect("a created namespace has a uid");
        Self { name, uid }
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one blocked here: hand the
        // deletion to kubectl (on PATH via `hack/cluster env`), without waiting for it.
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// `kubectl-vexa` as it ships: `VEXA_CLI`, else the one in this checkout's build directory. It
/// is not built here: an eval holds the cluster while it runs, and the shared build directory
/// may be busy (`cargo test --workspace`, the offline step of `hack/test`, builds it; or
/// `cargo build -p vexa-cli`).
pub fn cli_binary() -> PathBuf {
    built_binary("kubectl-vexa", "VEXA_CLI")
}

/// `kubectl vexa -n NS ARGS` as it ships, with the eval's (admin) kubeconfig, through the
/// streams API (no Redis URL of its own); what it printed is echoed for a failing eval.
pub fn kubectl_vexa(ns: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(cli_binary())
        .args(["-n", ns])
        .args(args)
        .env_remove("REDIS_URL")
        .env("VEXA_RETRY_SECONDS", "20")
        .output()
        .unwrap();
    eprintln!(
        "$ kubectl vexa {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A golden file: its `# expect:` line and its YAML documents.
#[derive(Debug)]
pub struct Golden {
    /// Path relative to the repository.
    pub path: PathBuf,
    /// The expected error, for invalid goldens.
    pub expect: Option<String>,
    /// The documents (an update golden has two: before and after).
    pub docs: Vec<Value>,
}

/// Every golden of `category` (`valid`, `invalid`, `valid-update`, `invalid-update`).
pub fn goldens(category: &str) -> Vec<Golden> {
    let root = repo_root().join("goldens");
    let mut out = Vec::new();
    for kind in std::fs::read_dir(&root).expect("goldens/").flatten() {
        let Ok(files) = std::fs::read_dir(kind.path().join(category)) else {
            continue;
        };
        for f in files
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "yaml"))
        {
            let text = std::fs::read_to_string(f.path()).unwrap();
            let expect = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .map(str::to_owned);
            let docs = serde_saphyr::from_multiple(&text).unwrap();
            out.push(Golden {
                path: f.path().strip_prefix(repo_root()).unwrap().to_path_buf(),
                expect,
                docs,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Often enough for the benchmark's "all Jobs after" figure to be within 0.1 s.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts the cluster's Redis (`hack/cluster restart redis`, as root): the fault the evals
/// inject between an event and its effect. Its data survive (append-only, fsynced on every
/// write); what lives only in its memory (the dispatches' ACL users) the operator makes again.
pub fn restart_redis() {
    let out = std::process::Command::new(repo_root().join("hack/cluster"))
        .args(["restart", "redis"])
        .output()
        .expect("hack/cluster runs");
    assert!(
        out.status.success(),
        "hack/cluster restart redis: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of a successful plain-HTTP `GET url` (5 s at most).
pub async fn http_get(url: &str) -> Result<bytes::Bytes, String> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.get(url.parse().map_err(|e| format!("{e}"))?),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}
