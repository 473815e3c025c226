//! A mailbox: where its IMAP and SMTP servers are, whose it is, and where its password lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A server address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One mailbox the integration reads and sends from. The password is never held here: only
/// the path of the file that holds it (read at each connection, so a rotated file is picked
/// up), so a `Mailbox` can be logged and serialised safely.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mailbox {
    /// The mailbox's id (what a Schedule's `events[].mailbox` names).
    pub id: String,
    /// The IMAP server (plaintext: it runs on this machine).
    pub imap: Endpoint,
    /// The SMTP server mail is submitted to.
    pub smtp: Endpoint,
    /// The IMAP login.
    pub username: String,
    /// The file holding the IMAP password (trailing newline ignored).
    pub password_file: PathBuf,
    /// The folder new mail is watched in.
    #[serde(default = "default_inbox")]
    pub inbox: String,
    /// The folder sent mail is filed in, and searched before any send.
    #[serde(default = "default_sent")]
    pub sent_folder: String,
    /// The folder drafts go to.
    #[serde(default = "default_drafts")]
    pub drafts_folder: String,
}

fn default_inbox() -> String {
    "INBOX".to_owned()
}
fn default_sent() -> String {
    "Sent".to_owned()
}
fn default_drafts() -> String {
    "Drafts".to_owned()
}

impl Mailbox {
    /// A mailbox with the default folder names (`INBOX`, `Sent`, `Drafts`).
    pub fn new(
        id: impl Into<String>,
        imap: Endpoint,
        smtp: Endpoint,
        username: impl Into<String>,
        password_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            id: id.into(),
            imap,
            smtp,
            username: username.into(),
            password_file: password_file.into(),
            inbox: default_inbox(),
            sent_folder: default_sent(),
            drafts_folder: default_drafts(),
        }
    }

    /// The password, read from its file now.
    pub(crate) async fn password(&self) -> Result<String, Error> {
        let raw = tokio::fs::read_to_string(&self.password_file)
            .await
            .map_err(|source| Error::PasswordFile {
                path: self.password_file.clone(),
                source,
            })?;
        Ok(raw.trim_end_matches(['\r', '\n']).to_owned())
    }
}
