//! The operator's HTTP server: `/metrics`, `/healthz` and `/readyz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::metrics::Metrics;

/// Content type of the OpenMetrics text format that `/metrics` serves.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
}

/// The routes: `/metrics`, `/healthz` (the process is alive) and `/readyz` (`ready` is true).
pub fn router(metrics: Arc<Metrics>, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, ready })
}

/// Serves [`router`] on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics and health checks: {e}; set --http-addr (VEXA_HTTP_ADDR) to a free address"),
        )
    })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed; see the operator's log\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if *state.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting to learn who holds the leader lease, or for the controller's caches to sync\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics() {
        let metrics = Arc::new(Metrics::new());
        metrics.dispatch.reconcile_failed("KubeApi");
        let (_tx, rx) = watch::channel(false);
        let (status, content_type, body) = get(router(metrics, rx), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        assert!(body.contains("vexa_dispatch_reconcile_errors_total{reason=\"KubeApi\"} 1\n"));
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn healthz_answers_while_not_ready() {
        let (_tx, rx) = watch::channel(false);
        let (status, _, body) = get(router(Arc::new(Metrics::new()), rx), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_signal() {
        let (tx, rx) = watch::channel(false);
        let app = router(Arc::new(Metrics::new()), rx);
        let (status, _, body) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("not ready"), "{body}");

        tx.send_replace(true);
        let (status, _, body) = get(app, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn serve_stops_on_shutdown_and_reports_a_busy_port() {
        let (_tx, rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, metrics.clone(), rx.clone(), async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("VEXA_HTTP_ADDR"), "{err}");

        drop(taken);
        serve(addr, metrics, rx, async {}).await.unwrap();
    }
}
