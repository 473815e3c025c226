//! Leader election against a real API server: `hack/cluster up`, `eval "$(hack/cluster env)"`,
//! then `cargo test -p vexa-operator --test leader_cluster -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::timeout;
use vexa_operator::runtime::leader::{LeaderElector, Timing};

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(4),
    renew_deadline: Duration::from_secs(3),
    retry_period: Duration::from_millis(500),
};

#[tokio::test]
#[ignore = "needs a cluster: hack/cluster up, and KUBECONFIG from hack/cluster env"]
async fn two_replicas_take_turns_on_a_real_lease() {
    let client = kube::Client::try_default().await.unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("vexa-leader-test-{nanos}");
    let namespaces = Api::<Namespace>::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    let elector = |identity| {
        LeaderElector::new(client.clone(), &ns, "vexa-operator", identity).with_timing(TIMING)
    };
    let (mut a, mut b) = (elector("a"), elector("b"));
    let (standby, _) = watch::channel(false);

    // Racing for a lease nobody holds yet: exactly one wins.
    let wait = 2 * TIMING.retry_period;
    let (won_a, won_b) = tokio::join!(
        timeout(wait, a.acquire(&standby)),
        timeout(wait, b.acquire(&standby))
    );
    assert!(
        won_a.is_ok() != won_b.is_ok(),
        "a won: {}, b won: {}",
        won_a.is_ok(),
        won_b.is_ok()
    );
    let (leader, follower, follower_id) = if won_a.is_ok() {
        (&mut a, &mut b, "b")
    } else {
        (&mut b, &mut a, "a")
    };

    // The race kept the winner from renewing; as the holder, acquiring again renews at once.
    timeout(TIMING.retry_period, leader.acquire(&standby))
        .await
        .unwrap();
    // While the leader renews, the follower waits well past a lease duration in vain.
    tokio::select! {
        lost = leader.hold() => panic!("the leader stopped leading: {lost}"),
        taken = timeout(3 * TIMING.lease_duration, follower.acquire(&standby)) => {
            assert!(taken.is_err(), "the follower took a lease that was being renewed");
        }
    }
    assert!(
        *standby.borrow(),
        "a standby that knows the leader is ready"
    );

    // Once released, the follower takes over within a retry period or two.
    leader.release().await.unwrap();
    timeout(3 * TIMING.retry_period, follower.acquire(&standby))
        .await
        .unwrap();
    let spec = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("vexa-operator")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.holder_identity.as_deref(), Some(follower_id));

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
