//! The operator's controllers (Dispatch, Workspace, Tool and Schedule), run inside the eval process on its own thread and tokio
//! runtime, so it outlives any one test's runtime and can be killed abruptly.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use tokio::sync::{oneshot, watch};
use vexa_operator::config::Config;
use vexa_operator::controllers;
use vexa_operator::model_gateway;
use vexa_operator::runtime::context::Context;
use vexa_operator::runtime::gateway_key;
use vexa_operator::runtime::keycloak::Keycloak;
use vexa_operator::runtime::metrics::Metrics;
use vexa_operator::runtime::signing_keys::SigningKeys;

/// The audit folder of this eval process's operators (one per process, kept for a look after
/// the run).
pub fn default_audit_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vexa-evals-audit-{}", std::process::id()))
}

/// One incarnation of the in-process operator.
#[derive(Debug)]
pub struct Operator {
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    ready: watch::Receiver<bool>,
}

impl Operator {
    /// Starts the Dispatch controller with `vexa-operator` flags (leader election is always off:
    /// exactly one incarnation runs at a time).
    pub fn start(flags: &[&str]) -> Self {
        init_logging();
        let mut argv = vec!["vexa-operator", "--leader-election=false"];
        // Every incarnation of this process continues the same chain, unless the eval names
        // its own folder.
        let audit_dir = format!("--audit-dir={}", default_audit_dir().display());
        if !flags.iter().any(|f| f.starts_with("--audit-dir")) {
            argv.push(&audit_dir);
        }
        // Keycloak only for the evals that ask for it: `hack/cluster env` exports
        // VEXA_KEYCLOAK_URL, which the flag would otherwise read, and the realm refuses the
        // default (non-URL) token issuer.
        if !flags.iter().any(|f| f.starts_with("--keycloak-url")) {
            argv.push("--keycloak-url=");
        }
        argv.extend_from_slice(flags);
        // /metrics only for the evals that ask for it (the default address is the chart's).
        let serve_http = flags.iter().any(|f| f.starts_with("--http-addr"));
        let config = Config::parse_from(argv);
        let (ready_tx, ready) = watch::channel(false);
        let ready_rx = ready.clone();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vexa-operator".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("vexa-operator-rt")
                    .enable_all()
                    .build()
                    .expect("operator runtime");
                rt.block_on(async move {
                    let client = crate::client().await;
                    // Brokered model access needs the operator's namespace; the evals that use
                    // it create it, the others run without.
                    let gateway_key =
                        match gateway_key::load_or_create(&client, &config.namespace).await {
                            Ok(key) => Some(key),
                            Err(e) => {
                                tracing::info!("no model gateway key: {e}");
                                None
                            }
                        };
                    // The dispatch tokens' keys, as every replica loads them (in the operator's
                    // namespace, when the cluster has one: the chart's).
                    let signing_keys = match SigningKeys::load_or_create(
                        client.clone(),
                        &config.namespace,
                        std::time::Duration::from_secs(config.token_key_rotate_after_seconds),
                    )
                    .await
                    {
                        Ok(keys) => {
                            std::mem::forget(keys.spawn_refresh());
                            Some(keys)
                        }
                        Err(e) => {
                            tracing::info!("no dispatch-token signing keys: {e}");
                            None
                        }
                    };
                    // The model gateway, as every replica serves it (its port is free once the
                    // previous incarnation's runtime is gone).
                    let gateway = gateway_key.clone().map(|key| {
                        let gw = model_gateway::Gateway::new(
                            client.clone(),
                            key,
                            config.namespace.clone(),
                        )
                        .expect("the model gateway's TLS roots");
                        let gw = match &signing_keys {
                            Some(keys) => gw.with_jwks(keys.jwks()),
                            None => gw,
                        };
                        tokio::spawn(model_gateway::serve(
                            config.model_gateway_addr,
                            Arc::new(gw),
                            std::future::pending(),
                        ))
                    });
                    // The streams API, when the flags give it a certificate (evals that read
                    // streams as people do register it as an APIService).
                    let streams = match config.streams().expect("the streams API's Redis") {
                        Some(mut settings) => Some(tokio::spawn({
                            if let Some(keys) = &signing_keys {
                                settings.audit.jwks = keys.jwks();
                            }
                            vexa_operator::streams::bind(
                                client.clone(),
                                &settings,
                                std::future::pending(),
                            )
                            .await
                            .expect("the streams API starts")
                        })),
                        None => None,
                    };
                    let redis_users = config
                        .redis_users()
                        .expect("the dispatches' Redis users")
                        .map(Arc::new);
                    let audit = vexa_operator::runtime::audit::Audit::open(
                        &config.audit_dir,
                        signing_keys
                            .as_ref()
                            .map(|k| Box::new(k.signer()) as Box<dyn vexa_audit::Signer>),
                        config.audit_checkpoint_every,
                    )
                    .expect("the audit log opens");
                    let _signing = audit.sign_periodically(std::time::Duration::from_secs(
                        config.audit_checkpoint_seconds,
                    ));
                    // With --keycloak-url: subjects mirrored, audiences checked.
                    let keycloak = config
                        .keycloak()
                        .expect("the Keycloak settings")
                        .map(|settings| Arc::new(Keycloak::new(settings)));
                    let ctx = Context {
                        signing_keys,
                        audit,
                        gateway_key,
                        redis_users,
                        client,
                        reporter: Reporter {
                            controller: "vexa-operator".into(),
                            instance: Some(config.identity.clone()),
                        },
                        config: Arc::new(config),
                        metrics: Arc::new(Metrics::new()),
                    };
                    let http = serve_http.then(|| {
                        tokio::spawn(vexa_operator::runtime::http::serve(
                            ctx.config.http_addr,
                            ctx.metrics.clone(),
                            ready_rx,
                            std::future::pending(),
                        ))
                    });
                    tokio::select! {
                        () = controllers::run_all(ctx, ready_tx, keycloak, std::future::pending()) => {
                            panic!("the controllers stopped on their own");
                        }
                        _ = killed => {}
                    }
                    if let Some(gateway) = gateway {
                        gateway.abort();
                    }
                    if let Some(http) = http {
                        http.abort();
                    }
                    if let Some(streams) = streams {
                        streams.abort();
                    }
                });
                // Like a crash: whatever was in flight is dropped at its next await point.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("operator thread");
        Self {
            kill: Some(kill),
            thread: Some(thread),
            ready,
        }
    }

