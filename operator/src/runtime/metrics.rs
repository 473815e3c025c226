//! Prometheus metrics of the operator (prometheus-client, OpenMetrics text on `/metrics`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Buckets of one reconcile's duration: most take milliseconds, a slow API server seconds.
const RECONCILE_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the time from a Dispatch's creation to its Job's: the product's start latency.
const JOB_CREATED_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of the time from a Dispatch's creation until its worker runs (Job, pod scheduling,
/// image, containers): seconds normally, minutes when an image is pulled.
const RUNNING_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of a Dispatch's wait for a workspace another run holds: as long as that run.
/// A first turn, start to the agent's last event: a quick answer to a long edit.
const TURN_BUCKETS: [f64; 12] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

const QUEUE_WAIT_BUCKETS: [f64; 11] = [
    0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Buckets of a scheduled run's lateness (Dispatch created − nominal time − jitter): well
/// under a second normally, up to a minute under load.
const FIRE_LATENESS_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// Creates the series of `reasons` at zero, so each exists before its first event (a rate over
/// a counter that appears at its first event misses that event, and a dashboard shows "no
/// data" instead of 0).
fn prime<'a>(family: &Family<ReasonLabels, Counter>, reasons: impl IntoIterator<Item = &'a str>) {
    for reason in reasons {
        drop(family.get_or_create(&ReasonLabels {
            reason: reason.to_owned(),
        }));
    }
}

/// What every controller reports about its own reconciles, under `vexa_<kind>_…`.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    reconciles: Counter,
    reconcile_errors: Family<ReasonLabels, Counter>,
    reconcile_duration: Histogram,
}

