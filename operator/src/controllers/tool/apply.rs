//! Carries out a Tool decision: writes the status (server-side apply, only when it changed)
//! and publishes the events. I/O only.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use vexa_crds::Tool;

use super::Reconciler;
use super::decide::Decision;
use super::error::Error;
use crate::FIELD_MANAGER;
use crate::runtime::events;

/// Applies `decision` to `tool`.
pub async fn apply(ctx: &Reconciler, tool: &Tool, decision: Decision) -> Result<(), Error> {
    let ns = tool.namespace().ok_or(Error::Malformed)?;
    if let Some(status) = &decision.status {
        let body = json!({
            "apiVersion": Tool::api_version(&()),
            "kind": Tool::kind(&()),
            "status": status,
        });
        Api::<Tool>::namespaced(ctx.base.client.clone(), &ns)
            .patch_status(
                &tool.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
    }
    events::publish(&ctx.recorder, tool, decision.notes).await;
    Ok(())
}
