//! The audit record every decision leaves (`tool_call` in the gateway's own chain).

use vexa_audit::{DispatchRef, Effect, Event, ScopeRecord, WorkspaceGrant};
use vexa_policy::token::DispatchClaims;

/// What the gateway decided, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded to the tool (or answered by the gateway from the Tools in scope).
    Allowed,
    /// Refused.
    Refused,
    /// Proposed as a Card; not forwarded.
    Gated,
}

impl Verdict {
    /// As written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Refused => "refused",
            Verdict::Gated => "gated",
        }
    }
}

/// One `tool_call` record: whose call, to what, what was decided and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The dispatch id `<namespace>/<name>`: the token's `jti`, or for a token that did not
    /// verify, the `jti` it claims (marked by the reason), or empty.
    pub dispatch: String,
    /// The token's `sub` (claimed, when refused).
    pub subject: String,
    /// The token's `act.sub` (claimed, when refused).
    pub launcher: String,
    /// The Tool object's name the path names (empty if the path names none).
    pub tool: String,
    /// The JSON-RPC method (empty if the body was not read).
    pub mcp_method: String,
    /// The token's scope: its workspaces with their modes, and its tools (claimed, when
    /// refused).
    pub scope: ScopeRecord,
    /// The decision.
    pub verdict: Verdict,
    /// Why (CamelCase).
    pub reason: String,
    /// SHA-256 (hex) of the call's arguments as JSON text (of the empty string when none).
    pub arguments_sha256: String,
}

/// The scope a verified token grants, as the audit log records scopes.
pub fn scope_of(claims: &DispatchClaims) -> ScopeRecord {
    ScopeRecord {
        workspaces: claims
            .workspaces
            .iter()
            .map(|w| WorkspaceGrant {
                name: w.name.clone(),
                mode: Some(w.mode),
            })
            .collect(),
        tools: claims.tools.clone(),
    }
}

impl CallRecord {
    /// The same record with another outcome (an exchange that failed after the decision).
    pub fn with(mut self, verdict: Verdict, reason: &str) -> Self {
        self.verdict = verdict;
        self.reason = reason.to_owned();
        self
    }

    /// As an audit line's effect and event. The gateway does not know the Dispatch's UID;
    /// the record names it by namespace and name.
    pub fn to_audit(&self) -> (Effect, Event) {
        let (namespace, name) = self
            .dispatch
            .split_once('/')
            .unwrap_or(("", &self.dispatch));
        let effect = Effect {
            dispatch: DispatchRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: String::new(),
            },
            subject: self.subject.clone(),
            launcher: self.launcher.clone(),
            scope: self.scope.clone(),
        };
        let event = Event::ToolCall {
            tool: self.tool.clone(),
            mcp_method: self.mcp_method.clone(),
            decision: self.verdict.as_str().to_owned(),
            reason: self.reason.clone(),
            arguments_sha256: self.arguments_sha256.clone(),
        };
        (effect, event)
    }
}
