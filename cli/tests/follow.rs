//! `kubectl vexa follow` without a cluster: the pump that prints a dispatch's log, fed by the
//! streams API's server side (`vexa_stream::api::log_lines`, without HTTP) over a real
//! redis-server that restarts in the middle, and by a log that breaks off (a dropped
//! connection). The end of the dispatch is a phase the test sets; the output is compared with
//! golden text and JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use vexa_cli::pump::{Ended, Format, Lines, LogSource, OpenError, Pump, Retry};
use vexa_stream::api::log_lines;
use vexa_stream::follow::{EntryId, FollowOptions};
use vexa_stream::testing::RedisServer;
use vexa_stream::{Event, TurnId, UnitEvent};

const DISPATCH: &str = "team-a/agent-alice-chat-main";
const TOPIC: &str = "unit:team-a/agent-alice-chat-main:out";
const WAIT: Duration = Duration::from_secs(30);

/// Standard output, shared so the test can watch what has been printed so far.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    async fn wait_for(&self, words: &str) {
        tokio::time::timeout(WAIT, async {
            while !self.text().contains(words) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{words:?} never appeared; the screen:\n{}", self.text()));
    }
}

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log as the streams API serves it, straight from Redis; `phase` is what the Dispatch
/// says once it has ended. With `break_after`, every opening of the log breaks off after that
/// many lines, like a dropped connection.
#[derive(Clone)]
struct Source {
    client: redis::Client,
    phase: watch::Receiver<Option<String>>,
    break_after: Option<usize>,
    opened: Arc<AtomicUsize>,
}

impl Source {
    fn new(url: &str, phase: watch::Receiver<Option<String>>) -> Self {
        Self {
            client: redis::Client::open(url).unwrap(),
            phase,
            break_after: None,
            opened: Arc::default(),
        }
    }

    /// A source whose dispatch has ended already (`succeeded`).
    fn ended(url: &str) -> Self {
        Self::new(url, watch::channel(Some("succeeded".to_owned())).1)
    }

    /// A source whose dispatch runs on (its phase never changes).
    fn running(url: &str) -> Self {
        let (tx, rx) = watch::channel(None);
        std::mem::forget(tx);
        Self::new(url, rx)
    }
}

impl LogSource for Source {
    async fn open(&self, from: EntryId) -> Result<Lines, OpenError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let phase = self.phase.clone();
        let options = FollowOptions {
            block: Duration::from_millis(500),
            // Small batches: a restart lands between what was read and what is still to read.
            count: 2,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            give_up_after: Some(WAIT),
        };
        let lines = log_lines(
            self.client.clone(),
            TOPIC.into(),
            from,
            options,
            move || {
                let ended = phase.borrow().clone();
                async move { ended }
            },
        )
        .map(Ok);
        Ok(match self.break_after {
            Some(n) => lines.take(n).boxed(),
            None => lines.boxed(),
        })
    }
}

fn pump(
    from: EntryId,
    skip_through: Option<TurnId>,
    stop_after_turn: bool,
    format: Format,
) -> Pump {
    Pump {
        dispatch: DISPATCH.into(),
        from,
        skip_through,
        stop_after_turn,
        format,
        retry: Retry {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            give_up_after: WAIT,
        },
    }
}

fn ev(turn: u32, event: Event) -> UnitEvent {
    UnitEvent::new(TurnId(turn), event)
}

fn delta(turn: u32, text: &str) -> UnitEvent {
    ev(turn, Event::MessageDelta { text: text.into() })
}

/// Turn t0 up to the tool call.
fn first_half() -> Vec<UnitEvent> {
    vec![
        delta(0, "I'll write "),
        delta(0, "the note."),
        ev(
            0,
            Event::ToolCall {
                tool: "Write".into(),
                args: json!({"file_path": "notes/hello.md"}),
                call_id: "toolu_1".into(),
            },
        ),
    ]
}

/// The rest of t0, and a second turn.
fn second_half() -> Vec<UnitEvent> {
    vec![
        ev(
            0,
            Event::ToolResult {
                call_id: "toolu_1".into(),
                ok: true,
                summary: "File created successfully at: notes/hello.md".into(),
            },
        ),
        delta(0, "Done."),
        ev(
            0,
            Event::Done {
                reply: "I'll write the note.Done.".into(),
                session_id: Some("s-1".into()),
                ok: true,
            },
        ),
        ev(
            0,
            Event::Commit {
                sha: "0123456789abcdef0123456789abcdef01234567".into(),
            },
        ),
        ev(0, Event::TurnComplete {}),
        delta(1, "Hello again."),
        ev(
            1,
            Event::Done {
                reply: "Hello again.".into(),
                session_id: Some("s-1".into()),
                ok: true,
            },
        ),
        ev(1, Event::TurnComplete {}),
    ]
}

