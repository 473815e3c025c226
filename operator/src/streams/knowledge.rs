//! A workspace's files, history and diffs for people (`workspaces/{log,tree,blob,diff}`), and
//! files they propose for it (`workspaces/uploads`), through the streams API (contract in
//! `vexa_core::knowledge`).
//!
//! Reads: the operator never mounts a workspace. For each Workspace that is read it runs a
//! trusted reader, a Job of the agent worker's image (`vexa-agent-worker serve-knowledge`), as
//! the agents' non-root user under the `restricted` profile with no service-account token, the
//! workspace's folder mounted read-only (a `subPath`, so it sees nothing else of the volume).
//! The reader answers only with the token in a Secret both share, and exits after ten idle
//! minutes; the next read starts another. Its answers are relayed unchanged.
//!
//! Uploads: a file becomes a `record` Card owned by the requesting user (the name the API
//! server authenticated, never one from the body), which they approve like any card. The Card
//! controller then commits it, under the workspace's write lock, authored by its approver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PersistentVolumeClaimVolumeSource, Pod, Probe, Secret,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use vexa_core::cards::{MAX_RECORD_CONTENT, safe_record_path};
use vexa_core::knowledge::{self as contract, Upload, UploadAccepted, ops};
use vexa_core::names::bounded_name;
use vexa_crds::Workspace;
use vexa_crds::card::{Card, CardKind, CardSpec, RecordProposal};

use super::authorize::Access;
use super::routes::{Streams, authorize, status};
use crate::FIELD_MANAGER;
use crate::controllers::workspace::storage::Storage;
use crate::runtime::security::{JobBounds, trusted_job};

/// `app.kubernetes.io/name` of a reader's Job, pod and Secret (the chart's NetworkPolicy
/// `<release>-knowledge-reader` selects it).
pub const READER_NAME: &str = "vexa-knowledge";
/// `app.kubernetes.io/component` of a reader's Job and Secret.
pub const READER_COMPONENT: &str = "knowledge-reader";
/// Label naming the Workspace (by UID) a reader serves.
pub const READER_OF_LABEL: &str = "vexa.ai/knowledge-of";
/// `app.kubernetes.io/component` of a Card an upload made.
pub const UPLOAD_COMPONENT: &str = "upload";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The most undecided uploads one person may have in a namespace.
pub const MAX_UNDECIDED_UPLOADS: usize = 20;
/// The Secret key holding the reader's token.
const TOKEN_KEY: &str = "token";
/// The longest a reader may run, whatever its idle timer says.
const READER_DEADLINE_SECONDS: i64 = 3600;
/// How long a first read waits for a reader to be ready.
const READY_WAIT: Duration = Duration::from_secs(90);
/// The longest one read of a reader may take.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest answer relayed from a reader (its own limits keep it far below).
const MAX_ANSWER: usize = 4 << 20;
/// The largest upload body (the content, JSON-escaped, and the path).
const MAX_UPLOAD_BODY: usize = 2 * MAX_RECORD_CONTENT + 8192;

/// The readers the operator knows of: where each Workspace's reader answers, and its token.
pub struct Readers {
    image: String,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    known: Mutex<BTreeMap<String, Reached>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// A reader that answered.
#[derive(Clone)]
struct Reached {
    /// `ip:port`.
    addr: String,
    token: String,
}

impl Readers {
    /// Readers run in `image` (the agent worker's).
    pub fn new(image: String) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        Arc::new(Self {
            image,
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            known: Mutex::new(BTreeMap::new()),
        })
    }
}

/// The reads' query (each op uses its own fields; the reader checks them).
#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    rev: Option<String>,
    path: Option<String>,
    limit: Option<usize>,
    commit: Option<String>,
}

impl ReadQuery {
    /// The reader's query string, checked here first so a bad one never starts a reader.
    fn checked(&self) -> Result<String, String> {
        let mut pairs = Vec::new();
        for (key, value) in [("rev", &self.rev), ("commit", &self.commit)] {
            if let Some(v) = value {
                if !contract::readable_rev(v) {
                    return Err(format!(
                        "{key} {v:?} is not a commit id (4 to 40 hex digits; ref names and \
                         revision expressions are not read)"
                    ));
                }
                pairs.push((key, v.clone()));
            }
        }
        if let Some(p) = &self.path {
            if !contract::readable_path(p) {
                return Err(format!(
                    "path {p:?} is not a path in the workspace (relative, '/'-separated, no \
                     '.', '..' or empty segment)"
                ));
            }
            pairs.push(("path", p.clone()));
        }
        if let Some(l) = self.limit {
            pairs.push(("limit", l.min(contract::MAX_LOG).to_string()));
        }
        Ok(pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", contract::encode_query_value(&v)))
            .collect::<Vec<_>>()
            .join("&"))
    }
}

