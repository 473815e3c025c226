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
    /// CPU request of a run when neither the Dispatch nor its runner sets resources (a pod
    /// without any would be BestEffort: first to be evicted, unbounded). Empty: none.
    #[arg(long, env = "VEXA_DEFAULT_CPU_REQUEST", default_value = "100m", value_parser = quantity)]
    pub default_cpu_request: String,
    /// Memory request of a run when neither the Dispatch nor its runner sets resources.
    #[arg(long, env = "VEXA_DEFAULT_MEMORY_REQUEST", default_value = "256Mi", value_parser = quantity)]
    pub default_memory_request: String,
    /// Memory limit of a run when neither the Dispatch nor its runner sets resources.
    #[arg(long, env = "VEXA_DEFAULT_MEMORY_LIMIT", default_value = "2Gi", value_parser = quantity)]
    pub default_memory_limit: String,
    /// Where the model gateway listens (every replica serves it).
    #[arg(long, env = "VEXA_MODEL_GATEWAY_ADDR", default_value = "0.0.0.0:8082")]
    pub model_gateway_addr: std::net::SocketAddr,
    /// The model gateway's base URL as dispatch pods reach it (the operator's Service).
    #[arg(
        long,
        env = "VEXA_MODEL_GATEWAY_URL",
        default_value = "http://vexa-operator.vexa-system.svc:8082"
    )]
    pub model_gateway_url: String,
    /// Where the streams API (`streams.vexa.ai`, reached through the API server) listens; every
    /// replica serves it.
    #[arg(long, env = "VEXA_STREAMS_ADDR", default_value = "0.0.0.0:8443")]
    pub streams_addr: std::net::SocketAddr,
    /// The streams API's serving certificate (PEM file; the APIService's caBundle must verify
    /// it). Empty: the streams API is not served.
    #[arg(long, env = "VEXA_STREAMS_TLS_CERT", default_value = "")]
    pub streams_tls_cert: String,
    /// The serving certificate's private key (PEM file).
    #[arg(long, env = "VEXA_STREAMS_TLS_KEY", default_value = "")]
    pub streams_tls_key: String,
    /// Redis as the operator itself reaches it, for the streams API (people's reads and turns)
    /// and the dispatches' users. Default: --redis-url.
    #[arg(long, env = "REDIS_URL")]
    pub operator_redis_url: Option<String>,
    /// The Redis user the operator acts as (it needs ACL, FUNCTION and the streams). Empty: the
    /// credentials in the URL, if any.
    #[arg(long, env = "VEXA_REDIS_ADMIN_USERNAME", default_value = "")]
    pub redis_admin_username: String,
    /// A file holding that user's password (a mounted Secret). Empty: the URL's, if any.
    #[arg(long, env = "VEXA_REDIS_ADMIN_PASSWORD_FILE", default_value = "")]
    pub redis_admin_password_file: String,
    /// Give every dispatch its own Redis ACL user, allowed only its two streams, its password
    /// only in the dispatch's Secret. Turn off only for a Redis without ACLs.
    #[arg(long, env = "VEXA_REDIS_DISPATCH_USERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_dispatch_users: bool,
    /// Seconds a dispatch's streams are kept once its run is over (0: kept until deleted).
    #[arg(long, env = "VEXA_STREAM_RETENTION_SECONDS", default_value_t = 86_400)]
    pub stream_retention_seconds: u64,
    /// About how many entries a dispatch's output stream keeps; older ones are trimmed (0:
    /// never). The worker applies it.
    #[arg(long, env = "VEXA_STREAM_MAX_LEN", default_value_t = vexa_stream::publish::DEFAULT_MAX_LEN)]
    pub stream_max_len: u64,
    /// Seconds a dispatch pod's worker waits, before the agent may run, until the pod's
    /// NetworkPolicy denies the API server; past that the run fails (0: do not wait). Set it
    /// when every tenant namespace has the chart's policies and the network plugin binds a pod
    /// to them only after its containers start (kube-router does).
    #[arg(long, env = "VEXA_AWAIT_NETWORK_POLICY_SECONDS", default_value_t = 0)]
    pub await_network_policy_seconds: u64,
    /// Image of every dispatch's trusted `worker` container (the agent worker). The agent's
    /// own container runs the runner's image.
    #[arg(
        long,
        env = "VEXA_WORKER_IMAGE",
        default_value = "localhost/vexa-agent-worker:dev"
    )]
    pub worker_image: String,
    /// CPU request of the worker container.
    #[arg(long, env = "VEXA_WORKER_CPU_REQUEST", default_value = "20m", value_parser = quantity)]
    pub worker_cpu_request: String,
    /// Memory request of the worker container.
    #[arg(long, env = "VEXA_WORKER_MEMORY_REQUEST", default_value = "32Mi", value_parser = quantity)]
    pub worker_memory_request: String,
    /// Memory limit of the worker container (output lines are capped, so it stays small; a
    /// large commit needs more).
    #[arg(long, env = "VEXA_WORKER_MEMORY_LIMIT", default_value = "512Mi", value_parser = quantity)]
    pub worker_memory_limit: String,
    /// Image of the Job that prepares a Workspace's folder: one with `vexa-workspace-init` on
    /// its PATH (the agent worker's image has it).
    #[arg(
        long,
        env = "VEXA_WORKSPACE_INIT_IMAGE",
        default_value = "localhost/vexa-agent-worker:dev"
    )]
    pub workspace_init_image: String,
    /// Objects of each kind reconciled in parallel. A reconcile mostly waits on the API server,
    /// so more in flight starts a burst sooner (dispatch-bench: burst p99 2.8 s at 8, 1.8-2.0 s
    /// at 32, on a 2-core cluster).
    #[arg(long, env = "VEXA_CONCURRENCY", default_value_t = 32)]
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
    /// Tenant namespaces by name: the operator runs Dispatches in these (and in namespaces
    /// with --tenant-label) and refuses the others. Comma-separated.
    #[arg(long, env = "VEXA_TENANT_NAMESPACES", value_delimiter = ',')]
    pub tenant_namespaces: Vec<String>,
    /// `key=value`: a namespace with this label is a tenant. Empty: only --tenant-namespaces
    /// (and with both empty, every namespace: for development only).
    #[arg(long, env = "VEXA_TENANT_LABEL", default_value = "vexa.ai/tenant=true", value_parser = label)]
    pub tenant_label: String,
    /// Ceiling on a run's maximum lifetime (seconds): a Dispatch (or its runner's defaults)
    /// asking more is refused.
    #[arg(long, env = "VEXA_CEILING_MAX_LIFETIME_SECONDS")]
    pub ceiling_max_lifetime_seconds: Option<i64>,
    /// Ceiling on a run's idle timeout (seconds).
    #[arg(long, env = "VEXA_CEILING_IDLE_TIMEOUT_SECONDS")]
    pub ceiling_idle_timeout_seconds: Option<i64>,
    /// Ceiling on any CPU request or limit of a run's agent container. Empty: none.
    #[arg(long, env = "VEXA_CEILING_CPU", default_value = "", value_parser = quantity)]
    pub ceiling_cpu: String,
    /// Ceiling on any memory request or limit of a run's agent container. Empty: none.
    #[arg(long, env = "VEXA_CEILING_MEMORY", default_value = "", value_parser = quantity)]
    pub ceiling_memory: String,
    /// Folder of the audit log (`operator.jsonl`: every admission, refusal, token, identity and
    /// stop, hash-chained and signed). Required: a security product does not run unaudited.
    /// Put it on a volume that outlives the pod (the chart mounts a PersistentVolumeClaim).
    #[arg(long, env = "VEXA_AUDIT_DIR")]
    pub audit_dir: std::path::PathBuf,
    /// Records between two signed checkpoints of the audit log (one is also written on a clean
    /// shutdown).
    #[arg(long, env = "VEXA_AUDIT_CHECKPOINT_EVERY", default_value_t = vexa_audit::DEFAULT_CHECKPOINT_EVERY)]
    pub audit_checkpoint_every: u64,
    /// Seconds after which records not yet covered by a checkpoint are signed anyway.
    #[arg(long, env = "VEXA_AUDIT_CHECKPOINT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub audit_checkpoint_seconds: u64,
    /// The Secret (in `--namespace`) holding the key the MCP gateway signs its audit chain
    /// with; its public half is published with the operator's keys so `kubectl vexa audit
    /// verify` checks the gateway's checkpoints too. Empty: not published.
    #[arg(long, env = "VEXA_GATEWAY_AUDIT_KEY_SECRET", default_value = vexa_core::gateway::GATEWAY_AUDIT_KEY_SECRET)]
    pub gateway_audit_key_secret: String,
    /// The SPIRE server's admin socket. Set: every dispatch pod waits behind the scheduling gate
    /// `vexa.ai/identity` until the operator has registered its SPIFFE ID with SPIRE, and its
    /// worker gets the Workload API. Empty: no pod identity (no gate, no entries).
    #[arg(long, env = "VEXA_SPIRE_SERVER_SOCKET", default_value = "")]
    pub spire_server_socket: String,
    /// Base URL of the Keycloak server the MCP gateway exchanges tokens at (e.g.
    /// `http://10.88.0.1:8180`). Set: the operator makes the dispatch-token issuer an identity
    /// provider of the realm, mirrors each Identity's subject into a linked user, and checks
    /// Tools' audiences there. Empty: none of that.
    #[arg(long, env = "VEXA_KEYCLOAK_URL", default_value = "")]
    pub keycloak_url: String,
    /// The Keycloak realm the gateway exchanges tokens in.
    #[arg(long, env = "VEXA_KEYCLOAK_REALM", default_value = "vexa")]
    pub keycloak_realm: String,
    /// A Keycloak admin (master realm) the operator logs in as.
    #[arg(long, env = "VEXA_KEYCLOAK_ADMIN_USER", default_value = "admin")]
    pub keycloak_admin_user: String,
    /// A file holding that admin's password (a mounted Secret).
    #[arg(long, env = "VEXA_KEYCLOAK_ADMIN_PASSWORD_FILE", default_value = "")]
    pub keycloak_admin_password_file: String,
    /// Alias of the identity provider that stands for the dispatch-token issuer in the realm.
    #[arg(
        long,
        env = "VEXA_KEYCLOAK_ISSUER_ALIAS",
        default_value = "vexa-dispatch"
    )]
    pub keycloak_issuer_alias: String,
    /// Where Keycloak fetches the dispatch tokens' keys. Empty: the model gateway URL +
    /// `/.well-known/jwks.json`.
    #[arg(long, env = "VEXA_KEYCLOAK_JWKS_URL", default_value = "")]
    pub keycloak_jwks_url: String,
    /// The dispatch tokens' issuer (`iss`): what verifiers (the MCP gateway) expect.
    #[arg(long, env = "VEXA_TOKEN_ISSUER", default_value = "vexa-operator")]
    pub token_issuer: String,
    /// The dispatch tokens' audience (`aud`): the MCP gateway.
    #[arg(long, env = "VEXA_TOKEN_AUDIENCE", default_value = "vexa-gateway")]
    pub token_audience: String,
    /// Lifetime of a dispatch token in seconds (minutes, not hours: the operator mints the
    /// next one after two thirds of it while the run lasts; a grant may only shorten it).
    #[arg(long, env = "VEXA_TOKEN_LIFETIME_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(60..=3600))]
    pub token_lifetime_seconds: u64,
    /// Age after which the token signing key is replaced by a new one (the old one stays
    /// published until its last token has expired).
    #[arg(long, env = "VEXA_TOKEN_KEY_ROTATE_AFTER_SECONDS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub token_key_rotate_after_seconds: u64,
    /// The trust domain of the dispatch pods' SPIFFE IDs
    /// (`spiffe://<domain>/ns/<namespace>/dispatch/<name>`).
    #[arg(long, env = "VEXA_SPIRE_TRUST_DOMAIN", default_value = vexa_core::identity::DEFAULT_TRUST_DOMAIN)]
    pub spire_trust_domain: String,
    /// The MCP gateway's base URL as dispatch pods reach it (`https://…`, Envoy's mTLS
    /// listener). Empty: no gateway, and a dispatch's granted tools are not passed to its agent.
    /// Needs pod identity (--spire-server-socket): the worker reaches the gateway with its SVID.
    #[arg(long, env = "VEXA_MCP_GATEWAY_URL", default_value = "", value_parser = mcp_gateway_url)]
    pub mcp_gateway_url: String,
    /// The loopback port on which each dispatch's worker serves its agent's MCP endpoint.
    #[arg(long, env = "VEXA_MCP_PORT", default_value_t = vexa_core::pod::DEFAULT_MCP_PORT)]
    pub mcp_port: u16,
    /// Seconds between two probes of a Tool (its MCP server answers, its audience is known), so
    /// a tool that breaks shows on its status before a run needs it.
    #[arg(long, env = "VEXA_TOOL_PROBE_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
    pub tool_probe_interval_seconds: u64,
    /// Seconds between two reads of a live Transcript's stream.
    #[arg(long, env = "VEXA_TRANSCRIPT_POLL_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub transcript_poll_seconds: u64,
    /// The mailboxes of the email integration (see `vexa_operator::mail`): which mailbox an
    /// `email.received` trigger watches and which sends a subject's approved `send` Cards.
    /// Unset: no mailbox, so email triggers show `Ready=False` and send Cards wait.
    #[arg(long, env = "VEXA_MAIL_CONFIG")]
    pub mail_config: Option<std::path::PathBuf>,
    /// Seconds between two looks at a watched mailbox (with `--mail-idle`, new mail also wakes
    /// the watch at once; the poll is the fallback).
    #[arg(long, env = "VEXA_MAIL_POLL_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub mail_poll_seconds: u64,
    /// Keep an IMAP IDLE connection to each watched mailbox of `--mail-config`, so new mail
    /// starts its `email.received` runs within about a second rather than at the next poll.
    /// `false`: poll only.
    #[arg(long, env = "VEXA_MAIL_IDLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub mail_idle: bool,
    /// Seconds a Tool's probe (connect, TLS, answer; the audience lookup) may take.
    #[arg(long, env = "VEXA_TOOL_PROBE_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub tool_probe_timeout_seconds: u64,
    /// Test only: let a Schedule's `vexa.ai/test-cron-seconds` annotation (a six-field cron
    /// expression with seconds) replace `spec.schedule`, so cluster evals can fire every few
    /// seconds. Off in production; the chart has no setting for it.
    #[arg(long, env = "VEXA_SCHEDULE_SECONDS_FIELD", default_value_t = false)]
    pub schedule_seconds_field: bool,
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "VEXA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Redis as the operator reaches it, authenticated as its admin user when one is set.
    pub fn admin_redis_client(&self) -> anyhow::Result<redis::Client> {
        let url = self
            .operator_redis_url
            .as_deref()
            .unwrap_or(&self.redis_url);
        if self.redis_admin_password_file.is_empty() {
            return Ok(redis::Client::open(url)?);
        }
        let password = std::fs::read_to_string(&self.redis_admin_password_file).map_err(|e| {
            anyhow::anyhow!(
                "the Redis admin password file {} cannot be read: {e}",
                self.redis_admin_password_file
            )
        })?;
        let username = if self.redis_admin_username.is_empty() {
            "default"
        } else {
            &self.redis_admin_username
        };
        Ok(vexa_stream::acl::client_as(url, username, password.trim())?)
    }

    /// The dispatches' Redis users, unless turned off. Their passwords derive from the admin
    /// password when there is one, else from a key made at startup (a start retried after a
    /// restart then gets a new password, written to both the user and the Secret).
    pub fn redis_users(&self) -> anyhow::Result<Option<crate::redis_users::RedisUsers>> {
        if !self.redis_dispatch_users {
            return Ok(None);
        }
        let client = self.admin_redis_client()?;
        let key = match client.get_connection_info().redis_settings().password() {
            Some(p) => p.as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| anyhow::anyhow!("no randomness for the Redis users' key: {e}"))?;
                key
            }
        };
        let retention = (self.stream_retention_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.stream_retention_seconds));
        Ok(Some(crate::redis_users::RedisUsers::new(
            client, key, retention,
        )))
    }

    /// Keycloak's settings, when `--keycloak-url` is set (the admin password read from its file).
    pub fn keycloak(&self) -> anyhow::Result<Option<crate::runtime::keycloak::Settings>> {
        if self.keycloak_url.is_empty() {
            return Ok(None);
        }
        if self.keycloak_admin_password_file.is_empty() {
            anyhow::bail!(
                "--keycloak-url is set but --keycloak-admin-password-file \
                 (VEXA_KEYCLOAK_ADMIN_PASSWORD_FILE) is not: the operator must log in to Keycloak"
            );
        }
        let password = std::fs::read_to_string(&self.keycloak_admin_password_file)
            .map_err(|e| {
                anyhow::anyhow!(
                    "reading the Keycloak admin password from {}: {e}",
                    self.keycloak_admin_password_file
                )
            })?
            .trim()
            .to_owned();
        let jwks_url = if self.keycloak_jwks_url.is_empty() {
            format!(
                "{}/.well-known/jwks.json",
                self.model_gateway_url.trim_end_matches('/')
            )
        } else {
            self.keycloak_jwks_url.clone()
        };
        Ok(Some(crate::runtime::keycloak::Settings {
            url: self.keycloak_url.clone(),
            realm: self.keycloak_realm.clone(),
            admin_user: self.keycloak_admin_user.clone(),
            admin_password: password,
            issuer_alias: self.keycloak_issuer_alias.clone(),
            issuer: self.token_issuer.clone(),
            jwks_url,
        }))
    }

    /// Where SPIRE is, when pod identity is on (`--spire-server-socket`).
    pub fn spire(&self) -> Option<crate::controllers::identity::Spire> {
        (!self.spire_server_socket.is_empty()).then(|| crate::controllers::identity::Spire {
            client: vexa_spire::EntryClient::new(&self.spire_server_socket),
            trust_domain: self.spire_trust_domain.clone(),
        })
    }

    /// The streams API's settings, when its certificate is configured.
    pub fn streams(&self) -> anyhow::Result<Option<crate::streams::Settings>> {
        if self.streams_tls_cert.is_empty() {
            return Ok(None);
        }
        Ok(Some(crate::streams::Settings {
            addr: self.streams_addr,
            cert: self.streams_tls_cert.clone(),
            key: self.streams_tls_key.clone(),
            redis: self.admin_redis_client()?,
            audit: crate::streams::audit::AuditSource::new(self.audit_dir.clone())
                .with_gateway_keys(&self.namespace, &self.gateway_audit_key_secret),
            reader_image: self.workspace_init_image.clone(),
        }))
    }
}

