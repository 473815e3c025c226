//! The chart's admission objects (`charts/vexa/templates/admission.yaml`), exactly as the chart
//! renders them, installed for an eval whose operator runs in-process (without the chart), and
//! removed when dropped.
//!
//! They are rendered under their own release name (`vexa-eval`), so they never collide with a
//! chart install; the operator they name is that release's service account, which does not
//! exist: the in-process operator writes as the admin (in the exempt `system:masters`).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::repo_root;

const RELEASE: &str = "vexa-eval";

/// The chart's admission objects in the cluster while this lives.
#[derive(Debug)]
pub struct ChartAdmission {
    names: Vec<String>,
}

impl ChartAdmission {
    /// Renders the chart's admission template (`helm template`, with `values` as extra
    /// `--set` options) and applies it.
    pub fn install(values: &[&str]) -> Self {
        let chart = repo_root().join("charts/vexa");
        let mut helm = Command::new("helm");
        helm.args(["template", RELEASE]).arg(&chart).args([
            "--namespace",
            "vexa-system",
            "--show-only",
            "templates/admission.yaml",
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
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let names = docs
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut apply = Command::new("kubectl")
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl");
        apply.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        assert!(
            apply.wait().unwrap().success(),
            "kubectl apply of the admission objects"
        );
        Self { names }
    }
}

impl Drop for ChartAdmission {
    fn drop(&mut self) {
        // Left behind, they would refuse the status writes of a chart-installed operator.
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "validatingadmissionpolicybinding,validatingadmissionpolicy",
                "--ignore-not-found",
            ])
            .args(&self.names)
            .stdout(Stdio::null())
            .status();
    }
}
