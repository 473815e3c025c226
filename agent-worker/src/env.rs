//! The worker's environment, as the operator sets it on the agent container (SPEC §4 and
//! `operator/src/dispatch/build.rs`), parsed into typed values. Every bad value is an error that
//! names its variable.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::argv::{ArgTemplate, OptionalArgs};

/// The thread used when `VEXA_CHAT_SESSION` is unset.
pub const DEFAULT_THREAD: &str = "main";
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
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// What started the dispatch.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A person's message (trusted).
    Message,
    /// A Schedule (trusted).
    Scheduled,
    /// An external event such as an email (untrusted: propose-only).
    Event,
    /// A meeting transcript (untrusted: propose-only).
    Transcription,
}

/// How the agent begins (the Dispatch's `spec.start`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A fresh first turn: a prompt, a plan file in the workspace, or both.
    Entrypoint {
        /// The prompt.
        inline: Option<String>,
        /// A plan file, relative to the workspace.
        path: Option<String>,
    },
    /// Resume the session whose id is in the file `reference` (relative to the workspace).
    Session {
        /// The session file.
        reference: String,
        /// The first turn's prompt; without one the worker waits for a turn on the input stream.
        prompt: Option<String>,
    },
}

impl Start {
    /// The prompt of turn `t0`, if the start has one. A plan path becomes "read and execute the
    /// plan at <path>", after the inline text when both are set.
    pub fn first_prompt(&self) -> Option<String> {
        match self {
            Start::Entrypoint { inline, path } => {
                let plan = path
                    .as_ref()
                    .map(|p| format!("read and execute the plan at {p}"));
                match (inline, plan) {
                    (Some(i), Some(p)) => Some(format!("{i}\n\n{p}")),
                    (i, p) => i.clone().or(p),
                }
            }
            Start::Session { prompt, .. } => prompt.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStart {
    entrypoint: Option<RawEntrypoint>,
    session: Option<RawSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntrypoint {
    inline: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    #[serde(rename = "ref")]
    reference: String,
    prompt: Option<String>,
}

/// `ro` or `rw`.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read-only: the mount is read-only and nothing is committed.
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read-write: the worker commits the agent's changes.
    #[serde(rename = "rw")]
    ReadWrite,
}

/// A workspace mounted into the pod.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// The Workspace object's name.
    pub name: String,
    /// The workspace's id.
    pub id: String,
    /// The mode this run has.
    pub mode: Mode,
    /// Where it is mounted.
    pub path: PathBuf,
}

/// How the agent CLI's output is parsed.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StreamFormat {
    /// Claude Code's `--output-format stream-json --include-partial-messages`.
    ClaudeStreamJson,
    /// One unit event per line.
    UnitJsonl,
}

/// The part of the AgentRunner the worker needs (`VEXA_RUNNER_SPEC`).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerSpec {
    /// The argv template.
    pub argv: Vec<ArgTemplate>,
    /// Groups appended when their placeholder has a value.
    #[serde(default)]
    pub optional_argv: Vec<OptionalArgs>,
    /// How to parse the CLI's output.
    pub stream_format: StreamFormat,
    /// Folder of the session files, relative to the rw workspace.
    pub session_path: String,
    /// The model, if the runner sets one.
    #[serde(default)]
    pub model: Option<String>,
}

/// Everything the worker reads from its environment.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerEnv {
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
    pub workspaces: Vec<Workspace>,
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
    /// `VEXA_TOOLS`: names of the granted Tool objects.
    pub tools: Vec<String>,
    /// `VEXA_CONTEXT`: what the run is about, passed through as JSON (absent or null: none).
    pub context: Option<Value>,
    /// `VEXA_CHAT_SESSION`: the chat thread, which selects the session file.
    pub thread: String,
    /// `VEXA_IDLE_TIMEOUT_SEC`: how long to wait for a next turn before exiting.
    pub idle_timeout: Duration,
    /// `REDIS_URL`.
    pub redis_url: String,
}

