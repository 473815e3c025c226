//! The chart's NetworkPolicies (`charts/vexa/templates/networkpolicy.yaml`), exactly as the chart
//! renders them, for an eval's namespace: the eval proves what ships.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::repo_root;

/// The chart's NetworkPolicies for `namespace`, rendered with `helm template --show-only`
/// and `values` as extra `--set` options.
pub fn render(namespace: &str, values: &[String]) -> String {
    let chart = repo_root().join("charts/vexa");
    let mut helm = Command::new("helm");
    helm.args(["template", "vexa-eval"]).arg(&chart).args([
        "--namespace",
        "vexa-system",
        "--show-only",
        "templates/networkpolicy.yaml",
        "--set",
        &format!("networkPolicy.namespaces={{{namespace}}}"),
    ]);
    for v in values {
        helm.args(["--set", v]);
    }
    let out = helm
        .output()
        .expect("helm (on PATH via `hack/cluster env`)");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm prints UTF-8")
}

/// `kubectl apply --server-side` of `manifests`, for real or as a server-side dry run (every
/// admission step and the schema, nothing stored). Returns kubectl's output, or its error.
pub fn apply(manifests: &str, dry_run: bool) -> Result<String, String> {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let mut kubectl = Command::new("kubectl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (on PATH via `hack/cluster env`)");
    kubectl
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(manifests.as_bytes())
        .expect("write to kubectl");
    let out = kubectl.wait_with_output().expect("kubectl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}
