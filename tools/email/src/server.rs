//! The MCP server. `email.search`, `email.read` and `email.draft` act on the mailbox of the
//! verified token's subject, never another; `email.send` sends from it exactly once
//! ([`vexa_email::send_once`]) and is meant to be reached only by the trusted code that applies
//! an approved Card (the gateway gates the agent's call into a Card). No answer ever carries
//! the mailbox's password: it is read from its file inside `vexa-email` at each connection.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rmcp::handler::server::tool::{Extension, ToolRouter};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

use crate::config::{Config, Entry};
use crate::token::Caller;

/// `email.read` answers at most this many characters of text.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// `email.search` answers at most this many messages.
const MAX_RESULTS: usize = 50;

/// `email.search`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
pub struct SearchArgs {
    /// Text to look for in headers and bodies (printable ASCII); empty lists the newest.
    #[serde(default)]
    pub query: String,
    /// At most this many (default 20, at most 50).
    pub limit: Option<usize>,
}

/// `email.read`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
pub struct ReadArgs {
    /// The message's UID in the inbox (from `email.search`).
    pub uid: u32,
}

/// `email.draft`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
pub struct DraftArgs {
    /// Recipients.
    pub to: Vec<String>,
    /// One line.
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// `email.send`'s arguments.
#[derive(Deserialize, schemars::JsonSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SendArgs {
    /// Recipients.
    pub to: Vec<String>,
    /// One line.
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// Fixed by the Card applier from the Card (`local@domain`, no brackets): a second call
    /// with the same id sends nothing.
    pub message_id: String,
}

/// One MCP service instance.
#[derive(Clone, Debug)]
pub struct Email {
    config: Arc<Config>,
    tool_router: ToolRouter<Self>,
}

impl Email {
    /// A service brokering the mailboxes of `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller's own mailbox, or a refusal.
    fn mailbox(&self, parts: &http::request::Parts) -> Result<&Entry, ErrorData> {
        let sub = parts
            .extensions
            .get::<Caller>()
            .and_then(|c| c.sub.as_deref());
        self.config.mailbox_of(sub).ok_or_else(|| {
            ErrorData::invalid_request("this caller has no mailbox".to_owned(), None)
        })
    }
}

fn failed(e: vexa_email::Error) -> ErrorData {
    tracing::warn!(reason = e.reason(), error = %e, "email call failed");
    match e {
        vexa_email::Error::Invalid(_) | vexa_email::Error::NotFound(_) => {
            ErrorData::invalid_params(e.to_string(), None)
        }
        _ => {
            ErrorData::internal_error(format!("the mailbox is unavailable ({})", e.reason()), None)
        }
    }
}

fn json_result(v: serde_json::Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

#[tool_router]
impl Email {
    /// Searches the caller's inbox.
    #[tool(
        name = "email.search",
        description = "Search your inbox; answers [{uid, from, subject, date}], newest first."
    )]
    async fn search(
        &self,
        Parameters(SearchArgs { query, limit }): Parameters<SearchArgs>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let entry = self.mailbox(&parts)?;
        let limit = limit.unwrap_or(20).clamp(1, MAX_RESULTS);
        let headers = vexa_email::search(&entry.mailbox, &entry.mailbox.inbox, &query, limit)
            .await
            .map_err(failed)?;
        let list: Vec<_> = headers
            .iter()
            .map(|h| json!({"uid": h.uid, "from": h.from, "subject": h.subject, "date": h.date}))
            .collect();
        Ok(json_result(json!(list)))
    }

    /// Reads one message of the caller's inbox.
    #[tool(
        name = "email.read",
        description = "Read one message of your inbox by uid: headers and text (size-capped)."
    )]
    async fn read(
        &self,
        Parameters(ReadArgs { uid }): Parameters<ReadArgs>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let entry = self.mailbox(&parts)?;
        let mail = vexa_email::read(&entry.mailbox, &entry.mailbox.inbox, uid, MAX_TEXT_CHARS)
            .await
            .map_err(failed)?;
        Ok(json_result(json!(mail)))
    }

    /// Stores a draft in the caller's Drafts folder.
    #[tool(
        name = "email.draft",
        description = "Store a draft in your Drafts folder (nothing is sent); answers its id."
    )]
    async fn draft(
        &self,
        Parameters(DraftArgs { to, subject, body }): Parameters<DraftArgs>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let entry = self.mailbox(&parts)?;
        let domain = entry
            .address
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let message = vexa_email::Message {
            from: entry.address.clone(),
            to,
            subject,
            body,
            message_id: format!("draft-{nanos}@{domain}"),
        };
        let id = vexa_email::draft(&entry.mailbox, &message)
            .await
            .map_err(failed)?;
        Ok(json_result(json!({"id": id})))
    }

    /// Sends from the caller's mailbox, once per Message-ID.
    #[tool(
        name = "email.send",
        description = "Send an email (irreversible; gated: applied from an approved Card)."
    )]
    async fn send(
        &self,
        Parameters(args): Parameters<SendArgs>,
        Extension(parts): Extension<http::request::Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let entry = self.mailbox(&parts)?;
        let message = vexa_email::Message {
            from: entry.address.clone(),
            to: args.to,
            subject: args.subject,
            body: args.body,
            message_id: args.message_id,
        };
        let sent = vexa_email::send_once(&entry.mailbox, &message)
            .await
            .map_err(failed)?;
        Ok(json_result(
            json!({"messageId": message.message_id, "result": format!("{sent:?}")}),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Email {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}
