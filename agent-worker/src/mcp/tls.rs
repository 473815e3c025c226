//! Mutual TLS to the MCP gateway with the pod's SPIFFE identity. The worker presents its current
//! X.509 SVID as the client certificate (rotated as SPIRE rotates it: each new connection asks
//! again) and accepts the gateway only if its certificate chains to the trust domain's SPIRE
//! bundle and names exactly the gateway's SPIFFE ID (`core::gateway::gateway_spiffe_id`). No
//! host name is checked: in SPIFFE the URI SAN is the identity, and a workload of the same
//! trust domain with any other ID (a man in the middle holding a valid SVID) is refused.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use spiffe::{BundleSource, TrustDomain, X509Source};

/// Where the worker's identity comes from: its current SVID and its trust domain's bundle.
pub trait SvidSource: fmt::Debug + Send + Sync {
    /// The current SVID: its certificate chain (leaf first) and PKCS#8 private key.
    fn svid(&self) -> Option<(Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>)>;
    /// The trust domain's current X.509 authorities.
    fn authorities(&self) -> Vec<CertificateDer<'static>>;
}

/// The SPIRE Workload API, through the worker's [`X509Source`] (which keeps both current).
#[derive(Debug, Clone)]
pub struct Workload {
    /// The source the worker obtained its identity from.
    pub source: X509Source,
    /// The pod's trust domain.
    pub trust_domain: TrustDomain,
}

impl SvidSource for Workload {
    fn svid(&self) -> Option<(Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>)> {
        let svid = self.source.svid().ok()?;
        let chain = svid
            .cert_chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        let key = PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec());
        Some((chain, key))
    }

    fn authorities(&self) -> Vec<CertificateDer<'static>> {
        match self.source.bundle_for_trust_domain(&self.trust_domain) {
            Ok(Some(bundle)) => bundle
                .authorities()
                .iter()
                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The TLS settings for the gateway: the SVID as client certificate, the gateway verified as
/// `gateway_id` against the bundle.
pub fn client_config(svids: Arc<dyn SvidSource>, gateway_id: &str) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(GatewayVerifier {
        svids: svids.clone(),
        gateway_id: gateway_id.to_owned(),
        provider: provider.clone(),
    });
    let resolver = Arc::new(CurrentSvid {
        svids,
        provider: provider.clone(),
        last: Mutex::new(None),
    });
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver))
}

/// Presents the current SVID; the key is parsed again only when the SVID changed.
#[derive(Debug)]
struct CurrentSvid {
    svids: Arc<dyn SvidSource>,
    provider: Arc<CryptoProvider>,
    last: Mutex<Option<(CertificateDer<'static>, Arc<CertifiedKey>)>>,
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let (chain, key) = self.svids.svid()?;
        let leaf = chain.first()?.clone();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, certified)) = last.as_ref()
            && *cached == leaf
        {
            return Some(certified.clone());
        }
        let signing = match self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key))
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "the pod's SVID key cannot be used for TLS");
                return None;
            }
        };
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        *last = Some((leaf, certified.clone()));
        Some(certified)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts only the gateway: a chain to the SPIRE bundle and exactly its SPIFFE ID.
#[derive(Debug)]
struct GatewayVerifier {
    svids: Arc<dyn SvidSource>,
    gateway_id: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(self.svids.authorities());
        if added == 0 {
            return Err(Error::General(
                "the worker holds no SPIRE trust bundle to verify the MCP gateway with".into(),
            ));
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = spiffe::cert::spiffe_id_from_der(end_entity).map_err(|e| {
            Error::General(format!(
                "the MCP gateway's certificate names no single SPIFFE ID ({e})"
            ))
        })?;
        if id.to_string() != self.gateway_id {
            tracing::warn!(presented = %id, expected = %self.gateway_id, "refused a server that is not the MCP gateway");
            return Err(Error::General(format!(
                "the server presented the identity {id}, not the MCP gateway's {}",
                self.gateway_id
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
