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
//! watcher did still wakes them), else from the mailbox's end. A failure
//! (server down, login refused, password file missing) is logged and retried after
//! [`backoff`] (1 s doubling to 60 s); the password is never logged (`vexa_email::Error`
//! does not carry it).

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use futures::channel::mpsc;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use vexa_crds::{EventType, Schedule};
use vexa_email::{Cursor, Mailbox, Wake};

use super::events::{email_cursor, email_source};
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
    let source = email_source(id);
    schedules
        .iter()
        .filter(|s| watches(mail, id, s))
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            let c = status.event_cursors.iter().find(|c| c.source == source)?;
            email_cursor(&c.position)
        })
        .min_by_key(|c| (c.uid_validity, c.uid))
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
async fn step(
    mailbox: &Mailbox,
    seen: Option<Cursor>,
) -> Result<(Cursor, bool), vexa_email::Error> {
    let Some(seen) = seen else {
        return Ok((vexa_email::current_cursor(mailbox).await?, false));
    };
    match vexa_email::idle(mailbox, Some(seen), IDLE_TIMEOUT).await? {
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
