//! Against the real IMAP/SMTP server of `hack/mail` (dovecot + OpenSMTPD on this machine).
//! Skipped, with a message, when `eval "$(hack/mail env)"` was not run or the server is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use vexa_email::{
    Cursor, Endpoint, Error, Mailbox, Message, Sent, Wake, current_cursor, fetch_new, idle, read,
    search, send_once,
};

struct Env {
    imap: Endpoint,
    smtp: Endpoint,
    passwords: PathBuf,
    domain: String,
}

/// The server from `hack/mail env`, or `None` (the test then says why and passes).
async fn env() -> Option<Env> {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(ih), Some(ip), Some(sh), Some(sp), Some(pw), Some(domain)) = (
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
    let env = Env {
        imap: Endpoint {
            host: ih,
            port: ip.parse().unwrap(),
        },
        smtp: Endpoint {
            host: sh,
            port: sp.parse().unwrap(),
        },
        passwords: pw.into(),
        domain,
    };
    if tokio::net::TcpStream::connect((env.imap.host.as_str(), env.imap.port))
        .await
        .is_err()
    {
        eprintln!("SKIPPED: no IMAP server at {}; run hack/mail up", env.imap);
        return None;
    }
    Some(env)
}

impl Env {
    fn mailbox(&self, user: &str) -> Mailbox {
        Mailbox::new(
            user,
            self.imap.clone(),
            self.smtp.clone(),
            user,
            self.passwords.join(user),
        )
    }
    fn addr(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }
    fn unique_id(&self, what: &str) -> String {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{what}-{n}@{}", self.domain)
    }
    /// Delivers a message through SMTP, as an outside sender would.
    async fn deliver(&self, from: &str, to: &str, subject: &str, message_id: &str) {
        let m = lettre::Message::builder()
            .from(self.addr(from).parse().unwrap())
            .to(self.addr(to).parse().unwrap())
            .subject(subject)
            .message_id(Some(format!("<{message_id}>")))
            .body(format!("body of {subject}\n"))
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.smtp.host)
            .port(self.smtp.port)
            .build()
            .send(m)
            .await
            .unwrap();
    }
}

