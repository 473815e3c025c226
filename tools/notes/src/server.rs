//! The MCP server: `notes.append {text}` appends a line to the notes file and answers its line
//! number; `notes.send {to, text}` is the irreversible one (the gated-call test asserts it is never
//! called): it records the send in `sent.jsonl` and answers `sent`. Each call is recorded with
//! the token it carried ([`crate::calls`]).

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::tool::{Extension, ToolRouter};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::calls::{Call, Calls};
use crate::token::Caller;

/// The notes file in the data folder.
pub const NOTES_FILE: &str = "notes.md";
/// The record of sends in the data folder.
pub const SENT_FILE: &str = "sent.jsonl";

/// `notes.append`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
pub struct Append {
    /// The line to add.
    pub text: String,
}

/// `notes.send`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
pub struct SendArgs {
    /// The recipient.
    pub to: String,
    /// The message.
    pub text: String,
}

/// One MCP service instance (one per session or request).
#[derive(Clone, Debug)]
pub struct Notes {
    data_dir: PathBuf,
    calls: Calls,
    /// Appends are serialised, so line numbers are exact.
    write: Arc<Mutex<()>>,
    tool_router: ToolRouter<Self>,
}

impl Notes {
    /// A service writing into `data_dir` and recording into `calls`.
    pub fn new(data_dir: PathBuf, calls: Calls, write: Arc<Mutex<()>>) -> Self {
        Self {
            data_dir,
            calls,
            write,
            tool_router: Self::tool_router(),
        }
    }

    fn record(&self, tool: &str, arguments: serde_json::Value, parts: &http::request::Parts) {
        self.calls.record(Call {
            tool: tool.to_owned(),
            arguments,
            token: parts.extensions.get::<Caller>().cloned(),
        });
    }
}

fn io_error(e: std::io::Error) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

#[tool_router]
impl Notes {
    /// Appends a line to the notes file.
    #[tool(
        name = "notes.append",
        description = "Append a line of text to the notes file; answers its line number."
    )]
    async fn append(
        &self,
        Parameters(Append { text }): Parameters<Append>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        self.record("notes.append", serde_json::json!({"text": text}), &parts);
        let line = text.replace(['\n', '\r'], " ");
        let _held = self.write.lock().await;
        let path = self.data_dir.join(NOTES_FILE);
        let existing = match tokio::fs::read_to_string(&path).await {
            Ok(s) => s.lines().count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error(e)),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(io_error)?;
        file.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io_error)?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "appended line {}",
            existing + 1
        ))]))
    }

    /// Sends a message (irreversible): recorded, never really sent.
    #[tool(
        name = "notes.send",
        description = "Send a note to someone (irreversible)."
    )]
    async fn send(
        &self,
        Parameters(SendArgs { to, text }): Parameters<SendArgs>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let arguments = serde_json::json!({"to": to, "text": text});
        self.record("notes.send", arguments.clone(), &parts);
        let _held = self.write.lock().await;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join(SENT_FILE))
            .await
            .map_err(io_error)?;
        file.write_all(format!("{arguments}\n").as_bytes())
            .await
            .map_err(io_error)?;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "sent to {to}"
        ))]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Notes {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}
