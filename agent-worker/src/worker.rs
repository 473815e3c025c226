//! The worker's run (SPEC §4): prepare the rw workspace, find the session, run the entrypoint as
//! turn `t0`, then one turn per prompt on the input stream until a stop, the idle timeout or
//! SIGTERM. Each turn's events go to the output stream as they are parsed; after the turn its
//! changes are committed, the session id kept, and `turn-complete` sent. When the run ends the
//! worker reports how, with the base and resulting commit of its rw workspace (the
//! [`Termination`] the operator reads).
//!
//! The agent runs on a blocking thread (it is a plain child process read line by line); its
//! events cross to the publisher task through a bounded channel, so a slow Redis slows the agent
//! down instead of filling memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vexa_core::model::PLACEHOLDER_KEY;
use vexa_core::pod::layout::{AGENT_CONFIG_DIR, AGENT_SOCKET, DISPATCH_SECRET_DIR, secret_key};
use vexa_core::pod::{Start, StreamFormat};
use vexa_core::trace::{Milestones, now_ms};
use vexa_core::{CommitRange, ModelUsage, Published, StopReason, Termination};
use vexa_stream::acl;
use vexa_stream::publish::{
    DEFAULT_MAX_LEN, Inbox, Inboxed, MAX_BATCH, Publisher, RetryOptions, StreamError, Turn,
};

use crate::argv::ArgValues;
use crate::env::WorkerEnv;
use crate::events::{Event, TurnId, UnitEvent};
use crate::mcp::{EndpointSettings, McpEndpoint, SvidSource};
use crate::model_proxy::{ModelProxy, ProxySettings};
use crate::proposals::ProposalEndpoint;
use crate::session::{self, ResumeDecision};
use crate::shim::{Shim, ShimAgent, ShimStop};
use crate::transcripts;
use crate::turn::{TurnReport, TurnSpec, commit_message, run_turn};
use crate::workspace::{GitWorkspace, Provenance};

/// The termination message's text for a run SIGTERM ended.
pub const TERMINATED_MESSAGE: &str = "terminated: SIGTERM";
/// How many events may wait for the publisher before the agent is slowed down.
const EVENT_BUFFER: usize = 1024;
/// The largest event streamed when nothing else is set (its JSON; an agent line is at most
/// 1 MiB, and escaping can make its event longer).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 2 << 20;

/// How the worker behaves beyond what the operator's environment says.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the agent has to exit after SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// How long the last events may take to reach Redis after SIGTERM.
    pub flush_timeout: Duration,
    /// How Redis failures are retried.
    pub redis: RetryOptions,
    /// This worker's name among the readers of the input stream (the pod's name).
    pub consumer: String,
    /// The agent container's shim socket.
    pub agent_socket: PathBuf,
    /// How long the agent container may take to answer on it.
    pub agent_connect_timeout: Duration,
    /// Where the dispatch's Secret is mounted.
    pub secret_dir: PathBuf,
    /// The agent CLI's configuration folder (the pod's own, shared with the agent container).
    pub agent_config: PathBuf,
    /// About how many entries the output stream keeps (`0`: no trimming).
    pub stream_max_len: u64,
    /// The largest event streamed (its JSON); a larger one becomes a note saying it was cut.
    pub max_event_bytes: usize,
    /// Wait (at most this long) until the pod's network policy denies this address (the API
    /// server) before anything else; `None`: start at once.
    pub network_gate: Option<(std::net::SocketAddr, Duration)>,
    /// The pod's identity, for mutual TLS to the MCP gateway (`None`: no SVID, so no tools).
    pub svids: Option<Arc<dyn SvidSource>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stop_grace: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(5),
            redis: RetryOptions::default(),
            consumer: "vexa-agent-worker".into(),
            agent_socket: AGENT_SOCKET.into(),
            agent_connect_timeout: Duration::from_secs(120),
            secret_dir: DISPATCH_SECRET_DIR.into(),
            agent_config: AGENT_CONFIG_DIR.into(),
            stream_max_len: DEFAULT_MAX_LEN,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            network_gate: None,
            svids: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// No turn came within the idle timeout.
    Idle,
    /// A `{"type": "stop"}` turn.
    Stopped,
    /// SIGTERM (the operator's graceful stop, or the Job's deadline).
    Terminated,
    /// The run could not go on; the message says why and what to do.
    Failed(String),
}

impl Ending {
    /// The process's exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Ending::Idle | Ending::Stopped => 0,
            Ending::Terminated => 128 + 15,
            Ending::Failed(_) => 1,
        }
    }

    /// The stop reason the worker can vouch for. None after SIGTERM: the operator knows
    /// whether that was a stop request or the deadline.
    pub fn reason(&self) -> Option<StopReason> {
        match self {
            Ending::Idle => Some(StopReason::IdleTimeout),
            Ending::Stopped => Some(StopReason::Stopped),
            Ending::Terminated => None,
            Ending::Failed(_) => Some(StopReason::Failed),
        }
    }

    /// Detail for a person, when there is more to say than the reason.
    pub fn message(&self) -> Option<String> {
        match self {
            Ending::Idle | Ending::Stopped => None,
            Ending::Terminated => Some(TERMINATED_MESSAGE.into()),
            Ending::Failed(why) => Some(why.clone()),
        }
    }
}

