//! `vexa-console`: the web console's server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vexa_console::cluster::ApiServer;
use vexa_console::oidc::{Oidc, Settings};
use vexa_console::session::{Limits, Sessions};
use vexa_console::{App, router};
use vexa_keycloak::oidc::ClientSettings;

/// Where the provider sends people back.
const CALLBACK: &str = "/signin/oidc/callback";

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
    /// The OpenID provider people sign in at: its issuer URL. The API server must trust the ID
    /// tokens it makes for --oidc-client-id (its `--authentication-config`).
    #[arg(long, env = "VEXA_CONSOLE_OIDC_ISSUER", requires_all = ["oidc_client_id", "oidc_client_secret_file", "oidc_redirect_url"])]
    oidc_issuer: Option<String>,
    /// The console's client id at the provider.
    #[arg(long, env = "VEXA_CONSOLE_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    oidc_client_id: Option<String>,
    /// A file holding the client's secret.
    #[arg(
        long,
        env = "VEXA_CONSOLE_OIDC_CLIENT_SECRET_FILE",
        requires = "oidc_issuer"
    )]
    oidc_client_secret_file: Option<PathBuf>,
    /// The CA bundle (PEM) of the provider's certificate (default: the system's roots).
    #[arg(long, env = "VEXA_CONSOLE_OIDC_CA", requires = "oidc_issuer")]
    oidc_ca: Option<PathBuf>,
    /// The console's own URL of `/signin/oidc/callback`, exactly as registered at the provider.
    #[arg(long, env = "VEXA_CONSOLE_OIDC_REDIRECT_URL", requires = "oidc_issuer")]
    oidc_redirect_url: Option<String>,
    /// The scopes asked for, space-separated (`openid` is always asked).
    #[arg(
        long,
        env = "VEXA_CONSOLE_OIDC_SCOPES",
        default_value = "openid profile"
    )]
    oidc_scopes: String,
    /// What the sign-in button calls the provider.
    #[arg(
        long,
        env = "VEXA_CONSOLE_OIDC_LABEL",
        default_value = "single sign-on"
    )]
    oidc_label: String,
    /// The operator's metrics Service, `<namespace>/<name>:<port>`: the admin page reads its
    /// /readyz and /metrics through the API server's service proxy, as the person.
    #[arg(long, env = "VEXA_CONSOLE_OPERATOR_SERVICE")]
    operator_service: Option<vexa_console::health::OperatorService>,
}

/// The OpenID provider's settings, if --oidc-issuer is set, checked.
fn oidc(args: &Args) -> anyhow::Result<Option<Oidc>> {
    let (Some(issuer), Some(client_id), Some(secret_file), Some(redirect)) = (
        &args.oidc_issuer,
        &args.oidc_client_id,
        &args.oidc_client_secret_file,
        &args.oidc_redirect_url,
    ) else {
        return Ok(None);
    };
    let uri: http::Uri = redirect
        .parse()
        .map_err(|e| anyhow::anyhow!("--oidc-redirect-url {redirect:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.path() == CALLBACK,
        "--oidc-redirect-url {redirect:?} must be the console's http(s) URL of {CALLBACK}"
    );
    let secret = std::fs::read_to_string(secret_file).map_err(|e| {
        anyhow::anyhow!(
            "reading --oidc-client-secret-file {}: {e}",
            secret_file.display()
        )
    })?;
    let ca = args
        .oidc_ca
        .as_ref()
        .map(|f| {
            std::fs::read(f).map_err(|e| anyhow::anyhow!("reading --oidc-ca {}: {e}", f.display()))
        })
        .transpose()?;
    let settings = Settings {
        client: ClientSettings {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: secret.trim().to_owned(),
            redirect_uri: redirect.clone(),
            scopes: args
                .oidc_scopes
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        },
        ca,
        label: args.oidc_label.clone(),
    };
    Ok(Some(Oidc::new(settings, !args.insecure_cookies)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let oidc = oidc(&args)?;
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
        oidc: oidc.map(Arc::new),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "the console listens");
    let mut routes = router(app);
    if let Some(at) = args.operator_service.clone() {
        routes = vexa_console::health::with_operator(routes, at);
    }
    axum::serve(listener, routes)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
