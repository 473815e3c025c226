//! The Schedule plan, pure: from a cron expression read in an IANA time zone, the time the
//! schedule was last considered and the current time (both given, never read from a clock),
//! which nominal times are due now, which are skipped and why, and when the next one is.
//!
//! Nominal times are instants (UTC): a Dispatch is named after its instant
//! ([`dispatch_name`]), so the two 01:30s of a fall-back night are two distinct runs when the
//! expression matches both, and a retry of the same time always finds the same name.
//!
//! DST, as [`croner`] implements the Open Cron Pattern Specification (pinned by the tests):
//! - **Spring forward (a gap)**: a fixed-time expression (numbers in minute and hour, e.g.
//!   `30 2 * * *` in `Europe/Berlin`) whose wall time does not exist that day fires **once, at
//!   the first instant after the gap** (03:00 CEST = 01:00 UTC on 2026-03-29). An expression
//!   with a wildcard or step in minute or hour (e.g. `30 * * * *`) simply has no run in the gap.
//! - **Fall back (a fold)**: a fixed-time expression (e.g. `30 1 * * *` in `America/New_York`)
//!   fires **once, at the first occurrence** (01:30 EDT = 05:30 UTC on 2026-11-01); an
//!   expression with a wildcard or step in minute or hour fires at every matching instant of
//!   both passes (01:30 EDT and 01:30 EST).
//!
//! Catch-up after downtime ([`CatchUp`]): only nominal times inside the window (measured back
//! from now) may still fire: `Latest` fires the newest of them, `All` the newest `max`, in
//! order. Every other missed time is skipped with a reason. The work is bounded by what is
//! reported, not by the length of the downtime: the plan walks back from now and stops after
//! the runs it fires and [`MAX_SKIPPED_LISTED`] skipped ones, so a year of a per-minute
//! schedule costs as much as ten minutes of it (no "too many missed start times" cliff).
//!
//! The controller maps `spec.startingDeadlineSeconds` (the window, widened by the jitter so a
//! run waiting for its offset is not missed) and `spec.catchUp` onto [`CatchUp`].

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use vexa_core::names::{MAX_JOB_NAME, bounded_name};

/// At most this many skipped times are listed in a plan (the status keeps ten); older ones are
/// only flagged by [`Plan::more_skipped`].
pub const MAX_SKIPPED_LISTED: usize = 10;

/// The most runs an `All` catch-up fires at once.
pub const MAX_CATCH_UP_RUNS: u32 = 100;

/// Why a schedule cannot be planned; each becomes the `Valid` condition's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The expression carries its own zone (`TZ=…` / `CRON_TZ=…`).
    #[error(
        "the schedule {0:?} names a time zone inside the expression; remove the TZ=/CRON_TZ= prefix and set spec.timeZone instead"
    )]
    ZoneInExpression(String),
    /// The zone is not in the operator's IANA database.
    #[error("unknown time zone {0:?}: use an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    UnknownZone(String),
    /// The expression does not parse.
    #[error("the schedule {expression:?} is not a valid five-field cron expression: {message}")]
    BadExpression {
        /// The expression as written.
        expression: String,
        /// What the parser said.
        message: String,
    },
    /// Searching for a matching time failed.
    #[error("cannot compute the times of the schedule {expression:?}: {message}")]
    Search {
        /// The expression as written.
        expression: String,
        /// What the search said.
        message: String,
    },
}

impl PlanError {
    /// The condition reason: short and bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::ZoneInExpression(_) => "TimeZoneInExpression",
            PlanError::UnknownZone(_) => "UnknownTimeZone",
            PlanError::BadExpression { .. } => "InvalidSchedule",
            PlanError::Search { .. } => "ScheduleSearchFailed",
        }
    }
}

/// A parsed cron expression and the zone it is read in.
#[derive(Debug, Clone)]
pub struct Cadence {
    expression: String,
    cron: Cron,
    zone: Tz,
}

impl Cadence {
    /// Parses a five-field expression (or a macro such as `@daily`) read in `time_zone`
    /// (an IANA name; `None` is UTC). A `TZ=`/`CRON_TZ=` prefix is refused: the zone has one
    /// place, `spec.timeZone`.
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, PlanError> {
        Self::parse_with(expression, time_zone, Seconds::Disallowed)
    }

