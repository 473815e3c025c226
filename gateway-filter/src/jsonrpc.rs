//! The body of an MCP request: exactly one JSON-RPC 2.0 request or notification.

use serde_json::{Value, json};

/// One JSON-RPC request (or notification, without `id`) as the gateway reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The request id (`Value::Null` for a notification).
    pub id: Value,
    /// The method (`tools/call`, `tools/list`, `initialize`, `notifications/…`).
    pub method: String,
    /// The params (`Value::Null` when absent).
    pub params: Value,
}

impl Call {
    /// `params.name` of a `tools/call`.
    pub fn tool_name(&self) -> Option<&str> {
        self.params.get("name").and_then(Value::as_str)
    }

    /// `params.arguments` of a `tools/call` (`{}` when absent).
    pub fn arguments(&self) -> Value {
        self.params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}))
    }
}

/// Why a body is not one JSON-RPC request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not JSON at all (JSON-RPC -32700).
    #[error("parse error: the body is not JSON: {0}")]
    Parse(String),
    /// JSON, but not one JSON-RPC 2.0 request (JSON-RPC -32600).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl CallError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            CallError::Parse(_) => -32700,
            CallError::Invalid(_) => -32600,
        }
    }

    /// The audit reason.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Parse(_) => "MalformedJson",
            CallError::Invalid(_) => "InvalidRequest",
        }
    }
}

/// The one JSON-RPC request in `body`. A batch (an array) is refused: the gateway decides about
/// one call at a time, and a batch would let a second call ride on the first one's decision.
pub fn parse_call(body: &[u8]) -> Result<Call, CallError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| CallError::Parse(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(CallError::Invalid(if value.is_array() {
            "batches are not accepted: send one JSON-RPC request per HTTP request".into()
        } else {
            "the body is not a JSON-RPC request object".into()
        }));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(CallError::Invalid("jsonrpc must be \"2.0\"".into()));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(CallError::Invalid("method must be a string".into()));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    if !(id.is_null() || id.is_string() || id.is_number()) {
        return Err(CallError::Invalid("id must be a string or a number".into()));
    }
    let params = object.remove("params").unwrap_or(Value::Null);
    if !(params.is_null() || params.is_object()) {
        return Err(CallError::Invalid("params must be an object".into()));
    }
    Ok(Call { id, method, params })
}

/// A JSON-RPC error response.
pub fn error_body(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// A JSON-RPC result response.
pub fn result_body(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_request_is_read() {
        let call = parse_call(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"notes.append","arguments":{"text":"hi"}}}"#,
        )
        .unwrap();
        assert_eq!(call.method, "tools/call");
        assert_eq!(call.tool_name(), Some("notes.append"));
        assert_eq!(call.arguments(), json!({"text": "hi"}));
        assert_eq!(call.id, json!(7));
    }

    #[test]
    fn batches_and_garbage_are_refused_with_their_codes() {
        let batch = parse_call(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#);
        assert_eq!(batch.as_ref().unwrap_err().code(), -32600);
        assert!(batch.unwrap_err().to_string().contains("batches"));
        assert_eq!(parse_call(b"{not json").unwrap_err().code(), -32700);
        assert_eq!(parse_call(b"").unwrap_err().code(), -32700);
        for body in [
            r#""tools/call""#,
            r#"{"id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
        ] {
            assert_eq!(
                parse_call(body.as_bytes()).unwrap_err().code(),
                -32600,
                "{body}"
            );
        }
    }
}
