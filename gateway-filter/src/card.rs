//! A gated call becomes a proposal: a `send` Card in the dispatch's namespace, owned by the
//! token's subject, that a person approves or rejects. The call itself is never forwarded.

use sha2::{Digest, Sha256};
use vexa_crds::card::{Card, CardKind, CardSpec, SendProposal};

/// The Card a gated call proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardProposal {
    /// The dispatch's namespace (where the Card is created).
    pub namespace: String,
    /// [`card_name`] of the call.
    pub name: String,
    /// The token's subject: who decides.
    pub owner: String,
    /// The dispatch's name.
    pub source_dispatch: String,
    /// The Tool object's name.
    pub tool: String,
    /// The MCP tool name the agent called (for the title).
    pub tool_name: String,
    /// The launcher (for the title).
    pub launcher: String,
    /// The call's arguments as JSON text.
    pub arguments: String,
}

/// The Card's name: a digest of (dispatch, tool, arguments), so a retried call finds the Card
/// it already proposed instead of proposing it twice.
pub fn card_name(dispatch_id: &str, tool: &str, arguments: &str) -> String {
    let mut h = Sha256::new();
    for part in [dispatch_id, tool, arguments] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("gate-{hex}")
}

impl CardProposal {
    /// The Card object to create.
    pub fn to_card(&self) -> Card {
        let mut card = Card::new(
            &self.name,
            CardSpec {
                kind: CardKind::Send,
                owner: self.owner.clone(),
                source_dispatch: Some(self.source_dispatch.clone()),
                title: format!("{} asks to call {}", self.launcher, self.tool_name)
                    .chars()
                    .take(200)
                    .collect(),
                body: Some(format!(
                    "Dispatch `{}` called the gated tool `{}` (Tool `{}`). Approve to run the \
                     call with the arguments below; reject to drop it.",
                    self.source_dispatch, self.tool_name, self.tool
                )),
                record: None,
                send: Some(SendProposal {
                    tool: self.tool.clone(),
                    arguments: self.arguments.clone(),
                }),
                decision: None,
            },
        );
        card.metadata.namespace = Some(self.namespace.clone());
        card
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_call_names_the_same_card_and_any_change_another() {
        let a = card_name("team/d1", "mail", r#"{"to":"x"}"#);
        assert_eq!(a, card_name("team/d1", "mail", r#"{"to":"x"}"#));
        assert_ne!(a, card_name("team/d2", "mail", r#"{"to":"x"}"#));
        assert_ne!(a, card_name("team/d1", "mail2", r#"{"to":"x"}"#));
        assert_ne!(a, card_name("team/d1", "mail", r#"{"to":"y"}"#));
        // Length-prefixed parts: moving a boundary changes the name.
        assert_ne!(card_name("ab", "c", "d"), card_name("a", "bc", "d"));
        assert!(a.len() <= 63 && a.starts_with("gate-"));
    }
}
