//! The decision on one request, as pure data: from what Envoy saw ([`Facts`]), the verifier, the
//! Tool objects and the time, to refuse, answer, propose (a gated call) or forward. No I/O
//! here: the gRPC service observes before and acts after.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexa_audit::{ScopeRecord, WorkspaceGrant};
use vexa_core::gateway::parse_tool_path;
use vexa_policy::token::{DispatchClaims, UnixTime, Verifier};

use crate::card::{CardProposal, card_name};
use crate::jsonrpc::{Call, error_body, parse_call, result_body};
use crate::record::{CallRecord, Verdict, scope_of};

/// The largest body the filter reads; Envoy is configured to buffer at most this much for it.
pub const MAX_BODY: usize = 1 << 20;

/// JSON-RPC error code of a refusal by the gateway (implementation-defined server error).
pub const REFUSED: i64 = -32001;

/// What Envoy told the filter about one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request path (`/tools/<namespace>/<tool>`).
    pub path: &'a str,
    /// The `authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The SPIFFE ID of the client certificate Envoy verified (`source.principal`).
    pub peer: Option<&'a str>,
    /// The body Envoy buffered.
    pub body: &'a [u8],
}

/// Where a Tool's MCP server is: `host:port` and the path (with query) to send the call to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `https`?
    pub tls: bool,
    /// `host:port` (the scheme's default port when the URL names none).
    pub authority: String,
    /// The path and query (`/` when the URL has none).
    pub path: String,
}

impl Upstream {
    /// Splits an `http(s)://host[:port][/path]` URL; `None` for anything else (another scheme,
    /// user info, no host).
    pub fn parse(url: &str) -> Option<Self> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let has_port = match authority.rfind(':') {
            Some(i) => !authority[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        Some(Self {
            tls,
            authority,
            path,
        })
    }
}

/// A Tool object, as far as a decision is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolView {
    /// The object's name (what tokens and paths name).
    pub name: String,
    /// `spec.toolName`: the MCP tool the agent calls.
    pub tool_name: String,
    /// `spec.scope`: asked for in the exchange.
    pub scope: String,
    /// `spec.audience`: what the dispatch token is exchanged for.
    pub audience: String,
    /// `spec.grant == gate`.
    pub gated: bool,
    /// `spec.server.url`, split.
    pub upstream: Upstream,
}

/// Looks Tool objects up (a reflector's store in the binary, a map in tests).
pub trait Tools {
    /// The Tool `namespace/name`, if it exists and its server URL is usable.
    fn tool(&self, namespace: &str, name: &str) -> Option<ToolView>;
}

/// An HTTP answer the filter gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// A JSON-RPC response.
    pub body: String,
}

/// What the filter does with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Deny it.
    Refuse(Reply),
    /// Answer it without calling the tool (`tools/list`).
    Answer(Reply),
    /// Create the Card, then answer; the tool is not called.
    Propose {
        /// The Card.
        card: CardProposal,
        /// The answer once it exists.
        reply: Reply,
    },
    /// Exchange `token` for `audience` (and `scope`), then forward to `upstream`.
    Forward {
        /// The dispatch token (the subject token of the exchange).
        token: String,
        /// The Tool's audience.
        audience: String,
        /// The Tool's scope.
        scope: String,
        /// The Tool's server.
        upstream: Upstream,
    },
}

