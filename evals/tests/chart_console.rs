//! The chart's web console (`charts/vexa/templates/console.yaml`), rendered by `helm template`:
//! off by default; when on, a pod that holds no credentials at all (no ServiceAccount token,
//! nothing bound to its ServiceAccount), only the cluster's CA, under the restricted profile,
//! told where the operator's metrics Service is (read as the person, see `console_admin.rs`).
//!
//! Needs helm on PATH (`eval "$(hack/cluster env)"`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Value, json};
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
    // The admin page reads the operator through the API server's service proxy, as the
    // person: the chart's metrics Service, which the unbound Role vexa-operator-health (and
    // nothing else the chart makes) lets one read, on that port only.
    let env = container["env"].as_array().unwrap();
    let at = env
        .iter()
        .find(|e| e["name"] == "VEXA_CONSOLE_OPERATOR_SERVICE")
        .expect("where the operator's metrics are")["value"]
        .as_str()
        .unwrap();
    assert_eq!(at, "vexa-system/vexa-metrics:http");
    let metrics = find(&docs, "Service", "vexa-metrics").unwrap();
    assert_eq!(metrics["spec"]["ports"][0]["name"], "http");
    let role = find(&docs, "Role", "vexa-operator-health").expect("the operator-health Role");
    assert_eq!(role["metadata"]["namespace"], "vexa-system");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["services/proxy"],
                "resourceNames": ["vexa-metrics:http"], "verbs": ["get"]}])
    );
    let service = find(&docs, "Service", "vexa-console").unwrap();
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        Value::from("console")
    );
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn the_consoles_provider_sign_in_mounts_only_its_client_secret_and_ca() {
    let base = [
        "console.enabled=true",
        "console.oidc.issuer=https://sso.example/realms/acme",
        "console.oidc.clientSecret.name=console-oidc",
        "console.oidc.redirectUrl=https://vexa.example/signin/oidc/callback",
        "console.oidc.ca.configMap=sso-ca",
    ];
    let docs = render("", &base).unwrap();
    let pod = &find(&docs, "Deployment", "vexa-console").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "--oidc-issuer=https://sso.example/realms/acme",
        "--oidc-client-id=vexa-console",
        "--oidc-client-secret-file=/var/run/vexa/oidc/client-secret",
        "--oidc-redirect-url=https://vexa.example/signin/oidc/callback",
        "--oidc-ca=/var/run/vexa/oidc-ca/ca.crt",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    // The cluster's CA, the client's secret (that key only) and the provider's CA: no token.
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3, "{volumes:?}");
    let secret = volumes.iter().find(|v| v["name"] == "oidc-client").unwrap();
    assert_eq!(secret["secret"]["secretName"], "console-oidc");
    assert_eq!(
        secret["secret"]["items"],
        json!([{"key": "client-secret", "path": "client-secret"}])
    );
    let ca = volumes.iter().find(|v| v["name"] == "oidc-ca").unwrap();
    assert_eq!(ca["configMap"]["name"], "sso-ca");
    for m in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "{m}");
    }

    // What the chart refuses, each with a message naming the value.
    for (set, says) in [
        (
            "console.oidc.issuer=http://sso.example/realms/acme",
            "must be an https:// URL",
        ),
        (
            "console.oidc.clientSecret.name=",
            "console.oidc.clientSecret.name",
        ),
        (
            "console.oidc.redirectUrl=https://vexa.example/elsewhere",
            "/signin/oidc/callback",
        ),
    ] {
        let mut sets = base.to_vec();
        sets.push(set);
        let err = render("", &sets).unwrap_err();
        assert!(err.contains(says), "{set}: {err}");
    }
}
