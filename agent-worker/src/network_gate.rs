//! The agent runs only once the pod's network policy is in force.
//!
//! Some network plugins (kube-router among them) bind a new pod to its NetworkPolicies only
//! after they have seen its address, a moment after its containers start: an agent that
//! connects at once gets through. The worker and the agent share the pod's network, so the
//! worker can tell: while the API server (which the policies deny) still answers it, the
//! policy is not in force yet. The worker waits for that before it starts the agent, and fails
//! the run if the policy never comes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How long one probe may take to connect: a denied connection is dropped, so it never
/// completes; an allowed one to the API server completes in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// The pause between two probes that got through.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// Waits until a TCP connection to `denied` (an address the pod's policy denies) no longer
/// succeeds, at most `within`; returns how long that took.
pub async fn await_policy(denied: SocketAddr, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut probes = 0u32;
    loop {
        probes += 1;
        match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(denied)).await {
            Ok(Ok(_open)) => {}
            // Refused, unreachable or dropped: the policy (or nothing at all) is in the way.
            Ok(Err(_)) | Err(_) => return Ok(start.elapsed()),
        }
        if start.elapsed() >= within {
            return Err(format!(
                "the pod's network policy was not in force after {}s ({probes} probes): {denied} \
                 (the API server) still answered, so the agent was not started; check that a \
                 NetworkPolicy selects this namespace's dispatch pods and that the cluster's \
                 network plugin enforces it, or turn the operator's --await-network-policy-seconds off",
                within.as_secs()
            ));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// The API server's address as every pod's environment gives it (`KUBERNETES_SERVICE_HOST`,
/// `KUBERNETES_SERVICE_PORT`).
pub fn api_server(get: impl Fn(&str) -> Option<String>) -> Result<SocketAddr, String> {
    let host = get("KUBERNETES_SERVICE_HOST")
        .ok_or("KUBERNETES_SERVICE_HOST is not set: the worker cannot check the network policy")?;
    let port = get("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = host
        .parse()
        .map_err(|_| format!("KUBERNETES_SERVICE_HOST {host:?} is not an IP address"))?;
    let port = port
        .parse()
        .map_err(|_| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_address_nobody_answers_on_passes_at_once() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let waited = await_policy(addr, Duration::from_secs(5)).await.unwrap();
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test]
    async fn an_address_that_keeps_answering_fails_the_run_with_the_reason() {
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = open.local_addr().unwrap();
        let err = await_policy(addr, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            err.contains("not in force") && err.contains(&addr.to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_policy_arrives() {
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = open.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(open);
        });
        let waited = await_policy(addr, Duration::from_secs(10)).await.unwrap();
        closer.await.unwrap();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn the_api_server_comes_from_the_pods_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            api_server(env(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443")
            ]))
            .unwrap(),
            "10.96.0.1:443".parse().unwrap()
        );
        assert_eq!(
            api_server(env(&[("KUBERNETES_SERVICE_HOST", "fd00::1")])).unwrap(),
            "[fd00::1]:443".parse().unwrap()
        );
        assert!(api_server(env(&[])).unwrap_err().contains("not set"));
        assert!(
            api_server(env(&[("KUBERNETES_SERVICE_HOST", "kubernetes")]))
                .unwrap_err()
                .contains("not an IP")
        );
    }
}