/// The outcome and the audit record it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// What the audit log says.
    pub record: CallRecord,
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decides on one request. The checks run from the most basic to the most specific and the
/// first failure is the answer: path, body size, token, workload binding, namespace, scope, Tool
/// object, JSON-RPC body, tool name; then gate, list or forward.
pub fn decide(
    facts: &Facts<'_>,
    verifier: &Verifier,
    tools: &dyn Tools,
    now: UnixTime,
) -> Decision {
    let path_tool = parse_tool_path(facts.path);
    let token = facts
        .authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // Read before anything is trusted: the refusal names the dispatch the token claims, and a
    // JSON-RPC error answers the id it was sent with.
    let claimed = token.map(unverified_claims).unwrap_or_default();
    let call = (facts.body.len() <= MAX_BODY).then(|| parse_call(facts.body));
    let id = match &call {
        Some(Ok(c)) => c.id.clone(),
        _ => Value::Null,
    };
    let mut record = CallRecord {
        dispatch: claimed.jti,
        subject: claimed.sub,
        launcher: claimed.launcher,
        tool: path_tool.map(|(_, t)| t.to_owned()).unwrap_or_default(),
        mcp_method: match &call {
            Some(Ok(c)) => c.method.clone(),
            _ => String::new(),
        },
        scope: claimed.scope,
        verdict: Verdict::Refused,
        reason: String::new(),
        arguments_sha256: String::new(),
    };
    let refuse = |mut record: CallRecord, status: u16, code: i64, reason: &str, message: &str| {
        record.verdict = Verdict::Refused;
        record.reason = reason.to_owned();
        Decision {
            outcome: Outcome::Refuse(Reply {
                status,
                body: error_body(&id, code, message),
            }),
            record,
        }
    };

    let Some((namespace, tool)) = path_tool else {
        let message = format!(
            "{:?} names no tool: the gateway serves /tools/<namespace>/<tool>",
            facts.path
        );
        return refuse(record, 404, REFUSED, "NotAToolPath", &message);
    };
    let Some(call) = call else {
        let message =
            format!("the body is larger than {MAX_BODY} bytes, the most the gateway reads");
        return refuse(record, 413, -32600, "BodyTooLarge", &message);
    };
    let Some(token) = token else {
        let message = "no dispatch token: send 'authorization: Bearer <dispatch token>'";
        return refuse(record, 401, REFUSED, "MissingToken", message);
    };
    let claims: DispatchClaims = match verifier.verify(token, now) {
        Ok(claims) => claims,
        Err(e) => return refuse(record, 401, REFUSED, e.reason(), &e.to_string()),
    };
    record.dispatch = claims.jti.clone();
    record.subject = claims.sub.clone();
    record.launcher = claims.launcher().to_owned();
    record.scope = scope_of(&claims);
    if facts.peer != Some(claims.cnf.spiffe_id.as_str()) {
        let message = format!(
            "the token is bound to workload {:?}; the caller is {:?}",
            claims.cnf.spiffe_id,
            facts.peer.unwrap_or("(no SPIFFE ID)")
        );
        return refuse(record, 403, REFUSED, "WorkloadMismatch", &message);
    }
    let (dispatch_ns, dispatch_name) = claims.jti.split_once('/').unwrap_or(("", &claims.jti));
    if namespace != dispatch_ns {
        let message = format!(
            "dispatch {} reaches tools in namespace {dispatch_ns:?} only, not {namespace:?}",
            claims.jti
        );
        return refuse(record, 403, REFUSED, "OtherNamespace", &message);
    }
    let Some(grant) = claims.tool(tool) else {
        let message = format!(
            "tool {tool:?} is not in the scope of dispatch {} (its tools: {})",
            claims.jti,
            claims.tools.join(", ")
        );
        return refuse(record, 403, REFUSED, "ToolOutOfScope", &message);
    };
    let Some(view) = tools.tool(namespace, tool) else {
        let message = format!("no usable Tool {tool:?} in namespace {namespace:?}");
        return refuse(record, 404, REFUSED, "UnknownTool", &message);
    };
    let call: Call = match call {
        Ok(call) => call,
        Err(e) => return refuse(record, 400, e.code(), e.reason(), &e.to_string()),
    };
    match call.method.as_str() {
        "tools/list" => {
            record.verdict = Verdict::Allowed;
            record.reason = "ToolsListed".into();
            let body = result_body(&call.id, tools_list(&view));
            return Decision {
                outcome: Outcome::Answer(Reply { status: 200, body }),
                record,
            };
        }
        "tools/call" => {
            let arguments = call.arguments().to_string();
            record.arguments_sha256 = sha256_hex(arguments.as_bytes());
            if call.tool_name() != Some(view.tool_name.as_str()) {
                let message = format!(
                    "Tool {tool:?} is the MCP tool {:?}; this call names {:?}",
                    view.tool_name,
                    call.tool_name().unwrap_or("no tool")
                );
                return refuse(record, 403, REFUSED, "WrongToolName", &message);
            }
            if grant == vexa_core::Grant::Gate || view.gated {
                let card = CardProposal {
                    namespace: dispatch_ns.to_owned(),
                    name: card_name(&claims.jti, tool, &arguments),
                    owner: claims.sub.clone(),
                    source_dispatch: dispatch_name.to_owned(),
                    tool: tool.to_owned(),
                    tool_name: view.tool_name.clone(),
                    launcher: claims.launcher().to_owned(),
                    arguments,
                };
                record.verdict = Verdict::Gated;
                record.reason = "ProposalCreated".into();
                let reply = Reply {
                    status: 200,
                    body: proposal_answer(&call.id, &card),
                };
                return Decision {
                    outcome: Outcome::Propose { card, reply },
                    record,
                };
            }
        }
        // initialize, ping, notifications: no effect of their own, and the tool still sees
        // only the exchanged token.
        _ => {}
    }
    // Envoy's tool cluster speaks plain HTTP: an `https://` server would get the exchanged
    // token in clear text on its TLS port. Refused until the gateway originates TLS.
    if view.upstream.tls {
        let message = format!(
            "Tool {tool:?} names an https:// server; this gateway reaches tools over plain \
             HTTP only and will not send a token unencrypted to a server that expects TLS"
        );
        return refuse(record, 502, REFUSED, "UpstreamTlsUnsupported", &message);
    }
    forward(record, token, view)
}

