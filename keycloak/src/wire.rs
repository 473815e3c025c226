//! The one HTTP client both Keycloak clients share: HTTP or HTTPS (native roots), HTTP/1.

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::Duration;

use crate::Error;

/// One call may take this long (connect, send, read) before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Keycloak's answers are small; a bigger one is refused rather than buffered.
const MAX_BODY: usize = 1 << 20;

/// Characters left as they are in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` as one URL path segment.
pub(crate) fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// An `application/x-www-form-urlencoded` body.
pub(crate) fn form(fields: &[(&str, &str)]) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    f.finish()
}

#[derive(Clone)]
pub(crate) struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

/// An answer: its status and body.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON `T`, or the refusal.
    pub fn json<T: serde::de::DeserializeOwned>(self, call: &str) -> Result<T, Error> {
        if !self.ok() {
            return Err(Error::refused(call, self.status, &self.body));
        }
        serde_json::from_slice(&self.body).map_err(|e| Error::Unexpected {
            call: call.to_owned(),
            detail: format!("{e} in {}", String::from_utf8_lossy(&self.body)),
        })
    }

    /// Success without a body of interest, or the refusal.
    pub fn done(self, call: &str) -> Result<(), Error> {
        if self.ok() {
            Ok(())
        } else {
            Err(Error::refused(call, self.status, &self.body))
        }
    }
}

impl Http {
    pub fn new(call: &str) -> Result<Self, Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::Invalid {
                call: call.to_owned(),
                detail: format!("TLS roots: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self::over(https))
    }

    /// A client that trusts only the certificates of the PEM bundle `ca` for HTTPS.
    pub fn with_ca(call: &str, ca: &[u8]) -> Result<Self, Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let invalid = |detail: String| Error::Invalid {
            call: call.to_owned(),
            detail,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| invalid(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("the CA bundle holds no certificate".into()));
        }
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self::over(https))
    }

    fn over(https: hyper_rustls::HttpsConnector<HttpConnector>) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// One request; `bearer` is the admin token, `body` a content type and the bytes.
    pub async fn send(
        &self,
        call: &str,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, Error> {
        let transport = |e: Box<dyn std::error::Error + Send + Sync>| Error::Transport {
            call: call.to_owned(),
            source: e,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some((content_type, bytes)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
            None => req.body(Full::new(Bytes::new())),
        }
        .map_err(|e| Error::Invalid {
            call: call.to_owned(),
            detail: format!("request to {url}: {e}"),
        })?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(Box::new(e)))?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(transport)?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                transport(format!("no answer from {url} within {CALL_TIMEOUT:?}").into())
            })?
    }

    pub async fn post_form(
        &self,
        call: &str,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<Answer, Error> {
        let body = form(fields).into_bytes();
        self.send(
            call,
            Method::POST,
            url,
            None,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    }
}

/// The base URL without a trailing slash, checked to be http(s).
pub(crate) fn base(call: &str, base_url: &str) -> Result<String, Error> {
    let b = base_url.trim_end_matches('/');
    let uri: http::Uri = b.parse().map_err(|e| Error::Invalid {
        call: call.to_owned(),
        detail: format!("base URL {base_url:?}: {e}"),
    })?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(b.to_owned()),
        _ => Err(Error::Invalid {
            call: call.to_owned(),
            detail: format!("base URL {base_url:?} is not an http(s) URL with a host"),
        }),
    }
}
