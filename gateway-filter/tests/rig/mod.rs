//! The real Envoy in front of the filter (Keycloak faked), a recording upstream and SVIDs from a
//! test CA: shared by tests/envoy.rs and the benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use vexa_gateway_filter::envoy::{EnvoyConfig, config};
use vexa_gateway_filter::exchange::{Exchanger, Issued};
use vexa_gateway_filter::jwks::Keys;
use vexa_gateway_filter::metrics::Metrics;
use vexa_gateway_filter::service::{Cards, Filter};
use vexa_gateway_filter::{ToolView, Tools, Upstream};
use vexa_policy::token::{Actor, Confirmation, DispatchClaims, KeySet, Verifier, mint};

pub const POD: &str = "spiffe://vexa.local/ns/team/dispatch/d1";

pub struct Fake;
impl Exchanger for Fake {
    async fn jwt_grant(&self, _: &str) -> Result<Issued, String> {
        Ok(Issued {
            token: "kc".into(),
            expires_in: Duration::from_secs(300),
        })
    }
    async fn exchange(&self, s: &str, aud: &str, _: Option<&str>) -> Result<Issued, String> {
        Ok(Issued {
            token: format!("exchanged.{aud}.{s}"),
            expires_in: Duration::from_secs(300),
        })
    }
}

pub struct NoCards;
impl Cards for NoCards {
    async fn create(&self, _: vexa_crds::card::Card) -> Result<(), String> {
        Ok(())
    }
}

pub struct Notes(pub String);
impl Tools for Notes {
    fn tool(&self, ns: &str, name: &str) -> Option<ToolView> {
        (ns == "team" && name == "notes").then(|| ToolView {
            name: "notes".into(),
            tool_name: "notes.append".into(),
            scope: "notes:write".into(),
            audience: "vexa-notes".into(),
            gated: false,
            upstream: Upstream::parse(&self.0).unwrap(),
        })
    }
}

pub type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Pki {
    pub issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An SVID-shaped certificate for `id` (plus `localhost` for the client's host check).
    pub fn svid(
        &self,
        id: &str,
    ) -> (
        String,
        String,
        CertificateDer<'static>,
        PrivateKeyDer<'static>,
    ) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(id.try_into().unwrap()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            cert.pem(),
            key.serialize_pem(),
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

pub async fn post(
    port: u16,
    pki: &Pki,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    token: &str,
    body: &str,
) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.0], client.1)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("/tools/team/notes")
        .header("host", "gateway")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("x-vexa-upstream", "169.254.169.254:80")
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://vexa.local/vexa/gateway;URI=spiffe://forged",
        )
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A running Envoy + filter + upstream.
pub struct Rig {
    pub port: u16,
    pub pki: Pki,
    pub token: String,
    pub upstream_port: u16,
    pub seen: Seen,
    pub child: tokio::process::Child,
    pub dir: tempfile::TempDir,
}

impl Rig {
    /// Starts everything; `envoy` is the binary.
    pub async fn start(envoy: String) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The upstream tool: records the path and headers of what reaches it.
        let seen: Seen = Arc::default();
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_port = upstream.local_addr().unwrap().port();
        let app = axum::Router::new().fallback({
            let seen = seen.clone();
            move |req: axum::extract::Request| {
                let seen = seen.clone();
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    seen.lock()
                        .unwrap()
                        .push((req.uri().path().to_owned(), headers));
                    r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#
                }
            }
        });
        tokio::spawn(async move { axum::serve(upstream, app).await });

        // The filter.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let keys = KeySet::generate(now - 10).unwrap();
        let claims = DispatchClaims {
            iss: "vexa-operator".into(),
            sub: "alice".into(),
            act: Actor {
                sub: "user:alice".into(),
            },
            aud: "vexa-gateway".into(),
            workspaces: vec![],
            tools: vec!["notes".into()],
            gated_tools: vec![],
            jti: "team/d1".into(),
            iat: now - 5,
            exp: now + 600,
            cnf: Confirmation {
                spiffe_id: POD.into(),
            },
        };
        let token = mint(&keys, &claims).unwrap();
        let filter = Filter {
            keys: Arc::new(Keys::fixed(
                Verifier::new(&keys.jwks(), "vexa-operator", "vexa-gateway").unwrap(),
            )),
            tools: Arc::new(Notes(format!("http://127.0.0.1:{upstream_port}/mcp"))),
            exchanger: Fake,
            cache: Default::default(),
            cards: NoCards,
            audit: None,
            metrics: Arc::new(Metrics::new(&mut Registry::default())),
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let filter_addr = grpc.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
                    filter,
                ))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc)),
        );

        // Envoy.
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (gw_pem, gw_key, _, _) = pki.svid("spiffe://vexa.local/vexa/gateway");
        for (name, text) in [
            ("gw.crt", &gw_pem),
            ("gw.key", &gw_key),
            ("bundle.crt", &pki.ca_pem),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let port = free_port();
        let yaml = config(&EnvoyConfig {
            listen_ip: "127.0.0.1".into(),
            listen_port: port,
            cert_chain: dir.path().join("gw.crt").display().to_string(),
            private_key: dir.path().join("gw.key").display().to_string(),
            trust_bundle: dir.path().join("bundle.crt").display().to_string(),
            trust_domain: "vexa.local".into(),
            filter_addr: filter_addr.to_string(),
            admin_port: 0,
        });
        std::fs::write(dir.path().join("envoy.yaml"), yaml).unwrap();
        let child = tokio::process::Command::new(envoy)
            .arg("-c")
            .arg(dir.path().join("envoy.yaml"))
            .args(["--base-id", &free_port().to_string(), "--log-level", "warn"])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "envoy did not listen on {port}");

        Rig {
            port,
            pki,
            token,
            upstream_port,
            seen,
            child,
            dir,
        }
    }

    /// A kept-alive HTTP/1 connection through Envoy with the SVID of `id`.
    pub async fn through_envoy(
        &self,
        id: &str,
    ) -> hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>> {
        let (_, _, der, key) = self.pki.svid(id);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca_der.clone()).unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![der], key)
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        send
    }

    /// A kept-alive HTTP/1 connection straight to the upstream.
    pub async fn direct(&self) -> hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.upstream_port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }
}

/// One call on `send` to `path` with `token`; the status.
pub async fn call(
    send: &mut hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
    path: &str,
    token: &str,
) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"notes.append","arguments":{"text":"hi"}}}"#;
    let request = http::Request::post(path)
        .header("host", "gateway")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    // The connection takes the next request only once the last one is fully done.
    send.ready()
        .await
        .expect("the kept-alive connection is still open");
    let response = send.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await.unwrap();
    status
}
