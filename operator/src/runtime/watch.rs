//! Watches that keep going: every one backs off on errors, and a watch of one of our kinds
//! survives an object it cannot read, so one bad object never stops a controller.

use std::borrow::Cow;
use std::fmt::Debug;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::cache::Cache;

/// An object of kind `K` as the API server sent it: readable, or not (written under another
/// schema, or by a newer operator). Reading never fails, so a list is never lost to one object.
#[derive(Clone, Debug)]
// Valid objects are the common case: boxing them would cost an allocation for each one.
#[allow(clippy::large_enum_variant)]
pub enum Lenient<K> {
    /// The object, read as `K`.
    Valid(K),
    /// An object that is not a valid `K`: its metadata and why.
    Invalid {
        /// What could be read of its metadata.
        metadata: ObjectMeta,
        /// Why it could not be read.
        error: String,
    },
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match K::deserialize(&value) {
            Ok(object) => Ok(Lenient::Valid(object)),
            Err(e) => Ok(Lenient::Invalid {
                metadata: value
                    .get("metadata")
                    .and_then(|m| ObjectMeta::deserialize(m).ok())
                    .unwrap_or_default(),
                error: e.to_string(),
            }),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Valid(k) => k.meta_mut(),
            Lenient::Invalid { metadata, .. } => metadata,
        }
    }
}

/// The readable objects of a watch event; an unreadable one is logged and left out.
pub fn readable<K: Resource<DynamicType = ()>>(
    event: watcher::Event<Lenient<K>>,
) -> Option<watcher::Event<K>> {
    let valid = |o: Lenient<K>| match o {
        Lenient::Valid(k) => Some(k),
        Lenient::Invalid { metadata, error } => {
            tracing::warn!(
                kind = %K::kind(&()),
                namespace = ?metadata.namespace,
                name = ?metadata.name,
                %error,
                "skipping an object that cannot be read; fix or delete it"
            );
            None
        }
    };
    Some(match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(valid(o)?),
        watcher::Event::Delete(o) => watcher::Event::Delete(valid(o)?),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(valid(o)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

/// A watch of every `K` that backs off on errors and skips objects it cannot read.
pub fn lenient<K>(
    client: kube::Client,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::Scope: Send + Sync,
{
    watcher(Api::<Lenient<K>>::all(client), config)
        .default_backoff()
        .try_filter_map(|e| futures::future::ready(Ok(readable(e))))
}

/// What a controller of `K` that acts on new generations reads: a store of every readable `K`
/// (managed fields dropped) and the objects whose generation changed (or that are new). Its
/// own status writes do not bump the generation, so they start no reconcile; a requeue does
/// the rest.
pub fn by_generation<K>(
    client: kube::Client,
) -> (
    reflector::Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::Scope: Send + Sync,
{
    let (store, writer) = reflector::store();
    let objects = lenient::<K>(client, watcher::Config::default().any_semantic())
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(kube::runtime::predicates::generation, Default::default());
    (store, objects)
}

/// Runs a controller of `K` over `watch` (see [`by_generation`]) until `shutdown` resolves:
/// `concurrency` reconciles at once, none of the same object twice at a time.
pub async fn drive<K, Ctx, Fut>(
    watch: (
        reflector::Store<K>,
        impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    ),
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    reconcile: impl FnMut(std::sync::Arc<K>, std::sync::Arc<Ctx>) -> Fut,
    error_policy: impl Fn(
        std::sync::Arc<K>,
        &Fut::Error,
        std::sync::Arc<Ctx>,
    ) -> kube::runtime::controller::Action,
    ctx: std::sync::Arc<Ctx>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    Fut: futures::TryFuture<Ok = kube::runtime::controller::Action> + Send + 'static,
    Fut::Error: std::error::Error + Send + 'static,
{
    let (store, objects) = watch;
    kube::runtime::Controller::for_stream(objects, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind = %K::kind(&()), error = %e, "controller event");
            }
        })
        .await;
}

/// A cache of every readable `K`, kept filled by a spawned watch (abort it to stop). Nothing
/// is triggered by it: it serves reads.
pub fn cached<K>(client: kube::Client) -> (Cache<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::Scope: Send + Sync,
{
    let (store, writer) = reflector::store();
    let cache = Cache::new(store);
    let observer = cache.clone();
    let watch = lenient::<K>(client, watcher::Config::default())
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |e| observer.observe(e))
        .for_each(|e| async move {
            if let Err(e) = e {
                tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
            }
        });
    (cache, tokio::spawn(watch))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vexa_crds::Workspace;

    fn list(items: serde_json::Value) -> kube::core::ObjectList<Lenient<Workspace>> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "vexa.ai/v1", "kind": "WorkspaceList",
            "metadata": {"resourceVersion": "7"},
            "items": items,
        }))
        .unwrap()
    }

    #[test]
    fn one_unreadable_object_does_not_cost_the_list() {
        let good = serde_json::json!({
            "apiVersion": "vexa.ai/v1", "kind": "Workspace",
            "metadata": {"name": "good", "namespace": "t"},
            "spec": {"id": "good", "owner": "alice",
                     "storage": {"persistentVolumeClaim": {"claimName": "c"}}},
        });
        // Written under another schema: `storage` is a string, `owner` missing.
        let bad = serde_json::json!({
            "apiVersion": "vexa.ai/v1", "kind": "Workspace",
            "metadata": {"name": "bad", "namespace": "t"},
            "spec": {"id": "bad", "storage": "somewhere"},
        });
        let items = list(serde_json::json!([bad, good])).items;
        assert_eq!(items.len(), 2);
        let events: Vec<_> = items
            .into_iter()
            .filter_map(|o| readable(watcher::Event::InitApply(o)))
            .collect();
        assert_eq!(events.len(), 1);
        let watcher::Event::InitApply(w) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(w.name_any(), "good");
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_for_the_log() {
        let bad: Lenient<Workspace> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bad", "namespace": "t", "uid": "u-1"},
            "spec": 42,
        }))
        .unwrap();
        let Lenient::Invalid { metadata, error } = &bad else {
            panic!("{bad:?}")
        };
        assert_eq!(metadata.uid.as_deref(), Some("u-1"));
        assert!(error.contains("invalid type"), "{error}");
        assert_eq!(bad.name_any(), "bad");
        assert!(readable(watcher::Event::Delete(bad)).is_none());
        assert!(matches!(
            readable::<Workspace>(watcher::Event::InitDone),
            Some(watcher::Event::InitDone)
        ));
    }
}
