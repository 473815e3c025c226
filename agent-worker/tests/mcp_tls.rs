//! The worker's MCP endpoint against a real TLS server with SPIFFE certificates (rcgen): it
//! presents the pod's SVID, accepts only a server naming the gateway's SPIFFE ID under the
//! trust bundle, adds the dispatch token read fresh from the Secret's file, and never forwards
//! the agent's own credential or internal headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use vexa_agent_worker::mcp::{EndpointSettings, McpEndpoint, SvidSource};

const GATEWAY: &str = "spiffe://vexa.local/vexa/gateway";
const POD: &str = "spiffe://vexa.local/ns/team-a/dispatch/d1";

/// A trust domain's CA and the SVIDs it issues.
struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// An X.509 SVID for `id` (the shape SPIRE issues: URI SAN, server and client auth).
    fn svid(&self, id: &str) -> (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        (vec![cert], PrivatePkcs8KeyDer::from(key.serialize_der()))
    }
}

#[derive(Debug)]
struct Static {
    svid: (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>),
    bundle: Vec<CertificateDer<'static>>,
}

impl SvidSource for Static {
    fn svid(&self) -> Option<(Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>)> {
        Some((self.svid.0.clone(), self.svid.1.clone_key()))
    }
    fn authorities(&self) -> Vec<CertificateDer<'static>> {
        self.bundle.clone()
    }
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    peer: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A TLS server that requires a client certificate from `ca`, presents `identity` and records
/// each request; it answers with a small SSE stream.
async fn server(
    ca: &Ca,
    identity: (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>),
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.0, PrivateKeyDer::Pkcs8(identity.1))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| spiffe::cert::spiffe_id_from_der(c).unwrap().to_string())
                    .unwrap_or_default();
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        let peer = peer.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            record.lock().unwrap().push(Seen {
                                peer,
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                            });
                            let response = Response::builder()
                            .header("content-type", "text/event-stream")
                            .header("mcp-session-id", "session-1")
                            .header("x-vexa-upstream", "leak")
                            .body(Full::new(Bytes::from_static(
                                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
                            )))
                            .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

struct Setup {
    endpoint: McpEndpoint,
    token: tempfile::NamedTempFile,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The endpoint, forwarding to a server presenting `server_id` (issued by `server_ca`, or by
/// the pod's trust domain's CA).
async fn setup(server_id: &str, foreign_ca: bool) -> Setup {
    let ca = Ca::new();
    let other = Ca::new();
    let issuing = if foreign_ca { &other } else { &ca };
    let (addr, seen) = server(&ca, issuing.svid(server_id)).await;
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "dispatch.jwt.1\n").unwrap();
    let svids = Arc::new(Static {
        svid: ca.svid(POD),
        bundle: vec![ca.cert.clone()],
    });
    let endpoint = McpEndpoint::start(
        EndpointSettings {
            gateway: format!("https://{addr}"),
            port: 0,
            namespace: "team-a".into(),
            tools: vec!["notes".into()],
            token_file: token.path().to_owned(),
            trust_domain: "vexa.local".into(),
        },
        svids,
    )
    .await
    .unwrap();
    Setup {
        endpoint,
        token,
        seen,
    }
}

async fn post(url: &str, body: Bytes) -> (StatusCode, http::HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", "Bearer agent-forged")
        .header("x-vexa-route", "evil.example:80")
        .header("mcp-session-id", "session-1")
        .body(Full::new(body))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"notes.append","arguments":{"text":"hi"}}}"#;

#[tokio::test]
async fn a_call_reaches_the_gateway_with_the_svid_and_the_token_never_the_agents_headers() {
    let s = setup(GATEWAY, false).await;
    let (status, headers, body) = post(&s.endpoint.url("notes"), Bytes::from_static(CALL)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""result""#), "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["mcp-session-id"], "session-1");
    assert!(!headers.contains_key("x-vexa-upstream"));

    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.peer, POD, "the worker presents the pod's SVID");
    assert_eq!(got.path, "/tools/team-a/notes");
    assert_eq!(got.body, CALL);
    let auth: Vec<_> = got.headers.get_all("authorization").iter().collect();
    assert_eq!(auth, ["Bearer dispatch.jwt.1"]);
    assert!(!got.headers.contains_key("x-vexa-route"));
    assert_eq!(got.headers["mcp-session-id"], "session-1");

    // The operator re-mints the token: the next call carries the new one.
    std::fs::write(s.token.path(), "dispatch.jwt.2").unwrap();
    let (status, _, _) = post(&s.endpoint.url("notes"), Bytes::from_static(CALL)).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen[1].headers["authorization"], "Bearer dispatch.jwt.2");
}

/// A man in the middle holding a valid SVID of the same trust domain, but not the gateway's.
#[tokio::test]
async fn a_server_with_another_workloads_svid_gets_nothing() {
    let s = setup("spiffe://vexa.local/ns/team-b/dispatch/other", false).await;
    let (status, _, body) = post(&s.endpoint.url("notes"), Bytes::from_static(CALL)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["id"], 1);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not the MCP gateway's spiffe://vexa.local/vexa/gateway"),
        "{message}"
    );
    assert!(s.seen.lock().unwrap().is_empty(), "the request was sent");
}

/// The gateway's own SPIFFE ID, from a CA outside the pod's bundle.
#[tokio::test]
async fn the_gateways_id_from_another_ca_is_refused() {
    let s = setup(GATEWAY, true).await;
    let (status, _, body) = post(&s.endpoint.url("notes"), Bytes::from_static(CALL)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("invalid peer certificate"), "{body}");
    assert!(s.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn ungranted_paths_and_oversized_bodies_never_leave_the_pod() {
    let s = setup(GATEWAY, false).await;
    let base = format!("http://{}", s.endpoint.addr());
    for path in ["/tools/other", "/tools/team-a/notes", "/", "/tools/notes/x"] {
        let (status, _, body) = post(&format!("{base}{path}"), Bytes::from_static(CALL)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let big = Bytes::from(vec![b' '; vexa_agent_worker::mcp::MAX_REQUEST_BODY + 1]);
    let (status, _, _) = post(&s.endpoint.url("notes"), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(s.seen.lock().unwrap().is_empty());
}
