//! The streams API's requests (the paths and lines are `vexa_stream::api`): discovery for the
//! API server, a dispatch's log, and its turns. Every request names a user the API server
//! authenticated; each is authorized again here on the Dispatch itself.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;
use vexa_core::knowledge;
use vexa_crds::{Dispatch, DispatchPhase};
use vexa_stream::UnitEvent;
use vexa_stream::api::{self, LastEntry, LogLine, TurnAccepted};
use vexa_stream::follow::{
    EntryId, FollowError, FollowOptions, follow_with, last_event, send_stop, send_turn,
};
use vexa_stream::publish::Turn;

use super::authorize::{self, Access};
use super::front_proxy::{FrontProxy, User};

/// The longest a single Redis request may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request needs.
#[derive(Clone)]
pub struct Streams {
    /// The operator's own client (reads Dispatches, asks SubjectAccessReviews).
    pub client: Client,
    /// Redis with the operator's credentials.
    pub redis: redis::Client,
    /// How the API server names the user.
    pub front: Arc<FrontProxy>,
    /// The audit chains' folder and the keys that sign them.
    pub audit: super::audit::AuditSource,
    /// The workspaces' trusted readers.
    pub readers: Arc<super::knowledge::Readers>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

/// The routes.
pub fn router(streams: Streams) -> Router {
    let gv = api::group_version_path();
    let dispatch = format!("{gv}/namespaces/{{namespace}}/{}/{{name}}", api::DISPATCHES);
    let workspace = format!("{gv}/namespaces/{{namespace}}/{}/{{name}}", api::WORKSPACES);
    Router::new()
        .route(&gv, get(discovery))
        .route(&format!("{dispatch}/{}", api::LOG), get(log))
        .route(&format!("{dispatch}/{}", api::TURNS), post(turns))
        .route(
            &format!("{dispatch}/{}", api::AUDIT),
            get(super::audit::dispatch_audit),
        )
        .route(
            &format!("{gv}/{}", api::AUDIT_LOG),
            get(super::audit::audit_log),
        )
        .route(
            &format!("{workspace}/{}", knowledge::ops::UPLOADS),
            post(super::knowledge::upload),
        )
        .route(&format!("{workspace}/{{op}}"), get(super::knowledge::read))
        .fallback(|| async {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the streams API serves only dispatches/log, dispatches/turns, dispatches/audit, \
                 workspaces/log, workspaces/tree, workspaces/blob, workspaces/diff, \
                 workspaces/uploads and auditlog"
                    .into(),
            )
        })
        .with_state(streams)
}

/// The resources, for the API server's discovery (and `kubectl api-resources`). Only the
/// subresources: the `dispatches` themselves are `vexa.ai`'s.
async fn discovery() -> Response {
    let sub = |of: &str, name: &str, kind: &str, verb: &str| json!({"name": format!("{of}/{name}"), "singularName": "", "namespaced": true, "kind": kind, "verbs": [verb]});
    let resource = |name: &str, kind: &str, verb: &str| sub(api::DISPATCHES, name, kind, verb);
    let workspace = |name: &str, kind: &str, verb: &str| sub(api::WORKSPACES, name, kind, verb);
    axum::Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", api::GROUP, api::VERSION),
        "resources": [
            resource(api::LOG, "DispatchLog", "get"),
            resource(api::TURNS, "DispatchTurn", "create"),
            resource(api::AUDIT, "DispatchAudit", "get"),
            workspace(knowledge::ops::LOG, "WorkspaceLog", "get"),
            workspace(knowledge::ops::TREE, "WorkspaceTree", "get"),
            workspace(knowledge::ops::BLOB, "WorkspaceBlob", "get"),
            workspace(knowledge::ops::DIFF, "WorkspaceDiff", "get"),
            workspace(knowledge::ops::UPLOADS, "WorkspaceUpload", "create"),
            {"name": api::AUDIT_LOG, "singularName": "", "namespaced": false, "kind": "AuditLog", "verbs": ["get"]},
        ],
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    from: Option<String>,
    follow: Option<bool>,
}

