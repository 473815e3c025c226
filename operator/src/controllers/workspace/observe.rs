//! Reads what a Workspace's decision depends on: its claim, seed, prepare Job, the lock of its
//! folder and the other Workspaces of its namespace. I/O only; nothing is decided here.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use vexa_core::PrepareReport;
use vexa_crds::{Dispatch, Workspace};

use super::Reconciler;
use super::children::prepare_job_name;
use super::error::Error;
use super::storage::{self, Storage};
use crate::controllers::dispatch::claim::{holder_alive, is_finished};
use crate::runtime::owned::is_controlled_by;

/// How the preparation of the folder stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepare {
    /// The Job runs (or waits for its pod).
    Running,
    /// The Job succeeded; its report, if one could be read.
    Succeeded(Option<PrepareReport>),
    /// The Job failed: its report if readable, else what Kubernetes said.
    Failed(Option<PrepareReport>, String),
}

/// Everything `decide` needs besides the Workspace itself.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The claim, if it exists.
    pub claim: Option<PersistentVolumeClaim>,
    /// Whether the seed ConfigMap exists (`None`: not looked up, because there is no seed or
    /// the folder is prepared already).
    pub seed_found: Option<bool>,
    /// The prepare Job of the current generation (`None`: none exists, or not looked up).
    pub prepare: Option<Prepare>,
    /// The lock of the folder.
    pub lock: Option<Lease>,
    /// Whether the lock's holder is a Dispatch that still runs.
    pub holder_alive: bool,
    /// An older Workspace whose folder contains this one's, or is contained by it.
    pub elder: Option<String>,
    /// While deleting: live Dispatches that name this Workspace.
    pub users: Vec<String>,
    /// While deleting: another Workspace uses the same folder.
    pub storage_shared: bool,
    /// While deleting: another Workspace uses the same claim.
    pub claim_shared: bool,
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn get_opt<K>(api: Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(o) => Ok(o),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads what the decision about `ws` depends on.
pub async fn observe(ctx: &Reconciler, ws: &Workspace) -> Result<Observed, Error> {
    let ns = ws.namespace().ok_or(Error::Malformed)?;
    let client = ctx.base.client.clone();
    let storage = Storage::of(&ws.spec);
    let status = ws.status.clone().unwrap_or_default();
    let deleting = ws.metadata.deletion_timestamp.is_some();
    let siblings: Vec<_> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| o.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();

    let mut seen = Observed {
        claim: get_opt(
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns),
            &storage.claim,
        )
        .await?,
        lock: get_opt(
            Api::<Lease>::namespaced(client.clone(), &ns),
            &storage.lock_name(),
        )
        .await?,
        elder: storage::overlapping_elder(ws, siblings.iter().map(AsRef::as_ref))
            .and_then(|w| w.metadata.name.clone()),
        ..Observed::default()
    };
    if let Some(holder) = seen.lock.as_ref().and_then(storage::holder) {
        seen.holder_alive = holder_alive(&client, &ns, holder).await?;
    }
    if status.initialized != Some(true) && !deleting {
        if let Some(seed) = &ws.spec.seed {
            let cm = get_opt(
                Api::<ConfigMap>::namespaced(client.clone(), &ns),
                &seed.config_map,
            )
            .await?;
            seen.seed_found = Some(cm.is_some());
        }
        let uid = ws.metadata.uid.as_deref().unwrap_or_default();
        seen.prepare = prepare_state(ctx, &ns, &prepare_job_name(ws), uid).await?;
    }
    if deleting {
        let dispatches = Api::<Dispatch>::namespaced(client, &ns)
            .list(&ListParams::default())
            .await?;
        seen.users = dispatches
            .items
            .into_iter()
            .filter(|d| !is_finished(d.status.as_ref().and_then(|s| s.phase)))
            .filter(|d| d.spec.workspaces.iter().any(|w| w.name == ws.name_any()))
            .map(|d| d.name_any())
            .collect();
        let others = siblings.iter().filter(|o| o.name_any() != ws.name_any());
        for o in others {
            let theirs = Storage::of(&o.spec);
            seen.storage_shared |= theirs == storage;
            seen.claim_shared |= theirs.claim == storage.claim;
        }
    }
    Ok(seen)
}

/// The state of the prepare Job `name`, with the report its pod left. A Job of that name that
/// the Workspace with `owner` does not control is not its prepare Job: its report would set the
/// Workspace's head commit, so it counts as a failure that names it.
async fn prepare_state(
    ctx: &Reconciler,
    ns: &str,
    name: &str,
    owner: &str,
) -> Result<Option<Prepare>, Error> {
    let api = Api::<Job>::namespaced(ctx.base.client.clone(), ns);
    let Some(job) = ctx.jobs.get_or_fetch(&api, Some(ns), name).await? else {
        return Ok(None);
    };
    if !is_controlled_by(&job.metadata, owner) {
        return Ok(Some(Prepare::Failed(
            None,
            format!(
                "a Job named {name:?} that this Workspace does not control exists (it is neither \
                 followed nor deleted)"
            ),
        )));
    }
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let condition = |t: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"))
            .map(|c| c.message.clone().unwrap_or_default())
    };
    let (complete, failed) = (condition("Complete"), condition("Failed"));
    if complete.is_none() && failed.is_none() {
        return Ok(Some(Prepare::Running));
    }
    let pods = Api::<Pod>::namespaced(ctx.base.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await?;
    let report = pods
        .items
        .iter()
        .filter(|p| is_controlled_by(&p.metadata, &job_uid))
        .filter_map(|p| {
            let state = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?;
            let t = state.terminated.as_ref()?;
            Some((t.finished_at.clone().map(|t| t.0), t.message.clone()?))
        })
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, message)| PrepareReport::from_message(&message));
    Ok(Some(match (complete, failed) {
        (Some(_), _) => Prepare::Succeeded(report),
        (None, Some(why)) => Prepare::Failed(report, why),
        (None, None) => Prepare::Running,
    }))
}
