//! Where things are in a dispatch's pod: its two containers and the trusted files. The operator
//! builds the pod from these names and the worker, the shim and the evals find things by them.
//!
//! A pod has two sides. The **worker** container is trusted: it holds the dispatch's
//! credentials (the per-dispatch Secret, mounted only there), talks to Redis, commits, and
//! serves the agent's model requests on loopback. The **agent** container runs only the agent
//! CLI under `vexa-agent-shim`; it holds no credential and shares no process namespace with the
//! worker. The two meet only in the workspaces and in [`AGENT_SOCKET_DIR`].
//!
//! The worker is a native sidecar (an init container with `restartPolicy: Always`) whose
//! startup probe (`vexa-agent-worker ready`, every second) passes only once the worker is ready
//! (it holds the pod's SVID when the contract asks for one, or it has already decided that the
//! run failed): the kubelet starts the agent container only then. The run's end comes from the
//! worker: it writes its termination message, tells the shim to exit with the outcome's exit
//! code, then waits for the kubelet's SIGTERM and exits. A worker the kubelet restarted finds
//! its `started` marker in [`WORKER_STATE_DIR`] and never runs the dispatch a second time. (The
//! operator sets `VEXA_SIDECAR=true` on the worker for all of this; a worker without it, run by
//! hand or in a pod an older operator made, simply exits when the run ends.)

/// Name of the trusted container (the agent worker).
pub const WORKER_CONTAINER: &str = "worker";
/// Name of the untrusted container (the agent CLI, under the shim).
pub const AGENT_CONTAINER: &str = "agent";
/// The worker's entrypoint in the worker image.
pub const WORKER_COMMAND: &str = "vexa-agent-worker";
/// The shim's entrypoint, which every runner image carries.
pub const SHIM_COMMAND: &str = "vexa-agent-shim";
/// Where the per-dispatch Secret is mounted, read-only and only in the worker container.
pub const DISPATCH_SECRET_DIR: &str = "/var/run/vexa/dispatch";
/// The folder (an emptyDir shared by both containers) holding the shim's socket.
pub const AGENT_SOCKET_DIR: &str = "/var/run/vexa/agent";
/// The agent CLI's configuration folder (`CLAUDE_CONFIG_DIR`): an emptyDir of the pod that
/// both containers see, so nothing the CLI (or an agent) keeps there reaches a later run. The
/// worker copies only a resumed session's transcript in and out (never settings or hooks).
pub const AGENT_CONFIG_DIR: &str = "/var/run/vexa/agent-config";
/// The worker's own folder (an emptyDir only the worker mounts; it outlives a restart of the
/// worker container, not the pod): the `started` marker and the `ready` file the startup probe
/// checks (`vexa_agent_worker::sidecar`).
pub const WORKER_STATE_DIR: &str = "/var/run/vexa/worker";
/// The argument of the worker's command that the startup probe runs (exit 0 once ready).
pub const READY_SUBCOMMAND: &str = "ready";
/// The exit code of a shim whose worker hung up without saying how the run ended (it
/// crashed or was killed): never a success.
pub const SHIM_WORKER_GONE_EXIT: u8 = 70;
/// The shim's socket inside [`AGENT_SOCKET_DIR`].
pub const AGENT_SOCKET: &str = "/var/run/vexa/agent/shim.sock";

/// Where the worker container sees the SPIRE agent's Workload API socket folder (the socket is
/// `api.sock` in it). Mounted into the worker container only: the agent container of the same
/// pod never sees it, and SPIRE's entry selects `k8s:container-name:worker` as well.
pub const WORKLOAD_API_DIR: &str = "/run/spire/agent";
/// The Workload API socket inside [`WORKLOAD_API_DIR`], as the worker reaches it.
pub const WORKLOAD_API_SOCKET: &str = "/run/spire/agent/api.sock";
/// The CSI driver (`vexa-csi-node`, crate `csi/`) that puts the node's Workload API socket folder
/// into a pod, as an inline ephemeral volume `csi: {driver: csi.vexa.ai, readOnly: true}`.
///
/// Not `hostPath`: tenant namespaces enforce Pod Security `restricted`, which refuses `hostPath`
/// volumes (rightly: a hostPath names any folder of the node). A `csi` inline volume is allowed
/// under `restricted`; the driver decides what it mounts (always the one configured folder,
/// read-only), never the pod.
pub const WORKLOAD_API_CSI_DRIVER: &str = "csi.vexa.ai";

/// Keys of the per-dispatch Secret (each one a file in [`DISPATCH_SECRET_DIR`]).
pub mod secret_key {
    /// The dispatch's Redis ACL user.
    pub const REDIS_USERNAME: &str = "redis-username";
    /// That user's password.
    pub const REDIS_PASSWORD: &str = "redis-password";
    /// The dispatch's credential at the operator's model gateway.
    pub const MODEL_TOKEN: &str = "model-token";
    /// The dispatch token (a signed JWT), for the gateway.
    pub const DISPATCH_TOKEN: &str = "dispatch-token";
}
