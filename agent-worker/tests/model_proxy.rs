//! The agent's loopback model endpoint against a fake model gateway: what the gateway receives,
//! what the agent gets back, and the token count and budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vexa_agent_worker::model_proxy::{ModelProxy, ProxySettings};
use vexa_core::ModelUsage;

/// What the fake gateway saw: each request's path and headers.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

const STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":40,\"output_tokens\":1}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":25}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

async fn fake_gateway() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        record.lock().unwrap().push((
                            req.uri().path_and_query().unwrap().to_string(),
                            req.headers().clone(),
                        ));
                        let mut response = Response::new(Full::new(Bytes::from(STREAM)));
                        response
                            .headers_mut()
                            .insert("content-type", "text/event-stream".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/gw"), seen)
}

async fn post(base: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::post(format!("{base}/v1/messages?beta=true"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client
        .request(
            req.body(Full::new(Bytes::from(r#"{"stream":true}"#)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_agents_credential_is_replaced_by_the_dispatch_token_and_tokens_are_counted() {
    let (gateway, seen) = fake_gateway().await;
    let proxy = ModelProxy::start(ProxySettings {
        gateway: gateway.parse().unwrap(),
        token: "team-a/d/uid.abc\n".into(),
        budget: None,
    })
    .await
    .unwrap();
    // A prompt-injected agent sends a credential of its own, and tries to pass a token.
    let (status, body) = post(
        &proxy.base_url(),
        &[
            ("x-api-key", "sk-agent-forged"),
            ("authorization", "Bearer agent-forged"),
            ("x-vexa-dispatch-token", "team-b/other/uid.forged"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, STREAM, "the stream reaches the agent unchanged");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (path, headers) = &seen[0];
    assert_eq!(path, "/gw/v1/messages?beta=true");
    assert_eq!(headers.get_all("x-vexa-dispatch-token").iter().count(), 1);
    assert_eq!(headers["x-vexa-dispatch-token"], "team-a/d/uid.abc");
    assert!(headers.get("x-api-key").is_none());
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    // The body has been read to its end: the count is in.
    assert_eq!(
        proxy.usage(),
        ModelUsage {
            input_tokens: 40,
            output_tokens: 25,
            requests: 1
        }
    );
}

#[tokio::test]
async fn past_the_budget_requests_are_refused_without_reaching_the_gateway() {
    let (gateway, seen) = fake_gateway().await;
    let proxy = ModelProxy::start(ProxySettings {
        gateway: gateway.parse().unwrap(),
        token: "t".into(),
        budget: Some(100),
    })
    .await
    .unwrap();
    // 65 tokens each: the second request passes (65 < 100), the third is refused.
    for _ in 0..2 {
        assert_eq!(post(&proxy.base_url(), &[]).await.0, StatusCode::OK);
    }
    let (status, body) = post(&proxy.base_url(), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("token budget (100) is spent (130 used)"),
        "{body}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(proxy.usage().total(), 130);
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_clear_error_for_the_agent() {
    let proxy = ModelProxy::start(ProxySettings {
        // Nothing listens on port 9 of the loopback.
        gateway: "http://127.0.0.1:9".parse().unwrap(),
        token: "t".into(),
        budget: None,
    })
    .await
    .unwrap();
    let (status, body) = post(&proxy.base_url(), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("the model gateway is unreachable"), "{body}");
}
