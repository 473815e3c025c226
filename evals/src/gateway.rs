//! The MCP gateway as the evals run it: the real `vexa-gateway-filter` binary and the pinned
//! Envoy (`VEXA_ENVOY_BIN`) with the configuration the filter prints, listening on the node's
//! address (where dispatch pods reach it) with an X.509 SVID the cluster's SPIRE server mints
//! for `spiffe://<trust domain>/vexa/gateway`. Also SVIDs minted for any SPIFFE ID and an
//! mTLS client, to send what an attacker holding one would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::fixtures::{free_port, node_ip};
use crate::keycloak::Keycloak;
use crate::notes_tool::{json_reply, mcp_request};
use crate::{built_binary, cluster_env};

/// The gateway's SPIFFE ID in the local cluster's trust domain.
pub fn gateway_spiffe_id() -> String {
    vexa_core::gateway::gateway_spiffe_id(&cluster_env("VEXA_SPIRE_TRUST_DOMAIN"))
}

/// An X.509 SVID the SPIRE server minted, as files (for Envoy) and parsed (for a client).
pub struct Svid {
    /// The SPIFFE ID it names.
    pub spiffe_id: String,
    /// `svid.pem`: the certificate chain.
    pub chain_file: PathBuf,
    /// `key.pem`.
    pub key_file: PathBuf,
    /// `bundle.pem`: the trust domain's roots.
    pub bundle_file: PathBuf,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}

/// Mints an SVID for `spiffe_id` into `dir` with the SPIRE server's admin socket (root on the
/// node can; a pod cannot): what the gateway holds, or what an attacker who stole another
/// workload's SVID would.
pub fn mint_svid(spiffe_id: &str, dir: &Path) -> Svid {
    std::fs::create_dir_all(dir).unwrap();
    let server = Path::new(&cluster_env("VEXA_SPIRE_BIN_DIR")).join("spire-server");
    let out = Command::new(&server)
        .args(["x509", "mint", "-socketPath"])
        .arg(cluster_env("VEXA_SPIRE_SERVER_SOCKET"))
        .args(["-spiffeID", spiffe_id, "-ttl", "1h", "-write"])
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
    assert!(
        out.status.success(),
        "minting an SVID for {spiffe_id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Svid {
        spiffe_id: spiffe_id.to_owned(),
        chain_file: dir.join("svid.pem"),
        key_file: dir.join("key.pem"),
        bundle_file: dir.join("bundle.pem"),
    }
}

/// Where the gateway checks what it is given.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The operator's JWKS (the dispatch tokens' keys).
    pub jwks_url: String,
    /// The dispatch tokens' `iss` (the operator's `--token-issuer`).
    pub token_issuer: String,
    /// The dispatch tokens' `aud` (the operator's `--token-audience`: the realm issuer).
    pub token_audience: String,
    /// The realm whose tokens it trades dispatch tokens for.
    pub keycloak: Keycloak,
    /// The audit folder it writes `gateway.jsonl` into (the operator's).
    pub audit_dir: PathBuf,
    /// The operator's namespace: the gateway keeps its checkpoint key there.
    pub key_namespace: String,
}

/// A running gateway (filter + Envoy); both are killed when dropped.
pub struct Gateway {
    /// `https://<node ip>:<port>`: the operator's `--mcp-gateway-url`.
    pub url: String,
    port: u16,
    metrics_port: u16,
    /// Held for their Drop: the processes live as long as this.
    _children: Children,
    dir: PathBuf,
}

/// The filter and Envoy: killed when dropped, also when the start fails half-way.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Waits until `ready` holds, or panics with `what` and `logs()` after `within`.
async fn until<F: FnMut() -> bool>(
    what: &str,
    within: Duration,
    children: &mut Children,
    logs: impl Fn() -> String,
    mut ready: F,
) {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return;
        }
        for child in children.0.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{what}: a gateway process exited ({status}):\n{}", logs());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a gateway will listen, chosen before it starts: the operator that mints its pods'
/// contract needs the URL, and the gateway needs that operator's keys to start.
#[derive(Debug, Clone)]
pub struct Address {
    /// `https://<node ip>:<port>`: the operator's `--mcp-gateway-url`.
    pub url: String,
    port: u16,
}

