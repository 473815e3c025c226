//! The IMAP/SMTP server of `hack/mail` (dovecot and opensmtpd on loopback, `VEXA_MAIL_*` from
//! `hack/cluster env`): its test users' mailboxes, config entries naming them, delivery and
//! counting, for the evals of the email integration.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vexa_email::{Endpoint, Mailbox, Message};

use crate::cluster_env;

/// Where the server is and where its users' passwords are.
#[derive(Debug, Clone)]
pub struct MailServer {
    pub imap: Endpoint,
    pub smtp: Endpoint,
    pub passwords: PathBuf,
    pub domain: String,
}

impl MailServer {
    /// From `hack/cluster env`.
    pub fn from_env() -> Self {
        let endpoint = |host: &str, port: &str| Endpoint {
            host: cluster_env(host),
            port: cluster_env(port).parse().unwrap(),
        };
        Self {
            imap: endpoint("VEXA_MAIL_IMAP_HOST", "VEXA_MAIL_IMAP_PORT"),
            smtp: endpoint("VEXA_MAIL_SMTP_HOST", "VEXA_MAIL_SMTP_PORT"),
            passwords: cluster_env("VEXA_MAIL_PASSWORD_DIR").into(),
            domain: cluster_env("VEXA_MAIL_DOMAIN"),
        }
    }

    /// The test user `user`'s mailbox (its id is the user's name).
    pub fn mailbox(&self, user: &str) -> Mailbox {
        Mailbox::new(
            user,
            self.imap.clone(),
            self.smtp.clone(),
            user,
            self.passwords.join(user),
        )
    }

    /// `user@<domain>`.
    pub fn address(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// `user`'s mailbox as a config entry (the fields of `vexa_email::Mailbox`).
    pub fn entry(&self, user: &str) -> Value {
        json!({
            "id": user,
            "imap": {"host": self.imap.host, "port": self.imap.port},
            "smtp": {"host": self.smtp.host, "port": self.smtp.port},
            "username": user,
            "passwordFile": self.passwords.join(user),
        })
    }

    /// An operator `--mail-config` in `dir` naming each `(mailbox user, owner subject)`.
    pub fn operator_config(&self, dir: &Path, mailboxes: &[(&str, &str)]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let entries: Vec<Value> = mailboxes
            .iter()
            .map(|(user, owner)| {
                let mut e = self.entry(user);
                e["owner"] = json!(owner);
                e["address"] = json!(self.address(user));
                e
            })
            .collect();
        let file = dir.join("mail.json");
        // JSON is YAML.
        std::fs::write(&file, json!({ "mailboxes": entries }).to_string()).unwrap();
        file
    }

    /// Mail from `from` to `to` with the subject `subject` followed by a unique number;
    /// returns the subject as sent.
    pub async fn deliver(&self, from: &str, to: &str, subject: &str, body: &str) -> String {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let subject = format!("{subject} {n:x}");
        vexa_email::send_once(
            &self.mailbox(from),
            &Message {
                from: self.address(from),
                to: vec![self.address(to)],
                subject: subject.clone(),
                body: body.into(),
                message_id: format!("eval-{n:x}@{}", self.domain),
            },
        )
        .await
        .unwrap();
        subject
    }

    /// How many messages in `user`'s `folder` have exactly the subject `subject`.
    pub async fn count(&self, user: &str, folder: &str, subject: &str) -> usize {
        vexa_email::search(&self.mailbox(user), folder, subject, 50)
            .await
            .unwrap()
            .iter()
            .filter(|h| h.subject.as_deref() == Some(subject))
            .count()
    }
}
