//! The test agent's network steps (`connect HOST:PORT`, `resolve NAME`): what a prompt-injected
//! agent tries first to get past its pod's walls. Each says plainly what happened, so a test
//! can tell an open path (`connected`) from a closed one (refused, timed out, unreachable).

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a connection attempt may take: a dropped SYN is retried by the kernel for minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Tries one TCP connection to `target` (`HOST:PORT`, a name is resolved first) and says how it
/// went: `connect T: connected to ADDR`, or `connect T: failed (WHY)`.
pub fn connect(target: &str) -> String {
    let addrs = match resolve_all(target) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return format!("connect {target}: failed (no address)"),
        Err(e) => return format!("connect {target}: failed (cannot resolve: {e})"),
    };
    // The first address, as most clients use; a name with several is tried in order.
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return format!("connect {target}: connected to {addr}"),
            Err(e) => last = outcome(&e),
        }
    }
    format!("connect {target}: failed ({last})")
}

/// Looks `name` up with the system resolver (the pod's resolv.conf) and says the addresses, or
/// why there are none: `resolve N: A, B` or `resolve N: failed (WHY)`.
pub fn resolve(name: &str) -> String {
    // getaddrinfo wants a port; it is not used.
    match resolve_all(&format!("{name}:0")) {
        Ok(addrs) if !addrs.is_empty() => {
            let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            format!("resolve {name}: {}", ips.join(", "))
        }
        Ok(_) => format!("resolve {name}: failed (no address)"),
        Err(e) => format!("resolve {name}: failed ({e})"),
    }
}

fn resolve_all(target: &str) -> io::Result<Vec<SocketAddr>> {
    Ok(target.to_socket_addrs()?.collect())
}

/// A connection error in the words a test matches on.
fn outcome(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "unreachable".to_owned()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_listener_is_connected_and_a_closed_port_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(
            connect(&addr.to_string()),
            format!("connect {addr}: connected to {addr}")
        );
        drop(listener);
        assert_eq!(
            connect(&addr.to_string()),
            format!("connect {addr}: failed (refused)")
        );
    }

    // Only literals and /etc/hosts: a unit test sends no DNS query anywhere.
    #[test]
    fn names_are_resolved_and_bad_targets_say_why() {
        assert_eq!(resolve("127.0.0.1"), "resolve 127.0.0.1: 127.0.0.1");
        assert!(resolve("localhost").contains("127.0.0.1"));
        assert!(connect("no-port").starts_with("connect no-port: failed (cannot resolve"));
    }
}