    /// Parses a six-field expression whose first field is seconds: only for the operator's
    /// test mode (`--schedule-seconds-field`), so cluster evals can run a schedule every few
    /// seconds. Otherwise as [`Cadence::parse`].
    pub fn parse_with_seconds(
        expression: &str,
        time_zone: Option<&str>,
    ) -> Result<Self, PlanError> {
        Self::parse_with(expression, time_zone, Seconds::Required)
    }

    fn parse_with(
        expression: &str,
        time_zone: Option<&str>,
        seconds: Seconds,
    ) -> Result<Self, PlanError> {
        let upper = expression.to_ascii_uppercase();
        if upper.contains("TZ=") {
            return Err(PlanError::ZoneInExpression(expression.to_owned()));
        }
        let zone_name = time_zone.unwrap_or("UTC");
        let zone: Tz = zone_name
            .parse()
            .map_err(|_| PlanError::UnknownZone(zone_name.to_owned()))?;
        let cron = CronParser::builder()
            .seconds(seconds)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| PlanError::BadExpression {
                expression: expression.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Cadence {
            expression: expression.to_owned(),
            cron,
            zone,
        })
    }

    /// The first nominal time after `t` (not `t` itself), if any.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, PlanError> {
        self.found(
            self.cron
                .find_next_occurrence(&t.with_timezone(&self.zone), false),
        )
    }

    /// The last nominal time at or before `t` (`inclusive`) or strictly before it.
    fn previous(
        &self,
        t: DateTime<Utc>,
        inclusive: bool,
    ) -> Result<Option<DateTime<Utc>>, PlanError> {
        self.found(
            self.cron
                .find_previous_occurrence(&t.with_timezone(&self.zone), inclusive),
        )
    }

    fn found(
        &self,
        result: Result<DateTime<Tz>, CronError>,
    ) -> Result<Option<DateTime<Utc>>, PlanError> {
        match result {
            Ok(t) => Ok(Some(t.with_timezone(&Utc))),
            // An expression that never matches again (or never did) within croner's years.
            Err(CronError::TimeSearchLimitExceeded) => Ok(None),
            Err(e) => Err(PlanError::Search {
                expression: self.expression.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Which missed times still fire after downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// How late a nominal time may still fire (`None`: any time since the schedule was last
    /// considered). The Schedule's `startingDeadlineSeconds`.
    pub window: Option<TimeDelta>,
    /// Which of the times in the window fire.
    pub policy: CatchUpPolicy,
}

/// Which of the missed times inside the catch-up window fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CatchUpPolicy {
    /// Only the newest; the others are `Superseded`.
    #[default]
    Latest,
    /// The newest `max` (at least 1, at most [`MAX_CATCH_UP_RUNS`]), oldest first; older ones
    /// are `Superseded`.
    All {
        /// How many at most.
        max: u32,
    },
}

impl CatchUpPolicy {
    fn max_runs(self) -> usize {
        match self {
            CatchUpPolicy::Latest => 1,
            CatchUpPolicy::All { max } => max.clamp(1, MAX_CATCH_UP_RUNS) as usize,
        }
    }
}

/// Why a nominal time did not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// It is older than the catch-up window.
    MissedCatchupWindow,
    /// It is in the window, but newer times took its place (`Latest`, or `All` past its max).
    Superseded,
}

impl SkipReason {
    /// The reason as the status and the metric label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MissedCatchupWindow => "MissedCatchupWindow",
            SkipReason::Superseded => "Superseded",
        }
    }
}

/// A nominal time that does not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// The nominal time.
    pub nominal: DateTime<Utc>,
    /// Why.
    pub reason: SkipReason,
}

/// What is due at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Nominal times to fire now, oldest first.
    pub due: Vec<DateTime<Utc>>,
    /// Nominal times that do not fire, newest first, at most [`MAX_SKIPPED_LISTED`].
    pub skipped: Vec<Skipped>,
    /// Older missed times exist beyond `skipped`: not listed and not counted (counting them
    /// would cost time in proportion to the downtime), but decided all the same, as
    /// `Superseded` inside the window and `MissedCatchupWindow` before it.
    pub more_skipped: bool,
    /// Every nominal time up to this instant is decided: the next plan's `since`.
    pub considered_until: DateTime<Utc>,
    /// The first nominal time after `considered_until` (`None`: the expression never matches
    /// again).
    pub next: Option<DateTime<Utc>>,
}

