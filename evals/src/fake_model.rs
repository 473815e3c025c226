//! A model endpoint for evals: it speaks the Anthropic Messages API (`POST /v1/messages`,
//! streamed as server-sent events when the request asks for `stream`), answers from a script
//! that is data, and records every request (headers and body) for the eval to assert on.
//!
//! Only the agent's conversation requests take the script's next step: a request with `tools`
//! (what Claude Code's main loop sends). Side requests the CLI may make (a title, a quota probe)
//! get a short text reply and do not advance the script. Past its end the script repeats its
//! last step.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One reply of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Step {
    /// A text answer that ends the turn.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call (`stop_reason: tool_use`): the CLI runs the tool and asks again.
    ToolUse {
        /// The tool's name, e.g. `Write`.
        name: String,
        /// Its input.
        input: Value,
    },
}

/// What the endpoint received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request's path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, parsed (`Null` when not JSON).
    pub body: Value,
}

/// Tokens every reply reports (the eval can compare them with the Dispatch's usage).
pub const INPUT_TOKENS: i64 = 30;
/// See [`INPUT_TOKENS`].
pub const OUTPUT_TOKENS: i64 = 7;

#[derive(Debug, Default)]
struct State {
    script: Vec<Step>,
    next: usize,
    seen: Vec<Seen>,
}

/// A running fake model.
#[derive(Debug, Clone)]
pub struct FakeModel {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeModel {
    /// Starts it on `addr` (e.g. `127.0.0.1:0`) with `script`.
    pub async fn start(addr: &str, script: Vec<Step>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script,
            ..State::default()
        }));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { answer(&state, uri.path(), headers, &body) }
            },
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// How many conversation requests took a scripted step.
    pub fn steps_taken(&self) -> usize {
        self.state.lock().unwrap().next
    }
}

fn answer(state: &Mutex<State>, path: &str, headers: HeaderMap, body: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    s.seen.push(Seen {
        path: path.to_owned(),
        headers,
        body: request.clone(),
    });
    if !path.ends_with("/v1/messages") {
        // count_tokens and anything else: a plausible small answer.
        return (
            StatusCode::OK,
            axum::Json(json!({"input_tokens": INPUT_TOKENS})),
        )
            .into_response();
    }
    let conversation = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let step = if conversation && !s.script.is_empty() {
        let i = s.next.min(s.script.len() - 1);
        s.next += 1;
        s.script[i].clone()
    } else {
        Step::Text { text: "ok".into() }
    };
    let model = request["model"].as_str().unwrap_or("fake-model").to_owned();
    let id = format!("msg_fake_{}", s.seen.len());
    drop(s);
    if request["stream"].as_bool() == Some(true) {
        (
            [("content-type", "text/event-stream")],
            sse(&id, &model, &step),
        )
            .into_response()
    } else {
        axum::Json(message(&id, &model, &step)).into_response()
    }
}

fn block(step: &Step, id: &str) -> Value {
    match step {
        Step::Text { text } => json!({"type": "text", "text": text}),
        Step::ToolUse { name, input } => {
            json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": input})
        }
    }
}

fn stop_reason(step: &Step) -> &'static str {
    match step {
        Step::Text { .. } => "end_turn",
        Step::ToolUse { .. } => "tool_use",
    }
}

/// A whole (non-streamed) message.
fn message(id: &str, model: &str, step: &Step) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": [block(step, id)],
        "stop_reason": stop_reason(step), "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
    })
}

/// The same message as the Messages API streams it.
fn sse(id: &str, model: &str, step: &Step) -> String {
    let mut events: Vec<(&str, Value)> = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}}),
    )];
    match step {
        Step::Text { text } => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        Step::ToolUse { name, input } => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": format!("toolu_{id}"),
                        "name": name, "input": {}}}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            ));
        }
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(step), "stop_sequence": null},
            "usage": {"output_tokens": OUTPUT_TOKENS}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
        .into_iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_use_streams_as_the_messages_api_does() {
        let step = Step::ToolUse {
            name: "Write".into(),
            input: json!({"file_path": "/w/a.md", "content": "hi"}),
        };
        let text = sse("m1", "claude-x", &step);
        let datas: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = datas.iter().map(|d| d["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let partial = datas[2]["delta"]["partial_json"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(partial).unwrap(),
            json!({"file_path": "/w/a.md", "content": "hi"})
        );
        assert_eq!(datas[4]["delta"]["stop_reason"], "tool_use");
        let script: Vec<Step> =
            serde_json::from_value(json!([{"type": "text", "text": "done"}])).unwrap();
        assert_eq!(
            script,
            [Step::Text {
                text: "done".into()
            }]
        );
    }
}
