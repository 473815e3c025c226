#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use rstest::rstest;

use super::*;
use crate::context::{ContextKind, SourceRef};

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

fn parse(vars: &HashMap<&'static str, String>) -> Result<PodContract, EnvError> {
    PodContract::from_lookup(|k| vars.get(k).cloned())
}

/// A contract using every field, as the operator fills it.
fn full() -> PodContract {
    PodContract {
        unit_id: "team-a/morning-brief-1".into(),
        trigger: Trigger::Scheduled,
        out_topic: "unit:team-a/morning-brief-1:out".into(),
        in_topic: "unit:team-a/morning-brief-1:in".into(),
        start: Start::Entrypoint {
            inline: Some("say \"hi\"\nthen stop".into()),
            path: Some("routines/brief.md".into()),
        },
        workspaces: vec![
            WorkspaceMount {
                id: "alice-notes".into(),
                mode: WorkspaceMode::ReadWrite,
                name: "notes".into(),
                path: "/workspaces/notes".into(),
            },
            WorkspaceMount {
                id: "handbook".into(),
                mode: WorkspaceMode::ReadOnly,
                name: "handbook".into(),
                path: "/workspaces/handbook".into(),
            },
        ],
        workspace_path: "/workspaces/notes".into(),
        owner: "alice".into(),
        launcher: "schedule:team-a/morning-brief".into(),
        runner: "claude-code".into(),
        runner_spec: RunnerSpec {
            argv: vec!["claude".into(), "-p".into(), "${prompt}".into()],
            model: Some("m1".into()),
            optional_argv: vec![OptionalArgs {
                argv: vec!["--resume".into(), "${sessionId}".into()],
                when: "sessionId".into(),
            }],
            session_path: ".claude/sessions".into(),
            stream_format: StreamFormat::ClaudeStreamJson,
        },
        tools: vec![
            GrantedTool {
                name: "calendar-read".into(),
                tool_name: Some("calendar.read".into()),
            },
            GrantedTool {
                name: "legacy".into(),
                tool_name: None,
            },
        ],
        context: Some(RunContext {
            kind: ContextKind::Email,
            meeting: None,
            source: Some(SourceRef {
                uri: "imap://alice@mail/INBOX;UID=1".into(),
                etag: Some("1-2".into()),
            }),
            session: Some("brief".into()),
        }),
        thread: "brief".into(),
        idle_timeout: Duration::from_secs(900),
        redis_url: "rediss://redis.vexa-system:6380".into(),
        model: Some(super::ModelAccess {
            gateway: "http://vexa-operator.vexa-system.svc:8082".into(),
            key_env: "ANTHROPIC_API_KEY".into(),
            base_url_env: "ANTHROPIC_BASE_URL".into(),
            token_budget: Some(50_000),
        }),
        spiffe: Some(super::SpiffeAccess {
            spiffe_id: "spiffe://vexa.local/ns/team-a/dispatch/brief".into(),
            socket: "/run/spire/agent/api.sock".into(),
        }),
        mcp_gateway: Some(super::McpGateway {
            url: "https://vexa-gateway.vexa-system.svc:8443".into(),
            port: DEFAULT_MCP_PORT,
        }),
    }
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
    assert_eq!(env.runner_spec.optional_argv[0].when, "sessionId");
    assert_eq!(env.context, None);
    assert_eq!(env.idle_timeout, Duration::from_secs(120));
    assert!(env.tools.is_empty());
}

#[test]
fn what_the_operator_writes_the_worker_reads_back() {
    let contract = full();
    let vars = contract.to_env();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, var::ALL);
    assert_eq!(PodContract::from_vars(vars).unwrap(), contract);
}

