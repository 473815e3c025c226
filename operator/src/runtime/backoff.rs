//! Per-object exponential backoff of failed reconciles: 1 s, 2 s, 4 s … up to 5 minutes,
//! reset by the next successful reconcile of that object.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;

/// The longest wait between two attempts.
const CEILING: Duration = Duration::from_secs(300);

/// Failure counts per object.
#[derive(Debug)]
pub struct Backoff<K: kube::Resource<DynamicType = ()>> {
    failures: Mutex<HashMap<ObjectRef<K>, u32>>,
}

impl<K: kube::Resource<DynamicType = ()>> Default for Backoff<K> {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()>> Backoff<K> {
    /// Forgets the failures of `object` (its reconcile succeeded).
    pub fn reset(&self, object: &K) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ObjectRef::from_obj(object));
    }

    /// Counts one more failure of `object` and returns how long to wait before the next try.
    pub fn next(&self, object: &K) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from_obj(object)).or_insert(0);
        *count = count.saturating_add(1);
        let doublings = (*count).min(9).saturating_sub(1);
        Duration::from_secs(1u64 << doublings).min(CEILING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexa_crds::Workspace;

    fn ws(name: &str) -> Workspace {
        let mut w = Workspace::new(
            name,
            serde_json::from_value(serde_json::json!({
                "id": name, "owner": "alice",
                "storage": {"persistentVolumeClaim": {"claimName": "c"}}
            }))
            .unwrap_or_else(|e| panic!("{e}")),
        );
        w.metadata.namespace = Some("ns".into());
        w
    }

    #[test]
    fn backoff_doubles_per_object_up_to_five_minutes_and_resets() {
        let b = Backoff::default();
        let (a, other) = (ws("a"), ws("b"));
        let waits: Vec<u64> = (0..11).map(|_| b.next(&a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        assert_eq!(b.next(&other).as_secs(), 1);
        b.reset(&a);
        assert_eq!(b.next(&a).as_secs(), 1);
    }
}
