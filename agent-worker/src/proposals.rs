//! How an agent proposes a Card (SPEC §3 Card, §4 `card{card}`): a small MCP server on the
//! pod's loopback, served by the worker itself, with one tool, `propose`. A call becomes a
//! `card` event on the run's output stream, stamped with the turn it came in; the operator
//! turns it into a Card owned by the dispatch's subject, and a person decides it. Agent CLIs
//! that speak only their own stream format (Claude Code's stream-json has no card line) reach
//! it like any other MCP server in their config, as [`SERVER`].
//!
//! Nothing here is trusted: the arguments are the agent's. The checks below only answer the
//! agent early and clearly (a missing title, a `send` card, a path into `.git`); the operator
//! checks every card again, and ownership and provenance come from the Dispatch, never from
//! the call. A run may propose at most [`MAX_PROPOSALS`] cards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use vexa_core::cards::{
    MAX_BODY_CHARS as MAX_BODY, MAX_RECORD_CONTENT, MAX_TITLE_CHARS as MAX_TITLE,
    PROPOSABLE_KINDS as KINDS, safe_record_path,
};
use vexa_stream::{Event, TurnId, UnitEvent};

/// The server's name in the agent's MCP config: not a valid Kubernetes object name, so no
/// granted Tool can take it.
pub const SERVER: &str = "vexa_cards";
/// The one tool.
pub const TOOL: &str = "propose";
/// The path it is served at.
pub const PATH: &str = "/vexa/cards";
/// The most cards one run may propose (the operator refuses more as well).
pub const MAX_PROPOSALS: usize = 50;
/// The largest request body: a record's content plus its JSON and envelope.
pub const MAX_REQUEST_BODY: usize = MAX_RECORD_CONTENT * 2 + 16_384;
/// How many requests it serves at once; more are answered 503 at once (an agent opening
/// connections by the thousand holds no more memory than this many bodies).
pub const MAX_CONCURRENT: usize = 8;
/// The protocol version answered when the agent asks for one this server does not know.
const PROTOCOL: &str = "2025-06-18";
/// The versions answered as asked.
const PROTOCOLS: [&str; 3] = ["2024-11-05", "2025-03-26", "2025-06-18"];

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

struct State {
    events: mpsc::Sender<UnitEvent>,
    turn: Arc<AtomicU32>,
    proposed: AtomicUsize,
    permits: Arc<Semaphore>,
}

/// The running server; it stops when dropped.
pub struct ProposalEndpoint {
    addr: SocketAddr,
    turn: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ProposalEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProposalEndpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ProposalEndpoint {
    /// Listens on a free loopback port; each accepted proposal goes to `events`.
    pub async fn start(events: mpsc::Sender<UnitEvent>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let turn = Arc::new(AtomicU32::new(0));
        let state = Arc::new(State {
            events,
            turn: turn.clone(),
            proposed: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        });
        let task = crate::loopback::serve(
            listener,
            "card proposal endpoint",
            state,
            |state, req| async move { handle(&state, req).await },
        );
        tracing::info!(%addr, "card proposal endpoint listens");
        Ok(Self { addr, turn, task })
    }

    /// The turn whose events proposals are stamped with from now on.
    pub fn set_turn(&self, turn: TurnId) {
        self.turn.store(turn.0, Ordering::SeqCst);
    }

    /// The agent's URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }
}

impl Drop for ProposalEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let null = Value::Null;
    if req.uri().path() != PATH {
        return rpc_error(
            StatusCode::NOT_FOUND,
            &null,
            -32000,
            &format!(
                "nothing at {}: the card server is at {PATH}",
                req.uri().path()
            ),
        );
    }
    match *req.method() {
        Method::POST => {}
        // No server-initiated messages, and sessions hold nothing to end.
        Method::DELETE => return Response::new(Full::new(Bytes::new()).boxed()),
        _ => {
            return rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &null,
                -32000,
                "the card server takes POST (JSON-RPC) only",
            );
        }
    }
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &null,
            -32000,
            &format!("more than {MAX_CONCURRENT} requests at once; retry shortly"),
        );
    };
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &null,
                -32600,
                &format!("a request to the card server is at most {MAX_REQUEST_BODY} bytes"),
            );
        }
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(StatusCode::BAD_REQUEST, &null, -32700, "not JSON");
    };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    // A notification (no id) gets no answer.
    if message.get("id").is_none() {
        let mut accepted = Response::new(Full::new(Bytes::new()).boxed());
        *accepted.status_mut() = StatusCode::ACCEPTED;
        return accepted;
    }
    let result = match method {
        "initialize" => initialize(&message["params"]),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [tool_description()]}),
        "tools/call" => call(state, &message["params"]).await,
        other => {
            return rpc_error(
                StatusCode::OK,
                &id,
                -32601,
                &format!("the card server has no method {other:?}"),
            );
        }
    };
    json_response(
        StatusCode::OK,
        &json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

fn initialize(params: &Value) -> Value {
    let asked = params["protocolVersion"].as_str().unwrap_or(PROTOCOL);
    let version = PROTOCOLS
        .iter()
        .find(|v| **v == asked)
        .copied()
        .unwrap_or(PROTOCOL);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": SERVER, "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Propose a Card for a person to approve or reject: a file to record \
                         in a workspace, a draft, a suggestion, an alert or a digest. Nothing is \
                         applied until a person approves it.",
    })
}

