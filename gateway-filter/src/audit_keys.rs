//! The key the gateway signs its audit chain's checkpoints with: its own Ed25519 key set (never
//! the operator's, which mints dispatch tokens), kept in a Secret of the operator's namespace so
//! every gateway replica and restart signs with the same key, and the operator publishes its
//! public half beside its own (`kubectl vexa audit verify` checks both chains against that
//! JWKS). The first gateway to start creates it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use vexa_policy::token::KeySet;

fn data_of(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The key set in `namespace/name`, created if there is none (a concurrent creator wins and
/// its keys are read back).
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> anyhow::Result<KeySet> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let context =
        |what: &str| format!("{what} Secret {namespace}/{name} (the gateway's audit key)");
    if let Some(found) = secrets
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", context("reading")))?
    {
        return KeySet::from_secret_data(&data_of(found))
            .map_err(|e| anyhow::anyhow!("{}: {e}; delete it to start a new key", context("the")));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let keys = KeySet::generate(now)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_owned(), "vexa".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "gateway".to_owned(),
                ),
            ])),
            ..Default::default()
        },
        data: Some(
            keys.to_secret_data()?
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(keys),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let found = secrets
                .get(name)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", context("reading")))?;
            Ok(KeySet::from_secret_data(&data_of(found))?)
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", context("creating"))),
    }
}
