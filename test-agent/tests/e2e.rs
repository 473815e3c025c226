//! End to end: the test agent run as a real process with the command line the worker renders
//! from the project's test-agent AgentRunner, its output fed through the worker's Claude Code
//! parser, and its sessions resumed through the worker's session files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use vexa_agent_worker::argv::ArgValues;
use vexa_agent_worker::env::CommandLine;
use vexa_agent_worker::session;
use vexa_agent_worker::{Event, StreamParser, TurnId, TurnOutcome};
use vexa_core::pod::RunnerSpec;

/// The runner from `goldens/agentrunners/valid/test-agent.yaml`, as the operator passes it
/// (`VEXA_RUNNER_SPEC`) and the worker parses its command line.
fn runner() -> (RunnerSpec, CommandLine) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../goldens/agentrunners/valid/test-agent.yaml");
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &doc["spec"];
    let spec: RunnerSpec = serde_json::from_value(json!({
        "argv": spec["argv"], "optionalArgv": spec["optionalArgv"],
        "streamFormat": spec["streamFormat"], "sessionPath": spec["sessionPath"], "model": spec["model"],
    }))
    .unwrap();
    let command = CommandLine::parse(&spec).unwrap();
    (spec, command)
}

struct Run {
    events: Vec<Event>,
    outcome: TurnOutcome,
    code: Option<i32>,
    stderr: String,
}

/// One turn, as the worker will run it: render argv, run in the workspace, parse stdout.
fn turn(workspace: &Path, prompt: &str, session_id: Option<&str>) -> Run {
    let (spec, command) = runner();
    let argv = command.render(&ArgValues {
        prompt: prompt.to_owned(),
        session_id: session_id.map(str::to_owned),
        ..ArgValues::default()
    });
    assert_eq!(argv[0], "vexa-test-agent");
    let out = Command::new(env!("CARGO_BIN_EXE_vexa-test-agent"))
        .args(&argv[1..])
        .current_dir(workspace)
        .output()
        .unwrap();
    let mut parser = vexa_agent_worker::parser(spec.stream_format, TurnId(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut events: Vec<Event> = stdout
        .lines()
        .flat_map(|l| parser.line(l))
        .map(|e| e.event)
        .collect();
    events.extend(
        parser
            .finish(out.status.code())
            .into_iter()
            .map(|e| e.event),
    );
    Run {
        events,
        outcome: parser.outcome().clone(),
        code: out.status.code(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn deltas(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MessageDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_turn_writes_a_file_and_streams_call_result_deltas_and_done_in_order() {
    let ws = tempfile::tempdir().unwrap();
    let run = turn(
        ws.path(),
        "write notes/hello.md Hello, world!\nremember the sky is green",
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("notes/hello.md")).unwrap(),
        "Hello, world!\n"
    );
    let kinds: Vec<&str> = run
        .events
        .iter()
        .map(|e| match e {
            Event::ToolCall { .. } => "call",
            Event::ToolResult { .. } => "result",
            Event::MessageDelta { .. } => "delta",
            Event::Done { .. } => "done",
            _ => "other",
        })
        .collect();
    let first_delta = kinds.iter().position(|k| *k == "delta").unwrap();
    assert_eq!(kinds[..first_delta], ["call", "result"]);
    assert!(
        kinds[first_delta..kinds.len() - 1]
            .iter()
            .all(|k| *k == "delta"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"done"));

    let Event::ToolCall {
        tool,
        args,
        call_id,
    } = &run.events[0]
    else {
        panic!()
    };
    assert_eq!(tool, "Write");
    assert!(
        args["file_path"]
            .as_str()
            .unwrap()
            .ends_with("notes/hello.md")
    );
    let Event::ToolResult {
        call_id: answered,
        ok,
        summary,
    } = &run.events[1]
    else {
        panic!()
    };
    assert_eq!((answered, *ok), (call_id, true));
    assert!(summary.starts_with("File created successfully"));

    let reply = "Wrote notes/hello.md.\nI will remember: the sky is green";
    assert_eq!(deltas(&run.events), reply);
    let id = run.outcome.session_id.clone().unwrap();
    assert_eq!(
        run.events.last(),
        Some(&Event::Done {
            reply: reply.into(),
            session_id: Some(id.clone()),
            ok: true
        })
    );
    assert!(
        session::transcript_size(ws.path(), &id).is_some(),
        "transcript under .claude/projects"
    );
}

#[test]
fn the_session_round_trips_through_the_session_file_and_resume_recalls() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path();
    let first = turn(root, "write a.md one\nremember blue", None);
    let file = session::session_file(&runner().0.session_path, "main");
    session::write_session_id(root, &file, first.outcome.session_id.as_deref().unwrap()).unwrap();

    let (_, id) = session::read_thread_session(root, &runner().0.session_path, "main")
        .unwrap()
        .unwrap();
    assert_eq!(
        session::resume_decision(root, &id),
        session::ResumeDecision::Resume(id.clone())
    );
    let second = turn(root, "append a.md two\nrecall", Some(&id));
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(
        std::fs::read_to_string(root.join("a.md")).unwrap(),
        "one\ntwo\n"
    );
    assert!(
        second
            .outcome
            .reply
            .ends_with("I remember: write a.md one / remember blue"),
        "{}",
        second.outcome.reply
    );
    let next = second.outcome.session_id.clone().unwrap();
    assert_ne!(
        next, id,
        "a resume continues under a new id, which the worker stores"
    );
    session::write_session_id(root, &file, &next).unwrap();

    let third = turn(root, "recall", Some(&next));
    assert_eq!(
        third.outcome.reply,
        "I remember: write a.md one / remember blue | append a.md two / recall"
    );
}

#[test]
fn resuming_an_unknown_session_fails_like_the_cli() {
    let ws = tempfile::tempdir().unwrap();
    let run = turn(
        ws.path(),
        "recall",
        Some("0b5e3c1a-7f2d-4c9e-9a61-3d2f1e0c9b8a"),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("No conversation found with session ID: 0b5e3c1a"),
        "{}",
        run.stderr
    );
    assert!(
        matches!(&run.events[0], Event::ModelError { error } if error.contains("No conversation found"))
    );
    assert!(matches!(&run.events[1], Event::Done { ok: false, .. }));
    assert_eq!(run.events.len(), 2);
    assert!(
        !run.outcome.produced_output,
        "the worker's cue to drop the session and retry fresh"
    );
}

#[test]
fn a_hostile_prompt_reaches_the_agent_as_one_argument() {
    let ws = tempfile::tempdir().unwrap();
    let said =
        r#"$(touch pwned); `touch pwned2` && echo "quoted" 'single' ${sessionId} | cat > pwned3"#;
    let run = turn(ws.path(), &format!("say {said}"), Some(""));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.outcome.reply, said);
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(!ws.path().join(f).exists());
    }
}

#[test]
fn a_failing_script_reports_an_error_and_a_failed_done() {
    let ws = tempfile::tempdir().unwrap();
    let run = turn(
        ws.path(),
        "write x.md kept\nfail the disk is on fire\nwrite y.md never",
        None,
    );
    assert_eq!(run.code, Some(1));
    assert!(ws.path().join("x.md").exists() && !ws.path().join("y.md").exists());
    let n = run.events.len();
    assert_eq!(
        run.events[n - 2],
        Event::ModelError {
            error: "the disk is on fire".into()
        }
    );
    assert!(matches!(
        &run.events[n - 1],
        Event::Done {
            ok: false,
            session_id: Some(_),
            ..
        }
    ));
}

#[test]
fn a_plan_file_is_read_and_followed() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("plans")).unwrap();
    std::fs::write(
        ws.path().join("plans/today.md"),
        "write out/report.md done\nsay Plan finished\n",
    )
    .unwrap();
    let run = turn(
        ws.path(),
        "read and execute the plan at plans/today.md",
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.outcome.reply,
        "Following the plan at plans/today.md.\nWrote out/report.md.\nPlan finished"
    );
    let tools: Vec<&str> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall { tool, .. } => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tools, ["Read", "Write"]);
}