    /// Waits until the Dispatch cache has synced.
    pub async fn ready(&self) {
        assert_no_operator_in_cluster(&crate::client().await).await;
        let mut ready = self.ready.clone();
        tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r))
            .await
            .expect("the operator did not become ready within 60 s")
            .expect("the operator thread ended before it was ready");
    }

    /// Ends this incarnation abruptly: its runtime is dropped with every reconcile in flight.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("join")
                .expect("the operator thread panicked");
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// Label selector of the operator pods the Helm chart (`charts/vexa`, e.g. via `hack/up`) runs.
const CHART_OPERATOR: &str = "app.kubernetes.io/name=vexa,app.kubernetes.io/component=operator";

/// Whether the evals run against the operator the Helm chart installed
/// (`VEXA_EVAL_OPERATOR=chart`, after `hack/install-operator`) instead of one in this process.
pub fn chart_installed() -> bool {
    std::env::var("VEXA_EVAL_OPERATOR").is_ok_and(|v| v == "chart")
}

/// Waits until exactly one operator pod of the chart runs, and it is Ready.
pub async fn assert_chart_operator_running(client: &kube::Client) {
    let pods = Api::<Pod>::all(client.clone());
    let is_ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    crate::wait_for(
        "one Ready operator pod of the chart (hack/install-operator)",
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels(CHART_OPERATOR))
                .await
                .ok()?;
            (list.items.len() == 1 && list.items.iter().all(is_ready)).then_some(())
        },
    )
    .await;
}

/// Panics when an operator installed in the cluster runs: it would reconcile the evals'
/// Dispatches too, and the evals would prove nothing about the one they start.
pub async fn assert_no_operator_in_cluster(client: &kube::Client) {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(CHART_OPERATOR))
        .await
        .expect("list operator pods");
    let running: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        running.is_empty(),
        "a vexa-operator runs in the cluster ({running:?}) and would reconcile the evals' \
         Dispatches as well; stop it for the evals: \
         kubectl -n vexa-system scale deployment/vexa --replicas=0 (or helm uninstall vexa -n vexa-system)"
    );
}

/// Logs of the evals and the in-process operator go to stderr, filtered by `RUST_LOG`
/// (default: warnings only, so test output stays readable).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
