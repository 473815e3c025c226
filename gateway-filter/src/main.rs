//! `vexa-gateway-filter`: Envoy's external-authorization service for the MCP gateway
//! (`serve`, the default), and the Envoy configuration in front of it (`envoy-config`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus_client::registry::Registry;
use vexa_crds::Tool;
use vexa_gateway_filter::audit_keys;
use vexa_gateway_filter::envoy::{EnvoyConfig, config};
use vexa_gateway_filter::jwks::Keys;
use vexa_gateway_filter::metrics::Metrics;
use vexa_gateway_filter::service::{Filter, KubeCards, audit_writer};
use vexa_gateway_filter::{ToolView, Tools, Upstream};

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Envoy configuration that fronts this filter.
    EnvoyConfig(EnvoyArgs),
}

#[derive(clap::Args, Debug)]
struct Serve {
    /// The gRPC address Envoy's ext_authz calls.
    #[arg(
        long,
        env = "VEXA_GATEWAY_FILTER_ADDR",
        default_value = "127.0.0.1:9191"
    )]
    listen: SocketAddr,
    /// The operator's JWKS (the dispatch token keys).
    #[arg(long, env = "VEXA_JWKS_URL", default_value = "")]
    jwks_url: String,
    /// The dispatch tokens' issuer (the operator's --token-issuer).
    #[arg(long, env = "VEXA_TOKEN_ISSUER", default_value = "vexa-operator")]
    token_issuer: String,
    /// The dispatch tokens' audience (the operator's --token-audience).
    #[arg(long, env = "VEXA_TOKEN_AUDIENCE", default_value = "vexa-gateway")]
    token_audience: String,
    /// The SPIFFE trust domain of the dispatch pods.
    #[arg(long, env = "VEXA_SPIRE_TRUST_DOMAIN", default_value = vexa_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Keycloak's base URL.
    #[arg(long, env = "VEXA_KEYCLOAK_URL", default_value = "")]
    keycloak_url: String,
    /// The Keycloak realm.
    #[arg(long, env = "VEXA_KEYCLOAK_REALM", default_value = "vexa")]
    keycloak_realm: String,
    /// The gateway's confidential client in that realm.
    #[arg(
        long,
        env = "VEXA_KEYCLOAK_GATEWAY_CLIENT",
        default_value = "vexa-gateway"
    )]
    client_id: String,
    /// A file holding that client's secret.
    #[arg(long, env = "VEXA_KEYCLOAK_GATEWAY_SECRET_FILE")]
    client_secret_file: Option<PathBuf>,
    /// The audit directory shared with the operator; the filter writes gateway.jsonl there.
    #[arg(long, env = "VEXA_AUDIT_DIR")]
    audit_dir: Option<PathBuf>,
    /// The namespace of the Secret holding the key that signs the chain's checkpoints (the
    /// operator's: it publishes the key's public half). Empty: the chain is linked, not signed.
    #[arg(long, env = "VEXA_NAMESPACE", default_value = "")]
    audit_key_namespace: String,
    /// That Secret's name; the first gateway to start creates it.
    #[arg(long, env = "VEXA_GATEWAY_AUDIT_KEY_SECRET", default_value = vexa_core::gateway::GATEWAY_AUDIT_KEY_SECRET)]
    audit_key_secret: String,
    /// Records between two signed checkpoints.
    #[arg(long, env = "VEXA_AUDIT_CHECKPOINT_EVERY", default_value_t = vexa_audit::DEFAULT_CHECKPOINT_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    audit_checkpoint_every: u64,
    /// Seconds without a new record after which what is unsigned gets a checkpoint.
    #[arg(long, env = "VEXA_AUDIT_CHECKPOINT_IDLE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    audit_checkpoint_idle_seconds: u64,
    /// Metrics (/metrics) and health (/healthz).
    #[arg(
        long,
        env = "VEXA_GATEWAY_METRICS_ADDR",
        default_value = "127.0.0.1:9192"
    )]
    metrics_addr: SocketAddr,
    /// `json` or `text` logs.
    #[arg(long, env = "VEXA_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[derive(clap::Args, Debug)]
struct EnvoyArgs {
    #[arg(long, default_value = "0.0.0.0")]
    listen_ip: String,
    #[arg(long, default_value_t = 8443)]
    listen_port: u16,
    #[arg(long)]
    cert_chain: String,
    #[arg(long)]
    private_key: String,
    #[arg(long)]
    trust_bundle: String,
    #[arg(long, default_value = vexa_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    #[arg(long, default_value = "127.0.0.1:9191")]
    filter_addr: String,
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
}

