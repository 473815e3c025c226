//! Sending exactly once: the caller fixes the Message-ID; the Sent folder is the record of what
//! was sent.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::config::Mailbox;
use crate::error::Error;
use crate::imap::{append, connect, find_message_id};

/// The longest Message-ID accepted (without brackets).
const MAX_MESSAGE_ID: usize = 250;
/// The longest subject accepted.
const MAX_SUBJECT: usize = 998;
/// The largest body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// The most recipients accepted.
const MAX_RECIPIENTS: usize = 50;
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-text message to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The sender's address (the mailbox's own).
    pub from: String,
    /// The recipients' addresses.
    pub to: Vec<String>,
    /// One line, no control characters.
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// The Message-ID without angle brackets, fixed by the caller and derived from what the
    /// message is for (e.g. `card-<card uid>@<mail domain>`): the same message always gets the
    /// same id, which is how a retry recognises it in Sent.
    pub message_id: String,
}

/// What [`send_once`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sent {
    /// The message was sent now, and filed in Sent.
    Sent,
    /// Sent already held a message with this Message-ID: nothing was sent.
    AlreadySent,
}

/// Checks a Message-ID (without brackets): `local@domain` of the characters RFC 5322 allows in
/// a dot-atom, at most 250 long. Anything that could break out of a header or an IMAP quoted
/// string is refused.
pub fn validate_message_id(id: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    let ok = id.len() <= MAX_MESSAGE_ID
        && id.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && !d.is_empty() && l.chars().all(allowed) && d.chars().all(allowed)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "Message-ID must be local@domain of letters, digits and !#$%&'*+-/=?^_`{{|}}~. (at most {MAX_MESSAGE_ID}), not {:?}",
            id.chars().take(80).collect::<String>()
        )))
    }
}

fn address(a: &str, what: &str) -> Result<lettre::message::Mailbox, Error> {
    if a.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!("{what} holds a control character")));
    }
    let addr: lettre::Address = a
        .parse()
        .map_err(|e| Error::Invalid(format!("{what} is not an address ({e})")))?;
    Ok(lettre::message::Mailbox::new(None, addr))
}

/// The message as RFC 5322 bytes, after every check: addresses parse, the subject is one line,
/// sizes are bounded. The same bytes are sent and filed in Sent.
pub(crate) fn render(m: &Message) -> Result<Vec<u8>, Error> {
    validate_message_id(&m.message_id)?;
    if m.subject.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(
            "the subject holds a control character (CR/LF would inject headers)".to_owned(),
        ));
    }
    if m.subject.chars().count() > MAX_SUBJECT {
        return Err(Error::Invalid(format!(
            "the subject is longer than {MAX_SUBJECT} characters"
        )));
    }
    if m.body.len() > MAX_BODY {
        return Err(Error::Invalid(format!(
            "the body is larger than {MAX_BODY} bytes"
        )));
    }
    if m.to.is_empty() || m.to.len() > MAX_RECIPIENTS {
        return Err(Error::Invalid(format!(
            "between 1 and {MAX_RECIPIENTS} recipients, not {}",
            m.to.len()
        )));
    }
    let mut builder = lettre::Message::builder()
        .from(address(&m.from, "from")?)
        .subject(m.subject.clone())
        .message_id(Some(format!("<{}>", m.message_id)));
    for to in &m.to {
        builder = builder.to(address(to, "to")?);
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(m.body.clone())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(message.formatted())
}

/// Sends `message` from `mailbox` unless its Sent folder already holds a message with the same
/// Message-ID; after sending, files the exact bytes sent in Sent (flagged `\Seen`).
///
/// A retry after a crash therefore never sends twice, except in one window: a crash after the
/// SMTP server accepted the message and before the APPEND to Sent finished (milliseconds on
/// this server) sends it again on retry. Two concurrent calls for one Message-ID are the
/// caller's to prevent (one applier per Card).
pub async fn send_once(mailbox: &Mailbox, message: &Message) -> Result<Sent, Error> {
    let raw = render(message)?;
    let imap = &mailbox.imap;
    let mut session = connect(mailbox).await?;
    let result = async {
        let existing =
            find_message_id(&mut session, imap, &mailbox.sent_folder, &message.message_id).await?;
        if !existing.is_empty() {
            tracing::info!(mailbox = %mailbox.id, message_id = %message.message_id, "already in Sent: not sending again");
            return Ok(Sent::AlreadySent);
        }
        submit(mailbox, message, &raw).await?;
        append(&mut session, imap, &mailbox.sent_folder, "(\\Seen)", &raw).await?;
        tracing::info!(mailbox = %mailbox.id, message_id = %message.message_id, "sent and filed in Sent");
        Ok(Sent::Sent)
    }
    .await;
    let _ = tokio::time::timeout(SMTP_TIMEOUT, session.logout()).await;
    result
}

