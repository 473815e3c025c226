//! `vexa-agent-worker`: the trusted sidecar of every dispatch's pod (SPEC §4). It reads the
//! environment the operator sets, becomes ready (the startup probe runs `vexa-agent-worker
//! ready`), runs the agent CLI turn by turn through the agent container's shim, streams its
//! events to Redis, and leaves a termination message saying how the run ended and what it
//! committed (`vexa_core::termination`, at most 4096 bytes of JSON). Then it tells the shim to
//! exit with the outcome's code and waits for the kubelet's SIGTERM (`vexa_agent_worker::sidecar`).
//! Its subcommands serve the other Jobs that run the same image: `apply-record` commits an
//! approved record Card, `serve-knowledge` reads a workspace's history for the operator.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;
use vexa_agent_worker::env::WorkerEnv;
use vexa_agent_worker::identity;
use vexa_agent_worker::knowledge::serve::{self as knowledge, Token};
use vexa_agent_worker::mcp::{SvidSource, Workload};
use vexa_agent_worker::network_gate;
use vexa_agent_worker::sidecar::{self, StateDir};
use vexa_agent_worker::worker::{self, Ending, Outcome, Ran, Settings};
use vexa_core::cards::{APPLY_RECORD_SUBCOMMAND, apply_env};
use vexa_core::knowledge::{
    IDLE_EXIT_SECONDS, PORT, SERVE_SUBCOMMAND, TOKEN_FILE, WORKSPACE_MOUNT,
};
use vexa_core::pod::layout::{
    AGENT_CONFIG_DIR, AGENT_SOCKET, DISPATCH_SECRET_DIR, READY_SUBCOMMAND, WORKER_STATE_DIR,
};
use vexa_core::trace::TraceParent;
use vexa_stream::publish::RetryOptions;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The Vexa agent worker. Everything about the run comes from the VEXA_* variables and
/// REDIS_URL the operator sets; these options only tune the worker itself.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the termination message goes (the container's terminationMessagePath).
    #[arg(
        long,
        env = "VEXA_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    termination_log: PathBuf,
    /// Log format on standard error.
    #[arg(long, env = "VEXA_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Seconds the agent has to exit after SIGTERM before it is killed.
    #[arg(long, env = "VEXA_STOP_GRACE_SEC", default_value_t = 5)]
    stop_grace_sec: u64,
    /// Seconds Redis may stay unreachable before the run fails.
    #[arg(long, env = "VEXA_REDIS_GIVE_UP_SEC", default_value_t = 60)]
    redis_give_up_sec: u64,
    /// This worker's name among the readers of the input stream (the pod's name).
    #[arg(long, env = "HOSTNAME", default_value = "vexa-agent-worker")]
    consumer: String,
    /// The agent container's shim socket (on a volume both containers mount).
    #[arg(long, env = "VEXA_AGENT_SOCKET", default_value = AGENT_SOCKET)]
    agent_socket: PathBuf,
    /// Seconds the agent container may take to start and answer on the socket.
    #[arg(long, env = "VEXA_AGENT_CONNECT_TIMEOUT_SEC", default_value_t = 120)]
    agent_connect_timeout_sec: u64,
    /// Where the dispatch's Secret is mounted (its credentials, one file per key).
    #[arg(long, env = "VEXA_SECRET_DIR", default_value = DISPATCH_SECRET_DIR)]
    secret_dir: PathBuf,
    /// About how many entries the output stream keeps; older ones are trimmed (0: never).
    #[arg(long, env = "VEXA_STREAM_MAX_LEN", default_value_t = vexa_stream::publish::DEFAULT_MAX_LEN)]
    stream_max_len: u64,
    /// The largest event streamed (bytes of JSON); a larger one becomes a note saying it was cut.
    #[arg(long, env = "VEXA_MAX_EVENT_BYTES", default_value_t = worker::DEFAULT_MAX_EVENT_BYTES)]
    max_event_bytes: usize,
    /// The agent CLI's configuration folder, shared with the agent container (the pod's own).
    #[arg(long, env = "VEXA_AGENT_CONFIG_DIR", default_value = AGENT_CONFIG_DIR)]
    agent_config_dir: PathBuf,
    /// Seconds to wait, before the agent may run, until the pod's network policy denies the API
    /// server (0: do not wait). The operator sets it where policies are expected.
    #[arg(long, env = "VEXA_AWAIT_NETWORK_POLICY_SEC", default_value_t = 0)]
    await_network_policy_sec: u64,
    /// The worker's own folder (the restart marker and the ready file; an emptyDir only the
    /// worker mounts).
    #[arg(long, env = "VEXA_WORKER_STATE_DIR", default_value = WORKER_STATE_DIR)]
    state_dir: PathBuf,
    /// Run as the pod's native sidecar (the operator sets it): refuse to run again after a
    /// restart (a marker in the state folder), mark the worker ready for the startup probe, and
    /// after the run wait for SIGTERM, since a sidecar that exits on its own is restarted.
    #[arg(long, env = "VEXA_SIDECAR", default_value_t = false, action = clap::ArgAction::Set)]
    sidecar: bool,
    /// Seconds to wait for the pod's X.509 SVID (when VEXA_SPIFFE asks for one) before the run
    /// fails.
    #[arg(long, env = "VEXA_SVID_TIMEOUT_SEC", default_value_t = identity::DEFAULT_SVID_TIMEOUT.as_secs())]
    svid_timeout_sec: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 once the worker is ready for the agent to start (the pod's startup probe).
    #[command(name = READY_SUBCOMMAND)]
    Ready,
    /// Commit an approved record Card into its workspace, as the approver (the Card
    /// controller's apply Job). Prints and leaves as termination message a JSON report.
    #[command(name = APPLY_RECORD_SUBCOMMAND)]
    ApplyRecord(ApplyRecordArgs),
    /// Serve a workspace's history, folders, files and diffs, read-only, to the operator
    /// (the workspace's knowledge Job). Exits 0 after a while without a request or on SIGTERM.
    #[command(name = SERVE_SUBCOMMAND)]
    ServeKnowledge(ServeKnowledgeArgs),
}