/// How a run ended and what it left in git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// The base and resulting commit of the rw workspace, if the worker prepared one.
    pub provenance: Vec<CommitRange>,
    /// Model tokens used through the brokered credential, if the run had one.
    pub usage: Option<ModelUsage>,
    /// When the first turn reached each step, for the run's trace.
    pub milestones: Option<Milestones>,
    /// What reached the output stream.
    pub published: Option<Published>,
}

impl Outcome {
    /// A run that ended before it touched any workspace.
    pub fn before_start(ending: Ending) -> Self {
        Self {
            ending,
            provenance: Vec::new(),
            usage: None,
            milestones: None,
            published: None,
        }
    }

    /// What the container leaves as its termination message for the operator.
    pub fn termination(&self) -> Termination {
        Termination {
            reason: self.ending.reason(),
            message: self.ending.message(),
            provenance: self.provenance.clone(),
            usage: self.usage,
            milestones: self.milestones,
            published: self.published,
        }
    }
}

/// The publisher task is gone (its error is what its handle returns).
#[derive(Debug)]
struct PublisherGone;

/// How a run ended, and the connection to the agent container (if it was reached), which the
/// worker ends once it has written its report.
#[derive(Debug)]
pub struct Ran {
    /// How the run ended.
    pub outcome: Outcome,
    /// The shim, still connected.
    pub agent: Option<Shim>,
}

impl From<Outcome> for Ran {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            agent: None,
        }
    }
}

/// Runs the dispatch until it ends. `shutdown` turns true on SIGTERM. `notes` go to the
/// output stream first, as turn `t0`'s (what happened before the stream was open).
pub async fn run(
    env: WorkerEnv,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
    notes: Vec<String>,
) -> Ran {
    let pod = &env.pod;
    if let Some((denied, within)) = settings.network_gate {
        match crate::network_gate::await_policy(denied, within).await {
            Ok(waited) => {
                tracing::info!(
                    waited_ms = waited.as_millis() as u64,
                    "the pod's network policy is in force"
                )
            }
            Err(e) => return Outcome::before_start(Ending::Failed(e)).into(),
        }
    }
    let client = match redis_client(&pod.redis_url, &settings.secret_dir) {
        Ok(c) => c,
        Err(e) => return Outcome::before_start(Ending::Failed(e)).into(),
    };
    let publisher = match Publisher::connect(
        client.clone(),
        pod.out_topic.clone(),
        settings.redis.clone(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return Outcome::before_start(Ending::Failed(e.to_string())).into(),
    };
    let mut publisher = publisher;
    publisher.set_max_len(settings.stream_max_len);
    tracing::info!(topic = %pod.out_topic, top = ?publisher.last_id().map(|i| i.to_string()), "publishing events");
    let (events, rx) = mpsc::channel(EVENT_BUFFER);
    for note in notes {
        // The channel is empty and far larger than a few notes.
        let _ = events.try_send(UnitEvent::new(TurnId::default(), Event::Note { note }));
    }
    let publishing = tokio::spawn(publish(publisher, rx, settings.max_event_bytes));
    let inbox = Inbox::new(
        client,
        pod.in_topic.clone(),
        settings.consumer.clone(),
        settings.redis.clone(),
    );
    let flush_timeout = settings.flush_timeout;
    let provenance = Provenance {
        subject: pod.owner.clone(),
        dispatch: pod.unit_id.clone(),
        launcher: pod.launcher.clone(),
        runner: pod.runner.clone(),
    };
    let mut worker = Worker {
        env,
        settings,
        events,
        shutdown,
        inbox,
        git: None,
        provenance,
        session: SessionState::default(),
        shim: None,
        model: None,
        mcp: None,
        cards: None,
        mcp_config: None,
        stop: ShimStop::default(),
        next_turn: TurnId::default(),
        milestones: Milestones::default(),
        first_turn: None,
    };
    let ending = worker.drive().await;
    let commits = worker.commits().await;
    let usage = worker.model.as_ref().map(ModelProxy::usage);
    let milestones = (worker.milestones != Milestones::default()).then_some(worker.milestones);
    let terminated = ending == Ending::Terminated;
    let agent = worker.shim.take();
    drop(worker);
    let (ending, published) = finish(ending, publishing, terminated.then_some(flush_timeout)).await;
    Ran {
        outcome: Outcome {
            ending,
            provenance: commits,
            usage,
            milestones,
            published,
        },
        agent,
    }
}

/// Waits for the publisher to send what is queued (at most `limit` after SIGTERM), and turns a
/// publishing failure into the run's ending.
async fn finish(
    ending: Ending,
    publishing: JoinHandle<Result<Published, StreamError>>,
    limit: Option<Duration>,
) -> (Ending, Option<Published>) {
    let outcome = match limit {
        Some(limit) => match tokio::time::timeout(limit, publishing).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(?limit, "the last events did not reach Redis in time");
                return (ending, None);
            }
        },
        None => publishing.await,
    };
    match outcome {
        Ok(Ok(published)) => {
            tracing::info!(
                events = published.events,
                bytes = published.bytes,
                "all events published"
            );
            (ending, Some(published))
        }
        Ok(Err(e)) => (Ending::Failed(e.to_string()), None),
        Err(e) => (
            Ending::Failed(format!("the publisher task failed: {e}")),
            None,
        ),
    }
}

