//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica acts at a time.
//!
//! The rules are client-go's: a candidate takes the lease when it is free, or when its record
//! has not changed for a whole lease duration as measured on the candidate's own clock (so clock
//! skew between nodes does not matter); the leader renews every retry period and steps down when
//! it has not renewed within the renew deadline, which is shorter than the lease duration. Every
//! write is a replace guarded by the resourceVersion just read, so when two replicas race the API
//! server lets exactly one win.
//
// Why not `kube-lease-manager`: it takes over an expired lease in two writes (a forced release,
// then an apply), and renews with a patch that does not check who holds the lease, so two
// replicas can both believe they lead until the older one's next renewal.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::FIELD_MANAGER;
use crate::config::Config;

/// How long a lease lasts and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a candidate waits, from the last change it saw, before taking the lease over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down; less than `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between two attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why this replica stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another replica took the lease, or it could not be renewed before the renew deadline.
    #[error(
        "lost the leader lease {lease}: {reason}; exiting so that two replicas never act at once \
         (the pod restarts and rejoins the election)"
    )]
    LeadershipLost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What happened.
        reason: String,
    },
}

/// The outcome of one attempt to acquire or renew the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the lease.
    Leading,
    /// Another replica holds it and has renewed it recently.
    HeldBy(String),
    /// Someone wrote the lease between our read and our write; try again.
    Conflict,
}

/// The lease record last read, and when it last changed, on this replica's clock.
#[derive(Debug)]
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

/// Takes part in the election for one Lease under one identity.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
    // Start of the last attempt that renewed the lease: the API server recorded the renewal no
    // earlier, so other replicas cannot take over before this plus the lease duration.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    /// An elector for the Lease `namespace/lease_name`, as `identity` (unique per replica).
    pub fn new(client: kube::Client, namespace: &str, lease_name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            lease_name: lease_name.to_owned(),
            identity: identity.to_owned(),
            timing: Timing::default(),
            observed: None,
            renewed_at: None,
        }
    }

    /// Replaces the default [`Timing`].
    pub fn with_timing(self, timing: Timing) -> Self {
        Self { timing, ..self }
    }

    /// Waits until this replica holds the lease; sets `standby` once it knows another one does.
    pub async fn acquire(&mut self, standby: &watch::Sender<bool>) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.lease_ref(), identity = %self.identity, "became leader");
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.lease_ref(), %holder, "standing by: another replica leads");
                        last_holder = Some(holder);
                    }
                    standby.send_replace(true);
                }
                Ok(Attempt::Conflict) => {}
                Err(e) => tracing::warn!(
                    lease = %self.lease_ref(),
                    error = %e,
                    "reading or writing the leader lease failed; retrying (check the operator's Role allows get, create and update on leases)"
                ),
            }
            sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the lease every retry period for as long as it can; returns why it stopped leading.
    pub async fn hold(&mut self) -> Error {
        let mut last_failure = String::from("no renewal attempt finished");
        loop {
            let deadline =
                self.renewed_at.unwrap_or_else(Instant::now) + self.timing.renew_deadline;
            // Neither the wait nor the attempt may run past the deadline: the leader must stop
            // acting before any standby can consider the lease expired.
            let attempt = async {
                sleep(self.timing.retry_period).await;
                self.try_acquire_or_renew().await
            };
            match timeout_at(deadline, attempt).await {
                Ok(Ok(Attempt::Leading)) => {}
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return self.lost(format!("replica {holder} holds it now"));
                }
                Ok(Ok(Attempt::Conflict)) => {
                    last_failure = "the lease changed while it was being renewed".to_owned();
                }
                Ok(Err(e)) => last_failure = e.to_string(),
                Err(_elapsed) => {
                    return self.lost(format!(
                        "not renewed within {:?} (last failure: {last_failure})",
                        self.timing.renew_deadline
                    ));
                }
            }
        }
    }

    /// Frees the lease if this replica holds it, so that a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.lease_name, &post_params(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.lease_ref(), "released the leader lease");
                Ok(())
            }
            // Someone else wrote it since we read it: it is no longer ours to clear.
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    lease_transitions: Some(0),
                    ..claim(
                        &LeaseSpec::default(),
                        &self.identity,
                        self.timing,
                        Timestamp::now(),
                    )
                }),
            };
            return match self.api.create(&post_params(), &lease).await {
                Ok(created) => Ok(self.won(created, started)),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    Ok(Attempt::Conflict)
                }
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.take().unwrap_or_default();
        let unchanged_for = self.observe(&current);
        if let Some(holder) = holder(&current)
            && holder != self.identity
            && unchanged_for < lease_duration(&current, self.timing)
        {
            return Ok(Attempt::HeldBy(holder.to_owned()));
        }
        lease.spec = Some(claim(
            &current,
            &self.identity,
            self.timing,
            Timestamp::now(),
        ));
        match self
            .api
            .replace(&self.lease_name, &post_params(), &lease)
            .await
        {
            Ok(updated) => Ok(self.won(updated, started)),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, lease: Lease, started: Instant) -> Attempt {
        self.observe(&lease.spec.unwrap_or_default());
        self.renewed_at = Some(started);
        Attempt::Leading
    }

    /// Records the record just read; returns how long it has been unchanged.
    fn observe(&mut self, spec: &LeaseSpec) -> Duration {
        let now = Instant::now();
        match &self.observed {
            Some(seen) if seen.spec == *spec => now - seen.since,
            _ => {
                self.observed = Some(Observed {
                    spec: spec.clone(),
                    since: now,
                });
                Duration::ZERO
            }
        }
    }

    fn lost(&self, reason: String) -> Error {
        Error::LeadershipLost {
            lease: self.lease_ref(),
            reason,
        }
    }

    fn lease_ref(&self) -> String {
        format!(
            "{}/{}",
            self.api.namespace().unwrap_or_default(),
            self.lease_name
        )
    }
}

