//! `vexa-email-tool`: the email MCP tool server (streamable HTTP at `/mcp`). It brokers the
//! mailboxes of its `--config`: each verified caller reaches only the mailbox its token's
//! subject maps to ([`server`], [`config`]); the mailbox passwords stay in their files.

mod config;
mod server;
// The bearer-token check of the notes tool (JWKS verification, RS256, audience), shared as a
// file until it moves into a library crate of its own.
#[allow(dead_code)]
#[path = "../../notes/src/token.rs"]
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::token::Check;

/// The email MCP tool server: `email.search`, `email.read`, `email.draft` on the caller's own
/// mailbox, and `email.send` (exactly once per Message-ID) for the Card applier.
///
/// Every request must carry a bearer token signed by a key of --jwks-url for --audience (else
/// 401); its `sub` picks the mailbox (the config's `subjects`).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Where to listen.
    #[arg(long, env = "VEXA_EMAIL_LISTEN", default_value = "127.0.0.1:8791")]
    listen: SocketAddr,
    /// The JSON config: `mailboxes` (vexa-email Mailbox fields + `address`) and `subjects`
    /// (token `sub` → mailbox id).
    #[arg(long, env = "VEXA_EMAIL_CONFIG")]
    config: PathBuf,
    /// The JWKS bearer tokens are verified against, e.g.
    /// http://<keycloak>/realms/vexa/protocol/openid-connect/certs.
    #[arg(
        long,
        env = "VEXA_EMAIL_JWKS_URL",
        required_unless_present = "insecure_decode_only"
    )]
    jwks_url: Option<String>,
    /// The audience a verified token must carry (the tool's Keycloak client).
    #[arg(long, env = "VEXA_EMAIL_AUDIENCE", default_value = "vexa-email")]
    audience: String,
    /// Decode tokens without verifying them: anyone who reaches the port reads any mapped
    /// mailbox. Local tests only.
    #[arg(long, env = "VEXA_EMAIL_INSECURE_DECODE_ONLY")]
    insecure_decode_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("VEXA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::load(&cli.config)
        .map_err(|e| anyhow::anyhow!("config {}: {e}", cli.config.display()))?;
    let check = match (&cli.jwks_url, cli.insecure_decode_only) {
        (Some(url), _) => Check::Verify {
            jwks_url: url.clone(),
            audience: cli.audience.clone(),
            keys: std::sync::Mutex::new(None),
        },
        (None, _) => {
            tracing::warn!(
                "--insecure-decode-only: bearer tokens are not verified (local tests only)"
            );
            Check::DecodeOnly
        }
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, mailboxes = config.mailboxes.len(), "email tool listens (MCP at /mcp)");
    axum::serve(listener, router(Arc::new(check), Arc::new(config))).await?;
    Ok(())
}

fn router(check: Arc<Check>, config: Arc<Config>) -> Router {
    let http_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    let mcp = StreamableHttpService::new(
        move || Ok(server::Email::new(config.clone())),
        Arc::new(LocalSessionManager::default()),
        http_config,
    );
    let mcp = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(check.clone(), authenticate))
        .service(mcp);
    Router::new().route_service("/mcp", mcp).with_state(check)
}

/// Every MCP request: the bearer token checked; its caller put in the request's extensions
/// for the tools to pick the mailbox. No token, or one that does not verify: 401.
async fn authenticate(State(check): State<Arc<Check>>, mut req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match check.caller(authorization.as_deref()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a request");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                e.to_string(),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
