//! Claude Code's `--output-format stream-json --verbose --include-partial-messages` output,
//! mapped to unit events as SPEC §8 says:
//!
//! - `stream_event` with a `content_block_delta` whose delta is a `text_delta` → `message-delta`;
//! - an `assistant` message's `text` block → `message-delta`, only when no partial text delta was
//!   seen in the turn (otherwise the text was already streamed);
//! - an `assistant` message's `tool_use` block → `tool-call`;
//! - a `user` message's `tool_result` block → `tool-result` (`ok` = not `is_error`, `summary` =
//!   the first 80 characters of its content);
//! - the final `result` → `done` (`ok` unless an error subtype or `is_error`, `sessionId` from it).
//!
//! Text of sub-agents (lines with a `parent_tool_use_id`) is not part of the reply and is not
//! streamed; their tool calls are. An unreadable line becomes a `model-error`; a line of a type
//! this parser does not know (the CLI adds some over time) is ignored.

use serde_json::Value;

use crate::events::{Event, TurnId, UnitEvent, first_chars};
use crate::session::valid_session_id;
use crate::stream::{StreamParser, TurnOutcome, unreadable};

/// How many characters of a tool's output a `tool-result` carries.
pub const SUMMARY_CHARS: usize = 80;

/// Parses Claude Code's stream-json for one turn.
#[derive(Debug)]
pub struct ClaudeParser {
    turn: TurnId,
    lines: usize,
    saw_partial_text: bool,
    error_reported: bool,
    outcome: TurnOutcome,
}

impl ClaudeParser {
    /// A parser for turn `turn`.
    pub fn new(turn: TurnId) -> Self {
        Self {
            turn,
            lines: 0,
            saw_partial_text: false,
            error_reported: false,
            outcome: TurnOutcome::default(),
        }
    }

    fn event(&self, event: Event) -> UnitEvent {
        UnitEvent::new(self.turn, event)
    }

    fn text(&mut self, text: &str) -> Option<UnitEvent> {
        if text.is_empty() {
            return None;
        }
        self.outcome.reply.push_str(text);
        self.outcome.produced_output = true;
        Some(self.event(Event::MessageDelta {
            text: text.to_owned(),
        }))
    }

    /// An `auth-error` or `model-error`, at most once per turn (the CLI repeats an API error in
    /// the assistant message and in the result).
    fn error(&mut self, error: String) -> Option<UnitEvent> {
        if self.error_reported {
            return None;
        }
        self.error_reported = true;
        Some(self.event(if looks_like_auth(&error) {
            Event::AuthError { error }
        } else {
            Event::ModelError { error }
        }))
    }

    fn stream_event(&mut self, v: &Value) -> Vec<UnitEvent> {
        let event = &v["event"];
        let delta = &event["delta"];
        if event["type"] == "content_block_delta" && delta["type"] == "text_delta" {
            self.saw_partial_text = true;
            if let Some(e) = delta["text"].as_str().and_then(|t| self.text(t)) {
                return vec![e];
            }
        }
        Vec::new()
    }

    fn assistant(&mut self, v: &Value, subagent: bool) -> Vec<UnitEvent> {
        let blocks = v["message"]["content"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        // Claude Code marks a message the API refused (bad key, billing, overload) with `error`;
        // its text is the CLI's apology, not the agent's reply.
        if let Some(kind) = v["error"].as_str() {
            let text = blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let error = if text.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {text}")
            };
            return self.error(error).into_iter().collect();
        }
        let mut out = Vec::new();
        for block in blocks {
            match block["type"].as_str() {
                Some("text") if !self.saw_partial_text && !subagent => {
                    out.extend(block["text"].as_str().and_then(|t| self.text(t)));
                }
                Some("tool_use") => {
                    self.outcome.produced_output = true;
                    out.push(self.event(Event::ToolCall {
                        tool: block["name"].as_str().unwrap_or_default().to_owned(),
                        args: block.get("input").cloned().unwrap_or(Value::Null),
                        call_id: block["id"].as_str().unwrap_or_default().to_owned(),
                    }));
                }
                _ => {}
            }
        }
        out
    }

