//! IMAP IDLE on the mailboxes of `email.received` triggers: new mail wakes the Schedules bound
//! to its mailbox within about a second, instead of at their next poll.
//!
//! IDLE only wakes. The Schedule's reconcile reads the new mail from the cursor in its status,
//! as it does at each poll (`--mail-poll-seconds`), which stays the fallback: when IDLE is off
//! (`--mail-idle=false`), when the server does not answer, or when a wake is lost.
//!
//! One watcher per mailbox of `--mail-config`. While no Schedule watches its mailbox (a trigger
//! naming it, of a Schedule whose subject owns it) it does not connect. Otherwise it loops: IDLE
//! for at most [`IDLE_TIMEOUT`] (RFC 2177: re-issue before 29 minutes) from the last cursor it
//! saw; when the server reports a change, it reads the mailbox's end again and, if new mail
//! arrived, wakes the bound Schedules. It reads the end before it wakes them, so mail after that
//! end wakes the next IDLE at once (`idle` with `since`) and none is slept through. It starts
//! from the oldest cursor of the bound Schedules' statuses (so mail that came before the
//! watcher did still wakes them), else from the mailbox's end. A failure (server down, login
//! refused, password file missing, or an IDLE the server ended long before its timeout) is
//! logged and retried after [`backoff`] (1 s doubling to 60 s); the password is never logged
//! (`vexa_email::Error` does not carry it).

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use futures::channel::mpsc;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use vexa_crds::{EventType, Schedule};
use vexa_email::{Cursor, Mailbox, Wake};

use super::events::mail_cursor;
use crate::mail::MailConfig;

/// How long one IDLE lasts before it is re-issued (RFC 2177 asks for less than 29 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The longest wait after a failure.
pub const BACKOFF_CEILING: Duration = Duration::from_secs(60);
/// How often a watcher whose mailbox no Schedule watches looks again (it reads only the cache).
const UNWATCHED_RECHECK: Duration = Duration::from_secs(5);
/// The shortest time between two connections of one watcher, whatever the server answers (a
/// server that reports a change at once each time cannot make it spin).
const MIN_CYCLE: Duration = Duration::from_secs(1);
/// Wakes waiting for the controller before a watcher waits too.
const WAKE_BUFFER: usize = 64;

/// The wait before the next attempt after `failures` failures in a row: 1 s, 2 s, 4 s … up
/// to [`BACKOFF_CEILING`].
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << doublings).min(BACKOFF_CEILING)
}

/// The Schedules among `schedules` that new mail in mailbox `id` wakes: those with an
/// `email.received` trigger naming it whose subject owns it in `mail` (the others never read
/// it, see `observe`).
pub fn bound(mail: &MailConfig, id: &str, schedules: &[Arc<Schedule>]) -> Vec<ObjectRef<Schedule>> {
    schedules
        .iter()
        .filter(|s| watches(mail, id, s))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Whether `schedule` reads mailbox `id`.
fn watches(mail: &MailConfig, id: &str, schedule: &Schedule) -> bool {
    schedule
        .spec
        .events
        .iter()
        .any(|e| e.event_type == EventType::EmailReceived && e.mailbox.as_deref() == Some(id))
        && mail.watched_by(id, &schedule.spec.subject).is_some()
}

/// The oldest cursor of mailbox `id` in the statuses of the Schedules that watch it (`None`:
/// none has read it yet): where a new watcher starts, so mail that came before it still wakes.
pub fn oldest_cursor(mail: &MailConfig, id: &str, schedules: &[Arc<Schedule>]) -> Option<Cursor> {
    schedules
        .iter()
        .filter(|s| watches(mail, id, s))
        .filter_map(|s| mail_cursor(s, id))
        .min_by_key(|c| (c.uid_validity, c.uid))
}

/// Why one round of a watcher failed.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    /// Connecting, logging in or a command failed.
    #[error(transparent)]
    Mail(#[from] vexa_email::Error),
    /// The IDLE ended without news long before its timeout: the server closed the connection
    /// (retried like a failure, so such a server cannot make the watcher reconnect at once).
    #[error("the IMAP server ended IDLE after {0:?}, long before its timeout")]
    Dropped(Duration),
}

impl WatchError {
    fn reason(&self) -> &'static str {
        match self {
            WatchError::Mail(e) => e.reason(),
            WatchError::Dropped(_) => "IdleDropped",
        }
    }
}

