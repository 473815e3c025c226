//! Carries out a Schedule decision: creates the Dispatches (an `AlreadyExists` is adopted),
//! asks the replaced ones to stop, deletes those beyond the history limits, writes the status
//! (server-side apply, only when it changed) and publishes the events. I/O only.

use chrono::Utc;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;
use vexa_core::names::SCHEDULED_TIME_ANNOTATION;
use vexa_crds::{Dispatch, Schedule};

use super::Reconciler;
use super::decide::Decision;
use super::error::Error;
use crate::FIELD_MANAGER;
use crate::runtime::events::{self, Note};

/// Applies `decision` to `schedule` (as observed now).
pub async fn apply(ctx: &Reconciler, schedule: &Schedule, decision: Decision) -> Result<(), Error> {
    let ns = schedule.namespace().ok_or(Error::Malformed)?;
    let client = &ctx.base.client;
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns);
    let metrics = &ctx.base.metrics.schedule_runs;
    let mut notes = Vec::new();
    for run in &decision.create {
        let name = run.dispatch.name_any();
        match dispatches
            .create(&PostParams::default(), &run.dispatch)
            .await
        {
            Ok(_) => {
                metrics.fired(run.due.map(|due| Utc::now() - due));
                let nominal = run
                    .dispatch
                    .annotations()
                    .get(SCHEDULED_TIME_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                notes.push(Note::normal(
                    "Fired",
                    Some(format!("created Dispatch {name} for {nominal}")),
                    "Create",
                ));
                info!(schedule = %schedule.name_any(), namespace = %ns, dispatch = %name, "fired");
            }
            // Created before (a retry, or a status write that did not land): adopt it.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                info!(schedule = %schedule.name_any(), namespace = %ns, dispatch = %name, "adopted an existing Dispatch");
            }
            Err(e) => return Err(e.into()),
        }
    }
    for name in &decision.stop {
        let patch = json!({"spec": {"stop": true}});
        match dispatches
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for name in &decision.delete {
        match dispatches.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if schedule.status.as_ref() != Some(&decision.status) {
        let body = json!({
            "apiVersion": Schedule::api_version(&()),
            "kind": Schedule::kind(&()),
            "status": decision.status,
        });
        Api::<Schedule>::namespaced(client.clone(), &ns)
            .patch_status(
                &schedule.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    for (_, reason) in &decision.skipped {
        metrics.skipped(reason);
    }
    notes.extend(decision.notes);
    events::publish(&ctx.recorder, schedule, notes).await;
    Ok(())
}
