//! The interface of the stream-format parsers: the agent CLI's standard output goes in line by
//! line, unit events come out. A parser never panics and never fails: whatever it cannot read
//! becomes an error event on the stream.

use crate::claude::ClaudeParser;
use crate::events::{Event, TurnId, UnitEvent, first_chars};
use crate::jsonl::JsonlParser;
use vexa_core::pod::StreamFormat;

/// How many characters of an unreadable line an error event quotes.
const EXCERPT_CHARS: usize = 120;

/// Parses one turn's output of the agent CLI into unit events.
pub trait StreamParser: std::fmt::Debug + Send {
    /// The events one line of output (without its newline) stands for, in order.
    fn line(&mut self, line: &str) -> Vec<UnitEvent>;

    /// The events that close the turn once the CLI has exited (`exit_code` is `None` when it was
    /// killed by a signal): a `done` if the CLI never reported one.
    fn finish(&mut self, exit_code: Option<i32>) -> Vec<UnitEvent>;

    /// What the turn has produced so far.
    fn outcome(&self) -> &TurnOutcome;
}

/// The parser for `format`, for turn `turn`.
pub fn parser(format: StreamFormat, turn: TurnId) -> Box<dyn StreamParser> {
    match format {
        StreamFormat::ClaudeStreamJson => Box::new(ClaudeParser::new(turn)),
        StreamFormat::UnitJsonl => Box::new(JsonlParser::new(turn)),
    }
}

/// What a turn produced, for the worker's next steps (commit message, session file, retry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnOutcome {
    /// The reply: the `done` event's, else the text streamed so far.
    pub reply: String,
    /// The agent CLI's session id, from the last line that carried one.
    pub session_id: Option<String>,
    /// The `done` event's `ok`, once it has been emitted.
    pub done: Option<bool>,
    /// Whether any reply text or tool call was streamed (a resume that failed streams neither).
    pub produced_output: bool,
}

impl TurnOutcome {
    /// Closes the turn: when no `done` was emitted, a `model-error` saying so and a `done` with
    /// `ok: false` and what was streamed as its reply.
    pub(crate) fn finish(&mut self, turn: TurnId, exit_code: Option<i32>) -> Vec<UnitEvent> {
        if self.done.is_some() {
            return Vec::new();
        }
        let how = match exit_code {
            Some(0) => "exited".to_owned(),
            Some(code) => format!("exited with status {code}"),
            None => "was killed".to_owned(),
        };
        self.done = Some(false);
        vec![
            UnitEvent::new(
                turn,
                Event::ModelError {
                    error: format!("the agent {how} without reporting the end of its turn"),
                },
            ),
            UnitEvent::new(
                turn,
                Event::Done {
                    reply: self.reply.clone(),
                    session_id: self.session_id.clone(),
                    ok: false,
                },
            ),
        ]
    }
}

/// The error event for line `number` that could not be read.
pub(crate) fn unreadable(turn: TurnId, number: usize, line: &str, problem: &str) -> UnitEvent {
    let excerpt = first_chars(line.trim(), EXCERPT_CHARS);
    let more = if line.trim().chars().nth(EXCERPT_CHARS).is_some() {
        "…"
    } else {
        ""
    };
    UnitEvent::new(
        turn,
        Event::ModelError {
            error: format!(
                "line {number} of the agent's output is unreadable ({problem}): {excerpt}{more}"
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Some(0), "the agent exited without")]
    #[case(Some(2), "exited with status 2")]
    #[case(None, "was killed")]
    fn a_turn_without_done_is_closed_as_failed(#[case] code: Option<i32>, #[case] says: &str) {
        let mut outcome = TurnOutcome {
            reply: "partial".into(),
            session_id: Some("s".into()),
            ..TurnOutcome::default()
        };
        let events = outcome.finish(TurnId(1), code);
        assert!(
            matches!(&events[0].event, Event::ModelError { error } if error.contains(says)),
            "{events:?}"
        );
        assert_eq!(
            events[1],
            UnitEvent::new(
                TurnId(1),
                Event::Done {
                    reply: "partial".into(),
                    session_id: Some("s".into()),
                    ok: false
                }
            )
        );
        assert!(outcome.finish(TurnId(1), code).is_empty(), "only once");
    }

    #[test]
    fn long_lines_are_quoted_short() {
        let e = unreadable(TurnId(0), 7, &"x".repeat(500), "not JSON");
        let Event::ModelError { error } = e.event else {
            panic!("{e:?}")
        };
        assert!(error.starts_with("line 7 of the agent's output is unreadable (not JSON): xxx"));
        assert!(error.ends_with("x…"));
        assert!(error.len() < 200);
    }
}