/// Whether reading the mailbox's end as `now`, after it was `seen`, means new mail (or a
/// renumbered folder): what wakes the Schedules. A change the server reports without either (a
/// flag set, a message deleted) wakes nobody.
pub fn arrived(seen: Cursor, now: Cursor) -> bool {
    now != seen
}

/// The watchers: aborted when dropped.
#[derive(Debug, Default)]
pub struct Watchers {
    _tasks: JoinSet<()>,
}

/// Starts one watcher per mailbox of `mail` (none when `mail` is `None`); the stream yields
/// the Schedules (from `schedules`, the controller's cache) to reconcile now. It ends when no
/// watcher is left.
pub fn watch(
    mail: Option<Arc<MailConfig>>,
    schedules: Store<Schedule>,
) -> (mpsc::Receiver<ObjectRef<Schedule>>, Watchers) {
    let (tx, rx) = mpsc::channel(WAKE_BUFFER);
    let mut tasks = JoinSet::new();
    if let Some(mail) = mail {
        for entry in &mail.mailboxes {
            tasks.spawn(watch_mailbox(
                entry.mailbox.clone(),
                mail.clone(),
                schedules.clone(),
                tx.clone(),
            ));
        }
    }
    (rx, Watchers { _tasks: tasks })
}

/// One mailbox's watcher, until the controller stops listening.
async fn watch_mailbox(
    mailbox: Mailbox,
    mail: Arc<MailConfig>,
    schedules: Store<Schedule>,
    mut wake: mpsc::Sender<ObjectRef<Schedule>>,
) {
    let id = mailbox.id.clone();
    let mut seen: Option<Cursor> = None;
    let mut failures = 0u32;
    loop {
        let state = schedules.state();
        if bound(&mail, &id, &state).is_empty() {
            seen = None;
            tokio::time::sleep(UNWATCHED_RECHECK).await;
            continue;
        }
        let since = seen.or_else(|| oldest_cursor(&mail, &id, &state));
        drop(state);
        let started = tokio::time::Instant::now();
        match step(&mailbox, since).await {
            Ok((now, changed)) => {
                if failures > 0 {
                    info!(mailbox = %id, "IMAP IDLE reaches the mailbox again");
                } else if seen.is_none() {
                    debug!(mailbox = %id, "IMAP IDLE watches the mailbox");
                }
                failures = 0;
                seen = Some(now);
                if changed {
                    let woken = bound(&mail, &id, &schedules.state());
                    debug!(mailbox = %id, schedules = woken.len(), "new mail: waking the bound Schedules");
                    for schedule in woken {
                        if wake.send(schedule).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                // `seen` is kept: mail that arrives meanwhile wakes the first IDLE back at once.
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                warn!(mailbox = %id, reason = e.reason(), error = %e, retry_in = ?delay, "IMAP IDLE failed; the mailbox is still polled");
                tokio::time::sleep(delay).await;
            }
        }
        if wake.is_closed() {
            return;
        }
        tokio::time::sleep_until(started + MIN_CYCLE).await;
    }
}

/// One round: without a cursor, read the mailbox's end; with one, IDLE from it and read the end
/// again on a change. Returns the end and whether new mail arrived since `seen`.
async fn step(mailbox: &Mailbox, seen: Option<Cursor>) -> Result<(Cursor, bool), WatchError> {
    let Some(seen) = seen else {
        return Ok((vexa_email::current_cursor(mailbox).await?, false));
    };
    let started = tokio::time::Instant::now();
    match vexa_email::idle(mailbox, Some(seen), IDLE_TIMEOUT).await? {
        // `idle` reports a closed connection as a timeout.
        Wake::Timeout if started.elapsed() < IDLE_TIMEOUT / 2 => {
            Err(WatchError::Dropped(started.elapsed()))
        }
        Wake::Timeout => Ok((seen, false)),
        Wake::Changed => {
            let now = vexa_email::current_cursor(mailbox).await?;
            Ok((now, arrived(seen, now)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(refs: &[ObjectRef<Schedule>]) -> Vec<String> {
        refs.iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
            .collect()
    }

    fn schedule(ns: &str, name: &str, subject: &str, events: serde_json::Value) -> Arc<Schedule> {
        let s: Schedule = serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Schedule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"subject": subject, "grant": "g", "events": events,
                     "template": {"runner": "r", "workspaces": [],
                                  "start": {"entrypoint": {"inline": "triage"}}}},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(s)
    }

    fn mail() -> MailConfig {
        serde_saphyr::from_str(
            "mailboxes:\n\
             - {id: triage, owner: alice, address: t@vexa.test, imap: {host: h, port: 1}, smtp: {host: h, port: 2}, username: t, passwordFile: /p}\n\
             - {id: sales, owner: bob, address: s@vexa.test, imap: {host: h, port: 1}, smtp: {host: h, port: 2}, username: s, passwordFile: /p}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn failures_back_off_from_one_second_doubling_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            backoff(u32::MAX),
            BACKOFF_CEILING,
            "no overflow however long it fails"
        );
        assert_eq!(backoff(0).as_secs(), 1);
    }

    #[test]
    fn new_mail_wakes_only_the_owners_schedules_that_watch_that_mailbox() {
        let schedules = vec![
            schedule(
                "team-a",
                "triage",
                "alice",
                json!([{"type": "email.received", "mailbox": "triage"}]),
            ),
            schedule(
                "team-b",
                "also-triage",
                "alice",
                json!([
                    {"type": "transcript.completed"},
                    {"type": "email.received", "mailbox": "triage", "from": "@corp.test"},
                ]),
            ),
            // Bob's Schedule names alice's mailbox: it never reads it, so it is not woken.
            schedule(
                "team-a",
                "bobs",
                "bob",
                json!([{"type": "email.received", "mailbox": "triage"}]),
            ),
            schedule(
                "team-a",
                "sales",
                "bob",
                json!([{"type": "email.received", "mailbox": "sales"}]),
            ),
            schedule(
                "team-a",
                "meetings",
                "alice",
                json!([{"type": "transcript.completed"}]),
            ),
            schedule(
                "team-a",
                "no-mailbox",
                "alice",
                json!([{"type": "email.received"}]),
            ),
        ];
        let config = mail();
        assert_eq!(
            names(&bound(&config, "triage", &schedules)),
            ["team-a/triage", "team-b/also-triage"]
        );
        assert_eq!(
            names(&bound(&config, "sales", &schedules)),
            ["team-a/sales"]
        );
        assert!(bound(&config, "unknown", &schedules).is_empty());
        assert!(
            bound(&MailConfig::default(), "triage", &schedules).is_empty(),
            "without --mail-config no mailbox is anyone's"
        );
    }

    fn with_cursors(s: Arc<Schedule>, cursors: serde_json::Value) -> Arc<Schedule> {
        let mut s = (*s).clone();
        s.status = serde_json::from_value(json!({"eventCursors": cursors}))
            .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(s)
    }

    #[test]
    fn a_new_watcher_starts_from_the_oldest_cursor_of_the_schedules_that_read_the_mailbox() {
        let config = mail();
        let triage = json!([{"type": "email.received", "mailbox": "triage"}]);
        let schedules = vec![
            schedule("team-a", "new", "alice", triage.clone()),
            with_cursors(
                schedule("team-a", "ahead", "alice", triage.clone()),
                json!([{"source": "email.received:triage", "position": "0000000042/0000000009"}]),
            ),
            with_cursors(
                schedule("team-a", "behind", "alice", triage.clone()),
                json!([
                    {"source": "transcript.completed", "position": "000000000001"},
                    {"source": "email.received:triage", "position": "0000000042/0000000007"},
                ]),
            ),
            // Bob's cursor on alice's mailbox (he cannot read it) does not count.
            with_cursors(
                schedule("team-a", "bobs", "bob", triage),
                json!([{"source": "email.received:triage", "position": "0000000042/0000000001"}]),
            ),
        ];
        assert_eq!(
            oldest_cursor(&config, "triage", &schedules),
            Some(Cursor {
                uid_validity: 42,
                uid: 7
            })
        );
        assert_eq!(
            oldest_cursor(&config, "triage", &schedules[..1]),
            None,
            "none has read it yet: start from the mailbox's end"
        );
        assert_eq!(oldest_cursor(&config, "sales", &schedules), None);
    }

    /// A scripted IMAP server on the loopback: greets, accepts any login, reports UIDVALIDITY
    /// 42 and the current UIDNEXT, and during IDLE sends what the test pushes; or, `hang_up`,
    /// closes every connection at once.
    struct FakeImap {
        port: u16,
        uid_next: Arc<std::sync::atomic::AtomicU32>,
        push: tokio::sync::broadcast::Sender<String>,
        idling: tokio::sync::mpsc::UnboundedReceiver<()>,
        connections: Arc<std::sync::atomic::AtomicU32>,
        _password: tempfile::NamedTempFile,
    }

    impl FakeImap {
        async fn start(uid_next: u32, hang_up: bool) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
            let uid = Arc::new(AtomicU32::new(uid_next));
            let (push, _) = tokio::sync::broadcast::channel::<String>(8);
            let (idle_tx, idling) = tokio::sync::mpsc::unbounded_channel();
            let connections = Arc::new(AtomicU32::new(0));
            let (uid_s, push_s, count) = (uid.clone(), push.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    if hang_up {
                        continue;
                    }
                    let (uid, push, idle_tx) = (uid_s.clone(), push_s.clone(), idle_tx.clone());
                    tokio::spawn(async move {
                        let (r, mut w) = stream.into_split();
                        let mut lines = BufReader::new(r).lines();
                        w.write_all(b"* OK fake IMAP ready\r\n").await?;
                        while let Some(line) = lines.next_line().await? {
                            let mut parts = line.splitn(3, ' ');
                            let tag = parts.next().unwrap_or_default().to_owned();
                            let command = parts.next().unwrap_or_default().to_ascii_uppercase();
                            let reply = match command.as_str() {
                                "EXAMINE" | "SELECT" => format!(
                                    "* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 42] ok\r\n* OK [UIDNEXT {}] ok\r\n{tag} OK [READ-ONLY] done\r\n",
                                    uid.load(Ordering::SeqCst)
                                ),
                                "IDLE" => {
                                    let mut pushes = push.subscribe();
                                    w.write_all(b"+ idling\r\n").await?;
                                    let _ = idle_tx.send(());
                                    loop {
                                        tokio::select! {
                                            Ok(p) = pushes.recv() => w.write_all(p.as_bytes()).await?,
                                            done = lines.next_line() => { done?; break; }
                                        }
                                    }
                                    format!("{tag} OK IDLE done\r\n")
                                }
                                "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
                                _ => format!("{tag} OK done\r\n"),
                            };
                            w.write_all(reply.as_bytes()).await?;
                        }
                        Ok::<_, std::io::Error>(())
                    });
                }
            });
            let password = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(password.path(), "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
            Self {
                port,
                uid_next: uid,
                push,
                idling,
                connections,
                _password: password,
            }
        }

        /// Alice's mailbox `triage` on this server.
        fn config(&self) -> Arc<MailConfig> {
            let yaml = format!(
                "mailboxes:\n- {{id: triage, owner: alice, address: t@vexa.test, imap: {{host: 127.0.0.1, port: {}}}, smtp: {{host: 127.0.0.1, port: 1}}, username: t, passwordFile: {}}}\n",
                self.port,
                self._password.path().display()
            );
            Arc::new(serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}")))
        }
    }

    /// A cache holding alice's Schedule watching `triage`, which has read it up to UID 7.
    fn cache() -> Store<Schedule> {
        let (store, mut writer) = kube::runtime::reflector::store();
        let s = with_cursors(
            schedule(
                "team-a",
                "triage",
                "alice",
                json!([{"type": "email.received", "mailbox": "triage"}]),
            ),
            json!([{"source": "email.received:triage", "position": "0000000042/0000000007"}]),
        );
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply((*s).clone()));
        store
    }

    async fn next_wake(
        wakes: &mut mpsc::Receiver<ObjectRef<Schedule>>,
        within: Duration,
    ) -> Option<String> {
        use futures::StreamExt;
        tokio::time::timeout(within, wakes.next())
            .await
            .ok()
            .flatten()
            .map(|r| names(&[r]).concat())
    }

    #[tokio::test]
    async fn new_mail_wakes_the_bound_schedule_at_once_and_a_flag_change_does_not() {
        let mut server = FakeImap::start(8, false).await;
        let (mut wakes, _watchers) = watch(Some(server.config()), cache());
        let armed = Duration::from_secs(10);
        // The watcher starts from the Schedule's cursor (UID 7; UIDNEXT 8: nothing new) and idles.
        assert!(
            tokio::time::timeout(armed, server.idling.recv())
                .await
                .is_ok(),
            "IDLE begins"
        );
        assert_eq!(
            next_wake(&mut wakes, Duration::from_millis(300)).await,
            None
        );

        // Someone reads a message: the server reports it, the end has not moved, nobody wakes.
        let _ = server.push.send("* 1 FETCH (FLAGS (\\Seen))\r\n".into());
        assert!(
            tokio::time::timeout(armed, server.idling.recv())
                .await
                .is_ok(),
            "IDLE again"
        );
        assert_eq!(
            next_wake(&mut wakes, Duration::from_millis(300)).await,
            None
        );

        // New mail: the Schedule is woken within about a second.
        server
            .uid_next
            .store(9, std::sync::atomic::Ordering::SeqCst);
        let sent = tokio::time::Instant::now();
        let _ = server.push.send("* 4 EXISTS\r\n".into());
        assert_eq!(
            next_wake(&mut wakes, Duration::from_secs(5))
                .await
                .as_deref(),
            Some("team-a/triage")
        );
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
        // And it idles again from the new end.
        assert!(
            tokio::time::timeout(armed, server.idling.recv())
                .await
                .is_ok(),
            "re-armed"
        );
        assert_eq!(
            next_wake(&mut wakes, Duration::from_millis(300)).await,
            None
        );
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_is_retried_with_backoff_not_in_a_tight_loop() {
        let server = FakeImap::start(8, true).await;
        let (mut wakes, _watchers) = watch(Some(server.config()), cache());
        // Attempts at about 0, 1, 3 and 7 s (then 15 s). Without the backoff, the 1 s between two
        // connections would allow 8; a tight loop would make thousands.
        assert_eq!(
            next_wake(&mut wakes, Duration::from_millis(7500)).await,
            None
        );
        let attempts = server.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (3..=5).contains(&attempts),
            "{attempts} connections in 7.5 s"
        );
    }

    #[tokio::test]
    async fn no_mailbox_or_idle_off_starts_no_watcher() {
        use futures::StreamExt;
        let (mut wakes, _watchers) = watch(None, cache());
        assert!(wakes.next().await.is_none(), "the stream ends at once");
    }

    #[test]
    fn only_new_mail_or_a_renumbered_folder_wakes() {
        let seen = Cursor {
            uid_validity: 7,
            uid: 41,
        };
        assert!(
            !arrived(seen, seen),
            "a flag change or an expunge wakes nobody"
        );
        assert!(arrived(
            seen,
            Cursor {
                uid_validity: 7,
                uid: 42
            }
        ));
        assert!(arrived(
            seen,
            Cursor {
                uid_validity: 8,
                uid: 3
            }
        ));
    }
}
