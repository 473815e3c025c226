//! Who is asking: the API server authenticates every user (client certificates, tokens, OIDC)
//! and proxies their requests here over TLS with its own client certificate (the "front proxy"),
//! naming the user in request headers. Those headers are believed only on a connection whose
//! client certificate chains to the request-header CA and carries one of the allowed names: the
//! settings the API server publishes in `kube-system/extension-apiserver-authentication`.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Where the API server publishes how it proxies.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Its name.
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// How the API server proxies: the CA of its client certificate, the names allowed, and the
/// headers that carry the user.
#[derive(Debug, Clone)]
pub struct FrontProxy {
    /// The request-header CA (DER).
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Common names a proxy's certificate may carry; empty: any the CA signed.
    pub allowed_names: Vec<String>,
    username_headers: Vec<String>,
    uid_headers: Vec<String>,
    group_headers: Vec<String>,
    extra_prefixes: Vec<String>,
}

/// A user as the API server authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The user's UID, when the API server sends it.
    pub uid: Option<String>,
    /// The groups.
    pub groups: Vec<String>,
    /// Extra attributes (scopes, the token's credential id, …).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The front-proxy settings are missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum FrontProxyError {
    /// The ConfigMap cannot be read.
    #[error(
        "cannot read ConfigMap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} (the operator needs the role extension-apiserver-authentication-reader there): {0}"
    )]
    Read(#[from] kube::Error),
    /// It holds no request-header CA: the API server was started without front-proxy flags.
    #[error(
        "ConfigMap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} has no requestheader-client-ca-file: start the API server with --requestheader-client-ca-file and --proxy-client-cert-file so it can serve aggregated APIs"
    )]
    NoCa,
    /// A value does not parse.
    #[error("ConfigMap {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}: {0}")]
    Invalid(String),
}

