//! The handlers. Each reads or writes the cluster as the signed-in person; a refusal by the API
//! server (RBAC, admission) is shown as it was given, and a button is shown only when the
//! cluster says the person may use it.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Event as KubeEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use vexa_cli::chat::ChatRequest;
use vexa_cli::cluster::{Cluster, Placed};
use vexa_cli::streams::Streams;
use vexa_crds::card::{Card, Verdict};
use vexa_crds::{AgentRunner, Dispatch, Identity, Schedule, Tool, Workspace, WorkspaceUse};

use crate::cluster::{Action, SignInError, may};
use crate::guard::{SignedIn, headers, same_origin};
use crate::session::SessionError;
use crate::{App, health, knowledge, live, pages};

/// The largest form the console takes (a prompt is at most this).
const MAX_BODY: usize = 256 * 1024;

const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");

/// The console's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .route("/signin", get(signin_form).post(signin))
        .route("/signin/oidc", get(oidc_start))
        .route("/signin/oidc/callback", get(oidc_callback))
        .route("/signout", post(signout))
        .route("/", get(|| async { Redirect::to("/dispatches") }))
        .route("/dispatches", get(dispatch_list))
        .route("/n/{ns}/dispatches/{name}", get(dispatch_page))
        .route("/n/{ns}/dispatches/{name}/stream", get(stream))
        .route("/n/{ns}/dispatches/{name}/turns", post(turn))
        .route("/n/{ns}/dispatches/{name}/stop", post(stop))
        .route("/chat", get(chat_form).post(chat_send))
        .route("/cards", get(card_list))
        .route("/n/{ns}/cards/{name}/{verdict}", post(decide))
        .route("/schedules", get(schedule_list))
        .route("/n/{ns}/schedules/{name}/{action}", post(schedule_action))
        .route("/identities", get(identity_list))
        .route("/admin", get(admin))
        .route("/knowledge", get(knowledge::list))
        .route("/n/{ns}/workspaces/{name}", get(knowledge::folder))
        .route("/n/{ns}/workspaces/{name}/file", get(knowledge::file))
        .route(
            "/n/{ns}/workspaces/{name}/commits/{id}",
            get(knowledge::commit),
        )
        .route(
            "/n/{ns}/workspaces/{name}/upload",
            post(knowledge::upload).layer(DefaultBodyLimit::max(knowledge::MAX_UPLOAD_FORM)),
        )
        .layer(from_fn(same_origin))
        .layer(from_fn(headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// A failure as a page, with its status.
pub(crate) struct Problem {
    status: StatusCode,
    title: &'static str,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
        }
    }

    /// What the API server said, for `doing`.
    pub(crate) fn kube(doing: &str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 403 => Self::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("You may not {doing}: {}", s.message),
            ),
            kube::Error::Api(s) if s.code == 404 => Self::new(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("Cannot {doing}: {}", s.message),
            ),
            kube::Error::Api(s) if s.code == 401 => Self::new(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "The cluster no longer accepts your token: sign in again.",
            ),
            kube::Error::Api(s) => Self::new(
                StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY),
                "Refused",
                format!("Cannot {doing}: {}", s.message),
            ),
            other => Self::new(
                StatusCode::BAD_GATEWAY,
                "Cluster unreachable",
                format!("Cannot {doing}: {other}"),
            ),
        }
    }

    pub(crate) fn cli(e: vexa_cli::CliError) -> Self {
        use vexa_cli::CliError as E;
        let status = match &e {
            E::Forbidden { .. } | E::CardRefused { .. } | E::Refused { .. } => {
                StatusCode::FORBIDDEN
            }
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Usage(_) | E::NotRunning { .. } | E::ThreadBusy { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, "Refused", e.to_string())
    }

    pub(crate) fn page(self, s: &SignedIn, namespace: &str) -> Response {
        let frame = frame(s, namespace);
        (
            self.status,
            Html(pages::problem(&frame, self.title, &self.message).into_string()),
        )
            .into_response()
    }
}

pub(crate) fn frame<'a>(s: &'a SignedIn, namespace: &'a str) -> pages::Frame<'a> {
    pages::Frame {
        person: Some(&s.0.person.name),
        csrf: Some(&s.0.csrf),
        namespace,
    }
}