impl Address {
    /// A free port on the node's address.
    pub fn reserve() -> Self {
        let port = free_port();
        Self {
            url: format!("https://{}:{port}", node_ip()),
            port,
        }
    }
}

impl Gateway {
    /// Mints the gateway's SVID and starts the filter, then Envoy in front of it, at `address`;
    /// returns once Envoy accepts connections.
    pub async fn start(address: Address, settings: &Settings) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "vexa-evals-gateway-{}-{}",
            std::process::id(),
            free_port()
        ));
        let svid = mint_svid(&gateway_spiffe_id(), &dir.join("svid"));
        let filter_port = free_port();
        let metrics_port = free_port();
        let port = address.port;
        let filter_bin = built_binary("vexa-gateway-filter", "VEXA_GATEWAY_FILTER");
        let kc = &settings.keycloak;
        let log = std::fs::File::create(dir.join("filter.log")).unwrap();
        let filter = Command::new(&filter_bin)
            .arg(format!("--listen=127.0.0.1:{filter_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--jwks-url={}", settings.jwks_url))
            .arg(format!("--token-issuer={}", settings.token_issuer))
            .arg(format!("--token-audience={}", settings.token_audience))
            .arg(format!(
                "--trust-domain={}",
                cluster_env("VEXA_SPIRE_TRUST_DOMAIN")
            ))
            .arg(format!("--keycloak-url={}", kc.url))
            .arg(format!("--keycloak-realm={}", kc.realm))
            .arg(format!("--client-id={}", kc.gateway_client))
            .arg(format!(
                "--client-secret-file={}",
                cluster_env("VEXA_KEYCLOAK_GATEWAY_SECRET_FILE")
            ))
            .arg(format!("--audit-dir={}", settings.audit_dir.display()))
            .arg(format!("--audit-key-namespace={}", settings.key_namespace))
            // Whatever is unsigned is signed after 2 s without a record (10 s by default).
            .arg("--audit-checkpoint-idle-seconds=2")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", filter_bin.display()));
        let mut children = Children(vec![filter]);
        let logs = {
            let dir = dir.clone();
            move || logs_in(&dir)
        };
        until(
            "the gateway filter answers /healthz",
            Duration::from_secs(20),
            &mut children,
            &logs,
            || std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok(),
        )
        .await;

        let config = Command::new(&filter_bin)
            .args(["envoy-config", "--listen-ip", &node_ip()])
            .arg(format!("--listen-port={port}"))
            .arg(format!("--cert-chain={}", svid.chain_file.display()))
            .arg(format!("--private-key={}", svid.key_file.display()))
            .arg(format!("--trust-bundle={}", svid.bundle_file.display()))
            .arg(format!(
                "--trust-domain={}",
                cluster_env("VEXA_SPIRE_TRUST_DOMAIN")
            ))
            .arg(format!("--filter-addr=127.0.0.1:{filter_port}"))
            .arg(format!("--admin-port={}", free_port()))
            .output()
            .unwrap();
        assert!(
            config.status.success(),
            "envoy-config: {}",
            String::from_utf8_lossy(&config.stderr)
        );
        std::fs::write(dir.join("envoy.yaml"), &config.stdout).unwrap();
        let envoy_bin = cluster_env("VEXA_ENVOY_BIN");
        let envoy = Command::new(&envoy_bin)
            .arg("-c")
            .arg(dir.join("envoy.yaml"))
            .args(["--base-id", &free_port().to_string(), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("envoy.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{envoy_bin}: {e}"));
        children.0.push(envoy);
        let node = node_ip();
        until(
            "Envoy listens",
            Duration::from_secs(30),
            &mut children,
            &logs,
            || std::net::TcpStream::connect((node.as_str(), port)).is_ok(),
        )
        .await;
        Self {
            url: address.url,
            port,
            metrics_port,
            _children: children,
            dir,
        }
    }

    /// The filter's and Envoy's logs, for a failing eval's message.
    pub fn logs(&self) -> String {
        logs_in(&self.dir)
    }

    /// The filter's Prometheus text.
    pub async fn metrics(&self) -> String {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<Bytes>>();
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let response = client.get(url.parse().unwrap()).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// A JSON-RPC `body` POSTed to `path` over mTLS with `svid` as the client certificate and
    /// `token` as the bearer: the HTTP status and the body (JSON, or the text as a string).
    pub async fn post(
        &self,
        svid: &Svid,
        token: Option<&str>,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&svid.chain_file)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&svid.key_file).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
        let tcp = tokio::net::TcpStream::connect((node_ip().as_str(), self.port))
            .await
            .unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("gateway").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to the gateway as {}: {e}", svid.spiffe_id));
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut request = mcp_request(path, token, body);
        request
            .headers_mut()
            .insert("host", http::HeaderValue::from_static("gateway"));
        json_reply(send.send_request(request).await.unwrap()).await
    }
}

