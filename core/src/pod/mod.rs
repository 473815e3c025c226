//! The pod contract: the environment the operator sets on a dispatch's agent container and the
//! worker reads (SPEC §4), as one typed value. The operator fills a [`PodContract`] and writes
//! it with [`PodContract::to_env`]; the worker reads it back with [`PodContract::from_lookup`]
//! or [`PodContract::from_vars`], which check every value and name the variable of the first
//! bad one ([`EnvError`]).

pub mod layout;
mod runner;
mod start;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::access::{Trigger, WorkspaceMode};
use crate::context::RunContext;
use crate::names::{DEFAULT_THREAD, in_topic, out_topic, valid_thread};

pub use runner::{OptionalArgs, RunnerSpec, StreamFormat};
pub use start::{Start, relative_path};

/// The variables' names, as SPEC §4 lists them (plus what the worker needs to render the
/// runner's command line).
pub mod var {
    /// The dispatch id, `<namespace>/<name>`.
    pub const UNIT_ID: &str = "VEXA_UNIT_ID";
    /// What started the dispatch.
    pub const UNIT_TRIGGER: &str = "VEXA_UNIT_TRIGGER";
    /// The stream events go to.
    pub const UNIT_OUT_TOPIC: &str = "VEXA_UNIT_OUT_TOPIC";
    /// The stream turns come from.
    pub const UNIT_IN_TOPIC: &str = "VEXA_UNIT_IN_TOPIC";
    /// How the agent begins (JSON).
    pub const START: &str = "VEXA_START";
    /// The mounted workspaces (JSON).
    pub const WORKSPACES: &str = "VEXA_WORKSPACES";
    /// Where the agent runs.
    pub const WORKSPACE_PATH: &str = "VEXA_WORKSPACE_PATH";
    /// The subject.
    pub const OWNER: &str = "VEXA_OWNER";
    /// Who or what started the run.
    pub const LAUNCHER: &str = "VEXA_LAUNCHER";
    /// The AgentRunner's name.
    pub const RUNNER: &str = "VEXA_RUNNER";
    /// The part of the AgentRunner the worker needs (JSON).
    pub const RUNNER_SPEC: &str = "VEXA_RUNNER_SPEC";
    /// The granted Tool objects' names (JSON).
    pub const TOOLS: &str = "VEXA_TOOLS";
    /// What the run is about (JSON).
    pub const CONTEXT: &str = "VEXA_CONTEXT";
    /// The chat thread.
    pub const CHAT_SESSION: &str = "VEXA_CHAT_SESSION";
    /// Seconds without a turn before the worker exits.
    pub const IDLE_TIMEOUT_SEC: &str = "VEXA_IDLE_TIMEOUT_SEC";
    /// The Redis server of the unit streams.
    pub const REDIS_URL: &str = "REDIS_URL";
    /// How the agent reaches its model through the brokered credential (JSON; `null`: no
    /// brokered credential).
    pub const MODEL: &str = "VEXA_MODEL";
    /// The SPIFFE ID the worker must obtain an X.509 SVID for, and the Workload API socket
    /// (JSON; `null`: the pod has no workload identity).
    pub const SPIFFE: &str = "VEXA_SPIFFE";
    /// Where the worker forwards the agent's tool calls and the loopback port it serves them on
    /// (JSON; `null`: no MCP gateway, the agent gets no tools).
    pub const MCP_GATEWAY: &str = "VEXA_MCP_GATEWAY";

    /// Every variable of the contract, in the order the operator sets them.
    pub const ALL: [&str; 19] = [
        UNIT_ID,
        UNIT_TRIGGER,
        UNIT_OUT_TOPIC,
        UNIT_IN_TOPIC,
        START,
        WORKSPACES,
        WORKSPACE_PATH,
        OWNER,
        LAUNCHER,
        RUNNER,
        RUNNER_SPEC,
        TOOLS,
        CONTEXT,
        CHAT_SESSION,
        IDLE_TIMEOUT_SEC,
        REDIS_URL,
        MODEL,
        SPIFFE,
        MCP_GATEWAY,
    ];
}

/// The idle timeout used when `VEXA_IDLE_TIMEOUT_SEC` is unset (SPEC §8: chat, routines).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A variable that is missing or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct EnvError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it, and what to do.
    pub problem: String,
}

impl EnvError {
    /// An error about `var`.
    pub fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// A workspace mounted into the pod (one item of `VEXA_WORKSPACES`).
// Alphabetical fields: the JSON key order the operator has always written (see `runner.rs`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMount {
    /// The workspace's id.
    pub id: String,
    /// The mode this run has.
    pub mode: WorkspaceMode,
    /// The Workspace object's name.
    pub name: String,
    /// Where it is mounted (absolute).
    pub path: PathBuf,
}