/// `serve-knowledge`: where the workspace and the token are, where to listen.
#[derive(Debug, clap::Args)]
struct ServeKnowledgeArgs {
    /// The workspace's folder (mounted read-only).
    #[arg(long, env = "VEXA_KNOWLEDGE_WORKSPACE", default_value = WORKSPACE_MOUNT)]
    workspace: PathBuf,
    /// The file holding the bearer token every request but /healthz must carry (read once).
    #[arg(long, env = "VEXA_KNOWLEDGE_TOKEN_FILE", default_value = TOKEN_FILE)]
    token_file: PathBuf,
    /// The address to listen on.
    #[arg(long, env = "VEXA_KNOWLEDGE_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], PORT)))]
    listen: SocketAddr,
    /// Seconds without a request (health probes aside) after which the reader exits.
    #[arg(long, env = "VEXA_KNOWLEDGE_IDLE_EXIT_SECONDS", default_value_t = IDLE_EXIT_SECONDS)]
    idle_exit_seconds: u64,
}

/// Serves the workspace's knowledge until idle or SIGTERM (exit 0), or fails to start (exit 1).
async fn serve_knowledge(a: ServeKnowledgeArgs) -> ExitCode {
    let token = match Token::read(&a.token_file) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(token_file = %a.token_file.display(), error = %e, "no usable token; refusing to serve");
            return ExitCode::FAILURE;
        }
    };
    let idle = Duration::from_secs(a.idle_exit_seconds);
    match knowledge::serve(a.listen, a.workspace, token, idle).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the knowledge reader failed");
            ExitCode::FAILURE
        }
    }
}