/// Plans the nominal times in (`since`, `now`]: which fire, which are skipped, and the next.
/// `since` is when the schedule was last considered (its creation, the first time); a `now`
/// before it (a clock that went back) plans nothing and keeps `since`.
pub fn plan(
    cadence: &Cadence,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
) -> Result<Plan, PlanError> {
    let max_runs = catch_up.policy.max_runs();
    let oldest_in_window = catch_up.window.map(|w| now - w);
    let mut due = Vec::new();
    let mut skipped = Vec::new();
    let mut more_skipped = false;
    // Newest first, so the work stops once the runs and the listed skips are found.
    let mut cursor = cadence.previous(now, true)?;
    while let Some(t) = cursor.filter(|t| *t > since) {
        let in_window = oldest_in_window.is_none_or(|oldest| t >= oldest);
        if in_window && due.len() < max_runs {
            due.push(t);
        } else if skipped.len() == MAX_SKIPPED_LISTED {
            more_skipped = true;
            break;
        } else {
            let reason = if in_window {
                SkipReason::Superseded
            } else {
                SkipReason::MissedCatchupWindow
            };
            skipped.push(Skipped { nominal: t, reason });
        }
        cursor = cadence.previous(t, false)?;
    }
    due.reverse();
    let considered_until = now.max(since);
    Ok(Plan {
        due,
        skipped,
        more_skipped,
        considered_until,
        next: cadence.next_after(considered_until)?,
    })
}

