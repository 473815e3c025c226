//! `vexa-notes-tool`: a small MCP tool server for tests and demos (streamable HTTP at `/mcp`):
//! `notes.append` and `notes.send` ([`server`]), and `GET /calls`, the JSON list of every call
//! with the token it carried ([`calls`], [`token`]).

mod calls;
mod server;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tracing_subscriber::EnvFilter;

use crate::calls::Calls;
use crate::token::Check;

/// A demo MCP tool server. It appends notes (`notes.append`), records sends (`notes.send`) and
/// reports every call with the bearer token it carried at `GET /calls`.
///
/// With --jwks-url every MCP request must carry a bearer token signed by a key of that JWKS
/// (RS256, e.g. a Keycloak realm's) for --audience, else 401. WITHOUT --jwks-url the token is
/// only decoded, never verified: anyone who reaches the port can call the tools. Use that only
/// for a local demo.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Where to listen (the node's IP in the evals).
    #[arg(long, env = "VEXA_NOTES_LISTEN", default_value = "127.0.0.1:8790")]
    listen: SocketAddr,
    /// Where the notes file (notes.md) and the record of sends (sent.jsonl) live.
    #[arg(long, env = "VEXA_NOTES_DATA_DIR")]
    data_dir: PathBuf,
    /// The JWKS bearer tokens are verified against, e.g.
    /// http://<keycloak>/realms/vexa/protocol/openid-connect/certs. Unset: tokens are only
    /// decoded (local demos only).
    #[arg(long, env = "VEXA_NOTES_JWKS_URL")]
    jwks_url: Option<String>,
    /// The audience a verified token must carry (the tool's Keycloak client).
    #[arg(long, env = "VEXA_NOTES_AUDIENCE", default_value = "vexa-notes")]
    audience: String,
}

#[derive(Clone)]
struct App {
    check: Arc<Check>,
    calls: Calls,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("VEXA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)?;
    let check = match &cli.jwks_url {
        Some(url) => Check::Verify {
            jwks_url: url.clone(),
            audience: cli.audience.clone(),
            keys: std::sync::Mutex::new(None),
        },
        None => {
            tracing::warn!(
                "no --jwks-url: bearer tokens are decoded, not verified (local demos only)"
            );
            Check::DecodeOnly
        }
    };
    let app = App {
        check: Arc::new(check),
        calls: Calls::default(),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %cli.data_dir.display(), "notes tool listens (MCP at /mcp, calls at /calls)");
    axum::serve(listener, router(app, cli.data_dir)).await?;
    Ok(())
}

fn router(app: App, data_dir: PathBuf) -> Router {
    let calls = app.calls.clone();
    let write = Arc::new(tokio::sync::Mutex::new(()));
    // Stateless JSON answers: each request stands alone, so a gateway in front needs no session
    // affinity. Reached through the gateway at the node's address: no loopback Host check (the
    // bearer token is the check).
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(server::Notes::new(
                data_dir.clone(),
                calls.clone(),
                write.clone(),
            ))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // The check wraps the MCP service itself (a Router layer did not reach a nested service).
    let mcp = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .service(mcp);
    Router::new()
        .route_service("/mcp", mcp)
        .route("/calls", get(list_calls))
        .with_state(app)
}

/// Every MCP request: the bearer token checked (or decoded), its caller put in the request's
/// extensions for the tool to record; refused with 401 when it does not verify.
async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match app.check.caller(authorization.as_deref()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(token::Refused::Missing) if matches!(*app.check, Check::DecodeOnly) => {
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

async fn list_calls(State(app): State<App>) -> axum::Json<Vec<calls::Call>> {
    axum::Json(app.calls.all())
}
