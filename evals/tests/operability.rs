//! What a cluster admin runs next to the operator: the chart's ServiceMonitor, PrometheusRule
//! and Grafana dashboards (off by default), checked with the real tools (helm, promtool, a
//! real Prometheus scraping a live operator), and the Argo CD health checks run on the statuses
//! a live operator writes (every kind has `Ready` and `observedGeneration`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::{Value, json};
use vexa_crds::{Dispatch, Trigger, WorkspaceMode, WorkspaceUse};
use vexa_evals::chart::{find, render};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, fake_runner, free_port, golden_doc, phase, stop_reason,
    wait_dispatch, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::prometheus::Prometheus;
use vexa_evals::{TestNamespace, client, health, http_get, repo_root, wait_for};

const ALL_ON: [&str; 4] = [
    "metrics.serviceMonitor.enabled=true",
    "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    "metrics.prometheusRule.enabled=true",
    "metrics.dashboards.enabled=true",
];
const JOB: &str = "vexa-metrics";
const NAMESPACE: &str = "vexa-system";

fn labels(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["metadata"]["labels"].as_object().expect("labels")
}

fn selects(selector: &Value, doc: &Value) -> bool {
    let have = labels(doc);
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| have.get(k) == Some(v))
}

#[test]
#[ignore = "needs helm (hack/cluster up builds it; eval \"$(hack/cluster env)\")"]
fn the_chart_ships_monitoring_only_when_asked_and_scrapes_only_the_metrics_port() {
    let default = render("", &[]).unwrap();
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            default.iter().all(|d| d["kind"] != kind),
            "{kind} rendered by default"
        );
    }
    assert!(find(&default, "ConfigMap", "vexa-dashboard-operator").is_none());

    let docs = render("", &ALL_ON).unwrap();
    let monitor = find(&docs, "ServiceMonitor", "vexa").expect("the ServiceMonitor");
    assert_eq!(
        labels(monitor)["release"],
        "kube-prometheus-stack",
        "extra labels"
    );
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let metrics = find(&docs, "Service", "vexa-metrics").expect("the metrics Service");
    let gateway = find(&docs, "Service", "vexa-model-gateway").expect("the model gateway");
    assert!(selects(selector, metrics), "{selector} / {metrics}");
    assert!(
        !selects(selector, gateway),
        "the model gateway's Service is not scraped"
    );
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        metrics["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "the metrics Service has the port {port}"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );

    let dashboard =
        find(&docs, "ConfigMap", "vexa-dashboard-operator").expect("the dashboard ConfigMap");
    assert_eq!(labels(dashboard)["grafana_dashboard"], "1");
    let board: Value =
        serde_json::from_str(dashboard["data"]["vexa-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(board["uid"], "vexa-operator");
    assert!(board["panels"].as_array().unwrap().len() >= 10);
}

fn operator_env(docs: &[Value]) -> Vec<(String, String)> {
    let deployment = find(docs, "Deployment", "vexa").expect("the operator's Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs helm (hack/cluster up builds it; eval \"$(hack/cluster env)\")"]
fn the_chart_exports_traces_only_when_asked_and_never_from_dispatch_pods() {
    let otel = |docs: &[Value]| -> Vec<(String, String)> {
        operator_env(docs)
            .into_iter()
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .collect()
    };
    let off = render("", &[]).unwrap();
    assert!(otel(&off).is_empty(), "tracing is off by default");
    let sets = [
        "tracing.otlpEndpoint=http://jaeger-collector.tracing:4317",
        "tracing.resourceAttributes.deployment\\.environment=prod",
    ];
    let on = render("", &sets).unwrap();
    let env = otel(&on);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://jaeger-collector.tracing:4317")
    );
    assert_eq!(get("OTEL_EXPORTER_OTLP_PROTOCOL"), Some("grpc"));
    assert_eq!(get("OTEL_SERVICE_NAME"), Some("vexa-operator"));
    assert_eq!(
        get("OTEL_RESOURCE_ATTRIBUTES"),
        Some("deployment.environment=prod")
    );
    // The agents' network policy is the same with tracing on: no path to the collector.
    let agents = |sets: &[&str]| {
        let mut sets = sets.to_vec();
        sets.push("tenants.namespaces={alice}");
        find(&render("", &sets).unwrap(), "NetworkPolicy", "vexa-agents")
            .expect("the agents' policy")
            .clone()
    };
    assert_eq!(agents(&[]), agents(&sets));
    let bad = render("", &["tracing.otlpEndpoint=collector:4317"]).unwrap_err();
    assert!(bad.contains("must be a URL"), "{bad}");
}

/// The chart's PrometheusRule as a Prometheus rule file (its `spec`); `annotations: false`
/// leaves them out (promtool's unit tests compare them whole).
fn rule_file(dir: &Path, name: &str, annotations: bool) -> PathBuf {
    let docs = render("", &ALL_ON).unwrap();
    let mut spec =
        find(&docs, "PrometheusRule", "vexa").expect("the PrometheusRule")["spec"].clone();
    if !annotations {
        for group in spec["groups"].as_array_mut().unwrap() {
            for rule in group["rules"].as_array_mut().unwrap() {
                rule.as_object_mut().unwrap().remove("annotations");
            }
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus; `hack/cluster deps` installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vexa-evals-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs helm (hack/cluster up) and promtool (hack/cluster deps)"]
fn the_alerts_pass_promtool_and_fire_exactly_in_their_unit_tests() {
    let dir = scratch("alerts");
    rule_file(&dir, "full.yaml", true);
    promtool(&dir, &["check", "rules", "full.yaml"]);
    rule_file(&dir, "rules.yaml", false);
    std::fs::copy(
        repo_root().join("evals/prometheus/alerts.test.yaml"),
        dir.join("alerts.test.yaml"),
    )
    .unwrap();
    promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Every `vexa_…` metric name in `expr`.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("vexa_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The family a series name belongs to (`_total`, `_bucket`, `_sum`, `_count` dropped), as
/// the operator's `# TYPE` lines name it.
fn family(series: &str) -> &str {
    for suffix in ["_total", "_bucket", "_sum", "_count"] {
        if let Some(f) = series.strip_suffix(suffix) {
            return f;
        }
    }
    series
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("charts/vexa/dashboards/vexa-operator.json"))
            .unwrap();
    let board: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

async fn dynamic(
    client: &Client,
    ns: Option<&str>,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(vexa_crds::GROUP, "v1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Waits until the operator has written `Ready` for the current generation of `name`, then
/// runs its kind's health check on it as Argo CD would.
async fn health_of(api: &Api<DynamicObject>, name: &str, wanted: &str) -> health::Health {
    wait_for(
        &format!("{name} to have Ready at its generation and health {wanted}"),
        Duration::from_secs(120),
        || async {
            let obj = api.get(name).await.ok()?;
            let value = serde_json::to_value(&obj).ok()?;
            let generation = value["metadata"]["generation"].as_i64();
            let status = &value["status"];
            let observed = status["observedGeneration"].as_i64();
            let ready = status["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            if observed != generation || ready["observedGeneration"].as_i64() != generation {
                return None;
            }
            let h = health::check(&value).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            (h.status == wanted).then_some(h)
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the hack/ cluster, helm and Debian's prometheus"]
async fn a_live_operator_has_the_documented_health_and_every_panel_and_alert_its_metric() {
    let addr = format!("127.0.0.1:{}", free_port());
    let http = format!("--http-addr={addr}");
    let operator = Operator::start(&[
        "--job-ttl-seconds",
        "60",
        "--worker-image",
        FAKE_WORKER_IMAGE,
        &http,
    ]);
    operator.ready().await;
    let dir = scratch("live-rules");
    let rules = rule_file(&dir, "rules.yaml", true);
    let prometheus = Prometheus::start(&addr, JOB, NAMESPACE, &[&rules]).await;

    let client = client().await;
    let ns = TestNamespace::new(&client, "health").await;
    let runner = format!("fake-{}", ns.name);
    fake_runner(&client, &ns, &runner, json!({})).await;
    let broken = format!("nocred-{}", ns.name);
    fake_runner(
        &client,
        &ns,
        &broken,
        json!({"modelCredential": {"secretRef": {"name": "no-such-credential", "key": "api-key"},
                                   "env": "ANTHROPIC_API_KEY"}}),
    )
    .await;
    workspace_volume(&client, &ns.name).await;
    let mut notes = golden_doc("goldens/workspaces/valid/alice-notes.yaml");
    notes["metadata"]["namespace"] = json!(ns.name);
    let workspaces = dynamic(&client, Some(&ns.name), "Workspace", "workspaces").await;
    workspaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(notes).unwrap(),
        )
        .await
        .unwrap();
    workspace_ready(&client, &ns.name, "alice-notes").await;
    let identities = dynamic(&client, Some(&ns.name), "Identity", "identities").await;
    let mut alice = golden_doc("goldens/identities/valid/alice.yaml");
    alice["metadata"]["namespace"] = json!(ns.name);
    identities
        .create(
            &PostParams::default(),
            &serde_json::from_value(alice).unwrap(),
        )
        .await
        .unwrap();
    // Two Schedules under alice's grant, which names another namespace's launcher: one
    // refused (not granted), one suspended.
    let schedules = dynamic(&client, Some(&ns.name), "Schedule", "schedules").await;
    for (name, suspend) in [("refused", false), ("suspended", true)] {
        let mut s = golden_doc("goldens/schedules/valid/morning-brief.yaml");
        s["metadata"] = json!({"name": name, "namespace": ns.name});
        s["spec"]["suspend"] = json!(suspend);
        schedules
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }

    // Dispatches: one finished, one running that holds alice-notes, one queued behind it, one
    // refused.
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns.name);
    let create = |d: Dispatch| {
        let dispatches = dispatches.clone();
        async move { dispatches.create(&PostParams::default(), &d).await.unwrap() }
    };
    create(chat_dispatch("done", &runner, "sleep 1")).await;
    wait_dispatch(
        &dispatches,
        "done",
        "a stop reason",
        Duration::from_secs(120),
        |d| !stop_reason(d).is_empty(),
    )
    .await;
    create(chat_dispatch("running", &runner, "sleep 90")).await;
    wait_dispatch(
        &dispatches,
        "running",
        "running",
        Duration::from_secs(120),
        |d| phase(d) == "running",
    )
    .await;
    create(chat_dispatch("queued", &runner, "sleep 1")).await;
    let mut refused = chat_dispatch("refused", &runner, "idle");
    refused.spec.trigger = Trigger::Event;
    refused.spec.workspaces = vec![WorkspaceUse {
        name: "alice-notes".into(),
        mode: Some(WorkspaceMode::ReadWrite),
    }];
    create(refused).await;

    let d = dynamic(&client, Some(&ns.name), "Dispatch", "dispatches").await;
    let runners = dynamic(&client, None, "AgentRunner", "agentrunners").await;
    let mut seen = Vec::new();
    for (api, name, wanted, says) in [
        (&d, "done", "Healthy", "Succeeded"),
        (&d, "running", "Progressing", "Running"),
        (&d, "queued", "Progressing", "Queued"),
        (&d, "refused", "Degraded", "UntrustedTriggerWrites"),
        (&workspaces, "alice-notes", "Healthy", "Ready"),
        (
            &runners,
            runner.as_str(),
            "Healthy",
            "brokers no model credential",
        ),
        (&runners, broken.as_str(), "Degraded", "CredentialNotFound"),
        (&identities, "alice", "Healthy", "NoDirectory"),
        (&schedules, "refused", "Degraded", "LauncherNotGranted"),
        (&schedules, "suspended", "Suspended", "spec.suspend"),
    ] {
        let h = health_of(api, name, wanted).await;
        assert!(h.message.contains(says), "{name}: {h:?}");
        seen.push(format!("{name}: {} ({})", h.status, h.message));
    }
    eprintln!("health of the live objects:\n  {}", seen.join("\n  "));

    // Prometheus scraped the operator, with what the panels and alerts ask for.
    let up = format!("up{{job=\"{JOB}\", namespace=\"{NAMESPACE}\"}} == 1");
    wait_for(
        "Prometheus to scrape the operator",
        Duration::from_secs(60),
        || async {
            let r = prometheus.query(&up).await.ok()?;
            (!r.is_empty()).then_some(())
        },
    )
    .await;
    let exposed = String::from_utf8(
        http_get(&format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let families: BTreeSet<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let rule_text = std::fs::read_to_string(&rules).unwrap();
    let rule_doc: Value = serde_json::from_str(&rule_text).unwrap();
    let mut referenced = BTreeSet::new();
    for group in rule_doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            referenced.extend(metric_names_in(rule["expr"].as_str().unwrap()));
        }
    }
    let panels = dashboard_exprs();
    for (_, expr) in &panels {
        referenced.extend(metric_names_in(expr));
    }
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|n| !families.contains(family(n)))
        .collect();
    assert!(
        missing.is_empty(),
        "panels or alerts name metrics the operator does not expose: {missing:?}"
    );

    // Let the scrapes after the runs land, then every panel's query answers with data.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut empty = Vec::new();
    for (title, expr) in &panels {
        let q = expr.replace("$job", JOB).replace("$__rate_interval", "5m");
        match prometheus.query(&q).await {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: {q} (no data)")),
            Err(e) => empty.push(format!("{title}: {q} ({e})")),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // Every alert rule evaluates against the live series without an error.
    let rules_seen = wait_for(
        "the rules to be evaluated",
        Duration::from_secs(30),
        || async {
            let r = prometheus.rules().await;
            (!r.is_empty() && r.iter().all(|(_, health, _)| health != "unknown")).then_some(r)
        },
    )
    .await;
    let bad: Vec<_> = rules_seen.iter().filter(|(_, h, _)| h != "ok").collect();
    assert!(
        bad.is_empty(),
        "rules that fail: {bad:?}\n{}",
        prometheus.log()
    );
    eprintln!(
        "{} panel queries answered, {} alert rules evaluated, {} metric names checked",
        panels.len(),
        rules_seen.len(),
        referenced.len()
    );
    drop(prometheus);
    std::fs::remove_dir_all(&dir).ok();
    drop(ns);
    drop(operator);
}