fn logs_in(dir: &Path) -> String {
    ["filter.log", "envoy.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}",
                std::fs::read_to_string(dir.join(f)).unwrap_or_default()
            )
        })
        .collect()
}

/// The eval's client plays an attacker at the gateway: whom it talks to is not what is tested
/// (the worker's own check of the gateway's SVID is, in agent-worker/tests/mcp_tls.rs).
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An in-process operator wired to a gateway as the gateway evals need them: its model
/// gateway port serves the token keys (Keycloak and the gateway fetch them there), its tokens
/// are addressed to the realm, pods learn the MCP gateway, and both write their audit records
/// into one folder.
pub struct Stack {
    /// The gateway (dropped first).
    pub gateway: Gateway,
    /// The operator.
    pub operator: crate::operator::Operator,
    /// The dispatch tokens' issuer (`http://<node ip>:<port>`).
    pub issuer: String,
    /// Where the operator and the gateway write their audit records.
    pub audit_dir: PathBuf,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("gateway", &self.gateway)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Starts the operator (its home namespace `home`, the streams API `streams`, and `extra`
    /// flags) and the gateway; returns once both serve.
    pub async fn start(
        kc: &Keycloak,
        home: &str,
        streams: &crate::streams::StreamsApi,
        extra: &[&str],
    ) -> Self {
        let audit_dir = std::env::temp_dir().join(format!(
            "vexa-eval-gateway-audit-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&audit_dir);
        std::fs::create_dir_all(&audit_dir).unwrap();
        let node = node_ip();
        let model_port = free_port();
        let issuer = format!("http://{node}:{model_port}");
        let address = Address::reserve();
        let mut flags = vec![
            format!("--namespace={home}"),
            "--job-ttl-seconds=60".to_owned(),
            format!("--redis-url={}", cluster_env("POD_REDIS_URL")),
            format!(
                "--spire-server-socket={}",
                cluster_env("VEXA_SPIRE_SERVER_SOCKET")
            ),
            format!(
                "--spire-trust-domain={}",
                cluster_env("VEXA_SPIRE_TRUST_DOMAIN")
            ),
            format!("--model-gateway-addr=0.0.0.0:{model_port}"),
            format!("--model-gateway-url={issuer}"),
            format!("--token-issuer={issuer}"),
            format!("--keycloak-url={}", kc.url),
            format!("--mcp-gateway-url={}", address.url),
            format!("--audit-dir={}", audit_dir.display()),
        ];
        flags.extend(kc.operator_flags());
        flags.extend(streams.flags());
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let operator = crate::operator::Operator::start(&flags);
        operator.ready().await;
        let gateway = Gateway::start(
            address,
            &Settings {
                jwks_url: format!("{issuer}/.well-known/jwks.json"),
                token_issuer: issuer.clone(),
                token_audience: kc.realm_issuer(),
                keycloak: kc.clone(),
                audit_dir: audit_dir.clone(),
                key_namespace: home.to_owned(),
            },
        )
        .await;
        Self {
            operator,
            gateway,
            issuer,
            audit_dir,
        }
    }
}

/// Waits until each Tool of `names` in `ns` is `Ready=True`.
pub async fn tools_ready(client: &kube::Client, ns: &str, names: &[&str]) {
    let tools = kube::Api::<vexa_crds::Tool>::namespaced(client.clone(), ns);
    for name in names {
        crate::wait_for(
            &format!("Tool {name} Ready"),
            Duration::from_secs(180),
            || {
                let tools = tools.clone();
                async move {
                    let t = tools.get(name).await.ok()?;
                    let ready = t
                        .status?
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Ready")?;
                    (ready.status == "True").then_some(())
                }
            },
        )
        .await;
    }
}
