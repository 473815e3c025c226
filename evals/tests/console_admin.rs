//! The console's admin page shows the operator's health and key figures (issue #13), read as
//! the person through the API server's service proxy, never with rights of the console's own.
//!
//! A live operator (in this process, serving `/metrics` on the node's address) stands behind a
//! Service `vexa-metrics` (its Endpoints name that address, as the chart's Service's would name
//! the operator's pod); the chart's Role `vexa-operator-health`, as rendered, is bound to carol
//! in the eval's namespace; one dispatch runs on the fake worker. The console (its router, as
//! the binary serves it) then shows carol a real dispatch start latency, and tells alice, who
//! has no such Role, that she may not read it.
//!
//! Needs the hack/ cluster and helm: `eval "$(hack/cluster env)"`; the fake worker image is
//! built on first use. Run under `flock /tmp/vexa-eval.lock` (one in-process operator at a
//! time on the cluster).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tower::ServiceExt;
use vexa_console::cluster::ApiServer;
use vexa_console::health::{OperatorService, with_operator};
use vexa_console::session::{Limits, Sessions};
use vexa_console::{App, router};
use vexa_crds::Dispatch;
use vexa_evals::chart::{find, render};
use vexa_evals::fixtures::{
    FAKE_WORKER_IMAGE, chat_dispatch, fake_runner, fake_worker_image, free_port, node_ip,
    stop_reason, wait_dispatch, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::Operator;
use vexa_evals::users::{grant_role, token};
use vexa_evals::{TestNamespace, client, wait_for};

const HOST: &str = "console.test";
/// The dispatch start latency's histogram.
const START: &str = "vexa_dispatch_job_created_latency_seconds";

/// The console's routes, asked in process: a person signs in with their token.
struct Console(axum::Router);

impl Console {
    async fn send(&self, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
        let response = self.0.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Signs `person` in with their token, as the sign-in form does; returns the cookie.
    async fn sign_in(&self, person: &str) -> String {
        let request = Request::post("/signin")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, format!("http://{HOST}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={}", token(person))))
            .unwrap();
        let (status, headers, body) = self.send(request).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{person} signs in: {body}");
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }

    async fn admin(&self, cookie: &str, ns: &str) -> String {
        let request = Request::get(format!("/admin?namespace={ns}"))
            .header(header::HOST, HOST)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = self.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// The text of the element with `id="<id>"` (up to its closing tag).
fn element<'a>(page: &'a str, id: &str) -> Option<&'a str> {
    let start = page.find(&format!("id=\"{id}\""))?;
    let open = page[start..].find('>')? + start + 1;
    let close = page[open..].find("</")? + open;
    Some(&page[open..close])
}

/// The runs, p50 and p95 cells of the latency row of `metric`.
fn latency_row<'a>(page: &'a str, metric: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let row = &page[page.find(&format!("data-metric=\"{metric}\""))?..];
    let row = &row[..row.find("</tr>")?];
    let cell = |marker: &str| {
        let at = row.find(marker)? + marker.len();
        Some(&row[at..at + row[at..].find("</td>")?])
    };
    Some((
        cell("</td><td>")?,
        cell("class=\"p50\">")?,
        cell("class=\"p95\">")?,
    ))
}

