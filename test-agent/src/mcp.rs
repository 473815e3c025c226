//! The test agent's MCP steps (`mcp-list SERVER`, `mcp-call SERVER TOOL JSON`): what an agent
//! CLI does with the servers of its `--mcp-config`, over the streamable HTTP transport
//! (`initialize`, `notifications/initialized`, then the request, with the `mcp-session-id` the
//! server gave). Plain HTTP/1.1 to the pod's loopback endpoint; no credential of any kind: the
//! worker adds it on the way out. Each step says the JSON-RPC result or error it got, so a test
//! reads what the tool answered (or why it was refused) on the dispatch's stream.

use serde_json::{Value, json};

/// The protocol version the agent asks for.
const PROTOCOL: &str = "2025-06-18";

/// The URL of `server` in the MCP config file `config`.
pub fn server_url(config: Option<&str>, server: &str) -> Result<String, String> {
    let path = config.ok_or("no --mcp-config was given")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    v["mcpServers"][server]["url"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{path} names no server {server:?}"))
}

/// `tools/list` on `url`: the result (or error) as JSON text.
pub fn list(url: &str) -> Result<String, String> {
    request(url, "tools/list", json!({}))
}

/// `tools/call` of `tool` with `arguments` (JSON text) on `url`.
pub fn call(url: &str, tool: &str, arguments: &str) -> Result<String, String> {
    let arguments: Value =
        serde_json::from_str(arguments).map_err(|e| format!("the arguments are not JSON: {e}"))?;
    request(
        url,
        "tools/call",
        json!({"name": tool, "arguments": arguments}),
    )
}

fn request(url: &str, method: &str, params: Value) -> Result<String, String> {
    let (authority, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| format!("{url} is not an http:// URL with a path"))?;
    let path = format!("/{path}");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "vexa-test-agent", "version": env!("CARGO_PKG_VERSION")}}});
    let (status, headers, body) = post(authority, &path, None, &init)?;
    let initialised = message(&body);
    if status != 200 || initialised.get("error").is_some() {
        return Ok(format!(
            "initialize: HTTP {status} {}",
            summary(&initialised, &body)
        ));
    }
    let session = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
        .map(|(_, v)| v.clone());
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(authority, &path, session.as_deref(), &note)?;
    let ask = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, _, body) = post(authority, &path, session.as_deref(), &ask)?;
    let answer = message(&body);
    Ok(format!("HTTP {status} {}", summary(&answer, &body)))
}

/// The `result` or `error` of a JSON-RPC answer, as compact JSON (the raw body if none).
fn summary(answer: &Value, body: &str) -> String {
    answer
        .get("result")
        .map(|r| json!({"result": r}))
        .or_else(|| answer.get("error").map(|e| json!({"error": e})))
        .map(|v| v.to_string())
        .unwrap_or_else(|| body.trim().to_owned())
}

/// The JSON-RPC message of a body: plain JSON, or the last `data:` line of an SSE stream that
/// parses as an answer.
fn message(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v;
    }
    body.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("result").is_some() || v.get("error").is_some())
        .unwrap_or(Value::Null)
}

fn post(
    authority: &str,
    path: &str,
    session: Option<&str>,
    body: &Value,
) -> Result<crate::model::Answer, String> {
    let body = body.to_string();
    let session = session
        .map(|s| format!("mcp-session-id: {s}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: {PROTOCOL}\r\n{session}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    crate::model::exchange(authority, &request).map_err(|e| format!("{authority}{path}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_answer_comes_from_json_or_the_event_stream() {
        let sse =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n";
        assert_eq!(message(sse)["result"]["content"], json!([]));
        let plain = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"refused"}}"#;
        assert_eq!(
            summary(&message(plain), plain),
            r#"{"error":{"code":-32000,"message":"refused"}}"#
        );
    }

    #[test]
    fn servers_come_from_the_mcp_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp.json");
        std::fs::write(
            &path,
            r#"{"mcpServers":{"notes":{"type":"http","url":"http://127.0.0.1:7390/tools/notes"}}}"#,
        )
        .unwrap();
        let config = path.to_str();
        assert_eq!(
            server_url(config, "notes").unwrap(),
            "http://127.0.0.1:7390/tools/notes"
        );
        assert!(
            server_url(config, "other")
                .unwrap_err()
                .contains("no server")
        );
        assert!(server_url(None, "notes").is_err());
    }
}
