//! Brokered model access (SPEC §4): the agent talks to a loopback proxy in its pod's trusted
//! container, which forwards to the operator's model gateway with the dispatch's gateway token;
//! the gateway checks the token, adds the real credential and forwards to the model API.
//!
//! - [`GatewayToken`]: the dispatch's credential at the gateway, an HMAC over the dispatch's
//!   namespace, name and UID under a key only the operator holds. It proves which dispatch
//!   asks and expires with it (the gateway also checks that the dispatch still runs).
//! - [`ModelUsage`] and [`UsageMeter`]: the tokens a run used, counted from the model API's
//!   responses (streamed or not).

use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The request header carrying the gateway token, from the worker's proxy to the gateway.
pub const GATEWAY_TOKEN_HEADER: &str = "x-vexa-dispatch-token";
/// Headers the proxy strips from the agent's requests: whatever credential the agent sends
/// is not the one that counts, and the gateway sets its own.
pub const AGENT_CREDENTIAL_HEADERS: [&str; 3] =
    ["x-api-key", "authorization", GATEWAY_TOKEN_HEADER];
/// What the agent finds in the variable its CLI reads its key from: a placeholder, so a CLI
/// that refuses to start without a key starts.
pub const PLACEHOLDER_KEY: &str = "brokered-by-vexa";
/// Default variable the agent CLI reads its API base URL from.
pub const DEFAULT_BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// Default model API.
pub const DEFAULT_ENDPOINT: &str = "https://api.anthropic.com";

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1), plus
/// `host`, which names the hop it was sent to.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Removes the headers one hop must not pass to the next (and any header `connection` names).
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

/// Removes every credential a request carries (the agent's, or a token meant for the previous
/// hop).
pub fn strip_credentials(headers: &mut http::HeaderMap) {
    for name in AGENT_CREDENTIAL_HEADERS {
        headers.remove(name);
    }
}

/// The next hop's URI: `base` (scheme, authority and a path prefix) with the request's path
/// and query appended. `None` when `base` has no scheme or authority.
pub fn forward_uri(base: &http::Uri, request: &http::Uri) -> Option<http::Uri> {
    let prefix = base.path().trim_end_matches('/');
    let path = request.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .scheme(base.scheme_str()?)
        .authority(base.authority()?.as_str())
        .path_and_query(format!("{prefix}{path}"))
        .build()
        .ok()
}

/// Domain separation: this key signs nothing else.
const TOKEN_CONTEXT: &[u8] = b"vexa-model-gateway/v1";

/// Which dispatch a gateway token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayToken {
    /// The dispatch's namespace.
    pub namespace: String,
    /// The dispatch's name.
    pub name: String,
    /// The dispatch's UID: a Dispatch recreated under the same name gets a new token.
    pub uid: String,
}

/// A gateway token that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<namespace>/<name>/<uid>.<mac>`.
    #[error("the dispatch token is malformed")]
    Malformed,
    /// The MAC does not match.
    #[error("the dispatch token's signature does not verify")]
    BadSignature,
}

fn mac(key: &[u8], namespace: &str, name: &str, uid: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for part in [
        TOKEN_CONTEXT,
        namespace.as_bytes(),
        name.as_bytes(),
        uid.as_bytes(),
    ] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl GatewayToken {
    /// The token text, signed with `key`.
    pub fn sign(&self, key: &[u8]) -> String {
        let tag = mac(key, &self.namespace, &self.name, &self.uid)
            .finalize()
            .into_bytes();
        format!(
            "{}/{}/{}.{}",
            self.namespace,
            self.name,
            self.uid,
            hex(&tag)
        )
    }

    /// Reads and verifies `token` under `key` (in constant time).
    pub fn verify(key: &[u8], token: &str) -> Result<Self, TokenError> {
        let (subject, tag) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = subject.split('/');
        let (Some(namespace), Some(name), Some(uid), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if [namespace, name, uid].iter().any(|p| p.is_empty()) {
            return Err(TokenError::Malformed);
        }
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        mac(key, namespace, name, uid)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        })
    }
}

/// Model tokens a run used.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    /// Input tokens, including those written to and read from the prompt cache.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Model requests forwarded.
    pub requests: i64,
}

impl ModelUsage {
    /// Input and output together: what a budget counts.
    pub fn total(&self) -> i64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Counts the tokens of one model response from its body: a JSON message, or a stream of
/// server-sent events (`message_start` carries the input tokens, the last `message_delta` the
/// output). Feed it the body's lines as they pass; only `usage` objects are read, so a body of
/// any size costs no memory beyond one line.
#[derive(Debug, Default, Clone)]
pub struct UsageMeter {
    input: i64,
    output: i64,
}

fn count(v: &serde_json::Value, key: &str) -> i64 {
    v.get(key)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
        .max(0)
}

impl UsageMeter {
    fn usage(&mut self, usage: &serde_json::Value, input_too: bool) {
        if input_too {
            self.input = count(usage, "input_tokens")
                .saturating_add(count(usage, "cache_creation_input_tokens"))
                .saturating_add(count(usage, "cache_read_input_tokens"));
        }
        // Output counts are cumulative within a message: the last one is the message's.
        self.output = self.output.max(count(usage, "output_tokens"));
    }