pub(crate) fn html(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

/// `?namespace=`; an object name, else the console's default.
#[derive(Debug, Deserialize, Default)]
struct NsQuery {
    #[serde(default)]
    namespace: Option<String>,
}

/// A namespace or object name as the API server accepts it (checked before any request).
pub(crate) fn is_name(s: &str) -> bool {
    vexa_cli::args::is_object_name(s)
}

/// The namespace a page looks at (`?namespace=`, else the console's default), checked.
pub(crate) struct InNamespace(pub(crate) String);

impl axum::extract::FromRequestParts<App> for InNamespace {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        app: &App,
    ) -> Result<Self, Self::Rejection> {
        let Query(q) = Query::<NsQuery>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        namespace_of(app, &q)
            .map(InNamespace)
            .map_err(|p| (p.status, p.message).into_response())
    }
}

fn namespace_of(app: &App, q: &NsQuery) -> Result<String, Problem> {
    let ns = q
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&app.default_namespace);
    if is_name(ns) {
        Ok(ns.to_owned())
    } else {
        Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad namespace",
            "A namespace is lowercase letters, digits and '-'.",
        ))
    }
}

pub(crate) fn names(ns: &str, name: &str) -> Result<(), Problem> {
    if is_name(ns) && is_name(name) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad name",
            "Names are lowercase letters, digits, '-' and '.'.",
        ))
    }
}

// ---- Sign in and out ---------------------------------------------------------------------

async fn signin_form(State(app): State<App>) -> Response {
    html(pages::signin(None, provider(&app)))
}

fn provider(app: &App) -> Option<&str> {
    app.oidc.as_deref().map(crate::oidc::Oidc::label)
}

/// The sign-in page again, with `message`.
fn refuse_signin(app: &App, status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(pages::signin(Some(message), provider(app)).into_string()),
    )
        .into_response()
}