/// `GET …/workspaces/{name}/{op}`: one read, for a user allowed to `get` the Workspace.
pub async fn read(
    State(s): State<Streams>,
    Path((namespace, name, op)): Path<(String, String, String)>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(op) = ops::READS.iter().find(|o| **o == op) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "workspaces/{op} is not served; the reads are {}",
                ops::READS.join(", ")
            ),
        );
    };
    if let Err(refused) = authorize(&s, &headers, Access::ReadWorkspace, &namespace, &name).await {
        return refused;
    }
    let query = match q.checked() {
        Ok(q) => q,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    let ws = match get_workspace(&s, &namespace, &name).await {
        Ok(ws) => ws,
        Err(r) => return r,
    };
    let readers = s.readers.clone();
    // A reader that stopped answering (it exited when idle, or its pod moved) is forgotten
    // and found or started again, once.
    let mut why = String::new();
    for _ in 0..2 {
        let reached = match readers.reach(&s.client, &ws).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        match readers.ask(&reached, op, &query).await {
            Ok(answer) => return answer,
            Err(e) => {
                tracing::info!(workspace = %name, error = %e, "a knowledge reader did not answer; finding another");
                readers.forget(&ws).await;
                why = e;
            }
        }
    }
    unavailable(format!(
        "the workspace's reader did not answer: {why}; try again"
    ))
}

/// `POST …/workspaces/{name}/uploads`: a file the requesting user proposes for the workspace,
/// as a `record` Card they own.
pub async fn upload(
    State(s): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = match authorize(&s, &headers, Access::Upload, &namespace, &name).await {
        Ok(u) => u,
        Err(refused) => return refused,
    };
    let upload = match parse_upload(&body) {
        Ok(u) => u,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    if let Err(r) = get_workspace(&s, &namespace, &name).await {
        return r;
    }
    // A person fills nobody's queue, and not etcd: their undecided uploads are bounded, as a
    // quota.
    let cards = Api::<Card>::namespaced(s.client.clone(), &namespace);
    match cards
        .list(&ListParams::default().labels(&format!("{COMPONENT_LABEL}={UPLOAD_COMPONENT}")))
        .await
    {
        Ok(list) => {
            let undecided = undecided_uploads(&list.items, &user.name);
            if undecided >= MAX_UNDECIDED_UPLOADS {
                // Forbidden, as the API server answers an exceeded ResourceQuota: a 429
                // would be retried by kubectl and client libraries, and the same answer
                // would come back.
                return status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "{} has {undecided} undecided uploads in {namespace}; approve or reject \
                         them first (at most {MAX_UNDECIDED_UPLOADS})",
                        user.name
                    ),
                );
            }
        }
        Err(e) => return unavailable(format!("reading the uploads' Cards failed: {e}")),
    }
    let card = upload_card(&namespace, &name, &user.name, &upload);
    let card_name = card.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let accepted = || {
        tracing::info!(namespace, workspace = %name, card = %card_name, user = %user.name, path = %upload.path, "a file was proposed for a workspace");
        (
            StatusCode::CREATED,
            axum::Json(UploadAccepted {
                card: card_name.clone(),
            }),
        )
            .into_response()
    };
    match cards.create(&params, &card).await {
        Ok(_) => accepted(),
        // The same file from the same person is the same proposal: the Card there is it.
        Err(kube::Error::Api(e)) if e.code == 409 => accepted(),
        Err(kube::Error::Api(e)) if e.code == 422 => status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("the Card for the upload was refused: {}", e.message),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "creating an upload's Card failed");
            status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "creating the upload's Card failed; try again".into(),
            )
        }
    }
}

/// How many of `cards` (uploads) `user` owns and has not decided.
pub fn undecided_uploads(cards: &[Card], user: &str) -> usize {
    cards
        .iter()
        .filter(|c| c.spec.owner == user && c.spec.decision.is_none())
        .count()
}

