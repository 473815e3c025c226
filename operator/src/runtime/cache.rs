//! The reflector caches of the objects the operator creates (Jobs and their pods), which the
//! controller's watches fill anyway, and of the objects a Dispatch refers to (AgentRunners,
//! Workspaces, Tools). A reconcile reads them instead of asking the API server.
//!
//! A cache can lag behind the API server. It is read only where acting on a stale view is
//! harmless or converges: an object it holds existed a moment ago, and a watch event triggers
//! a new reconcile when it changes. Where an absence decides something that cannot be undone
//! (a run declared over), the caller confirms it with a GET.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// A reflector store and whether its first list has arrived.
#[derive(Clone)]
pub struct Cache<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    synced: Arc<AtomicBool>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> std::fmt::Debug for Cache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("objects", &self.store.len())
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    /// A cache over `store`, not yet synced: until it is, readers ask the API server.
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            synced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A cache over `store` that already holds everything (tests).
    pub fn synced(store: Store<K>) -> Self {
        let cache = Self::new(store);
        cache.synced.store(true, Ordering::Release);
        cache
    }

    /// Marks the cache synced once the watch's initial list has reached the store. Used as
    /// `.inspect(...)` on the reflected watch stream.
    pub fn observe(&self, event: &Result<watcher::Event<K>, watcher::Error>) {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            self.synced.store(true, Ordering::Release);
        }
    }

    /// The object `name` (in `ns`, if namespaced). A miss, or a cache not synced yet, asks
    /// `api`: a reference that is only new must not be reported missing.
    pub async fn get_or_fetch(
        &self,
        api: &Api<K>,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<K>>, kube::Error>
    where
        K: serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Some(store) = self.store() {
            let key = ObjectRef::new(name);
            let key = match ns {
                Some(ns) => key.within(ns),
                None => key,
            };
            if let Some(o) = store.get(&key) {
                return Ok(Some(o));
            }
        }
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

    /// The store, once it holds the initial list. Before that (just after a start, when the
    /// controller already reconciles) an absence in it would mean nothing.
    pub fn store(&self) -> Option<&Store<K>> {
        self.synced.load(Ordering::Acquire).then_some(&self.store)
    }
}