/// Sends the browser to the OpenID provider, with this sign-in's state in a cookie.
async fn oidc_start(State(app): State<App>) -> Response {
    let Some(oidc) = app.oidc.clone() else {
        return refuse_signin(
            &app,
            StatusCode::NOT_FOUND,
            "This console has no sign-in service: sign in with a token.",
        );
    };
    match oidc.begin().await {
        Ok((state, url)) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, oidc.set_cookie(&state)),
                (header::LOCATION, url),
            ],
        )
            .into_response(),
        Err(e @ crate::oidc::OidcError::Busy) => {
            refuse_signin(&app, StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(e) => refuse_signin(&app, StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider's redirect back: the code is traded for an ID token, which the API server is
/// asked about like a pasted token. Only the browser that started the sign-in gets a session.
async fn oidc_callback(
    State(app): State<App>,
    h: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else {
        return refuse_signin(
            &app,
            StatusCode::NOT_FOUND,
            "This console has no sign-in service.",
        );
    };
    let cookie_state = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| oidc.state_in(c))
        .map(str::to_owned);
    let clear = [(header::SET_COOKIE, oidc.clear_cookie())];
    let refuse = |status: StatusCode, message: &str| {
        (clear.clone(), refuse_signin(&app, status, message)).into_response()
    };
    let tokens = match (q.state.as_deref(), q.code.as_deref(), q.error.as_deref()) {
        (Some(state), Some(code), None) if code.len() <= 4096 && state.len() <= 256 => {
            match oidc.finish(cookie_state.as_deref(), state, code).await {
                Ok(t) => t,
                Err(e @ crate::oidc::OidcError::NotStarted) => {
                    return refuse(StatusCode::BAD_REQUEST, &e.to_string());
                }
                Err(e) => return refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
            }
        }
        (_, _, Some(error)) => {
            let detail = q.error_description.as_deref().unwrap_or(error);
            return refuse(
                StatusCode::UNAUTHORIZED,
                &format!("The sign-in service refused: {detail}"),
            );
        }
        _ => return refuse(StatusCode::BAD_REQUEST, "That is not a sign-in callback."),
    };
    match app.api.sign_in(&tokens.id_token).await {
        Ok((person, client)) => {
            tracing::info!(user = %person.name, "signed in at the sign-in service");
            let renewal = crate::oidc::Renewal::of(&tokens);
            match app
                .sessions
                .start_renewable(person.clone(), client, renewal)
            {
                Ok(id) => {
                    let mut res = html(pages::signed_in(&person.name));
                    let headers = res.headers_mut();
                    for cookie in [app.sessions.set_cookie(&id), oidc.clear_cookie()] {
                        if let Ok(v) = cookie.parse() {
                            headers.append(header::SET_COOKIE, v);
                        }
                    }
                    res
                }
                Err(e @ SessionError::Full) => {
                    refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
                }
            }
        }
        Err(e @ (SignInError::Rejected | SignInError::Nobody)) => {
            refuse(StatusCode::UNAUTHORIZED, &e.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn signin(State(app): State<App>, Form(f): Form<SignInForm>) -> Response {
    let token = f.token.trim();
    let refuse = |status: StatusCode, message: &str| refuse_signin(&app, status, message);
    if token.is_empty() || token.len() > 16 * 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse(StatusCode::BAD_REQUEST, "That is not a token.");
    }
    match app.api.sign_in(token).await {
        Ok((person, client)) => {
            tracing::info!(user = %person.name, "signed in");
            match app.sessions.start(person, client) {
                Ok(id) => (
                    [(header::SET_COOKIE, app.sessions.set_cookie(&id))],
                    Redirect::to("/"),
                )
                    .into_response(),
                Err(e @ SessionError::Full) => {
                    refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
                }
            }
        }
        Err(e @ (SignInError::Rejected | SignInError::Nobody)) => {
            refuse(StatusCode::UNAUTHORIZED, &e.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn signout(
    State(app): State<App>,
    s: SignedIn,
    h: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = s.check_csrf(&h, f.csrf.as_deref()) {
        return r.into_response();
    }
    let ids: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| app.sessions.id_in(c).map(str::to_owned))
        .collect();
    for id in ids {
        let renewal = app.sessions.end(&id).and_then(|s| s.renewal);
        if let (Some(oidc), Some(r)) = (&app.oidc, renewal) {
            oidc.end(&r.refresh_token).await;
        }
    }
    (
        [(header::SET_COOKIE, app.sessions.clear_cookie())],
        Redirect::to("/signin"),
    )
        .into_response()
}

// ---- Dispatches --------------------------------------------------------------------------

async fn dispatch_list(
    s: SignedIn,
    InNamespace(ns): InNamespace,
    Query(filter): Query<pages::ListFilter>,
) -> Response {
    match list_of::<Dispatch>(&s, &ns, "dispatches").await {
        Ok(list) => html(pages::dispatches(
            &frame(&s, &ns),
            &list,
            &filter,
            Timestamp::now(),
        )),
        Err(page) => page,
    }
}

async fn dispatch_page(s: SignedIn, Path((ns, name)): Path<(String, String)>) -> Response {
    if let Err(p) = names(&ns, &name) {
        return p.page(&s, "");
    }
    let client = s.0.client.clone();
    let x = match Api::<Dispatch>::namespaced(client.clone(), &ns)
        .get(&name)
        .await
    {
        Ok(x) => x,
        Err(e) => return Problem::kube(&format!("read dispatch {ns}/{name}"), e).page(&s, &ns),
    };
    // Independent questions, asked at once.
    let of_this = ListParams::default().fields(&format!(
        "involvedObject.kind=Dispatch,involvedObject.name={name}"
    ));
    let events_api = Api::<KubeEvent>::namespaced(client.clone(), &ns);
    let (events, send, audit) = tokio::join!(
        events_api.list(&of_this),
        may_send(&client, &ns, &name),
        audit_of(&client, &ns, &name),
    );
    let events = events.map(|l| l.items).unwrap_or_default();
    html(pages::dispatch(
        &frame(&s, &ns),
        &x,
        &events,
        &audit,
        pages::DispatchRights { send },
    ))
}

/// The run's audit records (what it did, each as subject · launcher · scope), from the streams
/// API as the person; or why they cannot be shown.
async fn audit_of(client: &Client, ns: &str, name: &str) -> Result<Vec<String>, String> {
    let path = vexa_stream::api::path(ns, name, vexa_stream::api::AUDIT);
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request::<vexa_audit::DispatchAudit>(request).await {
        Ok(a) => Ok(a
            .records
            .iter()
            .map(vexa_cli::audit::render)
            .filter(|l| !l.is_empty())
            .collect()),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(format!(
            "You may not read this run's audit records (get on dispatches/audit in \
             streams.vexa.ai): {}",
            s.message
        )),
        Err(e) => Err(format!("The audit records could not be read: {e}")),
    }
}

/// Sending a turn needs `create` on `dispatches/turns` in both groups (the CRD's RBAC and the
/// streams API's), as the streams API checks.
async fn may_send(client: &Client, ns: &str, name: &str) -> bool {
    let ask = |group| Action {
        verb: "create",
        group,
        resource: "dispatches/turns",
        namespace: ns,
        name: Some(name),
    };
    let (crd, streams) = tokio::join!(
        may(client, ask("vexa.ai")),
        may(client, ask("streams.vexa.ai"))
    );
    crd && streams
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    #[serde(default)]
    from: Option<String>,
}

async fn stream(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<StreamQuery>,
    h: HeaderMap,
) -> Response {
    if !is_name(&ns) || !is_name(&name) {
        return (StatusCode::BAD_REQUEST, "bad name").into_response();
    }
    let last = h.get("last-event-id").and_then(|v| v.to_str().ok());
    let from = live::resume_point(last, q.from.as_deref());
    live::events(s.0.client.clone(), &ns, &name, from)
        .await
        .into_response()
}

#[derive(Deserialize)]
struct TurnForm {
    #[serde(default)]
    csrf: Option<String>,
    prompt: String,
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// A write: refused without the session's CSRF token; then `act`, answered by [`written`].
async fn write(
    s: &SignedIn,
    h: &HeaderMap,
    csrf: Option<&str>,
    back: &str,
    ns: &str,
    act: impl std::future::Future<Output = Result<serde_json::Value, Problem>>,
) -> Response {
    if let Err(r) = s.check_csrf(h, csrf) {
        return r.into_response();
    }
    written(h, back, act.await, s, ns)
}

/// The answer to a write: JSON for the page's script, a redirect back for a plain form.
pub(crate) fn written(
    h: &HeaderMap,
    back: &str,
    result: Result<serde_json::Value, Problem>,
    s: &SignedIn,
    ns: &str,
) -> Response {
    match (result, wants_json(h)) {
        (Ok(v), true) => axum::Json(v).into_response(),
        (Ok(_), false) => Redirect::to(back).into_response(),
        (Err(p), true) => (p.status, axum::Json(json!({"error": p.message}))).into_response(),
        (Err(p), false) => p.page(s, ns),
    }
}

async fn turn(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    Form(f): Form<TurnForm>,
) -> Response {
    let back = format!("/n/{ns}/dispatches/{name}");
    let act = async {
        names(&ns, &name)?;
        if f.prompt.trim().is_empty() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Empty",
                "Write a message first.",
            ));
        }
        let accepted = Streams::new(s.0.client.clone(), &ns, &name)
            .send(&json!({"prompt": f.prompt}))
            .await
            .map_err(Problem::cli)?;
        Ok(json!({"accepted": true, "last": accepted.last.map(|l| l.id)}))
    };
    write(&s, &h, f.csrf.as_deref(), &back, &ns, act).await
}

async fn stop(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let back = format!("/n/{ns}/dispatches/{name}");
    let act = async {
        names(&ns, &name)?;
        Streams::new(s.0.client.clone(), &ns, &name)
            .send(&json!({"type": "stop"}))
            .await
            .map_err(Problem::cli)?;
        Ok(json!({"stopping": true}))
    };
    write(&s, &h, f.csrf.as_deref(), &back, &ns, act).await
}

// ---- Chat --------------------------------------------------------------------------------

async fn chat_form(s: SignedIn, InNamespace(ns): InNamespace) -> Response {
    chat_page(&s, &ns, None).await
}

async fn chat_page(s: &SignedIn, ns: &str, error: Option<&str>) -> Response {
    let client = s.0.client.clone();
    // Runners are cluster-wide; one who may not list them types the name instead.
    let runners = Api::<AgentRunner>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    // Workspaces a person may not list are simply not offered.
    let workspaces = Api::<Workspace>::namespaced(client, ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        html(pages::chat(&frame(s, ns), &runners, &workspaces, error)),
    )
        .into_response()
}

async fn chat_send(
    s: SignedIn,
    InNamespace(ns): InNamespace,
    h: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Err(r) = s.check_csrf(&h, field("csrf")) {
        return r.into_response();
    }
    match send_chat(&s, &ns, &fields).await {
        Ok(name) => Redirect::to(&format!("/n/{ns}/dispatches/{name}")).into_response(),
        Err(p) if p.status == StatusCode::BAD_REQUEST || p.status == StatusCode::CONFLICT => {
            chat_page(&s, &ns, Some(&p.message)).await
        }
        Err(p) => p.page(&s, &ns),
    }
}

/// A chat message, exactly as `kubectl vexa chat` sends it: to the thread's live dispatch as a
/// turn, or in a new dispatch of the thread's chain. Returns the dispatch's name.
async fn send_chat(s: &SignedIn, ns: &str, fields: &[(String, String)]) -> Result<String, Problem> {
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let bad = |m: String| Problem::new(StatusCode::BAD_REQUEST, "Cannot send", m);
    let launcher = vexa_cli::args::subject(&s.0.person.name)
        .map_err(|e| bad(format!("your user name cannot launch a dispatch: {e}")))?;
    let (runner, thread, prompt) = (field("runner"), field("thread"), field("prompt"));
    if !is_name(&runner) {
        return Err(bad("Pick a runner.".into()));
    }
    if prompt.is_empty() {
        return Err(bad("Write a message first.".into()));
    }
    let mut workspaces = Vec::new();
    for (_, w) in fields.iter().filter(|(n, _)| n == "workspace") {
        if !is_name(w) {
            return Err(bad(format!("{w:?} is not a workspace name")));
        }
        workspaces.push(WorkspaceUse {
            name: w.clone(),
            mode: None,
        });
    }
    let req = ChatRequest {
        subject: launcher.clone(),
        launcher: format!("user:{launcher}"),
        thread: if thread.is_empty() {
            "main".into()
        } else {
            thread
        },
        runner,
        workspaces,
        prompt,
    };
    let client = s.0.client.clone();
    let trace = vexa_core::trace::TraceParent::random();
    match Cluster::from_client(client.clone())
        .place(ns, &req, trace.as_ref())
        .await
        .map_err(Problem::cli)?
    {
        Placed::Existing(d) => {
            let name = d.name_any();
            Streams::new(client, ns, &name)
                .send(&json!({"prompt": req.prompt}))
                .await
                .map_err(Problem::cli)?;
            Ok(name)
        }
        Placed::Created(d) => Ok(d.name_any()),
    }
}

/// The `K`s of `ns`, as the person, or the page that says why not.
pub(crate) async fn list_of<K>(s: &SignedIn, ns: &str, what: &str) -> Result<Vec<K>, Response>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(s.0.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| Problem::kube(&format!("list the {what} of {ns}"), e).page(s, ns))
}

/// Whether the person may patch `resource` `name` in `ns` (vexa.ai).
async fn may_patch(client: &Client, ns: &str, resource: &str, name: &str) -> bool {
    may(
        client,
        Action {
            verb: "patch",
            group: "vexa.ai",
            resource,
            namespace: ns,
            name: Some(name),
        },
    )
    .await
}

// ---- Cards -------------------------------------------------------------------------------

async fn card_list(s: SignedIn, InNamespace(ns): InNamespace) -> Response {
    let client = s.0.client.clone();
    let cards = match list_of::<Card>(&s, &ns, "cards").await {
        Ok(l) => l,
        Err(page) => return page,
    };
    // Admission lets only the owner decide; RBAC must let them patch it. One review per own
    // card, all at once.
    let rows = futures::future::join_all(cards.iter().map(|card| async {
        let may_decide = card.spec.owner == s.0.person.name
            && may_patch(&client, &ns, "cards", &card.name_any()).await;
        pages::CardRow { card, may_decide }
    }))
    .await;
    html(pages::cards(&frame(&s, &ns), &rows, Timestamp::now()))
}

async fn decide(
    s: SignedIn,
    Path((ns, name, verdict)): Path<(String, String, String)>,
    h: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let back = format!("/cards?namespace={ns}");
    let act = async {
        names(&ns, &name)?;
        let verdict = match verdict.as_str() {
            "approve" => Verdict::Approve,
            "reject" => Verdict::Reject,
            _ => {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "approve or reject",
                ));
            }
        };
        vexa_cli::cards::decide(&s.0.client, &ns, &name, verdict, None, &s.0.person.name)
            .await
            .map_err(Problem::cli)?;
        Ok(json!({"decided": true}))
    };
    write(&s, &h, f.csrf.as_deref(), &back, &ns, act).await
}

// ---- Schedules ---------------------------------------------------------------------------

async fn schedule_list(s: SignedIn, InNamespace(ns): InNamespace) -> Response {
    let client = s.0.client.clone();
    let list = match list_of::<Schedule>(&s, &ns, "schedules").await {
        Ok(l) => l,
        Err(page) => return page,
    };
    let rows = futures::future::join_all(list.iter().map(|schedule| async {
        let may_act = may_patch(&client, &ns, "schedules", &schedule.name_any()).await;
        pages::ScheduleRow { schedule, may_act }
    }))
    .await;
    html(pages::schedules(&frame(&s, &ns), &rows))
}

/// Run now, resume (annotations the operator carries out once per id, as `kubectl vexa
/// schedule` sets them), suspend and unsuspend (the spec's `suspend`).
async fn schedule_action(
    s: SignedIn,
    Path((ns, name, action)): Path<(String, String, String)>,
    h: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let back = format!("/schedules?namespace={ns}");
    let act = async {
        names(&ns, &name)?;
        let id = vexa_cli::schedule::new_id(Timestamp::now()).replacen("cli-", "console-", 1);
        let patch = match action.as_str() {
            "run-now" => vexa_cli::schedule::Action::RunNow.patch(&id),
            "resume" => vexa_cli::schedule::Action::Resume.patch(&id),
            "suspend" => json!({"spec": {"suspend": true}}),
            "unsuspend" => json!({"spec": {"suspend": false}}),
            _ => {
                return Err(Problem::new(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "run-now, resume, suspend or unsuspend",
                ));
            }
        };
        Api::<Schedule>::namespaced(s.0.client.clone(), &ns)
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .map_err(|e| Problem::kube(&format!("{action} schedule {ns}/{name}"), e))?;
        Ok(json!({"asked": action, "id": id}))
    };
    write(&s, &h, f.csrf.as_deref(), &back, &ns, act).await
}

async fn identity_list(s: SignedIn, InNamespace(ns): InNamespace) -> Response {
    match list_of::<Identity>(&s, &ns, "identities").await {
        Ok(l) => html(pages::identities(&frame(&s, &ns), &l)),
        Err(page) => page,
    }
}

// ---- Admin -------------------------------------------------------------------------------

async fn admin(
    s: SignedIn,
    InNamespace(ns): InNamespace,
    operator: Option<axum::Extension<std::sync::Arc<health::OperatorService>>>,
) -> Response {
    let client = s.0.client.clone();
    // Each part says on its own what the person may not see.
    let all = ListParams::default();
    let (runner_api, dispatch_api, tool_api) = (
        Api::<AgentRunner>::all(client.clone()),
        Api::<Dispatch>::namespaced(client.clone(), &ns),
        Api::<Tool>::namespaced(client.clone(), &ns),
    );
    let operator_health = async {
        let axum::Extension(service) = operator?;
        Some(health::read(&client, &service).await.map_err(|e| {
            let doing = format!("read the operator's metrics (get services/proxy {service})");
            match e {
                health::Error::Kube(e) => Problem::kube(&doing, e).message,
                other => format!("Cannot {doing}: {other}"),
            }
        }))
    };
    let (runners, dispatches, tools, operator) = tokio::join!(
        runner_api.list(&all),
        dispatch_api.list(&all),
        tool_api.list(&all),
        operator_health,
    );
    let runners = runners
        .map(|l| l.items)
        .map_err(|e| Problem::kube("list the agent runners", e).message);
    let dispatches = dispatches.map(|l| l.items).unwrap_or_default();
    let tools = tools
        .map(|l| l.items)
        .map_err(|e| Problem::kube(&format!("list the tools of {ns}"), e).message);
    html(pages::admin(
        &frame(&s, &ns),
        operator
            .as_ref()
            .map(|h| h.as_ref().map_err(String::as_str)),
        runners.as_deref().map_err(String::as_str),
        &dispatches,
        tools.as_deref().map_err(String::as_str),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_request() {
        assert!(is_name("alice-notes"));
        assert!(is_name("a.b"));
        assert!(!is_name("../x"));
        assert!(!is_name("A"));
        assert!(!is_name(""));
        assert!(!is_name("x/y"));
        assert!(!is_name("-x"));
    }
}
