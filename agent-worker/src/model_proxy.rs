//! The agent's model endpoint: an HTTP proxy on the pod's loopback, served by the trusted
//! worker (SPEC §4). The agent CLI is pointed at it (`ANTHROPIC_BASE_URL`-style) and holds only
//! a placeholder key; the proxy drops whatever credential the agent sends, adds the dispatch's
//! gateway token and forwards to the operator's model gateway, which adds the real credential.
//! On the way back it counts the tokens each response reports and, past the dispatch's budget,
//! refuses further requests.
//!
//! Bodies stream through in both directions; only lines that carry `usage` are parsed, and a
//! line is kept in memory only up to [`MAX_METERED_LINE`] bytes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vexa_core::ModelUsage;
use vexa_core::model::{
    GATEWAY_TOKEN_HEADER, UsageMeter, forward_uri, strip_credentials, strip_hop_by_hop,
};

/// The longest response line the meter looks at; usage lines are far shorter.
pub const MAX_METERED_LINE: usize = 64 * 1024;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What the proxy needs to know.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The model gateway's base URL (`http://host:port`).
    pub gateway: Uri,
    /// The dispatch's gateway token.
    pub token: String,
    /// Most tokens the run may use (`None`: no budget).
    pub budget: Option<i64>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The gateway URL is not usable.
    #[error("the model gateway URL {0:?} is not an http:// URL with a host")]
    Gateway(String),
    /// The token is not a valid header value.
    #[error("the dispatch's model token is not valid header text")]
    Token,
    /// The loopback listener.
    #[error("cannot listen on the loopback for the agent's model requests: {0}")]
    Listen(#[from] io::Error),
}

struct State {
    gateway: Uri,
    token: HeaderValue,
    budget: Option<i64>,
    usage: Mutex<ModelUsage>,
    client: Client<HttpConnector, Incoming>,
}

impl State {
    fn usage(&self) -> ModelUsage {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, used: ModelUsage) {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner) += used;
    }
}

/// The running proxy.
pub struct ModelProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ModelProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelProxy")
            .field("addr", &self.addr)
            .field("usage", &self.state.usage())
            .finish_non_exhaustive()
    }
}

impl ModelProxy {
    /// Listens on an unused loopback port and serves until dropped.
    pub async fn start(settings: ProxySettings) -> Result<Self, ProxyError> {
        let gateway = settings.gateway;
        if gateway.scheme_str() != Some("http") || gateway.host().is_none() {
            return Err(ProxyError::Gateway(gateway.to_string()));
        }
        let token = HeaderValue::from_str(settings.token.trim()).map_err(|_| ProxyError::Token)?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            gateway,
            token,
            budget: settings.budget,
            usage: Mutex::new(ModelUsage::default()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let task = crate::loopback::serve(
            listener,
            "model proxy",
            state.clone(),
            |state, req| async move { handle(&state, req).await },
        );
        tracing::info!(%addr, gateway = %state.gateway, budget = ?state.budget, "model proxy listens");
        Ok(Self { addr, state, task })
    }

    /// The base URL the agent is given.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The tokens counted so far.
    pub fn usage(&self) -> ModelUsage {
        self.state.usage()
    }
}

impl Drop for ModelProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An error the agent CLI can show: the Anthropic API's error shape.
fn refuse(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
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

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(budget) = state.budget {
        let used = state.usage().total();
        if used >= budget {
            tracing::warn!(
                used,
                budget,
                "model request refused: the token budget is spent"
            );
            return refuse(
                StatusCode::FORBIDDEN,
                "permission_error",
                &format!(
                    "this dispatch's model token budget ({budget}) is spent ({used} used); raise spec.limits.modelTokens for the next run"
                ),
            );
        }
    }
    let (mut parts, body) = req.into_parts();
    let Some(uri) = forward_uri(&state.gateway, &parts.uri) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the request has no usable path",
        );
    };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    strip_credentials(&mut parts.headers);
    parts.headers.insert(
        HeaderName::from_static(GATEWAY_TOKEN_HEADER),
        state.token.clone(),
    );
    let response = match state.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the model gateway is unreachable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "api_error",
                &format!("the model gateway is unreachable: {e}"),
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let metered = Metered {
        inner: body,
        line: Vec::new(),
        skipping: false,
        meter: Some(UsageMeter::default()),
        state: state.clone(),
    };
    Response::from_parts(parts, metered.boxed())
}

/// A response body that counts the usage it carries as it streams by.
struct Metered {
    inner: Incoming,
    line: Vec<u8>,
    /// The current line is over [`MAX_METERED_LINE`]: skip to its end.
    skipping: bool,
    meter: Option<UsageMeter>,
    state: Arc<State>,
}

impl Metered {
    fn scan(&mut self, mut data: &[u8]) {
        let Some(meter) = self.meter.as_mut() else {
            return;
        };
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'\n');
            let (piece, rest) = match end {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &[][..]),
            };
            if !self.skipping {
                if self.line.len() + piece.len() > MAX_METERED_LINE {
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            if end.is_some() {
                if !self.skipping {
                    meter.observe(&String::from_utf8_lossy(&self.line));
                }
                self.line.clear();
                self.skipping = false;
            }
            data = rest;
        }
    }

    fn finish(&mut self) {
        if let Some(mut meter) = self.meter.take() {
            if !self.skipping && !self.line.is_empty() {
                meter.observe(&String::from_utf8_lossy(&self.line));
            }
            self.state.add(meter.finish());
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    self.scan(&data);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The agent hung up mid-response: what it received still counts.
        self.finish();
    }
}
