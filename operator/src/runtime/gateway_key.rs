//! The key the operator signs each dispatch's model-gateway token with (`vexa_core::model`).
//! It lives in a Secret of the operator's own namespace, so every replica signs and verifies
//! with the same key and a restart changes nothing; the first replica to start creates it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

/// The Secret holding the key, in the operator's namespace.
pub const SECRET_NAME: &str = "vexa-model-gateway-key";
/// The key's entry in it.
const KEY: &str = "key";
/// The key's length in bytes.
const KEY_BYTES: usize = 32;

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The API server refused or failed.
    #[error("reading or creating Secret {namespace}/{SECRET_NAME} failed: {source}")]
    Api {
        /// The operator's namespace.
        namespace: String,
        /// Why.
        source: kube::Error,
    },
    /// The Secret exists without a usable key.
    #[error(
        "Secret {0}/{SECRET_NAME} has no {KEY:?} of at least {KEY_BYTES} bytes: delete it and the operator creates a new one (running dispatches then lose model access)"
    )]
    Unusable(String),
    /// No randomness.
    #[error("no random bytes for the model gateway's key: {0}")]
    Random(String),
}

/// Reads the key, creating it if no replica has yet.
pub async fn load_or_create(client: &kube::Client, namespace: &str) -> Result<Arc<[u8]>, KeyError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let api_error = |source| KeyError::Api {
        namespace: namespace.to_owned(),
        source,
    };
    for _ in 0..2 {
        if let Some(secret) = api.get_opt(SECRET_NAME).await.map_err(api_error)? {
            let key = secret
                .data
                .and_then(|mut d| d.remove(KEY))
                .filter(|k| k.0.len() >= KEY_BYTES)
                .ok_or_else(|| KeyError::Unusable(namespace.to_owned()))?;
            return Ok(key.0.into());
        }
        let mut key = vec![0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        let secret = operator_secret(
            SECRET_NAME,
            namespace,
            BTreeMap::from([(KEY.into(), ByteString(key.clone()))]),
        );
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    secret = SECRET_NAME,
                    "created the model gateway's key"
                );
                return Ok(key.into());
            }
            // Another replica was first: read its key.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(KeyError::Unusable(namespace.to_owned()))
}

/// A Secret of the operator's own (`name` in its `namespace`, labelled as the operator's) holding
/// `data`: the keys it signs with.
pub fn operator_secret(name: &str, namespace: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".into(), "vexa".into()),
                (
                    "app.kubernetes.io/managed-by".into(),
                    crate::FIELD_MANAGER.into(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}
