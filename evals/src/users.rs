//! Real users of the cluster for the evals: a client certificate for a name, signed by the
//! cluster through the CertificateSigningRequest API (`kubernetes.io/kube-apiserver-client`,
//! which `hack/cluster` lets the controller manager sign), and a client that authenticates
//! with it. Not the admin: the API server sees exactly that user, and RBAC and admission
//! treat it as they would a tenant.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::wait_for;

/// A person of the cluster: a kubeconfig file (the admin's cluster, this user's certificate),
/// for a CLI run as them, and a client acting as them.
#[derive(Clone)]
pub struct User {
    /// Their kubeconfig file.
    pub kubeconfig: PathBuf,
    /// A client acting as them.
    pub client: Client,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// A client that acts as the user `name` (in no group but `system:authenticated`).
pub async fn user_client(admin: &Client, name: &str) -> Client {
    user(admin, name).await.client
}

/// The user `name` (in no group but `system:authenticated`), with a certificate the cluster
/// signed.
pub async fn user(admin: &Client, name: &str) -> User {
    let dir = std::env::temp_dir().join(format!("vexa-eval-user-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let csr_pem = dir.join("csr.pem");
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr_pem)
        .output()
        .expect("openssl (hack/cluster installs it)");
    assert!(out.status.success(), "openssl req: {out:?}");

    let csr_name = format!("vexa-eval-{name}-{}", std::process::id());
    let csrs = Api::<CertificateSigningRequest>::all(admin.clone());
    let _ = csrs.delete(&csr_name, &DeleteParams::default()).await;
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": csr_name},
        "spec": {
            "request": ByteString(std::fs::read(&csr_pem).unwrap()),
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["client auth"],
            "expirationSeconds": 3600,
        },
    }))
    .unwrap();
    csrs.create(&PostParams::default(), &csr)
        .await
        .unwrap_or_else(|e| panic!("create CSR {csr_name}: {e}"));
    csrs.patch_approval(
        &csr_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "VexaEval",
            "message": "a user for the evals",
        }]}})),
    )
    .await
    .unwrap_or_else(|e| panic!("approve CSR {csr_name}: {e}"));
    let cert = wait_for(
        &format!("the cluster to sign the certificate of {name} (CSR {csr_name})"),
        Duration::from_secs(60),
        || async {
            csrs.get(&csr_name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.certificate)
                .filter(|c| !c.0.is_empty())
        },
    )
    .await;
    let _ = csrs.delete(&csr_name, &DeleteParams::default()).await;
    let cert_path = dir.join("cert.pem");
    std::fs::write(&cert_path, &cert.0).unwrap();
    with_cert(&dir, name, &cert_path, &key).await
}

/// The bearer token of the test person `name` (`alice`, `bob`, `carol` or `dave`): the API
/// server's static token file knows it, as it would a token the web console signs someone in
/// with. Read from `$VEXA_PEOPLE_DIR/<name>.token`, which `hack/cluster up` writes.
pub fn token(name: &str) -> String {
    let path = PathBuf::from(crate::cluster_env("VEXA_PEOPLE_DIR")).join(format!("{name}.token"));
    let token = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no token for {name} at {} ({e}): `hack/cluster up` makes the test people's tokens",
            path.display()
        )
    });
    let token = token.trim();
    assert!(
        !token.is_empty(),
        "{} is empty: `hack/cluster up` makes the test people's tokens",
        path.display()
    );
    token.to_string()
}

/// The admin kubeconfig's cluster, with the user authenticating by `cert` and `key`.
async fn with_cert(dir: &std::path::Path, name: &str, cert: &PathBuf, key: &PathBuf) -> User {
    let admin = Kubeconfig::read().expect("KUBECONFIG (eval \"$(hack/cluster env)\")");
    let mut kc = serde_json::to_value(&admin).unwrap();
    kc["users"] = json!([{"name": name, "user": {
        "client-certificate": cert, "client-key": key,
    }}]);
    for ctx in kc["contexts"].as_array_mut().into_iter().flatten() {
        ctx["context"]["user"] = json!(name);
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_json::to_vec(&kc).unwrap()).unwrap();
    let kc: Kubeconfig = serde_json::from_value(kc).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    User {
        kubeconfig,
        client: Client::try_from(config).unwrap(),
    }
}

/// Gives the user `user` the RBAC `rules` in namespace `ns`: a Role `name` and a RoleBinding
/// `<user>-<name>`, created by `admin`. (It takes effect once the API server's informers have
/// it: probe before relying on it.)
pub async fn grant_role(
    admin: &Client,
    ns: &str,
    user: &str,
    name: &str,
    rules: serde_json::Value,
) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules}))
        .expect("a Role");
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create Role {name}: {e}"));
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind Role {name} to {user}: {e}"));
}

/// The Keycloak password of the test person `name`: they sign in to the web console at the
/// cluster's OpenID provider with it, and are then the cluster user `oidc:<name>`. Read from
/// `$VEXA_PEOPLE_DIR/<name>.password`, which `hack/cluster up` writes.
pub fn password(name: &str) -> String {
    let path =
        PathBuf::from(crate::cluster_env("VEXA_PEOPLE_DIR")).join(format!("{name}.password"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "no password for {name} at {} ({e}): `hack/cluster up` makes them",
                path.display()
            )
        })
        .trim()
        .to_owned()
}
