//! The `unit-jsonl` stream format: the agent CLI writes unit events itself, one JSON object per
//! line, without or with a `turn_id` (the worker's turn always wins). Each line is validated; a
//! line that is not a unit event becomes a `model-error`.

use serde_json::Value;

use crate::events::{Event, TurnId, UnitEvent};
use crate::session::valid_session_id;
use crate::stream::{StreamParser, TurnOutcome, unreadable};

/// Parses unit events written by the agent CLI for one turn.
#[derive(Debug)]
pub struct JsonlParser {
    turn: TurnId,
    lines: usize,
    outcome: TurnOutcome,
}

impl JsonlParser {
    /// A parser for turn `turn`.
    pub fn new(turn: TurnId) -> Self {
        Self {
            turn,
            lines: 0,
            outcome: TurnOutcome::default(),
        }
    }

    fn read(&self, line: &str) -> Result<Event, String> {
        let mut v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let object = v.as_object_mut().ok_or("not a JSON object")?;
        object.remove("turn_id");
        let event: Event = serde_json::from_value(v).map_err(|e| e.to_string())?;
        match &event {
            // The worker owns these: it commits, and it says when a turn is over.
            Event::Commit { .. } | Event::TurnComplete {} => {
                Err("commit and turn-complete are written by the worker, not the agent".into())
            }
            Event::Done {
                session_id: Some(id),
                ..
            } if !valid_session_id(id) => Err(format!("{id:?} is not a usable session id")),
            _ if self.outcome.done.is_some() => Err("an event after done".into()),
            _ => Ok(event),
        }
    }
}

impl StreamParser for JsonlParser {
    fn line(&mut self, line: &str) -> Vec<UnitEvent> {
        self.lines += 1;
        if line.trim().is_empty() {
            return Vec::new();
        }
        let event = match self.read(line.trim()) {
            Ok(e) => e,
            Err(problem) => return vec![unreadable(self.turn, self.lines, line, &problem)],
        };
        match &event {
            Event::MessageDelta { text } => {
                self.outcome.reply.push_str(text);
                self.outcome.produced_output = true;
            }
            Event::ToolCall { .. } => self.outcome.produced_output = true,
            Event::Done {
                reply,
                session_id,
                ok,
            } => {
                self.outcome.reply.clone_from(reply);
                self.outcome.session_id.clone_from(session_id);
                self.outcome.done = Some(*ok);
            }
            _ => {}
        }
        vec![UnitEvent::new(self.turn, event)]
    }

    fn finish(&mut self, exit_code: Option<i32>) -> Vec<UnitEvent> {
        self.outcome.finish(self.turn, exit_code)
    }

    fn outcome(&self) -> &TurnOutcome {
        &self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[test]
    fn events_pass_through_stamped_with_the_workers_turn() {
        let mut p = JsonlParser::new(TurnId(4));
        let lines = [
            r#"{"type":"message-delta","text":"Hi "}"#,
            r#"{"type":"message-delta","text":"there","turn_id":"t0"}"#,
            "",
            r#"{"type":"tool-call","tool":"search","args":{"q":"x"},"callId":"c1"}"#,
            r#"{"type":"tool-result","callId":"c1","ok":true,"summary":"3 hits"}"#,
            r#"{"type":"card","card":{"kind":"suggestion","title":"Read this"}}"#,
            r#"{"type":"done","reply":"Hi there","sessionId":"s-9","ok":true}"#,
        ];
        let events: Vec<UnitEvent> = lines.iter().flat_map(|l| p.line(l)).collect();
        assert_eq!(events.len(), 6);
        assert!(events.iter().all(|e| e.turn_id == TurnId(4)));
        assert_eq!(
            events[3].event,
            Event::ToolResult {
                call_id: "c1".into(),
                ok: true,
                summary: "3 hits".into()
            }
        );
        assert_eq!(
            events[4].event,
            Event::Card {
                card: json!({"kind": "suggestion", "title": "Read this"})
            }
        );
        assert!(p.finish(Some(0)).is_empty());
        let o = p.outcome();
        assert_eq!(
            (o.reply.as_str(), o.session_id.as_deref(), o.done),
            ("Hi there", Some("s-9"), Some(true))
        );
    }

    #[rstest]
    #[case::not_json("hello", "expected value")]
    #[case::not_object("[]", "not a JSON object")]
    #[case::unknown_type(r#"{"type":"shout","text":"x"}"#, "unknown variant `shout`")]
    #[case::missing_field(r#"{"type":"tool-result","callId":"c"}"#, "missing field `ok`")]
    #[case::extra_field(r#"{"type":"note","note":"n","secret":"x"}"#, "unknown field `secret`")]
    #[case::wrong_type(r#"{"type":"message-delta","text":7}"#, "invalid type")]
    #[case::commit(r#"{"type":"commit","sha":"abc"}"#, "written by the worker")]
    #[case::turn_complete(r#"{"type":"turn-complete"}"#, "written by the worker")]
    #[case::bad_session(
        r#"{"type":"done","reply":"","sessionId":"-x","ok":true}"#,
        "not a usable session id"
    )]
    fn invalid_lines_become_model_errors(#[case] line: &str, #[case] problem: &str) {
        let mut p = JsonlParser::new(TurnId(1));
        let events = p.line(line);
        assert_eq!(events.len(), 1, "{events:?}");
        let Event::ModelError { error } = &events[0].event else {
            panic!("{events:?}")
        };
        assert!(error.contains(problem), "{error}");
        assert_eq!(p.outcome().done, None);
    }

    #[test]
    fn nothing_follows_done_and_a_missing_done_is_closed() {
        let mut p = JsonlParser::new(TurnId(0));
        p.line(r#"{"type":"done","reply":"r","sessionId":null,"ok":false}"#);
        let after = p.line(r#"{"type":"note","note":"late"}"#);
        assert!(
            matches!(&after[0].event, Event::ModelError { error } if error.contains("after done"))
        );

        let mut q = JsonlParser::new(TurnId(0));
        q.line(r#"{"type":"message-delta","text":"par"}"#);
        let closing = q.finish(Some(1));
        assert_eq!(
            closing[1].event,
            Event::Done {
                reply: "par".into(),
                session_id: None,
                ok: false
            }
        );
    }
}
