//! The subjects controller against the local cluster's real Keycloak: an Identity for `carol`
//! makes a Keycloak user `carol` of the realm, linked to the dispatch-token issuer's identity
//! provider with `carol` as its user id there (what the gateway's JWT grant maps a token's
//! `sub` through), and the Identity says `Linked=True`. The issuer itself is an identity
//! provider of the realm once the operator has linked a first subject.
//!
//! Needs `eval "$(hack/cluster env)"` (Keycloak is part of `hack/cluster up`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vexa_crds::Identity;
use vexa_evals::keycloak::Keycloak;
use vexa_evals::operator::Operator;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

/// How long the user may take to appear.
/// The operator's default identity-provider alias.
const ISSUER_ALIAS: &str = "vexa-dispatch";
const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
#[ignore = "needs the local cluster: eval \"$(hack/cluster env)\""]
async fn an_identity_becomes_a_linked_keycloak_user() {
    let client = client().await;
    let kc = Keycloak::required();
    let ns = TestNamespace::new(&client, "subjects").await;
    // A subject no other eval uses, so a user left by an earlier run is not mistaken for ours.
    let subject = format!("carol-{}", &ns.name[ns.name.len().saturating_sub(5)..]);
    let admin = kc.admin().await;
    assert_eq!(
        admin
            .linked_user_id(&kc.realm, ISSUER_ALIAS, &subject)
            .await
            .unwrap(),
        None,
        "{subject} must not exist before the Identity does"
    );

    let redis = cluster_env("POD_REDIS_URL");
    let mut flags = vec!["--redis-url".to_owned(), redis];
    flags.extend(kc.operator_flags());
    // Keycloak refuses an identity provider whose issuer is not a URL (the operator's default
    // `vexa-operator` is not); nothing fetches the keys here.
    flags.extend([
        format!("--keycloak-url={}", kc.url),
        format!("--keycloak-issuer-alias={ISSUER_ALIAS}"),
        "--token-issuer=http://127.0.0.1:9".to_owned(),
        "--keycloak-jwks-url=http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = Operator::start(&flags);
    operator.ready().await;

    let identities = Api::<Identity>::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    identities
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "vexa.ai/v1", "kind": "Identity",
                "metadata": {"name": "carol"},
                "spec": {"subject": subject},
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let linked = wait_for("the Keycloak user linked to the issuer", WITHIN, || {
        let admin = &admin;
        let realm = &kc.realm;
        let subject = &subject;
        async move {
            admin
                .linked_user_id(realm, ISSUER_ALIAS, subject)
                .await
                .unwrap()
        }
    })
    .await;
    let took = started.elapsed();
    assert_eq!(linked, subject, "the link's user id is the token's sub");
    eprintln!("Identity created -> Keycloak user linked in {took:?}");

    let condition = wait_for("Linked=True on the Identity", WITHIN, || {
        let identities = identities.clone();
        async move {
            let i = identities.get("carol").await.ok()?;
            i.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Linked" && c.status == "True")
        }
    })
    .await;
    assert!(
        condition.message.contains(&subject),
        "{}",
        condition.message
    );
    operator.kill().await;
}