/// fetch_new from `cursor` until the message `id` is among the headers (delivery is
/// asynchronous, and other tests deliver to the same mailboxes), for 15 s.
async fn fetch_until_new(mb: &Mailbox, cursor: Cursor, id: &str) -> vexa_email::Fetched {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let f = fetch_new(mb, Some(cursor), 50).await.unwrap();
        if f.headers
            .iter()
            .any(|h| h.message_id.as_deref() == Some(id))
            || Instant::now() > deadline
        {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn delivered_mail_is_fetched_once_and_the_cursor_advances() {
    let Some(env) = env().await else { return };
    let triage = env.mailbox("triage");
    let start = current_cursor(&triage).await.unwrap();
    let id = env.unique_id("fetch");
    env.deliver("outside", "triage", "[triage] printer on fire", &id)
        .await;

    let first = fetch_until_new(&triage, start, &id).await;
    assert!(!first.restarted);
    let h = first
        .headers
        .iter()
        .find(|h| h.message_id.as_deref() == Some(id.as_str()))
        .expect("the delivered message's headers");
    assert_eq!(h.from.as_deref(), Some(env.addr("outside").as_str()));
    assert_eq!(h.to, vec![env.addr("triage")]);
    assert_eq!(h.subject.as_deref(), Some("[triage] printer on fire"));
    assert!(h.date.is_some() && h.size > 0, "{h:?}");
    assert!(h.uid > start.uid);
    assert_eq!(first.cursor.uid_validity, start.uid_validity);
    assert_eq!(first.cursor.uid, first.headers.last().unwrap().uid);

    // From the new cursor, that message is never seen again.
    let second = fetch_new(&triage, Some(first.cursor), 50).await.unwrap();
    assert!(
        second.headers.iter().all(|h| h.uid > first.cursor.uid),
        "{second:?}"
    );
    assert!(
        second
            .headers
            .iter()
            .all(|h| h.message_id.as_deref() != Some(id.as_str()))
    );
    assert_eq!(second.cursor.uid_validity, start.uid_validity);
}

#[tokio::test]
async fn a_uidvalidity_change_restarts_from_the_start_and_fetches_are_bounded() {
    let Some(env) = env().await else { return };
    let triage = env.mailbox("triage");
    let start = current_cursor(&triage).await.unwrap();
    for i in 0..2 {
        let id = env.unique_id(&format!("bound{i}"));
        env.deliver("alice", "triage", "bounded", &id).await;
    }
    // Both delivered.
    let deadline = Instant::now() + Duration::from_secs(15);
    while current_cursor(&triage).await.unwrap().uid < start.uid + 2 {
        assert!(Instant::now() < deadline, "the two messages never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = Cursor {
        uid_validity: start.uid_validity.wrapping_add(1),
        uid: u32::MAX - 1,
    };
    let f = fetch_new(&triage, Some(stale), 1).await.unwrap();
    assert!(f.restarted, "{f:?}");
    assert_eq!(f.headers.len(), 1);
    assert!(f.more, "at least two messages wait, the limit was one");
    assert_eq!(f.cursor.uid_validity, start.uid_validity);
    // The folder's first message: nothing below it.
    let from_start = fetch_new(&triage, None, 1).await.unwrap();
    assert_eq!(from_start.headers, f.headers);
    assert!(!from_start.restarted);
}

#[tokio::test]
async fn send_once_twice_sends_exactly_one_message() {
    let Some(env) = env().await else { return };
    let alice = env.mailbox("alice");
    let bob = env.mailbox("bob");
    let id = env.unique_id("card");
    let message = Message {
        from: env.addr("alice"),
        to: vec![env.addr("bob")],
        subject: "Approved reply".into(),
        body: "Exactly once.\n".into(),
        message_id: id.clone(),
    };
    assert_eq!(send_once(&alice, &message).await.unwrap(), Sent::Sent);
    assert_eq!(
        send_once(&alice, &message).await.unwrap(),
        Sent::AlreadySent
    );

    let count = |hs: Vec<vexa_email::Header>| {
        hs.iter()
            .filter(|h| h.message_id.as_deref() == Some(id.as_str()))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut in_inbox = 0;
    while in_inbox == 0 && Instant::now() < deadline {
        in_inbox = count(search(&bob, "INBOX", &id, 10).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A late duplicate would have had the same time to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(search(&bob, "INBOX", &id, 10).await.unwrap()), 1);
    assert_eq!(count(search(&alice, "Sent", &id, 10).await.unwrap()), 1);
}

#[tokio::test]
async fn idle_wakes_when_mail_arrives() {
    let Some(env) = env().await else { return };
    let bob = env.mailbox("bob");
    let since = current_cursor(&bob).await.unwrap();
    let waiter = {
        let bob = bob.clone();
        tokio::spawn(async move { idle(&bob, Some(since), Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    env.deliver("alice", "bob", "wake up", &env.unique_id("idle"))
        .await;
    let wake = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("idle did not wake within 20 s")
        .unwrap()
        .unwrap();
    assert_eq!(wake, Wake::Changed);
    eprintln!("idle woke {:?} after delivery", t0.elapsed());
    // With a cursor that is already behind, it returns at once; with nothing new, it times out.
    assert_eq!(
        idle(&bob, Some(since), Duration::from_secs(60))
            .await
            .unwrap(),
        Wake::Changed
    );
    let now = current_cursor(&bob).await.unwrap();
    assert_eq!(
        idle(&bob, Some(now), Duration::from_secs(1)).await.unwrap(),
        Wake::Timeout
    );
}

#[tokio::test]
async fn read_returns_the_text_and_a_wrong_password_is_refused() {
    let Some(env) = env().await else { return };
    let bob = env.mailbox("bob");
    let start = current_cursor(&bob).await.unwrap();
    let id = env.unique_id("read");
    env.deliver("alice", "bob", "read me", &id).await;
    let f = fetch_until_new(&bob, start, &id).await;
    let h = f
        .headers
        .iter()
        .find(|h| h.message_id.as_deref() == Some(id.as_str()))
        .unwrap();
    let mail = read(&bob, "INBOX", h.uid, 1000).await.unwrap();
    assert_eq!(mail.text.trim(), "body of read me");
    assert_eq!(mail.header.message_id.as_deref(), Some(id.as_str()));
    let short = read(&bob, "INBOX", h.uid, 4).await.unwrap();
    assert_eq!(short.text, "body");
    assert!(short.truncated);
    assert!(matches!(
        read(&bob, "INBOX", u32::MAX - 7, 10).await,
        Err(Error::NotFound(_))
    ));

    let dir = std::env::temp_dir().join(format!("vexa-email-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bob"), "not-the-password\n").unwrap();
    let mut wrong = bob.clone();
    wrong.password_file = dir.join("bob");
    let err = fetch_new(&wrong, None, 1).await.unwrap_err();
    assert!(matches!(err, Error::Login { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_malformed_message_and_a_huge_header_do_not_stop_the_cursor() {
    let Some(env) = env().await else { return };
    let triage = env.mailbox("triage");
    let start = current_cursor(&triage).await.unwrap();
    // No From, Date or Message-ID, an unterminated encoded word, an address list of junk and a
    // header of ~200 KiB: the server stores it, fetch_new must read past it. (A header line
    // without a colon is refused by OpenSMTPD itself: "not RFC 2822 compliant".)
    let mut raw = b"Subject: =?utf-8?q?unterminated\r\nTo: ,,,<<@@>>\r\n".to_vec();
    for i in 0..2000 {
        raw.extend_from_slice(format!("X-Junk-{i}: {}\r\n", "y".repeat(90)).as_bytes());
    }
    raw.extend_from_slice(b"\r\nbody\r\n");
    let envelope = lettre::address::Envelope::new(
        Some(env.addr("outside").parse().unwrap()),
        vec![env.addr("triage").parse().unwrap()],
    )
    .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&env.smtp.host)
        .port(env.smtp.port)
        .build()
        .send_raw(&envelope, &raw)
        .await
        .unwrap();
    // Other tests deliver to triage at the same time: this one is the huge one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (f, h) = loop {
        let f = fetch_new(&triage, Some(start), 50).await.unwrap();
        if let Some(h) = f
            .headers
            .iter()
            .find(|h| h.size as usize >= raw.len())
            .cloned()
        {
            break (f, h);
        }
        assert!(
            Instant::now() < deadline,
            "the malformed message was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(h.message_id, None, "{h:?}");
    assert!(
        h.subject
            .as_deref()
            .is_none_or(|s| !s.contains(['\r', '\n'])),
        "{h:?}"
    );
    assert!(f.cursor.uid >= h.uid);
    let again = fetch_new(&triage, Some(f.cursor), 50).await.unwrap();
    assert!(again.headers.iter().all(|x| x.uid > h.uid));
}
