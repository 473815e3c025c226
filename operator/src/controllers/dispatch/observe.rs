//! Reads what a Dispatch's decisions depend on: what it refers to (its runner, workspaces,
//! tools and model credential), and its Job and pods. I/O only, from the watch caches where
//! they hold the answer.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use vexa_core::pod::GrantedTool;
use vexa_crds::{AgentRunner, Dispatch, Identity, Tool, Workspace};
use vexa_policy::{ToolFacts, WorkspaceFacts};

use super::Reconciler;
use super::children::DISPATCH_LABEL;
use super::error::Error;
use crate::controllers::workspace::storage::Storage;
use crate::runtime::cache::Cache;
use crate::runtime::owned::is_controlled_by;

/// The objects a Dispatch refers to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The AgentRunner.
    pub runner: AgentRunner,
    /// The Workspaces, in spec order.
    pub workspaces: Vec<Workspace>,
    /// The Tools, in spec order.
    pub tools: Vec<Tool>,
}

impl Resolved {
    /// Workspace facts for the policy.
    pub fn workspace_facts(&self) -> Vec<WorkspaceFacts> {
        self.workspaces
            .iter()
            .map(|w| WorkspaceFacts {
                name: w.metadata.name.clone().unwrap_or_default(),
                default_mode: w.spec.default_mode,
            })
            .collect()
    }

    /// The Tools as the worker is told them (`VEXA_TOOLS`): object name and MCP tool name.
    pub fn granted_tools(&self) -> Vec<GrantedTool> {
        self.tools
            .iter()
            .map(|t| GrantedTool {
                name: t.metadata.name.clone().unwrap_or_default(),
                tool_name: Some(t.spec.tool_name.clone()),
            })
            .collect()
    }

    /// Tool facts for the policy.
    pub fn tool_facts(&self) -> Vec<ToolFacts> {
        self.tools
            .iter()
            .map(|t| ToolFacts {
                name: t.metadata.name.clone().unwrap_or_default(),
                grant: t.spec.grant,
                irreversible: t.spec.irreversible,
            })
            .collect()
    }
}

/// The caches of what a Dispatch refers to.
#[derive(Debug, Clone)]
pub struct References {
    /// AgentRunners.
    pub runners: Cache<AgentRunner>,
    /// Workspaces.
    pub workspaces: Cache<Workspace>,
    /// Tools.
    pub tools: Cache<Tool>,
    /// Identities: the subjects' user mappings and delegation grants.
    pub identities: Cache<Identity>,
    /// Namespaces, for their tenant label (not watched when tenants are named instead).
    pub namespaces: Cache<Namespace>,
}

impl References {
    /// The folder of Workspace `name` in `ns`, as far as the cache knows it.
    pub fn workspace_storage(&self, ns: &str, name: &str) -> Option<Storage> {
        let store = self.workspaces.store()?;
        let ws = store.get(&ObjectRef::new(name).within(ns))?;
        Some(Storage::of(&ws.spec))
    }
}

async fn get<K>(
    cache: &Cache<K>,
    api: &Api<K>,
    ns: Option<&str>,
    kind: &'static str,
    name: &str,
) -> Result<K, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let o = cache
        .get_or_fetch(api, ns, name)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind,
            name: name.to_owned(),
        })?;
    Ok(K::clone(&o))
}

/// Reads every object the dispatch names, from the caches where they hold it; the first
/// missing one is the error.
pub async fn resolve(
    client: &kube::Client,
    refs: &References,
    d: &Dispatch,
) -> Result<Resolved, Error> {
    let ns = d.metadata.namespace.as_deref().ok_or(Error::Malformed)?;
    let runner = get(
        &refs.runners,
        &Api::<AgentRunner>::all(client.clone()),
        None,
        "AgentRunner",
        &d.spec.runner,
    )
    .await?;
    let ws_api = Api::<Workspace>::namespaced(client.clone(), ns);
    let mut workspaces = Vec::with_capacity(d.spec.workspaces.len());
    for w in &d.spec.workspaces {
        workspaces.push(get(&refs.workspaces, &ws_api, Some(ns), "Workspace", &w.name).await?);
    }
    let tool_api = Api::<Tool>::namespaced(client.clone(), ns);
    let mut tools = Vec::with_capacity(d.spec.tools.len());
    for t in &d.spec.tools {
        tools.push(get(&refs.tools, &tool_api, Some(ns), "Tool", t).await?);
    }
    Ok(Resolved {
        runner,
        workspaces,
        tools,
    })
}