/// The `propose` tool as `tools/list` shows it.
pub fn tool_description() -> Value {
    json!({
        "name": TOOL,
        "description": "Propose a Card that a person approves or rejects. A `record` card \
                        commits `record.content` at `record.path` in one of this run's \
                        workspaces once approved; `draft`, `suggestion`, `alert` and `digest` \
                        are shown to the person. Nothing happens until a person decides.",
        "inputSchema": {
            "type": "object",
            "required": ["kind", "title"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "description": "A short name for the card (a DNS label), unique in this run."},
                "kind": {"type": "string", "enum": KINDS},
                "title": {"type": "string", "maxLength": MAX_TITLE},
                "body": {"type": "string", "description": "Markdown shown to the person.", "maxLength": MAX_BODY},
                "record": {
                    "type": "object",
                    "required": ["workspace", "path", "content"],
                    "additionalProperties": false,
                    "properties": {
                        "workspace": {"type": "string", "description": "The Workspace object's name."},
                        "path": {"type": "string", "description": "A relative path inside it."},
                        "content": {"type": "string", "maxLength": MAX_RECORD_CONTENT},
                    },
                },
            },
        },
    })
}

/// A tool result the agent reads (`isError` when it was refused).
fn tool_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

async fn call(state: &State, params: &Value) -> Value {
    if params["name"].as_str() != Some(TOOL) {
        return tool_result(
            &format!(
                "the card server has one tool, {TOOL:?}, not {:?}",
                params["name"]
            ),
            true,
        );
    }
    let card = match check(&params["arguments"]) {
        Ok(card) => card,
        Err(why) => return tool_result(&format!("not proposed: {why}"), true),
    };
    let n = state.proposed.fetch_add(1, Ordering::SeqCst);
    if n >= MAX_PROPOSALS {
        state.proposed.fetch_sub(1, Ordering::SeqCst);
        return tool_result(
            &format!("not proposed: a run may propose at most {MAX_PROPOSALS} cards"),
            true,
        );
    }
    let title = card["title"].as_str().unwrap_or_default().to_owned();
    let turn = TurnId(state.turn.load(Ordering::SeqCst));
    let event = UnitEvent::new(turn, Event::Card { card });
    if state.events.send(event).await.is_err() {
        state.proposed.fetch_sub(1, Ordering::SeqCst);
        return tool_result("not proposed: the run is ending", true);
    }
    tool_result(
        &format!(
            "Proposed card {}: {title:?}. A person approves or rejects it; nothing is applied \
             before that.",
            n + 1
        ),
        false,
    )
}

