//! Whether a Tool's MCP server answers: one bounded MCP `initialize` POST to `spec.server.url`.
//!
//! Server-side request forgery: whoever writes a Tool makes the operator send this request from
//! inside the cluster. So the probe is as small as it can be and still say "reachable":
//! - one POST of a fixed body (an MCP `initialize` naming the operator), no credential of any
//!   kind, never a redirect followed (the client has no redirect support), a short timeout on
//!   the connection and on the whole exchange;
//! - only the HTTP status is looked at and reported; the body is never read, so the answer of
//!   whatever listens there never reaches the Tool's status;
//! - loopback, link-local (cloud metadata, `169.254.169.254`), unspecified and multicast
//!   addresses are refused, whether written in the URL or what its name resolves to, so the
//!   probe never reaches the operator's own pod or a node's metadata service;
//! - a session the server opens for the `initialize` is ended with a DELETE (MCP streamable
//!   HTTP), so probing every minute does not pile up sessions.
//!
//! What is left is an oracle "something answers HTTP at this address" for whoever may create
//! Tools. The chart gives nobody but cluster admins write access to Tools (a Tool also decides
//! where the gateway sends tool calls with an exchanged token, a far larger power than this
//! probe); see README "Tools".

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Uri, header};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

/// The MCP protocol revision the probe's `initialize` names.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// The header in which a streamable-HTTP MCP server names the session it opened.
const SESSION_HEADER: &str = "mcp-session-id";

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The server answered with this HTTP status (any status: a 401 or a 405 is a server).
    Answered(u16),
    /// Nothing answered: why, in words (connection refused, timeout, DNS, TLS, a refused
    /// address).
    Unreachable(String),
}

/// Probes MCP servers; one per controller (it holds the connection pool).
#[derive(Clone)]
pub struct Prober {
    client: Client<HttpsConnector<HttpConnector<PublicOnly>>, Full<Bytes>>,
    timeout: Duration,
    guard: PublicOnly,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Prober {
    /// A prober whose every exchange (connect, TLS, answer) ends within `timeout`. TLS servers
    /// are verified against the system's roots, as the gateway verifies them.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        Self::guarded(timeout, PublicOnly { loopback: false })
    }

    fn guarded(timeout: Duration, guard: PublicOnly) -> std::io::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(guard);
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // Every probe opens its own connection: one minute apart, a pooled one is stale.
            .pool_max_idle_per_host(0)
            .build(https);
        Ok(Self {
            client,
            timeout,
            guard,
        })
    }

    /// POSTs an MCP `initialize` to `url`.
    pub async fn probe(&self, url: &str) -> Reach {
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => return Reach::Unreachable(format!("{url:?} is not a URL: {e}")),
        };
        if let Some(why) = uri.host().and_then(|h| self.guard.refused_literal(h)) {
            return Reach::Unreachable(why);
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "vexa-operator-probe", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(Bytes::from(body.to_string())));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Reach::Unreachable(format!("{url:?} cannot be requested: {e}")),
        };
        let answer = tokio::time::timeout(self.timeout, self.client.request(request)).await;
        let response = match answer {
            Err(_) => {
                return Reach::Unreachable(format!(
                    "no answer within {} s",
                    self.timeout.as_secs_f64()
                ));
            }
            Ok(Err(e)) => return Reach::Unreachable(describe(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let session = response.headers().get(SESSION_HEADER).cloned();
        // The body is dropped unread (and the connection with it).
        drop(response);
        if let Some(session) = session {
            let end = Request::builder()
                .method(Method::DELETE)
                .uri(uri)
                .header(SESSION_HEADER, session)
                .body(Full::new(Bytes::new()));
            if let Ok(end) = end {
                // Best effort: a server that keeps the session anyway expires it itself.
                let _ = tokio::time::timeout(self.timeout, self.client.request(end)).await;
            }
        }
        Reach::Answered(status)
    }
}

/// The innermost cause of a failed request, which says what went wrong ("Connection refused",
/// "failed to lookup address information", a TLS alert).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let inner = cause.to_string();
    if error.is_connect() {
        format!("cannot connect: {inner}")
    } else {
        format!("the exchange failed: {inner}")
    }
}

