//! The operator's published keys: fetched from its JWKS URL, turned into the shared
//! [`Verifier`], refreshed periodically and on a token naming a key not seen yet (at most once
//! per [`MIN_REFRESH`], so forged `kid`s cannot make the filter hammer the operator).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use vexa_policy::token::{Jwks, Verifier};

/// The shortest interval between two fetches.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// The current verifier and where its keys come from.
#[derive(Debug)]
pub struct Keys {
    url: String,
    issuer: String,
    audience: String,
    current: RwLock<Arc<Verifier>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl Keys {
    /// Keys fixed to `verifier` (tests, benchmarks): nothing is ever fetched.
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            current: RwLock::new(Arc::new(verifier)),
            last_fetch: Mutex::new(Some(Instant::now())),
        }
    }

    /// Fetches the key set at `url` once, for tokens of `issuer` meant for `audience`.
    pub async fn fetch(url: &str, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let verifier = Verifier::new(&get_jwks(url).await?, issuer, audience)?;
        Ok(Self {
            url: url.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            current: RwLock::new(Arc::new(verifier)),
            last_fetch: Mutex::new(Some(Instant::now())),
        })
    }

    /// The verifier to use now.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetches the key set again unless that happened less than [`MIN_REFRESH`] ago; true if
    /// the verifier was replaced.
    pub async fn refresh(&self) -> bool {
        if self.url.is_empty() {
            return false;
        }
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match get_jwks(&self.url).await.and_then(|jwks| {
            Verifier::new(&jwks, &self.issuer, &self.audience).map_err(anyhow::Error::from)
        }) {
            Ok(v) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "could not refresh the dispatch token keys; keeping the last ones");
                false
            }
        }
    }
}

async fn get_jwks(url: &str) -> anyhow::Result<Jwks> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let uri: http::Uri = url.parse()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within 5 s"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}");
    serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("GET {url}: not a JWKS: {e}"))
}