/// How log lines are written.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A label `key=value`, or empty.
fn label(v: &str) -> Result<String, String> {
    match v.split_once('=') {
        None if v.is_empty() => Ok(String::new()),
        Some((k, _)) if !k.is_empty() => Ok(v.to_owned()),
        _ => Err(format!(
            "{v:?} is not a label key=value (e.g. vexa.ai/tenant=true)"
        )),
    }
}

/// A Kubernetes quantity (`100m`, `256Mi`, `2Gi`, `0.5`), or empty for none; checked when the
/// operator starts, so a typo fails there and not at every Job.
fn quantity(v: &str) -> Result<String, String> {
    let v = v.trim();
    let (number, suffix) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let number_ok = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    );
    if v.is_empty() || (number_ok && suffix_ok) {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not a Kubernetes quantity (e.g. 100m, 256Mi, 2Gi)"
        ))
    }
}

/// An MCP gateway URL: empty, or `https://` with a host (the worker speaks only mutual TLS to it).
fn mcp_gateway_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Ok(String::new());
    }
    match s.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.contains(['/', '?', '#']) => Ok(s.to_owned()),
        _ => Err(format!(
            "{s:?} is not an https://host[:port] URL: dispatch pods reach the MCP gateway only over mutual TLS"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{mcp_gateway_url, quantity};

    #[test]
    fn the_mcp_gateway_is_reached_only_over_tls() {
        assert_eq!(mcp_gateway_url("").unwrap(), "");
        assert_eq!(
            mcp_gateway_url("https://gw.vexa-system.svc:8443/").unwrap(),
            "https://gw.vexa-system.svc:8443"
        );
        for bad in ["http://gw:8443", "https://", "https://gw/tools", "gw:8443"] {
            let e = mcp_gateway_url(bad).unwrap_err();
            assert!(e.contains("mutual TLS"), "{bad}: {e}");
        }
    }

    #[test]
    fn quantities_are_checked_at_startup() {
        for ok in ["100m", "256Mi", "2Gi", "0.5", "1", ""] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["2 GB", "Gi", "1.2.3", "-1", "1gb", "lots"] {
            let e = quantity(bad).unwrap_err();
            assert!(e.contains("not a Kubernetes quantity"), "{bad}: {e}");
        }
    }
}
