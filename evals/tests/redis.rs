//! Redis per dispatch on the real cluster (issue "close the boundaries", evals 2 and 5).
//!
//! Eval 2: from inside an agent's process (the test agent speaking raw RESP to the address pods
//! reach Redis at), reading another dispatch's stream, adding a turn to it and FLUSHALL all
//! fail: the agent's container holds no Redis credential at all, so it cannot even log in;
//! the worker's credential files are not in its container; its own stream works through the
//! worker. The dispatch's own credential (its Secret, read here as the admin) reaches only its
//! own streams, and is gone once the run is over, its streams left to expire.
//!
//! Eval 5: an agent printing one 100 MB line and 100,000 events: the worker survives (its peak
//! memory is measured), the stream stays capped, a dispatch running meanwhile is unaffected.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    chat_dispatch, describe, node_ip, stop_reason, test_agent_runner, wait_dispatch, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_policy::names::{dispatch_id, in_topic, out_topic};
use vexa_stream::follow::{EntryId, follow};
use vexa_stream::{Event, UnitEvent};

const TIMEOUT: Duration = Duration::from_secs(240);

fn operator() -> &'static Operator {
    static OPERATOR: std::sync::OnceLock<Operator> = std::sync::OnceLock::new();
    OPERATOR.get_or_init(|| {
        let redis = cluster_env("POD_REDIS_URL");
        Operator::start(&["--job-ttl-seconds", "30", "--redis-url", &redis])
    })
}

fn admin() -> redis::Client {
    redis::Client::open(cluster_env("REDIS_URL")).unwrap()
}

/// The reply of the first `done` on `name`'s stream, and every note before it.
async fn first_done(ns: &str, name: &str) -> (String, Vec<String>) {
    let topic = out_topic(&dispatch_id(ns, name));
    let stream = follow::<UnitEvent>(admin(), topic.clone(), EntryId::ZERO);
    let mut stream = std::pin::pin!(stream);
    let mut notes = Vec::new();
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(item) = stream.next().await {
            let (_, e) = item.expect("a well-formed unit event");
            match e.event {
                Event::Done { reply, .. } => return reply,
                Event::Note { note } => notes.push(note),
                _ => {}
            }
        }
        String::new()
    })
    .await;
    (
        found.unwrap_or_else(|_| panic!("no done event on {topic} within {TIMEOUT:?}")),
        notes,
    )
}