const GOLDEN_TEXT: &str = "I'll write the note.\n\
    [tool] Write {\"file_path\":\"notes/hello.md\"}\n\
    [tool] Write ok: File created successfully at: notes/hello.md\n\
    Done.\n\
    [commit] 0123456789ab\n\
    [turn t0 complete]\n\
    Hello again.\n\
    [turn t1 complete]\n";

async fn publish(url: &str, events: &[UnitEvent]) -> Vec<EntryId> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for e in events {
        let id: String = redis::cmd("XADD")
            .arg(TOPIC)
            .arg("*")
            .arg("event")
            .arg(e.to_json())
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id.parse().unwrap());
    }
    ids
}

async fn restart(server: RedisServer) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart();
        server
    })
    .await
    .unwrap()
}

/// Follows from the start while the dispatch runs: the first half is printed, Redis restarts,
/// the second half is written, the dispatch ends. Returns the screen, how the pump ended, the
/// ids written.
async fn follow_across_a_restart(format: Format) -> (String, Ended, EntryId, Vec<EntryId>) {
    let server = RedisServer::start();
    let url = server.url();
    let mut ids = publish(&url, &first_half()).await;
    let (end_tx, end_rx) = watch::channel(None);
    let source = Source::new(&url, end_rx);
    let screen = Screen::default();
    let mut out = screen.clone();
    let follow =
        pump(EntryId::ZERO, None, false, format).run(&source, std::future::pending(), &mut out);
    let drive = async {
        screen
            .wait_for(match format {
                Format::Text => "[tool] Write",
                Format::Json => "tool-call",
            })
            .await;
        let server = restart(server).await;
        ids.extend(publish(&url, &second_half()).await);
        // The run ends as soon as its last event is written: the follow must still print
        // everything up to that event.
        end_tx.send(Some("succeeded".into())).unwrap();
        server
    };
    let (pumped, _server) = tokio::time::timeout(WAIT, async { tokio::join!(follow, drive) })
        .await
        .expect("the follow ended");
    let pumped = pumped.unwrap();
    (screen.text(), pumped.ended, pumped.last, ids)
}

#[tokio::test]
async fn follow_prints_every_event_once_across_a_redis_restart() {
    let (text, ended, last, ids) = follow_across_a_restart(Format::Text).await;
    assert_eq!(text, GOLDEN_TEXT);
    assert_eq!(ended, Ended::Dispatch("succeeded".into()));
    assert_eq!(last, *ids.last().unwrap());
}

#[tokio::test]
async fn follow_json_gives_each_entry_once_with_its_id_across_a_redis_restart() {
    let (text, _, _, ids) = follow_across_a_restart(Format::Json).await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got_ids: Vec<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let want_ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(got_ids, want_ids, "every entry exactly once, in order");
    let events: Vec<UnitEvent> = lines
        .iter()
        .map(|l| serde_json::from_value(l["event"].clone()).unwrap())
        .collect();
    let mut want = first_half();
    want.extend(second_half());
    assert_eq!(events, want);
    // The line format itself.
    assert_eq!(
        text.lines().next().unwrap(),
        format!(
            r#"{{"id":"{}","event":{{"type":"message-delta","text":"I'll write ","turn_id":"t0"}}}}"#,
            ids[0]
        )
    );
}

#[tokio::test]
async fn resuming_from_the_printed_id_continues_without_gap_or_repeat() {
    let server = RedisServer::start();
    let url = server.url();
    let mut ids = publish(&url, &first_half()).await;

    // A first follow is interrupted after the first half.
    let screen = Screen::default();
    let mut out = screen.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let running = Source::running(&url);
    let first = pump(EntryId::ZERO, None, false, Format::Text).run(
        &running,
        async {
            stop_rx.await.unwrap();
        },
        &mut out,
    );
    let interrupt = async {
        screen.wait_for("[tool] Write").await;
        stop_tx.send(()).unwrap();
    };
    let (first, ()) = tokio::join!(first, interrupt);
    let first = first.unwrap();
    assert!(matches!(first.ended, Ended::Interrupted));
    assert_eq!(first.last, ids[2], "the last entry printed");

    // More is written (and Redis restarts) before the user resumes with --from.
    let server = restart(server).await;
    ids.extend(publish(&url, &second_half()).await);
    let mut out = screen.clone();
    let second = pump(first.last, None, false, Format::Text)
        .run(&Source::ended(&url), std::future::pending(), &mut out)
        .await
        .unwrap();
    assert_eq!(second.ended, Ended::Dispatch("succeeded".into()));
    assert_eq!(second.last, *ids.last().unwrap());
    // The resumed follow never saw the call, so the result names its call id instead of the
    // tool; nothing else differs.
    assert_eq!(
        screen.text(),
        GOLDEN_TEXT.replace("[tool] Write ok", "[tool] toolu_1 ok")
    );
    drop(server);
}