/// Why the probe does not contact `ip`, if it does not.
pub fn refused_ip(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (where cloud metadata services listen)")
        }
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            Some("not a unicast address")
        }
        IpAddr::V6(v6) if v6.is_loopback() => Some("a loopback address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Some("not a unicast address"),
        _ => None,
    }
}

/// A resolver that drops the addresses [`refused_ip`] refuses, and fails when none is left: a
/// name pointing at the metadata service or at localhost is not probed either.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly {
    // Unit tests only: their servers listen on loopback.
    loopback: bool,
}

impl PublicOnly {
    fn refused(self, ip: IpAddr) -> Option<&'static str> {
        if self.loopback && ip.is_loopback() {
            return None;
        }
        refused_ip(ip)
    }

    /// Why an address written in the URL (`host`, IPv6 in brackets) is refused, if it is.
    fn refused_literal(self, host: &str) -> Option<String> {
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        self.refused(ip).map(|what| {
            format!(
                "{ip} is {what}, which the operator does not probe (it would reach the \
                 operator's own pod or node)"
            )
        })
    }
}

impl tower::Service<Name> for PublicOnly {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = *self;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| guard.refused(a.ip()).is_none())
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} resolves only to addresses the operator does not probe \
                         (loopback, link-local, multicast): {}",
                        found
                            .iter()
                            .map(|a| a.ip().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_own_addresses_and_metadata_services_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(refused_ip(ip.parse().unwrap()).is_some(), "{ip} is probed");
        }
        for ip in [
            "10.88.0.1",
            "10.96.0.10",
            "192.168.1.5",
            "fd00::5",
            "8.8.8.8",
        ] {
            assert!(refused_ip(ip.parse().unwrap()).is_none(), "{ip} is refused");
        }
    }

    #[tokio::test]
    async fn a_url_naming_a_refused_address_is_never_contacted() {
        let prober = Prober::new(Duration::from_secs(1)).unwrap();
        for url in [
            "http://127.0.0.1:9/mcp",
            "http://[::1]:9/mcp",
            "http://169.254.169.254/latest/meta-data",
        ] {
            match prober.probe(url).await {
                Reach::Unreachable(why) => assert!(why.contains("does not probe"), "{url}: {why}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    async fn listener(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("clientInfo") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (url, served)
    }

    #[tokio::test]
    async fn any_http_answer_is_a_server_and_the_request_is_an_mcp_initialize() {
        let prober =
            Prober::guarded(Duration::from_secs(2), PublicOnly { loopback: true }).unwrap();
        let (url, served) =
            listener("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(prober.probe(&url).await, Reach::Answered(401));
        let request = served.await.unwrap();
        assert!(request.starts_with("POST /mcp HTTP/1.1"), "{request}");
        assert!(request.contains("\"method\":\"initialize\""), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("authorization"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let prober =
            Prober::guarded(Duration::from_secs(2), PublicOnly { loopback: true }).unwrap();
        let (url, _served) = listener(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(prober.probe(&url).await, Reach::Answered(307));
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_server_are_unreachable() {
        let prober =
            Prober::guarded(Duration::from_millis(500), PublicOnly { loopback: true }).unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        match prober.probe(&format!("http://{closed}/mcp")).await {
            Reach::Unreachable(why) => assert!(why.contains("refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", silent.local_addr().unwrap());
        match prober.probe(&url).await {
            Reach::Unreachable(why) => assert!(why.contains("no answer within"), "{why}"),
            other => panic!("{other:?}"),
        }
        drop(silent);
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_not_probed() {
        let prober = Prober::new(Duration::from_secs(1)).unwrap();
        match prober.probe("http://localhost:9/mcp").await {
            Reach::Unreachable(why) => assert!(why.contains("does not probe"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
