//! Reading the audit log through the API server: a dispatch's records (`get` on the Dispatch),
//! and every chain with the keys that sign them (`get` on the cluster-scoped `auditlog`), for
//! `kubectl vexa audit` and `kubectl vexa audit verify`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use vexa_audit::{DispatchAudit, Export, Jwks, read_chains, records_of};

use super::authorize::{self, Access};
use super::routes::{Streams, authorize, status};

/// Where the chains are, and the published keys that verify their checkpoints.
#[derive(Debug, Clone)]
pub struct AuditSource {
    /// The audit folder (`--audit-dir`).
    pub dir: PathBuf,
    /// The current JWKS (it changes when keys rotate).
    pub jwks: watch::Receiver<Jwks>,
    /// The Secret (namespace, name) of the gateway's checkpoint key, published too.
    pub gateway_keys: Option<(String, String)>,
}

impl AuditSource {
    /// The folder, with an empty key set until one is published.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            jwks: watch::channel(Jwks::default()).1,
            gateway_keys: None,
        }
    }

    /// Publishes the public half of the key set in Secret `namespace/name` (the gateway's) with
    /// the operator's keys; an empty `name` publishes none.
    pub fn with_gateway_keys(mut self, namespace: &str, name: &str) -> Self {
        self.gateway_keys = (!name.is_empty()).then(|| (namespace.to_owned(), name.to_owned()));
        self
    }

    /// The keys every chain's checkpoints verify with: the operator's, and the gateway's read
    /// now (a gateway that started a moment ago is verifiable at once). Without the gateway's
    /// Secret, the operator's alone; `verify` then names the checkpoint it cannot check.
    async fn keys(&self, client: &kube::Client) -> Jwks {
        let mut jwks = self.jwks.borrow().clone();
        let Some((namespace, name)) = &self.gateway_keys else {
            return jwks;
        };
        let secrets =
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
        let data = match secrets.get_opt(name).await {
            Ok(Some(secret)) => crate::runtime::signing_keys::plain(&secret),
            Ok(None) => return jwks,
            Err(e) => {
                tracing::warn!(secret = %name, %namespace, error = %e, "the gateway's audit key cannot be read; its checkpoints will not verify");
                return jwks;
            }
        };
        match vexa_policy::token::KeySet::from_secret_data(&data) {
            Ok(keys) => {
                for key in keys.jwks().keys {
                    if !jwks.keys.iter().any(|k| k.kid == key.kid) {
                        jwks.keys.push(key);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(secret = %name, %namespace, error = %e, "the gateway's audit key Secret is unusable; its checkpoints will not verify");
            }
        }
        jwks
    }

    async fn chains(&self) -> Result<BTreeMap<String, String>, Response> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || read_chains(&dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                tracing::error!(dir = %self.dir.display(), error = %e, "the audit log cannot be read");
                status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the operator cannot read its audit log; see its log".into(),
                )
            })
    }
}

/// `GET …/namespaces/{ns}/dispatches/{name}/audit`: the Dispatch's records from every chain.
pub async fn dispatch_audit(
    State(s): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&s, &headers, Access::Read, &namespace, &name).await {
        return refused;
    }
    let chains = match s.audit.chains().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let records = records_of(&chains, &namespace, &name);
    axum::Json(DispatchAudit {
        namespace,
        name,
        records,
    })
    .into_response()
}

/// `GET …/auditlog`: every chain as written, with the JWKS.
pub async fn audit_log(State(s): State<Streams>, headers: HeaderMap) -> Response {
    let Some(user) = s.front.user(&headers) else {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request names no user".into(),
        );
    };
    match authorize::allowed_by(&s.client, &authorize::audit_log_review(&user)).await {
        Ok(true) => {}
        Ok(false) => {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "user {:?} may not read the audit log: that needs get on auditlog \
                     (streams.vexa.ai), cluster-wide (the chart's ClusterRole vexa-auditor)",
                    user.name
                ),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "a SubjectAccessReview failed");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "authorizing the request failed; try again".into(),
            );
        }
    }
    let chains = match s.audit.chains().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let jwks = s.audit.keys(&s.client).await;
    axum::Json(Export { chains, jwks }).into_response()
}
