//! The chart's web console (`charts/vexa/templates/console.yaml`), rendered by `helm template`:
//! off by default; when on, a pod that holds no credentials at all (no ServiceAccount token,
//! nothing bound to its ServiceAccount), only the cluster's CA, under the restricted profile.
//!
//! Needs helm on PATH (`eval "$(hack/cluster env)"`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use vexa_evals::chart::{find, render};

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn the_console_is_off_by_default_and_holds_no_credentials_when_on() {
    let off = render("", &[]).unwrap();
    assert!(find(&off, "Deployment", "vexa-console").is_none());

    let docs = render("", &["console.enabled=true", "console.namespace=team-a"]).unwrap();
    let deployment = find(&docs, "Deployment", "vexa-console").expect("the console's Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "vexa-console");
    let sa = find(&docs, "ServiceAccount", "vexa-console").unwrap();
    assert_eq!(sa["automountServiceAccountToken"], false);
    // Nothing grants the console's ServiceAccount anything.
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        assert!(
            !subjects.iter().any(|s| s["name"] == "vexa-console"),
            "{binding}"
        );
    }
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--namespace=team-a"), "{args:?}");
    assert!(
        args.contains(&"--api-ca=/var/run/vexa/kube-ca/ca.crt"),
        "{args:?}"
    );
    // The only volume is the CA's ConfigMap; no Secret, no projected token.
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["configMap"]["name"], "kube-root-ca.crt");
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let service = find(&docs, "Service", "vexa-console").unwrap();
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        Value::from("console")
    );
}
