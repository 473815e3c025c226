//! Errors of the email integration, each with a short bounded `reason`.

use std::path::PathBuf;

/// What went wrong talking to a mailbox. Messages never carry the password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot reach the mail server at {addr}: {source}")]
    Connect {
        /// host:port
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("the mail server at {0} did not answer in time")]
    Timeout(String),
    /// The password file could not be read.
    #[error("cannot read the mailbox password file {path}: {source}")]
    PasswordFile {
        /// Its path.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The IMAP server refused the login.
    #[error("the IMAP server refused the login of {user}: {detail}")]
    Login {
        /// The login.
        user: String,
        /// The server's answer.
        detail: String,
    },
    /// An IMAP command failed.
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    /// The server selected a folder without reporting its UIDVALIDITY.
    #[error("the IMAP server reported no UIDVALIDITY for folder {0}")]
    NoUidValidity(String),
    /// A message or argument was refused before anything was sent.
    #[error("refused: {0}")]
    Invalid(String),
    /// The SMTP server refused or failed.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// No message with that UID.
    #[error("no message with UID {0}")]
    NotFound(u32),
}

impl Error {
    /// A short, bounded reason for events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "Unreachable",
            Error::Timeout(_) => "Timeout",
            Error::PasswordFile { .. } => "PasswordFile",
            Error::Login { .. } => "LoginRefused",
            Error::Imap(_) => "Imap",
            Error::NoUidValidity(_) => "NoUidValidity",
            Error::Invalid(_) => "Invalid",
            Error::Smtp(_) => "Smtp",
            Error::NotFound(_) => "NotFound",
        }
    }

    /// Whether retrying later may succeed (the caller backs off) rather than never.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Timeout(_) | Error::Imap(_) | Error::Smtp(_)
        )
    }
}
