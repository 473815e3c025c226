//! The Workspace decision, pure: from the Workspace and what was observed, the status it should
//! have, the children to create, the finalizer, and the events to publish.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use vexa_crds::{ReclaimPolicy, Workspace, WorkspaceStatus};
use vexa_policy::PrepareReport;

use super::children::{self, Settings};
use super::observe::{Observed, Prepare};
use super::storage::{self, Storage};
use crate::runtime::conditions::{ConditionType, Conditions, find};
use crate::runtime::events::Note;

/// The finalizer that keeps a Workspace until no run writes its folder.
pub const FINALIZER: &str = "vexa.ai/workspace-protection";
/// How often a workspace waiting for something nothing watches (a claim made by someone else,
/// a seed ConfigMap, an overlapping workspace going away) looks again.
pub const WAIT_POLL: Duration = Duration::from_secs(10);

/// What the finalizer should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalizer {
    /// Add it (a live Workspace without it).
    Add,
    /// Remove it: the Workspace may go.
    Remove,
    /// Leave it as it is.
    Keep,
}

/// Everything the reconcile should do.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The status to write (`None`: the object is going away, write nothing).
    pub status: Option<WorkspaceStatus>,
    /// A claim to create.
    pub claim: Option<PersistentVolumeClaim>,
    /// A prepare Job to create.
    pub prepare_job: Option<Job>,
    /// The finalizer.
    pub finalizer: Finalizer,
    /// Delete the claim the operator created (reclaim policy `Delete`, no other user).
    pub delete_claim: bool,
    /// Delete the folder's lock (no other Workspace uses the folder).
    pub delete_lock: bool,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Look again after this long even if nothing changes.
    pub requeue: Option<Duration>,
}

fn has_finalizer(ws: &Workspace) -> bool {
    ws.finalizers().iter().any(|f| f == FINALIZER)
}

/// Decides what `ws` needs, given what was observed at `now`.
pub fn decide(ws: &Workspace, seen: &Observed, settings: &Settings, now: &Time) -> Decision {
    if ws.metadata.deletion_timestamp.is_some() {
        return decide_deletion(ws, seen, now);
    }
    let old = ws.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = ws.metadata.generation;
    status.held_by = seen
        .lock
        .as_ref()
        .filter(|_| seen.holder_alive)
        .and_then(storage::holder)
        .map(str::to_owned);
    let mut d = Decision {
        status: None,
        claim: None,
        prepare_job: None,
        finalizer: if has_finalizer(ws) {
            Finalizer::Keep
        } else {
            Finalizer::Add
        },
        delete_claim: false,
        delete_lock: false,
        notes: Vec::new(),
        requeue: None,
    };
    let generation = ws.metadata.generation;
    let mut conditions = Conditions::new(&mut status.conditions, generation, now);
    let storage = Storage::of(&ws.spec);
    let pvc = &ws.spec.storage.persistent_volume_claim;

    if let Some(elder) = &seen.elder {
        conditions.ready(
            false,
            "StorageOverlaps",
            format!(
                "folder {:?} on claim {:?} overlaps the folder of the older Workspace {elder:?}: \
                 a run writing one could change the other's files; give this Workspace its own \
                 folder (spec.storage.persistentVolumeClaim.subPath)",
                storage.path, storage.claim
            ),
        );
        d.requeue = Some(WAIT_POLL);
    } else if seen.claim.is_none() {
        match &pvc.create {
            Some(template) => {
                d.claim = Some(children::claim(ws, template));
                conditions.ready(
                    false,
                    "Preparing",
                    format!("creating the claim {:?}", storage.claim),
                );
                d.notes.push(Note::normal(
                    "ClaimCreated",
                    Some(format!("created PersistentVolumeClaim {}", storage.claim)),
                    "Create",
                ));
            }
            None => {
                conditions.ready(
                    false,
                    "ClaimNotFound",
                    format!(
                        "PersistentVolumeClaim {:?} does not exist: create it, or set \
                         spec.storage.persistentVolumeClaim.create so that the operator does",
                        storage.claim
                    ),
                );
                d.requeue = Some(WAIT_POLL);
            }
        }
    } else if old.initialized == Some(true) {
        if let Some(head) = seen.lock.as_ref().and_then(storage::head_commit) {
            status.head_commit = Some(head.to_owned());
        }
        conditions.set(
            ConditionType::Ready,
            true,
            "Ready",
            "the folder holds a git repository; dispatches may mount it",
        );
    } else if seen.seed_found == Some(false) {
        let seed = ws
            .spec
            .seed
            .as_ref()
            .map(|s| s.config_map.as_str())
            .unwrap_or_default();
        conditions.ready(
            false,
            "SeedNotFound",
            format!("the seed ConfigMap {seed:?} does not exist: create it, or remove spec.seed"),
        );
        d.requeue = Some(WAIT_POLL);
    } else {
        match &seen.prepare {
            None if failed_before(&old, generation) => {}
            None => {
                d.prepare_job = Some(children::prepare_job(ws, settings));
                conditions.ready(
                    false,
                    "Preparing",
                    format!(
                        "preparing folder {:?} on claim {:?}",
                        storage.path, storage.claim
                    ),
                );
            }
            Some(Prepare::Running) => conditions.ready(
                false,
                "Preparing",
                format!(
                    "preparing folder {:?} on claim {:?}",
                    storage.path, storage.claim
                ),
            ),
            Some(Prepare::Succeeded(Some(PrepareReport::Ready { head_commit, .. }))) => {
                status.initialized = Some(true);
                status.head_commit = Some(
                    seen.lock
                        .as_ref()
                        .and_then(storage::head_commit)
                        .unwrap_or(head_commit)
                        .to_owned(),
                );
                conditions.set(
                    ConditionType::Ready,
                    true,
                    "Ready",
                    "the folder holds a git repository; dispatches may mount it",
                );
                d.notes.push(Note::normal(
                    "Prepared",
                    Some(format!("folder ready at commit {head_commit}")),
                    "Prepare",
                ));
            }
            Some(Prepare::Succeeded(other)) | Some(Prepare::Failed(other, _)) => {
                let why = match (&seen.prepare, other) {
                    (_, Some(PrepareReport::Failed { message, .. })) => message.clone(),
                    (Some(Prepare::Failed(_, k8s)), _) if !k8s.is_empty() => k8s.clone(),
                    _ => "the prepare Job ended without a report".to_owned(),
                };
                let message = format!(
                    "preparing the folder failed: {why}; fix it and change the Workspace (or \
                     delete Job {}) to try again",
                    children::prepare_job_name(ws)
                );
                conditions.ready(false, "PrepareFailed", message.clone());
                d.notes
                    .push(Note::warning("PrepareFailed", Some(message), "Prepare"));
            }
        }
    }
    if status != old {
        d.status = Some(status);
    }
    d
}

