//! Carries out a Workspace decision: creates children, deletes what the deletion frees, moves
//! the finalizer, writes the status and publishes the events. I/O only.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use vexa_crds::Workspace;

use super::Reconciler;
use super::decide::{Decision, FINALIZER, Finalizer};
use super::error::Error;
use super::storage::Storage;
use crate::FIELD_MANAGER;
use crate::runtime::events;

fn ignore_status(code: u16) -> impl Fn(kube::Error) -> Result<(), Error> {
    move |e| match e {
        kube::Error::Api(s) if s.code == code => Ok(()),
        e => Err(e.into()),
    }
}

/// Applies `decision` to `ws`.
pub async fn apply(ctx: &Reconciler, ws: &Workspace, decision: Decision) -> Result<Action, Error> {
    let ns = ws.namespace().ok_or(Error::Malformed)?;
    let name = ws.name_any();
    let client = ctx.base.client.clone();
    if decision.finalizer == Finalizer::Add {
        // Guarded by the resourceVersion: a finalizer another writer adds meanwhile is never lost.
        let mut finalizers = ws.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": ws.resource_version()}});
        Api::<Workspace>::namespaced(client.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(claim) = &decision.claim {
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), claim)
            .await
            .map(|_| ())
            .or_else(ignore_status(409))?;
    }
    if let Some(job) = &decision.prepare_job {
        // Created, never applied: an apply would take over a Job of that name made by someone
        // else. One already there is looked at by the next observe (its owner decides).
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        Api::<Job>::namespaced(client.clone(), &ns)
            .create(&pp, job)
            .await
            .map(|_| ())
            .or_else(ignore_status(409))?;
    }
    if decision.delete_claim {
        let storage = Storage::of(&ws.spec);
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .delete(&storage.claim, &DeleteParams::background())
            .await
            .map(|_| ())
            .or_else(ignore_status(404))?;
    }
    if decision.delete_lock {
        let storage = Storage::of(&ws.spec);
        Api::<Lease>::namespaced(client.clone(), &ns)
            .delete(&storage.lock_name(), &DeleteParams::default())
            .await
            .map(|_| ())
            .or_else(ignore_status(404))?;
    }
    if let Some(status) = &decision.status {
        let body = json!({
            "apiVersion": Workspace::api_version(&()),
            "kind": Workspace::kind(&()),
            "status": status,
        });
        Api::<Workspace>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    events::publish(&ctx.recorder, ws, decision.notes).await;
    if decision.finalizer == Finalizer::Remove {
        let finalizers: Vec<_> = ws
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": ws.resource_version()}});
        Api::<Workspace>::namespaced(client, &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .or_else(ignore_status(404))?;
    }
    Ok(match decision.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