#[test]
fn stream_json_without_verbose_is_refused_like_the_cli() {
    let out = Command::new(env!("CARGO_BIN_EXE_vexa-test-agent"))
        .args(["-p", "hi", "--output-format", "stream-json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires --verbose"));
}

#[test]
fn without_partial_messages_the_reply_comes_from_the_assistant_message() {
    let ws = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vexa-test-agent"))
        .args([
            "-p",
            "say hello there friend of mine",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .current_dir(ws.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("stream_event"));
    let mut p = vexa_agent_worker::claude::ClaudeParser::new(TurnId(0));
    let events: Vec<Event> = stdout
        .lines()
        .flat_map(|l| p.line(l))
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events[0],
        Event::MessageDelta {
            text: "hello there friend of mine".into()
        }
    );
    assert_eq!(events.len(), 2);
}

/// The worker's turn runner over the real process: a stale session id is dropped and the turn
/// is retried fresh, with one `note` in place of the failed attempt's events.
#[test]
fn the_worker_retries_a_failed_resume_fresh_with_the_real_agent() {
    use vexa_agent_worker::shim::{Shim, ShimAgent, ShimStop, server};
    use vexa_agent_worker::turn::{TurnSpec, run_turn};

    let ws = tempfile::tempdir().unwrap();
    let (spec, command) = runner();
    let bin = env!("CARGO_BIN_EXE_vexa-test-agent");
    let argv: Vec<_> = std::iter::once(vexa_agent_worker::argv::ArgTemplate::parse(bin).unwrap())
        .chain(command.argv[1..].iter().cloned())
        .collect();
    // The agent container's side, over a socket pair instead of the shared socket file.
    let (worker_end, shim_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let shim = std::thread::spawn(move || server::serve_connection(shim_end, Default::default()));
    let mut agent = ShimAgent {
        shim: Shim::over(worker_end).unwrap(),
        cwd: ws.path().to_owned(),
        env: Vec::new(),
        stop: ShimStop::default(),
    };
    let values = ArgValues {
        prompt: "write notes/hello.md hi".into(),
        session_id: Some("0b5e3c1a-7f2d-4c9e-9a61-3d2f1e0c9b8a".into()),
        ..ArgValues::default()
    };
    let mut events = Vec::new();
    let report = run_turn(
        &mut agent,
        TurnSpec {
            argv: &argv,
            optional_argv: &command.optional_argv,
            stream_format: spec.stream_format,
        },
        TurnId(0),
        &values,
        &mut |e| events.push(e.event),
    )
    .unwrap();
    assert!(report.resume_failed);
    assert!(
        matches!(&events[0], Event::Note { note } if note.contains("No conversation found")),
        "{events:?}"
    );
    assert!(
        events[1..]
            .iter()
            .all(|e| !matches!(e, Event::ModelError { .. })),
        "{events:?}"
    );
    assert!(matches!(events.last(), Some(Event::Done { ok: true, .. })));
    assert!(ws.path().join("notes/hello.md").exists());
    drop(agent);
    shim.join().unwrap().unwrap();
}
