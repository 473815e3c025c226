//! The AgentRunners in `runners/` are valid AgentRunner objects, and what the operator passes
//! the worker from them (`VEXA_RUNNER_SPEC`) renders the command lines SPEC §8 names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rstest::rstest;
use vexa_agent_worker::argv::{ArgValues, prompt_after_end_of_options};
use vexa_agent_worker::env::CommandLine;
use vexa_core::StreamFormat;
use vexa_core::pod::RunnerSpec;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(file: &str) -> (vexa_crds::AgentRunner, RunnerSpec, CommandLine) {
    let text = std::fs::read_to_string(repo().join("runners").join(file)).unwrap();
    let runner: vexa_crds::AgentRunner = serde_saphyr::from_str(&text).unwrap();
    // Exactly what the operator puts in VEXA_RUNNER_SPEC, as the worker parses it.
    let spec = RunnerSpec::from(&runner.spec);
    let command = CommandLine::parse(&spec).unwrap();
    (runner, spec, command)
}

#[rstest]
#[case("vexa-test-agent.yaml")]
#[case("claude-code.yaml")]
fn the_runners_are_valid_agent_runners(#[case] file: &str) {
    let (runner, spec, command) = load(file);
    assert_eq!(
        runner.spec.image_pull_policy,
        Some(vexa_crds::runner::PullPolicy::IfNotPresent)
    );
    assert_eq!(spec.stream_format, StreamFormat::ClaudeStreamJson);
    assert_eq!(spec.session_path, ".claude/sessions");
    // A turn (which an injected agent may have written) is never parsed as an option.
    assert!(
        prompt_after_end_of_options(&command.argv),
        "{file}: put ${{prompt}} after a `--` item"
    );
    // What the schema refuses (the platform's variables) and what the worker needs to find.
    for e in &runner.spec.env {
        assert!(
            !e.name.starts_with("VEXA_") && e.name != "REDIS_URL",
            "{}",
            e.name
        );
    }
    let limits = runner.spec.defaults.as_ref().unwrap();
    assert!(limits.idle_timeout_seconds.unwrap() <= 14_400);
    assert!(limits.resources.as_ref().unwrap().limits.is_some());
}

#[test]
fn the_test_agent_runs_on_the_agent_worker_image() {
    let (runner, _, command) = load("vexa-test-agent.yaml");
    assert_eq!(runner.spec.image, "localhost/vexa-agent-worker:dev");
    let script = std::fs::read_to_string(repo().join("hack/images/agent-worker")).unwrap();
    assert!(script.contains("build vexa-agent-worker:dev"));
    assert!(script.contains("/vexa-test-agent\""));
    let argv = command.render(&ArgValues {
        prompt: "write a.md x".into(),
        session_id: Some("s-1".into()),
        ..ArgValues::default()
    });
    assert_eq!(argv[..2], ["vexa-test-agent", "-p"]);
    assert!(argv.ends_with(&[
        "--resume".into(),
        "s-1".into(),
        "--".into(),
        "write a.md x".into()
    ]));
}

#[rstest]
#[case::fresh(None, None, &[])]
#[case::resume(Some("s-1"), None, &["--resume", "s-1"])]
#[case::tools(None, Some("mcp__gw__email_send"), &["--allowedTools", "mcp__gw__email_send", "--mcp-config", "/tmp/mcp.json", "--strict-mcp-config"])]
fn claude_code_gets_the_spec_command_line(
    #[case] session: Option<&str>,
    #[case] tools: Option<&str>,
    #[case] extra: &[&str],
) {
    let (runner, spec, command) = load("claude-code.yaml");
    let cred = runner.spec.model_credential.as_ref().unwrap();
    assert_eq!(cred.env, "ANTHROPIC_API_KEY");
    let argv = command.render(&ArgValues {
        prompt: "hi".into(),
        session_id: session.map(Into::into),
        model: spec.model.clone(),
        allowed_tools: tools.map(Into::into),
        mcp_config: tools.map(|_| "/tmp/mcp.json".into()),
        ..ArgValues::default()
    });
    let mut want = vec![
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--permission-mode",
        "acceptEdits",
        "--setting-sources",
        "user",
        "--strict-mcp-config",
        "--disable-slash-commands",
    ];
    want.extend(extra);
    want.extend(["--model", "claude-sonnet-4-5", "--", "hi"]);
    assert_eq!(argv, want);
}
