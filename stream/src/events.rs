//! Unit events: what a dispatch streams on `unit:<id>:out` (SPEC §4), one JSON object per
//! entry. The JSON field names are the contract with every client; the golden tests below pin
//! them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A turn of the conversation: `t0` is the entrypoint, `t1`, `t2`, … the turns sent on the
/// input stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnId(pub u32);

impl TurnId {
    /// The turn after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A string that is not a turn id (`t` followed by a decimal number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a turn id: expected t0, t1, …")]
pub struct BadTurnId(String);

impl FromStr for TurnId {
    type Err = BadTurnId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('t')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| n.len() == 1 || !n.starts_with('0'))
            .and_then(|n| n.parse().ok())
            .map(TurnId)
            .ok_or_else(|| BadTurnId(s.to_owned()))
    }
}

impl Serialize for TurnId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TurnId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What happened, without the turn it belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// A piece of the agent's reply text, in order.
    MessageDelta {
        /// The text to append.
        text: String,
    },
    /// The agent called a tool.
    #[serde(rename_all = "camelCase")]
    ToolCall {
        /// The tool's name, as the agent knows it (e.g. `Write`).
        tool: String,
        /// The tool's arguments, as the agent sent them.
        args: Value,
        /// Pairs the call with its `tool-result`.
        call_id: String,
    },
    /// A tool call finished.
    #[serde(rename_all = "camelCase")]
    ToolResult {
        /// The `callId` of the `tool-call` this answers.
        call_id: String,
        /// False when the tool reported an error.
        ok: bool,
        /// The first 80 characters of the tool's output.
        summary: String,
    },
    /// The agent finished the turn.
    #[serde(rename_all = "camelCase")]
    Done {
        /// The whole reply of the turn.
        reply: String,
        /// The agent CLI's session id, to resume the conversation later; null when unknown.
        #[serde(default)]
        session_id: Option<String>,
        /// False when the turn ended in an error.
        ok: bool,
    },
    /// The worker committed the turn's changes in the rw workspace.
    Commit {
        /// The new commit.
        sha: String,
    },
    /// The turn is over: its events are all on the stream and the worker waits for the next.
    TurnComplete {},
    /// The agent could not authenticate to its model endpoint.
    AuthError {
        /// What the agent or the endpoint said.
        error: String,
    },
    /// The model, the agent CLI or its output failed.
    ModelError {
        /// What failed.
        error: String,
    },
    /// A proposal awaiting a person (proactive-card.v1).
    Card {
        /// The card, as the Card resource's spec.
        card: Value,
    },
    /// Something worth telling the reader that is neither reply nor error.
    Note {
        /// The note.
        note: String,
    },
}

/// One entry of the output stream: an event and the turn it belongs to. Serialised as a flat
/// object: `{"type": "message-delta", "text": "Hi", "turn_id": "t0"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UnitEvent {
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
    /// The turn it happened in.
    pub turn_id: TurnId,
}

impl UnitEvent {
    /// The event `event` of turn `turn`.
    pub fn new(turn: TurnId, event: Event) -> Self {
        Self {
            event,
            turn_id: turn,
        }
    }

    /// The JSON written to the stream's `event` field.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, bools and `Value`s into a String cannot fail; the fallback
        // keeps that true without a panic path.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"type":"model-error","error":{},"turn_id":"{}"}}"#,
                Value::String(format!("could not encode an event: {e}")),
                self.turn_id
            )
        })
    }
}

