//! Schedules (issue 12, evals 1–3), on a real cluster: a Schedule fires unattended and each run
//! commits into the workspace; after the operator was down, the catch-up policy fires what its
//! docs say and records the rest; the overlap policies `Forbid`, `BufferOne` and `CancelOther`
//! against a long run; a Schedule whose grant does not cover its template creates nothing; and
//! a tenant cannot make a Schedule run as someone else.
//!
//! The cadence is in seconds: the operator runs with the test-only `--schedule-seconds-field`,
//! which lets the annotation `vexa.ai/test-cron-seconds` (a six-field cron) replace the
//! schedule; the chart cannot set that flag. The operator runs in this process.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vexa_core::names::{SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION};
use vexa_crds::{Dispatch, Identity, Schedule};
use vexa_evals::admission::ChartAdmission;
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, claim_folder, describe, fake_runner, git, phase, stop_reason,
    test_agent_runner, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::users::{grant_role, user_client};
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

const TIMEOUT: Duration = Duration::from_secs(120);
use vexa_core::names::TEST_CRON_SECONDS_ANNOTATION as SECONDS_CRON;

fn start_operator() -> Operator {
    let redis = cluster_env("POD_REDIS_URL");
    Operator::start(&[
        "--job-ttl-seconds",
        "30",
        "--redis-url",
        &redis,
        "--schedule-seconds-field",
    ])
}

/// A namespace with alice's workspace `notes`, a runner, and alice's Identity granting each of
/// `grants` (schedule name, mode of `notes`) to the schedule of that name.
async fn world(
    admin: &Client,
    prefix: &str,
    fake: bool,
    grants: &[(&str, &str)],
) -> (TestNamespace, String) {
    let ns = TestNamespace::new(admin, prefix).await;
    let runner = format!("runner-{}", ns.name);
    if fake {
        fake_runner(admin, &ns, &runner, json!({})).await;
    } else {
        test_agent_runner(
            admin,
            &ns,
            &runner,
            json!({"defaults": {"idleTimeoutSeconds": 1}}),
        )
        .await;
    }
    workspace_volume(admin, &ns.name).await;
    workspace(admin, &ns.name, "notes", "alice/notes", "rw").await;
    let grants: Vec<Value> = grants
        .iter()
        .map(|(name, mode)| {
            json!({"name": name, "launcher": format!("schedule:{}/{name}", ns.name),
                   "workspaces": [{"name": "notes", "mode": mode}]})
        })
        .collect();
    let identity: Identity = serde_json::from_value(json!({
        "apiVersion": "vexa.ai/v1", "kind": "Identity", "metadata": {"name": "alice"},
        "spec": {"subject": "alice", "grants": grants},
    }))
    .unwrap();
    Api::<Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    workspace_ready(admin, &ns.name, "notes").await;
    (ns, runner)
}

/// A Schedule `name` for alice under the grant of the same name, every `every` seconds (test
/// mode), running `prompt` with `notes` in `mode`; `extra` is merged into the spec.
fn schedule(
    name: &str,
    runner: &str,
    every: u32,
    mode: &str,
    prompt: &str,
    extra: Value,
) -> Schedule {
    let mut doc = json!({
        "apiVersion": "vexa.ai/v1", "kind": "Schedule",
        "metadata": {"name": name, "annotations": {SECONDS_CRON: format!("*/{every} * * * * *")}},
        "spec": {
            // The cron the annotation replaces in test mode (never due within a test).
            "schedule": "0 0 1 1 *",
            "subject": "alice", "grant": name,
            "template": {
                "runner": runner,
                "workspaces": [{"name": "notes", "mode": mode}],
                "start": {"entrypoint": {"inline": prompt}},
            },
        },
    });
    vexa_evals::fixtures::merge(&mut doc["spec"], extra);
    serde_json::from_value(doc).expect("a Schedule")
}

