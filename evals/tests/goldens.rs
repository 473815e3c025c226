//! Stage 0 proof: every golden against the real API server. Valid ones are accepted (server
//! side dry run), invalid ones are refused with their `# expect:` message, and update goldens
//! exercise the transition rules (immutability, a final decision, a stop that stays).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use kube::api::{DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::Value;
use vexa_evals::{TestNamespace, client, goldens};

fn api_for(client: &Client, ns: &str, obj: &Value) -> Api<DynamicObject> {
    let kind = obj["kind"].as_str().expect("kind");
    let crd = vexa_crds::all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("known kind");
    let gvk = GroupVersionKind::gvk(vexa_crds::GROUP, "v1", kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
    if crd.spec.scope == "Namespaced" {
        Api::namespaced_with(client.clone(), ns, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn object(v: &Value) -> DynamicObject {
    serde_json::from_value(v.clone()).expect("golden is an object")
}

fn message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    }
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn goldens_against_the_api_server() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "goldens").await;
    let mut checked = 0;

    for g in goldens("valid") {
        let api = api_for(&client, &ns.name, &g.docs[0]);
        api.create(&dry_run(), &object(&g.docs[0]))
            .await
            .unwrap_or_else(|e| panic!("{} should be accepted: {}", g.path.display(), message(e)));
        checked += 1;
    }

    for g in goldens("invalid") {
        let expect = g.expect.clone().expect("# expect:");
        let api = api_for(&client, &ns.name, &g.docs[0]);
        match api.create(&dry_run(), &object(&g.docs[0])).await {
            Ok(_) => panic!("{} was accepted; expected: {expect}", g.path.display()),
            Err(e) => {
                let m = message(e);
                assert!(
                    m.contains(&expect),
                    "{}:\n  expected: {expect}\n  got:      {m}",
                    g.path.display()
                );
            }
        }
        checked += 1;
    }

    for (category, valid) in [("valid-update", true), ("invalid-update", false)] {
        for g in goldens(category) {
            let api = api_for(&client, &ns.name, &g.docs[0]);
            let created = api
                .create(&PostParams::default(), &object(&g.docs[0]))
                .await
                .expect("original is valid");
            let mut next = object(&g.docs[1]);
            next.metadata.resource_version = created.metadata.resource_version.clone();
            let name = created.metadata.name.clone().unwrap();
            let result = api.replace(&name, &dry_run(), &next).await;
            match (valid, result) {
                (true, Ok(_)) => {}
                (true, Err(e)) => panic!(
                    "{}: update should be allowed: {}",
                    g.path.display(),
                    message(e)
                ),
                (false, Ok(_)) => panic!("{}: update was allowed", g.path.display()),
                (false, Err(e)) => {
                    let (expect, m) = (g.expect.clone().expect("# expect:"), message(e));
                    assert!(
                        m.contains(&expect),
                        "{}:\n  expected: {expect}\n  got:      {m}",
                        g.path.display()
                    );
                }
            }
            api.delete(&name, &Default::default())
                .await
                .expect("delete");
            checked += 1;
        }
    }
    assert!(checked >= 45, "only {checked} goldens checked");
    println!("{checked} goldens checked against the API server");
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn crds_on_the_server_match_the_generated_ones() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let client = client().await;
    let api = Api::<CustomResourceDefinition>::all(client);
    for crd in vexa_crds::all_crds() {
        let name = crd.metadata.name.clone().unwrap();
        let served = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name} is not installed: {e}"));
        assert_eq!(
            served.spec.versions[0].schema, crd.spec.versions[0].schema,
            "{name}: the installed schema differs from the generated one: re-apply charts/vexa/crds"
        );
        assert!(
            served
                .spec
                .names
                .categories
                .unwrap_or_default()
                .contains(&"vexa".to_owned())
        );
    }
}