/// The upload in `body`, checked: a safe path and bounded text.
pub fn parse_upload(body: &[u8]) -> Result<Upload, String> {
    if body.len() > MAX_UPLOAD_BODY {
        return Err(format!(
            "the upload is {} bytes; a file may hold at most {MAX_RECORD_CONTENT} bytes",
            body.len()
        ));
    }
    let upload: Upload = serde_json::from_slice(body)
        .map_err(|e| format!("the upload must be JSON {{\"path\", \"content\"}}: {e}"))?;
    if !safe_record_path(&upload.path) || upload.path.len() > 1024 {
        return Err(format!(
            "path {:?} is not a file in the workspace (relative, no '.', '..' or empty segment, \
             not under .git)",
            upload.path
        ));
    }
    if upload.content.len() > MAX_RECORD_CONTENT {
        return Err(format!(
            "the file is {} bytes; at most {MAX_RECORD_CONTENT} are taken",
            upload.content.len()
        ));
    }
    Ok(upload)
}

/// The Card an upload becomes: owned by `user`, named from what it carries (so a retried
/// request finds its own Card).
pub fn upload_card(namespace: &str, workspace: &str, user: &str, upload: &Upload) -> Card {
    let digest = Sha256::digest(
        serde_json::json!([namespace, workspace, user, upload.path, upload.content])
            .to_string()
            .as_bytes(),
    );
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let name = format!("{}-upload-{hash}", bounded_name(workspace, 63 - 20));
    let title: String = format!("Upload {}", upload.path)
        .chars()
        .take(vexa_core::cards::MAX_TITLE_CHARS)
        .collect();
    let mut card = Card::new(
        &name,
        CardSpec {
            kind: CardKind::Record,
            owner: user.to_owned(),
            source_dispatch: None,
            title,
            body: Some(format!(
                "{user} uploaded `{}` ({} bytes) to the workspace {workspace}. Approving it \
                 commits the file, authored by whoever approves.",
                upload.path,
                upload.content.len()
            )),
            record: Some(RecordProposal {
                workspace: workspace.to_owned(),
                path: upload.path.clone(),
                content: upload.content.clone(),
            }),
            send: None,
            decision: None,
        },
    );
    card.metadata.namespace = Some(namespace.to_owned());
    card.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/part-of".to_owned(), "vexa".to_owned()),
        (COMPONENT_LABEL.to_owned(), UPLOAD_COMPONENT.to_owned()),
    ]));
    card
}

async fn get_workspace(s: &Streams, namespace: &str, name: &str) -> Result<Workspace, Response> {
    match Api::<Workspace>::namespaced(s.client.clone(), namespace)
        .get_opt(name)
        .await
    {
        Ok(Some(ws)) => Ok(ws),
        Ok(None) => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("workspace {namespace}/{name} not found"),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "reading a Workspace failed");
            Err(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "reading the workspace failed; try again".into(),
            ))
        }
    }
}

fn unavailable(what: String) -> Response {
    status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", what)
}

impl Readers {
    async fn forget(&self, ws: &Workspace) {
        self.known
            .lock()
            .await
            .remove(&ws.uid().unwrap_or_default());
    }

