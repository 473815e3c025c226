//! stream-bench: how fast a Dispatch speaks, end to end on the local cluster with the real
//! agent worker, the test agent and the cluster's Redis. Prints figures; asserts nothing.
//!
//! ```text
//! eval "$(hack/cluster env)"; hack/images/agent-worker
//! cargo run --release -p vexa-evals --bin stream-bench
//! ```
//!
//! 1. baseline: one XADD seen by a blocked XREAD on the same Redis (the floor of every latency);
//! 2. cold runs: Dispatch created → first event on `unit:<id>:out`, and → `turn-complete`,
//!    each run a new pod (p50/p95 over `--cold` runs, one at a time);
//! 3. warm turns: a turn sent on `unit:<id>:in` of a live pod → first event of its reply, and
//!    → `turn-complete` (p50/p95 over `--turns`);
//! 4. throughput: one turn whose agent replies with `--lines` lines, events per second as the
//!    client receives them.
//!
//! The operator runs in this process (leader election off), so no operator may be installed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vexa_crds::{Dispatch, WorkspaceMode, WorkspaceUse};
use vexa_evals::fixtures::{
    chat_dispatch, test_agent_runner, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env};
use vexa_policy::names::{dispatch_id, in_topic, out_topic};
use vexa_stream::follow::{EntryId, follow, last_id, send_stop, send_turn};
use vexa_stream::{Event, UnitEvent};

/// Benchmark of the unit streams against the local cluster.
#[derive(Parser, Debug)]
#[command(name = "stream-bench")]
struct Args {
    /// Cold runs (one new pod each).
    #[arg(long, default_value_t = 20)]
    cold: usize,
    /// Turns sent to one live pod.
    #[arg(long, default_value_t = 20)]
    turns: usize,
    /// Lines of the reply in the throughput turn (one event each).
    #[arg(long, default_value_t = 2000)]
    lines: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reads `topic` after `from` until `until` holds for an event; returns the time of the first
/// event, of the last, the number of events and the id of the last.
async fn read_until(
    redis: &redis::Client,
    topic: &str,
    from: EntryId,
    until: impl Fn(&UnitEvent) -> bool,
) -> anyhow::Result<(Instant, Instant, usize, EntryId)> {
    let stream = follow::<UnitEvent>(redis.clone(), topic.to_owned(), from);
    let mut stream = std::pin::pin!(stream);
    let mut first = None;
    let mut n = 0;
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(item) = stream.next().await {
            let (id, e) = item.map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = Instant::now();
            first.get_or_insert(now);
            n += 1;
            if until(&e) {
                return Ok::<_, anyhow::Error>((now, id));
            }
        }
        anyhow::bail!("the stream ended")
    })
    .await
    .with_context(|| format!("nothing conclusive on {topic} within 180 s"))??;
    Ok((first.unwrap_or(read.0), read.0, n, read.1))
}

