//! The tool's configuration file: the mailboxes it brokers and whose each one is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use vexa_email::Mailbox;

/// One brokered mailbox.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its servers, login and password file.
    #[serde(flatten)]
    pub mailbox: Mailbox,
    /// Its own address: the `From` of its drafts and sends.
    pub address: String,
}

/// `--config`: JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The mailboxes.
    pub mailboxes: Vec<Entry>,
    /// A verified token's `sub` → the id of the one mailbox it may use. A subject not listed
    /// has no mailbox: every call is refused.
    pub subjects: BTreeMap<String, String>,
}

impl Config {
    /// Reads and checks the file: every subject names a configured mailbox.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: Config = serde_json::from_slice(&std::fs::read(path)?)?;
        for (sub, id) in &config.subjects {
            anyhow::ensure!(
                config.mailboxes.iter().any(|e| e.mailbox.id == *id),
                "subject {sub} maps to mailbox {id}, which is not configured"
            );
        }
        Ok(config)
    }

    /// The mailbox of a token's subject, and only that one.
    pub fn mailbox_of(&self, subject: Option<&str>) -> Option<&Entry> {
        let id = self.subjects.get(subject?)?;
        self.mailboxes.iter().find(|e| e.mailbox.id == *id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_subject_gets_only_its_own_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let mb = |id: &str| {
            serde_json::json!({"id": id, "imap": {"host": "127.0.0.1", "port": 1143},
                "smtp": {"host": "127.0.0.1", "port": 2525}, "username": id,
                "passwordFile": format!("/p/{id}"), "address": format!("{id}@vexa.test")})
        };
        std::fs::write(
            &path,
            serde_json::json!({"mailboxes": [mb("alice"), mb("bob")],
                "subjects": {"sub-alice": "alice", "sub-bob": "bob"}})
            .to_string(),
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.mailbox_of(Some("sub-alice")).unwrap().mailbox.id, "alice");
        assert_eq!(c.mailbox_of(Some("sub-bob")).unwrap().mailbox.id, "bob");
        assert!(c.mailbox_of(Some("alice")).is_none());
        assert!(c.mailbox_of(Some("sub-carol")).is_none());
        assert!(c.mailbox_of(None).is_none());
        assert_eq!(c.mailboxes[0].mailbox.sent_folder, "Sent");

        std::fs::write(
            &path,
            serde_json::json!({"mailboxes": [mb("alice")], "subjects": {"s": "bob"}}).to_string(),
        )
        .unwrap();
        assert!(Config::load(&path).is_err());
    }
}
