//! Printing a dispatch's stream while it runs: follow `out`, render each event, and stop at the
//! end of the awaited turn, when the dispatch has ended and its stream is drained, or when the
//! user interrupts. Kubernetes is not involved: the end of the dispatch comes in as a future.

use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::{AsyncConnectionConfig, Client};
use vexa_stream::follow::{EntryId, FollowError, FollowOptions, follow_with, last_id};
use vexa_stream::{Event, TurnId, UnitEvent};

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

/// What to print and when to stop.
#[derive(Debug, Clone)]
pub struct Pump {
    /// The dispatch id, for messages.
    pub dispatch: String,
    /// The `out` stream.
    pub topic: String,
    /// Print the entries after this one.
    pub from: EntryId,
    /// Events of this turn and earlier ones are not printed (a turn that was in progress when
    /// ours was sent).
    pub skip_through: Option<TurnId>,
    /// Stop at the first printed `turn-complete`; otherwise only when the dispatch has ended.
    pub stop_after_turn: bool,
    /// How to print.
    pub format: Format,
    /// How to read and reconnect.
    pub options: FollowOptions,
}

/// Why printing stopped.
#[derive(Debug)]
pub enum Ended<F> {
    /// The awaited turn completed.
    Turn(TurnId),
    /// The dispatch ended and everything it wrote was printed; carries what the `ended` future
    /// gave.
    Dispatch(F),
    /// The user interrupted.
    Interrupted,
}

/// The result of [`Pump::run`].
#[derive(Debug)]
pub struct Pumped<F> {
    /// The id of the last entry read (printed or skipped): resume after it.
    pub last: EntryId,
    /// Why it stopped.
    pub ended: Ended<F>,
}

impl Pump {
    /// Prints the stream to `out` until it is over. `ended` resolves once the dispatch will
    /// write nothing more; the stream is then drained up to its last entry. `interrupt`
    /// resolves when the user asks to stop (Ctrl-C).
    pub async fn run<F: Future, W: Write>(
        self,
        redis: &Client,
        ended: F,
        interrupt: impl Future<Output = ()>,
        out: &mut W,
    ) -> Result<Pumped<F::Output>, CliError> {
        let mut events = pin!(follow_with::<UnitEvent>(
            redis.clone(),
            self.topic.clone(),
            self.from,
            self.options.clone(),
        ));
        let mut ended = pin!(ended);
        let mut interrupt = pin!(interrupt);
        let mut text = TextRenderer::new(!self.stop_after_turn);
        let mut last = self.from;
        // Once the dispatch has ended: what `ended` gave, and the stream's last entry then.
        let mut over: Option<(F::Output, Option<EntryId>)> = None;
        loop {
            if let Some((outcome, end)) = over.take() {
                if end.is_none_or(|end| last >= end) {
                    write(out, self.format, &text.end_line())?;
                    return Ok(Pumped {
                        last,
                        ended: Ended::Dispatch(outcome),
                    });
                }
                over = Some((outcome, end));
            }
            tokio::select! {
                biased;
                () = &mut interrupt => {
                    write(out, self.format, &text.end_line())?;
                    return Ok(Pumped { last, ended: Ended::Interrupted });
                }
                outcome = &mut ended, if over.is_none() => {
                    let end = self.stream_end(redis, last).await?;
                    over = Some((outcome, end));
                }
                item = events.next() => match item {
                    Some(Ok((id, unit))) => {
                        last = id;
                        if self.skip_through.is_some_and(|t| unit.turn_id <= t) {
                            continue;
                        }
                        let shown = match self.format {
                            Format::Text => text.event(&unit),
                            Format::Json => json_line(id, &unit),
                        };
                        write(out, self.format, &shown)?;
                        if self.stop_after_turn && matches!(unit.event, Event::TurnComplete {}) {
                            write(out, self.format, &text.end_line())?;
                            return Ok(Pumped { last, ended: Ended::Turn(unit.turn_id) });
                        }
                    }
                    Some(Err(FollowError::Malformed { id, reason, .. })) => {
                        last = id;
                        let shown = match self.format {
                            Format::Text => text.malformed(id, &reason),
                            Format::Json => json_error_line(id, &reason),
                        };
                        write(out, self.format, &shown)?;
                    }
                    Some(Err(source)) => {
                        write(out, self.format, &text.end_line())?;
                        return Err(CliError::Follow { source: Box::new(source), last, dispatch: self.dispatch.clone() });
                    }
                    None => {
                        // The follow only ends after a fatal error, which came first.
                        write(out, self.format, &text.end_line())?;
                        return Err(CliError::Follow {
                            source: Box::new(FollowError::Redis {
                                addr: redis.get_connection_info().addr().to_string(),
                                topic: self.topic.clone(),
                                source: redis::RedisError::from((
                                    redis::ErrorKind::Client,
                                    "the follow ended",
                                )),
                            }),
                            last,
                            dispatch: self.dispatch.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The stream's last entry once the dispatch has ended, retried like the follow itself.
    async fn stream_end(&self, redis: &Client, last: EntryId) -> Result<Option<EntryId>, CliError> {
        let started = Instant::now();
        let mut backoff = self.options.min_backoff;
        loop {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(5)))
                .set_response_timeout(Some(Duration::from_secs(5)));
            let attempt = async {
                let mut conn = redis
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                last_id(&mut conn, &self.topic).await
            };
            match attempt.await {
                Ok(end) => return Ok(end),
                Err(e)
                    if self
                        .options
                        .give_up_after
                        .is_some_and(|limit| started.elapsed() >= limit) =>
                {
                    return Err(CliError::Follow {
                        source: Box::new(FollowError::Unreachable {
                            addr: redis.get_connection_info().addr().to_string(),
                            topic: self.topic.clone(),
                            last,
                            failing_for: started.elapsed(),
                            source: e,
                        }),
                        last,
                        dispatch: self.dispatch.clone(),
                    });
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
    }
}

/// Writes `s` with every control sequence neutralised: it is the agent's output.
fn write(out: &mut impl Write, format: Format, s: &str) -> Result<(), CliError> {
    if !s.is_empty() {
        let safe = match format {
            Format::Text => safe::for_terminal(s),
            Format::Json => safe::json_for_terminal(s),
        };
        out.write_all(safe.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
