//! IMAP: new-mail headers after a cursor, IDLE, search, read and drafts.

use std::collections::HashSet;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::config::{Endpoint, Mailbox};
use crate::error::Error;
use crate::header::{Header, MAX_HEADER_BYTES, clean, parse_header};

/// How many headers [`fetch_new`] returns per call unless told otherwise.
pub const DEFAULT_FETCH_LIMIT: usize = 50;
/// Every connect and command round is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// [`read`] fetches at most this much of a message.
const MAX_READ_BYTES: usize = 256 * 1024;
/// The longest [`search`] query.
const MAX_QUERY_LEN: usize = 200;

pub(crate) type Session = async_imap::Session<TcpStream>;

/// Where a mailbox was read up to: every message with a UID above `uid` in a folder whose
/// UIDVALIDITY is `uid_validity` is new. Kept durably by the caller (e.g. a Schedule's status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// The folder's UIDVALIDITY when `uid` was read.
    pub uid_validity: u32,
    /// The highest UID already returned (0: none).
    pub uid: u32,
}

/// What [`fetch_new`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Headers of new messages, by ascending UID (at most the limit).
    pub headers: Vec<Header>,
    /// The cursor to keep once these headers are handled.
    pub cursor: Cursor,
    /// The folder's UIDVALIDITY differed from the cursor's: UIDs were renumbered, so reading
    /// started again from the folder's first message (messages may be seen a second time).
    pub restarted: bool,
    /// More new messages wait beyond the limit: call again with the new cursor.
    pub more: bool,
}

/// Why [`idle`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The server reported a change (or new mail was already there).
    Changed,
    /// Nothing happened within the timeout.
    Timeout,
}

/// One message read in full (size-capped) by [`read`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    /// Its headers.
    pub header: Header,
    /// The first text part, cut to the caller's limit.
    pub text: String,
    /// Whether the text was cut.
    pub truncated: bool,
}

async fn timed<T, E: Into<Error>>(
    addr: &Endpoint,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(Error::Timeout(addr.to_string())),
    }
}

/// A logged-in session.
pub(crate) async fn connect(mailbox: &Mailbox) -> Result<Session, Error> {
    let addr = &mailbox.imap;
    let tcp = timed(addr, async {
        TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_string(),
                source,
            })
    })
    .await?;
    let mut client = async_imap::Client::new(tcp);
    // The server's greeting comes first.
    timed(addr, async {
        client
            .read_response()
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_string(),
                source,
            })
    })
    .await?;
    let password = mailbox.password().await?;
    timed(addr, async {
        client
            .login(&mailbox.username, &password)
            .await
            .map_err(|(e, _)| Error::Login {
                user: mailbox.username.clone(),
                detail: e.to_string(),
            })
    })
    .await
}

async fn logout(addr: &Endpoint, mut session: Session) {
    let _ = timed(addr, session.logout()).await;
}

/// The cursor at the folder's current end: what to start from to see only mail arriving from
/// now on (rather than the whole folder, which a `None` cursor means to [`fetch_new`]).
pub async fn current_cursor(mailbox: &Mailbox) -> Result<Cursor, Error> {
    let mut session = connect(mailbox).await?;
    let selected = timed(&mailbox.imap, session.examine(&mailbox.inbox)).await?;
    logout(&mailbox.imap, session).await;
    let uid_validity = selected
        .uid_validity
        .ok_or_else(|| Error::NoUidValidity(mailbox.inbox.clone()))?;
    Ok(Cursor {
        uid_validity,
        uid: selected.uid_next.unwrap_or(1).saturating_sub(1),
    })
}

