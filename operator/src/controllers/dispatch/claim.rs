//! Exclusive writing: at most one live Dispatch holds a Workspace `rw`. The claim is the
//! Workspace's `status.heldBy`, written with a resourceVersion precondition, so two operators
//! (or two concurrent reconciles) can never both win it. Waiting dispatches are served first
//! come, first served.

use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use vexa_crds::{Dispatch, DispatchPhase, Workspace, WorkspaceMode};

use super::error::Error;

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

/// Whether `d` may want to write `workspace` (an unset mode may default to `rw`).
fn wants_rw(d: &Dispatch, workspace: &str) -> bool {
    d.spec.trigger.is_trusted()
        && d.spec
            .workspaces
            .iter()
            .any(|w| w.name == workspace && w.mode != Some(WorkspaceMode::ReadOnly))
}

/// An older dispatch in the same namespace, not yet started, that waits for the same
/// workspace: it goes first.
fn ahead_in_queue(store: &Store<Dispatch>, me: &Dispatch, workspace: &str) -> Option<String> {
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
        .filter(|d| d.spec.stop != Some(true) && wants_rw(d, workspace))
        .filter(|d| key(d) < mine)
        .min_by_key(|d| key(d))
        .and_then(|d| d.metadata.name.clone())
}

/// Tries to claim `workspace` for `me`.
pub async fn claim(
    client: &kube::Client,
    store: &Store<Dispatch>,
    me: &Dispatch,
    workspace: &str,
) -> Result<Claim, Error> {
    let ns = me.metadata.namespace.as_deref().ok_or(Error::Malformed)?;
    let my_name = me.metadata.name.as_deref().ok_or(Error::Malformed)?;
    let api = Api::<Workspace>::namespaced(client.clone(), ns);
    let ws = api
        .get_opt(workspace)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "Workspace",
            name: workspace.to_owned(),
        })?;
    let holder = ws.status.as_ref().and_then(|s| s.held_by.clone());
    match holder.as_deref() {
        Some(h) if h == my_name => return Ok(Claim::Held),
        Some(h) => {
            let other = Api::<Dispatch>::namespaced(client.clone(), ns)
                .get_opt(h)
                .await?;
            let alive = other.is_some_and(|o| {
                !is_finished(o.status.and_then(|s| s.phase))
                    && o.metadata.deletion_timestamp.is_none()
            });
            if alive {
                return Ok(Claim::Busy {
                    holder: h.to_owned(),
                });
            }
            // The holder is gone or done: its claim is stale and may be taken over.
        }
        None => {}
    }
    if let Some(first) = ahead_in_queue(store, me, workspace) {
        return Ok(Claim::Busy { holder: first });
    }
    let patch = json!({
        "metadata": {"resourceVersion": ws.metadata.resource_version},
        "status": {"heldBy": my_name},
    });
    match api
        .patch_status(workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Claim::Held),
        // Someone else wrote the workspace first: report busy; the next reconcile decides.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Busy {
            holder: "(concurrent claim)".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Releases `workspace` if `me` holds it.
pub async fn release(client: &kube::Client, me: &Dispatch, workspace: &str) -> Result<(), Error> {
    let ns = me.metadata.namespace.as_deref().ok_or(Error::Malformed)?;
    let my_name = me.metadata.name.as_deref().ok_or(Error::Malformed)?;
    let api = Api::<Workspace>::namespaced(client.clone(), ns);
    let Some(ws) = api.get_opt(workspace).await? else {
        return Ok(());
    };
    if ws.status.as_ref().and_then(|s| s.held_by.as_deref()) != Some(my_name) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": ws.metadata.resource_version},
        "status": {"heldBy": null},
    });
    match api
        .patch_status(workspace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()), // changed meanwhile; a later reconcile retries
        Err(e) => Err(e.into()),
    }
}
