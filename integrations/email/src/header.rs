//! The headers of one message, parsed defensively: bounded input, bounded fields, no control
//! characters in what comes out (a decoded subject may carry CR/LF).

use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

/// At most this much of a message's header is read; the rest is ignored.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Each text field is cut to this many characters.
pub const MAX_FIELD_CHARS: usize = 998;
/// At most this many `To` addresses are kept.
const MAX_RECIPIENTS: usize = 50;

/// What a new-mail event carries: headers only, never the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// The message's IMAP UID in its folder (with the folder's UIDVALIDITY, its identity).
    pub uid: u32,
    /// `Message-ID`, without the angle brackets.
    pub message_id: Option<String>,
    /// The first `From` address (lowercase is not forced: compare with [`crate::Filter`]).
    pub from: Option<String>,
    /// The `To` addresses.
    pub to: Vec<String>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `Date`, as RFC 3339.
    pub date: Option<String>,
    /// The message's size in bytes (RFC822.SIZE).
    pub size: u32,
}

/// Parses a raw header block (what IMAP returns for `BODY.PEEK[HEADER]`). Never fails: a
/// malformed header gives empty fields.
pub fn parse_header(uid: u32, size: u32, raw: &[u8]) -> Header {
    let raw = bounded(raw);
    let parsed = MessageParser::default().parse_headers(raw);
    let Some(m) = parsed else {
        return Header {
            uid,
            message_id: None,
            from: None,
            to: Vec::new(),
            subject: None,
            date: None,
            size,
        };
    };
    Header {
        uid,
        message_id: m.message_id().map(clean).filter(|s| !s.is_empty()),
        from: m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(clean)
            .filter(|s| !s.is_empty()),
        to: m
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address())
                    .map(clean)
                    .filter(|s| !s.is_empty())
                    .take(MAX_RECIPIENTS)
                    .collect()
            })
            .unwrap_or_default(),
        subject: m.subject().map(clean),
        date: m.date().map(|d| d.to_rfc3339()),
        size,
    }
}

/// The header block cut to [`MAX_HEADER_BYTES`], at a line end when there is one.
fn bounded(raw: &[u8]) -> &[u8] {
    if raw.len() <= MAX_HEADER_BYTES {
        return raw;
    }
    let cut = &raw[..MAX_HEADER_BYTES];
    match cut.iter().rposition(|&b| b == b'\n') {
        Some(i) => &cut[..=i],
        None => cut,
    }
}

/// Control characters become spaces, surrounding space goes, and the text is cut to
/// [`MAX_FIELD_CHARS`].
pub(crate) fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_FIELD_CHARS)
        .collect();
    s.trim().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_plain_header_gives_every_field() {
        let raw = b"Message-ID: <a1@vexa.test>\r\nFrom: Alice <Alice@Vexa.test>\r\nTo: bob@vexa.test, triage@vexa.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nDate: Sun, 6 Dec 2026 01:45:56 +0000\r\n\r\n";
        let h = parse_header(7, 1234, raw);
        assert_eq!(h.uid, 7);
        assert_eq!(h.size, 1234);
        assert_eq!(h.message_id.as_deref(), Some("a1@vexa.test"));
        assert_eq!(h.from.as_deref(), Some("Alice@Vexa.test"));
        assert_eq!(h.to, vec!["bob@vexa.test", "triage@vexa.test"]);
        assert_eq!(h.subject.as_deref(), Some("café"));
        assert_eq!(h.date.as_deref(), Some("2026-12-06T01:45:56Z"));
    }

    #[test]
    fn a_malformed_header_gives_empty_fields_not_an_error() {
        for raw in [
            &b""[..],
            b"\x00\xff\xfe garbage without colon",
            b"From: <<<@@@>>>\r\nDate: yesterday\r\nTo: ,,,\r\n\r\n",
        ] {
            let h = parse_header(1, 0, raw);
            assert_eq!(h.uid, 1);
            assert!(h.date.is_none(), "{h:?}");
            assert!(h.message_id.is_none(), "{h:?}");
        }
    }

    #[test]
    fn an_encoded_crlf_in_the_subject_does_not_survive() {
        let raw = b"Subject: =?utf-8?q?hi=0D=0ABcc:_evil@example.com?=\r\n\r\n";
        let h = parse_header(1, 0, raw);
        let subject = h.subject.unwrap();
        assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    }

    #[test]
    fn a_huge_header_is_bounded() {
        let mut raw = b"From: a@vexa.test\r\nSubject: ".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 5 * MAX_HEADER_BYTES));
        raw.extend_from_slice(b"\r\n\r\n");
        let h = parse_header(1, 0, &raw);
        assert_eq!(h.from.as_deref(), Some("a@vexa.test"));
        assert!(h.subject.map_or(0, |s| s.chars().count()) <= MAX_FIELD_CHARS);
        let mut many = Vec::new();
        for i in 0..10_000 {
            many.extend_from_slice(format!("X-Junk-{i}: {}\r\n", "y".repeat(50)).as_bytes());
        }
        many.extend_from_slice(b"Subject: late\r\n\r\n");
        // The Subject sits beyond the bound: it is not read at all.
        assert_eq!(parse_header(1, 0, &many).subject, None);
    }
}