async fn submit(mailbox: &Mailbox, message: &Message, raw: &[u8]) -> Result<(), Error> {
    let from = address(&message.from, "from")?;
    let to = message
        .to
        .iter()
        .map(|t| address(t, "to").map(|m| m.email))
        .collect::<Result<Vec<_>, _>>()?;
    let envelope = lettre::address::Envelope::new(Some(from.email), to)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mailbox.smtp.host)
        .port(mailbox.smtp.port)
        .timeout(Some(SMTP_TIMEOUT))
        .hello_name(ClientId::Domain("localhost".to_owned()))
        .build();
    transport
        .send_raw(&envelope, raw)
        .await
        .map(|_| ())
        .map_err(|e| Error::Smtp(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rstest::rstest;

    use super::*;

    fn message() -> Message {
        Message {
            from: "triage@vexa.test".to_owned(),
            to: vec!["bob@vexa.test".to_owned()],
            subject: "Re: your question".to_owned(),
            body: "Hello Bob.\nLine two.".to_owned(),
            message_id: "card-abc123@vexa.test".to_owned(),
        }
    }

    #[test]
    fn a_good_message_renders_with_its_fixed_message_id() {
        let raw = String::from_utf8(render(&message()).unwrap()).unwrap();
        assert!(
            raw.contains("Message-ID: <card-abc123@vexa.test>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Subject: Re: your question\r\n"), "{raw}");
        assert!(raw.contains("To: bob@vexa.test\r\n"), "{raw}");
        assert!(!raw.contains("Bcc"), "{raw}");
    }

    #[rstest]
    #[case::subject_crlf(|m: &mut Message| m.subject = "hi\r\nBcc: evil@example.com".into())]
    #[case::subject_lf(|m: &mut Message| m.subject = "hi\nBcc: evil@example.com".into())]
    #[case::subject_nul(|m: &mut Message| m.subject = "hi\0".into())]
    #[case::to_crlf(|m: &mut Message| m.to = vec!["bob@vexa.test\r\nBcc: evil@example.com".into()])]
    #[case::to_not_an_address(|m: &mut Message| m.to = vec!["bob".into()])]
    #[case::from_crlf(|m: &mut Message| m.from = "a@vexa.test\nX: y".into())]
    #[case::no_recipient(|m: &mut Message| m.to = vec![])]
    #[case::id_crlf(|m: &mut Message| m.message_id = "a@b\r\nX: y".into())]
    #[case::id_quote(|m: &mut Message| m.message_id = "a\"@b".into())]
    #[case::id_brackets(|m: &mut Message| m.message_id = "<a@b>".into())]
    #[case::id_no_at(|m: &mut Message| m.message_id = "abc".into())]
    #[case::id_long(|m: &mut Message| m.message_id = format!("{}@b", "a".repeat(300)))]
    #[case::subject_long(|m: &mut Message| m.subject = "s".repeat(2000))]
    #[case::body_huge(|m: &mut Message| m.body = "b".repeat(MAX_BODY + 1))]
    fn hostile_messages_are_refused(#[case] spoil: fn(&mut Message)) {
        let mut m = message();
        spoil(&mut m);
        assert!(matches!(render(&m), Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn send_once_refuses_before_any_connection() {
        // Nothing listens on port 9 of loopback: a refused message never gets that far.
        let mb = Mailbox::new(
            "t",
            crate::Endpoint {
                host: "127.0.0.1".into(),
                port: 9,
            },
            crate::Endpoint {
                host: "127.0.0.1".into(),
                port: 9,
            },
            "t",
            "/nonexistent",
        );
        let mut m = message();
        m.subject = "x\r\nBcc: evil@example.com".into();
        assert!(matches!(send_once(&mb, &m).await, Err(Error::Invalid(_))));
    }
}
