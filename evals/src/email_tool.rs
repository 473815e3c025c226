//! `vexa-email-tool` (tools/email) for the evals that go through the gateway: started on the
//! node's address with a config naming the mailboxes it brokers and which token subject each
//! belongs to, verifying its callers' tokens against the realm's JWKS for the audience
//! [`AUDIENCE`] (the realm's `vexa-email` client scope, hack/keycloak/scope-vexa-email.json).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::built_binary;
use crate::fixtures::{free_port, node_ip};
use crate::mail::MailServer;

/// The audience (and Keycloak client scope) of the email tool's tokens.
pub const AUDIENCE: &str = "vexa-email";

/// The running tool; killed when dropped.
pub struct EmailTool {
    child: Child,
    base: String,
    log: PathBuf,
}

/// `vexa-email-tool` as built (`VEXA_EMAIL_TOOL`, else this checkout's build directory):
/// `cargo build -p vexa-email-tool` first (hack/test does).
pub fn binary() -> PathBuf {
    built_binary("vexa-email-tool", "VEXA_EMAIL_TOOL")
}

impl std::fmt::Debug for EmailTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailTool")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl EmailTool {
    /// Starts the tool brokering `mailboxes` (`(mailbox user, token sub)`) of `mail`, and waits
    /// until it listens.
    pub async fn start(mail: &MailServer, jwks_url: &str, mailboxes: &[(&str, &str)]) -> Self {
        let addr = format!("{}:{}", node_ip(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "vexa-evals-email-tool-{}-{}",
            std::process::id(),
            addr.rsplit(':').next().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut subjects = Map::new();
        let entries: Vec<Value> = mailboxes
            .iter()
            .map(|(user, sub)| {
                subjects.insert((*sub).to_owned(), json!(user));
                let mut entry = mail.entry(user);
                entry["address"] = json!(mail.address(user));
                entry
            })
            .collect();
        let config = dir.join("email-tool.json");
        std::fs::write(
            &config,
            json!({"mailboxes": entries, "subjects": subjects}).to_string(),
        )
        .unwrap();
        let log = dir.join("email-tool.log");
        let child = Command::new(binary())
            .args([
                "--listen",
                &addr,
                "--audience",
                AUDIENCE,
                "--jwks-url",
                jwks_url,
            ])
            .arg("--config")
            .arg(&config)
            .env("VEXA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let mut tool = Self {
            child,
            base: format!("http://{addr}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = tool.child.try_wait().unwrap() {
                panic!("the email tool exited ({status}):\n{}", tool.log_text());
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return tool;
            }
            assert!(
                Instant::now() < deadline,
                "the email tool did not listen at {addr} within 15 s:\n{}",
                tool.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The MCP endpoint, what a Tool's `server.url` names.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// The tool's log (stderr), for a failing eval's message.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EmailTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