impl WorkerEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let required = |var: &'static str| {
            get(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                EnvError::new(
                    var,
                    "is not set; the operator sets it on every dispatch pod, so run the worker only through a Dispatch (or set it by hand for a local run)",
                )
            })
        };

        let unit_id = required("VEXA_UNIT_ID")?;
        if unit_id.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return Err(EnvError::new(
                "VEXA_UNIT_ID",
                format!("{unit_id:?} is not a dispatch id: expected <namespace>/<name>"),
            ));
        }
        let trigger = json_string("VEXA_UNIT_TRIGGER", &required("VEXA_UNIT_TRIGGER")?)?;
        let out_topic = topic(&get, "VEXA_UNIT_OUT_TOPIC", &unit_id, "out")?;
        let in_topic = topic(&get, "VEXA_UNIT_IN_TOPIC", &unit_id, "in")?;
        let start = parse_start(&required("VEXA_START")?)?;

        let workspaces: Vec<Workspace> = json("VEXA_WORKSPACES", &required("VEXA_WORKSPACES")?)?;
        if workspaces.is_empty() {
            return Err(EnvError::new(
                "VEXA_WORKSPACES",
                "is empty; a dispatch has at least one workspace",
            ));
        }
        if let Some(w) = workspaces.iter().find(|w| !w.path.is_absolute()) {
            return Err(EnvError::new(
                "VEXA_WORKSPACES",
                format!("workspace {:?} has a relative path {:?}", w.name, w.path),
            ));
        }
        if workspaces
            .iter()
            .filter(|w| w.mode == Mode::ReadWrite)
            .count()
            > 1
        {
            return Err(EnvError::new(
                "VEXA_WORKSPACES",
                "more than one workspace is rw; a dispatch writes at most one",
            ));
        }
        let workspace_path = PathBuf::from(required("VEXA_WORKSPACE_PATH")?);
        if !workspaces.iter().any(|w| w.path == workspace_path) {
            return Err(EnvError::new(
                "VEXA_WORKSPACE_PATH",
                format!(
                    "{} is not the path of any workspace in VEXA_WORKSPACES",
                    workspace_path.display()
                ),
            ));
        }

        let runner_spec: RunnerSpec = json("VEXA_RUNNER_SPEC", &required("VEXA_RUNNER_SPEC")?)?;
        if runner_spec.argv.is_empty() {
            return Err(EnvError::new(
                "VEXA_RUNNER_SPEC",
                "argv is empty; it must name the agent CLI",
            ));
        }
        relative_path("VEXA_RUNNER_SPEC", "sessionPath", &runner_spec.session_path)?;

        let tools = match get("VEXA_TOOLS").filter(|v| !v.trim().is_empty()) {
            Some(v) => json::<Option<Vec<String>>>("VEXA_TOOLS", &v)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let context = match get("VEXA_CONTEXT").filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(json::<Value>("VEXA_CONTEXT", &v)?).filter(|c| !c.is_null()),
            None => None,
        };
        let thread = get("VEXA_CHAT_SESSION")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_THREAD.to_owned());
        if !valid_thread(&thread) {
            return Err(EnvError::new(
                "VEXA_CHAT_SESSION",
                format!(
                    "{thread:?} is not a thread name: 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ));
        }
        let idle_timeout = match get("VEXA_IDLE_TIMEOUT_SEC").filter(|v| !v.is_empty()) {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(v) => v.trim().parse().map(Duration::from_secs).map_err(|_| {
                EnvError::new(
                    "VEXA_IDLE_TIMEOUT_SEC",
                    format!("{v:?} is not a whole number of seconds (0 or more)"),
                )
            })?,
        };
        let redis_url = required("REDIS_URL")?;
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| redis_url.starts_with(s))
        {
            return Err(EnvError::new(
                "REDIS_URL",
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
            owner: required("VEXA_OWNER")?,
            launcher: required("VEXA_LAUNCHER")?,
            runner: required("VEXA_RUNNER")?,
            runner_spec,
            tools,
            context,
            thread,
            idle_timeout,
            redis_url,
        })
    }

    /// The workspace the agent runs in (`VEXA_WORKSPACE_PATH`).
    pub fn primary(&self) -> Option<&Workspace> {
        self.workspaces
            .iter()
            .find(|w| w.path == self.workspace_path)
    }

    /// The workspace the worker commits to, if the run writes one.
    pub fn writable(&self) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.mode == Mode::ReadWrite)
    }
}

