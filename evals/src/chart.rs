//! The chart as `helm template` renders it, for the evals that check what it installs.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::repo_root;

/// `helm template vexa charts/vexa` in namespace `vexa-system` with `values` (YAML, given on
/// stdin when not empty) and `sets` (`--set`): the rendered documents, or helm's error.
pub fn render(values: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut helm = Command::new("helm");
    helm.args(["template", "vexa"])
        .arg(repo_root().join("charts/vexa"))
        .args(["--namespace", "vexa-system"]);
    if !values.is_empty() {
        helm.args(["--values", "-"]);
    }
    for v in sets {
        helm.args(["--set", v]);
    }
    let mut child = helm
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helm (on PATH via `hack/cluster env`)");
    let mut stdin = child.stdin.take().expect("helm's stdin");
    stdin.write_all(values.as_bytes()).expect("values to helm");
    drop(stdin);
    let out = child.wait_with_output().expect("helm ran");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
        .expect("the chart renders YAML");
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The rendered document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}
