//! The streams API (`streams.vexa.ai/v1`, contract in `vexa_stream::api`): people read a
//! dispatch's stream and send it turns through the Kubernetes API server, never with Redis
//! credentials (SPEC §4). The API server authenticates the user and proxies the request here
//! (an aggregated API: an `APIService` pointing at the operator's Service); `front_proxy`
//! believes its headers only on a connection with its client certificate, `authorize` asks the
//! cluster's RBAC about the Dispatch, `routes` reads and writes Redis with the operator's own
//! credentials; `knowledge` reads workspaces through their trusted readers and turns uploads
//! into Cards. Every replica serves it.

pub mod audit;
pub mod authorize;
pub mod front_proxy;
pub mod knowledge;
pub mod routes;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;

use front_proxy::FrontProxy;
use routes::Streams;

/// Why the streams API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API server's front-proxy settings.
    #[error(transparent)]
    FrontProxy(#[from] front_proxy::FrontProxyError),
    /// The TLS files.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Redis.
    #[error("the streams API's Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Listening or serving.
    #[error("the streams API on {addr}: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// The serving certificate (PEM file).
    pub cert: String,
    /// Its key (PEM file).
    pub key: String,
    /// Redis as the operator reaches it (as its admin user).
    pub redis: redis::Client,
    /// The audit log it serves.
    pub audit: audit::AuditSource,
    /// The image a workspace's reader runs (the agent worker's).
    pub reader_image: String,
}

/// Binds the listener (so a caller knows the port is taken before anything else starts) and
/// returns the server to run until `shutdown`.
pub async fn bind(
    client: Client,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), ServeError>> + Send + 'static, ServeError> {
    let front = Arc::new(FrontProxy::load(&client).await?);
    let config = tls::server_config(&settings.cert, &settings.key, &front)?;
    let redis = settings.redis.clone();
    let addr = settings.addr;
    let io = move |source| ServeError::Io { addr, source };
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
    let listener = tls::FrontProxyListener::new(tcp, config, front.clone()).map_err(io)?;
    let app = routes::router(Streams {
        client,
        redis,
        front,
        audit: settings.audit.clone(),
        readers: knowledge::Readers::new(settings.reader_image.clone()),
    });
    tracing::info!(%addr, "serving the streams API (streams.vexa.ai) to the API server's front proxy");
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io)
    })
}
