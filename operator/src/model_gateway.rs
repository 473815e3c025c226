//! The model gateway: where every dispatch's model requests leave the cluster's trust boundary
//! (SPEC §4). A dispatch pod's worker forwards its agent's requests here with the dispatch's
//! gateway token; the gateway checks the token's signature, that the Dispatch still exists
//! with that UID and has not ended, reads the runner's credential from a Secret of the
//! operator's own namespace, and sends the request on to the runner's model endpoint with it.
//! Every replica serves it (it holds no state); the credential never leaves this process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use vexa_core::model::{
    DEFAULT_ENDPOINT, GATEWAY_TOKEN_HEADER, GatewayToken, forward_uri, strip_credentials,
    strip_hop_by_hop,
};
use vexa_crds::{AgentRunner, CredentialScheme, Dispatch, DispatchPhase};

/// Why a model request was not forwarded. Each is answered in the model API's error shape, so
/// the agent CLI shows the message.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No token, or one that does not verify.
    #[error(
        "the request carries no valid dispatch token: model requests are accepted only from a dispatch pod's worker"
    )]
    Unauthenticated,
    /// The dispatch is gone, was recreated, or has ended.
    #[error("dispatch {0} is not running: its model access has ended")]
    Ended(String),
    /// The runner brokers no credential, or it cannot be read.
    #[error("{0}")]
    Credential(String),
    /// The API server failed.
    #[error("the Kubernetes API failed: {0}")]
    Api(#[from] kube::Error),
    /// The model endpoint failed.
    #[error("the model endpoint {endpoint} failed: {error}")]
    Upstream {
        /// Where the request went.
        endpoint: String,
        /// What happened.
        error: String,
    },
}

