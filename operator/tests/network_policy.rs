//! The chart's NetworkPolicies (`charts/vexa/templates/networkpolicy.yaml`) find the pods the
//! operator creates by their `app.kubernetes.io/name` label: if the two ever differ, every agent
//! pod runs unconfined and nothing fails. This pins the contract from the operator's side.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use vexa_crds::Workspace;
use vexa_operator::controllers::{dispatch, workspace};

const NAME: &str = "app.kubernetes.io/name";

fn chart() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/vexa/templates/networkpolicy.yaml"
    );
    std::fs::read_to_string(path).expect("the chart's NetworkPolicy template")
}

#[test]
fn the_chart_selects_dispatch_pods_by_the_label_the_operator_gives_them() {
    let labels = dispatch::children::labels("any-dispatch");
    let selector = format!("{NAME}: {}", labels[NAME]);
    assert!(chart().contains(&selector), "{selector} not in the chart");
}

#[test]
fn the_chart_selects_workspace_prepare_pods_by_the_label_the_operator_gives_them() {
    let ws: Workspace = serde_json::from_value(serde_json::json!({
        "apiVersion": "vexa.ai/v1", "kind": "Workspace",
        "metadata": {"name": "notes", "namespace": "t", "uid": "u", "generation": 1},
        "spec": {"id": "notes", "owner": "alice", "defaultMode": "rw",
            "storage": {"persistentVolumeClaim": {"claimName": "c", "subPath": "notes"}}},
    }))
    .unwrap();
    let job = workspace::children::prepare_job(
        &ws,
        &workspace::children::Settings {
            init_image: "img".into(),
        },
    );
    let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let selector = format!("{NAME}: {}", pod_labels[NAME]);
    assert!(chart().contains(&selector), "{selector} not in the chart");
}