/// Runs `work` while this replica holds the leader lease, or at once when election is off.
///
/// `ready` turns true while this replica stands by (its role is known), then false when it
/// becomes leader; `work` receives it and turns it true once its caches have synced. A standby
/// must count as ready: with one replica and a rolling update the new pod waits for the old
/// one's lease, and the old pod is only stopped once the new one is ready.
///
/// Returns `Ok` when `shutdown` completes before this replica leads (nothing to release), or
/// when `work` returns (the lease is then released). When the lease is lost, `work` is dropped
/// at once and the error is returned: the caller must exit.
pub async fn run_when_leader<W, F>(
    client: kube::Client,
    config: &Config,
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
    work: W,
) -> Result<(), Error>
where
    W: FnOnce(watch::Sender<bool>) -> F,
    F: Future<Output = ()>,
{
    if !config.leader_election {
        work(ready).await;
        return Ok(());
    }
    let mut elector = LeaderElector::new(
        client,
        &config.namespace,
        &config.lease_name,
        &config.identity,
    );
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down before this replica led");
            return Ok(());
        }
        () = elector.acquire(&ready) => {}
    }
    ready.send_replace(false);
    tokio::select! {
        () = work(ready) => {}
        lost = elector.hold() => return Err(lost),
    }
    // Bounded: a shutdown must not hang on an unreachable API server; the lease then expires.
    match timeout(elector.timing.renew_deadline, elector.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "releasing the leader lease failed; a standby takes over once it expires"
        ),
        Err(_elapsed) => tracing::warn!(
            "releasing the leader lease timed out; a standby takes over once it expires"
        ),
    }
    Ok(())
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// The holder of a lease record, if any.
fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity
        .as_deref()
        .filter(|holder| !holder.is_empty())
}

/// The duration the record itself declares (its holder's setting), else ours.
fn lease_duration(spec: &LeaseSpec, timing: Timing) -> Duration {
    spec.lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(timing.lease_duration, Duration::from_secs)
}

