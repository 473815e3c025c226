//! The ext_authz gRPC service: observe (what Envoy sent) → [`decide`] (pure) → act (exchange the
//! token, create the Card, write the audit record) → answer Envoy.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use vexa_audit::{Effect, Event};
use vexa_core::gateway::{INTERNAL_HEADER_PREFIX, TOKEN_HEADER};
use vexa_crds::card::Card;

use crate::decide::{Decision, Facts, Outcome, Reply, Tools, decide};
use crate::exchange::{Cache, Exchanger, TokenCache};
use crate::jwks::Keys;
use crate::metrics::{CacheLabels, DecisionLabels, Metrics};
use crate::record::Verdict;

/// The header naming the tool server (`host:port`) Envoy's dynamic forward proxy sends the call
/// to: the filter overwrites `:authority` (an internal header with `host_rewrite_header` made
/// Envoy route the call back to itself, checked with Envoy 1.40).
pub const UPSTREAM_HOST_HEADER: &str = ":authority";

/// Creates Cards (the Kubernetes API in the binary, a list in tests).
pub trait Cards: Send + Sync + 'static {
    /// Creates `card`; one that exists already (a retried call) is fine.
    fn create(&self, card: Card) -> impl Future<Output = Result<(), String>> + Send;
}

/// Cards through the Kubernetes API.
#[derive(Clone)]
pub struct KubeCards(pub kube::Client);

impl std::fmt::Debug for KubeCards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeCards")
    }
}

