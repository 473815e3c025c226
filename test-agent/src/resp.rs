//! The `redis` step: one command sent to a Redis server as raw RESP over TCP (the agent's
//! container has no Redis client; a prompt-injected agent with a shell would do the same with
//! `nc`). The reply is summarised, never parsed: it is what the server said.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long connecting and reading may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a reply kept.
const MAX_REPLY: usize = 4096;
/// The most of a reply shown.
const SHOWN: usize = 300;

/// `args` (command first) as a RESP array of bulk strings.
pub fn encode(args: &[String]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends one command to `addr` (`host:port`) and returns the start of the reply, with line ends
/// shown as `\r\n`.
pub fn send(addr: &str, args: &[String]) -> io::Result<String> {
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no address for {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(&encode(args))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                // A one-line reply (status, error, integer) is complete at its line end.
                let one_line = matches!(reply.first(), Some(b'+' | b'-' | b':'));
                if (one_line && reply.ends_with(b"\r\n")) || reply.len() >= MAX_REPLY {
                    break;
                }
            }
            Err(e) if reply.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&reply)
        .replace('\r', "\\r")
        .replace('\n', "\\n");
    Ok(text.chars().take(SHOWN).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let args = ["XADD", "unit:a:in", "*", "turn", "{\"prompt\":\"x y\"}"].map(String::from);
        assert_eq!(
            encode(&args),
            b"*5\r\n$4\r\nXADD\r\n$9\r\nunit:a:in\r\n$1\r\n*\r\n$4\r\nturn\r\n$16\r\n{\"prompt\":\"x y\"}\r\n"
        );
    }
}