fn turn_complete(turn: String) -> impl Fn(&UnitEvent) -> bool {
    move |e| e.turn_id.to_string() == turn && matches!(e.event, Event::TurnComplete {})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis = redis::Client::open(cluster_env("REDIS_URL"))?;
    let pod_redis = cluster_env("POD_REDIS_URL");
    let operator = Operator::start(&["--job-ttl-seconds", "30", "--redis-url", &pod_redis]);
    operator.ready().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "stream-bench").await;
    let runner = format!("bench-{}", ns.name);
    test_agent_runner(
        &client,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 60}}),
    )
    .await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "bench", "bench", "ro").await;
    workspace_ready(&client, &ns.name, "bench").await;
    let dispatches: Api<Dispatch> = Api::namespaced(client.clone(), &ns.name);
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let dispatch = |name: &str, prompt: &str| {
        let mut d = chat_dispatch(name, &runner, prompt);
        d.spec.workspaces = vec![WorkspaceUse {
            name: "bench".into(),
            mode: Some(WorkspaceMode::ReadOnly),
        }];
        d
    };

    // 1. Baseline: XADD → a blocked reader sees it.
    let mut base = Vec::new();
    let scratch = format!("bench:{}:baseline", ns.name);
    for i in 0..50 {
        let from = last_id(&mut conn, &scratch).await?.unwrap_or(EntryId::ZERO);
        let reader = {
            let redis = redis.clone();
            let scratch = scratch.clone();
            tokio::spawn(async move { read_until(&redis, &scratch, from, |_| true).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        let event = UnitEvent::new(
            "t0".parse().unwrap(),
            Event::Note {
                note: format!("ping {i}"),
            },
        );
        redis::cmd("XADD")
            .arg(&scratch)
            .arg("*")
            .arg("event")
            .arg(event.to_json())
            .query_async::<String>(&mut conn)
            .await?;
        let (seen, ..) = reader.await??;
        base.push(ms(seen - sent));
    }
    redis::cmd("DEL")
        .arg(&scratch)
        .query_async::<i64>(&mut conn)
        .await?;

    // 2. Cold runs, one at a time.
    let (mut first, mut complete) = (Vec::new(), Vec::new());
    for i in 0..args.cold {
        let name = format!("cold-{i:02}");
        let out = out_topic(&dispatch_id(&ns.name, &name));
        let created = Instant::now();
        dispatches
            .create(
                &PostParams::default(),
                &dispatch(&name, &format!("say hello {i}")),
            )
            .await?;
        let (f, c, ..) =
            read_until(&redis, &out, EntryId::ZERO, turn_complete("t0".into())).await?;
        first.push(ms(f - created));
        complete.push(ms(c - created));
        send_stop(&mut conn, &in_topic(&dispatch_id(&ns.name, &name))).await?;
    }

    // 3. and 4. Warm turns and throughput on one live pod.
    let name = "warm";
    let (out, input) = (
        out_topic(&dispatch_id(&ns.name, name)),
        in_topic(&dispatch_id(&ns.name, name)),
    );
    dispatches
        .create(&PostParams::default(), &dispatch(name, "say ready"))
        .await?;
    let (_, _, _, mut last) =
        read_until(&redis, &out, EntryId::ZERO, turn_complete("t0".into())).await?;
    let (mut warm_first, mut warm_complete) = (Vec::new(), Vec::new());
    for t in 1..=args.turns {
        let sent = Instant::now();
        send_turn(&mut conn, &input, "say pong").await?;
        let (f, c, _, id) = read_until(&redis, &out, last, turn_complete(format!("t{t}"))).await?;
        warm_first.push(ms(f - sent));
        warm_complete.push(ms(c - sent));
        last = id;
    }
    let script: String = (0..args.lines).map(|k| format!("say line {k}\n")).collect();
    let sent = Instant::now();
    send_turn(&mut conn, &input, &script).await?;
    let (f, c, n, _) = read_until(
        &redis,
        &out,
        last,
        turn_complete(format!("t{}", args.turns + 1)),
    )
    .await?;
    // From the turn sent to its turn-complete: the agent's run, parsing, publishing and reading
    // together; and the client's read rate once events flow.
    let end_to_end = n as f64 / (c - sent).as_secs_f64().max(1e-6);
    let rate = n as f64 / (c - f).as_secs_f64().max(1e-6);
    send_stop(&mut conn, &input).await?;
    drop(operator);

    let b50 = pct(&mut base, 0.5);
    println!("stream-bench (real worker + test agent, cluster Redis)");
    println!(
        "baseline  XADD -> blocked XREAD, 50 times:          p50 {:>7.2} ms  p95 {:>7.2} ms",
        b50,
        pct(&mut base, 0.95)
    );
    println!(
        "cold      Dispatch created -> first event, {:>2} runs: p50 {:>7.0} ms  p95 {:>7.0} ms",
        args.cold,
        pct(&mut first, 0.5),
        pct(&mut first, 0.95)
    );
    println!(
        "          Dispatch created -> turn-complete:         p50 {:>7.0} ms  p95 {:>7.0} ms",
        pct(&mut complete, 0.5),
        pct(&mut complete, 0.95)
    );
    let w50 = pct(&mut warm_first, 0.5);
    println!(
        "warm      turn sent -> first reply event, {:>2} turns: p50 {:>7.1} ms  p95 {:>7.1} ms  ({:.0} x baseline)",
        args.turns,
        w50,
        pct(&mut warm_first, 0.95),
        w50 / b50.max(1e-6)
    );
    println!(
        "          turn sent -> turn-complete:               p50 {:>7.1} ms  p95 {:>7.1} ms",
        pct(&mut warm_complete, 0.5),
        pct(&mut warm_complete, 0.95)
    );
    println!(
        "throughput one turn of {} reply lines: {n} events; turn sent -> turn-complete {:.0} ms = {end_to_end:.0} events/s end to end; first -> last event {:.0} ms = {rate:.0} events/s at the client",
        args.lines,
        ms(c - sent),
        ms(c - f)
    );
    Ok(())
}
