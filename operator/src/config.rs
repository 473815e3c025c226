//! Operator settings: every one is a flag and an environment variable.

use clap::{Parser, ValueEnum};

/// Settings of the operator.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "vexa-operator",
    version,
    about = "Runs each Vexa Dispatch as an isolated, short-lived Job"
)]
pub struct Config {
    /// Redis URL the agent workers stream to (as seen from inside the dispatch pods).
    #[arg(
        long,
        env = "VEXA_REDIS_URL",
        default_value = "redis://redis.vexa-system.svc:6379"
    )]
    pub redis_url: String,
    /// Namespace the operator runs in: the default home of Secrets referenced by
    /// cluster-scoped AgentRunners, and of the leader-election Lease.
    #[arg(long, env = "VEXA_NAMESPACE", default_value = "vexa-system")]
    pub namespace: String,
    /// Seconds a finished Job (and its pod) is kept before Kubernetes removes it.
    #[arg(long, env = "VEXA_JOB_TTL_SECONDS", default_value_t = 300)]
    pub job_ttl_seconds: i32,
    /// Maximum lifetime of a run when neither the Dispatch nor its runner says.
    #[arg(
        long,
        env = "VEXA_DEFAULT_MAX_LIFETIME_SECONDS",
        default_value_t = 3600
    )]
    pub default_max_lifetime_seconds: i64,
    /// Idle timeout of a run when neither the Dispatch nor its runner says.
    #[arg(long, env = "VEXA_DEFAULT_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub default_idle_timeout_seconds: i64,
    /// Dispatches reconciled in parallel.
    #[arg(long, env = "VEXA_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Address of the metrics and health server.
    #[arg(long, env = "VEXA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Take part in leader election (turn off only when exactly one replica runs, as in tests).
    #[arg(long, env = "VEXA_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "VEXA_LEASE_NAME", default_value = "vexa-operator")]
    pub lease_name: String,
    /// This replica's identity in leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "vexa-operator-local")]
    pub identity: String,
    /// Seconds the controller gets to finish its reconciles after SIGTERM before they are
    /// abandoned; keep it well below the pod's `terminationGracePeriodSeconds`.
    #[arg(long, env = "VEXA_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 15)]
    pub shutdown_timeout_seconds: u64,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "VEXA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
