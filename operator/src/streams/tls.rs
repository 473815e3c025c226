//! The streams API's TLS: a serving certificate from files, and a listener that accepts only
//! the API server's front proxy (a client certificate chained to the request-header CA, with
//! an allowed common name). Handshakes run concurrently, so a slow client holds up no one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::front_proxy::FrontProxy;

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("the streams API's TLS configuration is unusable: {0}")]
    Config(String),
}

/// The server's TLS configuration: `cert` and `key` (PEM files) to serve with, client
/// certificates verified against the front proxy's CA.
pub fn server_config(
    cert: &str,
    key: &str,
    front: &FrontProxy,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let invalid = |path: &str, message: String| TlsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert, "holds no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in &front.client_ca {
        roots
            .add(ca.clone())
            .map_err(|e| TlsError::Config(format!("the request-header CA: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections from the front proxy only (for `axum::serve`).
#[derive(Debug)]
pub struct FrontProxyListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl FrontProxyListener {
    /// Listens on `listener`; connections that fail the handshake or whose certificate's name
    /// is not allowed are closed and logged.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        front: Arc<FrontProxy>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a streams API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, front, tx) = (acceptor.clone(), front.clone(), tx.clone());
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "refused a streams API connection: TLS handshake failed (only the API server's front proxy may connect)");
                            return;
                        }
                        Err(_) => return,
                    };
                    let allowed = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .is_some_and(|leaf| front.allows(leaf));
                    if !allowed {
                        tracing::warn!(%peer, allowed = ?front.allowed_names, "refused a streams API connection: its client certificate's name is not an allowed front proxy");
                        return;
                    }
                    let _ = tx.send((tls, peer)).await;
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for FrontProxyListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
