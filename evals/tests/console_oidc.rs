//! Signing in to the web console at the cluster's OpenID provider, in a real browser
//! (`evals/browser/console_oidc.mjs`): Debian's Chromium logs in at the local Keycloak over TLS
//! (`hack/cluster up`: realm `vexa`, client `vexa-console`, the test people with passwords),
//! the console trades the code for an ID token, and the API server, which trusts that issuer
//! for that client (`--authentication-config`), names the person `oidc:<name>`. The console
//! starts with no credentials of its own; RBAC decides as for anyone.
//!
//! The attacker's side: a caught callback (code and state) opened in another browser signs
//! nobody in and is spent; a state the console never issued is refused; tokens of another
//! issuer and forged ones are refused by the API server; after sign-out the provider's session
//! is over too (Keycloak has none left for her).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use vexa_evals::browser::{run_script_async, script};
use vexa_evals::fixtures::free_port;
use vexa_evals::keycloak::Keycloak;
use vexa_evals::{TestNamespace, built_binary, client, cluster_env, users, wait_for};

/// How long the console's client's tokens live in this test: short, so the browser outlives
/// one and the console must renew it.
const TOKEN_SECONDS: u64 = 65;

struct Console(Child);

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` against Keycloak's admin API as the master realm's admin.
fn kc_admin(kc: &Keycloak, method: &str, path: &str, body: Option<&Value>) -> Value {
    let token = kc_token(
        kc,
        "master",
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", &kc.admin_user),
            ("password", &kc.admin_password),
        ],
    )["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "--max-time", "20", "-X", method])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/admin/realms{path}", kc.url));
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string());
    }
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A token endpoint answer of `realm` for the form `fields`.
fn kc_token(kc: &Keycloak, realm: &str, fields: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "--max-time", "20"]);
    for (k, v) in fields {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    cmd.arg(format!(
        "{}/realms/{realm}/protocol/openid-connect/token",
        kc.url
    ));
    let out = cmd.output().expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The console client's internal id.
fn console_client(kc: &Keycloak) -> (String, Value) {
    let clients = kc_admin(
        kc,
        "GET",
        &format!(
            "/{}/clients?clientId={}",
            kc.realm,
            cluster_env("VEXA_OIDC_CLIENT_ID")
        ),
        None,
    );
    let c = clients[0].clone();
    (c["id"].as_str().unwrap().to_owned(), c)
}

/// The client's tokens live `seconds` ("" for the realm's default).
fn token_lifespan(kc: &Keycloak, seconds: &str) {
    let (id, mut c) = console_client(kc);
    c["attributes"]["access.token.lifespan"] = json!(seconds);
    kc_admin(kc, "PUT", &format!("/{}/clients/{id}", kc.realm), Some(&c));
}

/// A JWT that says everything the API server wants, signed by nobody it trusts.
fn forged_token() -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{}.{}.{}",
        part(json!({"alg": "RS256", "typ": "JWT", "kid": "forged"})),
        part(json!({
            "iss": cluster_env("VEXA_OIDC_ISSUER"), "aud": cluster_env("VEXA_OIDC_CLIENT_ID"),
            "azp": cluster_env("VEXA_OIDC_CLIENT_ID"), "sub": "forged",
            "preferred_username": "alice", "iat": now, "exp": now + 300,
        })),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    )
}

async fn grant_list(admin: &Client, ns: &str, person: &str) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "oidc-reader"},
        "rules": [{"apiGroups": ["vexa.ai"], "resources": ["dispatches"], "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "oidc-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "oidc-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": person}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the local cluster with Keycloak (hack/cluster up) and the browser (hack/browser deps)"]
async fn people_sign_in_at_the_provider_and_the_cluster_names_them() {
    let admin = client().await;
    let kc = Keycloak::required();
    let ns = TestNamespace::new(&admin, "console-oidc").await;
    let prefix = cluster_env("VEXA_OIDC_USERNAME_PREFIX");
    let (alice, bob) = (format!("{prefix}alice"), format!("{prefix}bob"));
    grant_list(&admin, &ns.name, &alice).await;

    token_lifespan(&kc, &TOKEN_SECONDS.to_string());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let console = Console(
        Command::new(built_binary("vexa-console", "VEXA_CONSOLE_BIN"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--namespace", &ns.name])
            .args(["--oidc-issuer", &cluster_env("VEXA_OIDC_ISSUER")])
            .args(["--oidc-client-id", &cluster_env("VEXA_OIDC_CLIENT_ID")])
            .args([
                "--oidc-client-secret-file",
                &cluster_env("VEXA_OIDC_CLIENT_SECRET_FILE"),
            ])
            .args(["--oidc-ca", &cluster_env("VEXA_OIDC_CA")])
            .args([
                "--oidc-redirect-url",
                &format!("{url}/signin/oidc/callback"),
            ])
            .args(["--oidc-label", "Keycloak"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vexa-console"),
    );
    let health = format!("{url}/healthz");
    wait_for("the console to listen", Duration::from_secs(30), || {
        let health = health.clone();
        async move { vexa_evals::http_get(&health).await.ok() }
    })
    .await;

    // A real ID token of the same Keycloak, for another realm's client: not for the console.
    let other = kc_token(
        &kc,
        "master",
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("scope", "openid"),
            ("username", &kc.admin_user),
            ("password", &kc.admin_password),
        ],
    )["id_token"]
        .as_str()
        .expect("an ID token from the master realm")
        .to_owned();

    let artifacts = std::env::temp_dir().join(format!("vexa-console-oidc-{}", ns.name));
    let env = vec![
        ("CONSOLE_URL", url.clone()),
        ("CONSOLE_NAMESPACE", ns.name.clone()),
        ("ALICE_PASSWORD", users::password("alice")),
        ("BOB_PASSWORD", users::password("bob")),
        ("RENEW_WAIT_MS", ((TOKEN_SECONDS + 5) * 1000).to_string()),
        ("FORGED_TOKEN", forged_token()),
        ("OTHER_ID_TOKEN", other),
        ("VEXA_BROWSER_TIMEOUT_MS", "240000".to_owned()),
    ];
    let run = run_script_async(script("console_oidc.mjs"), env, artifacts).await;
    token_lifespan(&kc, "");
    eprintln!("browser stderr:\n{}", run.stderr);
    for r in &run.results {
        eprintln!("browser: {r}");
    }
    run.assert_success();

    for who in ["bob", "alice"] {
        let ms = &run.check(&format!("sign-in-ms-{who}"))["ms"];
        eprintln!("figure: {who}'s password sent -> the console's first page: {ms} ms");
    }
    // A login CSRF: bob's code and state, in alice's browser, sign nobody in.
    let c = run.check("login-csrf");
    assert_eq!(c["hasCode"], true, "{c}");
    assert_eq!(c["status"], 400, "{c}");
    assert!(
        c["text"]
            .as_str()
            .unwrap()
            .contains("not started in this browser"),
        "{c}"
    );
    assert!(c["afterUrl"].as_str().unwrap().ends_with("/signin"), "{c}");
    // The same callback in bob's own browser: the state was spent.
    let c = run.check("replay");
    assert_eq!(c["status"], 400, "{c}");
    let c = run.check("forged-state");
    assert_eq!(c["status"], 400, "{c}");
    let c = run.check("provider-error");
    assert_eq!(c["status"], 401, "{c}");
    assert!(c["text"].as_str().unwrap().contains("<img src=x"), "{c}");
    assert_eq!(c["pwned"], false, "{c}");
    assert_eq!(c["images"], 0, "{c}");

    // bob is `oidc:bob` to the cluster, and RBAC refuses him.
    let c = run.check("bob");
    assert_eq!(c["person"], bob.as_str(), "{c}");
    assert_eq!(c["status"], 403, "{c}");
    assert!(c["text"].as_str().unwrap().contains(&bob), "{c}");

    // alice is `oidc:alice`; the session cookie is the console's, HttpOnly and Strict.
    let c = run.check("alice");
    assert_eq!(c["person"], alice.as_str(), "{c}");
    assert_eq!(c["status"], 200, "{c}");
    let cookies = c["cookies"].as_array().unwrap();
    let session: Vec<_> = cookies
        .iter()
        .filter(|k| k["name"].as_str().unwrap().contains("vexa-session"))
        .collect();
    assert_eq!(session.len(), 1, "{c}");
    assert_eq!(session[0]["httpOnly"], true, "{c}");
    assert_eq!(session[0]["sameSite"], "Strict", "{c}");
    assert!(
        !cookies
            .iter()
            .any(|k| k["name"].as_str().unwrap().contains("vexa-signin")),
        "the sign-in's state cookie is cleared: {c}"
    );
    // Her ID token expired meanwhile: the console renewed it.
    let c = run.check("renewed");
    assert_eq!(c["status"], 200, "{c}");
    assert_eq!(c["person"], alice.as_str(), "{c}");

    // What the API server must not accept.
    let c = run.check("pasted");
    assert_eq!(c["forged"]["status"], 401, "{c}");
    assert_eq!(c["otherIssuer"]["status"], 401, "{c}");

    // Signed out of both: the console sends her to sign in, the provider asks her password.
    let c = run.check("signed-out");
    assert!(c["afterUrl"].as_str().unwrap().ends_with("/signin"), "{c}");
    assert_eq!(c["providerAsks"], 1, "{c}");
    let users = kc_admin(
        &kc,
        "GET",
        &format!("/{}/users?exact=true&username=alice", kc.realm),
        None,
    );
    let id = users[0]["id"].as_str().unwrap();
    let sessions = kc_admin(
        &kc,
        "GET",
        &format!("/{}/users/{id}/sessions", kc.realm),
        None,
    );
    assert_eq!(
        sessions.as_array().map(Vec::len),
        Some(0),
        "alice has no Keycloak session left: {sessions}"
    );
    drop(console);
}
