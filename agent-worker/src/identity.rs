//! The pod's workload identity (SPEC §5.3): before the agent may start, the worker obtains its
//! X.509 SVID from the SPIRE agent's Workload API (a socket mounted only into the worker) and
//! checks that it names the SPIFFE ID the operator registered for this dispatch
//! (`VEXA_SPIFFE`). The SVID stays in memory, rotated by the [`X509Source`] in the background,
//! for the worker's mTLS to the gateway; it is never written to a file the agent could read.

use std::time::{Duration, Instant};

use spiffe::X509Source;
use tokio::sync::watch;
use vexa_core::pod::SpiffeAccess;

/// How long the worker waits for its SVID when nothing else is set.
pub const DEFAULT_SVID_TIMEOUT: Duration = Duration::from_secs(60);

/// The identity the worker holds.
#[derive(Debug)]
pub struct Identity {
    /// Keeps the SVID current (rotation) for as long as the worker lives.
    pub source: X509Source,
    /// The SPIFFE ID it holds.
    pub spiffe_id: String,
    /// When it was obtained (RFC 3339, UTC, milliseconds).
    pub obtained_at: String,
    /// How long the worker waited for it.
    pub waited: Duration,
}

impl Identity {
    /// The note the run's stream carries at `t0`.
    pub fn note(&self) -> String {
        format!(
            "workload identity: the worker holds the X.509 SVID of {} since {} (waited {} ms)",
            self.spiffe_id,
            self.obtained_at,
            self.waited.as_millis()
        )
    }
}

/// The Workload API address of a socket path (`unix:` plus the path); an address stays as is.
pub fn endpoint(socket: &str) -> String {
    if socket.starts_with('/') {
        format!("unix:{socket}")
    } else {
        socket.to_owned()
    }
}

/// The SPIFFE ID the SVID must carry, or why the run cannot go on with `got`.
pub fn check_id(expected: &str, got: &str) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!(
            "the Workload API gave this pod the SVID of {got}, not {expected} as the dispatch says: the SPIRE entries do not match this pod; the run does not start"
        ))
    }
}

/// Obtains the SVID `access` names, within `timeout`; gives up at SIGTERM.
pub async fn obtain(
    access: &SpiffeAccess,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Identity, String> {
    let began = Instant::now();
    let endpoint = endpoint(&access.socket);
    tracing::info!(%endpoint, expected = %access.spiffe_id, "fetching the pod's X.509 SVID");
    let building = X509Source::builder()
        .endpoint(&endpoint)
        .initial_sync_timeout(timeout)
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2))
        .build();
    let source = tokio::select! {
        built = tokio::time::timeout(timeout + Duration::from_secs(1), building) => match built {
            Ok(Ok(source)) => source,
            Ok(Err(e)) => return Err(no_svid(&access.spiffe_id, &endpoint, timeout, &e.to_string())),
            Err(_) => return Err(no_svid(&access.spiffe_id, &endpoint, timeout, "timed out")),
        },
        _ = shutdown.wait_for(|stop| *stop) => return Err("stopped by SIGTERM while waiting for the pod's SVID".into()),
    };
    let svid = source
        .svid()
        .map_err(|e| no_svid(&access.spiffe_id, &endpoint, timeout, &e.to_string()))?;
    let got = svid.spiffe_id().to_string();
    if let Err(why) = check_id(&access.spiffe_id, &got) {
        source.shutdown().await;
        return Err(why);
    }
    let identity = Identity {
        source,
        spiffe_id: got,
        obtained_at: crate::sidecar::now_utc(),
        waited: began.elapsed(),
    };
    tracing::info!(
        spiffe_id = %identity.spiffe_id,
        obtained_at = %identity.obtained_at,
        waited_ms = identity.waited.as_millis() as u64,
        "the worker holds the pod's X.509 SVID"
    );
    Ok(identity)
}

fn no_svid(expected: &str, endpoint: &str, timeout: Duration, why: &str) -> String {
    format!(
        "no X.509 SVID for {expected} from the Workload API at {endpoint} within {} s ({why}): is the SPIRE agent running on this node and the pod's entry registered? The run does not start without its identity",
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_becomes_a_unix_address() {
        assert_eq!(
            endpoint("/run/spire/agent/api.sock"),
            "unix:/run/spire/agent/api.sock"
        );
        assert_eq!(endpoint("unix:///x.sock"), "unix:///x.sock");
    }

    #[test]
    fn another_identity_is_refused_naming_both() {
        let want = "spiffe://vexa.local/ns/a/dispatch/d";
        assert!(check_id(want, want).is_ok());
        let err = check_id(want, "spiffe://vexa.local/ns/b/dispatch/d").unwrap_err();
        assert!(
            err.contains(want) && err.contains("spiffe://vexa.local/ns/b/dispatch/d"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_workload_api_fails_within_the_timeout_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("vexa-no-spire-{}", std::process::id()));
        let access = SpiffeAccess {
            spiffe_id: "spiffe://vexa.local/ns/a/dispatch/d".into(),
            socket: dir.join("api.sock").display().to_string(),
        };
        let (_tx, rx) = watch::channel(false);
        let began = Instant::now();
        let err = obtain(&access, Duration::from_secs(1), rx)
            .await
            .expect_err("no SPIRE agent here");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        assert!(
            err.contains("no X.509 SVID for spiffe://vexa.local/ns/a/dispatch/d"),
            "{err}"
        );
    }
}
