//! A one-Lease API server for the election tests: get, create and resourceVersion-guarded
//! replace, with the real API server's status codes, plus ways to make it fail or hang.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::client::Body;
use tower_test::mock;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like the API server.
    Normal,
    /// Every request fails with 500.
    Failing,
    /// No request is ever answered.
    Hanging,
}

#[derive(Debug)]
struct State {
    lease: Option<Lease>,
    resource_version: u64,
    mode: Mode,
}

/// The stored Lease, shared by every client made with [`FakeApi::client`].
#[derive(Debug, Clone)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(State {
            lease: None,
            resource_version: 0,
            mode: Mode::Normal,
        })))
    }

    /// A client whose requests this fake answers.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let state = self.0.clone();
        tokio::spawn(async move {
            let mut unanswered = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let mode = state.lock().unwrap().mode;
                match mode {
                    Mode::Hanging => unanswered.push(respond),
                    Mode::Failing => respond.send_response(status(500, "InternalError")),
                    Mode::Normal => respond.send_response(answer(&state, request).await),
                }
            }
        });
        kube::Client::new(service, "vexa-system")
    }

    /// Changes how the fake answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.0.lock().unwrap().mode = mode;
    }

    /// The stored record.
    pub fn spec(&self) -> Option<LeaseSpec> {
        self.0
            .lock()
            .unwrap()
            .lease
            .as_ref()
            .and_then(|lease| lease.spec.clone())
    }

    /// Writes the record as another client would (a new resourceVersion, no checks).
    pub fn write(&self, spec: LeaseSpec) {
        let mut state = self.0.lock().unwrap();
        state.resource_version += 1;
        let mut lease = state
            .lease
            .clone()
            .unwrap_or_else(|| lease_named("vexa-operator"));
        lease.metadata.resource_version = Some(state.resource_version.to_string());
        lease.spec = Some(spec);
        state.lease = Some(lease);
    }
}

fn lease_named(name: &str) -> Lease {
    let mut lease = Lease::default();
    lease.metadata.name = Some(name.to_owned());
    lease.metadata.namespace = Some("vexa-system".to_owned());
    lease
}

async fn answer(state: &Mutex<State>, request: Request<Body>) -> Response<Body> {
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/vexa-system/leases";
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect_bytes().await.unwrap();
    let mut state = state.lock().unwrap();
    match (method, path.strip_prefix(LEASES)) {
        (Method::GET, Some("/vexa-operator")) => match &state.lease {
            Some(lease) => ok(lease),
            None => status(404, "NotFound"),
        },
        (Method::POST, Some("")) => {
            if state.lease.is_some() {
                return status(409, "AlreadyExists");
            }
            let mut lease: Lease = serde_json::from_slice(&body).unwrap();
            state.resource_version += 1;
            lease.metadata.resource_version = Some(state.resource_version.to_string());
            state.lease = Some(lease.clone());
            ok(&lease)
        }
        (Method::PUT, Some("/vexa-operator")) => {
            let mut lease: Lease = serde_json::from_slice(&body).unwrap();
            let current = state.resource_version.to_string();
            match (&state.lease, &lease.metadata.resource_version) {
                (None, _) => return status(404, "NotFound"),
                (Some(_), Some(sent)) if *sent != current => return status(409, "Conflict"),
                _ => {}
            }
            state.resource_version += 1;
            lease.metadata.resource_version = Some(state.resource_version.to_string());
            state.lease = Some(lease.clone());
            ok(&lease)
        }
        (method, _) => panic!("the elector sent an unexpected request: {method} {path}"),
    }
}

fn ok(lease: &Lease) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(lease).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let status = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": format!("fake API server: {reason}"),
        "reason": reason,
        "code": code,
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}