/// The record with `identity` as holder, renewed at `now`; a new holder counts a transition.
fn claim(current: &LeaseSpec, identity: &str, timing: Timing, now: Timestamp) -> LeaseSpec {
    let renewing = holder(current) == Some(identity);
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(
            i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if renewing {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..current.clone()
    }
}

#[cfg(test)]
mod fake_api;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::Parser;
    use rstest::rstest;

    use super::fake_api::{FakeApi, Mode};
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn elector(api: &FakeApi, identity: &str) -> LeaderElector {
        LeaderElector::new(api.client(), "vexa-system", "vexa-operator", identity)
    }

    fn held_by(identity: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    fn config(leader_election: bool) -> Config {
        let mut config = Config::parse_from(["vexa-operator", "--audit-dir=unused"]);
        config.leader_election = leader_election;
        config.identity = "a".to_owned();
        config
    }

    #[test]
    fn a_renewal_keeps_the_acquire_time_and_a_takeover_counts_a_transition() {
        let acquired = MicroTime(Timestamp::UNIX_EPOCH);
        let mine = LeaseSpec {
            acquire_time: Some(acquired.clone()),
            ..held_by("a")
        };
        let now = Timestamp::now();

        let renewed = claim(&mine, "a", Timing::default(), now);
        assert_eq!(renewed.acquire_time, Some(acquired));
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
        assert_eq!(renewed.lease_transitions, Some(4));

        let taken = claim(&held_by("b"), "a", Timing::default(), now);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        assert_eq!(taken.lease_transitions, Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_lease_is_created_and_held() {
        let api = FakeApi::new();
        let (standby, _) = watch::channel(false);
        elector(&api, "a").acquire(&standby).await;
        let spec = api.spec().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert!(!*standby.borrow(), "a leader is not a standby");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_holder_is_replaced_after_one_lease_duration_whatever_its_clock_says() {
        let api = FakeApi::new();
        // The holder's clock runs an hour ahead: its renewTime cannot be trusted.
        let future = Timestamp::now().checked_add(k8s_openapi::jiff::SignedDuration::from_hours(1));
        api.write(LeaseSpec {
            renew_time: Some(MicroTime(future.unwrap())),
            ..held_by("b")
        });
        let (standby, ready) = watch::channel(false);
        let mut a = elector(&api, "a");

        let started = Instant::now();
        let acquired = tokio::spawn(async move { a.acquire(&standby).await });
        sleep(Duration::from_secs(1)).await;
        assert!(*ready.borrow(), "a standby that knows the leader is ready");
        acquired.await.unwrap();

        let waited = started.elapsed();
        assert!(
            waited >= LEASE && waited <= LEASE + Duration::from_secs(3),
            "{waited:?}"
        );
        let spec = api.spec().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_keeps_renewing_keeps_the_lease() {
        let api = FakeApi::new();
        let (standby, _) = watch::channel(false);
        let mut b = elector(&api, "b");
        b.acquire(&standby).await;
        tokio::spawn(async move { b.hold().await });

        let mut a = elector(&api, "a");
        let contest = timeout(Duration::from_secs(120), a.acquire(&standby)).await;
        assert!(contest.is_err(), "a took a lease that b kept renewing");
        assert_eq!(api.spec().unwrap().holder_identity.as_deref(), Some("b"));
    }

    #[rstest]
    #[case::no_lease_yet(None)]
    #[case::a_released_lease(Some(LeaseSpec::default()))]
    #[tokio::test(start_paused = true)]
    async fn of_racing_candidates_exactly_one_leads(#[case] start: Option<LeaseSpec>) {
        let api = FakeApi::new();
        if let Some(spec) = start {
            api.write(spec);
        }
        let leaders = Arc::new(AtomicUsize::new(0));
        for identity in ["a", "b", "c"] {
            let (mut candidate, leaders) = (elector(&api, identity), leaders.clone());
            tokio::spawn(async move {
                let (standby, _) = watch::channel(false);
                candidate.acquire(&standby).await;
                leaders.fetch_add(1, Ordering::SeqCst);
                let lost = candidate.hold().await;
                panic!("{identity} stopped leading: {lost}");
            });
        }
        sleep(Duration::from_secs(120)).await;
        assert_eq!(leaders.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_steps_down_when_another_replica_took_the_lease() {
        let api = FakeApi::new();
        let (standby, _) = watch::channel(false);
        let mut a = elector(&api, "a");
        a.acquire(&standby).await;
        api.write(held_by("b"));
        let Error::LeadershipLost { lease, reason } = a.hold().await;
        assert_eq!(lease, "vexa-system/vexa-operator");
        assert!(reason.contains("replica b"), "{reason}");
    }

    #[rstest]
    #[case::failing(Mode::Failing)]
    #[case::hanging(Mode::Hanging)]
    #[tokio::test(start_paused = true)]
    async fn the_leader_steps_down_before_anyone_may_take_over(#[case] mode: Mode) {
        let api = FakeApi::new();
        let (standby, _) = watch::channel(false);
        let mut a = elector(&api, "a");
        a.acquire(&standby).await;
        let acquired = Instant::now();
        api.set_mode(mode);

        let Error::LeadershipLost { reason, .. } = a.hold().await;
        let led_for = acquired.elapsed();
        assert!(led_for <= Timing::default().renew_deadline, "{led_for:?}");
        assert!(
            led_for < LEASE,
            "{led_for:?}: a standby may have taken over already"
        );
        assert!(reason.contains("not renewed within 10s"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn release_frees_only_a_lease_this_replica_holds() {
        let api = FakeApi::new();
        let (standby, _) = watch::channel(false);
        let mut a = elector(&api, "a");
        a.acquire(&standby).await;
        a.release().await.unwrap();
        assert_eq!(api.spec().unwrap().holder_identity, None);

        api.write(held_by("b"));
        a.release().await.unwrap();
        assert_eq!(api.spec().unwrap().holder_identity.as_deref(), Some("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn without_election_the_work_runs_at_once() {
        let (ready, _) = watch::channel(false);
        let api = FakeApi::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        let work = move |_ready: watch::Sender<bool>| async move {
            counted.fetch_add(1, Ordering::SeqCst);
        };
        run_when_leader(
            api.client(),
            &config(false),
            ready,
            std::future::pending(),
            work,
        )
        .await
        .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(api.spec(), None, "no lease is touched without election");
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_works_then_releases_the_lease() {
        let api = FakeApi::new();
        let (ready, ready_seen) = watch::channel(true);
        let work = |ready: watch::Sender<bool>| async move {
            assert!(
                !*ready.borrow(),
                "a new leader is not ready before its caches sync"
            );
            sleep(Duration::from_secs(60)).await;
        };
        run_when_leader(
            api.client(),
            &config(true),
            ready,
            std::future::pending(),
            work,
        )
        .await
        .unwrap();
        assert!(!*ready_seen.borrow());
        let spec = api.spec().unwrap();
        assert_eq!(
            spec.holder_identity, None,
            "the lease is released after the work"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_shut_down_never_works() {
        let api = FakeApi::new();
        api.write(held_by("b"));
        let (ready, _) = watch::channel(false);
        let work = |_ready: watch::Sender<bool>| async { panic!("a standby ran the controllers") };
        let shutdown = sleep(Duration::from_secs(5));
        run_when_leader(api.client(), &config(true), ready, shutdown, work)
            .await
            .unwrap();
        assert_eq!(api.spec().unwrap().holder_identity.as_deref(), Some("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lease_stops_the_work_and_reports_it() {
        let api = FakeApi::new();
        let (ready, _) = watch::channel(false);
        let thief = api.clone();
        let work = move |_ready: watch::Sender<bool>| async move {
            thief.write(held_by("b"));
            std::future::pending::<()>().await;
        };
        let config = config(true);
        let result = run_when_leader(api.client(), &config, ready, std::future::pending(), work);
        let err = timeout(Duration::from_secs(60), result)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("lost the leader lease vexa-system/vexa-operator"),
            "{err}"
        );
    }
}
