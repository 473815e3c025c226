//! One trace from `kubectl apply` to the agent's first commit, in a real trace backend: the
//! operator exports OTLP to Jaeger (`hack/build-tools jaeger`, on loopback), and the eval
//! finds, through Jaeger's query API, each run's spans in order under one root, the
//! operator's reconciles of the live run inside it, and nothing the agent was told.
//!
//! The attacker's side: a Dispatch whose creator wrote a hostile `vexa.ai/traceparent`
//! keeps a trace of its own; one marked "not sampled" exports nothing; a prompt never
//! reaches the backend.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use vexa_core::trace::{ANNOTATION, ROOT_SPAN, TraceParent, run_context};
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    chat_dispatch, describe, free_port, stop_reason, test_agent_runner, wait_dispatch, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::jaeger::{FoundSpan, Jaeger};
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, http_get, wait_for};
use vexa_operator::controllers::dispatch::trace::STEPS;
use vexa_operator::runtime::telemetry::{Settings, Telemetry};

const TIMEOUT: Duration = Duration::from_secs(180);
/// In the first prompt: it must reach the agent and never the trace backend.
const MARKER: &str = "PROMPT-MARKER-7f3a";
const CALLER: &str = "00-5a1e0c0ffee0000000000000000abcde-1234567890abcdef-01";

/// Installs the exporter (towards `jaeger`) and the `tracing` layer the operator's binary
/// installs, so the in-process operator exports as the real one does.
fn telemetry(jaeger: &Jaeger) -> Telemetry {
    let telemetry = Telemetry::install(&Settings {
        endpoint: jaeger.otlp.clone(),
    })
    .expect("the OTLP exporter");
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")));
    tracing_subscriber::registry()
        .with(logs)
        .with(telemetry.layer().with_filter(EnvFilter::new(
            vexa_operator::runtime::telemetry::SPAN_FILTER,
        )))
        .try_init()
        .expect("the eval's subscriber is the first");
    telemetry
}