    fn user(&mut self, v: &Value) -> Vec<UnitEvent> {
        let blocks = v["message"]["content"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        blocks
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| {
                self.event(Event::ToolResult {
                    call_id: b["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                    ok: !b["is_error"].as_bool().unwrap_or(false),
                    summary: first_chars(&content_text(&b["content"]), SUMMARY_CHARS),
                })
            })
            .collect()
    }

    fn result(&mut self, v: &Value) -> Vec<UnitEvent> {
        let subtype = v["subtype"].as_str().unwrap_or_default();
        let ok = !subtype.starts_with("error") && !v["is_error"].as_bool().unwrap_or(false);
        let result = v["result"].as_str();
        let mut out = Vec::new();
        if !ok {
            let errors: Vec<&str> = v["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let error = if !errors.is_empty() {
                errors.join("; ")
            } else if let Some(r) = result.filter(|r| !r.is_empty()) {
                r.to_owned()
            } else if subtype.is_empty() {
                "the agent reported an error".to_owned()
            } else {
                format!("the agent ended with {subtype}")
            };
            out.extend(self.error(error));
        }
        if let Some(r) = result {
            self.outcome.reply = r.to_owned();
        }
        self.outcome.done = Some(ok);
        out.push(self.event(Event::Done {
            reply: self.outcome.reply.clone(),
            session_id: self.outcome.session_id.clone(),
            ok,
        }));
        out
    }
}

impl StreamParser for ClaudeParser {
    fn line(&mut self, line: &str) -> Vec<UnitEvent> {
        self.lines += 1;
        if line.trim().is_empty() {
            return Vec::new();
        }
        let v: Value = match serde_json::from_str(line.trim()) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return vec![unreadable(self.turn, self.lines, line, "not a JSON object")],
            Err(e) => return vec![unreadable(self.turn, self.lines, line, &e.to_string())],
        };
        if let Some(id) = v["session_id"].as_str().filter(|id| valid_session_id(id)) {
            self.outcome.session_id = Some(id.to_owned());
        }
        let subagent = !v["parent_tool_use_id"].is_null();
        match v["type"].as_str() {
            Some("stream_event") if !subagent => self.stream_event(&v),
            Some("assistant") => self.assistant(&v, subagent),
            Some("user") => self.user(&v),
            Some("result") if self.outcome.done.is_none() => self.result(&v),
            _ => Vec::new(),
        }
    }

    fn finish(&mut self, exit_code: Option<i32>) -> Vec<UnitEvent> {
        self.outcome.finish(self.turn, exit_code)
    }

    fn outcome(&self) -> &TurnOutcome {
        &self.outcome
    }
}

