//! Carries out what the Dispatch reconcile decided: its children, the Job's suspension, the
//! release of its workspaces' locks, its status. I/O only.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use vexa_crds::{Dispatch, DispatchStatus, Workspace, WorkspaceMode};

use super::Reconciler;
use super::children::{self, BuildSettings, Inputs};
use super::claim;
use super::error::Error;
use crate::FIELD_MANAGER;
use crate::redis_users::DispatchKey;
use crate::runtime::owned::is_controlled_by;

/// Creates the run's Secret, then its Job (the Job's pod reads the Secret, so it must be this
/// run's before the Job exists). Returns the Job's name. A child of that name that this
/// Dispatch already owns (a retry) is kept, the Secret brought up to date; one it does not own
/// is never adopted, changed or deleted: [`Error::ForeignChild`]. A child the API server
/// refuses for good is [`Error::ChildRejected`].
pub async fn children(ctx: &Reconciler, ns: &str, inputs: &Inputs<'_>) -> Result<String, Error> {
    let uid = inputs.dispatch.uid().ok_or(Error::Malformed)?;
    let secret = children::secret(inputs);
    let job = children::job(inputs);
    let job_name = job.name_any();
    let secrets = Api::<Secret>::namespaced(ctx.base.client.clone(), ns);
    if !create_owned(&secrets, &secret, &uid, "Secret").await? {
        secrets
            .patch(
                &secret.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
    }
    let jobs = Api::<Job>::namespaced(ctx.base.client.clone(), ns);
    create_owned(&jobs, &job, &uid, "Job").await?;
    Ok(job_name)
}

/// Creates `obj` (POST, never an apply that would take over an object of that name). `false`
/// when it exists already and the Dispatch with `uid` controls it.
async fn create_owned<K>(
    api: &Api<K>,
    obj: &K,
    uid: &str,
    kind: &'static str,
) -> Result<bool, Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let name = obj.name_any();
    match api.create(&pp, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = api.get(&name).await?;
            if is_controlled_by(existing.meta(), uid) {
                Ok(false)
            } else {
                Err(Error::ForeignChild { kind, name })
            }
        }
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Err(Error::ChildRejected {
            kind,
            message: s.message,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Suspends the run's Job: its pod terminates gracefully.
pub async fn suspend(client: &kube::Client, ns: &str, job: &str) -> Result<(), Error> {
    // A merge patch from a second manager: the Job's apply owner keeps every other field.
    // Not `.force()`: force exists only for server-side apply, and kube refuses to send a
    // merge patch that carries it.
    let patch = json!({"spec": {"suspend": true}});
    Api::<Job>::namespaced(client.clone(), ns)
        .patch(
            job,
            &PatchParams::apply("vexa-operator-stop"),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Releases what the run held: the folder locks of its rw workspaces (leaving the commit it
/// ended on) and its Redis user (its streams then expire after the retention). Done at every
/// ending and again while cleaning up, so each step may already have happened.
pub async fn release_all(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &DispatchStatus,
) -> Result<(), Error> {
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let api = Api::<Workspace>::namespaced(ctx.base.client.clone(), &ns);
    for w in &d.spec.workspaces {
        if w.mode == Some(WorkspaceMode::ReadOnly) {
            continue;
        }
        // A workspace deleted meanwhile leaves a stale lock, which the next claimant takes over.
        let Some(workspace) = ctx
            .references
            .workspaces
            .get_or_fetch(&api, Some(&ns), &w.name)
            .await?
        else {
            continue;
        };
        let head = status
            .provenance
            .iter()
            .find(|p| p.workspace == w.name)
            .and_then(|p| p.result_commit.as_deref());
        claim::release(&ctx.base.client, d, &workspace, head).await?;
    }
    if let Some(users) = &ctx.base.redis_users {
        users.remove(&redis_key(d)?).await?;
    }
    Ok(())
}

/// The dispatch as its Redis user's name records it.
pub fn redis_key(d: &Dispatch) -> Result<DispatchKey, Error> {
    Ok(DispatchKey {
        namespace: d.namespace().ok_or(Error::Malformed)?,
        name: d.name_any(),
        uid: d.uid().ok_or(Error::Malformed)?,
    })
}

/// Writes the Dispatch's status (server-side apply).
pub async fn write_status(
    ctx: &Reconciler,
    d: &Dispatch,
    status: &DispatchStatus,
) -> Result<(), Error> {
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let body = json!({
        "apiVersion": Dispatch::api_version(&()),
        "kind": Dispatch::kind(&()),
        "status": status,
    });
    Api::<Dispatch>::namespaced(ctx.base.client.clone(), &ns)
        .patch_status(
            &d.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    Ok(())
}

impl Reconciler {
    /// The operator settings that shape a run's children.
    pub fn build_settings(&self) -> BuildSettings {
        let c = &self.base.config;
        BuildSettings {
            redis_url: c.redis_url.clone(),
            job_ttl_seconds: c.job_ttl_seconds,
            default_max_lifetime_seconds: c.default_max_lifetime_seconds,
            default_idle_timeout_seconds: c.default_idle_timeout_seconds,
            default_resources: children::resources(
                &c.default_cpu_request,
                &c.default_memory_request,
                &c.default_memory_limit,
            ),
            worker_image: c.worker_image.clone(),
            worker_resources: children::resources(
                &c.worker_cpu_request,
                &c.worker_memory_request,
                &c.worker_memory_limit,
            ),
            model_gateway_url: c.model_gateway_url.clone(),
            model_gateway_key: self.base.gateway_key.clone(),
            stream_max_len: c.stream_max_len,
            await_network_policy_seconds: c.await_network_policy_seconds,
            spire_trust_domain: (!c.spire_server_socket.is_empty())
                .then(|| c.spire_trust_domain.clone()),
            mcp_gateway_url: (!c.mcp_gateway_url.is_empty()).then(|| c.mcp_gateway_url.clone()),
            mcp_port: c.mcp_port,
        }
    }
}