/// The JSON keys keep the order the operator wrote before the contract was typed, so the
/// golden Jobs did not change.
#[test]
fn the_json_variables_keep_their_text() {
    let vars: HashMap<String, String> = full().to_env().into_iter().collect();
    assert_eq!(
        vars["VEXA_WORKSPACES"],
        r#"[{"id":"alice-notes","mode":"rw","name":"notes","path":"/workspaces/notes"},{"id":"handbook","mode":"ro","name":"handbook","path":"/workspaces/handbook"}]"#
    );
    assert_eq!(
        vars["VEXA_RUNNER_SPEC"],
        r#"{"argv":["claude","-p","${prompt}"],"model":"m1","optionalArgv":[{"argv":["--resume","${sessionId}"],"when":"sessionId"}],"sessionPath":".claude/sessions","streamFormat":"claude-stream-json"}"#
    );
    assert_eq!(
        vars["VEXA_START"],
        r#"{"entrypoint":{"inline":"say \"hi\"\nthen stop","path":"routines/brief.md"}}"#
    );
    assert_eq!(
        vars["VEXA_CONTEXT"],
        r#"{"kind":"email","source":{"uri":"imap://alice@mail/INBOX;UID=1","etag":"1-2"},"session":"brief"}"#
    );
    assert_eq!(
        vars["VEXA_TOOLS"],
        r#"[{"name":"calendar-read","toolName":"calendar.read"},{"name":"legacy"}]"#
    );
    assert_eq!(
        vars["VEXA_MCP_GATEWAY"],
        r#"{"url":"https://vexa-gateway.vexa-system.svc:8443","port":7390}"#
    );
    assert_eq!(vars["VEXA_UNIT_TRIGGER"], "scheduled");
    assert_eq!(vars["VEXA_IDLE_TIMEOUT_SEC"], "900");
    let none = PodContract {
        context: None,
        ..full()
    };
    let vars: HashMap<String, String> = none.to_env().into_iter().collect();
    assert_eq!(vars["VEXA_CONTEXT"], "null");
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
    assert_eq!(env.thread, DEFAULT_THREAD);
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
#[case::unknown_runner_field(
    "VEXA_RUNNER_SPEC",
    Some(r#"{"argv":["x"],"streamFormat":"unit-jsonl","sessionPath":"s","shell":"sh"}"#),
    "unknown field"
)]
#[case::session_path_escapes(
    "VEXA_RUNNER_SPEC",
    Some(r#"{"argv":["x"],"streamFormat":"unit-jsonl","sessionPath":"../s"}"#),
    "sessionPath"
)]
#[case::tools_not_list("VEXA_TOOLS", Some(r#""email.send""#), "invalid JSON")]
#[case::tool_without_name("VEXA_TOOLS", Some(r#"[{"toolName":"x"}]"#), "invalid JSON")]
#[case::gateway_plain_http(
    "VEXA_MCP_GATEWAY",
    Some(r#"{"url":"http://gw:8443","port":7390}"#),
    "mutual TLS"
)]
#[case::gateway_without_identity(
    "VEXA_MCP_GATEWAY",
    Some(r#"{"url":"https://gw:8443","port":7390}"#),
    "VEXA_SPIFFE is not"
)]
#[case::gateway_unknown_field(
    "VEXA_MCP_GATEWAY",
    Some(r#"{"url":"https://gw:8443","port":7390,"token":"x"}"#),
    "unknown field"
)]
#[case::context_not_json("VEXA_CONTEXT", Some("{"), "invalid JSON")]
#[case::context_unknown_kind("VEXA_CONTEXT", Some(r#"{"kind":"fax"}"#), "unknown variant")]
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

#[test]
fn a_context_is_typed() {
    let mut vars = base();
    vars.insert(
        "VEXA_CONTEXT",
        r#"{"kind":"meeting","meeting":{"meetingId":"abc-defg-hij","platform":"google_meet"}}"#
            .into(),
    );
    let context = parse(&vars).unwrap().context.unwrap();
    assert_eq!(context.kind, ContextKind::Meeting);
    assert_eq!(context.meeting.unwrap().meeting_id, "abc-defg-hij");
}

#[test]
fn a_later_pair_wins() {
    let mut vars: Vec<(String, String)> =
        base().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    vars.push(("VEXA_OWNER".into(), "bob".into()));
    assert_eq!(PodContract::from_vars(vars).unwrap().owner, "bob");
}

#[test]
fn tools_written_as_bare_names_still_read() {
    let mut vars = base();
    vars.insert(
        "VEXA_TOOLS",
        r#"["notes",{"name":"send","toolName":"notes.send"}]"#.into(),
    );
    let tools = parse(&vars).unwrap().tools;
    assert_eq!(
        tools,
        [
            GrantedTool {
                name: "notes".into(),
                tool_name: None
            },
            GrantedTool {
                name: "send".into(),
                tool_name: Some("notes.send".into())
            },
        ]
    );
}
