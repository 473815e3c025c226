//! How unit events look on a terminal: the reply as flowing text, everything else as one compact
//! bracketed line; or, with `--json`, one JSON object per entry.

use std::collections::HashMap;

use serde_json::Value;
use vexa_stream::follow::EntryId;
use vexa_stream::{Event, UnitEvent};

/// The longest tool argument text or summary shown on a compact line.
const MAX_DETAIL: usize = 100;
/// How much of a commit's sha is shown.
const SHORT_SHA: usize = 12;

/// Renders unit events as text. It remembers whether the current line is open (reply text
/// without a newline yet), so compact lines always start on a line of their own, and which tool
/// each call id belongs to, so a result names its tool.
#[derive(Debug, Default)]
pub struct TextRenderer {
    mid_line: bool,
    text_in_turn: bool,
    tools: HashMap<String, String>,
    show_turns: bool,
}

impl TextRenderer {
    /// A renderer; `show_turns` marks the end of each turn with a line (for `follow`, where
    /// several turns pass by).
    pub fn new(show_turns: bool) -> Self {
        Self {
            show_turns,
            ..Self::default()
        }
    }

    /// The text for one event.
    pub fn event(&mut self, unit: &UnitEvent) -> String {
        match &unit.event {
            Event::MessageDelta { text } => {
                self.text_in_turn |= !text.is_empty();
                self.text(text)
            }
            Event::ToolCall {
                tool,
                args,
                call_id,
            } => {
                self.tools.insert(call_id.clone(), tool.clone());
                self.line(&format!("[tool] {tool} {}", compact_json(args)))
            }
            Event::ToolResult {
                call_id,
                ok,
                summary,
            } => {
                let tool = self.tools.get(call_id).unwrap_or(call_id);
                let how = if *ok { "ok" } else { "failed" };
                self.line(&format!("[tool] {tool} {how}: {}", one_line(summary)))
            }
            Event::Done { reply, ok, .. } => {
                // The reply was streamed as deltas; a runner that sends none still shows it.
                let mut out = String::new();
                if !self.text_in_turn && !reply.is_empty() {
                    out.push_str(&self.text(reply));
                }
                if !ok {
                    out.push_str(&self.line("[failed] the turn ended with an error"));
                }
                out
            }
            Event::Commit { sha } => {
                let short: String = sha.chars().take(SHORT_SHA).collect();
                self.line(&format!("[commit] {short}"))
            }
            Event::TurnComplete {} => {
                self.text_in_turn = false;
                self.tools.clear();
                if self.show_turns {
                    self.line(&format!("[turn {} complete]", unit.turn_id))
                } else {
                    self.end_line()
                }
            }
            Event::AuthError { error } => self.line(&format!("[auth-error] {}", one_line(error))),
            Event::ModelError { error } => self.line(&format!("[model-error] {}", one_line(error))),
            Event::Card { card } => {
                let field = |k: &str| card.get(k).and_then(Value::as_str);
                let what = match (field("kind"), field("title")) {
                    (Some(kind), Some(title)) => format!("{kind}: {}", one_line(title)),
                    _ => compact_json(card),
                };
                self.line(&format!("[card] {what}"))
            }
            Event::Note { note } => self.line(&format!("[note] {}", one_line(note))),
        }
    }

    /// The text for an entry that is not a unit event.
    pub fn malformed(&mut self, id: EntryId, reason: &str) -> String {
        self.line(&format!("[malformed entry {id}] {}", one_line(reason)))
    }

    /// A newline if the last line is still open, so the shell prompt starts on its own line.
    pub fn end_line(&mut self) -> String {
        if std::mem::take(&mut self.mid_line) {
            "\n".into()
        } else {
            String::new()
        }
    }

    fn text(&mut self, text: &str) -> String {
        if !text.is_empty() {
            self.mid_line = !text.ends_with('\n');
        }
        text.to_owned()
    }

    fn line(&mut self, line: &str) -> String {
        let mut out = self.end_line();
        out.push_str(line);
        out.push('\n');
        out
    }
}

/// One `--json` line for an event: `{"id": "<entry id>", "event": {…}}`.
pub fn json_line(id: EntryId, unit: &UnitEvent) -> String {
    // Written by hand so the id comes first and the event is byte for byte what the worker
    // publishes.
    format!("{{\"id\":\"{id}\",\"event\":{}}}\n", unit.to_json())
}

/// One `--json` line for an entry that is not a unit event: `{"id": …, "error": …}`.
pub fn json_error_line(id: EntryId, reason: &str) -> String {
    format!("{{\"id\":\"{id}\",\"error\":{}}}\n", Value::from(reason))
}

fn compact_json(v: &Value) -> String {
    truncate(&v.to_string())
}

