//! How a run may act: what started it, how it uses each workspace, how its tools are granted,
//! and the trust that follows (SPEC §3, §5).
//!
//! The `///` docs of these types are also descriptions in the CRDs (vexa-crds re-exports them).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a dispatch may use a workspace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum WorkspaceMode {
    /// Read-only: mounted read-only; nothing is committed.
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read-write: mounted writable; changes are committed after each turn.
    #[serde(rename = "rw")]
    ReadWrite,
}

impl WorkspaceMode {
    /// The mode as the CRDs spell it: `ro` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "ro",
            Self::ReadWrite => "rw",
        }
    }
}

/// What started a dispatch. `message` and `scheduled` are trusted; `event` and `transcription`
/// carry content from outside and are therefore propose-only.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A person sent a message (chat).
    Message,
    /// A Schedule fired at its scheduled time.
    Scheduled,
    /// An external event (for example an email arriving).
    Event,
    /// A meeting transcription.
    Transcription,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 4] = [
        Self::Message,
        Self::Scheduled,
        Self::Event,
        Self::Transcription,
    ];

    /// Whether content behind this trigger comes from the subject or someone they trust.
    pub fn is_trusted(self) -> bool {
        matches!(self, Trigger::Message | Trigger::Scheduled)
    }

    /// The trigger as the CRD and `VEXA_UNIT_TRIGGER` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Scheduled => "scheduled",
            Self::Event => "event",
            Self::Transcription => "transcription",
        }
    }
}

/// Whether a run may change things on its own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Trust {
    /// Trusted: may write its rw workspaces and call its auto-granted tools.
    Trusted,
    /// Propose-only: every workspace is read-only and every irreversible tool is gated; its
    /// effects become Cards a person approves.
    ProposeOnly,
}

/// How a tool call is granted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// Runs when the agent calls it.
    Auto,
    /// Becomes a proposal (Card) that a person approves.
    Gate,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_words_are_the_serialised_forms() {
        for t in Trigger::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for m in [WorkspaceMode::ReadOnly, WorkspaceMode::ReadWrite] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn only_a_persons_triggers_are_trusted() {
        let trusted: Vec<Trigger> = Trigger::ALL
            .into_iter()
            .filter(|t| t.is_trusted())
            .collect();
        assert_eq!(trusted, [Trigger::Message, Trigger::Scheduled]);
    }
}
