//! The agent's MCP endpoint (SPEC §4, §5.5): an HTTP server on the pod's loopback, served by the
//! trusted worker. For each granted Tool the agent finds `http://127.0.0.1:<port>/tools/<tool>`
//! in its MCP config ([`config`]); each request (POST JSON-RPC, GET SSE, DELETE session) goes on
//! to the gateway's `/tools/<namespace>/<tool>` over mutual TLS with the pod's SVID ([`tls`]),
//! with the dispatch token as `authorization: Bearer …`, read from the dispatch's Secret for
//! every request (the operator re-mints it). Only the MCP headers pass, both ways: whatever
//! credential or `x-vexa-*` header the agent sends is dropped, and the agent never sees the
//! token or the SVID. Responses stream through (SSE), never buffered whole.

pub mod config;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use vexa_core::gateway::{TOKEN_HEADER, gateway_spiffe_id, tool_path};

pub use tls::{SvidSource, Workload};

/// The largest request body the agent may send (a JSON-RPC message).
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// How many requests (open SSE streams included) may be in flight at once.
pub const MAX_CONCURRENT: usize = 32;
/// How long the gateway may take to answer with its response's head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the gateway (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The request headers that pass to the gateway (the MCP streamable HTTP transport's); every
/// other one, `authorization`, cookies and `x-vexa-*` included, is dropped.
pub const REQUEST_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
    HeaderName::from_static("last-event-id"),
];
/// The response headers that pass back to the agent.
pub const RESPONSE_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    HeaderName::from_static("mcp-session-id"),
    HeaderName::from_static("mcp-protocol-version"),
];

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What the endpoint needs to know.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// The gateway's base URL (`https://host:port`).
    pub gateway: String,
    /// The loopback port to serve on (0: any free one).
    pub port: u16,
    /// The dispatch's namespace: the gateway path's middle part.
    pub namespace: String,
    /// The granted Tool objects' names: the only paths served.
    pub tools: Vec<String>,
    /// The file holding the current dispatch token (a key of the dispatch's Secret).
    pub token_file: PathBuf,
    /// The pod's trust domain: the gateway must be `spiffe://<it>/vexa/gateway`.
    pub trust_domain: String,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The gateway URL is not usable.
    #[error("the MCP gateway URL {0:?} is not an https:// URL with a host")]
    Gateway(String),
    /// The TLS settings.
    #[error("the TLS settings for the MCP gateway cannot be built: {0}")]
    Tls(#[from] rustls::Error),
    /// The loopback listener.
    #[error("cannot listen on 127.0.0.1:{port} for the agent's tool calls: {source}")]
    Listen {
        /// The port asked for.
        port: u16,
        /// Why.
        source: io::Error,
    },
}

struct State {
    settings: EndpointSettings,
    client: Https,
    permits: Arc<Semaphore>,
}

/// The running endpoint; it stops when dropped.
pub struct McpEndpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for McpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl McpEndpoint {
    /// Listens on the loopback and serves until dropped.
    pub async fn start(
        settings: EndpointSettings,
        svids: Arc<dyn SvidSource>,
    ) -> Result<Self, EndpointError> {
        let gateway: Uri = settings
            .gateway
            .parse()
            .map_err(|_| EndpointError::Gateway(settings.gateway.clone()))?;
        if gateway.scheme_str() != Some("https") || gateway.host().is_none() {
            return Err(EndpointError::Gateway(settings.gateway.clone()));
        }
        let tls = tls::client_config(svids, &gateway_spiffe_id(&settings.trust_domain))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let port = settings.port;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| EndpointError::Listen { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EndpointError::Listen { port, source })?;
        tracing::info!(%addr, gateway = %settings.gateway, tools = ?settings.tools, "MCP endpoint listens");
        let state = Arc::new(State {
            settings,
            client,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        });
        let task =
            crate::loopback::serve(listener, "MCP endpoint", state, |state, req| async move {
                handle(&state, req).await
            });
        Ok(Self { addr, task })
    }

    /// Where the agent reaches `tool`.
    pub fn url(&self, tool: &str) -> String {
        local_url(self.addr, tool)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for McpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `http://<addr>/tools/<tool>`: the agent's URL of a granted Tool.
pub fn local_url(addr: SocketAddr, tool: &str) -> String {
    format!("http://{addr}/tools/{tool}")
}

/// The granted Tool a local path names (`/tools/<tool>`, nothing after it), or `None`.
pub fn local_tool<'a>(path: &str, tools: &'a [String]) -> Option<&'a str> {
    let name = path.strip_prefix("/tools/")?;
    tools.iter().find(|t| *t == name).map(String::as_str)
}

/// The request headers the gateway gets: the MCP ones the agent sent, and the token.
pub fn forwarded_headers(from: &HeaderMap, token: &HeaderValue) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &REQUEST_HEADERS {
        for value in from.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(HeaderName::from_static(TOKEN_HEADER), token.clone());
    out
}