impl GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthenticated => StatusCode::UNAUTHORIZED,
            GatewayError::Ended(_) => StatusCode::FORBIDDEN,
            GatewayError::Credential(_) => StatusCode::FORBIDDEN,
            GatewayError::Api(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short word for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated => "Unauthenticated",
            GatewayError::Ended(_) => "DispatchEnded",
            GatewayError::Credential(_) => "Credential",
            GatewayError::Api(_) => "ApiError",
            GatewayError::Upstream { .. } => "Upstream",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let kind = match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            _ => "api_error",
        };
        let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": self.to_string()}});
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// The gateway's state.
pub struct Gateway {
    client: kube::Client,
    key: Arc<[u8]>,
    namespace: String,
    upstream: Client<HttpsConnector<HttpConnector>, Body>,
    jwks: Option<tokio::sync::watch::Receiver<vexa_policy::token::Jwks>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway verifying tokens with `key` and reading credentials in `namespace`.
    pub fn new(client: kube::Client, key: Arc<[u8]>, namespace: String) -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client,
            key,
            namespace,
            upstream: Client::builder(TokioExecutor::new()).build(https),
            jwks: None,
        })
    }

    /// Also serves the dispatch tokens' public keys at [`JWKS_PATH`] (what the MCP gateway
    /// verifies tokens with), as they rotate.
    pub fn with_jwks(
        mut self,
        jwks: tokio::sync::watch::Receiver<vexa_policy::token::Jwks>,
    ) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Which dispatch asks, checked against the API server.
    async fn dispatch(&self, token: Option<&HeaderValue>) -> Result<Dispatch, GatewayError> {
        let token = token
            .and_then(|t| t.to_str().ok())
            .ok_or(GatewayError::Unauthenticated)?;
        let who =
            GatewayToken::verify(&self.key, token).map_err(|_| GatewayError::Unauthenticated)?;
        let id = format!("{}/{}", who.namespace, who.name);
        let d = Api::<Dispatch>::namespaced(self.client.clone(), &who.namespace)
            .get_opt(&who.name)
            .await?
            .filter(|d| d.metadata.uid.as_deref() == Some(who.uid.as_str()))
            .ok_or_else(|| GatewayError::Ended(id.clone()))?;
        let phase = d.status.as_ref().and_then(|s| s.phase);
        match phase {
            Some(DispatchPhase::Starting | DispatchPhase::Running | DispatchPhase::Stopping) => {
                Ok(d)
            }
            _ => Err(GatewayError::Ended(id)),
        }
    }

    /// The runner's endpoint and the credential header to add.
    async fn credential(
        &self,
        d: &Dispatch,
    ) -> Result<(String, header::HeaderName, HeaderValue), GatewayError> {
        let runner = Api::<AgentRunner>::all(self.client.clone())
            .get_opt(&d.spec.runner)
            .await?
            .ok_or_else(|| {
                GatewayError::Credential(format!("AgentRunner {} not found", d.spec.runner))
            })?;
        let cred = runner.spec.model_credential.ok_or_else(|| {
            GatewayError::Credential(format!(
                "AgentRunner {} brokers no model credential",
                d.spec.runner
            ))
        })?;
        let r = &cred.secret_ref;
        if r.namespace
            .as_deref()
            .is_some_and(|ns| ns != self.namespace)
        {
            return Err(GatewayError::Credential(format!(
                "AgentRunner {}'s model credential must be a Secret in the operator's namespace {}",
                d.spec.runner, self.namespace
            )));
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&r.name)
            .await?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(&r.key))
            .ok_or_else(|| {
                GatewayError::Credential(format!(
                    "the model credential {}/{} key {:?} is missing",
                    self.namespace, r.name, r.key
                ))
            })?;
        let text = String::from_utf8(value.0)
            .map_err(|_| GatewayError::Credential("the model credential is not text".into()))?;
        let (name, value) = match cred.scheme.unwrap_or(CredentialScheme::XApiKey) {
            CredentialScheme::XApiKey => (
                header::HeaderName::from_static("x-api-key"),
                text.trim().to_owned(),
            ),
            CredentialScheme::Bearer => (header::AUTHORIZATION, format!("Bearer {}", text.trim())),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            GatewayError::Credential("the model credential is not valid header text".into())
        })?;
        value.set_sensitive(true);
        let endpoint = cred.endpoint.unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        Ok((endpoint, name, value))
    }

    async fn forward(&self, req: Request) -> Result<Response, GatewayError> {
        let d = self
            .dispatch(req.headers().get(GATEWAY_TOKEN_HEADER))
            .await?;
        let (endpoint, name, value) = self.credential(&d).await?;
        let (mut parts, body) = req.into_parts();
        let upstream_error = |error: String| GatewayError::Upstream {
            endpoint: endpoint.clone(),
            error,
        };
        let base: Uri = endpoint
            .parse()
            .map_err(|e| upstream_error(format!("not a URL: {e}")))?;
        parts.uri = forward_uri(&base, &parts.uri)
            .ok_or_else(|| upstream_error("not a URL with a host".into()))?;
        strip_hop_by_hop(&mut parts.headers);
        strip_credentials(&mut parts.headers);
        parts.headers.insert(name, value);
        let id = format!(
            "{}/{}",
            d.metadata.namespace.as_deref().unwrap_or_default(),
            d.metadata.name.as_deref().unwrap_or_default()
        );
        tracing::debug!(dispatch = %id, method = %parts.method, path = %parts.uri.path(), "forwarding a model request");
        let response = self
            .upstream
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| upstream_error(e.to_string()))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

async fn handle(State(gateway): State<Arc<Gateway>>, req: Request) -> Response {
    match gateway.forward(req).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(reason = e.reason(), error = %e, "model request refused");
            e.into_response()
        }
    }
}

/// Where the dispatch tokens' JWKS is served (RFC 8414's well-known location).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

async fn jwks(State(gateway): State<Arc<Gateway>>) -> Response {
    match &gateway.jwks {
        Some(keys) => {
            let body = serde_json::to_vec(&*keys.borrow()).unwrap_or_default();
            (
                [
                    (header::CONTENT_TYPE, "application/jwk-set+json"),
                    (header::CACHE_CONTROL, "max-age=60"),
                ],
                body,
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "this operator mints no dispatch tokens",
        )
            .into_response(),
    }
}

/// The gateway's routes: the JWKS, and every other path is a model API path.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(JWKS_PATH, axum::routing::get(jwks))
        .fallback(handle)
        .with_state(gateway)
}

/// Serves the gateway on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for the model gateway: {e}; set --model-gateway-addr (VEXA_MODEL_GATEWAY_ADDR) to a free address"),
        )
    })?;
    tracing::info!(%addr, "serving the model gateway");
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}