impl FrontProxy {
    /// Reads the API server's published settings.
    pub async fn load(client: &Client) -> Result<Self, FrontProxyError> {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), CONFIG_MAP_NAMESPACE)
            .get(CONFIG_MAP_NAME)
            .await?;
        Self::from_data(&cm.data.unwrap_or_default())
    }

    /// The settings from the ConfigMap's data.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, FrontProxyError> {
        let pem = data
            .get("requestheader-client-ca-file")
            .filter(|p| !p.trim().is_empty())
            .ok_or(FrontProxyError::NoCa)?;
        let client_ca = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FrontProxyError::Invalid(format!("requestheader-client-ca-file: {e}")))?;
        if client_ca.is_empty() {
            return Err(FrontProxyError::NoCa);
        }
        // Lists are JSON arrays of strings; absent means empty.
        let list = |key: &str, default: &[&str]| -> Result<Vec<String>, FrontProxyError> {
            match data.get(key) {
                None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
                Some(v) => serde_json::from_str::<Option<Vec<String>>>(v)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| FrontProxyError::Invalid(format!("{key}: {e}"))),
            }
        };
        let lower = |v: Vec<String>| v.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        Ok(Self {
            client_ca,
            allowed_names: list("requestheader-allowed-names", &[])?,
            username_headers: lower(list("requestheader-username-headers", &[])?),
            uid_headers: lower(list("requestheader-uid-headers", &[])?),
            group_headers: lower(list("requestheader-group-headers", &[])?),
            extra_prefixes: lower(list("requestheader-extra-headers-prefix", &[])?),
        })
    }

    /// Whether a verified client certificate (DER) may act as the front proxy: its common name
    /// is allowed (any, when the list is empty).
    pub fn allows(&self, cert: &[u8]) -> bool {
        if self.allowed_names.is_empty() {
            return true;
        }
        common_name(cert).is_some_and(|cn| self.allowed_names.contains(&cn))
    }

    /// The user the headers name; `None` without a user name (the request is not a user's).
    pub fn user(&self, headers: &HeaderMap) -> Option<User> {
        let first = |names: &[String]| {
            names.iter().find_map(|h| {
                headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let name = first(&self.username_headers)?;
        let mut groups = Vec::new();
        for h in &self.group_headers {
            for v in headers.get_all(h.as_str()) {
                if let Ok(v) = v.to_str() {
                    groups.push(v.to_owned());
                }
            }
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (h, v) in headers {
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| h.as_str().strip_prefix(p.as_str()))
            else {
                continue;
            };
            if let Ok(v) = v.to_str() {
                extra
                    .entry(percent_decode(key).to_ascii_lowercase())
                    .or_default()
                    .push(v.to_owned());
            }
        }
        Some(User {
            name,
            uid: first(&self.uid_headers),
            groups,
            extra,
        })
    }
}

/// Extra keys travel percent-encoded in header names.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The subject's common name of an X.509 certificate (DER), read with just enough DER to find
/// it. Only called on a certificate the TLS layer has already verified.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, certificate, _) = tlv(cert)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, tbs, _) = tlv(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serial, signature algorithm, issuer, validity, then the subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, mut names, _) = tlv(rest)?;
    (tag == SEQUENCE).then_some(())?;
    while !names.is_empty() {
        let (tag, set, after) = tlv(names)?;
        names = after;
        if tag != SET {
            continue;
        }
        let (_, attribute, _) = tlv(set)?;
        let (tag, oid, value) = tlv(attribute)?;
        if tag == OID && oid == CN {
            let (_, text, _) = tlv(value)?;
            return std::str::from_utf8(text).ok().map(str::to_owned);
        }
    }
    None
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::http::HeaderValue;

    use super::*;

    const CERT: &str = include_str!("testdata/front-proxy.crt");

    fn data(allowed: &str) -> BTreeMap<String, String> {
        [
            ("requestheader-client-ca-file", CERT),
            ("requestheader-allowed-names", allowed),
            ("requestheader-username-headers", "[\"X-Remote-User\"]"),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
            (
                "requestheader-extra-headers-prefix",
                "[\"X-Remote-Extra-\"]",
            ),
            ("requestheader-uid-headers", "[\"X-Remote-Uid\"]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn der() -> Vec<u8> {
        CertificateDer::from_pem_slice(CERT.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn the_common_name_is_read_from_the_certificate() {
        assert_eq!(common_name(&der()).as_deref(), Some("front-proxy-client"));
        assert_eq!(common_name(&der()[..40]), None);
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
    }

    #[test]
    fn only_allowed_names_may_proxy() {
        let proxy = FrontProxy::from_data(&data("[\"front-proxy-client\"]")).unwrap();
        assert!(proxy.allows(&der()));
        let other = FrontProxy::from_data(&data("[\"aggregator\"]")).unwrap();
        assert!(!other.allows(&der()));
        // An empty list allows any certificate the CA signed, as the API server does.
        assert!(FrontProxy::from_data(&data("[]")).unwrap().allows(&der()));
    }

    #[test]
    fn no_ca_no_front_proxy() {
        let mut d = data("[]");
        d.remove("requestheader-client-ca-file");
        assert!(matches!(
            FrontProxy::from_data(&d),
            Err(FrontProxyError::NoCa)
        ));
    }

    #[test]
    fn the_user_comes_from_the_configured_headers() {
        let proxy = FrontProxy::from_data(&data("[]")).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(proxy.user(&h), None);
        h.insert("x-remote-user", HeaderValue::from_static("bob"));
        h.insert("x-remote-uid", HeaderValue::from_static("u-1"));
        h.append("x-remote-group", HeaderValue::from_static("team-a"));
        h.append(
            "x-remote-group",
            HeaderValue::from_static("system:authenticated"),
        );
        h.append("x-remote-extra-scopes%2fx", HeaderValue::from_static("s1"));
        h.append("x-remote-extra-scopes%2fx", HeaderValue::from_static("s2"));
        h.insert("x-other", HeaderValue::from_static("ignored"));
        let user = proxy.user(&h).unwrap();
        assert_eq!(user.name, "bob");
        assert_eq!(user.uid.as_deref(), Some("u-1"));
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
        assert_eq!(
            user.extra,
            BTreeMap::from([(
                "scopes/x".to_owned(),
                vec!["s1".to_owned(), "s2".to_owned()]
            )])
        );
    }
}