/// `apply-record`: everything comes from the apply Job's environment.
#[derive(Debug, clap::Args)]
struct ApplyRecordArgs {
    /// Where the workspace's volume is mounted.
    #[arg(long, env = apply_env::VOLUME, default_value = "/volume")]
    volume: PathBuf,
    /// The workspace's folder, relative to the volume.
    #[arg(long, env = apply_env::SUBPATH)]
    subpath: String,
    /// The Card, `<namespace>/<name>`.
    #[arg(long, env = apply_env::CARD)]
    card: String,
    /// The card's title.
    #[arg(long, env = apply_env::TITLE)]
    title: String,
    /// The Dispatch that proposed it.
    #[arg(long, env = apply_env::SOURCE_DISPATCH)]
    source_dispatch: String,
    /// Who approved it.
    #[arg(long, env = apply_env::APPROVED_BY)]
    approved_by: String,
    /// The file's path in the workspace.
    #[arg(long, env = apply_env::PATH)]
    path: String,
    /// A file holding the content.
    #[arg(long, env = apply_env::CONTENT_FILE)]
    content_file: PathBuf,
}

/// Applies a record card; the report (`{"commit", "alreadyApplied"}` or `{"error", "reason"}`)
/// goes to stdout and the termination message.
fn apply_record(a: ApplyRecordArgs, termination_log: &Path) -> ExitCode {
    let outcome = std::fs::read(&a.content_file)
        .map_err(|e| {
            (
                format!("reading {}: {e}", a.content_file.display()),
                "ContentUnreadable",
            )
        })
        .and_then(|content| {
            let record = vexa_agent_worker::record::Record {
                card: a.card,
                title: a.title,
                source_dispatch: a.source_dispatch,
                approved_by: a.approved_by,
                path: a.path,
                content,
            };
            vexa_agent_worker::record::apply(&a.volume.join(&a.subpath), &record)
                .map_err(|e| (e.to_string(), e.reason()))
        });
    let (report, code) = match outcome {
        Ok(applied) => (
            serde_json::to_string(&applied).unwrap_or_default(),
            ExitCode::SUCCESS,
        ),
        Err((error, reason)) => (
            serde_json::json!({"error": error, "reason": reason}).to_string(),
            ExitCode::FAILURE,
        ),
    };
    println!("{report}");
    let report: String = report
        .chars()
        .take(vexa_core::termination::MAX_BYTES / 4)
        .collect();
    if let Err(e) = std::fs::write(termination_log, report) {
        eprintln!(
            "could not write the termination message to {}: {e}",
            termination_log.display()
        );
    }
    code
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = StateDir::new(&cli.state_dir);
    if let Some(Command::Ready) = cli.command {
        // Cheap and silent: the kubelet runs it every second until it passes.
        return if state.is_ready() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(Command::ApplyRecord(a)) = cli.command {
        return apply_record(a, &cli.termination_log);
    }
    init_logs(cli.log_format);
    if let Some(Command::ServeKnowledge(a)) = cli.command {
        return serve_knowledge(a).await;
    }
    let shutdown = shutdown_on_signal();
    let agent_socket = cli.agent_socket.clone();
    let termination_log = cli.termination_log.clone();
    let sidecar = cli.sidecar;
    let agent_connect_timeout = Duration::from_secs(cli.agent_connect_timeout_sec);
    let claimed = if sidecar { state.claim_start() } else { Ok(()) };
    // The run's trace (set by the operator): every line of the run carries its id, so the
    // worker's log joins the trace in whatever backend holds both.
    let trace_id = std::env::var(vexa_core::trace::ENV)
        .ok()
        .and_then(|v| TraceParent::parse(&v).ok())
        .map(|t| t.trace_hex());
    let span = tracing::info_span!("run", trace_id = trace_id.as_deref().unwrap_or("-"));
    let ran = match claimed {
        Ok(()) => {
            run(cli, sidecar.then_some(&state), shutdown.clone())
                .instrument(span)
                .await
        }
        Err(e) => Outcome::before_start(Ending::Failed(e.to_string())).into(),
    };
    if sidecar {
        // A run that failed before it was ready lets the agent container start anyway, only
        // to be told to exit: otherwise the pod would wait for it until its deadline.
        state.mark_ready();
    }
    let outcome = ran.outcome;
    match &outcome.ending {
        Ending::Failed(why) => tracing::error!(error = %why, "the run failed"),
        other => tracing::info!(ending = ?other, provenance = ?outcome.provenance, "the run ended"),
    }
    write_termination_message(&termination_log, &outcome.termination().encode());
    let code = outcome.ending.exit_code();
    sidecar::end_agent(
        ran.agent,
        &agent_socket,
        code,
        agent_connect_timeout,
        shutdown.clone(),
    )
    .await;
    if sidecar {
        sidecar::linger(shutdown).await;
    }
    ExitCode::from(code)
}

/// The run; `state` is the sidecar's folder, where it marks itself ready.
async fn run(cli: Cli, state: Option<&StateDir>, shutdown: watch::Receiver<bool>) -> Ran {
    let gate = match cli.await_network_policy_sec {
        0 => Ok(None),
        sec => network_gate::api_server(|name| std::env::var(name).ok())
            .map(|api| Some((api, Duration::from_secs(sec)))),
    };
    match WorkerEnv::from_env()
        .map_err(|e| e.to_string())
        .and_then(|env| gate.map(|g| (env, g)))
    {
        Ok((env, network_gate)) => {
            let pod = &env.pod;
            tracing::info!(unit = %pod.unit_id, runner = %pod.runner, trigger = ?pod.trigger, owner = %pod.owner, launcher = %pod.launcher, "worker starts");
            let settings = Settings {
                stop_grace: Duration::from_secs(cli.stop_grace_sec),
                redis: RetryOptions {
                    give_up_after: Duration::from_secs(cli.redis_give_up_sec),
                    ..RetryOptions::default()
                },
                consumer: cli.consumer,
                agent_socket: cli.agent_socket,
                agent_connect_timeout: Duration::from_secs(cli.agent_connect_timeout_sec),
                secret_dir: cli.secret_dir,
                agent_config: cli.agent_config_dir,
                stream_max_len: cli.stream_max_len,
                max_event_bytes: cli.max_event_bytes,
                network_gate,
                ..Settings::default()
            };
            // The agent may start only once the worker holds the pod's identity.
            let identity = match &pod.spiffe {
                Some(access) => {
                    let timeout = Duration::from_secs(cli.svid_timeout_sec);
                    match identity::obtain(access, timeout, shutdown.clone()).await {
                        Ok(identity) => Some(identity),
                        Err(why) => return Outcome::before_start(Ending::Failed(why)).into(),
                    }
                }
                None => None,
            };
            if let Some(state) = state {
                state.mark_ready();
            }
            let notes = identity.iter().map(identity::Identity::note).collect();
            // The MCP endpoint's mutual TLS presents the SVID the source keeps current.
            let svids = identity.as_ref().and_then(|i| {
                let trust_domain = spiffe::SpiffeId::new(&i.spiffe_id)
                    .ok()?
                    .trust_domain()
                    .clone();
                let workload = Workload {
                    source: i.source.clone(),
                    trust_domain,
                };
                Some(std::sync::Arc::new(workload) as std::sync::Arc<dyn SvidSource>)
            });
            let settings = Settings { svids, ..settings };
            let ran = worker::run(env, settings, shutdown, notes).await;
            if let Some(identity) = identity {
                identity.source.shutdown().await;
            }
            ran
        }
        Err(e) => Outcome::before_start(Ending::Failed(e)).into(),
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VEXA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Turns true on SIGTERM (the operator's graceful stop) or SIGINT (a local Ctrl-C). As PID 1
/// the worker would otherwise ignore both.
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
                let _ = tx.send(true);
            });
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot handle SIGTERM; a stop will kill the worker");
        }
    }
    rx
}

fn write_termination_message(path: &Path, message: &str) {
    if let Err(e) = std::fs::write(path, message) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the termination message");
    }
}