/// Everything the operator tells the worker, one field per variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContract {
    /// `VEXA_UNIT_ID`: the dispatch id, `<namespace>/<name>`.
    pub unit_id: String,
    /// `VEXA_UNIT_TRIGGER`.
    pub trigger: Trigger,
    /// `VEXA_UNIT_OUT_TOPIC`: the stream events go to.
    pub out_topic: String,
    /// `VEXA_UNIT_IN_TOPIC`: the stream turns come from.
    pub in_topic: String,
    /// `VEXA_START`.
    pub start: Start,
    /// `VEXA_WORKSPACES`, in the Dispatch's order.
    pub workspaces: Vec<WorkspaceMount>,
    /// `VEXA_WORKSPACE_PATH`: where the agent runs (the rw workspace, else the first).
    pub workspace_path: PathBuf,
    /// `VEXA_OWNER`: the subject.
    pub owner: String,
    /// `VEXA_LAUNCHER`.
    pub launcher: String,
    /// `VEXA_RUNNER`: the AgentRunner's name.
    pub runner: String,
    /// `VEXA_RUNNER_SPEC`.
    pub runner_spec: RunnerSpec,
    /// `VEXA_TOOLS`: the granted Tool objects.
    pub tools: Vec<GrantedTool>,
    /// `VEXA_CONTEXT`: what the run is about (`null`: nothing in particular).
    pub context: Option<RunContext>,
    /// `VEXA_CHAT_SESSION`: the chat thread, which selects the session file.
    pub thread: String,
    /// `VEXA_IDLE_TIMEOUT_SEC`: how long to wait for a next turn before exiting (whole seconds).
    pub idle_timeout: Duration,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `VEXA_MODEL`: the brokered model access, if the runner has a model credential.
    pub model: Option<ModelAccess>,
    /// `VEXA_SPIFFE`: the workload identity the worker holds before the agent starts, if the
    /// pod has one.
    pub spiffe: Option<SpiffeAccess>,
    /// `VEXA_MCP_GATEWAY`: the MCP gateway the worker forwards the agent's tool calls to, if
    /// the operator has one.
    pub mcp_gateway: Option<McpGateway>,
}

/// A granted Tool (one item of `VEXA_TOOLS`). An older operator wrote the object's name
/// alone (a JSON string); it still reads, without a `toolName`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "RawGrantedTool", rename_all = "camelCase")]
pub struct GrantedTool {
    /// The Tool object's name (in the dispatch's namespace): the gateway path's last part.
    pub name: String,
    /// The MCP tool name the agent sees (`spec.toolName`, e.g. `notes.append`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawGrantedTool {
    Name(String),
    #[serde(rename_all = "camelCase")]
    Object {
        name: String,
        #[serde(default)]
        tool_name: Option<String>,
    },
}

impl From<RawGrantedTool> for GrantedTool {
    fn from(raw: RawGrantedTool) -> Self {
        match raw {
            RawGrantedTool::Name(name) => Self {
                name,
                tool_name: None,
            },
            RawGrantedTool::Object { name, tool_name } => Self { name, tool_name },
        }
    }
}

/// The port the worker serves the agent's MCP endpoint on (the pod's loopback) when the
/// operator is told none.
pub const DEFAULT_MCP_PORT: u16 = 7390;

/// The MCP gateway (`VEXA_MCP_GATEWAY`): the worker serves `http://127.0.0.1:<port>/tools/<tool>`
/// to the agent for each granted Tool and forwards each request to
/// `<url>/tools/<namespace>/<tool>` over mutual TLS with the pod's SVID, adding the dispatch
/// token. Needs the pod's workload identity (`VEXA_SPIFFE`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpGateway {
    /// The gateway's base URL as the pod reaches it (`https://…`).
    pub url: String,
    /// The loopback port of the worker's MCP endpoint.
    pub port: u16,
}

/// The pod's workload identity (`VEXA_SPIFFE`): the worker fetches an X.509 SVID from the
/// SPIRE agent's Workload API (mounted only into the worker) and refuses any other SPIFFE ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpiffeAccess {
    /// The SPIFFE ID the SVID must carry, `spiffe://<trust domain>/ns/<namespace>/dispatch/<name>`.
    pub spiffe_id: String,
    /// The Workload API socket, as the worker sees it (a path, or a `unix:` address).
    pub socket: String,
}

/// How the worker brokers the agent's model requests (`VEXA_MODEL`): it serves a loopback
/// proxy, points the agent CLI at it and forwards to the operator's model gateway with the
/// dispatch's gateway token (a file of the dispatch's Secret, never a variable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelAccess {
    /// The model gateway's base URL, as the pod reaches it.
    pub gateway: String,
    /// The variable the agent CLI reads its key from (it gets a placeholder).
    pub key_env: String,
    /// The variable the agent CLI reads its API base URL from (it gets the proxy's address).
    pub base_url_env: String,
    /// Most tokens (input and output) the run may use; `None`: no budget.
    #[serde(default)]
    pub token_budget: Option<i64>,
}

