//! Eval 4 (issue 10): the audit log resolves every effect of a dispatch to subject · launcher ·
//! scope, survives an operator restart as one chain, and `kubectl vexa audit verify` names the
//! record that was edited, deleted or reordered.
//!
//! A real run (the test agent on the agent worker image) and a refused Dispatch under one
//! incarnation of the in-process operator, a second run under the next incarnation (same audit
//! folder); then, with the CLI as it ships, through the streams API (`v1.streams.vexa.ai`):
//! `kubectl vexa audit <dispatch>` shows admitted … stopped and the refusal, `audit verify`
//! passes on the live log, `audit export` writes a copy, and `audit verify --file` fails on
//! three tampered copies at the right line and seq.
//!
//! Needs `eval "$(hack/cluster env)"` and the worker image; `hack/test` provides both.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vexa_audit::{Body, Event, Line, line_hash};
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    chat_dispatch, condition, phase, stop_reason, test_agent_runner, wait_dispatch, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::operator::{Operator, assert_no_operator_in_cluster};
use vexa_evals::streams::StreamsApi;
use vexa_evals::{TestNamespace, cli_binary, client, cluster_env, kubectl_vexa};

const TIMEOUT: Duration = Duration::from_secs(180);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run of the test agent that ends on its own (idle) soon after its first turn.
fn short_run(name: &str, runner: &str) -> Dispatch {
    let mut d = chat_dispatch(name, runner, "say hello from the audit eval");
    d.spec.limits.get_or_insert_default().idle_timeout_seconds = Some(3);
    d
}