/// The Tool objects of every namespace, from a reflector.
struct Reflected(reflector::Store<Tool>);

impl Tools for Reflected {
    fn tool(&self, namespace: &str, name: &str) -> Option<ToolView> {
        let t = self
            .0
            .get(&reflector::ObjectRef::new(name).within(namespace))?;
        Some(ToolView {
            name: name.to_owned(),
            tool_name: t.spec.tool_name.clone(),
            scope: t.spec.scope.clone(),
            audience: t.spec.audience.clone(),
            gated: t.spec.grant == vexa_core::Grant::Gate,
            upstream: Upstream::parse(&t.spec.server.url)?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::EnvoyConfig(a)) = cli.command {
        print!(
            "{}",
            config(&EnvoyConfig {
                listen_ip: a.listen_ip,
                listen_port: a.listen_port,
                cert_chain: a.cert_chain,
                private_key: a.private_key,
                trust_bundle: a.trust_bundle,
                trust_domain: a.trust_domain,
                filter_addr: a.filter_addr,
                admin_port: a.admin_port,
            })
        );
        return Ok(());
    }
    let s = cli.serve;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if s.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    anyhow::ensure!(
        !s.jwks_url.is_empty(),
        "--jwks-url is required (the operator's /.well-known/jwks.json)"
    );
    anyhow::ensure!(!s.keycloak_url.is_empty(), "--keycloak-url is required");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = Arc::new(
        Keys::fetch(&s.jwks_url, &s.token_issuer, &s.token_audience)
            .await
            .with_context(|| format!("fetching the dispatch token keys from {}", s.jwks_url))?,
    );
    let secret_file = s.client_secret_file.as_ref().context(
        "--client-secret-file is required (the Keycloak gateway client's secret, a mounted Secret)",
    )?;
    let secret = std::fs::read_to_string(secret_file).with_context(|| {
        format!(
            "reading the Keycloak client secret from {}",
            secret_file.display()
        )
    })?;
    let exchanger = vexa_keycloak::TokenClient::new(
        &s.keycloak_url,
        &s.keycloak_realm,
        &s.client_id,
        secret.trim(),
    )?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let (store, writer) = reflector::store();
    let tools_api: kube::Api<Tool> = kube::Api::all(client.clone());
    tokio::spawn(
        watcher(tools_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    let audit = match &s.audit_dir {
        None => {
            tracing::warn!("no --audit-dir: tool calls are not recorded in the audit log");
            None
        }
        Some(dir) => {
            let signer: Option<Box<dyn vexa_audit::Signer>> = if s.audit_key_namespace.is_empty() {
                tracing::warn!(
                    "no --audit-key-namespace: the audit chain is linked but its checkpoints are not signed"
                );
                None
            } else {
                let keys = audit_keys::load_or_create(
                    client.clone(),
                    &s.audit_key_namespace,
                    &s.audit_key_secret,
                )
                .await?;
                Some(Box::new(keys))
            };
            Some(std::sync::Mutex::new(audit_writer(
                dir,
                signer,
                s.audit_checkpoint_every,
                std::time::Duration::from_secs(s.audit_checkpoint_idle_seconds),
            )?))
        }
    };
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let registry = Arc::new(registry);
    tokio::spawn({
        let keys = keys.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                keys.refresh().await;
            }
        }
    });
    tokio::spawn(serve_metrics(s.metrics_addr, registry));
    let filter = Filter {
        keys,
        tools: Arc::new(Reflected(store)),
        exchanger,
        cache: Default::default(),
        cards: KubeCards(client),
        audit,
        metrics,
    };
    tracing::info!(addr = %s.listen, trust_domain = %s.trust_domain, "vexa-gateway-filter serving ext_authz");
    tonic::transport::Server::builder()
        .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
            filter,
        ))
        .serve_with_shutdown(s.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn serve_metrics(addr: SocketAddr, registry: Arc<Registry>) {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                    text
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let _ = axum::serve(l, app).await;
        }
        Err(e) => tracing::error!(%addr, error = %e, "cannot serve metrics"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn envoy_config_needs_only_its_own_flags() {
        let cli = Cli::try_parse_from([
            "vexa-gateway-filter",
            "envoy-config",
            "--cert-chain=/svid/chain.pem",
            "--private-key=/svid/key.pem",
            "--trust-bundle=/svid/bundle.pem",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.command, Some(Command::EnvoyConfig(_))));
    }

    #[test]
    fn serve_parses_without_optional_files() {
        let cli = Cli::try_parse_from([
            "vexa-gateway-filter",
            "--jwks-url=http://operator/.well-known/jwks.json",
            "--keycloak-url=http://keycloak",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.command.is_none());
    }
}