/// The Redis client of the run: as the dispatch's own ACL user when its Secret holds one (the
/// operator creates it), else as `REDIS_URL` says.
fn redis_client(url: &str, secret_dir: &Path) -> Result<redis::Client, String> {
    let read = |key: &str| {
        let path = secret_dir.join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "the dispatch's Redis credential {} cannot be read: {e}",
                path.display()
            )),
        }
    };
    let client = match (
        read(secret_key::REDIS_USERNAME)?,
        read(secret_key::REDIS_PASSWORD)?,
    ) {
        (Some(user), Some(password)) => acl::client_as(url, &user, &password),
        (None, None) => redis::Client::open(url),
        _ => {
            return Err(format!(
                "the dispatch's Secret has only one of {} and {}: the operator writes both",
                secret_key::REDIS_USERNAME,
                secret_key::REDIS_PASSWORD
            ));
        }
    };
    client.map_err(|e| format!("REDIS_URL: {e}"))
}

/// The event's JSON, or when it is over `max` bytes a note of the same turn saying it was cut
/// (never any of its content).
fn capped(event: &UnitEvent, max: usize) -> String {
    let json = event.to_json();
    if json.len() <= max {
        return json;
    }
    let kind = serde_json::to_value(&event.event)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "an".into());
    tracing::warn!(
        bytes = json.len(),
        max,
        kind,
        "an event over the cap was not streamed"
    );
    UnitEvent::new(
        event.turn_id,
        Event::Note {
            note: format!(
                "a {kind} event was cut: {} bytes, over the {max}-byte cap; it was not streamed",
                json.len()
            ),
        },
    )
    .to_json()
}

/// Sends the events it receives to the output stream, in batches of what has queued up; an
/// event over `max_event_bytes` goes as a note saying so.
async fn publish(
    mut publisher: Publisher,
    mut rx: mpsc::Receiver<UnitEvent>,
    max_event_bytes: usize,
) -> Result<Published, StreamError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut published = Published::default();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let json: Vec<String> = batch
            .drain(..)
            .map(|e| capped(&e, max_event_bytes))
            .collect();
        publisher.publish_all(&json).await?;
        published.events += json.len() as u64;
        published.bytes += json.iter().map(|j| j.len() as u64).sum::<u64>();
    }
    if publisher.deduplicated() > 0 {
        tracing::info!(
            deduplicated = publisher.deduplicated(),
            "retried appends that had landed were not repeated"
        );
    }
    Ok(published)
}

/// The session the next turn resumes, and where its id is kept.
#[derive(Debug, Default)]
struct SessionState {
    /// The session file, relative to the rw workspace (none without one).
    file: Option<PathBuf>,
    /// The session id to resume.
    id: Option<String>,
}

struct Worker {
    env: WorkerEnv,
    settings: Settings,
    events: mpsc::Sender<UnitEvent>,
    shutdown: watch::Receiver<bool>,
    inbox: Inbox,
    git: Option<GitWorkspace>,
    /// Who the run's commits are by, from the environment.
    provenance: Provenance,
    session: SessionState,
    /// The connection to the agent container, once it answered.
    shim: Option<Shim>,
    /// The agent's model endpoint, when the run brokers a model credential.
    model: Option<ModelProxy>,
    /// The agent's MCP endpoint, when the run has tools and the operator an MCP gateway.
    mcp: Option<McpEndpoint>,
    /// The card server every run gets ([`crate::proposals`]).
    cards: Option<ProposalEndpoint>,
    /// The MCP config file naming the card server and the tools, once written.
    mcp_config: Option<PathBuf>,
    stop: ShimStop,
    next_turn: TurnId,
    /// When the first turn reached each step (times only), for the run's trace.
    milestones: Milestones,
    /// The first turn's id, once it began.
    first_turn: Option<TurnId>,
}

/// How a turn ended.
enum TurnEnd {
    /// The worker goes on to the next turn.
    Next,
    /// SIGTERM came during the turn.
    Terminated,
    /// The agent could not be run at all.
    Failed(String),
}

