//! Stage 3 end to end (issue 12, evals 4 and 5), on the local cluster with the real Redis and
//! the real IMAP/SMTP servers of `hack/mail`, through the chart's admission policies:
//!
//! 4. An email delivered to alice's triage mailbox fires her triage routine within seconds, a
//!    propose-only run of the test agent. It calls the gated `email.send` Tool through the
//!    worker's MCP endpoint, Envoy and the gateway (real SPIRE SVIDs, Keycloak token exchange,
//!    the real email tool behind it), which makes a `send` Card instead of sending; and it
//!    proposes a `record` Card through the worker's card server. No message leaves before a
//!    decision, even after the run ended. bob cannot approve; alice approves both: exactly
//!    one message reaches the recipient's INBOX and the mailbox's Sent, and the record is
//!    committed into her workspace as her.
//! 5. A golden meeting transcript replayed into its stream completes the Transcript, which
//!    fires alice's post-meeting routine (a propose-only run of the test agent). The run
//!    proposes the minutes as a `record` Card through the worker's card server (MCP); bob
//!    cannot approve it; alice approves, and the minutes are committed into her workspace as
//!    her, with the trailers naming the card and the run.
//!
//! The operator runs in this process; people are real cluster users (client certificates)
//! with RBAC on Cards, so what refuses bob is admission.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube::api::{ListParams, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vexa_core::names::SCHEDULE_LABEL;
use vexa_crds::card::{Card, CardKind, CardPhase};
use vexa_crds::{
    Dispatch, Identity, Schedule, Tool, Transcript, TranscriptPhase, Trigger, WorkspaceMode,
};
use vexa_evals::admission::ChartAdmission;
use vexa_evals::cards::{card_in, decision, refused};
use vexa_evals::email_tool::{AUDIENCE as EMAIL_AUDIENCE, EmailTool};
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, claim_folder, git, test_agent_runner, workspace, workspace_ready,
    workspace_volume,
};
use vexa_evals::gateway::{Stack, tools_ready};
use vexa_evals::keycloak::Keycloak;
use vexa_evals::mail::MailServer;
use vexa_evals::meetings;
use vexa_evals::operator::Operator;
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::streams::StreamsApi;
use vexa_evals::users::{grant_role, user_client};
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Both tests install the chart's cluster-wide admission policies and remove them when they
/// end: run one at a time, or the first to end leaves the other without admission.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// RBAC that lets a person read and decide Cards (admission decides the rest).
fn card_rules() -> Value {
    json!([
        {"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["get", "list", "watch", "update", "patch"]},
    ])
}

/// What both routines need in `ns`: the test agent as a runner (returns its name), alice's
/// workspace `notes` ready, and RBAC on Cards for alice and bob.
async fn desk(admin: &Client, ns: &TestNamespace) -> String {
    let runner = format!("agent-{}", ns.name);
    test_agent_runner(
        admin,
        ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 1}}),
    )
    .await;
    workspace_volume(admin, &ns.name).await;
    workspace(admin, &ns.name, "notes", "alice/notes", "rw").await;
    workspace_ready(admin, &ns.name, "notes").await;
    for user in ["alice", "bob"] {
        grant_role(
            admin,
            &ns.name,
            user,
            &format!("cards-{user}"),
            card_rules(),
        )
        .await;
    }
    runner
}

/// The runs of `schedule`.
async fn runs(api: &Api<Dispatch>, schedule: &str) -> Vec<Dispatch> {
    api.list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .unwrap()
        .items
}

/// alice's Identity, granting the Schedule `grant` (its launcher) workspace `notes` read-only
/// and `tools`.
async fn alice(admin: &Client, ns: &str, grant: &str, tools: &[&str]) {
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": [{
            "name": grant, "launcher": format!("schedule:{ns}/{grant}"),
            "workspaces": [{"name": "notes", "mode": "ro"}], "tools": tools,
        }]},
    }))
    .unwrap();
    Api::<Identity>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
}

/// `as_alice` (alice's own client) approves the Card `name`; waits until `cards` shows it
/// applied. How long that took.
async fn approve_until_applied(as_alice: &Api<Card>, cards: &Api<Card>, name: &str) -> Duration {
    let t0 = Instant::now();
    as_alice
        .patch(name, &PatchParams::default(), &decision("approve", "alice"))
        .await
        .unwrap();
    card_in(cards, name, CardPhase::Applied, TIMEOUT).await;
    t0.elapsed()
}

