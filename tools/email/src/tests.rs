//! The tool against the real server of `hack/mail` (skipped, with a message, when
//! `VEXA_MAIL_*` is unset): each caller reaches only its own mailbox; no answer carries a
//! password; a send with the same Message-ID goes out once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::Config;
use crate::token::Check;

struct Live {
    app: axum::Router,
    domain: String,
    smtp: (String, u16),
    passwords: Vec<String>,
}

fn live() -> Option<Live> {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(ih), Some(ip), Some(sh), Some(sp), Some(dir), Some(domain)) = (
        var("VEXA_MAIL_IMAP_HOST"),
        var("VEXA_MAIL_IMAP_PORT"),
        var("VEXA_MAIL_SMTP_HOST"),
        var("VEXA_MAIL_SMTP_PORT"),
        var("VEXA_MAIL_PASSWORD_DIR"),
        var("VEXA_MAIL_DOMAIN"),
    ) else {
        eprintln!("SKIPPED: VEXA_MAIL_* unset; run hack/mail up and eval \"$(hack/mail env)\"");
        return None;
    };
    let entry = |user: &str| {
        json!({"id": user, "imap": {"host": ih, "port": ip.parse::<u16>().unwrap()},
            "smtp": {"host": sh, "port": sp.parse::<u16>().unwrap()}, "username": user,
            "passwordFile": format!("{dir}/{user}"), "address": format!("{user}@{domain}")})
    };
    let config: Config = serde_json::from_value(json!({
        "mailboxes": [entry("alice"), entry("bob")],
        "subjects": {"sub-alice": "alice", "sub-bob": "bob"}
    }))
    .unwrap();
    let passwords = ["alice", "bob"]
        .iter()
        .map(|u| {
            std::fs::read_to_string(format!("{dir}/{u}"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    Some(Live {
        app: crate::router(Arc::new(Check::DecodeOnly), Arc::new(config)),
        domain,
        smtp: (sh, sp.parse().unwrap()),
        passwords,
    })
}

/// An unsigned token for `sub` (the decode-only check reads it; verification is token.rs's).
fn token(sub: &str) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.x",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(json!({"sub": sub, "iss": "http://kc/realms/vexa", "aud": "vexa-email"}))
    )
}

impl Live {
    /// A `tools/call`: the HTTP status and the JSON-RPC answer as text.
    async fn call(&self, sub: Option<&str>, tool: &str, arguments: Value) -> (u16, String) {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        let mut req = http::Request::post("/mcp")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(sub) = sub {
            req = req.header("authorization", format!("Bearer {}", token(sub)));
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for pw in &self.passwords {
            assert!(
                !text.contains(pw.as_str()),
                "a password in an answer: {text}"
            );
        }
        (status, text)
    }

    async fn deliver(&self, to: &str, subject: &str) {
        let m = lettre::Message::builder()
            .from(format!("outside@{}", self.domain).parse().unwrap())
            .to(format!("{to}@{}", self.domain).parse().unwrap())
            .subject(subject)
            .body("secret body\n".to_owned())
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.smtp.0)
            .port(self.smtp.1)
            .build()
            .send(m)
            .await
            .unwrap();
    }
}

fn unique(what: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}{n}")
}

/// The uids `email.search` answered.
fn uids(answer: &str) -> Vec<u64> {
    let v: Value = serde_json::from_str(answer).unwrap();
    let text = v["result"]["content"][0]["text"].as_str().unwrap_or("[]");
    let list: Value = serde_json::from_str(text).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["uid"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn alice_never_reads_bobs_mailbox() {
    let Some(live) = live() else { return };
    let subject = unique("forbob");
    live.deliver("bob", &subject).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        let (status, answer) = live
            .call(Some("sub-bob"), "email.search", json!({"query": subject}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let found = uids(&answer);
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(found.len(), 1, "bob finds his message");
    let (_, read) = live
        .call(Some("sub-bob"), "email.read", json!({"uid": found[0]}))
        .await;
    assert!(
        read.contains(&subject) && read.contains("secret body"),
        "{read}"
    );

    // Alice's token: her own mailbox, never bob's.
    let (status, answer) = live
        .call(Some("sub-alice"), "email.search", json!({"query": subject}))
        .await;
    assert_eq!(status, 200);
    assert!(uids(&answer).is_empty(), "{answer}");
    let (_, read) = live
        .call(Some("sub-alice"), "email.read", json!({"uid": found[0]}))
        .await;
    assert!(!read.contains(&subject), "{read}");

    // A subject with no mailbox, and no token at all.
    let (_, answer) = live
        .call(Some("sub-carol"), "email.search", json!({"query": subject}))
        .await;
    assert!(
        answer.contains("no mailbox") && !answer.contains(&subject),
        "{answer}"
    );
    let (status, _) = live.call(None, "email.search", json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn draft_and_send_once_through_the_tool() {
    let Some(live) = live() else { return };
    let (_, answer) = live
        .call(
            Some("sub-alice"),
            "email.draft",
            json!({"to": [format!("bob@{}", live.domain)], "subject": "draft", "body": "d"}),
        )
        .await;
    assert!(answer.contains("draft-"), "{answer}");
    let (_, answer) = live
        .call(
            Some("sub-alice"),
            "email.draft",
            json!({"to": ["bob@x"], "subject": "a\r\nBcc: evil@example.com", "body": "d"}),
        )
        .await;
    assert!(answer.contains("control character"), "{answer}");

    let id = format!("{}@{}", unique("card-"), live.domain);
    let args = json!({"to": [format!("bob@{}", live.domain)], "subject": "approved",
        "body": "once", "messageId": id});
    let (_, first) = live
        .call(Some("sub-alice"), "email.send", args.clone())
        .await;
    assert!(first.contains(r#"\"result\":\"Sent\""#), "{first}");
    let (_, second) = live.call(Some("sub-alice"), "email.send", args).await;
    assert!(second.contains(r#"\"result\":\"AlreadySent\""#), "{second}");
}
