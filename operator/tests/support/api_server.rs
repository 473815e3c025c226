//! A mocked API server (`tower-test`) that one reconcile runs against: the test scripts each
//! call in order and answers it; anything else fails with a message naming the call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock::{Handle, SendResponse};
use vexa_crds::{AgentRunner, Dispatch, Identity, Tool, Workspace};
use vexa_operator::config::Config;
use vexa_operator::controllers::dispatch::{
    Cache, Error, Reconciler, References, reconcile::reconcile,
};
use vexa_operator::runtime::context::Context;
use vexa_operator::runtime::metrics::Metrics;

/// How long one step may take before the test gives up: generous for a loaded CI machine,
/// short enough that a hang is obvious.
const STEP: Duration = Duration::from_secs(10);

/// An object as JSON, typed.
fn typed<K: serde::de::DeserializeOwned>(v: &Value) -> K {
    serde_json::from_value(v.clone()).unwrap()
}

/// What the controller's Job and pod watches have cached when the reconcile runs.
pub enum Watched<'a> {
    /// The initial lists have arrived and hold these Jobs and pods, and these AgentRunners,
    /// Workspaces and Tools (told apart by `kind`).
    Synced {
        jobs: &'a [Value],
        pods: &'a [Value],
        references: &'a [Value],
    },
    /// The initial lists have not arrived yet (just after a start).
    NotSynced,
}

/// A reflector cache holding `objects`.
fn cache<K>(objects: &[Value], synced: bool) -> Cache<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    for o in objects
        .iter()
        .filter(|o| o["kind"] == K::kind(&()).as_ref())
    {
        writer.apply_watcher_event(&watcher::Event::Apply(typed(o)));
    }
    if synced {
        Cache::synced(store)
    } else {
        Cache::new(store)
    }
}
/// One request the reconciler made, and the way to answer it.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
    pub send: SendResponse<Response<Body>>,
}

impl Call {
    pub fn describe(&self) -> String {
        format!(
            "{} {}{} {}",
            self.method,
            self.path,
            if self.query.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.query)
            },
            if self.body.is_null() {
                String::new()
            } else {
                self.body.to_string()
            }
        )
    }

    /// Asserts the query parameters, exactly.
    pub fn query(&self, expected: &[(&str, &str)]) -> &Self {
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(self.query, expected, "query of {}", self.describe());
        self
    }

    /// Asserts a server-side apply by the operator's field manager.
    pub fn server_side_apply(&self) -> &Self {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{}",
            self.describe()
        );
        self.query(&[("fieldManager", "vexa-operator"), ("force", "true")])
    }

    pub fn merge_patch(&self) -> &Self {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/merge-patch+json"),
            "{}",
            self.describe()
        );
        self
    }

    pub fn respond(self, status: StatusCode, body: Value) {
        let mut response = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
        *response.status_mut() = status;
        self.send.send_response(response);
    }

    pub fn ok(self, body: Value) {
        self.respond(StatusCode::OK, body);
    }

    /// Answers a status write with `d` carrying the written status.
    pub fn status_written(self, d: &Value) {
        let mut object = d.clone();
        object["status"] = self.body["status"].clone();
        self.ok(object);
    }

    /// Answers with the request's own body (what an apply or a create returns, near enough).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(body);
    }
}