/// Commits the approved record `card` (by name) into alice's `notes` folder: the last commit
/// touching `path` is alice's, names the card, the run and the approver, and holds `content`.
fn assert_committed(
    folder: &std::path::Path,
    ns: &str,
    card: &str,
    run: &str,
    path: &str,
    content: &str,
) {
    let author = git(folder, &["log", "-1", "--format=%an", "--", path]);
    assert_eq!(author, "alice", "the commit is the approver's");
    let body = git(folder, &["log", "-1", "--format=%B", "--", path]);
    for trailer in [
        format!("Vexa-Card: {ns}/{card}"),
        format!("Vexa-Source-Dispatch: {run}"),
        "Vexa-Approved-By: alice".to_owned(),
    ] {
        assert!(body.contains(&trailer), "{trailer} in {body}");
    }
    assert_eq!(
        std::fs::read_to_string(folder.join(path)).unwrap(),
        content,
        "the committed file"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the hack/ cluster and the worker image"]
async fn a_meeting_fires_the_post_meeting_routine_whose_minutes_alice_approves_into_her_notes() {
    let _serial = SERIAL.lock().await;
    let admin = client().await;
    let _policies = ChartAdmission::install(&[]);
    let operator = Operator::start(&[
        "--redis-url",
        &cluster_env("POD_REDIS_URL"),
        "--transcript-poll-seconds",
        "1",
        "--job-ttl-seconds",
        "30",
    ]);
    operator.ready().await;
    let ns = TestNamespace::new(&admin, "meeting").await;
    alice(&admin, &ns.name, "post-meeting", &[]).await;
    let runner = desk(&admin, &ns).await;

    // The routine: read-only, it proposes the minutes as a record card.
    let minutes =
        "# Stand-up\n\n- Ship the release on Friday (alice)\n- Fix the flaky test (bob)\n";
    let proposal = json!({
        "id": "minutes", "kind": "record", "title": "Minutes of the stand-up",
        "body": "Two action items.",
        "record": {"workspace": "notes", "path": "meetings/standup.md", "content": minutes},
    });
    let prompt = format!("say writing the minutes\nmcp-call vexa_cards propose {proposal}");
    let routine: Schedule = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule", "metadata": {"name": "post-meeting"},
        "spec": {
            "events": [{"type": "transcript.completed"}],
            "subject": "alice", "grant": "post-meeting",
            "template": {"runner": runner, "workspaces": [{"name": "notes", "mode": "ro"}],
                         "start": {"entrypoint": {"inline": prompt}}},
        },
    }))
    .unwrap();
    Api::<Schedule>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &routine)
        .await
        .unwrap();

    // The meeting: its Transcript (created by the integration: the admin here), then the
    // golden transcript replayed into its stream. Unique per run: Redis outlives namespaces.
    let meeting = format!("m{}", ns.name.rsplit('-').next().unwrap());
    let transcript: Transcript = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Transcript", "metadata": {"name": "standup"},
        "spec": {"meeting": {"meetingId": meeting, "sessionUid": meeting, "platform": "google_meet"},
                 "owner": "alice"},
    }))
    .unwrap();
    let transcripts = Api::<Transcript>::namespaced(admin.clone(), &ns.name);
    transcripts
        .create(&PostParams::default(), &transcript)
        .await
        .unwrap();
    meetings::replay(&meeting).await;
    wait_for("the Transcript completed", TIMEOUT, || async {
        let t = transcripts.get("standup").await.ok()?;
        (t.status?.phase == Some(TranscriptPhase::Completed)).then_some(())
    })
    .await;

    // One propose-only run of the routine, triggered by the transcription.
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    let run = wait_for("the post-meeting run", TIMEOUT, || async {
        runs(&dispatches, "post-meeting").await.into_iter().next()
    })
    .await;
    assert_eq!(run.spec.trigger, Trigger::Transcription);
    assert!(
        run.spec
            .workspaces
            .iter()
            .all(|w| w.mode == Some(WorkspaceMode::ReadOnly)),
        "an event run reads only: {:?}",
        run.spec.workspaces
    );
    let run_name = run.name_any();

    // Its card, owned by alice, undecided.
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    let card_name = format!("{run_name}-minutes");
    let card = wait_for("the minutes card", TIMEOUT, || async {
        cards.get(&card_name).await.ok()
    })
    .await;
    assert_eq!(card.spec.kind, CardKind::Record);
    assert_eq!(card.spec.owner, "alice");
    assert_eq!(
        card.spec.source_dispatch.as_deref(),
        Some(run_name.as_str())
    );
    assert!(card.spec.decision.is_none());
    let folder = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    assert!(
        !folder.join("meetings/standup.md").exists(),
        "nothing is written before a person decides"
    );

    // bob may patch Cards as far as RBAC goes; admission refuses him both ways.
    let bob = user_client(&admin, "bob").await;
    let bob_cards = Api::<Card>::namespaced(bob, &ns.name);
    let why = refused(
        bob_cards
            .patch(
                &card_name,
                &PatchParams::default(),
                &decision("approve", "bob"),
            )
            .await,
    );
    eprintln!("bob approving: {why}");
    let why = refused(
        bob_cards
            .patch(
                &card_name,
                &PatchParams::default(),
                &decision("approve", "alice"),
            )
            .await,
    );
    eprintln!("bob approving as alice: {why}");

    // alice approves: the minutes are committed, as her.
    let alice_cards = Api::<Card>::namespaced(user_client(&admin, "alice").await, &ns.name);
    let took = approve_until_applied(&alice_cards, &cards, &card_name).await;
    eprintln!("card approve → commit (Applied): {} ms", took.as_millis());
    assert_committed(
        &folder,
        &ns.name,
        &card_name,
        &run_name,
        "meetings/standup.md",
        minutes,
    );
    // A decision is final: alice cannot take it back.
    refused(
        alice_cards
            .patch(
                &card_name,
                &PatchParams::default(),
                &decision("reject", "alice"),
            )
            .await,
    );
    drop(operator);
}

