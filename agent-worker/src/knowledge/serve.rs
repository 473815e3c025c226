//! The reader over HTTP (`vexa-agent-worker serve-knowledge`): `GET /healthz` for the Job's
//! probe, and `GET /log`, `/tree`, `/blob`, `/diff` for the operator, each carrying the
//! reader's bearer token. Answers are the JSON types of [`vexa_core::knowledge`]; refusals and
//! failures a [`Problem`] with their status.
//!
//! Each request opens the repository afresh (an agent may rewrite it between two requests) and
//! reads it on the blocking pool. The reader exits on SIGTERM, and on its own after a while
//! without a request (the operator starts another when one is needed).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::Instant;
use vexa_core::knowledge::{Problem, ops};

use super::{KnowledgeError, Reader, open};

/// The shortest token the reader accepts.
pub const MIN_TOKEN_LEN: usize = 32;

/// The secret a caller presents as `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A token the reader cannot use.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The token is empty (an unset Secret key, or the wrong file).
    #[error("the token is empty")]
    Empty,
    /// The token is too short to be a secret.
    #[error(
        "the token is {len} characters long; the reader needs at least {MIN_TOKEN_LEN} \
         (give it a longer random one)"
    )]
    TooShort {
        /// Its length, without surrounding whitespace.
        len: usize,
    },
}

impl Token {
    /// `text` without surrounding whitespace, if it is at least [`MIN_TOKEN_LEN`] long.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: text.len() });
        }
        Ok(Self(text.to_owned()))
    }

    /// The token in the file at `path` (a Secret's key, maybe ending in a newline).
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Self::new(&text)
    }

    /// Whether `authorization` is `Bearer <this token>`, compared in constant time.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.map(HeaderValue::as_bytes) else {
            return false;
        };
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return false;
        }
        same(value[scheme.len()..].trim_ascii(), self.0.as_bytes())
    }
}

/// Whether `a` and `b` are equal, taking the same time wherever they differ (only the length
/// shows).
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    a.len() == b.len() && diff == 0
}

/// The reader could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// SIGTERM could not be handled (a stop would kill the reader mid-answer).
    #[error("cannot handle SIGTERM: {0}")]
    Signal(io::Error),
    /// Accepting connections failed.
    #[error("serving: {0}")]
    Serve(io::Error),
}

/// Serves the workspace at `workspace` on `addr` until SIGTERM (or SIGINT), or until `idle`
/// passes without a request (`/healthz` does not count). Either ending is a clean `Ok`.
pub async fn serve(
    addr: SocketAddr,
    workspace: PathBuf,
    token: Token,
    idle: Duration,
) -> Result<(), ServeError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!(%addr, workspace = %workspace.display(), idle_exit_sec = idle.as_secs(), "serving the workspace's knowledge");
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    };
    serve_on(listener, workspace, token, idle, stop).await
}

/// [`serve`] on a bound `listener`, until `stop` completes or `idle` passes without a request.
pub async fn serve_on(
    listener: TcpListener,
    workspace: PathBuf,
    token: Token,
    idle: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let shared = Arc::new(Shared {
        workspace,
        token,
        activity: watch::Sender::new(Instant::now()),
        busy: AtomicUsize::new(0),
    });
    let idle_exit = idle_exit(shared.clone(), idle);
    let ended = async move {
        tokio::select! {
            () = stop => {}
            () = idle_exit => tracing::info!(idle_exit_sec = idle.as_secs(), "no request for a while: exiting"),
        }
    };
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(ended)
        .await
        .map_err(ServeError::Serve)
}

/// What every request shares.
#[derive(Debug)]
struct Shared {
    workspace: PathBuf,
    token: Token,
    /// When the last request began or ended.
    activity: watch::Sender<Instant>,
    /// Requests being answered.
    busy: AtomicUsize,
}

/// Counts a request as being answered while it lives.
struct Busy<'a>(&'a Shared);

impl<'a> Busy<'a> {
    fn start(shared: &'a Shared) -> Self {
        shared.busy.fetch_add(1, Ordering::SeqCst);
        shared.activity.send_replace(Instant::now());
        Self(shared)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.activity.send_replace(Instant::now());
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes once `idle` has passed with no request being answered.
async fn idle_exit(shared: Arc<Shared>, idle: Duration) {
    loop {
        let deadline = *shared.activity.borrow() + idle;
        tokio::time::sleep_until(deadline).await;
        let quiet = *shared.activity.borrow() + idle <= Instant::now();
        if quiet && shared.busy.load(Ordering::SeqCst) == 0 {
            return;
        }
        if quiet {
            // A request outlived the idle time: look again once it could have.
            shared.activity.send_replace(Instant::now());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let reads = Router::new()
        .route(&format!("/{}", ops::LOG), get(log))
        .route(&format!("/{}", ops::TREE), get(tree))
        .route(&format!("/{}", ops::BLOB), get(blob))
        .route(&format!("/{}", ops::DIFF), get(diff))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(reads)
}

/// Refuses a request without the token; counts the others as activity.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let _busy = Busy::start(&shared);
    if !shared
        .token
        .admits(request.headers().get(header::AUTHORIZATION))
    {
        tracing::info!(route = request.uri().path(), "refused: no or a wrong token");
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "this reader answers only requests with its bearer token".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// `?rev=&limit=`.
#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    rev: String,
    limit: Option<usize>,
}

/// `?rev=&path=`.
#[derive(Debug, Deserialize)]
struct PathQuery {
    #[serde(default)]
    rev: String,
    #[serde(default)]
    path: String,
}

/// `?commit=`.
#[derive(Debug, Deserialize)]
struct DiffQuery {
    #[serde(default)]
    commit: String,
}

async fn log(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => read(&shared, ops::LOG, move |r| r.log(&q.rev, q.limit)).await,
        Err(e) => bad_query(&e),
    }
}

async fn tree(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => read(&shared, ops::TREE, move |r| r.tree(&q.rev, &q.path)).await,
        Err(e) => bad_query(&e),
    }
}

async fn blob(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<PathQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => read(&shared, ops::BLOB, move |r| r.blob(&q.rev, &q.path)).await,
        Err(e) => bad_query(&e),
    }
}

async fn diff(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => read(&shared, ops::DIFF, move |r| r.diff(&q.commit)).await,
        Err(e) => bad_query(&e),
    }
}