/// A tool result's content as text: a string, or the text of its blocks (one per line).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().unwrap_or_default().to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether an error message is about the model credential (so the client can say "fix the
/// credential" rather than "try again").
fn looks_like_auth(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "authentication",
        "invalid api key",
        "invalid x-api-key",
        "/login",
        "oauth token",
        "unauthorized",
        "401",
    ]
    .iter()
    .any(|needle| e.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn feed(lines: &[Value]) -> (Vec<Event>, TurnOutcome) {
        let mut p = ClaudeParser::new(TurnId(0));
        let mut events: Vec<Event> = Vec::new();
        for l in lines {
            events.extend(p.line(&l.to_string()).into_iter().map(|e| e.event));
        }
        events.extend(p.finish(Some(0)).into_iter().map(|e| e.event));
        (events, p.outcome().clone())
    }

    fn delta(text: &str) -> Value {
        json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}, "session_id": "s1", "parent_tool_use_id": null})
    }

    fn assistant(content: Value) -> Value {
        json!({"type": "assistant", "message": {"role": "assistant", "content": content},
            "session_id": "s1", "parent_tool_use_id": null})
    }

    fn result(subtype: &str, is_error: bool, text: Option<&str>) -> Value {
        let mut r =
            json!({"type": "result", "subtype": subtype, "is_error": is_error, "session_id": "s1"});
        if let Some(t) = text {
            r["result"] = json!(t);
        }
        r
    }

    fn done(reply: &str, ok: bool) -> Event {
        Event::Done {
            reply: reply.into(),
            session_id: Some("s1".into()),
            ok,
        }
    }

    #[test]
    fn partial_deltas_stream_and_the_full_text_is_not_repeated() {
        let (events, outcome) = feed(&[
            delta("Hel"),
            delta("lo"),
            assistant(json!([{"type": "text", "text": "Hello"}])),
            result("success", false, Some("Hello")),
        ]);
        assert_eq!(
            events,
            [
                Event::MessageDelta { text: "Hel".into() },
                Event::MessageDelta { text: "lo".into() },
                done("Hello", true)
            ]
        );
        assert_eq!(outcome.session_id.as_deref(), Some("s1"));
        assert_eq!(outcome.done, Some(true));
    }

    #[test]
    fn without_partial_messages_the_assistant_text_is_the_delta() {
        let (events, _) = feed(&[
            assistant(
                json!([{"type": "text", "text": "Hi"}, {"type": "thinking", "thinking": "…"}]),
            ),
            result("success", false, Some("Hi")),
        ]);
        assert_eq!(
            events,
            [Event::MessageDelta { text: "Hi".into() }, done("Hi", true)]
        );
    }

    #[test]
    fn tool_use_and_tool_result_pair_up() {
        let long = "x".repeat(200);
        let (events, _) = feed(&[
            assistant(
                json!([{"type": "tool_use", "id": "toolu_1", "name": "Write",
                "input": {"file_path": "/w/a.md", "content": "hi"}}]),
            ),
            json!({"type": "user", "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": long}]}, "session_id": "s1",
                "parent_tool_use_id": null}),
            json!({"type": "user", "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "EROFS: read-only file system"}, {"type": "image"}]}]},
                "session_id": "s1", "parent_tool_use_id": null}),
            result("success", false, Some("ok")),
        ]);
        assert_eq!(
            events[..3],
            [
                Event::ToolCall {
                    tool: "Write".into(),
                    args: json!({"file_path": "/w/a.md", "content": "hi"}),
                    call_id: "toolu_1".into()
                },
                Event::ToolResult {
                    call_id: "toolu_1".into(),
                    ok: true,
                    summary: "x".repeat(80)
                },
                Event::ToolResult {
                    call_id: "toolu_2".into(),
                    ok: false,
                    summary: "EROFS: read-only file system\n[image]".into()
                },
            ]
        );
    }

    #[rstest]
    #[case::max_turns(
        result("error_max_turns", true, None),
        "the agent ended with error_max_turns",
        false
    )]
    #[case::during_execution(json!({"type": "result", "subtype": "error_during_execution", "is_error": true,
        "session_id": "s1", "errors": ["No conversation found with session ID: abc"]}),
        "No conversation found with session ID: abc", false)]
    #[case::api_error_in_a_success(
        result("success", true, Some("API Error: 529 overloaded")),
        "API Error: 529 overloaded",
        false
    )]
    #[case::bad_key(
        result("success", true, Some("Invalid API key · Please run /login")),
        "Invalid API key · Please run /login",
        true
    )]
    fn error_results_are_reported_then_done(
        #[case] line: Value,
        #[case] error: &str,
        #[case] auth: bool,
    ) {
        let (events, outcome) = feed(&[line]);
        let want = if auth {
            Event::AuthError {
                error: error.into(),
            }
        } else {
            Event::ModelError {
                error: error.into(),
            }
        };
        assert_eq!(events[0], want);
        assert!(
            matches!(events[1], Event::Done { ok: false, .. }),
            "{events:?}"
        );
        assert_eq!(events.len(), 2);
        assert_eq!(outcome.done, Some(false));
        assert!(!outcome.produced_output);
    }

    #[test]
    fn an_api_error_is_reported_once() {
        let (events, _) = feed(&[
            json!({"type": "assistant", "error": "authentication_failed", "session_id": "s1",
                "parent_tool_use_id": null, "message": {"content": [{"type": "text", "text": "Invalid API key · Please run /login"}]}}),
            result("success", true, Some("Invalid API key · Please run /login")),
        ]);
        assert_eq!(
            events,
            [
                Event::AuthError {
                    error: "authentication_failed: Invalid API key · Please run /login".into()
                },
                done("Invalid API key · Please run /login", false)
            ]
        );
    }

    #[test]
    fn subagent_text_is_not_part_of_the_reply() {
        let (events, _) = feed(&[
            json!({"type": "stream_event", "parent_tool_use_id": "toolu_9", "event": {"type": "content_block_delta",
                "delta": {"type": "text_delta", "text": "inner"}}}),
            json!({"type": "assistant", "parent_tool_use_id": "toolu_9", "message": {"content": [
                {"type": "text", "text": "inner"}, {"type": "tool_use", "id": "t2", "name": "Read", "input": {}}]}}),
            result("success", false, Some("outer")),
        ]);
        assert_eq!(
            events,
            [
                Event::ToolCall {
                    tool: "Read".into(),
                    args: json!({}),
                    call_id: "t2".into()
                },
                Event::Done {
                    reply: "outer".into(),
                    session_id: Some("s1".into()),
                    ok: true
                }
            ]
        );
    }

    #[rstest]
    #[case::not_json("Warning: something odd", "expected value")]
    #[case::truncated(r#"{"type":"assistant","message":{"#, "EOF while parsing")]
    #[case::array("[1,2]", "not a JSON object")]
    #[case::string(r#""hi""#, "not a JSON object")]
    fn unreadable_lines_become_model_errors(#[case] line: &str, #[case] problem: &str) {
        let mut p = ClaudeParser::new(TurnId(2));
        let events = p.line(line);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].turn_id, TurnId(2));
        let Event::ModelError { error } = &events[0].event else {
            panic!("{events:?}")
        };
        assert!(error.starts_with("line 1 of the agent's output"), "{error}");
        assert!(error.contains(problem), "{error}");
    }

    #[rstest]
    #[case::unknown_type(json!({"type": "pr-link", "url": "x"}))]
    #[case::no_type(json!({"hello": 1}))]
    #[case::system(json!({"type": "system", "subtype": "api_retry", "attempt": 1}))]
    #[case::other_stream_events(json!({"type": "stream_event", "event": {"type": "content_block_delta",
        "delta": {"type": "input_json_delta", "partial_json": "{\"a"}}}))]
    #[case::wrong_shapes(json!({"type": "assistant", "message": {"content": "a string"}}))]
    #[case::wrong_shapes_user(json!({"type": "user", "message": {"content": "a prompt"}}))]
    #[case::tool_use_without_fields(json!({"type": "user", "message": {"content": [{"type": "tool_result"}]}}))]
    fn odd_but_valid_lines_never_panic(#[case] line: Value) {
        let mut p = ClaudeParser::new(TurnId(0));
        for e in p.line(&line.to_string()) {
            assert!(!matches!(
                e.event,
                Event::ModelError { .. } | Event::Done { .. }
            ));
        }
    }

    #[test]
    fn a_session_id_from_init_survives_a_missing_result() {
        let (events, outcome) = feed(&[
            json!({"type": "system", "subtype": "init", "session_id": "s1", "tools": []}),
            delta("half a repl"),
        ]);
        assert!(
            matches!(&events[1], Event::ModelError { error } if error.contains("without reporting"))
        );
        assert_eq!(
            events[2],
            Event::Done {
                reply: "half a repl".into(),
                session_id: Some("s1".into()),
                ok: false
            }
        );
        assert_eq!(outcome.session_id.as_deref(), Some("s1"));
    }

    #[test]
    fn an_invalid_session_id_is_never_taken() {
        let (_, outcome) =
            feed(&[json!({"type": "system", "subtype": "init", "session_id": "--rm -rf"})]);
        assert_eq!(outcome.session_id, None);
    }
}