async fn log(
    State(s): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let from = match q.from.as_deref().map(str::parse::<EntryId>) {
        None => EntryId::ZERO,
        Some(Ok(id)) => id,
        Some(Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("from: {e}")),
    };
    let follow = q.follow.unwrap_or(true);
    if let Err(refused) = authorize(&s, &headers, Access::Read, &namespace, &name).await {
        return refused;
    }
    let dispatch = match get_dispatch(&s.client, &namespace, &name).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let topic = match &dispatch {
        Some(d) => d
            .status
            .as_ref()
            .and_then(|st| st.streams.as_ref())
            .map(|st| st.out.clone())
            .unwrap_or_else(|| vexa_core::out_topic(&vexa_core::dispatch_id(&namespace, &name))),
        None if !follow => vexa_core::out_topic(&vexa_core::dispatch_id(&namespace, &name)),
        None => return not_found(&namespace, &name),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let reader = Reader {
        client: s.client.clone(),
        redis: s.redis.clone(),
        namespace,
        name,
        topic,
        from,
    };
    tokio::spawn(async move {
        if follow {
            reader.follow(tx).await;
        } else {
            reader.backlog(tx).await;
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(rx))
        .unwrap_or_else(|_| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "building the response failed".into(),
            )
        })
}

type Lines = mpsc::Sender<Result<Bytes, Infallible>>;

struct Reader {
    client: Client,
    redis: redis::Client,
    namespace: String,
    name: String,
    topic: String,
    from: EntryId,
}

impl Reader {
    /// Sends every entry after `from` while the dispatch runs; once it has ended, what remains,
    /// then the end line. Returns when the client went away.
    async fn follow(self, mut tx: Lines) {
        let (client, namespace, name) = (
            self.client.clone(),
            self.namespace.clone(),
            self.name.clone(),
        );
        let ended = move || ended(client.clone(), namespace.clone(), name.clone());
        let lines = api::log_lines(
            self.redis,
            self.topic,
            self.from,
            FollowOptions::default(),
            ended,
        );
        let mut lines = std::pin::pin!(lines);
        while let Some(line) = lines.next().await {
            if send(&mut tx, line).await.is_err() {
                return;
            }
        }
    }

    /// Sends the entries after `from` up to the newest one now, then closes.
    async fn backlog(self, mut tx: Lines) {
        let Ok(Some(end)) = api::stream_end(self.redis.clone(), self.topic.clone()).await else {
            return;
        };
        let entries =
            follow_with::<UnitEvent>(self.redis, self.topic, self.from, FollowOptions::default());
        let mut entries = std::pin::pin!(entries);
        while let Some(item) = entries.next().await {
            let (id, line) = match item {
                Ok((id, unit)) => (id, LogLine::Event(id, unit)),
                Err(FollowError::Malformed { id, reason, .. }) => {
                    (id, LogLine::Malformed(id, reason))
                }
                Err(_) => return,
            };
            if id > end || send(&mut tx, line).await.is_err() || id == end {
                return;
            }
        }
    }
}

/// The phase once the dispatch has ended (`deleted` once it is gone); `None` while it runs or
/// when the API server cannot say.
async fn ended(client: Client, namespace: String, name: String) -> Option<String> {
    match Api::<Dispatch>::namespaced(client, &namespace)
        .get_opt(&name)
        .await
    {
        Ok(Some(d)) => d
            .status
            .and_then(|s| s.phase)
            .filter(|p| p.is_terminal())
            .map(|p| p.as_str().to_owned()),
        Ok(None) => Some("deleted".into()),
        Err(_) => None,
    }
}

async fn send(tx: &mut Lines, line: LogLine) -> Result<(), mpsc::SendError> {
    tx.send(Ok(Bytes::from(line.encode()))).await
}

async fn turns(
    State(s): State<Streams>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&s, &headers, Access::Send, &namespace, &name).await {
        return refused;
    }
    let turn = match Turn::parse(&body) {
        Ok(t) => t,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the turn: {e}"),
            );
        }
    };
    let d = match get_dispatch(&s.client, &namespace, &name).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(&namespace, &name),
        Err(r) => return r,
    };
    let phase = d.status.as_ref().and_then(|st| st.phase);
    let id = vexa_core::dispatch_id(&namespace, &name);
    if phase.is_some_and(DispatchPhase::is_terminal) {
        let phase = phase.map(DispatchPhase::as_str).unwrap_or_default();
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!("dispatch {id} has ended ({phase}): it takes no more turns"),
        );
    }
    let streams = d.status.as_ref().and_then(|st| st.streams.as_ref());
    let out = streams.map_or_else(|| vexa_core::out_topic(&id), |st| st.out.clone());
    let input = streams.map_or_else(|| vexa_core::in_topic(&id), |st| st.input.clone());
    let result = async {
        let mut conn = connect(&s.redis).await?;
        let last = last_event::<UnitEvent>(&mut conn, &out).await?;
        let added = match &turn {
            Turn::Prompt(p) => send_turn(&mut conn, &input, p).await?,
            Turn::Stop => send_stop(&mut conn, &input).await?,
        };
        Ok::<_, redis::RedisError>((last, added))
    }
    .await;
    let (last, added) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(dispatch = %id, error = %e, "adding a turn failed");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the dispatch's stream cannot be reached; try again".into(),
            );
        }
    };
    if turn == Turn::Stop {
        // The worker stops at once on the stop turn; the spec says so for the operator and for
        // a run whose worker has not started yet.
        let patch = json!({"spec": {"stop": true}});
        if let Err(e) = Api::<Dispatch>::namespaced(s.client.clone(), &namespace)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(dispatch = %id, error = %e, "recording a stop request failed");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("recording the stop of {id} failed; try again"),
            );
        }
    }
    let accepted = TurnAccepted {
        id: added.to_string(),
        last: last.map(|(id, event)| LastEntry {
            id: id.to_string(),
            turn_id: event.ok().map(|e| e.turn_id.to_string()),
        }),
    };
    (StatusCode::CREATED, axum::Json(accepted)).into_response()
}

/// The user, authorized for `access`; otherwise the answer to send.
pub(super) async fn authorize(
    s: &Streams,
    headers: &HeaderMap,
    access: Access,
    namespace: &str,
    name: &str,
) -> Result<User, Response> {
    let Some(user) = s.front.user(headers) else {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request names no user".into(),
        ));
    };
    match authorize::allowed(&s.client, &user, access, namespace, name).await {
        Ok(true) => Ok(user),
        Ok(false) => Err(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "user {:?} may not {} {namespace}/{name}: that needs {} in namespace {namespace}",
                user.name,
                access.doing(),
                access.permission()
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "a SubjectAccessReview failed");
            Err(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "authorizing the request failed; try again".into(),
            ))
        }
    }
}

async fn get_dispatch(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Dispatch>, Response> {
    Api::<Dispatch>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "reading a Dispatch failed");
            status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "reading the dispatch failed; try again".into(),
            )
        })
}

pub(super) fn not_found(namespace: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("dispatch {namespace}/{name} not found"),
    )
}

async fn connect(
    redis: &redis::Client,
) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    redis
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// An error as a Kubernetes `Status`, so kubectl and client libraries show its message.
pub(super) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}