fn forward(mut record: CallRecord, token: &str, view: ToolView) -> Decision {
    record.verdict = Verdict::Allowed;
    record.reason = "Allowed".into();
    Decision {
        outcome: Outcome::Forward {
            token: token.to_owned(),
            audience: view.audience,
            scope: view.scope,
            upstream: view.upstream,
        },
        record,
    }
}

/// The `tools/list` result for the one tool a path reaches: the agent never learns of tools its
/// dispatch may not call. The input schema is left open; the tool checks its arguments.
fn tools_list(view: &ToolView) -> Value {
    json!({"tools": [{
        "name": view.tool_name,
        "description": format!("{} (scope {}), through the Vexa gateway", view.tool_name, view.scope),
        "inputSchema": {"type": "object"},
    }]})
}

/// The answer to a gated call: a result, not an error, so the agent learns that the call became
/// a proposal and does not retry it as a failure.
fn proposal_answer(id: &Value, card: &CardProposal) -> String {
    result_body(
        id,
        json!({
            "content": [{"type": "text", "text": format!(
                "Not run: {} is gated. Proposal (Card) {} awaits approval by {}.",
                card.tool_name, card.name, card.owner
            )}],
            "isError": false,
        }),
    )
}

/// What a token claims, read without verifying it (for the record of a refusal only).
#[derive(Default)]
struct Claimed {
    jti: String,
    sub: String,
    launcher: String,
    scope: ScopeRecord,
}

fn unverified_claims(token: &str) -> Claimed {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or_default().chars().take(256).collect();
    Claimed {
        jti: text(&payload["jti"]),
        sub: text(&payload["sub"]),
        launcher: text(&payload["act"]["sub"]),
        scope: ScopeRecord {
            workspaces: payload["workspaces"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .take(64)
                        .map(|w| WorkspaceGrant {
                            name: text(&w["name"]),
                            mode: serde_json::from_value(w["mode"].clone()).ok(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            tools: payload["tools"]
                .as_array()
                .map(|a| a.iter().take(64).map(text).collect())
                .unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests;