#[tokio::test]
async fn a_reply_is_the_first_turn_after_the_one_in_progress() {
    let server = RedisServer::start();
    let url = server.url();
    // t0 is still running when the user sends their turn.
    let ids = publish(&url, &first_half()).await;
    let screen = Screen::default();
    let mut out = screen.clone();
    let running = Source::running(&url);
    let reply = pump(ids[2], Some(TurnId(0)), true, Format::Text).run(
        &running,
        std::future::pending(),
        &mut out,
    );
    let mut later = second_half();
    later.push(delta(2, "Not part of the reply."));
    let write = publish(&url, &later);
    let (reply, _) = tokio::time::timeout(WAIT, async { tokio::join!(reply, write) })
        .await
        .unwrap();
    let reply = reply.unwrap();
    assert!(
        matches!(reply.ended, Ended::Turn(TurnId(1))),
        "{:?}",
        reply.ended
    );
    assert_eq!(screen.text(), "Hello again.\n");
    drop(server);
}

#[tokio::test]
async fn a_dispatch_that_ended_long_ago_is_replayed_in_full() {
    let server = RedisServer::start();
    let url = server.url();
    let mut events = first_half();
    events.extend(second_half());
    publish(&url, &events).await;
    let mut screen = Screen::default();
    // The end is known at once; the backlog (read two entries at a time) is printed all the same.
    let pumped = pump(EntryId::ZERO, None, false, Format::Text)
        .run(&Source::ended(&url), std::future::pending(), &mut screen)
        .await
        .unwrap();
    assert_eq!(pumped.ended, Ended::Dispatch("succeeded".into()));
    assert_eq!(screen.text(), GOLDEN_TEXT);
    drop(server);
}

#[tokio::test]
async fn a_malformed_entry_is_shown_in_place_and_the_rest_follows() {
    let server = RedisServer::start();
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    publish(&url, &[delta(0, "Hi")]).await;
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let bad: String = redis::cmd("XADD")
        .arg(TOPIC)
        .arg("*")
        .arg("event")
        .arg("{oops")
        .query_async(&mut conn)
        .await
        .unwrap();
    publish(&url, &[ev(0, Event::TurnComplete {})]).await;
    let mut screen = Screen::default();
    let pumped = pump(EntryId::ZERO, None, true, Format::Text)
        .run(&Source::running(&url), std::future::pending(), &mut screen)
        .await
        .unwrap();
    assert!(matches!(pumped.ended, Ended::Turn(TurnId(0))));
    let text = screen.text();
    assert!(
        text.starts_with(&format!("Hi\n[malformed entry {bad}] key must be a string")),
        "{text}"
    );
    drop(server);
}

#[tokio::test]
async fn an_agents_escape_sequences_reach_the_terminal_as_visible_text() {
    let server = RedisServer::start();
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let hostile = [
        delta(0, "clip\u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}"),
        delta(0, "\u{1b}]0;pwned\u{7}\u{1b}[1A\u{1b}[2K\u{9b}2J\n"),
        ev(
            0,
            Event::Note {
                note: "\u{1b}[31mred".into(),
            },
        ),
        ev(0, Event::TurnComplete {}),
    ];
    publish(&url, &hostile).await;
    drop(client);
    for format in [Format::Text, Format::Json] {
        let mut screen = Screen::default();
        pump(EntryId::ZERO, None, true, format)
            .run(&Source::running(&url), std::future::pending(), &mut screen)
            .await
            .unwrap();
        let text = screen.text();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{format:?}: {text:?}"
        );
        if format == Format::Text {
            assert!(
                text.starts_with("clip^[]52;c;Y3VybCBldmlsIHwgc2g=^G^[]0;pwned^G^[[1A^[[2K<U+009B>2J\n[note]  [31mred\n"),
                "{text:?}"
            );
        }
    }
    drop(server);
}

#[tokio::test]
async fn a_log_that_breaks_off_is_reopened_after_the_last_entry_without_gap_or_repeat() {
    let server = RedisServer::start();
    let url = server.url();
    let mut events = first_half();
    events.extend(second_half());
    let ids = publish(&url, &events).await;
    let mut source = Source::ended(&url);
    // Every connection drops after three lines.
    source.break_after = Some(3);
    let mut screen = Screen::default();
    let pumped = pump(EntryId::ZERO, None, false, Format::Json)
        .run(&source, std::future::pending(), &mut screen)
        .await
        .unwrap();
    assert_eq!(pumped.ended, Ended::Dispatch("succeeded".into()));
    let got: Vec<String> = screen
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(got, want, "every entry exactly once, in order");
    assert!(
        source.opened.load(Ordering::SeqCst) >= 4,
        "the log was reopened"
    );
    drop(server);
}
