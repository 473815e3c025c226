//! Reads what a Dispatch refers to (its runner, workspaces, tools and model credential) and
//! puts the dispatch in the policy's terms.

use kube::Api;
use kube::runtime::reflector::ObjectRef;
use vexa_crds::{AgentRunner, Dispatch, DispatchSpec, Tool, Workspace};
use vexa_policy::{
    Authorization, DispatchRequest, Refusal, ToolFacts, WantedWorkspace, WorkspaceFacts,
};

use super::error::Error;
use crate::controllers::workspace::storage::Storage;
use crate::runtime::cache::Cache;

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

/// What the policy needs of a Dispatch's spec.
pub fn request(spec: &DispatchSpec) -> DispatchRequest {
    DispatchRequest {
        subject: spec.identity.subject.clone(),
        launcher: spec.identity.launcher.clone(),
        trigger: spec.trigger,
        workspaces: spec
            .workspaces
            .iter()
            .map(|w| WantedWorkspace {
                name: w.name.clone(),
                mode: w.mode,
            })
            .collect(),
        tools: spec.tools.clone(),
    }
}

/// [`vexa_policy::authorize`] for a Dispatch's spec.
pub fn authorize(
    spec: &DispatchSpec,
    workspaces: &[WorkspaceFacts],
    tools: &[ToolFacts],
) -> Result<Authorization, Refusal> {
    vexa_policy::authorize(&request(spec), workspaces, tools)
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

/// Reads the runner's model credential from its Secret (default namespace: the operator's).
pub async fn model_credential(
    client: &kube::Client,
    runner: &AgentRunner,
    operator_ns: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(cred) = &runner.spec.model_credential else {
        return Ok(None);
    };
    let r = &cred.secret_ref;
    let ns = r.namespace.as_deref().unwrap_or(operator_ns);
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
    let value = secret
        .data
        .and_then(|mut d| d.remove(&r.key))
        .ok_or_else(|| {
            Error::Credential(format!("key {:?} missing in Secret {ns}/{}", r.key, r.name))
        })?;
    Ok(Some(value.0))
}