/// The headers of at most `limit` messages of the mailbox's inbox with a UID above the
/// cursor's, oldest first, and the cursor after them. `None` reads from the folder's start; a
/// cursor of another UIDVALIDITY too (and `restarted` says so). Messages are not marked seen.
pub async fn fetch_new(
    mailbox: &Mailbox,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Fetched, Error> {
    let limit = limit.max(1);
    let mut session = connect(mailbox).await?;
    let result = fetch_in(&mut session, mailbox, cursor, limit).await;
    logout(&mailbox.imap, session).await;
    result
}

async fn fetch_in(
    session: &mut Session,
    mailbox: &Mailbox,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Fetched, Error> {
    let addr = &mailbox.imap;
    let selected = timed(addr, session.examine(&mailbox.inbox)).await?;
    let uid_validity = selected
        .uid_validity
        .ok_or_else(|| Error::NoUidValidity(mailbox.inbox.clone()))?;
    let (after, restarted) = match cursor {
        Some(c) if c.uid_validity == uid_validity => (c.uid, false),
        Some(_) => (0, true),
        None => (0, false),
    };
    let unchanged = Fetched {
        headers: Vec::new(),
        cursor: Cursor {
            uid_validity,
            uid: after,
        },
        restarted,
        more: false,
    };
    if selected
        .uid_next
        .is_some_and(|next| next <= after.saturating_add(1))
        || selected.exists == 0
    {
        return Ok(unchanged);
    }
    // `n:*` also matches the highest UID when it is below n: keep only UIDs above the cursor.
    let found = timed(
        addr,
        session.uid_search(format!("UID {}:*", after.saturating_add(1))),
    )
    .await?;
    let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > after).collect();
    uids.sort_unstable();
    let more = uids.len() > limit;
    uids.truncate(limit);
    let Some(&last) = uids.last() else {
        return Ok(unchanged);
    };
    let mut headers = fetch_headers(session, addr, &uids).await?;
    headers.sort_by_key(|h| h.uid);
    Ok(Fetched {
        headers,
        cursor: Cursor {
            uid_validity,
            uid: last,
        },
        restarted,
        more,
    })
}

async fn fetch_headers(
    session: &mut Session,
    addr: &Endpoint,
    uids: &[u32],
) -> Result<Vec<Header>, Error> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let set = uids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // The header only, and only its first MAX_HEADER_BYTES: a huge header costs nothing more.
    let query = format!("(UID RFC822.SIZE BODY.PEEK[HEADER]<0.{MAX_HEADER_BYTES}>)");
    let fetches: Vec<_> = timed(addr, async {
        session.uid_fetch(&set, &query).await?.try_collect().await
    })
    .await?;
    Ok(fetches
        .iter()
        .filter_map(|f| {
            let uid = f.uid?;
            Some(parse_header(
                uid,
                f.size.unwrap_or(0),
                f.header().unwrap_or_default(),
            ))
        })
        .collect())
}

/// Resolves when the inbox changes (IMAP IDLE) or after `timeout`. With `since`, mail that
/// arrived after that cursor (before IDLE began) wakes it at once, so a caller looping
/// `fetch_new` → `idle(since = its cursor)` never sleeps through a message.
pub async fn idle(
    mailbox: &Mailbox,
    since: Option<Cursor>,
    timeout: Duration,
) -> Result<Wake, Error> {
    let addr = &mailbox.imap;
    let mut session = connect(mailbox).await?;
    let selected = timed(addr, session.examine(&mailbox.inbox)).await?;
    if let Some(c) = since {
        let moved = selected.uid_validity != Some(c.uid_validity)
            || selected
                .uid_next
                .is_some_and(|next| next > c.uid.saturating_add(1));
        if moved {
            logout(addr, session).await;
            return Ok(Wake::Changed);
        }
    }
    let mut handle = session.idle();
    timed(addr, handle.init()).await?;
    let (wait, _stop) = handle.wait_with_timeout(timeout);
    // A server that never answers within the timeout plus a margin is treated as a timeout.
    let response = tokio::time::timeout(timeout + IO_TIMEOUT, wait).await;
    let wake = match response {
        Ok(Ok(IdleResponse::NewData(_))) => Wake::Changed,
        Ok(Ok(IdleResponse::Timeout | IdleResponse::ManualInterrupt)) | Err(_) => Wake::Timeout,
        Ok(Err(e)) => return Err(e.into()),
    };
    // The connection is dropped rather than logged out of: DONE would wait on a dead server.
    if let Ok(Ok(session)) = tokio::time::timeout(IO_TIMEOUT, handle.done()).await {
        logout(addr, session).await;
    }
    Ok(wake)
}