/// The first `max` characters of `s` (never splitting a character).
pub fn first_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn t(n: u32) -> TurnId {
        TurnId(n)
    }

    // The golden shapes: every client of the stream depends on these exact names.
    #[rstest]
    #[case::message_delta(Event::MessageDelta { text: "Hi".into() },
        json!({"type": "message-delta", "text": "Hi", "turn_id": "t0"}))]
    #[case::tool_call(Event::ToolCall { tool: "Write".into(), args: json!({"file_path": "a.md"}), call_id: "toolu_1".into() },
        json!({"type": "tool-call", "tool": "Write", "args": {"file_path": "a.md"}, "callId": "toolu_1", "turn_id": "t0"}))]
    #[case::tool_result(Event::ToolResult { call_id: "toolu_1".into(), ok: false, summary: "denied".into() },
        json!({"type": "tool-result", "callId": "toolu_1", "ok": false, "summary": "denied", "turn_id": "t0"}))]
    #[case::done(Event::Done { reply: "Wrote it.".into(), session_id: Some("s-1".into()), ok: true },
        json!({"type": "done", "reply": "Wrote it.", "sessionId": "s-1", "ok": true, "turn_id": "t0"}))]
    #[case::done_without_session(Event::Done { reply: String::new(), session_id: None, ok: false },
        json!({"type": "done", "reply": "", "sessionId": null, "ok": false, "turn_id": "t0"}))]
    #[case::commit(Event::Commit { sha: "0123abcd".into() },
        json!({"type": "commit", "sha": "0123abcd", "turn_id": "t0"}))]
    #[case::turn_complete(Event::TurnComplete {},
        json!({"type": "turn-complete", "turn_id": "t0"}))]
    #[case::auth_error(Event::AuthError { error: "Invalid API key".into() },
        json!({"type": "auth-error", "error": "Invalid API key", "turn_id": "t0"}))]
    #[case::model_error(Event::ModelError { error: "overloaded".into() },
        json!({"type": "model-error", "error": "overloaded", "turn_id": "t0"}))]
    #[case::card(Event::Card { card: json!({"kind": "record", "title": "t"}) },
        json!({"type": "card", "card": {"kind": "record", "title": "t"}, "turn_id": "t0"}))]
    #[case::note(Event::Note { note: "stopping".into() },
        json!({"type": "note", "note": "stopping", "turn_id": "t0"}))]
    fn golden_json(#[case] event: Event, #[case] golden: Value) {
        let unit = UnitEvent::new(t(0), event);
        let encoded: Value = serde_json::from_str(&unit.to_json()).unwrap();
        assert_eq!(encoded, golden);
        let decoded: UnitEvent = serde_json::from_value(golden).unwrap();
        assert_eq!(decoded, unit);
    }

    #[test]
    fn the_type_comes_first_and_the_turn_last() {
        let unit = UnitEvent::new(t(3), Event::MessageDelta { text: "x".into() });
        assert_eq!(
            unit.to_json(),
            r#"{"type":"message-delta","text":"x","turn_id":"t3"}"#
        );
    }

    #[rstest]
    #[case::unknown_type(json!({"type": "shout", "turn_id": "t0"}))]
    #[case::missing_field(json!({"type": "message-delta", "turn_id": "t0"}))]
    #[case::wrong_case(json!({"type": "tool-result", "call_id": "x", "ok": true, "summary": "", "turn_id": "t0"}))]
    #[case::missing_turn(json!({"type": "note", "note": "n"}))]
    #[case::bad_turn(json!({"type": "note", "note": "n", "turn_id": "3"}))]
    fn malformed_events_are_rejected(#[case] value: Value) {
        assert!(serde_json::from_value::<UnitEvent>(value).is_err());
    }

    #[rstest]
    #[case("t0", Some(0))]
    #[case("t12", Some(12))]
    #[case("t", None)]
    #[case("t01", None)]
    #[case("t-1", None)]
    #[case("T1", None)]
    #[case("t1x", None)]
    #[case("t99999999999", None)]
    fn turn_ids_parse(#[case] s: &str, #[case] want: Option<u32>) {
        assert_eq!(s.parse::<TurnId>().ok(), want.map(TurnId));
    }

    #[test]
    fn turns_count_up() {
        assert_eq!(TurnId::default().next().next().to_string(), "t2");
    }

    #[test]
    fn first_chars_counts_characters_not_bytes() {
        assert_eq!(first_chars("héllo wörld", 4), "héll");
        assert_eq!(first_chars("ab", 80), "ab");
    }
}