impl PodContract {
    /// The variables, in the order of [`var::ALL`].
    pub fn to_env(&self) -> Vec<(String, String)> {
        [
            (var::UNIT_ID, self.unit_id.clone()),
            (var::UNIT_TRIGGER, self.trigger.as_str().to_owned()),
            (var::UNIT_OUT_TOPIC, self.out_topic.clone()),
            (var::UNIT_IN_TOPIC, self.in_topic.clone()),
            (var::START, to_json(&self.start)),
            (var::WORKSPACES, to_json(&self.workspaces)),
            (
                var::WORKSPACE_PATH,
                self.workspace_path.display().to_string(),
            ),
            (var::OWNER, self.owner.clone()),
            (var::LAUNCHER, self.launcher.clone()),
            (var::RUNNER, self.runner.clone()),
            (var::RUNNER_SPEC, to_json(&self.runner_spec)),
            (var::TOOLS, to_json(&self.tools)),
            // What the run is about (meeting, opaque source reference); never the source's bytes.
            (var::CONTEXT, to_json(&self.context)),
            (var::CHAT_SESSION, self.thread.clone()),
            (
                var::IDLE_TIMEOUT_SEC,
                self.idle_timeout.as_secs().to_string(),
            ),
            (var::REDIS_URL, self.redis_url.clone()),
            (var::MODEL, to_json(&self.model)),
            (var::SPIFFE, to_json(&self.spiffe)),
            (var::MCP_GATEWAY, to_json(&self.mcp_gateway)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Reads the variables from `(name, value)` pairs (a container's `env`; a later pair wins,
    /// as in Kubernetes).
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, EnvError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads the variables through `get` (the process environment, or a map in tests). Only
    /// the topics, tools, context, thread and idle timeout may be unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let required = |var: &'static str| {
            get(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                EnvError::new(
                    var,
                    "is not set; the operator sets it on every dispatch pod, so run the worker only through a Dispatch (or set it by hand for a local run)",
                )
            })
        };
        let optional = |var: &'static str| get(var).filter(|v| !v.trim().is_empty());

        let unit_id = required(var::UNIT_ID)?;
        if unit_id.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return Err(EnvError::new(
                var::UNIT_ID,
                format!("{unit_id:?} is not a dispatch id: expected <namespace>/<name>"),
            ));
        }
        let trigger = word(var::UNIT_TRIGGER, &required(var::UNIT_TRIGGER)?)?;
        let out_topic = topic(
            optional(var::UNIT_OUT_TOPIC),
            var::UNIT_OUT_TOPIC,
            out_topic(&unit_id),
        )?;
        let in_topic = topic(
            optional(var::UNIT_IN_TOPIC),
            var::UNIT_IN_TOPIC,
            in_topic(&unit_id),
        )?;
        let start = json::<start::RawStart>(var::START, &required(var::START)?)?;
        let start = Start::try_from(start).map_err(|p| EnvError::new(var::START, p))?;
        let workspaces: Vec<WorkspaceMount> = json(var::WORKSPACES, &required(var::WORKSPACES)?)?;
        let workspace_path = PathBuf::from(required(var::WORKSPACE_PATH)?);
        check_workspaces(&workspaces, &workspace_path)?;

        let runner_spec: RunnerSpec = json(var::RUNNER_SPEC, &required(var::RUNNER_SPEC)?)?;
        if runner_spec.argv.is_empty() {
            return Err(EnvError::new(
                var::RUNNER_SPEC,
                "argv is empty; it must name the agent CLI",
            ));
        }
        relative_path("sessionPath", &runner_spec.session_path)
            .map_err(|p| EnvError::new(var::RUNNER_SPEC, p))?;

        let tools = match optional(var::TOOLS) {
            Some(v) => json::<Option<Vec<GrantedTool>>>(var::TOOLS, &v)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let context = match optional(var::CONTEXT) {
            Some(v) => json::<Option<RunContext>>(var::CONTEXT, &v)?,
            None => None,
        };
        let thread = get(var::CHAT_SESSION)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_THREAD.to_owned());
        if !valid_thread(&thread) {
            return Err(EnvError::new(
                var::CHAT_SESSION,
                format!(
                    "{thread:?} is not a thread name: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ));
        }
        let idle_timeout = match get(var::IDLE_TIMEOUT_SEC).filter(|v| !v.is_empty()) {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| {
                EnvError::new(
                    var::IDLE_TIMEOUT_SEC,
                    format!("{v:?} is not a whole number of seconds (0 or more)"),
                )
            })?,
        };
        let redis_url = required(var::REDIS_URL)?;
        let model = match optional(var::MODEL) {
            Some(v) => json::<Option<ModelAccess>>(var::MODEL, &v)?,
            None => None,
        };
        let spiffe = match optional(var::SPIFFE) {
            Some(v) => json::<Option<SpiffeAccess>>(var::SPIFFE, &v)?,
            None => None,
        };
        if let Some(s) = &spiffe
            && (!s.spiffe_id.starts_with("spiffe://") || s.socket.trim().is_empty())
        {
            return Err(EnvError::new(
                var::SPIFFE,
                format!(
                    "{:?} is not a SPIFFE ID (spiffe://…) or the socket is empty",
                    s.spiffe_id
                ),
            ));
        }
        let mcp_gateway = match optional(var::MCP_GATEWAY) {
            Some(v) => json::<Option<McpGateway>>(var::MCP_GATEWAY, &v)?,
            None => None,
        };
        if let Some(g) = &mcp_gateway {
            if !g.url.starts_with("https://") || g.port == 0 {
                return Err(EnvError::new(
                    var::MCP_GATEWAY,
                    format!(
                        "{:?} is not an https:// URL or the port is 0: the worker reaches the gateway only over mutual TLS",
                        g.url
                    ),
                ));
            }
            if spiffe.is_none() {
                return Err(EnvError::new(
                    var::MCP_GATEWAY,
                    "is set but VEXA_SPIFFE is not: the worker needs the pod's SVID for mutual TLS to the gateway",
                ));
            }
        }
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| redis_url.starts_with(s))
        {
            return Err(EnvError::new(
                var::REDIS_URL,
                "must start with redis://, rediss:// or unix://",
            ));
        }

        Ok(Self {
            unit_id,
            trigger,
            out_topic,
            in_topic,
            start,
            workspaces,
            workspace_path,
            owner: required(var::OWNER)?,
            launcher: required(var::LAUNCHER)?,
            runner: required(var::RUNNER)?,
            runner_spec,
            tools,
            context,
            thread,
            idle_timeout,
            redis_url,
            model,
            spiffe,
            mcp_gateway,
        })
    }

    /// The workspace the agent runs in (`VEXA_WORKSPACE_PATH`).
    pub fn primary(&self) -> Option<&WorkspaceMount> {
        self.workspaces
            .iter()
            .find(|w| w.path == self.workspace_path)
    }

    /// The workspace the worker commits to, if the run writes one.
    pub fn writable(&self) -> Option<&WorkspaceMount> {
        self.workspaces
            .iter()
            .find(|w| w.mode == WorkspaceMode::ReadWrite)
    }
}

/// At least one workspace, each mounted at an absolute path, at most one written, and the
/// agent's folder one of them.
fn check_workspaces(workspaces: &[WorkspaceMount], workspace_path: &Path) -> Result<(), EnvError> {
    if workspaces.is_empty() {
        return Err(EnvError::new(
            var::WORKSPACES,
            "is empty; a dispatch has at least one workspace",
        ));
    }
    if let Some(w) = workspaces.iter().find(|w| !w.path.is_absolute()) {
        return Err(EnvError::new(
            var::WORKSPACES,
            format!("workspace {:?} has a relative path {:?}", w.name, w.path),
        ));
    }
    let writable = workspaces
        .iter()
        .filter(|w| w.mode == WorkspaceMode::ReadWrite)
        .count();
    if writable > 1 {
        return Err(EnvError::new(
            var::WORKSPACES,
            "more than one workspace is rw; a dispatch writes at most one",
        ));
    }
    if !workspaces.iter().any(|w| w.path == workspace_path) {
        return Err(EnvError::new(
            var::WORKSPACE_PATH,
            format!(
                "{} is not the path of any workspace in VEXA_WORKSPACES",
                workspace_path.display()
            ),
        ));
    }
    Ok(())
}

/// A topic must be the one the dispatch id derives; unset means exactly that one.
fn topic(value: Option<String>, var: &'static str, want: String) -> Result<String, EnvError> {
    match value {
        None => Ok(want),
        Some(v) if v == want => Ok(v),
        Some(v) => Err(EnvError::new(
            var,
            format!("{v:?} does not match VEXA_UNIT_ID: expected {want:?}"),
        )),
    }
}

/// Serialises a value of the contract. It cannot fail: every map key is a string and every
/// path was made from a string. Should it ever, the variable is empty and the worker refuses
/// it by name rather than guessing.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn json<T: DeserializeOwned>(var: &'static str, raw: &str) -> Result<T, EnvError> {
    serde_json::from_str(raw).map_err(|e| EnvError::new(var, format!("invalid JSON value: {e}")))
}

/// A bare word such as `message`, read as the JSON string it stands for.
fn word<T: DeserializeOwned>(var: &'static str, raw: &str) -> Result<T, EnvError> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| EnvError::new(var, format!("{e}")))
}

#[cfg(test)]
mod tests;
