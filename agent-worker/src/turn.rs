//! One turn: run the agent CLI once, turn its output into unit events, and when a resume fails
//! drop the session and retry once fresh (SPEC §4).
//!
//! A failed resume is recognised as a run that exits non-zero before producing any reply text or
//! tool call. Its events are held back, not streamed: the client sees one clean turn, preceded
//! by a `note` saying the session could not be resumed.

use std::io;

use crate::argv::{ArgTemplate, ArgValues, OptionalArgs, render};
use crate::events::{Event, TurnId, UnitEvent, first_chars};
use crate::stream::{TurnOutcome, parser};
use vexa_core::pod::StreamFormat;

/// The longest commit message subject.
const SUBJECT_CHARS: usize = 72;

/// A line of the agent's standard output, as [`AgentProcess::run`] passes it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// A whole line (without its end).
    Line(&'a str),
    /// A line over the cap, discarded as it streamed: only its length is known.
    Cut {
        /// Its length in bytes.
        bytes: usize,
        /// The cap it was over.
        cap: usize,
    },
}

/// Runs the agent CLI: calls `on_line` with each line of its standard output, returns its exit
/// code (`None` when killed by a signal).
pub trait AgentProcess {
    /// Runs `argv` (program first) to completion.
    fn run(
        &mut self,
        argv: &[String],
        on_line: &mut dyn FnMut(Output<'_>),
    ) -> io::Result<Option<i32>>;
}

/// What a turn needs from the runner.
#[derive(Debug, Clone, Copy)]
pub struct TurnSpec<'a> {
    /// The argv template.
    pub argv: &'a [ArgTemplate],
    /// The optional groups.
    pub optional_argv: &'a [OptionalArgs],
    /// The output format.
    pub stream_format: StreamFormat,
}

/// How a turn went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnReport {
    /// The parser's summary of the run that counted.
    pub outcome: TurnOutcome,
    /// Whether a stored session was given up (the caller removes the session file).
    pub resume_failed: bool,
}

/// Runs turn `turn` with `values` (whose `session_id`, if set, is resumed), sending each event to
/// `emit` as it happens.
pub fn run_turn(
    agent: &mut dyn AgentProcess,
    spec: TurnSpec<'_>,
    turn: TurnId,
    values: &ArgValues,
    emit: &mut dyn FnMut(UnitEvent),
) -> io::Result<TurnReport> {
    let resuming = values.session_id.as_deref().filter(|s| !s.is_empty());
    let (outcome, held) = attempt(agent, spec, turn, values, resuming.is_some(), emit)?;
    let Some(id) = resuming.filter(|_| held.is_some()) else {
        // Not resuming, or the resume worked: whatever was held back is the turn.
        held.into_iter().flatten().for_each(&mut *emit);
        return Ok(TurnReport {
            outcome,
            resume_failed: false,
        });
    };
    let why = held
        .iter()
        .flatten()
        .find_map(|e| match &e.event {
            Event::ModelError { error } | Event::AuthError { error } => {
                Some(first_chars(error, 200))
            }
            _ => None,
        })
        .unwrap_or_else(|| "the agent exited with an error".to_owned());
    emit(UnitEvent::new(
        turn,
        Event::Note {
            note: format!("could not resume session {id} ({why}); starting a fresh session"),
        },
    ));
    let fresh = ArgValues {
        session_id: None,
        ..values.clone()
    };
    let (outcome, held) = attempt(agent, spec, turn, &fresh, false, emit)?;
    held.into_iter().flatten().for_each(&mut *emit);
    Ok(TurnReport {
        outcome,
        resume_failed: true,
    })
}