impl Worker {
    async fn emit(&self, turn: TurnId, event: Event) -> Result<(), PublisherGone> {
        self.events
            .send(UnitEvent::new(turn, event))
            .await
            .map_err(|_| PublisherGone)
    }

    async fn note(&self, turn: TurnId, note: impl Into<String>) -> Result<(), PublisherGone> {
        let note = note.into();
        tracing::info!(%turn, %note, "note");
        self.emit(turn, Event::Note { note }).await
    }

    async fn drive(&mut self) -> Ending {
        match self.drive_inner().await {
            Ok(ending) => ending,
            Err(PublisherGone) => Ending::Failed("publishing events failed".into()),
        }
    }

    async fn drive_inner(&mut self) -> Result<Ending, PublisherGone> {
        if let Err(why) = self.prepare().await? {
            self.note(self.next_turn, why.clone()).await?;
            return Ok(Ending::Failed(why));
        }
        match self.start_model_proxy().await {
            Ok(proxy) => self.model = proxy,
            Err(why) => {
                self.note(self.next_turn, why.clone()).await?;
                return Ok(Ending::Failed(why));
            }
        }
        self.mcp = self.start_mcp_endpoint().await?;
        self.mcp_config = self.start_card_server().await?;
        match self.connect_agent().await {
            Ok(Some(shim)) => {
                self.shim = Some(shim);
                self.milestones.ready = Some(now_ms());
            }
            Ok(None) => return Ok(Ending::Terminated),
            Err(why) => {
                self.note(self.next_turn, why.clone()).await?;
                return Ok(Ending::Failed(why));
            }
        }
        let mut prompt = self.env.pod.start.first_prompt();
        loop {
            if let Some(p) = prompt.take() {
                match self.turn(p).await? {
                    TurnEnd::Next => {}
                    TurnEnd::Terminated => {
                        self.note(self.last_turn(), "stopped by SIGTERM during the turn")
                            .await?;
                        return Ok(Ending::Terminated);
                    }
                    TurnEnd::Failed(why) => return Ok(Ending::Failed(why)),
                }
            }
            let idle = self.env.pod.idle_timeout;
            let deadline = Instant::now() + idle;
            let turn = self.next_turn;
            loop {
                let wait = deadline.saturating_duration_since(Instant::now());
                let mut shutdown = self.shutdown.clone();
                let received = tokio::select! {
                    r = self.inbox.next(wait) => r,
                    _ = shutdown.wait_for(|stop| *stop) => {
                        self.note(self.last_turn(), "stopped by SIGTERM while waiting for a turn").await?;
                        return Ok(Ending::Terminated);
                    }
                };
                match received {
                    Ok(Some(Inboxed::Turn(id, Turn::Prompt(p)))) => {
                        tracing::info!(entry = %id, %turn, "turn received");
                        prompt = Some(p);
                        break;
                    }
                    Ok(Some(Inboxed::Turn(id, Turn::Stop))) => {
                        tracing::info!(entry = %id, "stop received");
                        self.note(self.last_turn(), "stopped on request").await?;
                        return Ok(Ending::Stopped);
                    }
                    Ok(Some(Inboxed::Malformed { id, problem })) => {
                        tracing::warn!(entry = %id, %problem, "malformed turn");
                        self.note(
                            self.last_turn(),
                            format!("ignored entry {id} of {}: {problem}", self.env.pod.in_topic),
                        )
                        .await?;
                    }
                    Ok(None) => {
                        self.note(
                            self.last_turn(),
                            format!("no turn for {} s: exiting", idle.as_secs()),
                        )
                        .await?;
                        return Ok(Ending::Idle);
                    }
                    Err(e) => return Ok(Ending::Failed(e.to_string())),
                }
            }
        }
    }

