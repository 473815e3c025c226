//! `vexa-console`: the web console's server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vexa_console::cluster::ApiServer;
use vexa_console::session::{Limits, Sessions};
use vexa_console::{App, router};

/// The Vexa web console. It acts only as the person signed in: it needs no Kubernetes rights of
/// its own, only the API server's address and CA.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen.
    #[arg(long, env = "VEXA_CONSOLE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The API server's URL (default: the kubeconfig's, or the pod's).
    #[arg(long, env = "VEXA_CONSOLE_API_SERVER", requires = "api_ca")]
    api_server: Option<String>,
    /// The CA that signs the API server's certificate (PEM).
    #[arg(long, env = "VEXA_CONSOLE_API_CA", requires = "api_server")]
    api_ca: Option<String>,
    /// The namespace pages open on.
    #[arg(long, env = "VEXA_CONSOLE_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Send the session cookie without `Secure` (only for plain HTTP that is not loopback;
    /// behind TLS or on localhost keep it secure).
    #[arg(long, env = "VEXA_CONSOLE_INSECURE_COOKIES")]
    insecure_cookies: bool,
    /// The most people signed in at once.
    #[arg(long, default_value_t = 10_000)]
    max_sessions: usize,
    /// A session unused this many minutes ends.
    #[arg(long, default_value_t = 120)]
    idle_minutes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let api = match (&args.api_server, &args.api_ca) {
        (Some(url), Some(ca)) => ApiServer::new(url, ca)?,
        _ => ApiServer::inferred().await?,
    };
    let sessions = Sessions::new(
        Limits {
            max: args.max_sessions,
            idle: Duration::from_secs(args.idle_minutes * 60),
            ..Limits::default()
        },
        !args.insecure_cookies,
    );
    let sweeper = sessions.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            sweeper.sweep();
        }
    });
    let app = App {
        api,
        sessions,
        default_namespace: Arc::from(args.namespace.as_str()),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "the console listens");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