/// Runs the CLI once. With `hold`, events are held back until the run produces output; the
/// second value is `Some(held events)` only when the run failed before producing any.
fn attempt(
    agent: &mut dyn AgentProcess,
    spec: TurnSpec<'_>,
    turn: TurnId,
    values: &ArgValues,
    hold: bool,
    emit: &mut dyn FnMut(UnitEvent),
) -> io::Result<(TurnOutcome, Option<Vec<UnitEvent>>)> {
    let argv = render(spec.argv, spec.optional_argv, values);
    let mut p = parser(spec.stream_format, turn);
    let mut gate = Gate {
        holding: hold,
        held: Vec::new(),
    };
    let code = agent.run(&argv, &mut |output| {
        let events = match output {
            Output::Line(line) => p.line(line),
            // Never the line itself: it is too long to stream, and its start alone may be
            // neither valid JSON nor safe to show.
            Output::Cut { bytes, cap } => vec![UnitEvent::new(
                turn,
                Event::Note {
                    note: format!(
                        "an output line of the agent was cut: {bytes} bytes, over the {cap}-byte cap; it was discarded"
                    ),
                },
            )],
        };
        gate.pass(events, p.outcome().produced_output, emit);
    })?;
    let closing = p.finish(code);
    let outcome = p.outcome().clone();
    if gate.holding && code != Some(0) && !outcome.produced_output {
        gate.held.extend(closing);
        return Ok((outcome, Some(gate.held)));
    }
    gate.pass(closing, true, emit);
    Ok((outcome, None))
}

/// Holds events back while `holding`, releasing them all once the run produces output.
struct Gate {
    holding: bool,
    held: Vec<UnitEvent>,
}

impl Gate {
    fn pass(&mut self, events: Vec<UnitEvent>, produced: bool, emit: &mut dyn FnMut(UnitEvent)) {
        if self.holding && produced {
            self.holding = false;
            self.held.drain(..).for_each(&mut *emit);
        }
        if self.holding {
            self.held.extend(events);
        } else {
            events.into_iter().for_each(&mut *emit);
        }
    }
}