impl ControllerMetrics {
    /// Registers a controller's metrics in their own sub-registry, prefixed with `kind`.
    fn register(registry: &mut Registry, kind: &str) -> Self {
        let sub = registry.sub_registry_with_prefix(kind);
        let reconciles = Counter::default();
        sub.register(
            "reconciles",
            format!("{kind} reconciles started"),
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        sub.register(
            "reconcile_errors",
            format!("{kind} reconciles that failed, by reason"),
            reconcile_errors.clone(),
        );
        prime(&reconcile_errors, crate::runtime::errors::KUBE_REASONS);
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        sub.register_with_unit(
            "reconcile_duration",
            format!("Time one {kind} reconcile took"),
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        Self {
            reconciles,
            reconcile_errors,
            reconcile_duration,
        }
    }

    /// Counts a reconcile; the returned timer records its duration when dropped.
    #[must_use = "bind the timer (`let _timer = ...`): dropping it at once records a zero duration"]
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile; `reason` must come from a small fixed set (it is a label).
    pub fn reconcile_failed(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// What the Schedule controller reports about the runs it fires and skips.
#[derive(Debug, Clone)]
pub struct ScheduleMetrics {
    fires: Counter,
    skips: Family<ReasonLabels, Counter>,
    lateness: Histogram,
}

impl ScheduleMetrics {
    fn register(registry: &mut Registry) -> Self {
        let fires = Counter::default();
        registry.register(
            "schedule_fires",
            "Dispatches created by Schedules",
            fires.clone(),
        );
        let skips = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "schedule_skips",
            "Nominal times of Schedules that did not run, by reason",
            skips.clone(),
        );
        let lateness = Histogram::new(FIRE_LATENESS_BUCKETS);
        registry.register_with_unit(
            "schedule_fire_lateness",
            "Time from a scheduled run's nominal time (plus its jitter) to its Dispatch's creation",
            Unit::Seconds,
            lateness.clone(),
        );
        Self {
            fires,
            skips,
            lateness,
        }
    }

    /// Counts a created Dispatch; `lateness` (None for a run-now or a buffered run) is observed.
    pub fn fired(&self, lateness: Option<chrono::TimeDelta>) {
        self.fires.inc();
        if let Some(l) = lateness {
            self.lateness
                .observe(l.to_std().unwrap_or_default().as_secs_f64());
        }
    }

    /// Starts the skip counters of `reasons` at zero, so each series exists before its first
    /// skip.
    pub fn known_skip_reasons(&self, reasons: &[&str]) {
        prime(&self.skips, reasons.iter().copied());
    }

    /// Counts a skipped nominal time; `reason` is one of the few skip reasons.
    pub fn skipped(&self, reason: &str) {
        self.skips
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// The operator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The Dispatch controller's reconciles (`vexa_dispatch_…`).
    pub dispatch: ControllerMetrics,
    /// The Workspace controller's reconciles (`vexa_workspace_…`).
    pub workspace: ControllerMetrics,
    /// The Tool controller's reconciles (`vexa_tool_…`).
    pub tool: ControllerMetrics,
    /// The AgentRunner controller's reconciles (`vexa_runner_…`).
    pub runner: ControllerMetrics,
    /// The subjects controller's reconciles (`vexa_subject_…`): Identities mirrored to Keycloak.
    pub subject: ControllerMetrics,
    /// The Transcript controller's reconciles (`vexa_transcript_…`).
    pub transcript: ControllerMetrics,
    transcripts_completed: Counter,
    transcript_refused: Family<ReasonLabels, Counter>,
    /// The Schedule controller's reconciles (`vexa_schedule_…`).
    pub schedule: ControllerMetrics,
    /// The runs Schedules fire and skip (`vexa_schedule_fires_total`, …).
    pub schedule_runs: ScheduleMetrics,
    tools: Family<ReadyLabels, Gauge>,
    job_created_latency: Histogram,
    running_latency: Histogram,
    queue_wait: Histogram,
    first_event_latency: Histogram,
    first_turn: Histogram,
    stream_events: Counter,
    stream_bytes: Counter,
    refusals: Family<ReasonLabels, Counter>,
    runs: Family<ReasonLabels, Counter>,
    dispatches: Family<PhaseLabels, Gauge>,
    oldest_starting: Gauge<f64, std::sync::atomic::AtomicU64>,
    cards_created: Counter,
    cards_refused: Family<ReasonLabels, Counter>,
    // Phases reported before: a phase missing from a later count is set to 0 rather than
    // left at its last value.
    seen_phases: Mutex<BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics, registered under the `vexa_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vexa");
        let dispatch = ControllerMetrics::register(&mut registry, "dispatch");
        let workspace = ControllerMetrics::register(&mut registry, "workspace");
        let tool = ControllerMetrics::register(&mut registry, "tool");
        let runner = ControllerMetrics::register(&mut registry, "runner");
        let subject = ControllerMetrics::register(&mut registry, "subject");
        let transcript = ControllerMetrics::register(&mut registry, "transcript");
        let transcripts_completed = Counter::default();
        registry.register(
            "transcripts_completed",
            "Transcripts whose session ended (what fires transcript.completed)",
            transcripts_completed.clone(),
        );
        let transcript_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "transcript_entries_refused",
            "Transcript stream entries or segments that changed nothing, by reason",
            transcript_refused.clone(),
        );
        let schedule = ControllerMetrics::register(&mut registry, "schedule");
        let schedule_runs = ScheduleMetrics::register(&mut registry);
        let tools = Family::<ReadyLabels, Gauge>::default();
        for ready in ["true", "false"] {
            drop(tools.get_or_create(&ReadyLabels {
                ready: ready.to_owned(),
            }));
        }
        registry.register(
            "tools",
            "Tools by readiness (Ready: the MCP server answers and the audience is known)",
            tools.clone(),
        );
        let job_created_latency = Histogram::new(JOB_CREATED_BUCKETS);
        registry.register_with_unit(
            "dispatch_job_created_latency",
            "Time from a Dispatch's creation to the creation of its Job",
            Unit::Seconds,
            job_created_latency.clone(),
        );
        let running_latency = Histogram::new(RUNNING_BUCKETS);
        registry.register_with_unit(
            "dispatch_running_latency",
            "Time from a Dispatch's creation until its worker runs (queue wait included)",
            Unit::Seconds,
            running_latency.clone(),
        );
        let queue_wait = Histogram::new(QUEUE_WAIT_BUCKETS);
        registry.register_with_unit(
            "dispatch_queue_wait",
            "Time a Dispatch waited for a workspace held by another run",
            Unit::Seconds,
            queue_wait.clone(),
        );
        let first_event_latency = Histogram::new(RUNNING_BUCKETS);
        registry.register_with_unit(
            "dispatch_first_event_latency",
            "Time from a Dispatch's creation to its agent's first event (the worker's clock; \
             counted when the run ends)",
            Unit::Seconds,
            first_event_latency.clone(),
        );
        let first_turn = Histogram::new(TURN_BUCKETS);
        registry.register_with_unit(
            "dispatch_first_turn",
            "How long a run's first turn took, from its prompt to the agent's last event",
            Unit::Seconds,
            first_turn.clone(),
        );
        let stream_events = Counter::default();
        registry.register(
            "dispatch_stream_events",
            "Entries runs wrote to their output streams (counted when each run ends)",
            stream_events.clone(),
        );
        let stream_bytes = Counter::default();
        registry.register_with_unit(
            "dispatch_stream",
            "Bytes of the entries runs wrote to their output streams (counted when each run ends)",
            Unit::Bytes,
            stream_bytes.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dispatch_refusals",
            "Dispatches refused, by reason (the Authorized or Valid condition's)",
            refusals.clone(),
        );
        let runs = Family::<ReasonLabels, Counter>::default();
        prime(&runs, vexa_core::StopReason::ALL.map(|r| r.as_str()));
        registry.register(
            "dispatch_runs",
            "Runs that ended, by stop reason",
            runs.clone(),
        );
        let dispatches = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "dispatches",
            "Dispatches by lifecycle phase",
            dispatches.clone(),
        );
        let oldest_starting = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "dispatch_oldest_starting",
            "How long the Dispatch longest in phase starting has been there (0: none is)",
            Unit::Seconds,
            oldest_starting.clone(),
        );
        let cards_created = Counter::default();
        registry.register(
            "cards_created",
            "Cards created from the card events of dispatches' output streams",
            cards_created.clone(),
        );
        let cards_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "cards_refused",
            "Card events of dispatches' output streams refused, by reason",
            cards_refused.clone(),
        );
        Self {
            registry,
            dispatch,
            workspace,
            tool,
            runner,
            subject,
            transcript,
            transcripts_completed,
            transcript_refused,
            schedule,
            schedule_runs,
            tools,
            job_created_latency,
            running_latency,
            queue_wait,
            first_event_latency,
            first_turn,
            stream_events,
            stream_bytes,
            refusals,
            runs,
            dispatches,
            oldest_starting,
            cards_created,
            cards_refused,
            seen_phases: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records the time from a Dispatch's creation to the creation of its Job.
    pub fn job_created(&self, latency: Duration) {
        self.job_created_latency.observe(latency.as_secs_f64());
    }

    /// Records the time from a Dispatch's creation until its worker ran.
    pub fn dispatch_running(&self, seconds: f64) {
        self.running_latency.observe(seconds);
    }

    /// Records how long a Dispatch waited for its workspace.
    pub fn dispatch_dequeued(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    /// Records what the worker of a run that ended reported: when its agent's first event came
    /// (`created`: the Dispatch's creation), how long its first turn took, and what it
    /// streamed. Times that disagree (clock skew) are left out rather than counted as zero.
    pub fn dispatch_worker_report(
        &self,
        created: Option<std::time::SystemTime>,
        report: &vexa_core::Termination,
    ) {
        if let Some(m) = report.milestones {
            let first = m.first_event.and_then(vexa_core::trace::time_of_ms);
            if let (Some(created), Some(first)) = (created, first)
                && let Ok(after) = first.duration_since(created)
            {
                self.first_event_latency.observe(after.as_secs_f64());
            }
            if let (Some(turn), Some(done)) = (m.turn, m.done)
                && done >= turn
            {
                self.first_turn.observe((done - turn) as f64 / 1000.0);
            }
        }
        if let Some(p) = report.published {
            self.stream_events.inc_by(p.events);
            self.stream_bytes.inc_by(p.bytes);
        }
    }

    /// Counts a refused Dispatch; `reason` comes from a fixed set (it is a label).
    pub fn dispatch_refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a run that ended, by its stop reason.
    pub fn dispatch_finished(&self, stop_reason: &str) {
        self.runs
            .get_or_create(&ReasonLabels {
                reason: stop_reason.to_owned(),
            })
            .inc();
    }

    /// Counts a Card created from a dispatch's card event.
    pub fn card_created(&self) {
        self.cards_created.inc();
    }

    /// Starts the card-refusal counters of `reasons` at zero.
    pub fn known_card_refusals(&self, reasons: &[&str]) {
        prime(&self.cards_refused, reasons.iter().copied());
    }

    /// Counts a refused card event; `reason` comes from a fixed set (it is a label).
    pub fn card_refused(&self, reason: &str) {
        self.cards_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets how long the Dispatch longest in phase starting has been there.
    pub fn set_oldest_starting(&self, seconds: f64) {
        self.oldest_starting.set(seconds);
    }

    /// Sets the number of Dispatches in each phase; phases seen before and absent now become 0.
    pub fn set_phase_counts(&self, counts: &BTreeMap<String, i64>) {
        let mut seen = self
            .seen_phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for phase in seen.iter().filter(|phase| !counts.contains_key(*phase)) {
            self.dispatches
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .set(0);
        }
        for (phase, count) in counts {
            self.dispatches
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .set(*count);
            seen.insert(phase.clone());
        }
    }

    /// Sets the number of Tools by readiness (`true`/`false`); every label is given each time.
    pub fn set_tool_readiness(&self, counts: &[(&str, i64)]) {
        for (ready, count) in counts {
            self.tools
                .get_or_create(&ReadyLabels {
                    ready: (*ready).to_owned(),
                })
                .set(*count);
        }
    }

    /// Counts a Transcript that completed.
    pub fn transcript_completed(&self) {
        self.transcripts_completed.inc();
    }

    /// Counts a refused transcript entry or segment.
    pub fn transcript_refused(&self, reason: &str) {
        self.transcript_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Encodes every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Measures one reconcile: records its duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn has(metrics: &Metrics, line: &str) -> bool {
        lines(metrics).iter().any(|l| l == line)
    }

    #[test]
    fn a_reconcile_is_counted_and_timed_when_its_timer_drops() {
        let metrics = Metrics::new();
        let timer = metrics.dispatch.reconcile_started();
        assert!(has(&metrics, "vexa_dispatch_reconciles_total 1"));
        assert!(has(
            &metrics,
            "vexa_dispatch_reconcile_duration_seconds_count 0"
        ));
        drop(timer);
        assert!(has(
            &metrics,
            "vexa_dispatch_reconcile_duration_seconds_count 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_reconcile_duration_seconds_bucket{le=\"10.0\"} 1"
        ));
    }

    #[test]
    fn labelled_series_exist_before_their_first_event() {
        let metrics = Metrics::new();
        metrics.schedule_runs.known_skip_reasons(&["Overlap"]);
        metrics.known_card_refusals(&["CardTooMany"]);
        for line in [
            "vexa_runner_reconcile_errors_total{reason=\"KubeError\"} 0",
            "vexa_dispatch_reconcile_errors_total{reason=\"Conflict\"} 0",
            "vexa_tools{ready=\"false\"} 0",
            "vexa_dispatch_runs_total{reason=\"idle_timeout\"} 0",
            "vexa_schedule_skips_total{reason=\"Overlap\"} 0",
            "vexa_cards_refused_total{reason=\"CardTooMany\"} 0",
        ] {
            assert!(has(&metrics, line), "{line}");
        }
    }

    #[test]
    fn errors_are_counted_by_reason() {
        let metrics = Metrics::new();
        metrics.dispatch.reconcile_failed("RunnerNotFound");
        metrics.dispatch.reconcile_failed("RunnerNotFound");
        metrics.dispatch.reconcile_failed("KubeApi");
        assert!(has(
            &metrics,
            "vexa_dispatch_reconcile_errors_total{reason=\"RunnerNotFound\"} 2"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_reconcile_errors_total{reason=\"KubeApi\"} 1"
        ));
    }

    #[test]
    fn each_controller_has_its_own_metrics() {
        let metrics = Metrics::new();
        let timer = metrics.workspace.reconcile_started();
        drop(timer);
        metrics.workspace.reconcile_failed("PrepareFailed");
        assert!(has(&metrics, "vexa_workspace_reconciles_total 1"));
        assert!(has(&metrics, "vexa_dispatch_reconciles_total 0"));
        assert!(has(
            &metrics,
            "vexa_workspace_reconcile_errors_total{reason=\"PrepareFailed\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_workspace_reconcile_duration_seconds_count 1"
        ));
    }

    #[test]
    fn job_creation_latency_lands_in_its_bucket() {
        let metrics = Metrics::new();
        metrics.job_created(Duration::from_millis(300));
        assert!(has(
            &metrics,
            "vexa_dispatch_job_created_latency_seconds_bucket{le=\"0.25\"} 0"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_job_created_latency_seconds_bucket{le=\"0.5\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_job_created_latency_seconds_bucket{le=\"60.0\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_job_created_latency_seconds_sum 0.3"
        ));
    }

    #[test]
    fn what_a_worker_reports_is_counted_and_skewed_times_are_not() {
        use vexa_core::trace::Milestones;
        use vexa_core::{Published, Termination};
        let metrics = Metrics::new();
        let created = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let report = |first_event_ms: i64, turn: i64, done: i64| Termination {
            milestones: Some(Milestones {
                first_event: Some(first_event_ms),
                turn: Some(turn),
                done: Some(done),
                ..Milestones::default()
            }),
            published: Some(Published {
                events: 10,
                bytes: 2048,
            }),
            ..Termination::default()
        };
        let t0 = 1_800_000_000_000;
        metrics.dispatch_worker_report(Some(created), &report(t0 + 2_500, t0 + 2_000, t0 + 4_000));
        // A worker clock behind the API server's, and a turn that ends before it starts.
        metrics.dispatch_worker_report(Some(created), &report(t0 - 500, t0 + 9_000, t0 + 1_000));
        assert!(has(
            &metrics,
            "vexa_dispatch_first_event_latency_seconds_bucket{le=\"3.0\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_first_event_latency_seconds_count 1"
        ));
        assert!(has(&metrics, "vexa_dispatch_first_turn_seconds_count 1"));
        assert!(has(&metrics, "vexa_dispatch_first_turn_seconds_sum 2.0"));
        assert!(has(&metrics, "vexa_dispatch_stream_events_total 20"));
        assert!(has(&metrics, "vexa_dispatch_stream_bytes_total 4096"));
    }

    #[test]
    fn the_stages_of_runs_are_reported() {
        let metrics = Metrics::new();
        metrics.dispatch_running(2.5);
        metrics.dispatch_dequeued(40.0);
        metrics.dispatch_refused("NoGrant");
        metrics.dispatch_finished("completed");
        metrics.dispatch_finished("completed");
        assert!(has(
            &metrics,
            "vexa_dispatch_running_latency_seconds_bucket{le=\"3.0\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_running_latency_seconds_bucket{le=\"2.0\"} 0"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_queue_wait_seconds_bucket{le=\"60.0\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_refusals_total{reason=\"NoGrant\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_dispatch_runs_total{reason=\"completed\"} 2"
        ));
    }

    #[test]
    fn schedule_fires_skips_and_lateness_are_reported() {
        let metrics = Metrics::new();
        metrics
            .schedule_runs
            .fired(Some(chrono::TimeDelta::milliseconds(300)));
        metrics.schedule_runs.fired(None);
        metrics.schedule_runs.skipped("Overlap");
        assert!(has(&metrics, "vexa_schedule_fires_total 2"));
        assert!(has(
            &metrics,
            "vexa_schedule_skips_total{reason=\"Overlap\"} 1"
        ));
        assert!(has(
            &metrics,
            "vexa_schedule_fire_lateness_seconds_bucket{le=\"0.5\"} 1"
        ));
        assert!(has(&metrics, "vexa_schedule_fire_lateness_seconds_count 1"));
    }

    #[test]
    fn a_phase_that_empties_drops_to_zero() {
        let metrics = Metrics::new();
        let counts = BTreeMap::from([("running".to_owned(), 3), ("starting".to_owned(), 1)]);
        metrics.set_phase_counts(&counts);
        assert!(has(&metrics, "vexa_dispatches{phase=\"running\"} 3"));
        assert!(has(&metrics, "vexa_dispatches{phase=\"starting\"} 1"));

        metrics.set_phase_counts(&BTreeMap::from([("stopped".to_owned(), 4)]));
        assert!(has(&metrics, "vexa_dispatches{phase=\"running\"} 0"));
        assert!(has(&metrics, "vexa_dispatches{phase=\"starting\"} 0"));
        assert!(has(&metrics, "vexa_dispatches{phase=\"stopped\"} 4"));
    }

    #[test]
    fn the_encoding_is_openmetrics_with_types_and_an_eof() {
        let metrics = Metrics::new();
        metrics.dispatch.reconcile_failed("KubeApi");
        metrics.set_phase_counts(&BTreeMap::from([("running".to_owned(), 1)]));
        let text = lines(&metrics);
        for expected in [
            "# TYPE vexa_dispatch_reconciles counter",
            "# TYPE vexa_dispatch_reconcile_errors counter",
            "# TYPE vexa_dispatch_reconcile_duration_seconds histogram",
            "# UNIT vexa_dispatch_reconcile_duration_seconds seconds",
            "# TYPE vexa_dispatch_job_created_latency_seconds histogram",
            "# TYPE vexa_dispatches gauge",
        ] {
            assert!(
                text.iter().any(|line| line == expected),
                "no {expected:?} in {text:#?}"
            );
        }
        assert_eq!(text.last().map(String::as_str), Some("# EOF"));
    }
}