    /// One line of a streamed body (`data: {...}`) or a whole JSON body.
    pub fn observe(&mut self, line: &str) {
        let json = line.strip_prefix("data:").unwrap_or(line).trim();
        if !json.starts_with('{') || !json.contains("\"usage\"") {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return;
        };
        match v.get("type").and_then(serde_json::Value::as_str) {
            Some("message_start") => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    self.usage(u, true);
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage") {
                    self.usage(u, false);
                }
            }
            // A non-streamed message (`"type": "message"`) or another API's shape.
            _ => {
                if let Some(u) = v.get("usage") {
                    let mut input = count(u, "input_tokens").max(count(u, "prompt_tokens"));
                    input = input
                        .saturating_add(count(u, "cache_creation_input_tokens"))
                        .saturating_add(count(u, "cache_read_input_tokens"));
                    self.input = input;
                    self.output = count(u, "output_tokens").max(count(u, "completion_tokens"));
                }
            }
        }
    }

    /// The response's usage, one request.
    pub fn finish(self) -> ModelUsage {
        ModelUsage {
            input_tokens: self.input,
            output_tokens: self.output,
            requests: 1,
        }
    }
}

impl std::ops::AddAssign for ModelUsage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.requests = self.requests.saturating_add(other.requests);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rstest::rstest;

    fn token() -> GatewayToken {
        GatewayToken {
            namespace: "team-a".into(),
            name: "agent-alice-chat-main".into(),
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_not_forwarded() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("host", "127.0.0.1:1"),
            ("transfer-encoding", "chunked"),
            ("anthropic-version", "2023-06-01"),
        ] {
            h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["anthropic-version"]
        );
    }

    #[rstest]
    #[case(
        "http://gw:8082",
        "/v1/messages?beta=true",
        "http://gw:8082/v1/messages?beta=true"
    )]
    #[case("http://gw:8082/", "/v1/messages", "http://gw:8082/v1/messages")]
    #[case(
        "https://llm.models.svc/prefix/",
        "/v1/x",
        "https://llm.models.svc/prefix/v1/x"
    )]
    fn the_next_hop_keeps_the_path_and_query(
        #[case] base: &str,
        #[case] req: &str,
        #[case] want: &str,
    ) {
        let uri = forward_uri(&base.parse().unwrap(), &req.parse().unwrap()).unwrap();
        assert_eq!(uri.to_string(), want);
    }

    #[test]
    fn a_token_verifies_under_its_key_only() {
        let text = token().sign(b"key-1");
        assert_eq!(GatewayToken::verify(b"key-1", &text), Ok(token()));
        assert_eq!(
            GatewayToken::verify(b"key-2", &text),
            Err(TokenError::BadSignature)
        );
    }

    #[rstest]
    // Another dispatch's identity with this dispatch's signature.
    #[case::other_name(
        "team-a/agent-bob-chat-main/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        TokenError::BadSignature
    )]
    #[case::other_namespace(
        "team-b/agent-alice-chat-main/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        TokenError::BadSignature
    )]
    #[case::recreated(
        "team-a/agent-alice-chat-main/00000000-0000-0000-0000-000000000000",
        TokenError::BadSignature
    )]
    #[case::extra_segment(
        "team-a/x/agent-alice-chat-main/1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        TokenError::Malformed
    )]
    #[case::empty_name("team-a//1b4e28ba-2fa1-11d2-883f-0016d3cca427", TokenError::Malformed)]
    fn a_forged_subject_does_not_verify(#[case] subject: &str, #[case] error: TokenError) {
        let signed = token().sign(b"key");
        let (_, tag) = signed.rsplit_once('.').unwrap();
        assert_eq!(
            GatewayToken::verify(b"key", &format!("{subject}.{tag}")),
            Err(error)
        );
    }

    #[rstest]
    #[case("")]
    #[case("no-dot")]
    #[case("a/b/c.zz")]
    #[case("a/b/c.abc")]
    #[case("a/b/c.")]
    fn garbage_is_malformed_or_unsigned(#[case] text: &str) {
        assert!(GatewayToken::verify(b"key", text).is_err());
    }

    #[test]
    fn a_stream_counts_input_from_the_start_and_output_from_the_last_delta() {
        let mut m = UsageMeter::default();
        for line in [
            "event: message_start",
            r#"data: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":12,"cache_read_input_tokens":100,"output_tokens":1}}}"#,
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"usage\" in text"}}"#,
            r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            r#"data: {"type":"message_delta","delta":{},"usage":{"output_tokens":30}}"#,
            r#"data: {"type":"message_stop"}"#,
        ] {
            m.observe(line);
        }
        assert_eq!(
            m.finish(),
            ModelUsage {
                input_tokens: 112,
                output_tokens: 30,
                requests: 1
            }
        );
    }

    #[test]
    fn a_plain_message_counts_its_usage_and_negative_counts_are_ignored() {
        let mut m = UsageMeter::default();
        m.observe(r#"{"type":"message","usage":{"input_tokens":5,"output_tokens":-9}}"#);
        assert_eq!(m.finish().total(), 5);
    }
}
