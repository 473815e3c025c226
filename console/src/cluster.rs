//! The cluster, as the signed-in person: every request the console makes carries the person's
//! own bearer token, so the API server authenticates them and RBAC decides as it would for
//! `kubectl`. The console has no credentials of its own; it only knows where the API server is
//! and which CA signs its certificate.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::config::AuthInfo;
use kube::{Api, Client, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::SecretString;

/// Where the API server is, without anybody's credentials.
#[derive(Clone)]
pub struct ApiServer {
    config: Config,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.config.cluster_url.to_string())
            .finish()
    }
}

/// Why the API server's address could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The URL.
    #[error("--api-server {0:?} is not a URL: {1}")]
    Url(String, String),
    /// The CA file.
    #[error("reading the API server's CA {path}: {source}")]
    Ca {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The CA file holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// Neither flags nor a kubeconfig.
    #[error("no API server: set --api-server and --api-ca, or give the console a kubeconfig ({0})")]
    Infer(String),
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The user name the cluster knows.
    pub name: String,
    /// Their groups.
    pub groups: Vec<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The API server did not accept the token.
    #[error("the cluster did not accept this token")]
    Rejected,
    /// It answered, but named nobody.
    #[error("the cluster accepted the token but did not say whose it is")]
    Nobody,
    /// It could not be asked.
    #[error("the cluster could not be asked who this token belongs to: {0}")]
    Unreachable(String),
}

impl ApiServer {
    /// The API server at `url` whose certificate `ca` (a PEM file) signs.
    pub fn new(url: &str, ca: &str) -> Result<Self, ApiServerError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ApiServerError::Url(url.into(), e.to_string()))?;
        let pem = std::fs::read(ca).map_err(|source| ApiServerError::Ca {
            path: ca.into(),
            source,
        })?;
        let certs = pem_certificates(&pem);
        if certs.is_empty() {
            return Err(ApiServerError::NoCertificate(ca.into()));
        }
        let mut config = Config::new(uri);
        config.root_cert = Some(certs);
        Ok(Self { config })
    }

    /// The API server of the current kubeconfig (or the pod's), with its credentials dropped.
    pub async fn inferred() -> Result<Self, ApiServerError> {
        let mut config = Config::infer()
            .await
            .map_err(|e| ApiServerError::Infer(e.to_string()))?;
        config.auth_info = AuthInfo::default();
        Ok(Self { config })
    }

    /// A client that acts as the holder of `token`.
    pub fn client_for(&self, token: &str) -> Result<Client, SignInError> {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(SecretString::from(token.to_owned())),
            ..AuthInfo::default()
        };
        Client::try_from(config).map_err(|e| SignInError::Unreachable(e.to_string()))
    }

    /// Who holds `token`, as the cluster says (a SelfSubjectReview sent with it), and a client
    /// acting as them.
    pub async fn sign_in(&self, token: &str) -> Result<(Person, Client), SignInError> {
        let client = self.client_for(token)?;
        let review = Api::<SelfSubjectReview>::all(client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 401 => SignInError::Rejected,
                other => SignInError::Unreachable(other.to_string()),
            })?;
        let user = review
            .status
            .and_then(|s| s.user_info)
            .ok_or(SignInError::Nobody)?;
        let name = user
            .username
            .filter(|u| !u.is_empty())
            .ok_or(SignInError::Nobody)?;
        Ok((
            Person {
                name,
                groups: user.groups.unwrap_or_default(),
            },
            client,
        ))
    }
}

/// The certificates of a PEM bundle, as DER (what kube's `root_cert` takes).
fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// What a person asks to do, for a SelfSubjectAccessReview.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    /// The verb.
    pub verb: &'a str,
    /// The API group.
    pub group: &'a str,
    /// The resource (with its subresource after a `/`).
    pub resource: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The object, if one.
    pub name: Option<&'a str>,
}

/// Whether the person behind `client` may do `action` (asked of the cluster as them). An
/// unanswered question is a no: the button is hidden, and the server would refuse anyway.
pub async fn may(client: &Client, action: Action<'_>) -> bool {
    let (resource, subresource) = match action.resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (action.resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(action.verb.into()),
                group: Some(action.group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: Some(action.namespace.into()),
                name: action.name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_gives_each_certificate() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_certificates(pem.as_bytes()),
            vec![vec![0, 1, 2, 3], vec![4, 5]]
        );
        assert!(pem_certificates(b"no certificate").is_empty());
    }
}
