//! The operator's entrypoint: parse the settings, serve metrics and health, reconcile while leader.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use kube::runtime::events::Reporter;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use vexa_operator::config::{Config, LogFormat};
use vexa_operator::controllers;
use vexa_operator::runtime::audit::Audit;
use vexa_operator::runtime::context::Context;
use vexa_operator::runtime::keycloak::Keycloak;
use vexa_operator::runtime::metrics::Metrics;
use vexa_operator::runtime::signing_keys::SigningKeys;
use vexa_operator::runtime::telemetry::{self, Telemetry};
use vexa_operator::runtime::{gateway_key, http, leader};
use vexa_operator::{model_gateway, streams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = init_tracing(config.log_format)?;
    let client = kube::Client::try_default().await.context(
        "connecting to the Kubernetes API failed; run in a pod with a service account, or set KUBECONFIG",
    )?;
    let metrics = Arc::new(Metrics::new());
    let gateway_key = gateway_key::load_or_create(&client, &config.namespace)
        .await
        .context("the model gateway's key is needed to broker model credentials")?;
    let signing_keys = SigningKeys::load_or_create(
        client.clone(),
        &config.namespace,
        Duration::from_secs(config.token_key_rotate_after_seconds),
    )
    .await
    .context("the dispatch tokens' signing keys are needed to start runs")?;
    let _refresh_keys = signing_keys.spawn_refresh();
    let gateway = Arc::new(
        model_gateway::Gateway::new(
            client.clone(),
            gateway_key.clone(),
            config.namespace.clone(),
        )
        .context("the model gateway cannot load the system's CA certificates")?
        .with_jwks(signing_keys.jwks()),
    );
    let redis_users = config
        .redis_users()
        .context("the dispatches' Redis users")?
        .map(Arc::new);
    let audit = Audit::open(
        &config.audit_dir,
        Some(Box::new(signing_keys.signer())),
        config.audit_checkpoint_every,
    )
    .context("the audit log (--audit-dir, VEXA_AUDIT_DIR) must be writable")?;
    let _signing = audit.sign_periodically(std::time::Duration::from_secs(
        config.audit_checkpoint_seconds,
    ));
    let ctx = Context {
        audit: audit.clone(),
        gateway_key: Some(gateway_key),
        signing_keys: Some(signing_keys.clone()),
        redis_users,
        client: client.clone(),
        config: Arc::new(config.clone()),
        metrics: metrics.clone(),
        reporter: Reporter {
            controller: "vexa-operator".into(),
            instance: Some(config.identity.clone()),
        },
    };
    let stop = stop_signal()?;

    let (ready, ready_rx) = watch::channel(false);
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(http::serve(config.http_addr, metrics, ready_rx, async {
        // Health and metrics outlive the controllers: they are stopped last.
        let _ = http_stopped.await;
    }));

    // Every replica serves the gateway, leader or not; it stops with the process.
    let mut gateway_server = tokio::spawn(model_gateway::serve(
        config.model_gateway_addr,
        gateway,
        stopped(stop.clone()),
    ));

    // Every replica serves the streams API too (people's reads and turns, behind the API
    // server). It stops with the process: a follow open then ends, and the client resumes from
    // its last entry on another replica.
    let mut streams_server = match config
        .streams()
        .context("the streams API's Redis settings")?
    {
        Some(mut settings) => {
            // Exports of the audit log carry the keys its checkpoints verify with.
            settings.audit.jwks = signing_keys.jwks();
            match streams::bind(client.clone(), &settings, std::future::pending()).await {
                Ok(server) => tokio::spawn(server),
                // Runs go on without it; the APIService shows it unavailable, the CLI says so.
                Err(e) => {
                    tracing::error!(error = %e, "the streams API (how people read dispatches and send turns) cannot start; runs go on, but nobody can follow them or send turns");
                    tokio::spawn(std::future::pending())
                }
            }
        }
        None => {
            tracing::warn!(
                "no --streams-tls-cert (VEXA_STREAMS_TLS_CERT): the streams API is not served, so nobody can follow a dispatch or send it turns"
            );
            tokio::spawn(std::future::pending())
        }
    };

    let keycloak = config
        .keycloak()
        .context("the Keycloak settings (--keycloak-*)")?
        .map(|settings| Arc::new(Keycloak::new(settings)));
    if keycloak.is_none() {
        tracing::warn!(
            "no --keycloak-url: subjects are not mirrored to Keycloak and Tools' audiences are not checked"
        );
    }

    let drain_limit = Duration::from_secs(config.shutdown_timeout_seconds);
    let controllers = |ready| {
        let run = controllers::run_all(ctx.clone(), ready, keycloak.clone(), stopped(stop.clone()));
        drain_within(run, stopped(stop.clone()), drain_limit)
    };
    let mut leading = std::pin::pin!(leader::run_when_leader(
        client,
        &config,
        ready,
        stopped(stop.clone()),
        controllers,
    ));
    // The model gateway stops with the stop signal, as the controllers do: then the drain goes
    // on (the audit log's closing checkpoint, the last spans), it is not a failure.
    tokio::select! {
        result = &mut leading => result?,
        result = &mut server => {
            result.context("the metrics and health server panicked")??;
            bail!("the metrics and health server stopped unexpectedly");
        }
        result = &mut streams_server => {
            result.context("the streams API panicked")??;
            bail!("the streams API stopped unexpectedly");
        }
        result = &mut gateway_server => {
            result.context("the model gateway panicked")??;
            if !*stop.borrow() {
                bail!("the model gateway stopped unexpectedly");
            }
            leading.await?;
        }
    }
    if !*stop.borrow() {
        bail!("the controllers stopped without being asked to; see the log above");
    }
    match audit.checkpoint().await {
        Ok(Some(seq)) => tracing::info!(seq, "signed the audit log's last records"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "the audit log's closing checkpoint failed"),
    }
    let _ = stop_http.send(());
    server
        .await
        .context("the metrics and health server panicked")??;
    if let Some(telemetry) = telemetry
        && let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await?
    {
        tracing::warn!(error = %e, "the last spans were not exported");
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info,kube=warn`); and, when the
/// `OTEL_EXPORTER_OTLP_*` variables say where, traces over OTLP (`runtime::telemetry`).
fn init_tracing(format: LogFormat) -> anyhow::Result<Option<Telemetry>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(&directives).with_context(|| {
            format!("RUST_LOG={directives:?} is not a valid log filter; try RUST_LOG=info")
        })?,
        Err(_) => EnvFilter::new("info,kube=warn"),
    };
    let settings = telemetry::Settings::from_env(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)
        .context("the tracing settings")?;
    let telemetry = settings
        .as_ref()
        .map(Telemetry::install)
        .transpose()
        .context("starting the OTLP trace exporter")?;
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
    };
    // The spans exported are the operator's own, whatever RUST_LOG keeps of the log.
    let spans = telemetry.as_ref().map(|t| {
        t.layer()
            .with_filter(EnvFilter::new(telemetry::SPAN_FILTER))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(s) = &settings {
        tracing::info!(endpoint = %s.endpoint, "exporting traces over OTLP");
    }
    Ok(telemetry)
}

/// Turns true on the first SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM failed")?;
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            "shutdown requested: finishing the reconciles in flight, then releasing the lease"
        );
        stop.send_replace(true);
    });
    Ok(stopping)
}

/// Runs `work`; once `stop` completes, gives it `limit` to finish, then drops it.
// kube-runtime's graceful shutdown waits for the caches to sync first, which never happens when
// the API server is unreachable or the CRDs are missing: without a limit the pod would hang
// until the kubelet kills it, and never release its lease.
async fn drain_within(
    work: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
    limit: Duration,
) {
    let overdue = async {
        stop.await;
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        () = work => {}
        () = overdue => tracing::warn!(
            ?limit,
            "the controller did not stop in time after the shutdown request (reconciles still \
             running, or caches never synced); abandoning it"
        ),
    }
}

/// Completes once a stop was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the signal task is gone, which also means stop.
    let _ = stop.wait_for(|stopping| *stopping).await;
}
