//! The Workspace decision, pure: from the Workspace and what was observed, the status it should
//! have, the children to create, the finalizer, and the events to publish.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use vexa_core::PrepareReport;
use vexa_crds::{ReclaimPolicy, Workspace, WorkspaceStatus};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    use super::*;
    use crate::runtime::conditions::find;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn settings() -> Settings {
        Settings {
            init_image: "localhost/vexa-agent-worker:dev".into(),
        }
    }

    fn workspace(extra: serde_json::Value) -> Workspace {
        let mut spec = json!({
            "id": "notes", "owner": "alice", "defaultMode": "rw",
            "storage": {"persistentVolumeClaim": {"claimName": "data", "subPath": "alice/notes"}},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let mut ws = Workspace::new("notes", serde_json::from_value(spec).unwrap());
        ws.metadata.namespace = Some("t".into());
        ws.metadata.uid = Some("uid-notes".into());
        ws.metadata.generation = Some(1);
        ws.metadata.finalizers = Some(vec![FINALIZER.into()]);
        ws
    }

    fn claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    fn lock(holder: Option<&str>, head: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: head.map(|h| {
                    std::collections::BTreeMap::from([(
                        storage::HEAD_ANNOTATION.to_owned(),
                        h.to_owned(),
                    )])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                ..LeaseSpec::default()
            }),
        }
    }

    fn ready(d: &Decision) -> (String, String, String) {
        let c = find(&d.status.as_ref().unwrap().conditions, ConditionType::Ready).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_new_workspace_gets_its_finalizer_and_the_claim_it_asks_for() {
        let ws = workspace(json!({"storage": {"persistentVolumeClaim": {
            "claimName": "data", "subPath": "alice/notes", "create": {"size": "1Gi"}}}}));
        let mut ws = ws;
        ws.metadata.finalizers = None;
        let d = decide(&ws, &Observed::default(), &settings(), &at(1));
        assert_eq!(d.finalizer, Finalizer::Add);
        let pvc = d.claim.as_ref().unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("data"));
        assert!(
            pvc.metadata.owner_references.is_none(),
            "the files outlive the object"
        );
        assert!(d.prepare_job.is_none(), "prepared once the claim exists");
        assert_eq!(ready(&d).1, "Preparing");
    }

    #[test]
    fn a_missing_claim_that_is_not_ours_to_create_is_waited_for() {
        let d = decide(
            &workspace(json!({})),
            &Observed::default(),
            &settings(),
            &at(1),
        );
        assert!(d.claim.is_none());
        let (status, reason, message) = ready(&d);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ClaimNotFound")
        );
        assert!(message.contains("\"data\""), "{message}");
        assert_eq!(d.requeue, Some(WAIT_POLL));
    }

    #[test]
    fn a_missing_seed_holds_the_preparation() {
        let ws = workspace(json!({"seed": {"configMap": "notes-seed"}}));
        let seen = Observed {
            claim: Some(claim()),
            seed_found: Some(false),
            ..Observed::default()
        };
        let d = decide(&ws, &seen, &settings(), &at(1));
        assert!(d.prepare_job.is_none());
        assert_eq!(ready(&d).1, "SeedNotFound");
    }

    #[test]
    fn the_folder_is_prepared_by_a_restricted_job_once_the_claim_exists() {
        let ws = workspace(json!({"seed": {"configMap": "notes-seed"}}));
        let seen = Observed {
            claim: Some(claim()),
            seed_found: Some(true),
            ..Observed::default()
        };
        let d = decide(&ws, &seen, &settings(), &at(1));
        let job = d.prepare_job.as_ref().unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("notes-prepare-1"));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.fs_group),
            (Some(true), Some(65532))
        );
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".into()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert!(
            env.contains(&("VEXA_WORKSPACE_SUBPATH", Some("alice/notes"))),
            "{env:?}"
        );
        assert!(env.contains(&("VEXA_SEED", Some("/seed"))), "{env:?}");
        assert_eq!(ready(&d).1, "Preparing");
    }

    #[test]
    fn a_prepared_folder_makes_the_workspace_ready_at_its_head() {
        let seen = Observed {
            claim: Some(claim()),
            prepare: Some(Prepare::Succeeded(Some(PrepareReport::Ready {
                head_commit: "abc123".into(),
                created: true,
                seeded: 2,
            }))),
            ..Observed::default()
        };
        let d = decide(&workspace(json!({})), &seen, &settings(), &at(1));
        let s = d.status.as_ref().unwrap();
        assert_eq!(s.initialized, Some(true));
        assert_eq!(s.head_commit.as_deref(), Some("abc123"));
        assert_eq!(ready(&d).0, "True");
        assert_eq!(d.notes[0].reason, "Prepared");
    }

    #[test]
    fn a_failed_preparation_is_reported_and_not_retried_for_the_same_spec() {
        let seen = Observed {
            claim: Some(claim()),
            prepare: Some(Prepare::Failed(
                Some(PrepareReport::Failed {
                    reason: "BadSeed".into(),
                    message: "seed key \"x__..__y\" becomes the path".into(),
                }),
                "BackoffLimitExceeded".into(),
            )),
            ..Observed::default()
        };
        let mut ws = workspace(json!({}));
        let d = decide(&ws, &seen, &settings(), &at(1));
        let (_, reason, message) = ready(&d);
        assert_eq!(reason, "PrepareFailed");
        assert!(message.contains("becomes the path"), "{message}");
        assert!(d.notes[0].warning);
        // The Job is gone (TTL): the same generation is not prepared again.
        ws.status = d.status.clone();
        let later = Observed {
            claim: Some(claim()),
            ..Observed::default()
        };
        let again = decide(&ws, &later, &settings(), &at(2));
        assert!(again.prepare_job.is_none());
        // A changed spec is a new attempt.
        ws.metadata.generation = Some(2);
        assert!(
            decide(&ws, &later, &settings(), &at(3))
                .prepare_job
                .is_some()
        );
    }

    #[test]
    fn a_folder_nested_in_an_older_workspace_is_refused() {
        let seen = Observed {
            claim: Some(claim()),
            elder: Some("alice-all".into()),
            ..Observed::default()
        };
        let d = decide(&workspace(json!({})), &seen, &settings(), &at(1));
        assert!(d.prepare_job.is_none());
        let (_, reason, message) = ready(&d);
        assert_eq!(reason, "StorageOverlaps");
        assert!(message.contains("alice-all"), "{message}");
    }

    #[test]
    fn head_commit_and_holder_follow_the_lock() {
        let mut ws = workspace(json!({}));
        ws.status = Some(WorkspaceStatus {
            initialized: Some(true),
            head_commit: Some("old".into()),
            ..WorkspaceStatus::default()
        });
        let live = Observed {
            claim: Some(claim()),
            lock: Some(lock(Some("run-2"), Some("new"))),
            holder_alive: true,
            ..Observed::default()
        };
        let s = decide(&ws, &live, &settings(), &at(1)).status.unwrap();
        assert_eq!(s.head_commit.as_deref(), Some("new"));
        assert_eq!(s.held_by.as_deref(), Some("run-2"));
        let stale = Observed {
            holder_alive: false,
            ..live
        };
        let s = decide(&ws, &stale, &settings(), &at(1)).status.unwrap();
        assert_eq!(s.held_by, None, "a finished holder holds nothing");
    }

    #[test]
    fn deletion_waits_for_the_run_that_holds_the_folder() {
        let mut ws = workspace(json!({}));
        ws.metadata.deletion_timestamp = Some(at(5));
        let seen = Observed {
            claim: Some(claim()),
            lock: Some(lock(Some("run-1"), None)),
            holder_alive: true,
            ..Observed::default()
        };
        let d = decide(&ws, &seen, &settings(), &at(6));
        assert_eq!(d.finalizer, Finalizer::Keep);
        assert!(!d.delete_claim && !d.delete_lock);
        let (_, reason, message) = ready(&d);
        assert_eq!(reason, "Terminating");
        assert!(message.contains("run-1"), "{message}");
    }

    #[test]
    fn a_free_workspace_goes_and_takes_only_what_nothing_else_uses() {
        let mut ws = workspace(json!({"storage": {"persistentVolumeClaim": {
            "claimName": "data", "subPath": "alice/notes",
            "create": {"size": "1Gi", "reclaimPolicy": "Delete"}}}}));
        ws.metadata.deletion_timestamp = Some(at(5));
        let ours = PersistentVolumeClaim {
            metadata: ObjectMeta {
                labels: Some(
                    children::claim(
                        &ws,
                        ws.spec
                            .storage
                            .persistent_volume_claim
                            .create
                            .as_ref()
                            .unwrap(),
                    )
                    .metadata
                    .labels
                    .unwrap(),
                ),
                ..claim().metadata
            },
            ..claim()
        };
        let alone = Observed {
            claim: Some(ours.clone()),
            lock: Some(lock(None, Some("abc"))),
            ..Observed::default()
        };
        let d = decide(&ws, &alone, &settings(), &at(6));
        assert_eq!(d.finalizer, Finalizer::Remove);
        assert!(d.delete_claim && d.delete_lock);
        let shared = Observed {
            claim_shared: true,
            storage_shared: true,
            ..alone
        };
        let d = decide(&ws, &shared, &settings(), &at(6));
        assert_eq!(d.finalizer, Finalizer::Remove);
        assert!(
            !d.delete_claim && !d.delete_lock,
            "another Workspace still uses them"
        );
        // A claim someone else made is never deleted.
        let theirs = Observed {
            claim: Some(claim()),
            ..Observed::default()
        };
        assert!(!decide(&ws, &theirs, &settings(), &at(6)).delete_claim);
    }
}