/// This schedule's Dispatches, oldest nominal time first.
async fn runs(api: &Api<Dispatch>, schedule: &str) -> Vec<Dispatch> {
    let mut all = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .unwrap()
        .items;
    all.sort_by_key(|d| d.annotations().get(SCHEDULED_TIME_ANNOTATION).cloned());
    all
}

fn is_over(d: &Dispatch) -> bool {
    matches!(phase(d).as_str(), "stopped" | "refused" | "destroyed")
}

fn status(s: &Schedule) -> vexa_crds::ScheduleStatus {
    s.status.clone().unwrap_or_default()
}

fn condition(s: &Schedule, kind: &str) -> Option<(String, String, String)> {
    status(s)
        .conditions
        .into_iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status, c.reason, c.message))
}

fn skipped_reasons(s: &Schedule) -> BTreeSet<String> {
    status(s).missed.into_iter().map(|m| m.reason).collect()
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_schedule_fires_unattended_commits_and_catches_up_after_downtime() {
    let admin = client().await;
    let operator = start_operator();
    operator.ready().await;
    let (ns, runner) = world(&admin, "sched", false, &[("tick", "rw")]).await;
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    schedules
        .create(
            &PostParams::default(),
            &schedule(
                "tick",
                &runner,
                10,
                "rw",
                "append ticks.txt tick\nsay ticked",
                json!({}),
            ),
        )
        .await
        .unwrap();

    // Three runs, unattended, each ending completed with a commit.
    let done = wait_for("three completed runs of `tick`", TIMEOUT, || async {
        let all = runs(&dispatches, "tick").await;
        let completed: Vec<Dispatch> = all
            .into_iter()
            .filter(|d| is_over(d) && stop_reason(d) != "-")
            .collect();
        (completed.len() >= 3).then_some(completed)
    })
    .await;
    for d in &done {
        // A worker ends a run that got no further turn as idle: the normal end of a routine.
        assert!(
            ["completed", "idle_timeout"].contains(&stop_reason(d).as_str()),
            "{}",
            describe(d)
        );
        assert_eq!(
            d.spec.identity.launcher,
            format!("schedule:{}/tick", ns.name)
        );
        assert_eq!(d.spec.trigger, vexa_crds::Trigger::Scheduled);
        let nominal = d.annotations()[SCHEDULED_TIME_ANNOTATION].clone();
        let t: k8s_openapi::jiff::Timestamp = nominal.parse().unwrap();
        assert_eq!(
            t.as_second() % 10,
            0,
            "a nominal time on the cadence: {nominal}"
        );
        assert_eq!(d.name_any(), format!("tick-{}", t.as_second()));
    }
    let folder = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    let log = git(&folder, &["log", "--format=%s", "--", "ticks.txt"]);
    assert!(log.lines().count() >= 3, "a commit per run: {log}");
    let ticks = std::fs::read_to_string(folder.join("ticks.txt")).unwrap();
    assert!(ticks.matches("tick").count() >= 3, "{ticks}");
    let s = schedules.get("tick").await.unwrap();
    let st = status(&s);
    assert!(st.recent.len() >= 3, "recent runs: {:?}", st.recent);
    let last = st.last_schedule_time.clone().expect("lastScheduleTime").0;
    let next = st.next_schedule_time.clone().expect("nextScheduleTime").0;
    assert!(
        next > last && next.as_second() % 10 == 0,
        "next {next} after last {last}"
    );
    assert_eq!(condition(&s, "Valid").unwrap().0, "True");
    assert_eq!(condition(&s, "Authorized").unwrap().0, "True");

    // The CLI shows the same.
    let out = vexa_evals::kubectl_vexa(&ns.name, &["schedule", "history", "tick"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&done[0].name_any()), "{text}");

    // The operator is down for 35 s: three or four nominal times pass. Catch-up `Latest`
    // (the default, no window) fires only the newest; the others are `Superseded`.
    wait_for("no active run", TIMEOUT, || async {
        runs(&dispatches, "tick")
            .await
            .iter()
            .all(is_over)
            .then_some(())
    })
    .await;
    let before: BTreeSet<String> = runs(&dispatches, "tick")
        .await
        .iter()
        .map(|d| d.name_any())
        .collect();
    operator.kill().await;
    let down_from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(35)).await;
    // Restart between two nominal times (at :x4), so the times before it are the missed ones
    // and the next is clearly after it.
    while k8s_openapi::jiff::Timestamp::now().as_second() % 10 != 4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let operator = start_operator();
    operator.ready().await;
    let up_at = k8s_openapi::jiff::Timestamp::now();
    let caught = wait_for("the catch-up run", TIMEOUT, || async {
        let new: Vec<Dispatch> = runs(&dispatches, "tick")
            .await
            .into_iter()
            .filter(|d| !before.contains(&d.name_any()))
            .collect();
        (!new.is_empty()).then_some(new)
    })
    .await;
    // Only what the restart fired: later cron runs carry nominal times after the restart.
    let catch_up: Vec<&Dispatch> = caught
        .iter()
        .filter(|d| {
            let t: k8s_openapi::jiff::Timestamp =
                d.annotations()[SCHEDULED_TIME_ANNOTATION].parse().unwrap();
            t < up_at
        })
        .collect();
    let names: Vec<String> = caught.iter().map(|d| d.name_any()).collect();
    assert_eq!(
        catch_up.len(),
        1,
        "Latest fires one missed run (down {down_from}, up {up_at}): new runs {names:?}, status {:?}",
        status(&schedules.get("tick").await.unwrap())
    );
    let s = wait_for("the missed runs recorded", TIMEOUT, || async {
        let s = schedules.get("tick").await.unwrap();
        status(&s)
            .missed
            .iter()
            .any(|m| m.reason == "Superseded")
            .then_some(s)
    })
    .await;
    let superseded: Vec<_> = status(&s)
        .missed
        .into_iter()
        .filter(|m| m.reason == "Superseded" && m.scheduled_time.0 > down_from)
        .collect();
    assert!(
        (2..=3).contains(&superseded.len()),
        "35 s of 10 s cadence minus the one fired: {superseded:?}"
    );
    drop(operator);
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn overlap_policies_against_a_long_run() {
    let admin = client().await;
    let operator = start_operator();
    operator.ready().await;
    let (ns, runner) = world(
        &admin,
        "overlap",
        true,
        &[
            ("forbid", "ro"),
            ("buffer-one", "ro"),
            ("cancel-other", "ro"),
        ],
    )
    .await;
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    for (name, policy) in [
        ("forbid", "Forbid"),
        ("buffer-one", "BufferOne"),
        ("cancel-other", "CancelOther"),
    ] {
        let s = schedule(
            name,
            &runner,
            5,
            "ro",
            "sleep 600",
            json!({"concurrencyPolicy": policy}),
        );
        schedules.create(&PostParams::default(), &s).await.unwrap();
    }

    // Forbid: one run, and the times due while it runs are skipped `Overlap`.
    let s = wait_for("forbid skips an overlapping run", TIMEOUT, || async {
        let s = schedules.get("forbid").await.unwrap();
        skipped_reasons(&s).contains("Overlap").then_some(s)
    })
    .await;
    assert_eq!(
        runs(&dispatches, "forbid").await.len(),
        1,
        "{:?}",
        status(&s)
    );

    // BufferOne: one run, one waiting, the rest `Overlap`; when the run ends the waiting one
    // starts, under the name of its own nominal time.
    let waiting = wait_for(
        "buffer-one buffers one and skips the next",
        TIMEOUT,
        || async {
            let s = schedules.get("buffer-one").await.unwrap();
            let st = status(&s);
            (st.buffered.len() == 1 && skipped_reasons(&s).contains("Overlap"))
                .then(|| st.buffered[0].name.clone())
        },
    )
    .await;
    let first = runs(&dispatches, "buffer-one").await;
    assert_eq!(first.len(), 1, "one run while it is active");
    dispatches
        .patch(
            &first[0].name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"stop": true}})),
        )
        .await
        .unwrap();
    wait_for("the buffered run starts", TIMEOUT, || async {
        runs(&dispatches, "buffer-one")
            .await
            .iter()
            .any(|d| d.name_any() == waiting)
            .then_some(())
    })
    .await;

    // CancelOther: at the next nominal time the active run is asked to stop, and the new one
    // starts once it has ended.
    let runs_now = wait_for("cancel-other starts a second run", TIMEOUT, || async {
        let all = runs(&dispatches, "cancel-other").await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    let earlier = &runs_now[0];
    assert_eq!(
        earlier.spec.stop,
        Some(true),
        "the earlier run was asked to stop"
    );
    let earlier = dispatches.get(&earlier.name_any()).await.unwrap();
    assert!(
        is_over(&earlier),
        "it ended before the next started: {}",
        describe(&earlier)
    );
    assert_eq!(stop_reason(&earlier), "stopped");
    drop(operator);
}

#[tokio::test]
#[ignore = "needs the hack/ cluster"]
async fn a_schedule_outside_its_grant_creates_nothing_and_a_tenant_cannot_schedule_as_another() {
    let admin = client().await;
    let operator = start_operator();
    operator.ready().await;
    let _policies = ChartAdmission::install(&[]);
    let (ns, runner) = world(&admin, "sched-grant", true, &[("reader", "ro")]).await;
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);

    // rw where the grant says ro.
    schedules
        .create(
            &PostParams::default(),
            &schedule("reader", &runner, 5, "rw", "exit 0", json!({})),
        )
        .await
        .unwrap();
    let s = wait_for("Authorized=False", TIMEOUT, || async {
        let s = schedules.get("reader").await.unwrap();
        condition(&s, "Authorized")
            .filter(|c| c.0 == "False")
            .map(|c| (s, c))
    })
    .await;
    let (s, (_, reason, message)) = s;
    assert_eq!(reason, "GrantTooNarrow", "{message}");
    assert!(message.contains("rw"), "{message}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(runs(&dispatches, "reader").await.is_empty(), "no Dispatch");
    let s2 = schedules.get("reader").await.unwrap();
    assert!(
        skipped_reasons(&s2).contains("Unauthorized"),
        "{:?}",
        status(&s2)
    );
    drop(s);

    // bob may manage Schedules in the namespace (RBAC), but not run one as alice: admission
    // refuses, whichever grant he names. His own subject passes (dry run).
    grant_role(
        &admin,
        &ns.name,
        "bob",
        "schedules",
        json!([{"apiGroups": ["vexa.ai"], "resources": ["schedules"],
                "verbs": ["create", "get", "list", "update", "patch"]}]),
    )
    .await;
    let bob = user_client(&admin, "bob").await;
    let as_bob = Api::<Schedule>::namespaced(bob, &ns.name);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut own = schedule("bobs", &runner, 5, "ro", "exit 0", json!({}));
    own.spec.subject = "bob".into();
    wait_for("bob's RBAC in effect", TIMEOUT, || async {
        as_bob.create(&dry_run, &own).await.ok().map(drop)
    })
    .await;
    let mut hijack = schedule("reader-2", &runner, 5, "ro", "exit 0", json!({}));
    hijack.spec.grant = "reader".into();
    let refused = as_bob
        .create(&PostParams::default(), &hijack)
        .await
        .expect_err("bob may not schedule runs for alice");
    let text = refused.to_string();
    assert!(text.contains("alice"), "refused naming the subject: {text}");
    // Nor take over alice's existing Schedule.
    let taken = as_bob
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"start": {"entrypoint": {"inline": "exit 1"}}}}}),
            ),
        )
        .await
        .expect_err("bob may not change alice's Schedule");
    assert!(taken.to_string().contains("alice"), "{taken}");
    drop(operator);
}
