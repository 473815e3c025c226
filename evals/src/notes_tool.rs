//! The demo MCP tool server (`vexa-notes-tool`, tools/notes) as the evals run it: a child process
//! on the node's address (the gateway, wherever it runs, reaches it there), its own data folder,
//! and a reader of `GET /calls`, what every call it received carried.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::Value;

use crate::fixtures::{free_port, node_ip};
use crate::{built_binary, http_get};

/// An MCP JSON-RPC POST of `body` to `uri` (a URL, or a path on an open connection), with
/// `authorization: Bearer <token>` when given: what an agent's MCP client sends.
pub fn mcp_request(uri: &str, token: Option<&str>, body: &Value) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post(uri)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A response's status and body: JSON, or the text as a JSON string.
pub async fn json_reply(response: http::Response<hyper::body::Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
    )
}

/// The tool's Keycloak client (its `--audience`), as the local realm names it.
pub const AUDIENCE: &str = "vexa-notes";

/// One call the tool received.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Call {
    /// The MCP tool name (`notes.append`, `notes.send`).
    pub tool: String,
    /// Its arguments.
    pub arguments: Value,
    /// What its bearer token said (`None`: it carried none, which only an unverifying tool
    /// lets through).
    pub token: Option<Token>,
}

/// The claims of the bearer token a call carried, as the tool saw them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Token {
    /// `aud` (a string or a list).
    pub aud: Value,
    /// `sub`.
    pub sub: Option<String>,
    /// `preferred_username` (Keycloak).
    pub preferred_username: Option<String>,
    /// `azp`: the client it was issued to (Keycloak).
    pub azp: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// `keycloak`, `vexa-dispatch` (the dispatch token itself: never through the gateway) or
    /// `other`.
    pub kind: String,
    /// Whether the tool checked its signature, expiry and audience (`--jwks-url`).
    pub verified: bool,
}

impl Token {
    /// Whether `aud` is, or contains, `audience`.
    pub fn has_audience(&self, audience: &str) -> bool {
        match &self.aud {
            Value::String(a) => a == audience,
            Value::Array(list) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        }
    }
}

/// A running notes tool; killed when dropped.
#[derive(Debug)]
pub struct NotesTool {
    child: Child,
    base: String,
    data_dir: PathBuf,
    log: PathBuf,
}

/// `vexa-notes-tool` as built (`VEXA_NOTES_TOOL`, else this checkout's build directory):
/// `cargo build -p vexa-notes-tool` first (hack/test does).
pub fn binary() -> PathBuf {
    built_binary("vexa-notes-tool", "VEXA_NOTES_TOOL")
}

impl NotesTool {
    /// Starts the tool on the node's address and a free port, and waits until it answers.
    /// `jwks_url`: the realm's JWKS its callers' tokens must verify against (audience
    /// [`AUDIENCE`]); `None` only decodes them (then a call without a token passes too).
    pub async fn start(jwks_url: Option<&str>) -> Self {
        let addr = format!("{}:{}", node_ip(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "vexa-evals-notes-{}-{}",
            std::process::id(),
            addr.rsplit(':').next().unwrap()
        ));
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = dir.join("notes-tool.log");
        let mut command = Command::new(binary());
        command
            .args(["--listen", &addr, "--audience", AUDIENCE, "--data-dir"])
            .arg(&data_dir)
            .env("VEXA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = jwks_url {
            command.args(["--jwks-url", url]);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {}: {e}", binary().display());
        });
        let mut tool = Self {
            child,
            base: format!("http://{addr}"),
            data_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = tool.child.try_wait().unwrap() {
                panic!("the notes tool exited ({status}):\n{}", tool.log_text());
            }
            if http_get(&format!("{}/calls", tool.base)).await.is_ok() {
                return tool;
            }
            assert!(
                Instant::now() < deadline,
                "the notes tool did not answer at {} within 15 s:\n{}",
                tool.base,
                tool.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The MCP endpoint, what a Tool's `server.url` names: `http://<node ip>:<port>/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Every call it received so far, oldest first.
    pub async fn calls(&self) -> Vec<Call> {
        let body = http_get(&format!("{}/calls", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {}/calls: {e}\n{}", self.base, self.log_text()));
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {}/calls answered no list of calls: {e}", self.base))
    }

    /// The notes file's lines (what `notes.append` wrote).
    pub fn notes(&self) -> Vec<String> {
        read_lines(&self.data_dir.join("notes.md"))
    }

    /// The sends `notes.send` recorded (one JSON object each).
    pub fn sent(&self) -> Vec<Value> {
        read_lines(&self.data_dir.join("sent.jsonl"))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The tool's log (stderr), for a failing eval's message.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NotesTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(path: &std::path::Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}