fn one_line(s: &str) -> String {
    let flat: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(&flat)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_DETAIL {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(MAX_DETAIL - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;
    use vexa_stream::TurnId;

    fn turn(n: u32, events: Vec<Event>) -> Vec<UnitEvent> {
        events
            .into_iter()
            .map(|e| UnitEvent::new(TurnId(n), e))
            .collect()
    }

    fn render(show_turns: bool, events: &[UnitEvent]) -> String {
        let mut r = TextRenderer::new(show_turns);
        let mut out: String = events.iter().map(|e| r.event(e)).collect();
        out.push_str(&r.end_line());
        out
    }

    fn a_chat_turn() -> Vec<UnitEvent> {
        turn(
            0,
            vec![
                Event::MessageDelta {
                    text: "I'll write ".into(),
                },
                Event::MessageDelta {
                    text: "the note.".into(),
                },
                Event::ToolCall {
                    tool: "Write".into(),
                    args: json!({"file_path": "notes/hello.md"}),
                    call_id: "toolu_1".into(),
                },
                Event::ToolResult {
                    call_id: "toolu_1".into(),
                    ok: true,
                    summary: "File created successfully at: notes/hello.md\n".into(),
                },
                Event::MessageDelta {
                    text: "Done: notes/hello.md says hello.".into(),
                },
                Event::Done {
                    reply: "I'll write the note.Done: notes/hello.md says hello.".into(),
                    session_id: Some("s-1".into()),
                    ok: true,
                },
                Event::Commit {
                    sha: "0123456789abcdef0123456789abcdef01234567".into(),
                },
                Event::TurnComplete {},
            ],
        )
    }

    #[test]
    fn a_chat_turn_reads_as_text_with_compact_lines() {
        assert_eq!(
            render(false, &a_chat_turn()),
            "I'll write the note.\n\
             [tool] Write {\"file_path\":\"notes/hello.md\"}\n\
             [tool] Write ok: File created successfully at: notes/hello.md\n\
             Done: notes/hello.md says hello.\n\
             [commit] 0123456789ab\n"
        );
    }

    #[test]
    fn follow_marks_the_end_of_each_turn() {
        let mut events = a_chat_turn();
        events.extend(turn(
            1,
            vec![
                Event::MessageDelta {
                    text: "Again.\n".into(),
                },
                Event::Done {
                    reply: "Again.\n".into(),
                    session_id: None,
                    ok: true,
                },
                Event::TurnComplete {},
            ],
        ));
        let text = render(true, &events);
        assert!(
            text.ends_with(
                "[commit] 0123456789ab\n[turn t0 complete]\nAgain.\n[turn t1 complete]\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn errors_cards_notes_and_a_reply_without_deltas() {
        let events = turn(
            2,
            vec![
                Event::Note {
                    note: "could not resume the session;\nstarting fresh".into(),
                },
                Event::AuthError {
                    error: "Invalid API key".into(),
                },
                Event::ModelError {
                    error: "overloaded".into(),
                },
                Event::Card {
                    card: json!({"kind": "record", "title": "Add the meeting notes"}),
                },
                Event::Card {
                    card: json!({"body": "no kind"}),
                },
                Event::ToolResult {
                    call_id: "toolu_9".into(),
                    ok: false,
                    summary: "x".repeat(150),
                },
                Event::Done {
                    reply: "Only at the end.".into(),
                    session_id: None,
                    ok: false,
                },
                Event::TurnComplete {},
            ],
        );
        let long = format!("{}…", "x".repeat(99));
        assert_eq!(
            render(false, &events),
            format!(
                "[note] could not resume the session; starting fresh\n\
                 [auth-error] Invalid API key\n\
                 [model-error] overloaded\n\
                 [card] record: Add the meeting notes\n\
                 [card] {{\"body\":\"no kind\"}}\n\
                 [tool] toolu_9 failed: {long}\n\
                 Only at the end.\n\
                 [failed] the turn ended with an error\n"
            )
        );
    }

    #[test]
    fn a_malformed_entry_is_a_line_of_its_own() {
        let mut r = TextRenderer::new(false);
        let mut out = r.event(&UnitEvent::new(
            TurnId(0),
            Event::MessageDelta { text: "Hi".into() },
        ));
        out.push_str(&r.malformed(EntryId { ms: 5, seq: 1 }, "not JSON"));
        assert_eq!(out, "Hi\n[malformed entry 5-1] not JSON\n");
    }

    #[test]
    fn json_lines_carry_the_entry_id_and_the_event_as_published() {
        let unit = UnitEvent::new(TurnId(1), Event::Commit { sha: "abc".into() });
        assert_eq!(
            json_line(
                EntryId {
                    ms: 1700000000000,
                    seq: 2
                },
                &unit
            ),
            "{\"id\":\"1700000000000-2\",\"event\":{\"type\":\"commit\",\"sha\":\"abc\",\"turn_id\":\"t1\"}}\n"
        );
        assert_eq!(
            json_error_line(EntryId { ms: 3, seq: 0 }, "bad \"x\""),
            "{\"id\":\"3-0\",\"error\":\"bad \\\"x\\\"\"}\n"
        );
    }
}
