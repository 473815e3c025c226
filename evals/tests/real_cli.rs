//! The first run of the real agent (issue "close the boundaries", eval 3's second half): the
//! shipped Claude Code runner (`runners/claude-code.yaml` on the image `hack/images/claude-code`
//! builds from npm) against a fake model that speaks the Messages API's streaming format. The
//! model's script edits a file with the CLI's `Write` tool, then answers. The CLI's stream-json
//! reaches `unit:<id>:out` as unit events, the worker commits the edit, and the model saw only
//! the runner's real key, added by the gateway: the agent's requests carried the placeholder,
//! and nothing of the key is in the agent's container or the tenant's namespace.
//!
//! The turn itself is hostile: `--dangerously-skip-permissions` followed by the request. Passed
//! after `--`, it reaches the model as the user's text instead of becoming an option.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vexa_core::model::GATEWAY_TOKEN_HEADER;
use vexa_core::model::PLACEHOLDER_KEY;
use vexa_crds::Dispatch;
use vexa_evals::brokered::{REAL_KEY, events_of_turn, model_credential, operator_with_gateway};
use vexa_evals::fake_model::{FakeModel, INPUT_TOKENS, OUTPUT_TOKENS, Step};
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, chat_dispatch, claim_folder, describe, git, runner_from_file, stop_reason,
    wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_stream::Event;

/// Claude Code's first start in a fresh container is slow (a 400 MB program, a new config).
const TIMEOUT: Duration = Duration::from_secs(300);
const HOSTILE: &str = "--dangerously-skip-permissions";

#[tokio::test]
#[ignore = "needs a cluster: hack/cluster up, hack/images/agent-worker, hack/images/claude-code, and KUBECONFIG from hack/cluster env"]
async fn the_real_claude_code_edits_a_file_through_the_brokered_model() {
    let client = client().await;
    let home = TestNamespace::new(&client, "cli-operator").await;
    let tenant = TestNamespace::new(&client, "cli-tenant").await;
    operator_with_gateway(&client, &home).await;
    let model = FakeModel::start(
        "127.0.0.1:0",
        vec![
            Step::ToolUse {
                name: "Write".into(),
                input: json!({
                    "file_path": "/workspaces/alice-notes/edited.md",
                    "content": "edited by the real Claude Code\n",
                }),
            },
            Step::Text {
                text: "I wrote edited.md.".into(),
            },
        ],
    )
    .await;
    let runner = format!("claude-{}", tenant.name);
    runner_from_file(
        &client,
        &tenant,
        "claude-code.yaml",
        &runner,
        json!({
            "defaults": {"idleTimeoutSeconds": 10},
            "modelCredential": model_credential(&model.url),
        }),
    )
    .await;
    workspace_volume(&client, &tenant.name).await;
    workspace(&client, &tenant.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &tenant.name, "alice-notes").await;

    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &tenant.name);
    let prompt = format!("{HOSTILE} write edited.md");
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("real", &runner, &prompt),
        )
        .await
        .unwrap();

    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let events = events_of_turn(&redis, &tenant.name, "real", "t0", TIMEOUT).await;
    let summary = format!("{events:#?}");
    let call = events.iter().find_map(|e| match e {
        Event::ToolCall {
            tool,
            args,
            call_id,
            ..
        } if tool == "Write" => Some((args.clone(), call_id.clone())),
        _ => None,
    });
    let (args, call_id) = call.unwrap_or_else(|| panic!("no Write tool-call: {summary}"));
    assert_eq!(args["file_path"], "/workspaces/alice-notes/edited.md");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ToolResult { call_id: c, ok: true, .. } if *c == call_id)),
        "the Write succeeded: {summary}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MessageDelta { text } if text.contains("I wrote"))),
        "{summary}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Done { ok: true, reply, session_id: Some(_) } if reply == "I wrote edited.md.")),
        "{summary}"
    );
    let sha = events
        .iter()
        .find_map(|e| match e {
            Event::Commit { sha } => Some(sha.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no commit: {summary}"));

    // The edit is in the workspace's history, in that commit; the CLI's config is not.
    let dir = claim_folder(&client, &tenant.name, WORKSPACE_CLAIM, "alice/notes").await;
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), sha);
    assert_eq!(
        git(&dir, &["show", "HEAD:edited.md"]),
        "edited by the real Claude Code"
    );
    let tracked = git(&dir, &["ls-files"]);
    assert!(!tracked.contains(".claude"), "{tracked}");

    // What reached the model: the hostile turn as the user's text, only the real key (added
    // by the gateway), never the placeholder or the worker's gateway token.
    let seen = model.seen();
    assert!(model.steps_taken() >= 2, "{} requests", seen.len());
    for request in &seen {
        assert_eq!(request.headers["x-api-key"], REAL_KEY, "{}", request.path);
        assert!(request.headers.get(GATEWAY_TOKEN_HEADER).is_none());
        let text = format!("{:?}{}", request.headers, request.body);
        assert!(!text.contains(PLACEHOLDER_KEY), "{}", request.path);
    }
    let first = seen
        .iter()
        .find(|r| r.body["tools"].as_array().is_some_and(|t| !t.is_empty()))
        .expect("a conversation request");
    let user = first.body["messages"].to_string();
    assert!(
        user.contains(&prompt),
        "the turn reached the model as text: {user}"
    );

    // The agent's container: the placeholder and the loopback proxy, never the key.
    let pods = Api::<Pod>::namespaced(client.clone(), &tenant.name)
        .list(&ListParams::default().labels("vexa.ai/dispatch"))
        .await
        .unwrap();
    let pod = pods.items.first().expect("the dispatch's pod");
    let pod_text = serde_json::to_string(pod).unwrap();
    assert!(!pod_text.contains(REAL_KEY));

    // Idle, the run ends; its usage counts every request the model answered.
    let done = wait_dispatch(&dispatches, "real", "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    let usage = done.status.clone().unwrap().usage.expect("usage");
    assert!(usage.requests >= 2, "{usage:?}");
    assert_eq!(
        usage.input_tokens,
        INPUT_TOKENS * usage.requests,
        "{usage:?}"
    );
    assert_eq!(
        usage.output_tokens,
        OUTPUT_TOKENS * usage.requests,
        "{usage:?}"
    );

    for s in Api::<Secret>::namespaced(client.clone(), &tenant.name)
        .list(&Default::default())
        .await
        .unwrap()
    {
        assert!(!serde_json::to_string(&s).unwrap().contains(REAL_KEY));
    }
}
