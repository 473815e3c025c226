//! Browser tests: a Node script of `evals/browser/` driving Debian's Chromium headless through
//! Playwright (`playwright-core`), with the packages `hack/browser deps` installed into the cache.
//!
//! A script imports `evals/browser/lib.mjs` (`launch`, `withPage`, `report`, `artifact`, `run`)
//! and prints one JSON object per line of stdout for each result it reports; [`run_script`]
//! runs it and gives those objects back with its status and output.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde_json::Value;

/// The script `name` of `evals/browser/` (e.g. `smoke.mjs`).
pub fn script(name: &str) -> PathBuf {
    crate::repo_root().join("evals/browser").join(name)
}

/// A variable `hack/browser env` exports.
fn browser_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `hack/browser deps` and `eval \"$(hack/browser env)\"` first"
        )
    })
}

/// What a finished browser script left.
#[derive(Debug)]
pub struct BrowserRun {
    /// How `node` ended (124: the script's own time limit, `VEXA_BROWSER_TIMEOUT_MS`).
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr (Playwright's and the script's errors).
    pub stderr: String,
    /// The lines of stdout that are JSON objects, in order: what the script reported.
    pub results: Vec<Value>,
}

impl BrowserRun {
    /// Panics, with both outputs, unless the script exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "browser script failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The result the script reported as `{"check": name, …}`; panics, listing them all, if
    /// there is none.
    pub fn check(&self, name: &str) -> &Value {
        self.results
            .iter()
            .find(|r| r["check"] == name)
            .unwrap_or_else(|| panic!("the browser reported no {name}: {:#?}", self.results))
    }

    /// The first reported result that has the field `key`.
    pub fn result(&self, key: &str) -> Option<&Value> {
        self.results.iter().find(|r| r.get(key).is_some())
    }
}

/// Runs `node <script>` with the browser of `hack/browser env` (`VEXA_BROWSER_NODE_PATH`,
/// also as `NODE_PATH`, and `VEXA_CHROMIUM`), `VEXA_ARTIFACTS=<artifacts>` (made if missing)
/// and the pairs of `env`, and waits for it. Panics if the browser's variables are unset or
/// `node` cannot be started; a failing script is a [`BrowserRun`] with a failed `status`.
///
/// It blocks: from an async test that serves the page itself on a single-threaded runtime, use
/// [`run_script_async`].
pub fn run_script(script: &Path, env: &[(&str, String)], artifacts: &Path) -> BrowserRun {
    let node_path = browser_env("VEXA_BROWSER_NODE_PATH");
    let chromium = browser_env("VEXA_CHROMIUM");
    std::fs::create_dir_all(artifacts)
        .unwrap_or_else(|e| panic!("creating {}: {e}", artifacts.display()));
    let output = Command::new("node")
        .arg(script)
        .env("NODE_PATH", &node_path)
        .env("VEXA_BROWSER_NODE_PATH", &node_path)
        .env("VEXA_CHROMIUM", chromium)
        .env("VEXA_ARTIFACTS", artifacts)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running node {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let results = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .filter(Value::is_object)
        .collect();
    BrowserRun {
        status: output.status,
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        results,
    }
}

/// [`run_script`] on tokio's blocking pool, so the test's runtime keeps serving while the
/// browser loads pages from it.
pub async fn run_script_async(
    script: PathBuf,
    env: Vec<(&'static str, String)>,
    artifacts: PathBuf,
) -> BrowserRun {
    tokio::task::spawn_blocking(move || run_script(&script, &env, &artifacts))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