/// Whether the preparation of this generation already failed (its Job may be gone since).
fn failed_before(old: &WorkspaceStatus, generation: Option<i64>) -> bool {
    find(&old.conditions, ConditionType::Ready).is_some_and(|c| {
        c.reason == "PrepareFailed" && c.observed_generation == generation.or(Some(0))
    })
}

/// A Workspace being deleted: it goes once no run writes or uses its folder.
fn decide_deletion(ws: &Workspace, seen: &Observed, now: &Time) -> Decision {
    let mut d = Decision {
        status: None,
        claim: None,
        prepare_job: None,
        finalizer: Finalizer::Keep,
        delete_claim: false,
        delete_lock: false,
        notes: Vec::new(),
        requeue: None,
    };
    if !has_finalizer(ws) {
        return d;
    }
    let holder = seen
        .lock
        .as_ref()
        .filter(|_| seen.holder_alive)
        .and_then(storage::holder);
    let waiting_for: Vec<String> = holder
        .map(str::to_owned)
        .into_iter()
        .chain(seen.users.iter().cloned())
        .collect();
    if !waiting_for.is_empty() {
        let mut status = ws.status.clone().unwrap_or_default();
        let message = format!(
            "deletion waits until these dispatches end, so their storage is not pulled from under \
             them: {}",
            waiting_for.join(", ")
        );
        Conditions::new(&mut status.conditions, ws.metadata.generation, now).set(
            ConditionType::Ready,
            false,
            "Terminating",
            &message,
        );
        if Some(&status) != ws.status.as_ref() {
            d.status = Some(status);
            d.notes
                .push(Note::normal("DeletionDeferred", Some(message), "Delete"));
        }
        d.requeue = Some(WAIT_POLL);
        return d;
    }
    let created_by_us = seen.claim.as_ref().is_some_and(|c| {
        c.labels().get(children::WORKSPACE_LABEL).is_some()
            && c.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some(crate::FIELD_MANAGER)
    });
    let policy = ws
        .spec
        .storage
        .persistent_volume_claim
        .create
        .as_ref()
        .and_then(|c| c.reclaim_policy);
    d.delete_claim = created_by_us && policy == Some(ReclaimPolicy::Delete) && !seen.claim_shared;
    d.delete_lock = seen.lock.is_some() && !seen.storage_shared;
    d.finalizer = Finalizer::Remove;
    d
}
