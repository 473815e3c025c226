//! What one line of the log says.

use serde::{Deserialize, Serialize};
use vexa_core::WorkspaceMode;

use vexa_policy::token::DetachedSignature;

/// One line of a writer's chain.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Line {
    /// Position in this writer's chain, from 1.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// Who wrote it (`operator`, `gateway`): one chain and one file each.
    pub writer: String,
    /// SHA-256 (hex) of the previous line's bytes; [`crate::GENESIS`] for the first.
    pub prev: String,
    /// What the line records.
    #[serde(flatten)]
    pub body: Body,
}

/// The kinds of line.
// A record is by far the most common line; boxing it would only add an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An effect of a dispatch, resolved to subject · launcher · scope.
    Record {
        /// Whose effect.
        #[serde(flatten)]
        effect: Effect,
        /// What happened.
        event: Event,
    },
    /// A signature over the chain up to the line before it.
    Checkpoint {
        /// The seq of the last line it covers (the line before it).
        covers: u64,
        /// That line's hash (equal to this line's `prev`).
        hash: String,
        /// The signature over [`crate::checkpoint_message`].
        signature: DetachedSignature,
    },
    /// A torn last line found on open (a crash mid-write): its bytes were moved to `file`.
    Recovered {
        /// The file (in the log's folder) that now holds the torn bytes.
        file: String,
        /// How many bytes.
        bytes: u64,
        /// Their SHA-256 (hex).
        sha256: String,
    },
}

/// A dispatch resolved to subject · launcher · scope: who every record of it is about.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The dispatch.
    pub dispatch: DispatchRef,
    /// On whose behalf it runs.
    pub subject: String,
    /// Who or what launched it (`user:…`, `schedule:…`, `integration:…`).
    pub launcher: String,
    /// The workspaces and tools in play: as authorized, or as asked for when refused.
    pub scope: ScopeRecord,
}

/// Which dispatch a record is about.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct DispatchRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID (names are reused; the UID is not).
    pub uid: String,
}

/// The scope of a dispatch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeRecord {
    /// Workspaces with their modes.
    pub workspaces: Vec<WorkspaceGrant>,
    /// Tool names.
    pub tools: Vec<String>,
}

/// A workspace and the mode it is used with.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceGrant {
    /// The Workspace's name.
    pub name: String,
    /// `ro` or `rw`; absent in a refusal of a request that left it to the Workspace's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkspaceMode>,
}

/// What happened to a dispatch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The operator accepted the dispatch; its Job comes next.
    Admitted,
    /// The operator refused it (`Authorized=False`): no Job, no token, no identity.
    Refused {
        /// The condition's reason.
        reason: String,
        /// The condition's message.
        message: String,
    },
    /// A dispatch token was minted.
    TokenMinted {
        /// The signing key's id.
        kid: String,
        /// Its expiry (seconds since the Unix epoch).
        exp: i64,
    },
    /// A SPIRE entry was registered for the dispatch's pod.
    EntryRegistered {
        /// The SPIFFE ID it grants.
        spiffe_id: String,
        /// The SPIRE entry's id.
        entry_id: String,
    },
    /// The dispatch's SPIRE entry was removed.
    EntryRemoved,
    /// The run ended.
    Stopped {
        /// The stop reason (`completed`, `failed`, …).
        reason: String,
    },
    /// A request to a tool seen by the gateway's authorization filter.
    ToolCall {
        /// The Tool object's name (the path's; for a refused path, what it named).
        tool: String,
        /// The MCP JSON-RPC method (`tools/call`, `tools/list`, `initialize`, …; empty if the
        /// body was not read).
        #[serde(default)]
        mcp_method: String,
        /// What the gateway decided: `allowed`, `refused` or `gated` (a Card was proposed).
        decision: String,
        /// Why, as a short CamelCase reason (`Allowed`, `TokenExpired`, `WorkloadMismatch`, …).
        #[serde(default)]
        reason: String,
        /// SHA-256 (hex) of the call's arguments as sent (never the arguments themselves).
        arguments_sha256: String,
    },
}

impl Event {
    /// The event's kind as written (`admitted`, `token_minted`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Admitted => "admitted",
            Event::Refused { .. } => "refused",
            Event::TokenMinted { .. } => "token_minted",
            Event::EntryRegistered { .. } => "entry_registered",
            Event::EntryRemoved => "entry_removed",
            Event::Stopped { .. } => "stopped",
            Event::ToolCall { .. } => "tool_call",
        }
    }

    /// What identifies this event among a dispatch's events for [`crate::AuditLog::append_once`]:
    /// one admission, refusal, stop and entry removal per dispatch; one record per token and
    /// per entry. `None`: every occurrence counts (tool calls).
    pub fn once_key(&self) -> Option<String> {
        match self {
            Event::Admitted
            | Event::Refused { .. }
            | Event::EntryRemoved
            | Event::Stopped { .. } => Some(self.kind().to_owned()),
            Event::TokenMinted { kid, exp } => Some(format!("token_minted/{kid}/{exp}")),
            Event::EntryRegistered { entry_id, .. } => Some(format!("entry_registered/{entry_id}")),
            Event::ToolCall { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_the_contract_says() {
        let line = Line {
            seq: 3,
            time: "2026-12-05T12:00:00.000Z".into(),
            writer: "operator".into(),
            prev: crate::GENESIS.into(),
            body: Body::Record {
                effect: Effect {
                    dispatch: DispatchRef {
                        namespace: "team".into(),
                        name: "d1".into(),
                        uid: "u-1".into(),
                    },
                    subject: "alice".into(),
                    launcher: "user:alice".into(),
                    scope: ScopeRecord {
                        workspaces: vec![WorkspaceGrant {
                            name: "notes".into(),
                            mode: Some(WorkspaceMode::ReadWrite),
                        }],
                        tools: vec!["email.send".into()],
                    },
                },
                event: Event::Refused {
                    reason: "GrantMissing".into(),
                    message: "no grant".into(),
                },
            },
        };
        let json: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(json["kind"], "record");
        assert_eq!(json["event"]["type"], "refused");
        assert_eq!(json["event"]["reason"], "GrantMissing");
        assert_eq!(json["scope"]["workspaces"][0]["mode"], "rw");
        assert_eq!(json["dispatch"]["uid"], "u-1");
        let back: Line = serde_json::from_value(json).unwrap();
        assert_eq!(back, line);
    }

    #[test]
    fn an_event_is_recorded_once_per_kind_but_each_token_and_call_counts() {
        assert_eq!(Event::Admitted.once_key().as_deref(), Some("admitted"));
        let t1 = Event::TokenMinted {
            kid: "k1".into(),
            exp: 1,
        };
        let t2 = Event::TokenMinted {
            kid: "k1".into(),
            exp: 2,
        };
        assert_ne!(t1.once_key(), t2.once_key());
        let call = Event::ToolCall {
            tool: "t".into(),
            mcp_method: "tools/call".into(),
            decision: "allowed".into(),
            reason: "Allowed".into(),
            arguments_sha256: String::new(),
        };
        assert_eq!(call.once_key(), None);
    }
}