/// The response headers the agent gets back.
pub fn returned_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &RESPONSE_HEADERS {
        for value in from.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A JSON-RPC error the agent can read (`id` from its request when it had one).
pub fn refusal(status: StatusCode, id: &serde_json::Value, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32000, "message": message},
    });
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The JSON-RPC id of a request body, or `null`.
fn request_id(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// The dispatch token as a header value, read now (the operator re-mints it).
fn bearer(file: &PathBuf) -> Result<HeaderValue, String> {
    let token = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "the dispatch token {} cannot be read ({e}): the run has no credential for its tools",
            file.display()
        )
    })?;
    HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| "the dispatch token is not valid header text".to_owned())
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let null = serde_json::Value::Null;
    let Some(tool) = local_tool(req.uri().path(), &state.settings.tools) else {
        return refusal(
            StatusCode::NOT_FOUND,
            &null,
            &format!(
                "no granted tool at {}: this dispatch's tools are at /tools/<tool> for {}",
                req.uri().path(),
                state.settings.tools.join(", ")
            ),
        );
    };
    if ![Method::POST, Method::GET, Method::DELETE].contains(req.method()) {
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            &null,
            "the MCP endpoint takes POST, GET and DELETE",
        );
    }
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            &null,
            &format!("more than {MAX_CONCURRENT} tool requests at once; retry shortly"),
        );
    };
    let (parts, body) = req.into_parts();
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_REQUEST_BODY)
    {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, &null, &too_large());
    }
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return refusal(StatusCode::PAYLOAD_TOO_LARGE, &null, &too_large()),
    };
    let id = request_id(&body);
    let token = match bearer(&state.settings.token_file) {
        Ok(t) => t,
        Err(why) => {
            tracing::error!(%why, "tool call without a token");
            return refusal(StatusCode::SERVICE_UNAVAILABLE, &id, &why);
        }
    };
    let uri = format!(
        "{}{}",
        state.settings.gateway.trim_end_matches('/'),
        tool_path(&state.settings.namespace, tool)
    );
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method.clone();
    *out.headers_mut() = forwarded_headers(&parts.headers, &token);
    *out.uri_mut() = match uri.parse() {
        Ok(u) => u,
        Err(_) => return refusal(StatusCode::BAD_GATEWAY, &id, "bad gateway URL"),
    };
    let sent = tokio::time::timeout(RESPONSE_TIMEOUT, state.client.request(out)).await;
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = error_chain(&e);
            tracing::warn!(%tool, error = %why, "the MCP gateway is unreachable");
            return refusal(
                StatusCode::BAD_GATEWAY,
                &id,
                &format!("the MCP gateway is unreachable for tool {tool}: {why}"),
            );
        }
        Err(_) => {
            return refusal(
                StatusCode::GATEWAY_TIMEOUT,
                &id,
                &format!(
                    "the MCP gateway did not answer within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ),
            );
        }
    };
    tracing::debug!(%tool, method = %parts.method, status = %response.status(), "tool request forwarded");
    let (head, body) = response.into_parts();
    let mut back = Response::new(
        Held {
            inner: body,
            _permit: permit,
        }
        .boxed(),
    );
    *back.status_mut() = head.status;
    *back.headers_mut() = returned_headers(&head.headers);
    back
}

fn too_large() -> String {
    format!("the request body is over {MAX_REQUEST_BODY} bytes")
}

/// An error with its causes (a TLS refusal sits several levels down).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A response body streamed through, holding its concurrency permit until it ends.
struct Held {
    inner: Incoming,
    _permit: OwnedSemaphorePermit,
}

impl Body for Held {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_granted_tools_are_served_at_their_exact_path() {
        let tools = vec!["notes-append".to_owned(), "notes-send".to_owned()];
        assert_eq!(
            local_tool("/tools/notes-append", &tools),
            Some("notes-append")
        );
        for path in [
            "/tools/other",
            "/tools/notes-append/x",
            "/tools/",
            "/tools/../notes-append",
            "/notes-append",
            "/tools/team-a/notes-append",
        ] {
            assert_eq!(local_tool(path, &tools), None, "{path}");
        }
    }

    #[test]
    fn the_agents_credentials_and_internal_headers_never_pass() {
        let mut from = HeaderMap::new();
        from.insert(
            header::AUTHORIZATION,
            "Bearer agent-forged".parse().unwrap(),
        );
        from.insert("x-vexa-route", "evil:80".parse().unwrap());
        from.insert("x-forwarded-client-cert", "By=spiffe://x".parse().unwrap());
        from.insert(header::COOKIE, "a=b".parse().unwrap());
        from.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        from.insert(
            header::ACCEPT,
            "application/json, text/event-stream".parse().unwrap(),
        );
        from.insert("mcp-session-id", "s1".parse().unwrap());
        from.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        from.insert("last-event-id", "7".parse().unwrap());
        let token = HeaderValue::from_static("Bearer dispatch.jwt");
        let out = forwarded_headers(&from, &token);
        assert_eq!(out.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(out[header::AUTHORIZATION], "Bearer dispatch.jwt");
        for dropped in ["x-vexa-route", "x-forwarded-client-cert", "cookie"] {
            assert!(!out.contains_key(dropped), "{dropped}");
        }
        for kept in [
            "content-type",
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ] {
            assert_eq!(out[kept], from[kept], "{kept}");
        }
    }

    #[test]
    fn only_mcp_headers_come_back() {
        let mut from = HeaderMap::new();
        from.insert("mcp-session-id", "s1".parse().unwrap());
        from.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        from.insert(header::SET_COOKIE, "k=v".parse().unwrap());
        from.insert("x-vexa-debug", "1".parse().unwrap());
        let out = returned_headers(&from);
        assert_eq!(out.len(), 2);
        assert_eq!(out["mcp-session-id"], "s1");
    }

    #[test]
    fn a_refusal_is_a_json_rpc_error_with_the_requests_id() {
        let id = request_id(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#);
        assert_eq!(id, serde_json::json!(7));
        assert_eq!(request_id(b"not json"), serde_json::Value::Null);
        let r = refusal(StatusCode::BAD_GATEWAY, &id, "down");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
