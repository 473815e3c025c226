//! The console's guards, offline: what a page is served with, and what is refused before any
//! request reaches the cluster (no session, a forged session, another origin, a missing or
//! wrong CSRF token, hostile names).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use kube::Client;
use tower::ServiceExt;
use vexa_console::cluster::{ApiServer, Person};
use vexa_console::session::{Limits, Sessions};
use vexa_console::{App, router};

/// An app whose API server is never reached (a client that would hang is never asked).
fn app() -> (App, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let api = ApiServer::new("https://127.0.0.1:1", ca.to_str().unwrap()).unwrap();
    let sessions = Sessions::new(Limits::default(), true);
    let (svc, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    // The handle is dropped: a request to this client fails at once instead of hanging.
    let client = Client::new(svc, "default");
    let id = sessions
        .start(
            Person {
                name: "alice".into(),
                groups: vec![],
            },
            client,
        )
        .unwrap();
    let csrf = sessions.get(&id).unwrap().csrf;
    let app = App {
        api,
        sessions,
        default_namespace: Arc::from("default"),
        oidc: None,
    };
    (app, format!("__Host-vexa-session={id}"), csrf)
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = router(app.clone()).oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn post(uri: &str, cookie: Option<&str>, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(uri)
        .header(header::HOST, "console.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri).header(header::HOST, "console.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn pages_carry_a_strict_policy() {
    let (app, _, _) = app();
    let (status, h, body) = send(&app, get("/signin", None)).await;
    assert_eq!(status, StatusCode::OK);
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(body.contains("name=\"token\""));
    assert!(!body.contains("<script>"), "no inline script: {body}");
}

#[tokio::test]
async fn without_a_session_pages_ask_to_sign_in_and_the_rest_is_refused() {
    let (app, _, _) = app();
    let (status, h, _) = send(&app, get("/dispatches", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/signin");
    let forged = "__Host-vexa-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, _, _) = send(&app, get("/dispatches", Some(forged))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let mut events = get("/n/default/dispatches/x/stream", None);
    events
        .headers_mut()
        .insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    let (status, _, _) = send(&app, events).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(
        &app,
        post(
            "/n/default/dispatches/x/turns",
            None,
            Some("https://console.test"),
            "prompt=hi",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn writes_from_another_origin_are_refused_even_with_the_session() {
    let (app, cookie, csrf) = app();
    let body = format!("csrf={csrf}&prompt=hi");
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let (status, _, text) = send(
            &app,
            post(
                "/n/default/dispatches/x/turns",
                Some(&cookie),
                origin,
                &body,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(text.contains("page of this console"), "{text}");
    }
    let (status, _, _) = send(
        &app,
        post("/signin", None, Some("https://evil.example"), "token=x"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "login CSRF");
}

#[tokio::test]
async fn writes_without_the_sessions_csrf_token_are_refused() {
    let (app, cookie, csrf) = app();
    let origin = Some("https://console.test");
    for body in [
        "prompt=hi".to_owned(),
        "csrf=wrong&prompt=hi".to_owned(),
        format!("csrf={}&prompt=hi", &csrf[1..]),
    ] {
        for uri in [
            "/n/default/dispatches/x/turns",
            "/n/default/dispatches/x/stop",
            "/chat",
            "/n/default/cards/c/approve",
            "/n/default/schedules/s/run-now",
            "/n/default/workspaces/w/upload",
            "/signout",
        ] {
            let (status, _, text) = send(&app, post(uri, Some(&cookie), origin, &body)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri} {body}");
            assert!(text.contains("stale"), "{uri}: {text}");
        }
    }
}

#[tokio::test]
async fn hostile_names_never_reach_the_cluster() {
    let (app, cookie, csrf) = app();
    let (status, _, _) = send(
        &app,
        get("/n/default/dispatches/..%2Fsecrets", Some(&cookie)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = send(
        &app,
        get("/dispatches?namespace=kube-system%2F..", Some(&cookie)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Knowledge: paths out of the workspace and revision expressions, refused before any read.
    for uri in [
        "/n/default/workspaces/w/file?path=..%2F..%2Fetc%2Fpasswd",
        "/n/default/workspaces/w/file?path=%2Fetc%2Fpasswd",
        "/n/default/workspaces/w?path=a%2F..%2F..",
        "/n/default/workspaces/w?rev=HEAD~1",
        "/n/default/workspaces/w/commits/--output=x",
        "/n/default/workspaces/..%2Fw",
    ] {
        let (status, _, body) = send(&app, get(uri, Some(&cookie))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    let (status, _, body) = send(
        &app,
        post(
            "/n/default/dispatches/x/turns",
            Some(&cookie),
            Some("https://console.test"),
            &format!("csrf={csrf}&prompt=%20%20"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_bad_token_is_refused_with_a_message() {
    let (app, _, _) = app();
    for token in ["", "two%20words", "%0d%0aX-Injected:%201"] {
        let (status, _, body) = send(
            &app,
            post(
                "/signin",
                None,
                Some("https://console.test"),
                &format!("token={token}"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{token}");
        assert!(body.contains("not a token"), "{body}");
    }
}

/// The app, with sign-in at a provider that is never reached (nothing listens at its issuer).
fn app_with_provider() -> App {
    let (mut app, _, _) = app();
    app.oidc = Some(Arc::new(vexa_console::oidc::Oidc::new(
        vexa_console::oidc::Settings {
            client: vexa_keycloak::oidc::ClientSettings {
                issuer: "https://127.0.0.1:1/realms/vexa".into(),
                client_id: "vexa-console".into(),
                client_secret: "secret".into(),
                redirect_uri: "https://console.test/signin/oidc/callback".into(),
                scopes: vec![],
            },
            ca: None,
            label: "Keycloak".into(),
        },
        true,
    )));
    app
}

#[tokio::test]
async fn the_provider_sign_in_is_offered_only_when_configured() {
    let (plain, _, _) = app();
    let (_, _, page) = send(&plain, get("/signin", None)).await;
    assert!(!page.contains("signin-oidc"), "{page}");
    let (status, _, _) = send(&plain, get("/signin/oidc", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&plain, get("/signin/oidc/callback?state=a&code=b", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let app = app_with_provider();
    let (_, _, page) = send(&app, get("/signin", None)).await;
    assert!(page.contains("Sign in with Keycloak"), "{page}");
}

#[tokio::test]
async fn a_callback_this_console_did_not_start_signs_nobody_in() {
    let app = app_with_provider();
    // A state and a matching cookie the attacker made up: never issued, so refused before the
    // provider is asked (it would not answer) and no session cookie is set.
    for (uri, cookie) in [
        (
            "/signin/oidc/callback?state=made-up&code=c",
            Some("__Host-vexa-signin=made-up"),
        ),
        ("/signin/oidc/callback?state=made-up&code=c", None),
    ] {
        let (status, headers, page) = send(&app, get(uri, cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
        assert!(page.contains("not started in this browser"), "{page}");
        let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert!(
            cookies
                .iter()
                .all(|c| !c.to_str().unwrap().contains("vexa-session=")),
            "{cookies:?}"
        );
    }
    // Neither state nor code: not a callback.
    let (status, _, _) = send(&app, get("/signin/oidc/callback", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The provider's error, with markup: escaped.
    let (status, _, page) = send(
        &app,
        get(
            "/signin/oidc/callback?error=x&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_clear_error_not_a_redirect() {
    let app = app_with_provider();
    let (status, headers, page) = send(&app, get("/signin/oidc", None)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(headers.get(header::LOCATION).is_none());
    assert!(page.contains("sign-in service did not answer"), "{page}");
}
