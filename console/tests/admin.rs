//! The admin page's operator section, offline: the API server is a script that answers the
//! person's requests (the lists, and `/readyz` and `/metrics` through the service proxy), so
//! what the page shows for a refusal, an operator that is not ready and a live one is pinned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use kube::Client;
use tower::ServiceExt;
use vexa_console::cluster::{ApiServer, Person};
use vexa_console::health::{OperatorService, with_operator};
use vexa_console::session::{Limits, Sessions};
use vexa_console::{App, router};

const PROXY: &str = "/api/v1/namespaces/vexa-system/services/vexa-metrics:http/proxy/";

const METRICS: &str = "\
# TYPE vexa_dispatch_job_created_latency_seconds histogram
vexa_dispatch_job_created_latency_seconds_sum 0.42
vexa_dispatch_job_created_latency_seconds_count 2
vexa_dispatch_job_created_latency_seconds_bucket{le=\"0.1\"} 0
vexa_dispatch_job_created_latency_seconds_bucket{le=\"0.3\"} 2
vexa_dispatch_job_created_latency_seconds_bucket{le=\"+Inf\"} 2
vexa_dispatches{phase=\"running\"} 3
vexa_dispatches{phase=\"queued\"} 1
vexa_dispatch_reconciles_total 9
vexa_dispatch_reconcile_errors_total{reason=\"Conflict\"} 1
vexa_dispatch_runs_total{reason=\"completed<script>\"} 1
# EOF
";

fn status(code: u16, message: &str) -> Response<kube::client::Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden", "code": code,
    });
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn text(code: u16, body: &str) -> Response<kube::client::Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap()
}

/// The admin page as alice, whose API server answers a proxied `path` with `proxied(path)`
/// and refuses every list.
async fn admin_page(
    proxied: impl Fn(&str) -> Response<kube::client::Body> + Send + 'static,
) -> (StatusCode, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (svc, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    tokio::spawn(async move {
        while let Some((request, reply)) = handle.next_request().await {
            let path = request.uri().path().to_owned();
            reply.send_response(match path.strip_prefix(PROXY) {
                Some(rest) => proxied(rest),
                None => status(403, "lists are not the point here"),
            });
        }
    });
    let sessions = Sessions::new(Limits::default(), true);
    let id = sessions
        .start(
            Person {
                name: "alice".into(),
                groups: vec![],
            },
            Client::new(svc, "default"),
        )
        .unwrap();
    let app = App {
        api: ApiServer::new("https://127.0.0.1:1", ca.to_str().unwrap()).unwrap(),
        sessions,
        default_namespace: Arc::from("default"),
        oidc: None,
    };
    let service: OperatorService = "vexa-system/vexa-metrics:http".parse().unwrap();
    let request = Request::get("/admin")
        .header(header::HOST, "console.test")
        .header(header::COOKIE, format!("__Host-vexa-session={id}"))
        .body(Body::empty())
        .unwrap();
    let response = with_operator(router(app), service)
        .oneshot(request)
        .await
        .unwrap();
    let code = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_person_who_may_not_read_the_metrics_is_told_and_the_page_still_renders() {
    let forbidden = "services \"vexa-metrics:http\" is forbidden: User \"alice\" cannot get \
                     resource \"services/proxy\" in API group \"\" in the namespace \"vexa-system\"";
    let (code, page) = admin_page(move |_| status(403, forbidden)).await;
    assert_eq!(code, StatusCode::OK);
    let escaped = forbidden.replace('"', "&quot;");
    assert!(
        page.contains(&format!(
            "id=\"operator-refused\">You may not read the operator's metrics (get services/proxy \
             vexa-system/vexa-metrics:http): {escaped}</p>"
        )),
        "{page}"
    );
    assert!(!page.contains("id=\"operator-latency\""), "{page}");
    // The other sections say on their own what alice may not see.
    assert!(page.contains("id=\"runners-refused\""), "{page}");
}

#[tokio::test]
async fn a_live_operators_figures_are_shown_escaped() {
    let (code, page) = admin_page(|rest| match rest {
        "readyz" => text(200, "ok"),
        "metrics" => text(200, METRICS),
        _ => text(404, "no"),
    })
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("id=\"operator-ready\">yes<"), "{page}");
    assert!(page.contains("id=\"operator-active\">3<"), "{page}");
    assert!(page.contains("id=\"operator-queued\">1<"), "{page}");
    // The start latency: both observations in (0.1, 0.3]; p50 is 0.2 s, the mean exact.
    assert!(
        page.contains(
            "data-metric=\"vexa_dispatch_job_created_latency_seconds\"><td>Start: created → Job \
             created</td><td>2</td><td class=\"mean\">210 ms</td><td class=\"p50\">200 ms</td><td class=\"p95\">290 ms</td>"
        ),
        "{page}"
    );
    assert!(page.contains("Conflict: 1"), "{page}");
    assert!(page.contains("completed&lt;script&gt; 1"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("id=\"operator-read-at\""), "{page}");
}

#[tokio::test]
async fn an_operator_that_is_not_ready_says_why() {
    let (code, page) = admin_page(|rest| match rest {
        "readyz" => text(
            503,
            "not ready: waiting to learn who holds the leader lease",
        ),
        _ => text(200, METRICS),
    })
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("no: not ready: waiting to learn who holds the leader lease"),
        "{page}"
    );
}

#[tokio::test]
async fn metrics_larger_than_the_cap_are_refused() {
    let huge = "#".repeat(vexa_console::health::MAX_BODY + 1);
    let (code, page) = admin_page(move |rest| match rest {
        "readyz" => text(200, "ok"),
        _ => text(200, &huge),
    })
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("the operator's answer is larger than 4194304 bytes"),
        "{page}"
    );
}
