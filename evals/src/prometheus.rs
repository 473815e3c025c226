//! A real Prometheus (Debian's `prometheus`, installed by `hack/cluster deps`) for the evals of
//! the chart's monitoring: it scrapes a target every second under the job and namespace labels
//! the chart's ServiceMonitor gives, evaluates rule files, and answers the HTTP API. Loopback
//! only; its data lives in a temporary folder removed with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::free_port;
use crate::{http_get, wait_for};

/// A running Prometheus; stopped when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) as job `job` with the
    /// label `namespace`, evaluating `rule_files` every second.
    pub async fn start(target: &str, job: &str, namespace: &str, rule_files: &[&Path]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vexa-evals-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("the Prometheus folder");
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": [{
                "job_name": job,
                "static_configs": [{"targets": [target], "labels": {"namespace": namespace}}],
            }],
        });
        // JSON is YAML.
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).expect("the Prometheus config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("its log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package; `hack/cluster deps` installs it)");
        let prometheus = Self {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let ready = format!("{}/-/ready", prometheus.base);
        wait_for(
            "Prometheus to be ready",
            Duration::from_secs(60),
            || async { http_get(&ready).await.ok() },
        )
        .await;
        prometheus
    }

    /// The log, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str) -> Result<Value, String> {
        let body = http_get(&format!("{}{path}", self.base)).await?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{path}: {answer}"));
        }
        Ok(answer["data"].clone())
    }

    /// The series an instant query returns (`Err`: Prometheus refused the query).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every metric name Prometheus holds series of.
    pub async fn metric_names(&self) -> Vec<String> {
        let data = self
            .api("/api/v1/label/__name__/values")
            .await
            .expect("the metric names");
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The rules as evaluated: each rule's name, health and last error.
    pub async fn rules(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/rules").await.expect("the rules");
        let mut out = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                out.push((
                    rule["name"].as_str().unwrap_or_default().to_owned(),
                    rule["health"].as_str().unwrap_or_default().to_owned(),
                    rule["lastError"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_query_is_percent_encoded() {
        assert_eq!(
            super::encode("up{job=\"a b\"} == 1"),
            "up%7Bjob%3D%22a%20b%22%7D%20%3D%3D%201"
        );
    }
}
