//! What happens to each due run, pure: the concurrency policy against the active runs (fire,
//! stop the others, wait in `status.buffered`, or skip `Overlap`), the start of waiting runs
//! oldest first, and backfills. The reconcile's working state lives here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use kube::{Resource, ResourceExt};
use vexa_core::names::{SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION};
use vexa_crds::{BufferedRun, ConcurrencyPolicy, Dispatch, Schedule};

use super::actions;
use super::decide::{MAX_BUFFERED, NewRun, reason};
use super::plan::{self, Cadence};
use super::run::{dispatch_spec, from_time, jitter, label_value, rfc3339, to_time};
use crate::runtime::events::Note;

/// The reconcile's working state.
#[derive(Debug)]
pub(super) struct Work<'a> {
    /// The Schedule being reconciled.
    pub(super) schedule: &'a Schedule,
    /// Its name.
    pub(super) name: String,
    /// Names that exist (observed or created now).
    pub(super) existing: BTreeSet<String>,
    /// Active runs not asked to stop yet.
    pub(super) active: Vec<String>,
    /// Active runs (asked to stop or not).
    pub(super) all_active: Vec<String>,
    /// Active runs asked to stop (before or now).
    pub(super) stopping: BTreeSet<String>,
    /// Dispatches to create.
    pub(super) create: Vec<NewRun>,
    /// Active runs to ask to stop.
    pub(super) stop: Vec<String>,
    /// Nominal times skipped, with reason and detail.
    pub(super) skipped: Vec<(DateTime<Utc>, &'static str, Option<String>)>,
    /// Runs waiting (the new `status.buffered`).
    pub(super) buffered: Vec<BufferedRun>,
    /// Nominal times that started waiting in this reconcile.
    pub(super) newly_buffered: Vec<DateTime<Utc>>,
    /// Events.
    pub(super) notes: Vec<Note>,
}