/// Whether `thread` is a valid chat thread name (the Dispatch schema's rule). It becomes a file
/// name, so it can never hold a path separator or start with a dot.
pub fn valid_thread(thread: &str) -> bool {
    let mut chars = thread.chars();
    thread.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks that `path` stays inside the workspace: relative, no `..`.
pub fn relative_path(var: &'static str, what: &str, path: &str) -> Result<(), EnvError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(EnvError::new(
            var,
            format!("{what} {path:?} must be a relative path inside the workspace, without '..'"),
        ))
    }
}

fn topic(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    unit_id: &str,
    dir: &str,
) -> Result<String, EnvError> {
    let want = format!("unit:{unit_id}:{dir}");
    match get(var).filter(|v| !v.is_empty()) {
        None => Ok(want),
        Some(v) if v == want => Ok(v),
        Some(v) => Err(EnvError::new(
            var,
            format!("{v:?} does not match VEXA_UNIT_ID: expected {want:?}"),
        )),
    }
}

fn json<T: DeserializeOwned>(var: &'static str, raw: &str) -> Result<T, EnvError> {
    serde_json::from_str(raw).map_err(|e| EnvError::new(var, format!("invalid JSON value: {e}")))
}

/// A bare word such as `message`, read as the JSON string it stands for.
fn json_string<T: DeserializeOwned>(var: &'static str, raw: &str) -> Result<T, EnvError> {
    serde_json::from_value(Value::String(raw.to_owned()))
        .map_err(|e| EnvError::new(var, format!("{e}")))
}