async fn query<T: redis::FromRedisValue>(client: &redis::Client, cmd: &redis::Cmd) -> T {
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

/// Namespace, runner and one rw workspace per name, ready.
async fn tenant(prefix: &str, workspaces: &[&str], idle: u32) -> (TestNamespace, String) {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let runner = format!("redis-{}", ns.name);
    test_agent_runner(
        &client,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": idle}}),
    )
    .await;
    workspace_volume(&client, &ns.name).await;
    for w in workspaces {
        workspace(&client, &ns.name, w, &format!("alice/{w}"), "rw").await;
    }
    for w in workspaces {
        workspace_ready(&client, &ns.name, w).await;
    }
    (ns, runner)
}

fn dispatch_on(name: &str, runner: &str, workspace: &str, prompt: &str) -> Dispatch {
    let mut d = chat_dispatch(name, runner, prompt);
    d.spec.workspaces[0].name = workspace.into();
    d
}

#[tokio::test]
#[ignore = "needs a cluster: hack/cluster up, the worker image, and KUBECONFIG from hack/cluster env"]
async fn an_agent_cannot_reach_another_dispatch_or_redis_itself() {
    let client = client().await;
    operator().ready().await;
    let (ns, runner) = tenant("redis-acl", &["victim-notes", "probe-notes"], 5).await;
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);
    dispatches
        .create(
            &PostParams::default(),
            &dispatch_on("victim", &runner, "victim-notes", "say the victim's secret"),
        )
        .await
        .unwrap();
    let (victim_reply, _) = first_done(&ns.name, "victim").await;
    assert!(victim_reply.contains("the victim's secret"));
    let victim = dispatch_id(&ns.name, "victim");
    let (victim_out, victim_in) = (out_topic(&victim), in_topic(&victim));
    // The victim's run is over (idle) before its stream is counted: its own last events are
    // not the probe's doing.
    wait_dispatch(&dispatches, "victim", "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    let redis = admin();
    let before: usize = query(&redis, redis::cmd("XLEN").arg(&victim_out)).await;

    // What a prompt-injected agent tries, one line each: Redis at the address pods use.
    let addr = format!("{}:6379", node_ip());
    let prompt = [
        format!("redis {addr} PING"),
        format!("redis {addr} XRANGE {victim_out} - +"),
        format!("redis {addr} XADD {victim_in} * turn {{\"prompt\":\"obey\"}}"),
        format!("redis {addr} FLUSHALL"),
        format!("redis {addr} AUTH default x"),
        "read /var/run/vexa/dispatch/redis-password".into(),
        "grep redis-password /proc/1/environ".into(),
        "env REDIS_URL".into(),
        "say the probe still answers".into(),
        // Alive a while longer: its credential is tried from outside meanwhile.
        "sleep 10".into(),
    ]
    .join("\n");
    dispatches
        .create(
            &PostParams::default(),
            &dispatch_on("probe", &runner, "probe-notes", &prompt),
        )
        .await
        .unwrap();
    // Its own credential, read as the admin while it runs: only its own streams.
    let secret = vexa_evals::wait_for("the probe's Secret", TIMEOUT, || async {
        Api::<Secret>::namespaced(client.clone(), &ns.name)
            .get_opt("probe-credentials")
            .await
            .unwrap()
    })
    .await;
    let data = secret.data.unwrap();
    let user = String::from_utf8(data["redis-username"].0.clone()).unwrap();
    let password = String::from_utf8(data["redis-password"].0.clone()).unwrap();

    // The probe's own credential, used from here while its run lives (its user exists before
    // its Secret): its streams only.
    let own = vexa_stream::acl::client_as(&cluster_env("POD_REDIS_URL"), &user, &password).unwrap();
    let mut conn = own.get_multiplexed_async_connection().await.unwrap();
    for cmd in [
        redis::cmd("XRANGE")
            .arg(&victim_out)
            .arg("-")
            .arg("+")
            .clone(),
        redis::cmd("XADD")
            .arg(&victim_in)
            .arg("*")
            .arg("turn")
            .arg("{\"prompt\":\"obey\"}")
            .clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
    ] {
        let e = cmd
            .query_async::<redis::Value>(&mut conn)
            .await
            .expect_err("allowed with the probe's credential");
        // The client names the code NoPerm.
        assert!(e.to_string().to_ascii_uppercase().contains("NOPERM"), "{e}");
    }

    let (reply, _) = first_done(&ns.name, "probe").await;
    println!("the probe's reply:\n{reply}");
    for command in ["PING", "XRANGE", "XADD", "FLUSHALL"] {
        let line = format!("Redis {addr} {command}: -NOAUTH");
        assert!(reply.contains(&line), "{line:?} not in the reply:\n{reply}");
    }
    assert!(
        reply.contains(&format!("Redis {addr} AUTH: -WRONGPASS")),
        "{reply}"
    );
    for line in [
        "Could not read /var/run/vexa/dispatch/redis-password",
        "/proc/1/environ does not contain redis-password.",
        "REDIS_URL is unset",
        "the probe still answers",
    ] {
        assert!(reply.contains(line), "{line:?} not in the reply:\n{reply}");
    }
    // Nothing of the victim's changed, and Redis still holds everyone's data.
    let after: usize = query(&redis, redis::cmd("XLEN").arg(&victim_out)).await;
    assert_eq!(after, before);
    let turns: usize = query(&redis, redis::cmd("XLEN").arg(&victim_in)).await;
    assert_eq!(turns, 0, "a turn reached the victim");

    // Over: its user is gone, its streams expire.
    let done = wait_dispatch(&dispatches, "probe", "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
    let users: Vec<String> = query(&redis, redis::cmd("ACL").arg("USERS")).await;
    assert!(!users.contains(&user), "{user} outlived its dispatch");
    let ttl: i64 = query(
        &redis,
        redis::cmd("TTL").arg(out_topic(&dispatch_id(&ns.name, "probe"))),
    )
    .await;
    assert!(ttl > 0, "the probe's stream has no retention (TTL {ttl})");
}

/// The peak memory of the pod's worker container (its cgroup's high-water mark).
async fn worker_peak_bytes(ns: &str, dispatch: &str) -> Option<u64> {
    let pods = Api::<Pod>::namespaced(client().await, ns)
        .list(&ListParams::default().labels(&format!(
            "vexa.ai/dispatch={}",
            vexa_policy::job_name(dispatch)
        )))
        .await
        .ok()?;
    let status = pods.items.first()?.status.clone()?;
    let id = status
        .init_container_statuses?
        .into_iter()
        .find(|c| c.name == "worker")?
        .container_id?;
    let id = id.rsplit("://").next()?.to_owned();
    let found = std::process::Command::new("find")
        .args([
            "/sys/fs/cgroup/memory/kubepods",
            "-maxdepth",
            "4",
            "-type",
            "d",
            "-name",
            &id,
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&found.stdout)
        .lines()
        .next()?
        .to_owned();
    let text = std::fs::read_to_string(format!("{dir}/memory.max_usage_in_bytes")).ok()?;
    text.trim().parse().ok()
}

#[tokio::test]
#[ignore = "needs a cluster: hack/cluster up, the worker image, and KUBECONFIG from hack/cluster env"]
async fn a_flood_of_output_is_capped_and_spares_the_others() {
    let client = client().await;
    operator().ready().await;
    let (ns, runner) = tenant("redis-flood", &["flood-notes", "calm-notes"], 30).await;
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    dispatches
        .create(
            &PostParams::default(),
            &dispatch_on(
                "flood",
                &runner,
                "flood-notes",
                "events 100000\nbigline 100",
            ),
        )
        .await
        .unwrap();
    // Meanwhile another dispatch runs as usual.
    dispatches
        .create(
            &PostParams::default(),
            &dispatch_on("calm", &runner, "calm-notes", "say calm and well"),
        )
        .await
        .unwrap();
    let (calm, _) = first_done(&ns.name, "calm").await;
    assert!(calm.contains("calm and well"), "{calm}");
    println!("the other dispatch replied after {:?}", started.elapsed());

    let (reply, notes) = first_done(&ns.name, "flood").await;
    println!("the flood's turn took {:?}", started.elapsed());
    assert!(reply.contains("Streamed 100000 events."), "{reply}");
    assert!(reply.contains("Printed a line of 100 MB."), "{reply}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("an output line of the agent was cut: 104857600 bytes")),
        "no note of the cut line in {notes:?}"
    );
    let peak = worker_peak_bytes(&ns.name, "flood").await;
    println!(
        "worker peak memory (cgroup high-water mark): {:?} MiB",
        peak.map(|b| b / (1 << 20))
    );
    let redis = admin();
    let out = out_topic(&dispatch_id(&ns.name, "flood"));
    let len: usize = query(&redis, redis::cmd("XLEN").arg(&out)).await;
    println!("stream length after 100,000 events: {len}");
    assert!(
        (10_000..=10_200).contains(&len),
        "{len} entries: not capped near 10000"
    );
    // The worker survived: the run ends as idle, not OOM-killed or failed.
    let done = wait_dispatch(&dispatches, "flood", "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    assert_eq!(stop_reason(&done), "idle_timeout", "{}", describe(&done));
}
