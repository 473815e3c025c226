//! Every call the tool received, with the token it carried: what `GET /calls` answers.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use crate::token::Caller;

/// One tool call.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Call {
    /// The MCP tool name.
    pub tool: String,
    /// Its arguments.
    pub arguments: Value,
    /// The token it carried (`None`: none, which only a decode-only tool lets through).
    pub token: Option<Caller>,
}

/// The calls so far (shared by the MCP service and `GET /calls`).
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    /// Records a call.
    pub fn record(&self, call: Call) {
        tracing::info!(tool = %call.tool, arguments = %call.arguments, token = ?call.token, "tool call");
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
    }

    /// Every call, oldest first.
    pub fn all(&self) -> Vec<Call> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
