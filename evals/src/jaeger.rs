//! A real trace backend for the tracing eval and bench: Jaeger v2 (`hack/build-tools jaeger`,
//! found through `VEXA_JAEGER_BIN`), its OTLP/gRPC receiver and query API on loopback ports of
//! its own, traces in memory. Stopped and its folder removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::free_port;
use crate::{cluster_env, http_get, wait_for};

/// A running Jaeger.
#[derive(Debug)]
pub struct Jaeger {
    child: Child,
    dir: PathBuf,
    /// Where OTLP/gRPC goes: `http://127.0.0.1:<port>`.
    pub otlp: String,
    /// The query API: `http://127.0.0.1:<port>`.
    pub query: String,
}

/// One span as Jaeger's query API returns it.
#[derive(Debug, Clone)]
pub struct FoundSpan {
    pub name: String,
    pub span_id: String,
    /// The span it is a child of (none for a root).
    pub parent: Option<String>,
    /// Microseconds since the Unix epoch.
    pub start_us: i64,
    pub duration_us: i64,
    pub service: String,
    /// Every tag, as `key=value`.
    pub tags: Vec<(String, String)>,
}

impl FoundSpan {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Jaeger {
    /// Starts Jaeger and waits for its query API.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vexa-evals-jaeger-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("the Jaeger folder");
        let (otlp, query, query_grpc) = (free_port(), free_port(), free_port());
        // The all-in-one pipeline cut to what the evals use, every port on loopback.
        let config = format!(
            r"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"
        );
        let config_path = dir.join("jaeger.yaml");
        std::fs::write(&config_path, config).expect("the Jaeger config");
        let log = std::fs::File::create(dir.join("jaeger.log")).expect("its log");
        let bin = cluster_env("VEXA_JAEGER_BIN");
        let child = Command::new(&bin)
            .arg(format!("--config=file:{}", config_path.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} (hack/build-tools jaeger): {e}"));
        let jaeger = Self {
            child,
            dir,
            otlp: format!("http://127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query}"),
        };
        let services = format!("{}/api/services", jaeger.query);
        wait_for("Jaeger's query API", Duration::from_secs(60), || async {
            http_get(&services).await.ok()
        })
        .await;
        jaeger
    }

    /// Its log, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("jaeger.log")).unwrap_or_default()
    }

    /// The spans of trace `trace_id` (32 hex digits), in start order; empty when Jaeger has
    /// none (yet).
    pub async fn trace(&self, trace_id: &str) -> Vec<FoundSpan> {
        let Ok(body) = http_get(&format!("{}/api/traces/{trace_id}", self.query)).await else {
            return Vec::new();
        };
        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
            return Vec::new();
        };
        let Some(trace) = answer["data"].as_array().and_then(|d| d.first()) else {
            return Vec::new();
        };
        let processes = &trace["processes"];
        let mut spans: Vec<FoundSpan> = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| FoundSpan {
                name: text(&s["operationName"]),
                span_id: text(&s["spanID"]),
                parent: s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .map(|r| text(&r["spanID"])),
                start_us: s["startTime"].as_i64().unwrap_or_default(),
                duration_us: s["duration"].as_i64().unwrap_or_default(),
                service: text(&processes[text(&s["processID"])]["serviceName"]),
                tags: s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let value = match &t["value"] {
                            Value::String(v) => v.clone(),
                            other => other.to_string(),
                        };
                        (text(&t["key"]), value)
                    })
                    .collect(),
            })
            .collect();
        spans.sort_by_key(|s| (s.start_us, -s.duration_us));
        spans
    }

    /// The whole answer for trace `trace_id`, as text (to look for what must not be there).
    pub async fn raw_trace(&self, trace_id: &str) -> String {
        http_get(&format!("{}/api/traces/{trace_id}", self.query))
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