    /// The base and resulting commit of the rw workspace, if the worker prepared one.
    async fn commits(&self) -> Vec<CommitRange> {
        let (Some(git), Some(rw)) = (self.git.clone(), self.env.pod.writable()) else {
            return Vec::new();
        };
        let base = git.base.clone();
        let head = tokio::task::spawn_blocking(move || git.head())
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read.map_err(|e| e.to_string()));
        let result = head.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the rw workspace's HEAD at exit");
            None
        });
        vec![CommitRange {
            workspace: rw.name.clone(),
            base,
            result,
        }]
    }

    /// The turn whose id notes between turns carry: the last one run (or `t0` before any).
    fn last_turn(&self) -> TurnId {
        TurnId(self.next_turn.0.saturating_sub(1))
    }

    /// Prepares the rw workspace and reads the session; notes what the reader should know.
    /// The inner error is why the run cannot start.
    /// Starts the agent's loopback model endpoint, if the run brokers a model credential.
    async fn start_model_proxy(&self) -> Result<Option<ModelProxy>, String> {
        let Some(access) = &self.env.pod.model else {
            return Ok(None);
        };
        let path = self.settings.secret_dir.join(secret_key::MODEL_TOKEN);
        let token = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "the dispatch's model token {} cannot be read ({e}): the operator's model gateway is not set up",
                path.display()
            )
        })?;
        let gateway = access.gateway.parse().map_err(|e| {
            format!(
                "the model gateway URL {:?} is not a URL: {e}",
                access.gateway
            )
        })?;
        ModelProxy::start(ProxySettings {
            gateway,
            token,
            budget: access.token_budget,
        })
        .await
        .map(Some)
        .map_err(|e| e.to_string())
    }

    /// Starts the agent's MCP endpoint when the run has tools and a gateway; says in a note why
    /// the tools are not passed otherwise (the run goes on without them).
    async fn start_mcp_endpoint(&self) -> Result<Option<McpEndpoint>, PublisherGone> {
        let pod = &self.env.pod;
        if pod.tools.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = pod.tools.iter().map(|t| t.name.clone()).collect();
        let not_passed = |why: &str| {
            format!(
                "granted tools ({}) are not passed to the agent: {why}",
                names.join(", ")
            )
        };
        let t0 = self.next_turn;
        let Some(gateway) = &pod.mcp_gateway else {
            self.note(
                t0,
                not_passed("the operator has no MCP gateway (--mcp-gateway-url)"),
            )
            .await?;
            return Ok(None);
        };
        let (Some(svids), Some(spiffe)) = (&self.settings.svids, &pod.spiffe) else {
            self.note(
                t0,
                not_passed("the worker holds no SVID for mutual TLS to the gateway"),
            )
            .await?;
            return Ok(None);
        };
        let trust_domain = match spiffe::SpiffeId::new(&spiffe.spiffe_id) {
            Ok(id) => id.trust_domain_name().to_owned(),
            Err(e) => {
                self.note(t0, not_passed(&format!("{e}"))).await?;
                return Ok(None);
            }
        };
        let settings = EndpointSettings {
            gateway: gateway.url.clone(),
            port: gateway.port,
            namespace: pod.unit_id.split('/').next().unwrap_or_default().to_owned(),
            tools: names.clone(),
            token_file: self.settings.secret_dir.join(secret_key::DISPATCH_TOKEN),
            trust_domain,
        };
        let endpoint = match McpEndpoint::start(settings, svids.clone()).await {
            Ok(e) => e,
            Err(e) => {
                self.note(t0, not_passed(&e.to_string())).await?;
                return Ok(None);
            }
        };
        self.note(
            t0,
            format!(
                "tools ({}) reach the agent through the MCP gateway {} (the agent's endpoint: {})",
                names.join(", "),
                gateway.url,
                endpoint.url("<tool>")
            ),
        )
        .await?;
        Ok(Some(endpoint))
    }

    /// Starts the card server and writes the agent's MCP config (the card server, and the
    /// granted tools when they reach the agent); returns the config's path. Without it the run
    /// goes on, with a note, unable to propose cards or call tools.
    async fn start_card_server(&mut self) -> Result<Option<PathBuf>, PublisherGone> {
        let t0 = self.next_turn;
        let cards = match ProposalEndpoint::start(self.events.clone()).await {
            Ok(c) => c,
            Err(e) => {
                self.note(t0, format!("the card server could not start: {e}"))
                    .await?;
                return Ok(None);
            }
        };
        let tools = self
            .mcp
            .as_ref()
            .map(|m| (m.addr(), self.env.pod.tools.as_slice()));
        let config = crate::mcp::config::mcp_config(&cards.url(), tools);
        self.cards = Some(cards);
        match crate::mcp::config::write(&self.settings.agent_config, &config) {
            Ok(path) => Ok(Some(path)),
            Err(e) => {
                self.mcp = None;
                self.note(
                    t0,
                    format!("the agent's MCP config could not be written ({e}): no card server, no tools"),
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// The variables a turn's agent gets on top of its container's: where its sessions live,
    /// and the model proxy's address with a placeholder key.
    fn agent_env(&self) -> Vec<(String, String)> {
        let mut vars = agent_env(&self.env, &self.settings.agent_config);
        if let (Some(access), Some(proxy)) = (&self.env.pod.model, &self.model) {
            vars.push((access.base_url_env.clone(), proxy.base_url()));
            vars.push((access.key_env.clone(), PLACEHOLDER_KEY.into()));
        }
        vars
    }

    /// Connects to the agent container's shim (it may still be starting); `None` when SIGTERM
    /// came first.
    async fn connect_agent(&self) -> Result<Option<Shim>, String> {
        let socket = self.settings.agent_socket.clone();
        let timeout = self.settings.agent_connect_timeout;
        let connecting = tokio::task::spawn_blocking(move || Shim::connect(&socket, timeout));
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            joined = connecting => match joined {
                Ok(Ok(shim)) => Ok(Some(shim)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("connecting to the agent container failed: {e}")),
            },
            _ = shutdown.wait_for(|stop| *stop) => Ok(None),
        }
    }

    async fn prepare(&mut self) -> Result<Result<(), String>, PublisherGone> {
        let t0 = self.next_turn;
        for w in &self.env.pod.workspaces {
            tracing::info!(workspace = %w.name, id = %w.id, path = %w.path.display(), mode = ?w.mode, "workspace");
        }
        if let Some(rw) = self.env.pod.writable().cloned() {
            let path = rw.path.clone();
            let who = self.provenance.clone();
            let prepared =
                tokio::task::spawn_blocking(move || GitWorkspace::prepare(&path, &who)).await;
            match prepared {
                Ok(Ok(git)) => {
                    tracing::info!(workspace = %rw.name, base = ?git.base, initialised = git.initialised, "rw workspace ready");
                    self.git = Some(git);
                }
                Ok(Err(e)) => {
                    return Ok(Err(format!(
                        "could not prepare the rw workspace {:?}: {e}",
                        rw.name
                    )));
                }
                Err(e) => return Ok(Err(format!("preparing the rw workspace failed: {e}"))),
            }
        }
        for note in self.resolve_session() {
            self.note(t0, note).await?;
        }
        Ok(Ok(()))
    }

    /// Finds the session to resume; returns notes for the reader.
    fn resolve_session(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(root) = self.git.as_ref().map(|g| g.path().to_owned()) else {
            if let Start::Session { reference, .. } = &self.env.pod.start {
                notes.push(format!(
                    "cannot resume {reference}: the run has no rw workspace to keep sessions in; starting a fresh session"
                ));
            }
            return notes;
        };
        let pod = &self.env.pod;
        let spec = &pod.runner_spec;
        let own = session::session_file(&spec.session_path, &pod.thread);
        let found = match &pod.start {
            Start::Session { reference, .. } => {
                let file = PathBuf::from(reference);
                let id = session::read_session_id(&root, &file);
                self.session.file = Some(file.clone());
                match id {
                    Ok(None) => {
                        notes.push(format!(
                            "the session file {reference} is missing or empty; starting a fresh session"
                        ));
                        Ok(None)
                    }
                    other => other.map(|id| id.map(|id| (file, id))),
                }
            }
            Start::Entrypoint { .. } => {
                // New ids go to the thread's own file, also when the legacy file was read.
                self.session.file = Some(own);
                session::read_thread_session(&root, &spec.session_path, &pod.thread)
            }
        };
        match found {
            Ok(Some((file, id))) => match session::resume_decision(&root, &id) {
                ResumeDecision::Resume(id) => {
                    tracing::info!(file = %file.display(), session = %id, "resuming");
                    self.session.id = Some(id);
                }
                ResumeDecision::TooLarge { id, bytes } => notes.push(format!(
                    "not resuming session {id}: its transcript is {bytes} bytes (more than {}); starting a fresh session",
                    session::MAX_RESUME_TRANSCRIPT_BYTES
                )),
            },
            Ok(None) => {}
            Err(e) => notes.push(e.to_string()),
        }
        notes
    }

    /// Runs one turn with `prompt`, then commits, keeps the session and completes the turn.
    async fn turn(&mut self, prompt: String) -> Result<TurnEnd, PublisherGone> {
        let turn = self.next_turn;
        self.next_turn = turn.next();
        let first = self.first_turn.is_none();
        if first {
            self.first_turn = Some(turn);
            self.milestones.turn = Some(now_ms());
        }
        if let Some(cards) = &self.cards {
            cards.set_turn(turn);
        }
        let env = &self.env;
        let pod = &env.pod;
        let command = env.command.clone();
        let stream_format = pod.runner_spec.stream_format;
        let values = ArgValues {
            prompt,
            session_id: self.session.id.clone(),
            model: pod.runner_spec.model.clone(),
            // Tools need the MCP endpoint; see `start_mcp_endpoint`. The card tool is always
            // there once the config is written.
            allowed_tools: self.mcp_config.as_ref().map(|_| {
                crate::mcp::config::allowed_tools(if self.mcp.is_some() { &pod.tools } else { &[] })
            }),
            mcp_config: self
                .mcp_config
                .as_ref()
                .map(|path| path.display().to_string()),
            workspace_path: Some(pod.workspace_path.display().to_string()),
            dispatch_id: Some(pod.unit_id.clone()),
        };
        let Some(shim) = self.shim.clone() else {
            return Ok(TurnEnd::Failed(
                "the agent container is not connected".into(),
            ));
        };
        if let (Some(id), Some(root)) = (&values.session_id, self.transcript_root()) {
            match transcripts::restore(&root, &self.settings.agent_config, id) {
                Ok(copied) if !copied.is_empty() => {
                    tracing::info!(%turn, session = %id, ?copied, "transcript restored");
                }
                Ok(_) => {}
                Err(e) => {
                    self.note(
                        turn,
                        format!("the session's transcript was not restored: {e}"),
                    )
                    .await?;
                }
            }
        }
        let mut agent = ShimAgent {
            shim,
            cwd: pod.workspace_path.clone(),
            env: self.agent_env(),
            stop: self.stop.clone(),
        };
        tracing::info!(%turn, resume = ?values.session_id, "turn starts");
        let events = self.events.clone();
        let stop = self.stop.clone();
        // 0 until the first turn's first event (then its Unix milliseconds).
        let first_event = Arc::new(AtomicI64::new(0));
        let seen = first.then(|| first_event.clone());
        let mut running = tokio::task::spawn_blocking(move || {
            run_turn(
                &mut agent,
                TurnSpec {
                    argv: &command.argv,
                    optional_argv: &command.optional_argv,
                    stream_format,
                },
                turn,
                &values,
                &mut |event| {
                    if let Some(seen) = &seen {
                        let _ = seen.compare_exchange(
                            0,
                            now_ms(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    tracing::debug!(event = %event.to_json(), "event");
                    if events.blocking_send(event).is_err() {
                        // Nobody can see the turn any more: stop the agent.
                        stop.terminate();
                    }
                },
            )
        });
        let mut shutdown = self.shutdown.clone();
        let mut terminated = false;
        let joined = tokio::select! {
            r = &mut running => r,
            _ = shutdown.wait_for(|stop| *stop) => {
                terminated = true;
                tracing::info!(%turn, grace = ?self.settings.stop_grace, "SIGTERM: stopping the agent");
                self.stop.terminate();
                match tokio::time::timeout(self.settings.stop_grace, &mut running).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(%turn, "the agent ignored SIGTERM: killing it");
                        self.stop.kill();
                        running.await
                    }
                }
            }
        };
        if first {
            self.milestones.done = Some(now_ms());
            self.milestones.first_event =
                Some(first_event.load(Ordering::Relaxed)).filter(|ms| *ms > 0);
        }
        let report = match joined {
            Ok(Ok(report)) => report,
            Ok(Err(e)) if terminated => {
                tracing::info!(%turn, error = %e, "the turn ended by SIGTERM");
                return Ok(TurnEnd::Terminated);
            }
            Ok(Err(e)) => {
                let why = format!("could not run the agent: {e}");
                tracing::error!(%turn, error = %e, "could not run the agent");
                self.emit(turn, Event::ModelError { error: why.clone() })
                    .await?;
                self.emit(
                    turn,
                    Event::Done {
                        reply: String::new(),
                        session_id: None,
                        ok: false,
                    },
                )
                .await?;
                self.emit(turn, Event::TurnComplete {}).await?;
                return Ok(TurnEnd::Failed(why));
            }
            Err(e) => return Ok(TurnEnd::Failed(format!("the turn's thread failed: {e}"))),
        };
        self.after_turn(turn, &report, terminated).await?;
        self.emit(turn, Event::TurnComplete {}).await?;
        tracing::info!(%turn, ok = ?report.outcome.done, "turn complete");
        Ok(if terminated {
            TurnEnd::Terminated
        } else {
            TurnEnd::Next
        })
    }

    /// Commits the turn's changes, keeps its session id.
    async fn after_turn(
        &mut self,
        turn: TurnId,
        report: &TurnReport,
        interrupted: bool,
    ) -> Result<(), PublisherGone> {
        let root = self.git.as_ref().map(|g| g.path().to_owned());
        if report.resume_failed {
            self.session.id = None;
            if let (Some(root), Some(file)) = (&root, &self.session.file)
                && let Err(e) = session::remove_session_file(root, file)
            {
                self.note(turn, e.to_string()).await?;
            }
        }
        if let Some(git) = self.git.clone() {
            let unit_id = &self.env.pod.unit_id;
            let subject_line = if interrupted {
                format!("Interrupted turn {turn} of {unit_id}")
            } else {
                commit_message(&report.outcome.reply, unit_id, turn)
            };
            let who = self.provenance.clone();
            let committed = tokio::task::spawn_blocking(move || {
                git.commit(&subject_line, &turn.to_string(), &who)
            })
            .await;
            match committed {
                Ok(Ok(Some(sha))) => {
                    if self.first_turn == Some(turn) {
                        self.milestones.commit = Some(now_ms());
                    }
                    tracing::info!(%turn, %sha, "committed");
                    self.emit(turn, Event::Commit { sha }).await?;
                }
                Ok(Ok(None)) => tracing::info!(%turn, "nothing to commit"),
                Ok(Err(e)) => {
                    tracing::error!(%turn, error = %e, "commit failed");
                    self.note(turn, format!("the turn's changes were not committed: {e}"))
                        .await?;
                }
                Err(e) => {
                    self.note(turn, format!("the turn's changes were not committed: {e}"))
                        .await?;
                }
            }
        }
        if let Some(id) = report.outcome.session_id.clone() {
            if let (Some(root), Some(file)) = (&root, &self.session.file)
                && let Err(e) = session::write_session_id(root, file, &id)
            {
                self.note(turn, format!("the session id was not kept: {e}"))
                    .await?;
            }
            if let Some(root) = self.transcript_root()
                && let Err(e) = transcripts::keep(&root, &self.settings.agent_config, &id)
            {
                self.note(
                    turn,
                    format!("the session's transcript was not kept for a later run: {e}"),
                )
                .await?;
            }
            self.session.id = Some(id);
        }
        Ok(())
    }

    /// The rw workspace, when the worker carries Claude Code's transcripts between its
    /// config folder and the workspace (see [`crate::transcripts`]).
    fn transcript_root(&self) -> Option<PathBuf> {
        let claude = self.env.pod.runner_spec.stream_format == StreamFormat::ClaudeStreamJson;
        let root = self.git.as_ref().map(|g| g.path().to_owned())?;
        (claude && self.settings.agent_config.is_dir()).then_some(root)
    }
}

/// Variables set for the agent. Claude Code reads its settings (hooks included) from
/// `CLAUDE_CONFIG_DIR` and keeps its transcripts there: it is `config`, a folder of this pod
/// only, never the workspace, so nothing an agent leaves there runs in a later run
/// ([`crate::transcripts`] carries a resumed session's transcript across).
pub fn agent_env(env: &WorkerEnv, config: &Path) -> Vec<(String, String)> {
    if env.pod.runner_spec.stream_format == StreamFormat::ClaudeStreamJson {
        vec![("CLAUDE_CONFIG_DIR".into(), config.display().to_string())]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    use rstest::rstest;

    #[rstest]
    #[case::idle(Ending::Idle, 0, r#"{"reason":"idle_timeout"}"#)]
    #[case::stopped(Ending::Stopped, 0, r#"{"reason":"stopped"}"#)]
    #[case::sigterm(Ending::Terminated, 143, r#"{"message":"terminated: SIGTERM"}"#)]
    #[case::failed(
        Ending::Failed("REDIS_URL: bad".into()),
        1,
        r#"{"reason":"failed","message":"REDIS_URL: bad"}"#
    )]
    fn endings_become_the_operators_stop_reasons(
        #[case] ending: Ending,
        #[case] code: u8,
        #[case] message: &str,
    ) {
        assert_eq!(ending.exit_code(), code);
        let outcome = Outcome::before_start(ending);
        assert_eq!(outcome.termination().encode(), message);
    }

    #[test]
    fn the_provenance_travels_with_the_ending() {
        let outcome = Outcome {
            ending: Ending::Idle,
            provenance: vec![CommitRange {
                workspace: "notes".into(),
                base: Some("a".repeat(40)),
                result: Some("b".repeat(40)),
            }],
            usage: Some(ModelUsage {
                input_tokens: 10,
                output_tokens: 2,
                requests: 1,
            }),
            milestones: Some(Milestones {
                ready: Some(1),
                turn: Some(2),
                first_event: Some(3),
                done: Some(4),
                commit: Some(5),
            }),
            published: Some(Published {
                events: 7,
                bytes: 900,
            }),
        };
        let back = Termination::parse(&outcome.termination().encode());
        assert_eq!(back.milestones, outcome.milestones);
        assert_eq!(back.published, outcome.published);
        assert_eq!(back.usage, outcome.usage);
        assert_eq!(back.reason, Some(StopReason::IdleTimeout));
        assert_eq!(back.provenance, outcome.provenance);
    }

    #[test]
    fn an_event_over_the_cap_becomes_a_note_without_its_content() {
        let small = UnitEvent::new(TurnId(2), Event::Note { note: "hi".into() });
        assert_eq!(capped(&small, 1000), small.to_json());
        let big = UnitEvent::new(
            TurnId(2),
            Event::MessageDelta {
                text: "secret ".repeat(1000),
            },
        );
        let note = capped(&big, 1000);
        assert!(note.len() < 300, "{note}");
        assert!(!note.contains("secret"), "{note}");
        assert!(note.contains(r#""turn_id":"t2""#), "{note}");
        assert!(note.contains("a message-delta event was cut"), "{note}");
        assert!(note.contains("over the 1000-byte cap"), "{note}");
    }

    #[test]
    fn the_redis_credential_comes_from_the_secret_when_it_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let open = |dir: &Path| redis_client("redis://10.0.0.1:6379", dir);
        let c = open(dir.path()).unwrap();
        assert_eq!(c.get_connection_info().redis_settings().username(), None);
        std::fs::write(
            dir.path().join(secret_key::REDIS_USERNAME),
            "vexa-dispatch:ns/d",
        )
        .unwrap();
        let e = open(dir.path()).unwrap_err();
        assert!(e.contains("only one of"), "{e}");
        std::fs::write(dir.path().join(secret_key::REDIS_PASSWORD), "pw\n").unwrap();
        let c = open(dir.path()).unwrap();
        let settings = c.get_connection_info().redis_settings();
        assert_eq!(settings.username(), Some("vexa-dispatch:ns/d"));
        assert_eq!(settings.password(), Some("pw"));
    }
}