/// The Dispatch a Schedule creates for a nominal time: `<schedule>-<unix seconds>`, at most 63
/// characters (a long schedule name is shortened with a hash of the whole name, so two long
/// names stay distinct). The same time always gives the same name, so a retry or a second
/// replica meets `AlreadyExists` and adopts the Dispatch instead of doubling it.
pub fn dispatch_name(schedule: &str, nominal: DateTime<Utc>) -> String {
    let suffix = nominal.timestamp().to_string();
    let keep = MAX_JOB_NAME - 1 - suffix.len();
    format!("{}-{suffix}", bounded_name(schedule, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::BTreeSet;
    use std::time::Instant;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    }

    fn cadence(expression: &str, zone: &str) -> Cadence {
        Cadence::parse(expression, Some(zone)).expect("a valid schedule")
    }

    fn unbounded(policy: CatchUpPolicy) -> CatchUp {
        CatchUp {
            window: None,
            policy,
        }
    }

    /// Every nominal time in (`from`, `to`], walking forward (the reference the plan must
    /// agree with).
    fn forward(c: &Cadence, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(n) = c.next_after(t).unwrap().filter(|n| *n <= to) {
            out.push(n);
            t = n;
        }
        out
    }

    #[rstest]
    #[case::tz_prefix("TZ=UTC 0 9 * * *", None, "TimeZoneInExpression")]
    #[case::cron_tz_prefix("CRON_TZ=Europe/Berlin 0 9 * * *", None, "TimeZoneInExpression")]
    #[case::lowercase_prefix("cron_tz=UTC 0 9 * * *", None, "TimeZoneInExpression")]
    #[case::unknown_zone("0 9 * * *", Some("Mars/Olympus_Mons"), "UnknownTimeZone")]
    #[case::zone_in_wrong_case("0 9 * * *", Some("europe/berlin"), "UnknownTimeZone")]
    #[case::minute_out_of_range("61 * * * *", None, "InvalidSchedule")]
    #[case::seconds_field("0 0 9 * * *", None, "InvalidSchedule")]
    #[case::four_fields("0 9 * *", None, "InvalidSchedule")]
    #[case::garbage("every day", None, "InvalidSchedule")]
    fn refused(#[case] expression: &str, #[case] zone: Option<&str>, #[case] reason: &str) {
        let err = Cadence::parse(expression, zone).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
    }

    #[rstest]
    #[case::utc_default("0 9 * * *", None)]
    #[case::zone("0 9 * * MON-FRI", Some("Europe/Berlin"))]
    #[case::macro_daily("@daily", Some("America/New_York"))]
    #[case::names("30 6 1 JAN,JUL ?", Some("Asia/Kolkata"))]
    fn accepted(#[case] expression: &str, #[case] zone: Option<&str>) {
        Cadence::parse(expression, zone).unwrap();
    }

    #[test]
    fn the_default_zone_is_utc() {
        let c = Cadence::parse("0 9 * * *", None).unwrap();
        assert_eq!(
            c.next_after(at("2026-06-01T10:00:00Z")).unwrap(),
            Some(at("2026-06-02T09:00:00Z"))
        );
    }

    // The DST behaviour the module docs state, across the night and the day around it.
    #[rstest]
    // Berlin springs forward on 2026-03-29 at 02:00 CET to 03:00 CEST: 02:30 does not exist.
    // A fixed time fires once, at the first instant after the gap (03:00 CEST).
    #[case::gap_fixed_time(
        "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z",
        &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    )]
    // A wildcard hour has no run in the gap: 01:30 CET, then 03:30 CEST.
    #[case::gap_wildcard_hour(
        "30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z",
        &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]
    )]
    // New York falls back on 2026-11-01 at 02:00 EDT to 01:00 EST: 01:30 happens twice. A
    // fixed time fires once, at the first (01:30 EDT = 05:30 UTC), not at 01:30 EST.
    #[case::fold_fixed_time(
        "30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z",
        &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    )]
    // A wildcard hour fires on both passes: 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST.
    #[case::fold_wildcard_hour(
        "30 * * * *", "America/New_York", "2026-11-01T04:00:00Z", "2026-11-01T07:45:00Z",
        &["2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"]
    )]
    fn dst(
        #[case] expression: &str,
        #[case] zone: &str,
        #[case] since: &str,
        #[case] now: &str,
        #[case] expected: &[&str],
    ) {
        let c = cadence(expression, zone);
        let expected: Vec<_> = expected.iter().map(|s| at(s)).collect();
        let catch_up = unbounded(CatchUpPolicy::All { max: 10 });
        // All at once, walking back from `now`…
        let p = plan(&c, at(since), at(now), catch_up).unwrap();
        assert_eq!(p.due, expected);
        assert!(p.skipped.is_empty());
        // …and one reconcile per nominal time, walking forward, agree.
        let mut t = at(since);
        let mut fired = Vec::new();
        while let Some(n) = c.next_after(t).unwrap().filter(|n| *n <= at(now)) {
            let p = plan(&c, t, n, catch_up).unwrap();
            assert_eq!(p.due, vec![n]);
            fired.push(n);
            t = p.considered_until;
        }
        assert_eq!(fired, expected);
    }

    // Hourly in UTC, last considered at 00:00, the operator back at 05:10: 01:00 … 05:00 missed.
    #[rstest]
    #[case::latest_unbounded(None, CatchUpPolicy::Latest,
        &["05:00"], &[("04:00", "Superseded"), ("03:00", "Superseded"), ("02:00", "Superseded"), ("01:00", "Superseded")])]
    #[case::all_unbounded(None, CatchUpPolicy::All { max: 10 },
        &["01:00", "02:00", "03:00", "04:00", "05:00"], &[])]
    #[case::all_capped(None, CatchUpPolicy::All { max: 2 },
        &["04:00", "05:00"], &[("03:00", "Superseded"), ("02:00", "Superseded"), ("01:00", "Superseded")])]
    #[case::all_zero_means_one(None, CatchUpPolicy::All { max: 0 },
        &["05:00"], &[("04:00", "Superseded"), ("03:00", "Superseded"), ("02:00", "Superseded"), ("01:00", "Superseded")])]
    #[case::window_all(Some(9000), CatchUpPolicy::All { max: 10 },
        &["03:00", "04:00", "05:00"], &[("02:00", "MissedCatchupWindow"), ("01:00", "MissedCatchupWindow")])]
    #[case::window_latest(Some(9000), CatchUpPolicy::Latest,
        &["05:00"], &[("04:00", "Superseded"), ("03:00", "Superseded"), ("02:00", "MissedCatchupWindow"), ("01:00", "MissedCatchupWindow")])]
    #[case::window_edge_is_inside(Some(600), CatchUpPolicy::Latest,
        &["05:00"], &[("04:00", "MissedCatchupWindow"), ("03:00", "MissedCatchupWindow"), ("02:00", "MissedCatchupWindow"), ("01:00", "MissedCatchupWindow")])]
    #[case::window_too_short(Some(60), CatchUpPolicy::All { max: 10 },
        &[], &[("05:00", "MissedCatchupWindow"), ("04:00", "MissedCatchupWindow"), ("03:00", "MissedCatchupWindow"), ("02:00", "MissedCatchupWindow"), ("01:00", "MissedCatchupWindow")])]
    fn catch_up(
        #[case] window_seconds: Option<i64>,
        #[case] policy: CatchUpPolicy,
        #[case] due: &[&str],
        #[case] skipped: &[(&str, &str)],
    ) {
        let hour = |hm: &str| at(&format!("2026-06-01T{hm}:00Z"));
        let c = cadence("0 * * * *", "UTC");
        let catch_up = CatchUp {
            window: window_seconds.map(TimeDelta::seconds),
            policy,
        };
        let p = plan(&c, hour("00:00"), hour("05:10"), catch_up).unwrap();
        assert_eq!(p.due, due.iter().map(|h| hour(h)).collect::<Vec<_>>());
        let got: Vec<_> = p
            .skipped
            .iter()
            .map(|s| (s.nominal, s.reason.as_str()))
            .collect();
        let want: Vec<_> = skipped.iter().map(|(h, r)| (hour(h), *r)).collect();
        assert_eq!(got, want);
        assert!(!p.more_skipped);
        assert_eq!(p.considered_until, hour("05:10"));
        assert_eq!(p.next, Some(hour("06:00")));
    }

    #[rstest]
    // Nothing happened since: nothing due, the next one is ahead.
    #[case::quiet("2026-06-01T05:00:00Z", "2026-06-01T05:59:59Z", "2026-06-01T05:59:59Z")]
    // A `since` on a nominal time excludes it: it was decided already.
    #[case::since_on_a_nominal_time(
        "2026-06-01T05:00:00Z",
        "2026-06-01T05:00:00Z",
        "2026-06-01T05:00:00Z"
    )]
    // A clock that went back plans nothing and keeps `since`.
    #[case::clock_went_back("2026-06-01T05:30:00Z", "2026-06-01T04:10:00Z", "2026-06-01T05:30:00Z")]
    fn nothing_due(#[case] since: &str, #[case] now: &str, #[case] considered_until: &str) {
        let c = cadence("0 * * * *", "UTC");
        let p = plan(&c, at(since), at(now), unbounded(CatchUpPolicy::Latest)).unwrap();
        assert!(p.due.is_empty() && p.skipped.is_empty() && !p.more_skipped);
        assert_eq!(p.considered_until, at(considered_until));
        assert_eq!(p.next, Some(at("2026-06-01T06:00:00Z")));
    }

    #[test]
    fn a_time_exactly_now_is_due() {
        let c = cadence("0 * * * *", "UTC");
        let now = at("2026-06-01T05:00:00Z");
        let p = plan(
            &c,
            at("2026-06-01T04:30:00Z"),
            now,
            unbounded(CatchUpPolicy::Latest),
        )
        .unwrap();
        assert_eq!(p.due, vec![now]);
        assert_eq!(p.next, Some(at("2026-06-01T06:00:00Z")));
    }

    #[test]
    fn an_expression_that_never_matches_has_no_next() {
        let c = cadence("0 0 30 2 *", "UTC");
        let p = plan(
            &c,
            at("2026-01-01T00:00:00Z"),
            at("2026-06-01T00:00:00Z"),
            unbounded(CatchUpPolicy::Latest),
        )
        .unwrap();
        assert!(p.due.is_empty());
        assert_eq!(p.next, None);
    }

    // A year of a per-minute schedule missed (525 600 nominal times): the plan lists only what
    // it fires and ten skips, and takes about as long as a plan over ten minutes.
    #[rstest]
    #[case::latest(CatchUpPolicy::Latest, 1)]
    #[case::all(CatchUpPolicy::All { max: 1000 }, MAX_CATCH_UP_RUNS as usize)]
    fn a_year_of_downtime_is_cheap(#[case] policy: CatchUpPolicy, #[case] runs: usize) {
        let c = cadence("* * * * *", "Europe/Berlin");
        let since = at("2025-06-01T00:00:00Z");
        let now = at("2026-06-01T00:00:30Z");
        let started = Instant::now();
        let p = plan(&c, since, now, unbounded(policy)).unwrap();
        let took = started.elapsed();
        assert_eq!(p.due.len(), runs);
        assert_eq!(p.due.last(), Some(&at("2026-06-01T00:00:00Z")));
        assert_eq!(p.skipped.len(), MAX_SKIPPED_LISTED);
        assert!(p.more_skipped);
        assert!(p.skipped.iter().all(|s| s.reason == SkipReason::Superseded));
        assert_eq!(p.next, Some(at("2026-06-01T00:01:00Z")));
        eprintln!("a year of per-minute downtime ({policy:?}) planned in {took:?}");
        assert!(took.as_millis() < 500, "took {took:?}");
    }

    // Thirty days of a working-hours schedule in Berlin across the spring-forward night,
    // reconciled at irregular intervals (some longer than the window): every nominal time is
    // decided exactly once, fired if it was at most the window late at its reconcile, skipped
    // otherwise, and nothing is fired before its time.
    #[rstest]
    #[case::latest(CatchUpPolicy::Latest)]
    #[case::all(CatchUpPolicy::All { max: 3 })]
    fn thirty_days_of_reconciles_decide_every_time_once(#[case] policy: CatchUpPolicy) {
        let c = cadence("*/7 8-18 * * MON-FRI", "Europe/Berlin");
        let start = at("2026-03-15T00:00:00Z");
        let end = at("2026-04-14T00:00:00Z");
        let window = TimeDelta::minutes(20);
        let catch_up = CatchUp {
            window: Some(window),
            policy,
        };
        let expected = forward(&c, start, end);
        let started = Instant::now();
        let mut decided = BTreeSet::new();
        let mut fired = 0;
        let (mut since, mut now, mut step) = (start, start, 0i64);
        while now < end {
            // 1, 4, 9, … 49 minutes, then again: some reconciles come after a long gap.
            step = step % 7 + 1;
            now = (now + TimeDelta::minutes(step * step)).min(end);
            let p = plan(&c, since, now, catch_up).unwrap();
            assert!(!p.more_skipped, "at most 7 missed between reconciles");
            for t in &p.due {
                assert!(*t <= now && now - *t <= window, "{t} fired at {now}");
                assert!(decided.insert(*t), "{t} fired twice");
                fired += 1;
            }
            for s in &p.skipped {
                assert!(decided.insert(s.nominal), "{} decided twice", s.nominal);
            }
            assert_eq!(p.next, c.next_after(now).unwrap());
            since = p.considered_until;
        }
        let took = started.elapsed();
        assert_eq!(decided.into_iter().collect::<Vec<_>>(), expected);
        assert!(fired > expected.len() / 5, "{fired} of {}", expected.len());
        eprintln!(
            "30 days, {} nominal times, {fired} fired ({policy:?}), in {took:?}",
            expected.len()
        );
        assert!(took.as_millis() < 2000, "took {took:?}");
    }

    #[test]
    fn dispatch_names_are_deterministic_and_distinct() {
        let t = at("2026-06-01T09:00:00Z");
        assert_eq!(dispatch_name("daily-digest", t), "daily-digest-1780304400");
        assert_eq!(
            dispatch_name("daily-digest", t),
            dispatch_name("daily-digest", t)
        );
        assert_ne!(
            dispatch_name("daily-digest", t),
            dispatch_name("daily-digest", t + TimeDelta::minutes(1))
        );
        // The two 01:30s of a fall-back night are two runs, two names.
        let c = cadence("30 * * * *", "America/New_York");
        let both = forward(&c, at("2026-11-01T05:00:00Z"), at("2026-11-01T06:45:00Z"));
        assert_eq!(both.len(), 2);
        assert_ne!(dispatch_name("s", both[0]), dispatch_name("s", both[1]));
    }

    #[rstest]
    #[case::short("a")]
    #[case::exactly_fits(&"a".repeat(52))]
    #[case::one_too_long(&"a".repeat(53))]
    #[case::longest_object_name(&format!("{}-z", "x".repeat(251)))]
    #[case::dot_at_the_cut(&format!("{}.{}", "b".repeat(42), "c".repeat(30)))]
    fn dispatch_names_fit_in_63_characters(#[case] schedule: &str) {
        let t = at("2026-06-01T09:00:00Z");
        let name = dispatch_name(schedule, t);
        assert!(name.len() <= 63, "{name} ({})", name.len());
        assert!(name.ends_with("-1780304400"), "{name}");
        let label = |s: &str| {
            s.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
        };
        assert!(label(&name), "{name} is not a DNS-1123 name");
        // Two long names that differ only past the cut stay distinct.
        let other = format!("{schedule}x");
        if schedule.len() > 52 {
            assert_ne!(name, dispatch_name(&other, t));
        }
    }
}