    /// The reader of `ws`: one known, one running, or a new one, once it is ready.
    async fn reach(&self, client: &kube::Client, ws: &Workspace) -> Result<Reached, Response> {
        let uid = ws.uid().unwrap_or_default();
        if let Some(r) = self.known.lock().await.get(&uid) {
            return Ok(r.clone());
        }
        let ns = ws.namespace().unwrap_or_default();
        let token = self.token(client, ws, &ns).await?;
        let jobs = Api::<Job>::namespaced(client.clone(), &ns);
        let selector = format!("{READER_OF_LABEL}={uid}");
        let running = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| unavailable(format!("listing the workspace's readers failed: {e}")))?
            .items
            .into_iter()
            .find(|j| !finished(j));
        let job = match running {
            Some(j) => j,
            None => jobs
                .create(&post(), &reader_job(ws, &self.image))
                .await
                .map_err(|e| unavailable(format!("starting the workspace's reader failed: {e}")))?,
        };
        let addr = ready_pod(client, &ns, &job).await?;
        let reached = Reached { addr, token };
        self.known.lock().await.insert(uid, reached.clone());
        Ok(reached)
    }

    /// The token of `ws`'s readers, from their Secret (made once).
    async fn token(
        &self,
        client: &kube::Client,
        ws: &Workspace,
        ns: &str,
    ) -> Result<String, Response> {
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        let name = reader_secret_name(ws);
        let read = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get(TOKEN_KEY))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let failed = |e: kube::Error| unavailable(format!("the reader's Secret: {e}"));
        if let Some(token) = secrets
            .get_opt(&name)
            .await
            .map_err(failed)?
            .as_ref()
            .and_then(read)
        {
            return Ok(token);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| unavailable(format!("no randomness for the reader's token: {e}")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match secrets.create(&post(), &reader_secret(ws, &token)).await {
            Ok(_) => Ok(token),
            // Another request made it first: theirs is the token.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                read(&secrets.get(&name).await.map_err(failed)?)
                    .ok_or_else(|| unavailable("the reader's Secret holds no token".into()))
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// One read of a reader: its answer relayed (JSON, with its status), or why it did not
    /// answer.
    async fn ask(&self, reached: &Reached, op: &str, query: &str) -> Result<Response, String> {
        let uri = format!("http://{}/{op}?{query}", reached.addr);
        let request = http::Request::get(&uri)
            .header(contract::TOKEN_HEADER, format!("Bearer {}", reached.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(READ_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| format!("no answer in {}s", READ_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        let code = answer.status();
        if code == StatusCode::UNAUTHORIZED {
            // Not this Workspace's reader (its pod's address was reused): find it again.
            return Err("the reader at that address refused the token".into());
        }
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((
            code,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response())
    }
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

fn finished(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_some()
        || job.status.as_ref().is_some_and(|s| {
            s.conditions.iter().flatten().any(|c| {
                matches!(
                    c.type_.as_str(),
                    "Complete" | "Failed" | "FailureTarget" | "SuccessCriteriaMet"
                ) && c.status == "True"
            })
        })
}

/// Waits for the reader Job's pod to be ready; its `ip:port`.
async fn ready_pod(client: &kube::Client, ns: &str, job: &Job) -> Result<String, Response> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let uid = job.uid().unwrap_or_default();
    let selector = format!("controller-uid={uid}");
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let mut last = "no pod yet".to_owned();
    while tokio::time::Instant::now() < deadline {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| unavailable(format!("reading the reader's pod failed: {e}")))?;
        for pod in &list.items {
            let st = pod.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            match (ready, st.pod_ip.as_deref(), st.phase.as_deref()) {
                (true, Some(ip), _) => return Ok(format!("{ip}:{}", contract::PORT)),
                (_, _, Some(phase @ ("Failed" | "Succeeded"))) => {
                    last = format!("its pod {} is {phase}", pod.name_any());
                }
                (_, _, phase) => {
                    last = format!(
                        "its pod {} is {}{}",
                        pod.name_any(),
                        phase.unwrap_or("Pending"),
                        waiting_reason(pod)
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(unavailable(format!(
        "the workspace's reader ({}) was not ready within {}s: {last}",
        job.name_any(),
        READY_WAIT.as_secs()
    )))
}

fn waiting_reason(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

fn labels(ws: &Workspace) -> BTreeMap<String, String> {
    BTreeMap::from([
        // Not `vexa-workspace` (the prepare pods', which the chart's NetworkPolicy cuts off
        // entirely): the chart lets the operator, and only it, reach `vexa-knowledge`.
        ("app.kubernetes.io/name".to_owned(), READER_NAME.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            READER_COMPONENT.to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "vexa".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (READER_OF_LABEL.to_owned(), ws.uid().unwrap_or_default()),
    ])
}

/// The Secret of a Workspace's readers.
pub fn reader_secret_name(ws: &Workspace) -> String {
    format!("{}-knowledge", bounded_name(&ws.name_any(), 63 - 10))
}

/// The Secret holding `token`, owned by the Workspace.
pub fn reader_secret(ws: &Workspace, token: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(reader_secret_name(ws)),
            namespace: ws.namespace(),
            labels: Some(labels(ws)),
            owner_references: ws.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// A reader Job of `ws`: the workspace's folder read-only, the token, nothing else.
pub fn reader_job(ws: &Workspace, image: &str) -> Job {
    let storage = Storage::of(&ws.spec);
    let token_dir = std::path::Path::new(contract::TOKEN_FILE)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let metadata = ObjectMeta {
        generate_name: Some(format!(
            "{}-knowledge-",
            bounded_name(&ws.name_any(), 63 - 16)
        )),
        namespace: ws.namespace(),
        labels: Some(labels(ws)),
        owner_references: ws.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let bounds = JobBounds {
        backoff_limit: 0,
        deadline_seconds: READER_DEADLINE_SECONDS,
        ttl_seconds: 60,
    };
    let container = Container {
        name: "reader".into(),
        image: Some(image.to_owned()),
        command: Some(vec![
            crate::controllers::card::applier::WORKER_COMMAND.into(),
        ]),
        args: Some(vec![contract::SERVE_SUBCOMMAND.into()]),
        ports: Some(vec![ContainerPort {
            name: Some("knowledge".into()),
            container_port: i32::from(contract::PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(i32::from(contract::PORT)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "workspace".into(),
                mount_path: contract::WORKSPACE_MOUNT.into(),
                sub_path: Some(storage.path.clone()),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "token".into(),
                mount_path: token_dir,
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: storage.claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        },
        Volume {
            name: "token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(reader_secret_name(ws)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    trusted_job(metadata, bounds, container, volumes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rstest::rstest;

    fn workspace() -> Workspace {
        let mut ws: Workspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "vexa.ai/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "notes", "namespace": "team-a", "uid": "u-1"},
            "spec": {"id": "alice-notes", "owner": "alice",
                     "storage": {"persistentVolumeClaim": {"claimName": "data", "subPath": "alice/notes"}}}
        }))
        .unwrap();
        ws.metadata.uid = Some("u-1".into());
        ws
    }

    #[test]
    fn the_reader_sees_only_its_folder_read_only_and_holds_no_cluster_credentials() {
        let job = reader_job(&workspace(), "img");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let c = &pod.containers[0];
        let mounts = c.volume_mounts.clone().unwrap();
        assert!(
            mounts.iter().all(|m| m.read_only == Some(true)),
            "{mounts:?}"
        );
        assert_eq!(mounts[0].sub_path.as_deref(), Some("alice/notes"));
        let volumes = pod.volumes.unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .read_only,
            Some(true)
        );
        assert_eq!(volumes.len(), 2, "the folder and the token, nothing else");
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(c.args.clone().unwrap(), vec![contract::SERVE_SUBCOMMAND]);
    }

    #[rstest]
    #[case(r#"{"path":"../x","content":"a"}"#)]
    #[case(r#"{"path":".git/config","content":"a"}"#)]
    #[case(r#"{"path":"/etc/passwd","content":"a"}"#)]
    #[case(r#"{"path":"a.md","content":"a","author":"bob"}"#)]
    #[case(r#"{"path":"a.md"}"#)]
    #[case("not json")]
    fn hostile_uploads_are_refused(#[case] body: &str) {
        assert!(parse_upload(body.as_bytes()).is_err(), "{body}");
    }

    #[test]
    fn an_upload_is_a_card_owned_by_the_authenticated_user() {
        let upload = parse_upload(br#"{"path":"notes/today.md","content":"hi"}"#).unwrap();
        let card = upload_card("team-a", "notes", "alice", &upload);
        assert_eq!(card.spec.owner, "alice");
        assert!(card.spec.decision.is_none(), "the person decides it");
        assert_eq!(card.spec.record.as_ref().unwrap().path, "notes/today.md");
        let again = upload_card("team-a", "notes", "alice", &upload);
        assert_eq!(
            card.name_any(),
            again.name_any(),
            "a retry finds its own card"
        );
        let bobs = upload_card("team-a", "notes", "bob", &upload);
        let mut decided = card.clone();
        decided.spec.decision = Some(
            serde_json::from_value(serde_json::json!({"verdict": "approve", "by": "alice"}))
                .unwrap(),
        );
        assert_eq!(
            undecided_uploads(&[card.clone(), bobs.clone(), decided], "alice"),
            1
        );
        assert_ne!(card.name_any(), bobs.name_any());
        assert!(card.name_any().len() <= 63);
        let big = "x".repeat(MAX_RECORD_CONTENT + 1);
        let body = serde_json::json!({"path": "a.md", "content": big}).to_string();
        assert!(
            parse_upload(body.as_bytes())
                .unwrap_err()
                .contains("at most")
        );
    }

    #[rstest]
    #[case(ReadQuery { rev: Some("HEAD~1".into()), ..Default::default() })]
    #[case(ReadQuery { path: Some("../../etc".into()), ..Default::default() })]
    #[case(ReadQuery { commit: Some("main".into()), ..Default::default() })]
    fn bad_reads_are_refused_before_any_reader(#[case] q: ReadQuery) {
        assert!(q.checked().is_err());
    }

    #[test]
    fn a_query_is_encoded() {
        let q = ReadQuery {
            path: Some("a b/c&d=é".into()),
            limit: Some(10_000),
            ..Default::default()
        };
        assert_eq!(q.checked().unwrap(), "path=a%20b/c%26d%3D%C3%A9&limit=200");
    }
}
