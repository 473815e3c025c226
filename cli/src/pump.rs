//! Printing a dispatch's stream while it runs: read its log from a [`LogSource`] (the streams
//! API), render each event, and stop at the end of the awaited turn, when the log says the
//! dispatch has ended (every entry was sent), or when the user interrupts. A log that breaks off
//! is opened again after the last entry read, so nothing is missed or printed twice.

use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use vexa_stream::api::LogLine;
use vexa_stream::follow::EntryId;
use vexa_stream::{Event, TurnId};

use crate::error::CliError;
use crate::render::{TextRenderer, json_error_line, json_line};
use crate::safe;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Reply text and compact lines.
    Text,
    /// One JSON object per entry, with its id.
    Json,
}

/// Lines of a log, or why it broke off.
pub type Lines = BoxStream<'static, Result<LogLine, String>>;

/// Why a log could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Trying again cannot help (refused, not found): the command fails with this.
    Fatal(CliError),
    /// It may work in a moment (the operator restarting, a network blip).
    Retry(String),
}

/// Where a dispatch's log comes from.
pub trait LogSource {
    /// The log after `from`, following the run until it ends.
    fn open(&self, from: EntryId) -> impl Future<Output = Result<Lines, OpenError>>;
}

/// How a broken log is opened again.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The first wait; doubled after each failure.
    pub min_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// Give up after failing this long without reading anything.
    pub give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// What to print and when to stop.
#[derive(Debug, Clone)]
pub struct Pump {
    /// The dispatch id, for messages.
    pub dispatch: String,
    /// Print the entries after this one.
    pub from: EntryId,
    /// Events of this turn and earlier ones are not printed (a turn that was in progress when
    /// ours was sent).
    pub skip_through: Option<TurnId>,
    /// Stop at the first printed `turn-complete`; otherwise only when the dispatch has ended.
    pub stop_after_turn: bool,
    /// How to print.
    pub format: Format,
    /// How to reopen a broken log.
    pub retry: Retry,
}

/// Why printing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The awaited turn completed.
    Turn(TurnId),
    /// The dispatch ended (its phase, or `deleted`) and everything it wrote was printed.
    Dispatch(String),
    /// The user interrupted.
    Interrupted,
}

/// The result of [`Pump::run`].
#[derive(Debug)]
pub struct Pumped {
    /// The id of the last entry read (printed or skipped): resume after it.
    pub last: EntryId,
    /// Why it stopped.
    pub ended: Ended,
}

impl Pump {
    /// Prints the log to `out` until it is over. `interrupt` resolves when the user asks to
    /// stop (Ctrl-C).
    pub async fn run<W: Write>(
        self,
        source: &impl LogSource,
        interrupt: impl Future<Output = ()>,
        out: &mut W,
    ) -> Result<Pumped, CliError> {
        let mut interrupt = pin!(interrupt);
        let mut text = TextRenderer::new(!self.stop_after_turn);
        let mut last = self.from;
        let mut backoff = self.retry.min_backoff;
        let mut failing_since: Option<Instant> = None;
        loop {
            let opened = tokio::select! {
                biased;
                () = &mut interrupt => {
                    self.write(out, &text.end_line())?;
                    return Ok(Pumped { last, ended: Ended::Interrupted });
                }
                opened = source.open(last) => opened,
            };
            let broke = match opened {
                Ok(mut lines) => loop {
                    let item = tokio::select! {
                        biased;
                        () = &mut interrupt => {
                            self.write(out, &text.end_line())?;
                            return Ok(Pumped { last, ended: Ended::Interrupted });
                        }
                        item = lines.next() => item,
                    };
                    match item {
                        Some(Ok(LogLine::Event(id, unit))) => {
                            // Never twice, whatever a reopened log repeats.
                            if id <= last {
                                continue;
                            }
                            last = id;
                            failing_since = None;
                            backoff = self.retry.min_backoff;
                            if self.skip_through.is_some_and(|t| unit.turn_id <= t) {
                                continue;
                            }
                            let shown = match self.format {
                                Format::Text => text.event(&unit),
                                Format::Json => json_line(id, &unit),
                            };
                            self.write(out, &shown)?;
                            if self.stop_after_turn && matches!(unit.event, Event::TurnComplete {})
                            {
                                self.write(out, &text.end_line())?;
                                return Ok(Pumped {
                                    last,
                                    ended: Ended::Turn(unit.turn_id),
                                });
                            }
                        }
                        Some(Ok(LogLine::Malformed(id, reason))) => {
                            if id <= last {
                                continue;
                            }
                            last = id;
                            let shown = match self.format {
                                Format::Text => text.malformed(id, &reason),
                                Format::Json => json_error_line(id, &reason),
                            };
                            self.write(out, &shown)?;
                        }
                        Some(Ok(LogLine::End(phase))) => {
                            self.write(out, &text.end_line())?;
                            return Ok(Pumped {
                                last,
                                ended: Ended::Dispatch(phase),
                            });
                        }
                        Some(Ok(LogLine::Idle)) => {}
                        Some(Err(e)) => break e,
                        None => break "the log ended before the dispatch did".to_owned(),
                    }
                },
                Err(OpenError::Fatal(e)) => {
                    self.write(out, &text.end_line())?;
                    return Err(e);
                }
                Err(OpenError::Retry(e)) => e,
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.retry.give_up_after {
                self.write(out, &text.end_line())?;
                return Err(CliError::Follow {
                    message: format!(
                        "the stream of {} could not be read for {:?}: {broke}",
                        self.dispatch,
                        since.elapsed()
                    ),
                    last,
                    dispatch: self.dispatch.clone(),
                });
            }
            tracing::warn!(dispatch = %self.dispatch, %last, error = %broke, "the stream broke off; reopening after the last entry");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }

    /// Writes `s` with every control sequence neutralised: it is the agent's output.
    fn write(&self, out: &mut impl Write, s: &str) -> Result<(), CliError> {
        if !s.is_empty() {
            let safe = match self.format {
                Format::Text => safe::for_terminal(s),
                Format::Json => safe::json_for_terminal(s),
            };
            out.write_all(safe.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    }
}
