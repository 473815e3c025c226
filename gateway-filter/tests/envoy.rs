//! The real Envoy (VEXA_ENVOY_BIN, `hack/build-tools envoy`) with the configuration
//! `envoy-config` generates, in front of the filter (Keycloak faked by the Exchanger), against a
//! tiny upstream that records what it receives: the tool gets the exchanged token only, never
//! the dispatch token, no `x-vexa-*` and no client-forged `x-forwarded-client-cert`; a valid
//! token presented with another workload's certificate never reaches it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

const POD: &str = "spiffe://vexa.local/ns/team/dispatch/d1";

struct Fake;
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

struct NoCards;
impl Cards for NoCards {
    async fn create(&self, _: vexa_crds::card::Card) -> Result<(), String> {
        Ok(())
    }
}

struct Notes(String);
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

type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
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
    fn svid(
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

async fn post(
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

#[tokio::test(flavor = "multi_thread")]
async fn through_envoy_the_tool_sees_only_the_exchanged_token() {
    let Ok(envoy) = std::env::var("VEXA_ENVOY_BIN") else {
        eprintln!(
            "SKIPPED: VEXA_ENVOY_BIN is unset (hack/build-tools envoy; eval \"$(hack/cluster env)\")"
        );
        return;
    };
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
    let mut child = tokio::process::Command::new(envoy)
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

    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"notes.append","arguments":{"text":"hi"}}}"#;
    let (_, _, pod_der, pod_key) = pki.svid(POD);
    let (status, body) = post(port, &pki, (pod_der, pod_key), &token, call).await;
    assert_eq!(status, 200, "{body}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (path, headers) = &seen[0];
        assert_eq!(path, "/mcp");
        assert_eq!(
            headers["authorization"],
            format!("Bearer exchanged.vexa-notes.kc")
        );
        assert!(
            !headers.values().any(|v| v.contains(&token)),
            "the dispatch token reached the tool"
        );
        assert!(
            !headers.keys().any(|k| k.starts_with("x-vexa-")),
            "{headers:?}"
        );
        let xfcc = headers
            .get("x-forwarded-client-cert")
            .cloned()
            .unwrap_or_default();
        assert!(
            !xfcc.contains("forged"),
            "a client-forged XFCC reached the tool: {xfcc}"
        );
    }

    // The same valid token from another workload: refused, nothing reaches the tool.
    let (_, _, other_der, other_key) = pki.svid("spiffe://vexa.local/ns/team/dispatch/d2");
    let (status, body) = post(port, &pki, (other_der, other_key), &token, call).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bound to workload"), "{body}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let _ = child.kill().await;
}