/// Opens the workspace afresh and runs `f` over it on the blocking pool.
async fn read<T, F>(shared: &Shared, op: &'static str, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Reader) -> Result<T, KnowledgeError> + Send + 'static,
{
    let workspace = shared.workspace.clone();
    match tokio::task::spawn_blocking(move || open(&workspace).and_then(|r| f(&r))).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => {
            if e.status().is_server_error() || e.status() == StatusCode::CONFLICT {
                tracing::warn!(op, reason = e.reason(), error = %e, "read failed");
            } else {
                tracing::info!(op, reason = e.reason(), error = %e, "read refused");
            }
            problem(e.status(), e.reason(), e.to_string())
        }
        Err(e) => {
            tracing::error!(op, error = %e, "read crashed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal",
                format!("the {op} read stopped: {e}"),
            )
        }
    }
}

fn bad_query(e: &QueryRejection) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("bad query: {}", e.body_text()),
    )
}

fn problem(status: StatusCode, reason: &str, message: String) -> Response {
    let body = Problem {
        reason: reason.to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::knowledge::tests::Repo;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use vexa_core::knowledge::Log;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (StatusCode, Bytes) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request = http::Request::get(format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn start(
        repo: &Repo,
        idle: Duration,
    ) -> (SocketAddr, tokio::task::JoinHandle<Result<(), ServeError>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_on(
            listener,
            repo.path().to_owned(),
            Token::new(TOKEN).unwrap(),
            idle,
            std::future::pending(),
        ));
        (addr, server)
    }

    #[tokio::test]
    async fn answers_only_with_the_token_then_exits_when_idle() {
        let repo = Repo::new();
        repo.commit("alice", 1_700_000_000, "First note", &[("a.md", b"a\n")]);
        let (addr, server) = start(&repo, Duration::from_secs(2)).await;

        let (status, body) = get(addr, "/healthz", None).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));

        for token in [
            None,
            Some("0123456789abcdef0123456789abcdeX"),
            Some("short"),
        ] {
            let (status, body) = get(addr, "/log", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
            let problem: Problem = serde_json::from_slice(&body).unwrap();
            assert_eq!(problem.reason, "Unauthorized");
        }

        let (status, body) = get(addr, "/log?limit=10", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        let log: Log = serde_json::from_slice(&body).unwrap();
        assert_eq!(log.commits.len(), 1);
        assert_eq!(log.commits[0].summary, "First note");

        let (status, body) = get(addr, "/blob?path=../x", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.reason, "BadRequest");

        let (status, body) = get(addr, "/log?limit=many", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(serde_json::from_slice::<Problem>(&body).is_ok());

        let (status, _) = get(addr, "/blob?rev=abcdef12&path=a.md", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let ended = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }

    #[tokio::test]
    async fn health_probes_do_not_keep_it_alive() {
        let repo = Repo::new();
        let (addr, server) = start(&repo, Duration::from_millis(500)).await;
        let started = Instant::now();
        while !server.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(5), "still serving");
            let _ =
                tokio::time::timeout(Duration::from_millis(200), get(addr, "/healthz", None)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(server.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_workspace_without_git_is_a_conflict() {
        let folder = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            folder.path().to_owned(),
            Token::new(TOKEN).unwrap(),
            Duration::from_secs(60),
            async move {
                let _ = stopped.await;
            },
        ));
        let (status, body) = get(addr, "/tree", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem.reason, "NotAGitWorkspace");
        stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }

    #[test]
    fn tokens_must_be_long_and_match_exactly() {
        assert!(matches!(Token::new("  \n"), Err(TokenError::Empty)));
        assert!(matches!(
            Token::new("short"),
            Err(TokenError::TooShort { len: 5 })
        ));
        assert!(Token::new(&TOKEN[1..]).is_err());
        let token = Token::new(&format!("{TOKEN}\n")).unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(token.admits(Some(&header(&format!("Bearer {TOKEN}")))));
        assert!(token.admits(Some(&header(&format!("bearer {TOKEN}")))));
        assert!(!token.admits(Some(&header(TOKEN))));
        assert!(!token.admits(Some(&header(&format!("Bearer {TOKEN}0")))));
        assert!(!token.admits(Some(&header(&format!("Bearer {}", &TOKEN[1..])))));
        assert!(!token.admits(None));
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