/// Whether `d` is over.
fn is_over(d: &Dispatch) -> bool {
    matches!(
        vexa_evals::fixtures::phase(d).as_str(),
        "stopped" | "refused" | "destroyed"
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local cluster with Keycloak, SPIRE, Envoy and hack/mail, and the worker image: hack/test"]
async fn an_email_fires_a_propose_only_triage_whose_reply_leaves_once_alice_approves() {
    let _serial = SERIAL.lock().await;
    let kc = Keycloak::required();
    let admin = client().await;
    assert_no_operator_in_cluster(&admin).await;
    let _policies = ChartAdmission::install(&[]);
    let mail = MailServer::from_env();
    let home = TestNamespace::new(&admin, "triage-home").await;
    let ns = TestNamespace::new(&admin, "triage").await;
    let streams = StreamsApi::register(&admin, &ns.name).await;
    let config_dir = std::env::temp_dir().join(format!("vexa-eval-triage-{}", std::process::id()));
    let mail_config = mail.operator_config(&config_dir, &[("triage", "alice")]);
    let stack = Stack::start(
        &kc,
        &home.name,
        &streams,
        &[
            "--mail-config",
            mail_config.to_str().unwrap(),
            "--mail-poll-seconds",
            "1",
        ],
    )
    .await;
    streams.available(&admin).await;

    // alice: her Identity grants her triage routine the notes (read-only) and the gated send.
    alice(&admin, &ns.name, "triage", &["email-send"]).await;
    // The email tool brokers her triage mailbox for her Keycloak user (the operator makes it
    // from her Identity).
    let keycloak = kc.admin().await;
    let sub = wait_for("alice's Keycloak user", TIMEOUT, || async {
        keycloak.user_id(&kc.realm, "alice").await.ok().flatten()
    })
    .await;
    let email_tool = EmailTool::start(&mail, &kc.jwks_url(), &[("triage", &sub)]).await;
    let tool: Tool = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Tool", "metadata": {"name": "email-send"},
        "spec": {"toolName": "email.send", "scope": EMAIL_AUDIENCE, "grant": "gate",
                 "irreversible": true, "transport": "mcp",
                 "server": {"url": email_tool.mcp_url()}, "audience": EMAIL_AUDIENCE},
    }))
    .unwrap();
    Api::<Tool>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &tool)
        .await
        .unwrap();
    tools_ready(&admin, &ns.name, &["email-send"]).await;
    let runner = desk(&admin, &ns).await;

    // The triage routine: on mail whose subject starts `[triage]`, a reply and a note.
    let reply_subject = format!("Re: the numbers ({})", ns.name);
    let reply = json!({"to": [mail.address("outside")], "subject": reply_subject,
                       "body": "Thanks, the numbers are in. alice"});
    let note = "# Triage\n\n- outside@ asked about the numbers: answered.\n";
    let proposal = json!({
        "id": "triage-note", "kind": "record", "title": "Triage note",
        "record": {"workspace": "notes", "path": "triage/numbers.md", "content": note},
    });
    let prompt =
        format!("mcp-call email-send email.send {reply}\nmcp-call vexa_cards propose {proposal}");
    let routine: Schedule = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule", "metadata": {"name": "triage"},
        "spec": {
            "events": [{"type": "email.received", "mailbox": "triage",
                        "subjectPattern": "^\\[triage\\]"}],
            "subject": "alice", "grant": "triage",
            "template": {"runner": runner, "workspaces": [{"name": "notes", "mode": "ro"}],
                         "tools": ["email-send"],
                         "start": {"entrypoint": {"inline": prompt}}},
        },
    }))
    .unwrap();
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    schedules
        .create(&PostParams::default(), &routine)
        .await
        .unwrap();
    // The first look puts the cursor at the mailbox's end.
    wait_for("the triage cursor", TIMEOUT, || async {
        let s = schedules.get("triage").await.ok()?;
        (!s.status?.event_cursors.is_empty()).then_some(())
    })
    .await;

    // The email arrives.
    let delivered = Instant::now();
    mail.deliver(
        "outside",
        "triage",
        "[triage] the numbers",
        "Could you send me the Q3 numbers?",
    )
    .await;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    let run = wait_for("the triage run", TIMEOUT, || async {
        runs(&dispatches, "triage").await.into_iter().next()
    })
    .await;
    eprintln!(
        "email delivered → triage Dispatch: {} ms",
        delivered.elapsed().as_millis()
    );
    assert_eq!(run.spec.trigger, Trigger::Event);
    assert!(
        run.spec
            .workspaces
            .iter()
            .all(|w| w.mode == Some(WorkspaceMode::ReadOnly))
    );
    let run_name = run.name_any();

    // Two Cards for alice: the gated reply (from the gateway) and the note (from the stream).
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name);
    let (send, record) = wait_for("the triage's two cards", TIMEOUT, || async {
        let all = cards.list(&ListParams::default()).await.ok()?.items;
        let send = all.iter().find(|c| c.spec.kind == CardKind::Send)?.clone();
        let record = all
            .iter()
            .find(|c| c.spec.kind == CardKind::Record)?
            .clone();
        Some((send, record))
    })
    .await;
    for c in [&send, &record] {
        assert_eq!(c.spec.owner, "alice");
        assert_eq!(c.spec.source_dispatch.as_deref(), Some(run_name.as_str()));
        assert!(c.spec.decision.is_none());
    }
    assert_eq!(record.name_any(), format!("{run_name}-triage-note"));
    let proposed = send.spec.send.as_ref().expect("a send proposal");
    assert_eq!(proposed.tool, "email-send");
    assert_eq!(
        serde_json::from_str::<Value>(&proposed.arguments).unwrap(),
        reply
    );

    // Nothing leaves on its own, also once the run is over.
    wait_for("the triage run over", TIMEOUT, || async {
        let d = dispatches.get(&run_name).await.ok()?;
        is_over(&d).then_some(())
    })
    .await;
    let sent_folder = mail.mailbox("triage").sent_folder;
    assert_eq!(mail.count("outside", "INBOX", &reply_subject).await, 0);
    assert_eq!(mail.count("triage", &sent_folder, &reply_subject).await, 0);

    // bob cannot approve alice's cards.
    let bob_cards = Api::<Card>::namespaced(user_client(&admin, "bob").await, &ns.name);
    let why = refused(
        bob_cards
            .patch(
                &send.name_any(),
                &PatchParams::default(),
                &decision("approve", "bob"),
            )
            .await,
    );
    eprintln!("bob approving alice's send card: {why}");
    refused(
        bob_cards
            .patch(
                &send.name_any(),
                &PatchParams::default(),
                &decision("approve", "alice"),
            )
            .await,
    );

    // alice approves both: one message out, the note committed.
    let alice_cards = Api::<Card>::namespaced(user_client(&admin, "alice").await, &ns.name);
    let took = approve_until_applied(&alice_cards, &cards, &send.name_any()).await;
    eprintln!(
        "send card approve → sent (Applied): {} ms",
        took.as_millis()
    );
    let took = approve_until_applied(&alice_cards, &cards, &record.name_any()).await;
    eprintln!(
        "record card approve → commit (Applied): {} ms",
        took.as_millis()
    );
    assert_eq!(mail.count("outside", "INBOX", &reply_subject).await, 1);
    assert_eq!(mail.count("triage", &sent_folder, &reply_subject).await, 1);
    let folder = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    assert_committed(
        &folder,
        &ns.name,
        &record.name_any(),
        &run_name,
        "triage/numbers.md",
        note,
    );
    drop(email_tool);
    let Stack { operator, .. } = stack;
    operator.kill().await;
}