impl Cards for KubeCards {
    async fn create(&self, card: Card) -> Result<(), String> {
        let ns = card.metadata.namespace.clone().unwrap_or_default();
        let api: kube::Api<Card> = kube::Api::namespaced(self.0.clone(), &ns);
        match api.create(&kube::api::PostParams::default(), &card).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Where audit records go: a thread that appends them to the gateway's chain file (each line
/// synced), so a check never waits for the disk.
pub type AuditTx = std::sync::mpsc::Sender<(Effect, Event)>;

/// Opens the gateway's chain (`gateway.jsonl`) in `dir` and starts its writer thread. With a
/// `signer`, a signed checkpoint follows every `every` records, and whatever is unsigned after
/// `idle` without a new record is signed then: a deletion of the chain's tail can be told
/// within that time.
pub fn audit_writer(
    dir: &std::path::Path,
    signer: Option<Box<dyn vexa_audit::Signer>>,
    every: u64,
    idle: std::time::Duration,
) -> anyhow::Result<AuditTx> {
    let mut log = vexa_audit::AuditLog::open(dir, "gateway")?;
    if let Some(signer) = signer {
        log.set_signer(signer, every);
        // Records a previous incarnation left unsigned.
        log.checkpoint()?;
    }
    let (tx, rx) = std::sync::mpsc::channel::<(Effect, Event)>();
    std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(idle) {
                    Ok((effect, event)) => {
                        if let Err(e) = log.append(&effect, event) {
                            tracing::error!(error = %e, "could not write a tool_call audit record");
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = log.checkpoint() {
                            tracing::error!(error = %e, "could not sign the audit chain");
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = log.checkpoint();
                        return;
                    }
                }
            }
        })?;
    Ok(tx)
}

/// The filter.
pub struct Filter<E, C> {
    /// The dispatch token keys.
    pub keys: Arc<Keys>,
    /// The Tool objects.
    pub tools: Arc<dyn Tools + Send + Sync>,
    /// Keycloak.
    pub exchanger: E,
    /// Exchanged tokens.
    pub cache: TokenCache,
    /// Where gated calls go.
    pub cards: C,
    /// The audit chain (none: not recorded, e.g. in benchmarks).
    pub audit: Option<std::sync::Mutex<AuditTx>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl<E, C> std::fmt::Debug for Filter<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl<E: Exchanger, C: Cards> Filter<E, C> {
    /// Decides on one request and acts on the decision.
    pub async fn check_request(&self, request: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let headers = http.map(|h| &h.headers);
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(String::as_str);
        let body: &[u8] = match http {
            Some(h) if !h.raw_body.is_empty() => &h.raw_body,
            Some(h) => h.body.as_bytes(),
            None => &[],
        };
        let peer = attributes
            .and_then(|a| a.source.as_ref())
            .map(|s| s.principal.as_str())
            .filter(|p| !p.is_empty());
        // Envoy gives the path with its query; a tool path has none.
        let path = http.map(|h| h.path.as_str()).unwrap_or_default();
        let facts = Facts {
            path,
            authorization: header(TOKEN_HEADER),
            peer,
            body,
        };
        let mut decision = decide(
            &facts,
            &self.keys.verifier(),
            self.tools.as_ref(),
            unix_now(),
        );
        if decision.record.reason == "UnknownKid" && self.keys.refresh().await {
            decision = decide(
                &facts,
                &self.keys.verifier(),
                self.tools.as_ref(),
                unix_now(),
            );
        }
        let client_internal: Vec<String> = headers
            .map(|h| {
                h.keys()
                    .filter(|k| k.starts_with(INTERNAL_HEADER_PREFIX))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let (response, record) = self.act(decision, client_internal).await;
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                verdict: record.verdict.as_str().to_owned(),
                reason: record.reason.clone(),
            })
            .inc();
        if let Some(audit) = &self.audit {
            let _ = audit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(record.to_audit());
        }
        tracing::info!(
            dispatch = %record.dispatch, tool = %record.tool, method = %record.mcp_method,
            decision = record.verdict.as_str(), reason = %record.reason, "tool request"
        );
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn act(
        &self,
        decision: Decision,
        client_internal: Vec<String>,
    ) -> (CheckResponse, crate::record::CallRecord) {
        let Decision { outcome, record } = decision;
        match outcome {
            Outcome::Refuse(reply) | Outcome::Answer(reply) => (deny(&reply), record),
            Outcome::Propose { card, reply } => match self.cards.create(card.to_card()).await {
                Ok(()) => (deny(&reply), record),
                Err(e) => {
                    tracing::error!(card = %card.name, error = %e, "could not create the Card of a gated call");
                    let reply = Reply {
                        status: 503,
                        body: crate::jsonrpc::error_body(
                            &serde_json::Value::Null,
                            crate::decide::REFUSED,
                            "the gated call could not be proposed (Card not created); nothing was run",
                        ),
                    };
                    (
                        deny(&reply),
                        record.with(Verdict::Refused, "CardNotCreated"),
                    )
                }
            },
            Outcome::Forward {
                token,
                audience,
                scope,
                upstream,
            } => {
                // Cached per dispatch token: a token is verified (expiry included) before its
                // exchanged tokens are looked up, so this bound only keeps the cache small.
                let not_after = Instant::now() + vexa_policy::token::MAX_TOKEN_LIFETIME;
                match self
                    .cache
                    .token_for(&self.exchanger, &token, &audience, &scope, not_after)
                    .await
                {
                    Ok((exchanged, cache)) => {
                        let result = if cache == Cache::Hit { "hit" } else { "miss" };
                        self.metrics
                            .cache
                            .get_or_create(&CacheLabels {
                                result: result.into(),
                            })
                            .inc();
                        let ok = OkHttpResponse {
                            headers: vec![
                                set(TOKEN_HEADER, &format!("Bearer {exchanged}")),
                                set(UPSTREAM_HOST_HEADER, &upstream.authority),
                                set(":path", &upstream.path),
                            ],
                            headers_to_remove: client_internal,
                            ..Default::default()
                        };
                        (
                            CheckResponse {
                                status: Some(rpc::Status {
                                    code: 0,
                                    ..Default::default()
                                }),
                                http_response: Some(HttpResponse::OkResponse(ok)),
                                ..Default::default()
                            },
                            record,
                        )
                    }
                    Err(e) => {
                        tracing::warn!(audience = %audience, error = %e, "token exchange failed");
                        let reply = Reply {
                            status: 502,
                            body: crate::jsonrpc::error_body(
                                &serde_json::Value::Null,
                                crate::decide::REFUSED,
                                &format!("the gateway could not get a token for this tool: {e}"),
                            ),
                        };
                        (
                            deny(&reply),
                            record.with(Verdict::Refused, "ExchangeFailed"),
                        )
                    }
                }
            }
        }
    }
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// An answer from the filter itself (a refusal, `tools/list`, a proposal).
fn deny(reply: &Reply) -> CheckResponse {
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(reply.status),
        }),
        headers: vec![set("content-type", "application/json")],
        body: reply.body.clone(),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: 7, // PERMISSION_DENIED: Envoy answers with the denied response.
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl<E: Exchanger, C: Cards> Authorization for Filter<E, C> {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.check_request(request.get_ref()).await,
        ))
    }
}
