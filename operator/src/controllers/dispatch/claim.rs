//! Exclusive writing: at most one live Dispatch writes a workspace's folder. The lock is a
//! Lease named from the storage (claim and folder, `workspace::storage`), so two Workspace
//! objects naming the same folder share it. It is taken and released with a resourceVersion
//! precondition, so two operators (or two concurrent reconciles) can never both win it.
//! Waiting dispatches are served first come, first served. The Workspace controller shows the
//! holder in `status.heldBy`; only this module writes the lock.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use vexa_crds::{Dispatch, DispatchPhase, Workspace, WorkspaceMode};

use super::error::Error;
use crate::controllers::workspace::storage::{self, HEAD_ANNOTATION, LOCK_LABEL, Storage};

/// The outcome of trying to claim a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This dispatch holds it.
    Held,
    /// Another dispatch holds it or is ahead in the queue.
    Busy {
        /// Who.
        holder: String,
    },
}

/// Whether a dispatch in this phase no longer needs its workspaces (its phase is terminal).
pub fn is_finished(phase: Option<DispatchPhase>) -> bool {
    phase.is_some_and(DispatchPhase::is_terminal)
}

/// Whether `d` still runs (or may): not finished, not being deleted. Only such a Dispatch holds
/// a lock.
pub fn is_live(d: &Dispatch) -> bool {
    !is_finished(d.status.as_ref().and_then(|s| s.phase)) && d.metadata.deletion_timestamp.is_none()
}

/// Whether the holder `h` of a lock in `ns` still writes: a live Dispatch, or a Card
/// (`card:<name>`) whose approved record is being committed. Any other holder is stale.
pub async fn holder_alive(client: &kube::Client, ns: &str, h: &str) -> Result<bool, kube::Error> {
    use crate::controllers::card::applier::{CARD_HOLDER_PREFIX, is_applying};
    if let Some(card) = h.strip_prefix(CARD_HOLDER_PREFIX) {
        let card = Api::<vexa_crds::Card>::namespaced(client.clone(), ns)
            .get_opt(card)
            .await?;
        return Ok(card.as_ref().is_some_and(is_applying));
    }
    let other = Api::<Dispatch>::namespaced(client.clone(), ns)
        .get_opt(h)
        .await?;
    Ok(other.as_ref().is_some_and(is_live))
}

/// The folders `d` may want to write (an unset mode may default to `rw`), given the storage
/// of each workspace name.
fn wants_rw(d: &Dispatch, folder: &Storage, storage_of: &impl Fn(&str) -> Option<Storage>) -> bool {
    d.spec.trigger.is_trusted()
        && d.spec.workspaces.iter().any(|w| {
            w.mode != Some(WorkspaceMode::ReadOnly)
                && storage_of(&w.name).is_some_and(|s| s == *folder)
        })
}

/// An older dispatch in the same namespace, not yet started, that waits for the same folder:
/// it goes first.
fn ahead_in_queue(
    store: &Store<Dispatch>,
    me: &Dispatch,
    folder: &Storage,
    storage_of: &impl Fn(&str) -> Option<Storage>,
) -> Option<String> {
    let key = |d: &Dispatch| {
        (
            d.metadata.creation_timestamp.clone().map(|t| t.0),
            d.metadata.name.clone(),
        )
    };
    let mine = key(me);
    store
        .state()
        .iter()
        .filter(|d| {
            d.metadata.namespace == me.metadata.namespace && d.metadata.name != me.metadata.name
        })
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| {
            matches!(
                d.status.as_ref().and_then(|s| s.phase),
                Some(DispatchPhase::Queued)
            )
        })
        .filter(|d| d.spec.stop != Some(true) && wants_rw(d, folder, storage_of))
        .filter(|d| key(d) < mine)
        .min_by_key(|d| key(d))
        .and_then(|d| d.metadata.name.clone())
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A new lock on `folder`, held by `holder`.
fn new_lock(ns: &str, folder: &Storage, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(folder.lock_name()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([
                (LOCK_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::FIELD_MANAGER.to_owned(),
                ),
            ])),
            annotations: Some(folder.annotations()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            acquire_time: Some(now()),
            ..LeaseSpec::default()
        }),
    }
}

/// Tries to claim the folder of `workspace` for `me`. `storage_of` gives the folder of a
/// workspace name in `me`'s namespace (for the queue).
pub async fn claim(
    client: &kube::Client,
    store: &Store<Dispatch>,
    me: &Dispatch,
    workspace: &Workspace,
    storage_of: impl Fn(&str) -> Option<Storage>,
) -> Result<Claim, Error> {
    let ns = me.metadata.namespace.as_deref().ok_or(Error::Malformed)?;
    let my_name = me.metadata.name.as_deref().ok_or(Error::Malformed)?;
    let folder = Storage::of(&workspace.spec);
    // A name the cache cannot place yet is taken for this folder when it is this workspace's.
    let my_workspace = workspace.metadata.name.clone().unwrap_or_default();
    let storage_of =
        |name: &str| storage_of(name).or_else(|| (name == my_workspace).then(|| folder.clone()));
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    let lock = api.get_opt(&folder.lock_name()).await?;
    if let Some(h) = lock.as_ref().and_then(storage::holder) {
        if h == my_name {
            return Ok(Claim::Held);
        }
        if holder_alive(client, ns, h).await? {
            return Ok(Claim::Busy {
                holder: h.to_owned(),
            });
        }
        // The holder is gone or done: its claim is stale and may be taken over.
    }
    if let Some(first) = ahead_in_queue(store, me, &folder, &storage_of) {
        return Ok(Claim::Busy { holder: first });
    }
    let written = match lock {
        None => {
            api.create(&PostParams::default(), &new_lock(ns, &folder, my_name))
                .await
        }
        Some(mut lock) => {
            // Keeps the resourceVersion: a concurrent change makes this a 409.
            let spec = lock.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(my_name.to_owned());
            spec.acquire_time = Some(now());
            api.replace(&folder.lock_name(), &PostParams::default(), &lock)
                .await
        }
    };
    match written {
        Ok(_) => Ok(Claim::Held),
        // Someone else took it first: report busy; the next reconcile decides.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Busy {
            holder: "(concurrent claim)".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Releases the folder of `workspace` if `me` holds it, leaving `head` (the commit the run
/// ended on) on the lock for the Workspace's `headCommit`.
pub async fn release(
    client: &kube::Client,
    me: &Dispatch,
    workspace: &Workspace,
    head: Option<&str>,
) -> Result<(), Error> {
    let ns = me.metadata.namespace.as_deref().ok_or(Error::Malformed)?;
    let my_name = me.metadata.name.as_deref().ok_or(Error::Malformed)?;
    let folder = Storage::of(&workspace.spec);
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    let Some(mut lock) = api.get_opt(&folder.lock_name()).await? else {
        return Ok(());
    };
    if storage::holder(&lock) != Some(my_name) {
        return Ok(());
    }
    if let Some(spec) = lock.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
    }
    if let Some(head) = head {
        lock.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(HEAD_ANNOTATION.to_owned(), head.to_owned());
    }
    match api
        .replace(&folder.lock_name(), &PostParams::default(), &lock)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()), // changed meanwhile; a later reconcile retries
        Err(e) => Err(e.into()),
    }
}