async fn finished(api: &Api<Dispatch>, name: &str) -> Dispatch {
    wait_dispatch(api, name, "a stop reason", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await
}

/// The trace's spans once its root (exported last, when the run ended) is there.
async fn trace_with_root(jaeger: &Jaeger, trace_id: &str) -> Vec<FoundSpan> {
    wait_for(
        &format!("trace {trace_id} with its root span in Jaeger"),
        Duration::from_secs(60),
        || async {
            let spans = jaeger.trace(trace_id).await;
            spans.iter().any(|s| s.name == ROOT_SPAN).then_some(spans)
        },
    )
    .await
}

fn uid_trace(d: &Dispatch) -> String {
    run_context(&d.uid().unwrap(), None).unwrap().0.trace_hex()
}

// The exporter's channel runs on this runtime while a flush blocks a thread: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the hack/ cluster, the agent worker image and Jaeger (hack/build-tools jaeger)"]
async fn one_trace_per_run_from_creation_to_commit_with_nothing_the_agent_was_told() {
    let jaeger = Jaeger::start().await;
    let telemetry = telemetry(&jaeger);
    let redis = cluster_env("POD_REDIS_URL");
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("--http-addr={addr}");
    let operator = Operator::start(&["--job-ttl-seconds", "30", "--redis-url", &redis, &http]);
    operator.ready().await;
    let client: Client = client().await;
    let ns = TestNamespace::new(&client, "tracing").await;
    let runner = format!("test-agent-{}", ns.name);
    test_agent_runner(&client, &ns, &runner, json!({})).await;
    workspace_volume(&client, &ns.name).await;
    workspace(&client, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&client, &ns.name, "alice-notes").await;
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);

    // Four runs of the same workspace (they queue for it): one with no trace context (the
    // operator starts the trace), one joining a caller's trace, one with a hostile
    // annotation, one whose caller said "not sampled".
    let hostile = format!("{CALLER}\r\nX-Injected: {MARKER}");
    let not_sampled = CALLER
        .replace("-01", "-00")
        .replace("5a1e0c0ffee", "0000000000b");
    let runs = [
        ("own", None),
        ("joined", Some(CALLER.to_owned())),
        ("hostile", Some(hostile)),
        ("unsampled", Some(not_sampled.clone())),
    ];
    for (name, annotation) in &runs {
        let mut d = chat_dispatch(
            name,
            &runner,
            &format!("say {MARKER}\nwrite notes/{name}.md {MARKER}"),
        );
        // Done three seconds after its turn (the golden waits two minutes for the next).
        if let Some(limits) = d.spec.limits.as_mut() {
            limits.idle_timeout_seconds = Some(3);
        }
        if let Some(a) = annotation {
            d.annotations_mut().insert(ANNOTATION.into(), a.clone());
        }
        dispatches.create(&PostParams::default(), &d).await.unwrap();
    }
    let mut ended = Vec::new();
    for (name, _) in &runs {
        ended.push(finished(&dispatches, name).await);
    }
    let _telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush().expect("the spans reach Jaeger");
        telemetry
    })
    .await
    .unwrap();

    // The operator's own trace: the steps in order under the root, then its reconciles.
    let own = &ended[0];
    assert_eq!(stop_reason(own), "idle_timeout", "{}", describe(own));
    let trace_id = uid_trace(own);
    let spans = trace_with_root(&jaeger, &trace_id).await;
    let root = spans.iter().find(|s| s.name == ROOT_SPAN).unwrap();
    assert_eq!(root.parent, None, "the operator started this trace");
    assert_eq!(root.service, "vexa-operator");
    assert_eq!(root.tag("vexa.dispatch"), Some("own"));
    assert_eq!(root.tag("vexa.subject"), Some("alice"));
    assert_eq!(root.tag("vexa.launcher"), Some("user:alice"));
    assert_eq!(root.tag("vexa.stop_reason"), Some("idle_timeout"));
    // Every step once; in the order of the steps, none starts or ends before the one it
    // follows (steps the API server timed to the same second are zero-length and tie).
    let steps: Vec<&FoundSpan> = STEPS
        .iter()
        .map(|name| {
            let mut found = spans.iter().filter(|s| s.name == *name);
            let step = found
                .next()
                .unwrap_or_else(|| panic!("no {name} span: {spans:#?}"));
            assert!(found.next().is_none(), "{name} twice: {spans:#?}");
            step
        })
        .collect();
    for pair in steps.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            b.start_us + b.duration_us >= a.start_us + a.duration_us
                && (b.start_us >= a.start_us + a.duration_us || b.name == "turn complete"),
            "{} is not after {}: {a:?} / {b:?}",
            b.name,
            a.name
        );
    }
    for s in &steps {
        assert_eq!(
            s.parent.as_deref(),
            Some(root.span_id.as_str()),
            "{}",
            s.name
        );
        assert!(
            s.start_us >= root.start_us
                && s.start_us + s.duration_us <= root.start_us + root.duration_us,
            "{} lies outside the run: {s:?} / {root:?}",
            s.name
        );
    }
    let result = own.status.as_ref().unwrap().provenance[0]
        .result_commit
        .clone();
    assert_eq!(
        steps.last().unwrap().tag("vexa.commit"),
        result.as_deref(),
        "the commit span names the run's commit"
    );
    let reconciles = spans.iter().filter(|s| s.name == "reconcile").count();
    assert!(
        reconciles >= 2,
        "the live run's reconciles are in its trace: {spans:#?}"
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "reconcile")
            .all(|s| s.parent.as_deref() == Some(root.span_id.as_str()))
    );
    let step = |name: &str| steps.iter().find(|s| s.name == name).unwrap();
    eprintln!(
        "trace {trace_id}: {} spans ({reconciles} reconciles); creation → first event {} ms, \
         first turn {} ms",
        spans.len(),
        (step("first event").start_us + step("first event").duration_us - root.start_us) / 1000,
        step("turn complete").duration_us / 1000,
    );

    // A caller's trace is joined: the run's root is a child of the caller's span.
    let caller = TraceParent::parse(CALLER).unwrap();
    let joined = trace_with_root(&jaeger, &caller.trace_hex()).await;
    let root = joined.iter().find(|s| s.name == ROOT_SPAN).unwrap();
    assert_eq!(root.tag("vexa.dispatch"), Some("joined"));
    assert_eq!(root.parent.as_deref(), Some("1234567890abcdef"));
    assert!(
        joined
            .iter()
            .all(|s| s.tag("vexa.dispatch") != Some("hostile")),
        "the hostile run did not join the caller's trace"
    );

    // The hostile annotation is ignored: that run has the trace of its own UID.
    let hostile = trace_with_root(&jaeger, &uid_trace(&ended[2])).await;
    let root = hostile.iter().find(|s| s.name == ROOT_SPAN).unwrap();
    assert_eq!(root.tag("vexa.dispatch"), Some("hostile"));
    assert_eq!(root.parent, None);

    // Its creator is told why, once, without the value echoed back.
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let told = wait_for(
        "a TraceContextIgnored event on the hostile run",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let found: Vec<Event> = list
                .items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("TraceContextIgnored")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("hostile")
                })
                .collect();
            (!found.is_empty()).then_some(found)
        },
    )
    .await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].type_.as_deref(), Some("Warning"));
    assert!(!told[0].note.as_deref().unwrap_or_default().contains(MARKER));

    // Not sampled: nothing under the caller's trace or the run's own.
    let unsampled = TraceParent::parse(&not_sampled).unwrap();
    assert!(jaeger.trace(&unsampled.trace_hex()).await.is_empty());
    assert!(jaeger.trace(&uid_trace(&ended[3])).await.is_empty());

    // Nothing the agent was told, in any trace.
    for id in [trace_id, caller.trace_hex(), uid_trace(&ended[2])] {
        let raw = jaeger.raw_trace(&id).await;
        assert!(!raw.is_empty());
        assert!(
            !raw.contains(MARKER),
            "the prompt reached the trace backend: {raw}"
        );
    }

    // The worker's side of every run (sampled or not) is in the operator's metrics.
    let metrics = String::from_utf8(
        http_get(&format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics"))
    };
    assert_eq!(
        value("vexa_dispatch_first_event_latency_seconds_count"),
        4.0
    );
    assert_eq!(value("vexa_dispatch_first_turn_seconds_count"), 4.0);
    assert!(value("vexa_dispatch_stream_events_total") >= 4.0 * 3.0);
    assert!(value("vexa_dispatch_stream_bytes_total") > 1000.0);
    eprintln!(
        "metrics: creation → first event, mean of 4 runs {:.2} s; {} stream entries, {} bytes",
        value("vexa_dispatch_first_event_latency_seconds_sum") / 4.0,
        value("vexa_dispatch_stream_events_total"),
        value("vexa_dispatch_stream_bytes_total"),
    );
    drop(operator);
    let _ = jaeger.log();
}
