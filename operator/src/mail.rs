//! The mailboxes the operator's trusted code reaches (the email integration): which mailbox an
//! `email.received` trigger watches, and from which mailbox an approved `send` Card of a
//! subject is sent. Read from `--mail-config` (YAML or JSON), never from a tenant's object: a
//! mailbox's password stays in the file its entry names, read at each connection.
//!
//! ```yaml
//! mailboxes:
//!   - id: triage                 # what Schedule.spec.events[].mailbox names
//!     owner: alice               # the subject whose Schedules may watch it and whose send
//!     address: triage@vexa.test  #   Cards it sends (From:)
//!     imap: {host: 127.0.0.1, port: 1143}
//!     smtp: {host: 127.0.0.1, port: 2525}
//!     username: triage
//!     passwordFile: /etc/vexa/mail/triage
//! ```

use std::path::Path;

use serde::Deserialize;
use vexa_email::Mailbox;

/// One mailbox and whose it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxEntry {
    /// The subject it belongs to: only their Schedules watch it, only their Cards send from it.
    pub owner: String,
    /// Its address (the `From:` of what it sends).
    pub address: String,
    /// Servers, login and folders.
    #[serde(flatten)]
    pub mailbox: Mailbox,
}

/// Every mailbox the operator knows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MailConfig {
    /// The mailboxes.
    #[serde(default)]
    pub mailboxes: Vec<MailboxEntry>,
}

impl MailConfig {
    /// Reads `path`; a missing file is an error (the flag was given), an empty one no mailboxes.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--mail-config {}: {e}", path.display()))?;
        let config: Self = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--mail-config {}: {e}", path.display()))?;
        let mut ids = std::collections::BTreeSet::new();
        for m in &config.mailboxes {
            anyhow::ensure!(
                ids.insert(m.mailbox.id.clone()),
                "--mail-config {}: mailbox id {:?} appears twice",
                path.display(),
                m.mailbox.id
            );
        }
        Ok(config)
    }

    /// The mailbox `id` if it belongs to `subject`.
    pub fn watched_by(&self, id: &str, subject: &str) -> Option<&MailboxEntry> {
        self.mailboxes
            .iter()
            .find(|m| m.mailbox.id == id && m.owner == subject)
    }

    /// The mailbox `subject` sends from (their first).
    pub fn of_subject(&self, subject: &str) -> Option<&MailboxEntry> {
        self.mailboxes.iter().find(|m| m.owner == subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_is_reached_only_through_its_owner() {
        let dir = std::env::temp_dir().join(format!("vexa-mail-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("mail.yaml");
        std::fs::write(
            &file,
            "mailboxes:\n  - id: triage\n    owner: alice\n    address: triage@vexa.test\n    imap: {host: 127.0.0.1, port: 1143}\n    smtp: {host: 127.0.0.1, port: 2525}\n    username: triage\n    passwordFile: /nonexistent\n",
        )
        .unwrap_or_default();
        let c = MailConfig::load(&file).unwrap_or_default();
        assert!(c.watched_by("triage", "alice").is_some());
        assert!(
            c.watched_by("triage", "bob").is_none(),
            "bob's Schedule cannot watch alice's mail"
        );
        assert_eq!(
            c.of_subject("alice").map(|m| m.address.as_str()),
            Some("triage@vexa.test")
        );
        assert!(c.of_subject("bob").is_none());
        std::fs::write(&file, "mailboxes:\n  - id: a\n    owner: x\n    address: a@b\n    imap: {host: h, port: 1}\n    smtp: {host: h, port: 2}\n    username: u\n    passwordFile: p\n  - id: a\n    owner: y\n    address: a@b\n    imap: {host: h, port: 1}\n    smtp: {host: h, port: 2}\n    username: u\n    passwordFile: p\n").unwrap_or_default();
        assert!(
            MailConfig::load(&file).is_err(),
            "a duplicate id is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
