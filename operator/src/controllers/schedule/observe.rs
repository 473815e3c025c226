//! Reads what a Schedule's decision depends on: the Schedule itself as the API server has it
//! now (its status is the plan's cursor, so a stale cached copy would plan a time twice), the
//! Dispatches it controls and its subject's Identity. I/O only.

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use vexa_core::names::SCHEDULE_LABEL;
use vexa_crds::{Dispatch, Identity, Schedule};

use super::decide::Observed;
use super::error::Error;
use super::run::label_value;
use crate::runtime::owned::is_controlled_by;

/// The current Schedule (`None`: deleted) and what it depends on.
pub async fn observe(
    client: &kube::Client,
    schedule: &Schedule,
) -> Result<Option<(Schedule, Observed)>, Error> {
    let ns = schedule.namespace().ok_or(Error::Malformed)?;
    let name = schedule.name_any();
    let Some(current) = Api::<Schedule>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
    else {
        return Ok(None);
    };
    let uid = current.uid().unwrap_or_default();
    let selector = format!("{SCHEDULE_LABEL}={}", label_value(&name));
    let dispatches = Api::<Dispatch>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        // A label can be set by anyone who may create Dispatches: only the owner UID counts.
        .filter(|d| is_controlled_by(&d.metadata, &uid))
        .collect();
    let identity = Api::<Identity>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|i| i.spec.subject == current.spec.subject);
    Ok(Some((
        current,
        Observed {
            dispatches,
            identity,
        },
    )))
}