/// The commit message of a turn: the first non-blank line of the reply, at most 72
/// characters, or a fallback naming the dispatch and turn.
pub fn commit_message(reply: &str, dispatch_id: &str, turn: TurnId) -> String {
    reply
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| {
            let subject = first_chars(l, SUBJECT_CHARS);
            if subject.len() < l.len() {
                format!("{}…", first_chars(l, SUBJECT_CHARS - 1))
            } else {
                subject
            }
        })
        .unwrap_or_else(|| format!("vexa: {dispatch_id} turn {turn}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Answers each run with the next scripted (lines, exit code), recording the argv.
    #[derive(Default)]
    struct Scripted {
        runs: Vec<(Vec<String>, Option<i32>)>,
        seen: Vec<Vec<String>>,
    }

    impl AgentProcess for Scripted {
        fn run(
            &mut self,
            argv: &[String],
            on_line: &mut dyn FnMut(Output<'_>),
        ) -> io::Result<Option<i32>> {
            self.seen.push(argv.to_vec());
            let (lines, code) = self.runs.remove(0);
            lines.iter().for_each(|l| on_line(Output::Line(l)));
            Ok(code)
        }
    }

    fn jsonl(lines: &[&str], code: i32) -> (Vec<String>, Option<i32>) {
        (lines.iter().map(|s| (*s).to_owned()).collect(), Some(code))
    }

    fn templates() -> (Vec<ArgTemplate>, Vec<OptionalArgs>) {
        let t = |s: &str| ArgTemplate::parse(s).unwrap();
        (
            vec![t("agent"), t("${prompt}")],
            vec![OptionalArgs {
                when: crate::argv::Placeholder::SessionId,
                argv: vec![t("--resume"), t("${sessionId}")],
            }],
        )
    }

    fn go(agent: &mut Scripted, session: Option<&str>) -> (Vec<Event>, TurnReport) {
        let (argv, opt) = templates();
        let spec = TurnSpec {
            argv: &argv,
            optional_argv: &opt,
            stream_format: StreamFormat::UnitJsonl,
        };
        let values = ArgValues {
            prompt: "hi".into(),
            session_id: session.map(Into::into),
            ..ArgValues::default()
        };
        let mut events = Vec::new();
        let report = run_turn(agent, spec, TurnId(1), &values, &mut |e| {
            assert_eq!(e.turn_id, TurnId(1));
            events.push(e.event);
        })
        .unwrap();
        (events, report)
    }

    const OK: &[&str] = &[
        r#"{"type":"message-delta","text":"Hello"}"#,
        r#"{"type":"done","reply":"Hello","sessionId":"s-2","ok":true}"#,
    ];
    const NO_SESSION: &[&str] =
        &[r#"{"type":"model-error","error":"No conversation found with session ID: s-1"}"#];

    #[test]
    fn a_fresh_turn_streams_as_it_comes() {
        let mut agent = Scripted {
            runs: vec![jsonl(OK, 0)],
            ..Scripted::default()
        };
        let (events, report) = go(&mut agent, None);
        assert_eq!(agent.seen, [["agent", "hi"]]);
        assert_eq!(events.len(), 2);
        assert!(!report.resume_failed);
        assert_eq!(report.outcome.session_id.as_deref(), Some("s-2"));
    }

    #[test]
    fn a_failed_resume_is_dropped_and_retried_fresh_once() {
        let mut agent = Scripted {
            runs: vec![jsonl(NO_SESSION, 1), jsonl(OK, 0)],
            ..Scripted::default()
        };
        let (events, report) = go(&mut agent, Some("s-1"));
        assert_eq!(
            agent.seen,
            [vec!["agent", "hi", "--resume", "s-1"], vec!["agent", "hi"]]
        );
        assert!(report.resume_failed);
        assert!(
            matches!(&events[0], Event::Note { note } if note.contains("could not resume session s-1 (No conversation found"))
        );
        assert_eq!(
            events[1..],
            [
                Event::MessageDelta {
                    text: "Hello".into()
                },
                Event::Done {
                    reply: "Hello".into(),
                    session_id: Some("s-2".into()),
                    ok: true
                }
            ]
        );
    }

    #[test]
    fn a_fresh_retry_that_fails_too_is_reported_and_not_retried_again() {
        let mut agent = Scripted {
            runs: vec![
                jsonl(NO_SESSION, 1),
                jsonl(&[r#"{"type":"model-error","error":"down"}"#], 1),
            ],
            ..Scripted::default()
        };
        let (events, report) = go(&mut agent, Some("s-1"));
        assert_eq!(agent.seen.len(), 2);
        assert!(report.resume_failed);
        assert!(matches!(&events[1], Event::ModelError { error } if error == "down"));
        assert!(matches!(events.last(), Some(Event::Done { ok: false, .. })));
    }

    #[test]
    fn a_resume_that_produced_output_is_not_retried_even_if_it_fails_later() {
        let mut agent = Scripted {
            runs: vec![jsonl(&[r#"{"type":"message-delta","text":"par"}"#], 2)],
            ..Scripted::default()
        };
        let (events, report) = go(&mut agent, Some("s-1"));
        assert_eq!(agent.seen.len(), 1);
        assert!(!report.resume_failed);
        assert_eq!(events[0], Event::MessageDelta { text: "par".into() });
        assert!(matches!(&events[1], Event::ModelError { error } if error.contains("status 2")));
    }

    #[rstest]
    #[case("Wrote notes/hello.md.\nMore.", "Wrote notes/hello.md.")]
    #[case("\n  \n  Trimmed  \n", "Trimmed")]
    #[case("", "vexa: team-a/d1 turn t3")]
    fn commit_messages(#[case] reply: &str, #[case] want: &str) {
        assert_eq!(commit_message(reply, "team-a/d1", TurnId(3)), want);
    }

    #[test]
    fn long_commit_subjects_are_cut() {
        let m = commit_message(&"é".repeat(100), "x/y", TurnId(0));
        assert_eq!(m.chars().count(), SUBJECT_CHARS);
        assert!(m.ends_with('…'));
    }
}
