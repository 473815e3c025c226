//! The email integration, without Kubernetes: what the operator's Schedule controller (new-mail
//! events), its Card applier (exactly-once sending) and the email MCP tool server share.
//!
//! - [`fetch_new`]: the headers (never bodies) of mail that arrived after a [`Cursor`], bounded
//!   per call; the cursor is what the caller keeps durably (a Schedule's status).
//! - [`idle`]: resolves when the mailbox changes (IMAP IDLE), or after a timeout.
//! - [`send_once`]: sends a [`Message`] whose Message-ID the caller fixed, unless the Sent folder
//!   already holds it; then files it in Sent.
//! - [`Filter`]: the Schedule's `from` / `subjectPattern` rules, pure.
//! - [`search`], [`read`], [`draft`]: what the tool server's `email.*` tools do.
//!
//! See README.md for the semantics (cursor, exactly-once) and how to call it.

mod config;
mod error;
mod filter;
mod header;
mod imap;
mod send;

pub use config::{Endpoint, Mailbox};
pub use error::Error;
pub use filter::{Filter, FilterError, MAX_PATTERN_LEN};
pub use header::{Header, MAX_FIELD_CHARS, MAX_HEADER_BYTES, parse_header};
pub use imap::{
    Cursor, DEFAULT_FETCH_LIMIT, Fetched, Mail, Wake, current_cursor, draft, fetch_new, idle, read,
    search,
};
pub use send::{Message, Sent, send_once, validate_message_id};