/// The mocked API server and the reconcile running against it.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    reconcile: JoinHandle<Result<Action, Error>>,
    calls: usize,
    /// The reconcile's audit log folder.
    audit_dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts one reconcile of `d`; `queue` is what the controller's Dispatch cache holds, and
    /// it has seen no Job or pod.
    pub fn start(d: &Value, queue: &[Value]) -> Self {
        Self::start_with(
            d,
            queue,
            Watched::Synced {
                jobs: &[],
                pods: &[],
                references: &[],
            },
        )
    }

    /// Starts one reconcile of `d` with `watched` in the Job and pod caches.
    pub fn start_with(d: &Value, queue: &[Value], watched: Watched<'_>) -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let audit_dir = tempfile::tempdir().unwrap();
        let config = <Config as clap::Parser>::try_parse_from([
            "vexa-operator",
            "--namespace=vexa-system",
            "--redis-url=redis://redis.vexa-system.svc:6379",
            "--job-ttl-seconds=300",
            "--default-max-lifetime-seconds=3600",
            "--default-idle-timeout-seconds=120",
            // Every namespace is a tenant here (the tenant check is proven on a cluster).
            "--tenant-label=",
            &format!("--audit-dir={}", audit_dir.path().display()),
        ])
        .unwrap();
        let base = Context {
            signing_keys: None,
            audit: vexa_operator::runtime::audit::Audit::open(audit_dir.path(), None, 64).unwrap(),
            gateway_key: Some(Arc::from(&b"mock-gateway-key-of-32-bytes-len"[..])),
            redis_users: None,
            client,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            reporter: Reporter {
                controller: "vexa-operator".into(),
                instance: None,
            },
        };
        let (store, mut writer) = reflector::store::<Dispatch>();
        for d in queue {
            writer.apply_watcher_event(&watcher::Event::Apply(typed::<Dispatch>(d)));
        }
        let (jobs, pods, references, synced) = match watched {
            Watched::Synced {
                jobs,
                pods,
                references,
            } => (jobs, pods, references, true),
            Watched::NotSynced => (&[][..], &[][..], &[][..], false),
        };
        let references = References {
            runners: cache::<AgentRunner>(references, synced),
            workspaces: cache::<Workspace>(references, synced),
            tools: cache::<Tool>(references, synced),
            identities: cache::<Identity>(references, synced),
            namespaces: cache::<Namespace>(references, synced),
        };
        let ctx = Arc::new(Reconciler::new(
            base,
            store,
            cache::<Job>(jobs, synced),
            cache::<Pod>(pods, synced),
            references,
        ));
        let reconcile = tokio::spawn(reconcile(Arc::new(typed::<Dispatch>(d)), ctx));
        Self {
            handle,
            reconcile,
            calls: 0,
            audit_dir,
        }
    }

    /// The next call, which must be `method path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        self.calls += 1;
        let n = self.calls;
        let wanted = format!("{method} {path}");
        let next = tokio::time::timeout(STEP, async {
            tokio::select! {
                r = self.handle.next_request() => r,
                done = &mut self.reconcile => panic!(
                    "call {n}: expected {wanted}, but the reconcile returned {:?}",
                    done.map_err(|e| e.to_string())
                ),
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("call {n}: expected {wanted}, but nothing came within {STEP:?}")
        });
        let (request, send) =
            next.unwrap_or_else(|| panic!("call {n}: expected {wanted}, but the client is gone"));
        let call = into_call(request, send).await;
        assert!(
            call.method == method && call.path == path,
            "call {n}: expected {wanted}\n                got {}",
            call.describe()
        );
        call
    }

    /// The reconcile makes no further call and returns this.
    pub async fn done(mut self) -> Action {
        self.finish().await
    }

    /// [`Self::done`], and the events the reconcile wrote to the audit log.
    pub async fn done_with_audit(mut self) -> (Action, Vec<Value>) {
        let action = self.finish().await;
        let text = std::fs::read_to_string(self.audit_dir.path().join("operator.jsonl"))
            .unwrap_or_default();
        let events = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
            .collect();
        (action, events)
    }

    async fn finish(&mut self) -> Action {
        let calls = self.calls;
        let result = tokio::time::timeout(STEP, async {
            tokio::select! {
                r = self.handle.next_request() => {
                    let Some((request, send)) = r else {
                        return (&mut self.reconcile).await;
                    };
                    let call = into_call(request, send).await;
                    panic!("after {calls} expected calls, an unexpected one: {}", call.describe())
                }
                done = &mut self.reconcile => done,
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the reconcile did not return within {STEP:?} after {calls} calls")
        });
        result
            .unwrap()
            .unwrap_or_else(|e| panic!("the reconcile failed: {e}"))
    }
}

async fn into_call(request: Request<Body>, send: SendResponse<Response<Body>>) -> Call {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("request body is not JSON: {e}"))
    };
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Call {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body,
        send,
    }
}

/// Decodes a query component (`%XX` and `+`).
fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(
                    u8::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad escape in {s}")),
                );
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}