#[tokio::test]
#[ignore = "needs the hack/ cluster and helm: eval \"$(hack/cluster env)\""]
async fn the_admin_page_shows_the_operators_figures_to_whom_rbac_lets_read_them() {
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "admin-page").await;
    let port = free_port();
    let http = format!("--http-addr={}:{port}", node_ip());
    let operator = Operator::start(&[
        "--job-ttl-seconds",
        "60",
        "--worker-image",
        FAKE_WORKER_IMAGE,
        &http,
    ]);
    operator.ready().await;

    // The operator behind a Service, as the chart's `vexa-metrics` (port `http`), in a
    // namespace of its own like the release's. The API server proxies only to an address a
    // pod of the Service's namespace has: a host-network pod lends the node's address, where
    // the operator listens.
    let release = TestNamespace::new(&admin, "admin-release").await;
    Api::<Namespace>::all(admin.clone())
        .patch(
            &release.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "privileged",
            }}})),
        )
        .await
        .unwrap();
    let lender: Pod = serde_json::from_value(json!({
        "metadata": {"name": "node-address"},
        "spec": {
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "sleep",
                "image": fake_worker_image(),
                "command": ["sleep", "3600"],
            }],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), &release.name);
    pods.create(&PostParams::default(), &lender).await.unwrap();
    let node = wait_for(
        "the host-network pod's address",
        Duration::from_secs(60),
        || async {
            pods.get("node-address")
                .await
                .ok()?
                .status?
                .pod_ip
                .filter(|ip| *ip == node_ip())
        },
    )
    .await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "vexa-metrics"},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": port}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), &release.name)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "vexa-metrics"},
        "subsets": [{
            "addresses": [{"ip": node, "targetRef": {
                "kind": "Pod", "name": "node-address", "namespace": release.name,
            }}],
            "ports": [{"name": "http", "port": port}],
        }],
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(admin.clone(), &release.name)
        .create(&PostParams::default(), &endpoints)
        .await
        .unwrap();

    // carol gets the chart's Role, exactly as rendered; alice nothing.
    let docs = render("", &["console.enabled=true"]).unwrap();
    let role = find(&docs, "Role", "vexa-operator-health").expect("the chart's Role");
    grant_role(
        &admin,
        &release.name,
        "carol",
        "vexa-operator-health",
        role["rules"].clone(),
    )
    .await;

    // One dispatch runs (on alice's notes, as the golden chat), so the start latency has an
    // observation.
    let runner = format!("fake-{}", ns.name);
    fake_runner(&admin, &ns, &runner, json!({})).await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice-notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch("first", &runner, "sleep 1"),
        )
        .await
        .unwrap();
    let done = wait_dispatch(
        &dispatches,
        "first",
        "a stop reason",
        Duration::from_secs(120),
        |d| !stop_reason(d).is_empty(),
    )
    .await;
    assert_eq!(stop_reason(&done), "completed");

    // The console, with no credentials: the kubeconfig only for the API server and its CA.
    let app = App {
        api: ApiServer::inferred().await.unwrap(),
        sessions: Sessions::new(Limits::default(), false),
        default_namespace: ns.name.as_str().into(),
        oidc: None,
    };
    let at: OperatorService = format!("{}/vexa-metrics:http", release.name)
        .parse()
        .unwrap();
    let console = Console(with_operator(router(app), at));

    let carol = console.sign_in("carol").await;
    // The RoleBinding takes effect once the API server's informers have it.
    let mut page = String::new();
    for _ in 0..30 {
        page = console.admin(&carol, &ns.name).await;
        if latency_row(&page, START).is_some_and(|(runs, _, _)| runs != "0") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(element(&page, "operator-ready"), Some("yes"), "{page}");
    let (runs, p50, p95) = latency_row(&page, START).expect(&page);
    assert_eq!(runs, "1", "{page}");
    assert!(p50.ends_with(" ms") || p50.ends_with(" s"), "p50 {p50}");
    let (running, running_p50, _) =
        latency_row(&page, "vexa_dispatch_running_latency_seconds").expect(&page);
    assert_eq!(running, "1", "{page}");
    assert!(
        element(&page, "operator-read-at")
            .unwrap()
            .contains(&format!("{}/vexa-metrics:http", release.name)),
        "{page}"
    );
    assert!(page.contains("data-controller=\"dispatch\""), "{page}");
    eprintln!(
        "carol sees: start latency p50 {p50}, p95 {p95}; created → running p50 {running_p50}; \
         active {:?}, waiting {:?}",
        element(&page, "operator-active"),
        element(&page, "operator-queued"),
    );

    let alice = console.sign_in("alice").await;
    let page = console.admin(&alice, &ns.name).await;
    let refused = element(&page, "operator-refused").expect("alice is told");
    assert!(
        refused.starts_with(&format!(
            "You may not read the operator's metrics (get services/proxy {}/vexa-metrics:http): ",
            release.name
        )) && refused.contains("cannot get resource &quot;services/proxy&quot;"),
        "{refused}"
    );
    assert!(element(&page, "operator-latency").is_none(), "{page}");
    eprintln!("alice sees: {refused}");

    operator.kill().await;
}
