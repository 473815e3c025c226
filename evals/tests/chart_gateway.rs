//! The chart's MCP gateway (`charts/vexa/templates/gateway.yaml`), rendered by `helm template`
//! exactly as it ships: Envoy and the filter in one pod under the restricted Pod Security
//! profile, mutual TLS that requires the SPIRE bundle's client certificates, forwarded client
//! certificates sanitised, ext_authz with the body and the peer certificate on the pod's
//! loopback, the audit volume shared with the operator, the operator pointed at the gateway,
//! and the dispatch pods' NetworkPolicy opened to it; with `gateway.enabled: false` none of it.
//!
//! Needs helm on PATH (`eval "$(hack/cluster env)"`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use vexa_evals::chart::{find, render};

const ENABLED: &[&str] = &[
    "gateway.enabled=true",
    "spire.enabled=true",
    "keycloak.url=https://keycloak.example:8443",
    "keycloak.adminSecret.name=kc-admin",
    "keycloak.gatewayClientSecret.name=kc-gateway",
    "gateway.tls.secretName=gateway-svid",
    "tenants.namespaces={team-a}",
];

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn the_gateway_pod_runs_envoy_and_the_filter_restricted_with_the_operators_audit_volume() {
    let docs = render("", ENABLED).unwrap();
    let gw = find(&docs, "Deployment", "vexa-gateway").expect("the gateway Deployment");
    let pod = &gw["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for name in ["envoy", "filter"] {
        let sc = &container(gw, name)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
    }
    let volumes = pod["volumes"].as_array().unwrap();
    let audit = volumes.iter().find(|v| v["name"] == "audit").unwrap();
    let operator = find(&docs, "Deployment", "vexa").unwrap();
    let op_audit = operator["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "audit")
        .unwrap();
    assert_eq!(
        audit["persistentVolumeClaim"], op_audit["persistentVolumeClaim"],
        "the filter writes its chain next to the operator's"
    );
    assert!(
        pod["affinity"]["podAffinity"].is_object(),
        "a ReadWriteOnce volume: the gateway runs on the operator's node"
    );
    let filter = container(gw, "filter");
    assert_eq!(
        env(filter, "VEXA_GATEWAY_FILTER_ADDR"),
        Some("127.0.0.1:9191")
    );
    assert_eq!(env(filter, "VEXA_AUDIT_DIR"), Some("/var/lib/vexa/audit"));
    assert_eq!(
        env(filter, "VEXA_KEYCLOAK_URL"),
        Some("https://keycloak.example:8443")
    );
    let tls = volumes.iter().find(|v| v["name"] == "gateway-tls").unwrap();
    assert_eq!(tls["secret"]["secretName"], "gateway-svid");

    let svc = find(&docs, "Service", "vexa-gateway").expect("the gateway Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8443);
    assert_eq!(
        env(container(operator, "operator"), "VEXA_MCP_GATEWAY_URL"),
        Some("https://vexa-gateway.vexa-system.svc:8443")
    );
    assert_eq!(
        env(
            container(operator, "operator"),
            "VEXA_KEYCLOAK_ADMIN_PASSWORD_FILE"
        ),
        Some("/var/run/vexa/keycloak-admin/password")
    );
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn envoy_requires_spire_client_certificates_and_asks_the_filter_with_body_and_peer_certificate() {
    let docs = render("", ENABLED).unwrap();
    let cm = find(&docs, "ConfigMap", "vexa-gateway-envoy").expect("the Envoy ConfigMap");
    let envoy: Value = serde_saphyr::from_str(cm["data"]["envoy.yaml"].as_str().unwrap()).unwrap();
    let listener = &envoy["static_resources"]["listeners"][0];
    let chain = &listener["filter_chains"][0];
    let tls = &chain["transport_socket"]["typed_config"];
    assert_eq!(tls["require_client_certificate"], true);
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        "/var/run/vexa/gateway-tls/bundle.crt"
    );
    let hcm = &chain["filters"][0]["typed_config"];
    assert_eq!(hcm["forward_client_cert_details"], "SANITIZE_SET");
    let filters = hcm["http_filters"].as_array().unwrap();
    assert_eq!(
        filters[0]["name"], "envoy.filters.http.ext_authz",
        "authorization runs first"
    );
    let authz = &filters[0]["typed_config"];
    assert_eq!(authz["failure_mode_allow"], false);
    assert_eq!(authz["include_peer_certificate"], true);
    assert_eq!(authz["with_request_body"]["allow_partial_message"], false);
    assert!(
        hcm["route_config"]["request_headers_to_remove"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h.as_str().unwrap().starts_with("x-vexa-"))
    );
    // The filter routes by setting :authority; a host rewrite header would make the forward
    // proxy connect to the gateway's own listener (a loop through the filter).
    let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
    assert_eq!(route["cluster"], "tools");
    assert!(route.get("host_rewrite_header").is_none(), "{route:?}");
    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let filter = clusters
        .iter()
        .find(|c| c["name"] == "gateway-filter")
        .unwrap();
    let addr = &filter["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(
        addr["address"], "127.0.0.1",
        "the filter is reached on the pod's loopback only"
    );
    assert_eq!(
        envoy["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn dispatch_pods_may_reach_the_gateway_only_when_it_is_enabled() {
    let egress_ports = |docs: &[Value]| -> Vec<i64> {
        let np = find(docs, "NetworkPolicy", "vexa-agents").expect("the agents' policy");
        np["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["port"].as_i64())
            .collect()
    };
    let on = render("", ENABLED).unwrap();
    assert!(egress_ports(&on).contains(&8443));
    let np = find(&on, "NetworkPolicy", "vexa-agents").unwrap();
    let rule = np["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 8443)
        .unwrap();
    assert_eq!(
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "gateway"
    );

    let off = render("", &["tenants.namespaces={team-a}"]).unwrap();
    assert!(!egress_ports(&off).contains(&8443));
    assert!(find(&off, "Deployment", "vexa-gateway").is_none());
    assert!(
        env(
            container(find(&off, "Deployment", "vexa").unwrap(), "operator"),
            "VEXA_MCP_GATEWAY_URL"
        )
        .is_none()
    );
}

#[test]
#[ignore = "needs helm on PATH: eval \"$(hack/cluster env)\""]
fn an_incomplete_gateway_configuration_is_refused_with_what_is_missing() {
    let e = render("", &["gateway.enabled=true"]).unwrap_err();
    assert!(e.contains("needs spire.enabled"), "{e}");
    let e = render("", &["gateway.enabled=true", "spire.enabled=true"]).unwrap_err();
    assert!(e.contains("gateway.tls.secretName"), "{e}");
    let e = render(
        "",
        &[
            "gateway.enabled=true",
            "spire.enabled=true",
            "gateway.tls.secretName=s",
        ],
    )
    .unwrap_err();
    assert!(e.contains("keycloak.url"), "{e}");
}
