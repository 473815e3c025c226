//! The Kubernetes side: reading, creating and stopping Dispatches, and watching one until it
//! runs or ends. Every error becomes a [`CliError`] that says what to do.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use vexa_core::trace::{self, TraceParent};
use vexa_crds::{Dispatch, DispatchPhase};

use crate::chat::{self, ChatRequest, Plan};
use crate::dispatch;
use crate::error::CliError;
use crate::streams::Streams;

/// How often a dispatch's status is read while waiting.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between reads after the API server failed.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(10);

/// A client for the cluster in the kubeconfig.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
}

/// How often a chat message re-plans when another client took the name it was about to create.
const CREATE_ATTEMPTS: usize = 3;

/// Where [`Cluster::place`] put a chat message.
#[derive(Debug)]
pub enum Placed {
    /// The thread's live dispatch: send the message to it as a turn.
    Existing(Dispatch),
    /// A new dispatch, created with the message as its start.
    Created(Dispatch),
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("default_namespace", &self.client.default_namespace())
            .finish()
    }
}

impl Cluster {
    /// Loads the kubeconfig (`KUBECONFIG`, `~/.kube/config`, or the pod's service account).
    pub async fn connect() -> Result<Self, CliError> {
        let client = Client::try_default()
            .await
            .map_err(|e| CliError::NoCluster(e.to_string()))?;
        Ok(Self { client })
    }

    /// The cluster as `client` reaches it (e.g. the web console's client acting as a person).
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The dispatch a chat message goes to ([`chat::plan`]): the thread's live dispatch, which
    /// takes it as its next turn (the caller sends it), or a new one of the thread's chain,
    /// created here with `trace` as its trace context. A name another client takes meanwhile
    /// is planned again.
    pub async fn place(
        &self,
        namespace: &str,
        req: &ChatRequest,
        trace: Option<&TraceParent>,
    ) -> Result<Placed, CliError> {
        for _ in 0..CREATE_ATTEMPTS {
            let existing = self.list(namespace).await?;
            match chat::plan(&existing, req)? {
                Plan::Send { name } => {
                    if let Some(d) = existing.into_iter().find(|d| d.name_any() == name) {
                        return Ok(Placed::Existing(d));
                    }
                }
                Plan::Create { after, start } => {
                    let name = self.fresh_name(namespace, &existing, req, after).await?;
                    let mut d = chat::new_dispatch(namespace, &name, req, start);
                    if let Some(t) = trace {
                        d.annotations_mut()
                            .insert(trace::ANNOTATION.into(), t.to_string());
                    }
                    if let Some(created) = self.create(&d).await? {
                        return Ok(Placed::Created(created));
                    }
                }
            }
        }
        Err(CliError::Api {
            action: "creating the chat's dispatch".into(),
            message: "other clients kept taking the next name of the thread; try again".into(),
        })
    }

    /// The first free name of the thread's chain whose streams do not exist either: a new run
    /// must not inherit the turns or events of a deleted dispatch that had its name.
    async fn fresh_name(
        &self,
        namespace: &str,
        existing: &[Dispatch],
        req: &ChatRequest,
        after: u32,
    ) -> Result<String, CliError> {
        for name in chat::free_names(existing, req, after) {
            let streams = Streams::new(self.client(), namespace, &name);
            if !streams.has_entries().await? {
                return Ok(name);
            }
        }
        // `free_names` never ends; the loop returns or fails first.
        Err(CliError::Usage("no free dispatch name".into()))
    }

    /// The client (for the streams API, reached through the same API server).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The kubeconfig context's namespace.
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    fn api(&self, namespace: &str) -> Api<Dispatch> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The dispatch `namespace/name`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Dispatch, CliError> {
        let id = vexa_core::dispatch_id(namespace, name);
        match self.api(namespace).get(name).await {
            Ok(d) => Ok(d),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(CliError::NotFound(id)),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(CliError::Forbidden {
                action: format!("reading dispatch {id}"),
                needs: format!("get on dispatches (vexa.ai) in namespace {namespace}"),
                message: s.message,
            }),
            Err(e) => Err(CliError::kube(format!("reading dispatch {id}"), e)),
        }
    }

    /// Every dispatch of `namespace`.
    pub async fn list(&self, namespace: &str) -> Result<Vec<Dispatch>, CliError> {
        self.api(namespace)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| CliError::kube(format!("listing the dispatches of {namespace}"), e))
    }

    /// Creates `d`; `None` when a dispatch of that name appeared meanwhile.
    pub async fn create(&self, d: &Dispatch) -> Result<Option<Dispatch>, CliError> {
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        match self.api(namespace).create(&PostParams::default(), d).await {
            Ok(d) => Ok(Some(d)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(CliError::kube(
                format!("creating dispatch {}", dispatch::id(d)),
                e,
            )),
        }
    }

    /// The requesting user's name as the API server authenticated it.
    pub async fn username(&self) -> Result<String, CliError> {
        let review = Api::<SelfSubjectReview>::all(self.client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| CliError::kube("asking the API server who you are", e))?;
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| CliError::NoSubject("the API server did not say who you are".into()))
    }

    /// Waits until the dispatch has ended and returns it (`None` once it was deleted).
    /// `notify` hears what it waits for (queued, a missing runner) whenever that changes. API
    /// failures are retried: losing the API server must not end a follow that Redis still
    /// serves.
    pub async fn until_over(
        &self,
        namespace: &str,
        name: &str,
        notify: impl FnMut(&str),
    ) -> Option<Dispatch> {
        self.until(namespace, name, notify, dispatch::is_over).await
    }

    /// Waits until the dispatch runs (or has ended) and returns it; `None` once it was deleted.
    pub async fn until_running(
        &self,
        namespace: &str,
        name: &str,
        notify: impl FnMut(&str),
    ) -> Option<Dispatch> {
        self.until(namespace, name, notify, |d| {
            dispatch::phase(d) == Some(DispatchPhase::Running) || dispatch::is_over(d)
        })
        .await
    }

    async fn until(
        &self,
        namespace: &str,
        name: &str,
        mut notify: impl FnMut(&str),
        done: impl Fn(&Dispatch) -> bool,
    ) -> Option<Dispatch> {
        let mut told = None;
        let mut wait = POLL;
        loop {
            match self.get(namespace, name).await {
                Ok(d) if done(&d) => return Some(d),
                Ok(d) => {
                    let waiting = dispatch::waiting(&d);
                    if waiting.is_some() && waiting != told {
                        notify(waiting.as_deref().unwrap_or_default());
                    }
                    told = waiting;
                    wait = POLL;
                }
                Err(CliError::NotFound(_)) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the dispatch failed; retrying");
                    wait = (wait * 2).min(MAX_POLL_BACKOFF);
                }
            }
            tokio::time::sleep(wait).await;
        }
    }
}