/// Quotes a search term as an IMAP quoted string: printable ASCII only.
fn quoted(term: &str) -> Result<String, Error> {
    if term.len() > MAX_QUERY_LEN {
        return Err(Error::Invalid(format!(
            "a search term is longer than {MAX_QUERY_LEN} characters"
        )));
    }
    if !term.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(Error::Invalid(
            "a search term must be printable ASCII".to_owned(),
        ));
    }
    Ok(format!(
        "\"{}\"",
        term.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The headers of the newest (at most `limit`) messages of `folder` whose text (headers or
/// body) contains `query`; an empty query lists the newest messages.
pub async fn search(
    mailbox: &Mailbox,
    folder: &str,
    query: &str,
    limit: usize,
) -> Result<Vec<Header>, Error> {
    let criteria = if query.trim().is_empty() {
        "ALL".to_owned()
    } else {
        format!("TEXT {}", quoted(query)?)
    };
    let addr = &mailbox.imap;
    let mut session = connect(mailbox).await?;
    let result = async {
        timed(addr, session.examine(folder)).await?;
        let found = timed(addr, session.uid_search(&criteria)).await?;
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable_by_key(|&u| std::cmp::Reverse(u));
        uids.truncate(limit.max(1));
        let mut headers = fetch_headers(&mut session, addr, &uids).await?;
        headers.sort_by_key(|h| std::cmp::Reverse(h.uid));
        Ok(headers)
    }
    .await;
    logout(addr, session).await;
    result
}

/// One message of `folder` by UID: its headers and its first text part, cut to `max_chars`.
pub async fn read(
    mailbox: &Mailbox,
    folder: &str,
    uid: u32,
    max_chars: usize,
) -> Result<Mail, Error> {
    let addr = &mailbox.imap;
    let mut session = connect(mailbox).await?;
    let result = async {
        timed(addr, session.examine(folder)).await?;
        let query = format!("(UID RFC822.SIZE BODY.PEEK[]<0.{MAX_READ_BYTES}>)");
        let fetches: Vec<_> = timed(addr, async {
            session
                .uid_fetch(uid.to_string(), &query)
                .await?
                .try_collect()
                .await
        })
        .await?;
        let f = fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .ok_or(Error::NotFound(uid))?;
        let raw = f.body().unwrap_or_default();
        let header = parse_header(uid, f.size.unwrap_or(0), raw);
        let text = mail_parser::MessageParser::default()
            .parse(raw)
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default();
        let clipped: String = text
            .chars()
            .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
            .take(max_chars)
            .collect();
        let truncated =
            clipped.chars().count() < text.chars().count() || raw.len() >= MAX_READ_BYTES;
        Ok(Mail {
            header,
            text: clipped,
            truncated,
        })
    }
    .await;
    logout(addr, session).await;
    result
}

/// Files a message in `folder` with `flags` (e.g. `(\Seen)`).
pub(crate) async fn append(
    session: &mut Session,
    addr: &Endpoint,
    folder: &str,
    flags: &str,
    raw: &[u8],
) -> Result<(), Error> {
    timed(addr, session.append(folder, Some(flags), None, raw)).await
}

/// UIDs in `folder` of the messages whose Message-ID is exactly `message_id` (without
/// brackets; checked with [`crate::validate_message_id`] first).
pub(crate) async fn find_message_id(
    session: &mut Session,
    addr: &Endpoint,
    folder: &str,
    message_id: &str,
) -> Result<Vec<u32>, Error> {
    timed(addr, session.examine(folder)).await?;
    let found: HashSet<u32> = timed(
        addr,
        session.uid_search(format!(
            "HEADER Message-ID {}",
            quoted(&format!("<{message_id}>"))?
        )),
    )
    .await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    // SEARCH HEADER matches substrings: keep only an exact Message-ID.
    let headers = fetch_headers(session, addr, &uids).await?;
    Ok(headers
        .into_iter()
        .filter(|h| h.message_id.as_deref() == Some(message_id))
        .map(|h| h.uid)
        .collect())
}

/// Files a draft in the mailbox's Drafts folder; returns the draft's Message-ID (its id).
pub async fn draft(mailbox: &Mailbox, message: &crate::send::Message) -> Result<String, Error> {
    let raw = crate::send::render(message)?;
    let addr = &mailbox.imap;
    let mut session = connect(mailbox).await?;
    let result = append(
        &mut session,
        addr,
        &mailbox.drafts_folder,
        "(\\Draft \\Seen)",
        &raw,
    )
    .await;
    logout(addr, session).await;
    result.map(|()| clean(&message.message_id))
}