/// The card event of a `propose` call's arguments, or why it is refused. The operator checks
/// again; ownership and the source dispatch are never taken from here.
pub fn check(arguments: &Value) -> Result<Value, String> {
    let Some(args) = arguments.as_object() else {
        return Err("the arguments must be a JSON object".into());
    };
    let allowed = ["id", "kind", "title", "body", "record"];
    if let Some(field) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {field:?} (allowed: {})",
            allowed.join(", ")
        ));
    }
    let text = |field: &str| -> Result<Option<&str>, String> {
        match args.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("{field} must be a string")),
        }
    };
    let kind = text("kind")?.ok_or("kind is required")?;
    if kind == "send" {
        return Err(
            "a send card comes only from calling a gated tool; call the tool itself".into(),
        );
    }
    if !KINDS.contains(&kind) {
        return Err(format!("kind {kind:?} is not one of {}", KINDS.join(", ")));
    }
    let title = text("title")?.ok_or("title is required")?;
    if title.trim().is_empty() || title.chars().count() > MAX_TITLE {
        return Err(format!("title must be 1 to {MAX_TITLE} characters"));
    }
    if text("body")?.is_some_and(|b| b.chars().count() > MAX_BODY) {
        return Err(format!("body is longer than {MAX_BODY} characters"));
    }
    text("id")?;
    let mut card = Map::new();
    for field in ["id", "kind", "title", "body"] {
        if let Some(v) = text(field)? {
            card.insert(field.into(), Value::String(v.into()));
        }
    }
    match (kind, args.get("record")) {
        ("record", Some(Value::Object(record))) => {
            let field = |name: &str| {
                record
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("record.{name} is required (a string)"))
            };
            let (workspace, path, content) =
                (field("workspace")?, field("path")?, field("content")?);
            if let Some(extra) = record
                .keys()
                .find(|k| !["workspace", "path", "content"].contains(&k.as_str()))
            {
                return Err(format!("unknown field record.{extra}"));
            }
            if !safe_record_path(path) {
                return Err(format!(
                    "record.path {path:?} must stay inside the workspace (relative, no '..', \
                     not under .git)"
                ));
            }
            if content.len() > MAX_RECORD_CONTENT {
                return Err(format!(
                    "record.content is longer than {MAX_RECORD_CONTENT} bytes"
                ));
            }
            card.insert(
                "record".into(),
                json!({"workspace": workspace, "path": path, "content": content}),
            );
        }
        ("record", _) => return Err("a record card needs record {workspace, path, content}".into()),
        (_, None | Some(Value::Null)) => {}
        (_, Some(_)) => return Err(format!("a {kind} card carries no record")),
    }
    Ok(Value::Object(card))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rstest::rstest;

    fn record() -> Value {
        json!({"id": "notes", "kind": "record", "title": "Action items",
               "record": {"workspace": "alice-notes", "path": "meetings/a.md", "content": "# A\n"}})
    }

    #[test]
    fn a_record_proposal_becomes_the_card_event_as_given() {
        assert_eq!(check(&record()).unwrap(), record());
        let s = json!({"kind": "suggestion", "title": "Read this", "body": "*soon*"});
        assert_eq!(check(&s).unwrap(), s);
    }

    #[rstest]
    #[case::not_object(json!("x"), "JSON object")]
    #[case::send(json!({"kind": "send", "title": "t"}), "gated tool")]
    #[case::unknown_kind(json!({"kind": "exec", "title": "t"}), "not one of")]
    #[case::no_title(json!({"kind": "alert"}), "title is required")]
    #[case::blank_title(json!({"kind": "alert", "title": " "}), "1 to 200")]
    #[case::owner(json!({"kind": "alert", "title": "t", "owner": "bob"}), "unknown field \"owner\"")]
    #[case::decision(json!({"kind": "alert", "title": "t", "decision": {"verdict": "approve"}}), "unknown field")]
    #[case::source(json!({"kind": "alert", "title": "t", "sourceDispatch": "x"}), "unknown field")]
    #[case::record_missing(json!({"kind": "record", "title": "t"}), "needs record")]
    #[case::dotdot(json!({"kind": "record", "title": "t", "record": {"workspace": "w", "path": "../x", "content": ""}}), "inside the workspace")]
    #[case::git(json!({"kind": "record", "title": "t", "record": {"workspace": "w", "path": ".git/hooks/x", "content": ""}}), "inside the workspace")]
    #[case::extra_record_field(json!({"kind": "record", "title": "t", "record": {"workspace": "w", "path": "a", "content": "", "mode": "755"}}), "record.mode")]
    #[case::record_on_alert(json!({"kind": "alert", "title": "t", "record": {"workspace": "w", "path": "a", "content": ""}}), "carries no record")]
    #[case::number_title(json!({"kind": "alert", "title": 5}), "must be a string")]
    #[case::huge(json!({"kind": "record", "title": "t", "record": {"workspace": "w", "path": "a", "content": "x".repeat(MAX_RECORD_CONTENT + 1)}}), "longer than")]
    fn hostile_or_wrong_proposals_are_refused_with_a_reason(
        #[case] args: Value,
        #[case] want: &str,
    ) {
        let why = check(&args).unwrap_err();
        assert!(why.contains(want), "{why}");
    }

    async fn post(url: &str, body: Value) -> (u16, Value) {
        let uri: http::Uri = url.parse().unwrap();
        let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str())
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(uri.path())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn call_of(id: u64, args: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": TOOL, "arguments": args}})
    }

    #[tokio::test]
    async fn the_agent_proposes_over_mcp_and_the_card_is_stamped_with_the_current_turn() {
        let (tx, mut rx) = mpsc::channel(64);
        let endpoint = ProposalEndpoint::start(tx).await.unwrap();
        let url = endpoint.url();
        let (status, init) = post(
            &url,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-03-26", "capabilities": {}}}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
        let (_, list) = post(
            &url,
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
        assert_eq!(list["result"]["tools"][0]["name"], TOOL);

        endpoint.set_turn(TurnId(2));
        let (_, answer) = post(&url, call_of(2, record())).await;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        let event = rx.recv().await.unwrap();
        assert_eq!(event.turn_id, TurnId(2));
        assert_eq!(event.event, Event::Card { card: record() });

        // Refused: nothing reaches the stream, and the agent reads why.
        let (_, answer) = post(&url, call_of(3, json!({"kind": "send", "title": "t"}))).await;
        assert_eq!(answer["result"]["isError"], true, "{answer}");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_run_proposes_at_most_fifty_cards() {
        let (tx, mut rx) = mpsc::channel(128);
        let endpoint = ProposalEndpoint::start(tx).await.unwrap();
        let card = json!({"kind": "alert", "title": "t"});
        for i in 0..MAX_PROPOSALS as u64 {
            let (_, a) = post(&endpoint.url(), call_of(i, card.clone())).await;
            assert_eq!(a["result"]["isError"], false, "{a}");
        }
        let (_, a) = post(&endpoint.url(), call_of(99, card)).await;
        assert_eq!(a["result"]["isError"], true, "{a}");
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_PROPOSALS);
    }

    #[tokio::test]
    async fn slow_requests_hold_at_most_a_few_bodies_and_the_rest_are_turned_away() {
        use tokio::io::AsyncWriteExt;
        let (tx, _rx) = mpsc::channel(8);
        let endpoint = ProposalEndpoint::start(tx).await.unwrap();
        // Requests whose bodies never finish arriving.
        let mut held = Vec::new();
        for _ in 0..MAX_CONCURRENT {
            let mut s = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
            s.write_all(
                format!("POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{{")
                    .as_bytes(),
            )
            .await
            .unwrap();
            held.push(s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, answer) = post(
            &endpoint.url(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        )
        .await;
        assert_eq!(status, 503, "{answer}");
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, _) = post(
            &endpoint.url(),
            json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        )
        .await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn other_paths_methods_and_garbage_get_a_clear_error() {
        let (tx, _rx) = mpsc::channel(8);
        let endpoint = ProposalEndpoint::start(tx).await.unwrap();
        let base = format!("http://{}", endpoint.addr);
        let (status, _) = post(&format!("{base}/tools/x"), json!({})).await;
        assert_eq!(status, 404);
        let (status, a) = post(
            &endpoint.url(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"}),
        )
        .await;
        assert_eq!((status, a["error"]["code"].as_i64()), (200, Some(-32601)));
        let (status, _) = post(
            &endpoint.url(),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
        assert_eq!(status, 202);
    }
}