/// Checks that the runner's model credential is where the model gateway will read it: a key
/// of a Secret in the operator's own namespace. The value is not read into the dispatch: it
/// never leaves the operator's namespace.
pub async fn check_model_credential(
    client: &kube::Client,
    runner: &AgentRunner,
    operator_ns: &str,
) -> Result<(), Error> {
    let Some(cred) = &runner.spec.model_credential else {
        return Ok(());
    };
    let r = &cred.secret_ref;
    let ns = r.namespace.as_deref().unwrap_or(operator_ns);
    if ns != operator_ns {
        return Err(Error::Credential(format!(
            "AgentRunner {} names Secret {ns}/{}, but model credentials are read only in the operator's namespace {operator_ns}: move the Secret there",
            runner.metadata.name.as_deref().unwrap_or_default(),
            r.name
        )));
    }
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| {
            Error::Credential(format!(
                "Secret {ns}/{} (from AgentRunner {}) not found",
                r.name,
                runner.metadata.name.as_deref().unwrap_or_default()
            ))
        })?;
    if !secret.data.is_some_and(|d| d.contains_key(&r.key)) {
        return Err(Error::Credential(format!(
            "key {:?} missing in Secret {ns}/{}",
            r.key, r.name
        )));
    }
    Ok(())
}

/// The Identities of namespace `ns`: from the cache once it has synced.
pub async fn identities(
    client: &kube::Client,
    refs: &References,
    ns: &str,
) -> Result<Vec<Arc<Identity>>, Error> {
    if let Some(store) = refs.identities.store() {
        return Ok(store.state_filter(|i| i.metadata.namespace.as_deref() == Some(ns)));
    }
    let list = Api::<Identity>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list.items.into_iter().map(Arc::new).collect())
}

/// Whether RBAC lets the user `user` act for `subject` in `ns`: the verb
/// [`vexa_policy::ACT_AS_VERB`] on `identities.vexa.ai/<subject>`, as admission checks it. The
/// user's groups are not known here (admission saw them), so only rights bound to the user
/// itself count.
pub async fn may_act_as(
    client: &kube::Client,
    ns: &str,
    user: &str,
    subject: &str,
) -> Result<bool, Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("vexa.ai".into()),
                resource: Some("identities".into()),
                namespace: Some(ns.to_owned()),
                name: Some(subject.to_owned()),
                verb: Some(vexa_policy::ACT_AS_VERB.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

impl Reconciler {
    /// Whether `ns` is a tenant namespace: named in --tenant-namespaces or carrying
    /// --tenant-label (both empty: every namespace).
    pub async fn serves(&self, ns: &str) -> Result<bool, Error> {
        let c = &self.base.config;
        if c.tenant_namespaces.iter().any(|n| n == ns) {
            return Ok(true);
        }
        let Some((key, value)) = c.tenant_label.split_once('=') else {
            // (An empty list may arrive as one empty name from the environment.)
            return Ok(c.tenant_namespaces.iter().all(String::is_empty));
        };
        let namespace = self
            .references
            .namespaces
            .get_or_fetch(&Api::all(self.base.client.clone()), None, ns)
            .await?;
        Ok(namespace.is_some_and(|n| n.labels().get(key).map(String::as_str) == Some(value)))
    }

    /// The Job `name` in `ns`: from the cache once it has synced. `confirm_absence`: a Job
    /// missing from the cache is looked up on the API server, for decisions an absence must
    /// not get wrong.
    pub async fn job(
        &self,
        ns: &str,
        name: &str,
        confirm_absence: bool,
    ) -> Result<Option<Arc<Job>>, Error> {
        if let Some(store) = self.jobs.store() {
            if let Some(job) = store.get(&ObjectRef::new(name).within(ns)) {
                return Ok(Some(job));
            }
            if !confirm_absence {
                return Ok(None);
            }
        }
        let job = Api::<Job>::namespaced(self.base.client.clone(), ns)
            .get_opt(name)
            .await?;
        Ok(job.map(Arc::new))
    }

    /// The pods of the Job `job` in `ns` that it controls: from the cache once it has synced.
    /// A pod that only carries the label is not the run's.
    pub async fn pods(&self, ns: &str, job: &Job) -> Result<Vec<Arc<Pod>>, Error> {
        let name = job.name_any();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let ours = |p: &Pod| is_controlled_by(&p.metadata, &uid);
        if let Some(store) = self.pods.store() {
            return Ok(store.state_filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && p.labels().get(DISPATCH_LABEL) == Some(&name)
                    && ours(p)
            }));
        }
        let pods = Api::<Pod>::namespaced(self.base.client.clone(), ns)
            .list(&ListParams::default().labels(&format!("{DISPATCH_LABEL}={name}")))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| ours(p))
            .map(Arc::new)
            .collect())
    }
}