async fn run_to_the_end(api: &Api<Dispatch>, d: Dispatch) -> Dispatch {
    let name = d.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    wait_dispatch(api, &name, "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await
}

/// `audit verify --file` on `lines` (written to `dir/name`) with the exported keys: the error
/// it exits with.
fn verify_copy(ns: &str, dir: &Path, name: &str, lines: &[String]) -> String {
    let file = dir.join(name);
    std::fs::write(
        &file,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let jwks = dir.join("jwks.json");
    let out = kubectl_vexa(
        ns,
        &[
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{name}: the tampered copy verified");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn parse(line: &str) -> Line {
    serde_json::from_str(line).unwrap()
}

/// The (dispatch name, event kind) of a record line.
fn what(line: &Line) -> Option<(String, &'static str)> {
    match &line.body {
        Body::Record { effect, event } => Some((effect.dispatch.name.clone(), event.kind())),
        _ => None,
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn the_audit_log_resolves_every_effect_and_names_the_tampered_record() {
    cli_binary();
    let admin = client().await;
    assert_no_operator_in_cluster(&admin).await;
    let ns = TestNamespace::new(&admin, "audit").await;
    let streams = StreamsApi::register(&admin, &ns.name).await;
    let audit_dir =
        std::env::temp_dir().join(format!("vexa-eval-audit-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&audit_dir);
    let mut flags = vec![
        "--job-ttl-seconds".to_owned(),
        "5".to_owned(),
        format!("--redis-url={}", cluster_env("POD_REDIS_URL")),
        format!("--audit-dir={}", audit_dir.display()),
        // Checkpoints only every 64 records, as this eval counts lines: none on a timer.
        "--audit-checkpoint-seconds=3600".to_owned(),
    ];
    flags.extend(streams.flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = Operator::start(&flags);
    operator.ready().await;
    streams.available(&admin).await;

    let runner = format!("test-agent-{}", ns.name);
    test_agent_runner(&admin, &ns, &runner, json!({})).await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);

    // Incarnation 1: a real run, and a Dispatch the operator refuses (an event may not write).
    let first = run_to_the_end(&dispatches, short_run("audit-first", &runner)).await;
    eprintln!("audit-first: {}/{}", phase(&first), stop_reason(&first));
    let mut refused = chat_dispatch("audit-refused", &runner, "say never");
    refused.spec.trigger = vexa_crds::Trigger::Event;
    dispatches
        .create(&PostParams::default(), &refused)
        .await
        .unwrap();
    wait_dispatch(&dispatches, "audit-refused", "refused", TIMEOUT, |d| {
        phase(d) == "refused"
    })
    .await;
    let chain = audit_dir.join("operator.jsonl");
    let before_restart = std::fs::read_to_string(&chain).unwrap();

    // Incarnation 2, on the same folder: the chain goes on.
    operator.kill().await;
    let operator = Operator::start(&flags);
    operator.ready().await;
    streams.available(&admin).await;
    let second = run_to_the_end(&dispatches, short_run("audit-second", &runner)).await;
    eprintln!("audit-second: {}/{}", phase(&second), stop_reason(&second));

    // What a person sees: each effect of the run, resolved.
    let out = kubectl_vexa(&ns.name, &["audit", "audit-first"]);
    assert!(out.status.success());
    let shown = stdout(&out);
    let admitted = shown.find(" admitted ").expect("admitted is shown");
    let stopped = shown.find(" stopped ").expect("stopped is shown");
    assert!(
        admitted < stopped,
        "admitted comes before stopped:\n{shown}"
    );
    assert!(
        shown.contains("alice · user:alice · workspaces alice-notes:rw · no tools"),
        "subject · launcher · scope:\n{shown}"
    );
    assert!(
        shown.contains(&format!("({})", stop_reason(&first))),
        "the stop reason:\n{shown}"
    );
    assert!(
        shown.contains(first.metadata.uid.as_deref().unwrap()),
        "{shown}"
    );
    let out = kubectl_vexa(&ns.name, &["audit", "audit-refused"]);
    let why = condition(
        &dispatches.get("audit-refused").await.unwrap(),
        "Authorized",
    )
    .unwrap();
    assert!(
        stdout(&out).contains(" refused  ") && stdout(&out).contains(&why.1),
        "the refusal and its reason {}:\n{}",
        why.1,
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains(" admitted "),
        "a refused run was never admitted"
    );

    // The chain links across the restart: the first line the second incarnation wrote
    // carries the hash of the last line the first one wrote.
    let after = std::fs::read_to_string(&chain).unwrap();
    assert!(
        after.starts_with(&before_restart),
        "the chain was rewritten, not appended"
    );
    let last_before = before_restart.lines().last().unwrap();
    let first_after = after[before_restart.len()..].lines().next().unwrap();
    let (a, b) = (parse(last_before), parse(first_after));
    assert_eq!(b.seq, a.seq + 1, "seq goes on across the restart");
    assert_eq!(
        b.prev,
        line_hash(last_before.as_bytes()),
        "prev links across the restart"
    );
    assert_eq!(
        what(&b),
        Some(("audit-second".to_owned(), "admitted")),
        "{first_after}"
    );
    // Each event once, though every dispatch was reconciled many times (and once more by the
    // restarted operator).
    let records: Vec<Line> = after.lines().map(parse).collect();
    let mut seen = std::collections::BTreeSet::new();
    for r in &records {
        if let Some(w) = what(r) {
            assert!(seen.insert(w.clone()), "recorded twice: {w:?}");
        }
    }
    for wanted in [
        ("audit-first", "admitted"),
        ("audit-first", "stopped"),
        ("audit-refused", "refused"),
        ("audit-second", "admitted"),
        ("audit-second", "stopped"),
    ] {
        assert!(
            seen.contains(&(wanted.0.to_owned(), wanted.1)),
            "missing {wanted:?}: {seen:?}"
        );
    }
    assert!(records.iter().any(|r| matches!(
        &r.body,
        Body::Record { event: Event::Refused { reason, .. }, .. } if *reason == why.1
    )));

    // The live log verifies.
    let out = kubectl_vexa(&ns.name, &["audit", "verify"]);
    assert!(out.status.success(), "the live log verifies");
    assert!(
        stdout(&out).contains(&format!("operator: {} lines intact", records.len())),
        "{}",
        stdout(&out)
    );

    // An exported copy, then three tamperings of it, each named at its line and seq.
    let export = audit_dir.with_extension("export");
    let _ = std::fs::remove_dir_all(&export);
    assert!(
        kubectl_vexa(&ns.name, &["audit", "export", export.to_str().unwrap()])
            .status
            .success()
    );
    let copy: Vec<String> = std::fs::read_to_string(export.join("operator.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(copy.len(), records.len());
    let out = kubectl_vexa(
        &ns.name,
        &[
            "audit",
            "verify",
            "--file",
            export.join("operator.jsonl").to_str().unwrap(),
            "--jwks",
            export.join("jwks.json").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "the untouched copy verifies");

    // Edited: alice's first record now says mallory launched it. (The log may begin with
    // records of other evals' dispatches, e.g. the removal of a finished pod's SPIRE entry that
    // an earlier operator left: each line's seq is its line number.)
    let mut edited = copy.clone();
    let first = copy
        .iter()
        .position(|l| l.contains("\"launcher\":\"user:alice\""))
        .expect("a record launched by alice");
    edited[first] = edited[first].replace(
        "\"launcher\":\"user:alice\"",
        "\"launcher\":\"user:mallory\"",
    );
    assert_ne!(edited[first], copy[first]);
    let err = verify_copy(&ns.name, &export, "edited.jsonl", &edited);
    let at = format!("line {n} (seq {n})", n = first + 1);
    assert!(
        err.contains(&format!("{at} was edited")) && err.contains(&format!("{at} (edited)")),
        "{err}"
    );
    // Deleted: the second record is gone.
    let mut deleted = copy.clone();
    deleted.remove(1);
    let err = verify_copy(&ns.name, &export, "deleted.jsonl", &deleted);
    assert!(
        err.contains("records deleted before line 2: seq 2..=2 missing"),
        "{err}"
    );
    // Reordered: the second and third records swapped.
    let mut reordered = copy.clone();
    reordered.swap(1, 2);
    let err = verify_copy(&ns.name, &export, "reordered.jsonl", &reordered);
    assert!(
        err.contains("line 2 (seq 3) is out of order: seq 2 belongs here and is found at line 3"),
        "{err}"
    );
    eprintln!(
        "eval 4: {} lines over two operator incarnations; edited, deleted and reordered copies \
         each refused at the right line",
        records.len()
    );

    operator.kill().await;
    drop(streams);
}