fn parse_start(raw: &str) -> Result<Start, EnvError> {
    const VAR: &str = "VEXA_START";
    let start: RawStart = json(VAR, raw)?;
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    match (start.entrypoint, start.session) {
        (Some(e), None) => {
            let (inline, path) = (nonempty(e.inline), nonempty(e.path));
            if inline.is_none() && path.is_none() {
                return Err(EnvError::new(
                    VAR,
                    "entrypoint sets neither inline nor path",
                ));
            }
            if let Some(p) = &path {
                relative_path(VAR, "entrypoint.path", p)?;
            }
            Ok(Start::Entrypoint { inline, path })
        }
        (None, Some(s)) => {
            relative_path(VAR, "session.ref", &s.reference)?;
            Ok(Start::Session {
                reference: s.reference,
                prompt: nonempty(s.prompt),
            })
        }
        _ => Err(EnvError::new(
            VAR,
            "must set exactly one of entrypoint and session",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    use crate::argv::{ArgValues, Placeholder, render};

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("VEXA_UNIT_ID", "team-a/agent-alice-chat-main".to_owned()),
            ("VEXA_UNIT_TRIGGER", "message".to_owned()),
            ("VEXA_UNIT_OUT_TOPIC", "unit:team-a/agent-alice-chat-main:out".to_owned()),
            ("VEXA_UNIT_IN_TOPIC", "unit:team-a/agent-alice-chat-main:in".to_owned()),
            ("VEXA_START", r#"{"entrypoint":{"inline":"write notes/hello.md hi"}}"#.to_owned()),
            (
                "VEXA_WORKSPACES",
                r#"[{"name":"notes","id":"ws-1","mode":"rw","path":"/workspaces/notes"},{"name":"wiki","id":"ws-2","mode":"ro","path":"/workspaces/wiki"}]"#.to_owned(),
            ),
            ("VEXA_WORKSPACE_PATH", "/workspaces/notes".to_owned()),
            ("VEXA_OWNER", "alice".to_owned()),
            ("VEXA_LAUNCHER", "user:alice".to_owned()),
            ("VEXA_RUNNER", "test-agent".to_owned()),
            (
                "VEXA_RUNNER_SPEC",
                r#"{"argv":["vexa-test-agent","-p","${prompt}"],"optionalArgv":[{"when":"sessionId","argv":["--resume","${sessionId}"]}],"streamFormat":"claude-stream-json","sessionPath":".claude/sessions","model":null}"#.to_owned(),
            ),
            ("VEXA_TOOLS", "[]".to_owned()),
            ("VEXA_CONTEXT", "null".to_owned()),
            ("VEXA_CHAT_SESSION", "main".to_owned()),
            ("VEXA_IDLE_TIMEOUT_SEC", "120".to_owned()),
            ("REDIS_URL", "redis://redis.vexa-system:6379".to_owned()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<WorkerEnv, EnvError> {
        WorkerEnv::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_operators_environment_parses() {
        let env = parse(&base()).unwrap();
        assert_eq!(env.unit_id, "team-a/agent-alice-chat-main");
        assert_eq!(env.trigger, Trigger::Message);
        assert_eq!(env.in_topic, "unit:team-a/agent-alice-chat-main:in");
        assert_eq!(
            env.start.first_prompt().as_deref(),
            Some("write notes/hello.md hi")
        );
        assert_eq!(env.workspaces.len(), 2);
        assert_eq!(env.primary().map(|w| w.id.as_str()), Some("ws-1"));
        assert_eq!(env.writable().map(|w| w.name.as_str()), Some("notes"));
        assert_eq!(
            env.runner_spec.stream_format,
            StreamFormat::ClaudeStreamJson
        );
        assert_eq!(
            env.runner_spec.optional_argv[0].when,
            Placeholder::SessionId
        );
        assert_eq!(env.context, None);
        assert_eq!(env.idle_timeout, Duration::from_secs(120));
        assert!(env.tools.is_empty());
    }

    #[test]
    fn optional_variables_have_defaults() {
        let mut vars = base();
        for k in [
            "VEXA_UNIT_OUT_TOPIC",
            "VEXA_UNIT_IN_TOPIC",
            "VEXA_TOOLS",
            "VEXA_CONTEXT",
            "VEXA_CHAT_SESSION",
            "VEXA_IDLE_TIMEOUT_SEC",
        ] {
            vars.remove(k);
        }
        let env = parse(&vars).unwrap();
        assert_eq!(env.out_topic, "unit:team-a/agent-alice-chat-main:out");
        assert_eq!(env.thread, "main");
        assert_eq!(env.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    }

    #[rstest]
    #[case::missing_id("VEXA_UNIT_ID", None, "is not set")]
    #[case::bad_id("VEXA_UNIT_ID", Some("no-namespace"), "<namespace>/<name>")]
    #[case::bad_trigger("VEXA_UNIT_TRIGGER", Some("cron"), "unknown variant `cron`")]
    #[case::foreign_topic(
        "VEXA_UNIT_OUT_TOPIC",
        Some("unit:other/x:out"),
        "does not match VEXA_UNIT_ID"
    )]
    #[case::start_not_json("VEXA_START", Some("write it"), "invalid JSON")]
    #[case::start_both(
        "VEXA_START",
        Some(r#"{"entrypoint":{"inline":"x"},"session":{"ref":"a"}}"#),
        "exactly one"
    )]
    #[case::start_neither("VEXA_START", Some("{}"), "exactly one")]
    #[case::entrypoint_empty("VEXA_START", Some(r#"{"entrypoint":{}}"#), "neither inline nor path")]
    #[case::plan_escapes(
        "VEXA_START",
        Some(r#"{"entrypoint":{"path":"../etc/passwd"}}"#),
        "without '..'"
    )]
    #[case::plan_absolute(
        "VEXA_START",
        Some(r#"{"entrypoint":{"path":"/etc/passwd"}}"#),
        "relative path"
    )]
    #[case::session_escapes(
        "VEXA_START",
        Some(r#"{"session":{"ref":"a/../../b"}}"#),
        "without '..'"
    )]
    #[case::unknown_start_field(
        "VEXA_START",
        Some(r#"{"entrypoint":{"inline":"x","shell":"sh"}}"#),
        "unknown field"
    )]
    #[case::no_workspaces("VEXA_WORKSPACES", Some("[]"), "at least one")]
    #[case::bad_mode(
        "VEXA_WORKSPACES",
        Some(r#"[{"name":"a","id":"a","mode":"rwx","path":"/w/a"}]"#),
        "unknown variant"
    )]
    #[case::relative_mount(
        "VEXA_WORKSPACES",
        Some(r#"[{"name":"a","id":"a","mode":"rw","path":"w/a"}]"#),
        "relative path"
    )]
    #[case::two_rw("VEXA_WORKSPACES", Some(r#"[{"name":"a","id":"a","mode":"rw","path":"/workspaces/notes"},{"name":"b","id":"b","mode":"rw","path":"/w/b"}]"#), "more than one")]
    #[case::path_not_mounted(
        "VEXA_WORKSPACE_PATH",
        Some("/elsewhere"),
        "not the path of any workspace"
    )]
    #[case::runner_not_json("VEXA_RUNNER_SPEC", Some("claude -p"), "invalid JSON")]
    #[case::unknown_placeholder(
        "VEXA_RUNNER_SPEC",
        Some(r#"{"argv":["x","${shell}"],"streamFormat":"unit-jsonl","sessionPath":"s"}"#),
        "unknown placeholder ${shell}"
    )]
    #[case::unknown_when("VEXA_RUNNER_SPEC", Some(r#"{"argv":["x"],"optionalArgv":[{"when":"home","argv":["y"]}],"streamFormat":"unit-jsonl","sessionPath":"s"}"#), "unknown variant `home`")]
    #[case::empty_argv(
        "VEXA_RUNNER_SPEC",
        Some(r#"{"argv":[],"streamFormat":"unit-jsonl","sessionPath":"s"}"#),
        "argv is empty"
    )]
    #[case::bad_format(
        "VEXA_RUNNER_SPEC",
        Some(r#"{"argv":["x"],"streamFormat":"text","sessionPath":"s"}"#),
        "unknown variant `text`"
    )]
    #[case::session_path_escapes(
        "VEXA_RUNNER_SPEC",
        Some(r#"{"argv":["x"],"streamFormat":"unit-jsonl","sessionPath":"../s"}"#),
        "sessionPath"
    )]
    #[case::tools_not_list("VEXA_TOOLS", Some(r#""email.send""#), "invalid JSON")]
    #[case::context_not_json("VEXA_CONTEXT", Some("{"), "invalid JSON")]
    #[case::thread_traversal("VEXA_CHAT_SESSION", Some("../main"), "not a thread name")]
    #[case::thread_dot("VEXA_CHAT_SESSION", Some(".hidden"), "not a thread name")]
    #[case::idle_negative("VEXA_IDLE_TIMEOUT_SEC", Some("-1"), "whole number")]
    #[case::idle_words("VEXA_IDLE_TIMEOUT_SEC", Some("2m"), "whole number")]
    #[case::missing_redis("REDIS_URL", None, "is not set")]
    #[case::bad_redis("REDIS_URL", Some("http://redis"), "redis://")]
    #[case::missing_owner("VEXA_OWNER", Some("  "), "is not set")]
    fn bad_values_name_their_variable(
        #[case] var: &'static str,
        #[case] value: Option<&str>,
        #[case] problem: &str,
    ) {
        let mut vars = base();
        match value {
            Some(v) => vars.insert(var, v.to_owned()),
            None => vars.remove(var),
        };
        let err = parse(&vars).unwrap_err();
        assert_eq!(err.var, var, "{err}");
        assert!(err.to_string().starts_with(var), "{err}");
        assert!(err.problem.contains(problem), "{err}");
    }

    #[rstest]
    #[case::inline(Some("hi"), None, Some("hi"))]
    #[case::plan(
        None,
        Some("plans/today.md"),
        Some("read and execute the plan at plans/today.md")
    )]
    #[case::both(
        Some("be brief"),
        Some("p.md"),
        Some("be brief\n\nread and execute the plan at p.md")
    )]
    fn first_prompt_of_an_entrypoint(
        #[case] inline: Option<&str>,
        #[case] path: Option<&str>,
        #[case] want: Option<&str>,
    ) {
        let start = Start::Entrypoint {
            inline: inline.map(Into::into),
            path: path.map(Into::into),
        };
        assert_eq!(start.first_prompt().as_deref(), want);
    }

    #[test]
    fn a_session_start_without_a_prompt_has_no_first_turn() {
        let mut vars = base();
        vars.insert(
            "VEXA_START",
            r#"{"session":{"ref":".claude/sessions/main.session"}}"#.into(),
        );
        let env = parse(&vars).unwrap();
        assert_eq!(
            env.start,
            Start::Session {
                reference: ".claude/sessions/main.session".into(),
                prompt: None
            }
        );
        assert_eq!(env.start.first_prompt(), None);
    }

    /// What the CRD types serialise (as the operator does) is what the worker reads.
    #[test]
    fn the_operators_serialisation_of_the_crds_parses() {
        let start = vexa_crds::Start {
            entrypoint: Some(vexa_crds::Entrypoint {
                inline: Some("hi".into()),
                path: Some("plans/p.md".into()),
            }),
            session: None,
        };
        let mut vars = base();
        vars.insert("VEXA_START", serde_json::to_string(&start).unwrap());
        let runner: vexa_crds::AgentRunner = claude_runner();
        let spec = &runner.spec;
        vars.insert(
            "VEXA_RUNNER_SPEC",
            serde_json::json!({
                "argv": spec.argv,
                "optionalArgv": spec.optional_argv,
                "streamFormat": spec.stream_format,
                "sessionPath": spec.session_path,
                "model": spec.model,
            })
            .to_string(),
        );
        let session = vexa_crds::Start {
            entrypoint: None,
            session: Some(vexa_crds::SessionStart {
                reference: ".claude/sessions/main.session".into(),
                prompt: Some("go on".into()),
            }),
        };
        let env = parse(&vars).unwrap();
        assert_eq!(
            env.start.first_prompt().as_deref(),
            Some("hi\n\nread and execute the plan at plans/p.md")
        );
        let argv = render(
            &env.runner_spec.argv,
            &env.runner_spec.optional_argv,
            &ArgValues {
                prompt: "P".into(),
                session_id: Some("s".into()),
                model: env.runner_spec.model.clone(),
                ..ArgValues::default()
            },
        );
        assert_eq!(argv[..3], ["claude", "-p", "P"]);
        assert!(argv.ends_with(&["--resume".into(), "s".into(), "--model".into(), "m1".into()]));
        vars.insert("VEXA_START", serde_json::to_string(&session).unwrap());
        assert_eq!(
            parse(&vars).unwrap().start.first_prompt().as_deref(),
            Some("go on")
        );
    }

    fn claude_runner() -> vexa_crds::AgentRunner {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "vexa.ai/v1",
            "kind": "AgentRunner",
            "metadata": {"name": "claude-code"},
            "spec": {
                "image": "x",
                "argv": ["claude", "-p", "${prompt}"],
                "optionalArgv": [
                    {"when": "sessionId", "argv": ["--resume", "${sessionId}"]},
                    {"when": "model", "argv": ["--model", "${model}"]}
                ],
                "streamFormat": "claude-stream-json",
                "model": "m1"
            }
        }))
        .unwrap()
    }
}