impl Work<'_> {
    pub(super) fn new_dispatch(&self, name: &str, nominal: DateTime<Utc>) -> Dispatch {
        let mut d = Dispatch::new(name, dispatch_spec(self.schedule));
        d.metadata.namespace = self.schedule.namespace();
        d.metadata.labels = Some(BTreeMap::from([(
            SCHEDULE_LABEL.to_owned(),
            label_value(&self.name),
        )]));
        d.metadata.annotations = Some(BTreeMap::from([(
            SCHEDULED_TIME_ANNOTATION.to_owned(),
            rfc3339(nominal),
        )]));
        d.metadata.owner_references = self.schedule.controller_owner_ref(&()).map(|o| vec![o]);
        d
    }

    /// Creates the run for `nominal` (adopting an existing one).
    pub(super) fn fire(&mut self, nominal: DateTime<Utc>) {
        let name = plan::dispatch_name(&self.name, nominal);
        if self.existing.contains(&name) {
            return;
        }
        let jitter = jitter(
            &self.schedule.uid().unwrap_or_default(),
            nominal,
            self.schedule.spec.jitter_seconds.unwrap_or(0),
        );
        self.create_run(&name, nominal, Some(nominal + jitter));
    }

    pub(super) fn create_run(
        &mut self,
        name: &str,
        nominal: DateTime<Utc>,
        due: Option<DateTime<Utc>>,
    ) {
        let dispatch = self.new_dispatch(name, nominal);
        self.existing.insert(name.to_owned());
        self.active.push(name.to_owned());
        self.all_active.push(name.to_owned());
        self.create.push(NewRun { dispatch, due });
    }

    pub(super) fn skip(
        &mut self,
        nominal: DateTime<Utc>,
        reason: &'static str,
        message: Option<String>,
    ) {
        self.skipped.push((nominal, reason, message));
    }

    pub(super) fn stop_active(&mut self) {
        for name in std::mem::take(&mut self.active) {
            if self.stopping.insert(name.clone()) {
                self.stop.push(name);
            }
        }
    }

    pub(super) fn buffer(&mut self, nominal: DateTime<Utc>) -> bool {
        let name = plan::dispatch_name(&self.name, nominal);
        if self.existing.contains(&name) || self.buffered.iter().any(|b| b.name == name) {
            return true;
        }
        if self.buffered.len() >= MAX_BUFFERED {
            return false;
        }
        self.buffered.push(BufferedRun {
            scheduled_time: to_time(nominal),
            name,
        });
        self.newly_buffered.push(nominal);
        true
    }

    /// A due run, by the concurrency policy.
    pub(super) fn due(&mut self, nominal: DateTime<Utc>) {
        if self
            .existing
            .contains(&plan::dispatch_name(&self.name, nominal))
        {
            return;
        }
        let busy = !self.all_active.is_empty();
        let overlap = |active: &[String]| Some(format!("{} still running", active.join(", ")));
        match self.schedule.spec.concurrency_policy {
            ConcurrencyPolicy::Allow => self.fire(nominal),
            ConcurrencyPolicy::Forbid => {
                if busy {
                    let m = overlap(&self.all_active);
                    self.skip(nominal, reason::OVERLAP, m);
                } else {
                    self.fire(nominal);
                }
            }
            ConcurrencyPolicy::Replace => {
                self.stop_active();
                self.fire(nominal);
            }
            ConcurrencyPolicy::BufferOne => {
                if !busy && self.buffered.is_empty() {
                    self.fire(nominal);
                } else if self.buffered.is_empty() {
                    self.buffer(nominal);
                } else {
                    let m = Some(format!("{} is already waiting", self.buffered[0].name));
                    self.skip(nominal, reason::OVERLAP, m);
                }
            }
            ConcurrencyPolicy::BufferAll => {
                if !busy && self.buffered.is_empty() {
                    self.fire(nominal);
                } else if !self.buffer(nominal) {
                    let m = Some(format!("{MAX_BUFFERED} runs are already waiting"));
                    self.skip(nominal, reason::OVERLAP, m);
                }
            }
            ConcurrencyPolicy::CancelOther => {
                if !busy {
                    self.fire(nominal);
                } else {
                    self.stop_active();
                    // Only the newest waits: an older waiting run is superseded by it.
                    for old in std::mem::take(&mut self.buffered) {
                        let t = from_time(&old.scheduled_time);
                        self.skip(
                            t,
                            reason::SUPERSEDED,
                            Some(format!("the run of {} replaced it", rfc3339(nominal))),
                        );
                    }
                    self.buffer(nominal);
                }
            }
        }
    }

    /// Starts the oldest waiting run when none is active.
    pub(super) fn start_buffered(&mut self) {
        self.buffered
            .sort_by(|a, b| a.scheduled_time.cmp(&b.scheduled_time));
        while self.all_active.is_empty() && !self.buffered.is_empty() {
            let next = self.buffered.remove(0);
            if self.existing.contains(&next.name) {
                continue;
            }
            // No lateness: it waited on purpose.
            self.create_run(&next.name, from_time(&next.scheduled_time), None);
        }
    }
}

/// Buffers every nominal time in `[from, to]` up to `now` (at most [`actions::MAX_BACKFILL`]);
/// a time whose Dispatch exists is adopted, never doubled. A time still ahead is left to the
/// schedule itself. Returns the record's message.
pub(super) fn backfill(
    work: &mut Work<'_>,
    cadence: &Cadence,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let to = to.min(now);
    let mut times = Vec::new();
    let mut cursor = from - TimeDelta::nanoseconds(1);
    loop {
        match cadence.next_after(cursor) {
            Ok(Some(t)) if t <= to => {
                if times.len() == actions::MAX_BACKFILL {
                    return format!(
                        "refused: the range holds more than {} runs; split it",
                        actions::MAX_BACKFILL
                    );
                }
                times.push(t);
                cursor = t;
            }
            Ok(_) => break,
            Err(e) => return format!("refused: {e}"),
        }
    }
    if work.buffered.len() + times.len() > MAX_BUFFERED {
        return format!(
            "refused: {} runs are waiting already and at most {MAX_BUFFERED} may wait",
            work.buffered.len()
        );
    }
    let mut added = 0;
    let mut existing = 0;
    for t in &times {
        let name = plan::dispatch_name(&work.name, *t);
        if work.existing.contains(&name) || work.buffered.iter().any(|b| b.name == name) {
            existing += 1;
        } else if work.buffer(*t) {
            added += 1;
        }
    }
    format!(
        "{} runs in [{}, {}]: {added} queued, {existing} already ran or wait",
        times.len(),
        rfc3339(from),
        rfc3339(to)
    )
}
