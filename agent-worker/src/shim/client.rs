//! The worker's side of the boundary: [`Shim`] is the connection to the agent container's shim,
//! [`ShimAgent`] runs one turn's agent through it, [`ShimStop`] stops it from another task.
//!
//! Everything the shim sends is untrusted (the agent shares its container and could replace
//! it): output lines are cut at [`MAX_LINE`] and a peer that breaks the protocol fails the turn.

use std::io::{self, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::frame::{Frame, PROTOCOL_VERSION, RunRequest};
use crate::turn::{AgentProcess, Output};

/// The longest line of agent output passed on (1 MiB); a longer line is discarded as it streams
/// (never held whole) and becomes a note naming its length.
pub const MAX_LINE: usize = 1 << 20;
/// How often a connect is retried while the agent container starts.
const CONNECT_POLL: Duration = Duration::from_millis(20);

type Writer = Arc<Mutex<BufWriter<UnixStream>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection to the shim.
#[derive(Debug, Clone)]
pub struct Shim {
    reader: Arc<Mutex<UnixStream>>,
    writer: Writer,
}

impl Shim {
    /// Connects to the shim's socket, retrying until `timeout` while the agent container starts,
    /// and checks the protocol version it announces.
    pub fn connect(socket: &Path, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!(error = %e, "the shim is not listening yet");
                    std::thread::sleep(CONNECT_POLL);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the agent container's shim did not answer on {} within {timeout:?} ({e}): check that the agent container started and that the runner image carries vexa-agent-shim",
                            socket.display()
                        ),
                    ));
                }
            }
        };
        Self::over(stream)
    }

    /// The shim at the other end of `stream`, once it has greeted with a matching version.
    pub fn over(stream: UnixStream) -> io::Result<Self> {
        let mut reader = stream.try_clone()?;
        match Frame::read_from(&mut reader)? {
            Some(Frame::Hello { version }) if version == PROTOCOL_VERSION => {}
            Some(Frame::Hello { version }) => {
                return Err(io::Error::other(format!(
                    "the agent container's shim speaks protocol {version}, this worker {PROTOCOL_VERSION}: use matching images"
                )));
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the shim did not greet with its version but sent {other:?}"),
                ));
            }
        }
        Ok(Self {
            reader: Arc::new(Mutex::new(reader)),
            writer: Arc::new(Mutex::new(BufWriter::new(stream))),
        })
    }

    fn send(&self, frame: &Frame) -> io::Result<()> {
        frame.write_to(&mut *lock(&self.writer))
    }

    /// Tells the shim the run is over: it kills whatever still runs and exits with `code`.
    pub fn finish(&self, code: u8) -> io::Result<()> {
        self.send(&Frame::Finish { code })
    }
}

/// Stops the agent that runs through the shim, and any run asked for after the stop.
#[derive(Debug, Clone, Default)]
pub struct ShimStop(Arc<Mutex<StopState>>);

#[derive(Debug, Default)]
struct StopState {
    stopping: bool,
    /// The shim's connection while a run is in flight.
    running: Option<Shim>,
}

impl ShimStop {
    fn state(&self) -> MutexGuard<'_, StopState> {
        lock(&self.0)
    }

    fn signal(&self, frame: &Frame) -> bool {
        let mut state = self.state();
        state.stopping = true;
        match &state.running {
            Some(shim) => match shim.send(frame) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "could not signal the agent through the shim");
                    false
                }
            },
            None => false,
        }
    }

    /// Asks the agent to stop (SIGTERM to its process group). Returns whether a run was in
    /// flight.
    pub fn terminate(&self) -> bool {
        self.signal(&Frame::Terminate)
    }

    /// Kills the agent's process group. Returns whether a run was in flight.
    pub fn kill(&self) -> bool {
        self.signal(&Frame::Kill)
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.state().stopping
    }

    fn begin(&self, shim: &Shim, request: RunRequest) -> io::Result<()> {
        let mut state = self.state();
        if state.stopping {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the run is stopping; the agent was not started",
            ));
        }
        shim.send(&Frame::Run(request))?;
        state.running = Some(shim.clone());
        Ok(())
    }

    fn end(&self) {
        self.state().running = None;
    }
}

/// One turn's agent, run in the agent container through the shim.
#[derive(Debug, Clone)]
pub struct ShimAgent {
    /// The connection.
    pub shim: Shim,
    /// The working directory (the primary workspace).
    pub cwd: PathBuf,
    /// Variables set for the agent on top of its container's environment.
    pub env: Vec<(String, String)>,
    /// Stops it.
    pub stop: ShimStop,
}

impl AgentProcess for ShimAgent {
    fn run(
        &mut self,
        argv: &[String],
        on_line: &mut dyn FnMut(Output<'_>),
    ) -> io::Result<Option<i32>> {
        if argv.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        }
        self.stop.begin(
            &self.shim,
            RunRequest {
                argv: argv.to_vec(),
                cwd: self.cwd.clone(),
                env: self.env.clone(),
            },
        )?;
        let result = self.follow(on_line);
        self.stop.end();
        result
    }
}

impl ShimAgent {
    fn follow(&self, on_line: &mut dyn FnMut(Output<'_>)) -> io::Result<Option<i32>> {
        let mut reader = lock(&self.shim.reader);
        let mut lines = Lines::default();
        loop {
            match Frame::read_from(&mut *reader)? {
                Some(Frame::Stdout(chunk)) => lines.push(&chunk, on_line),
                Some(Frame::Exit(report)) => {
                    lines.finish(on_line);
                    return match report.error {
                        Some(e) => Err(e.into_io()),
                        None => Ok(report.code),
                    };
                }
                Some(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the shim sent {other:?} during a run"),
                    ));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the agent container closed the connection mid-turn (it exited or was killed)",
                    ));
                }
            }
        }
    }
}

/// Splits output chunks into lines, cutting each at [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct Lines {
    buf: Vec<u8>,
    /// Bytes of the current line dropped past the cap.
    dropped: usize,
}

impl Lines {
    fn push(&mut self, mut chunk: &[u8], on_line: &mut dyn FnMut(Output<'_>)) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..end]);
            self.emit(on_line);
            chunk = &chunk[end + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.buf.len());
        let keep = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..keep]);
        self.dropped += bytes.len() - keep;
    }

    fn emit(&mut self, on_line: &mut dyn FnMut(Output<'_>)) {
        if self.dropped > 0 {
            let bytes = self.buf.len() + self.dropped;
            tracing::warn!(
                bytes,
                "an agent output line was over {MAX_LINE} bytes; it was discarded"
            );
            on_line(Output::Cut {
                bytes,
                cap: MAX_LINE,
            });
        } else {
            // Lines are read as bytes so one invalid UTF-8 sequence cannot end the stream.
            let line = String::from_utf8_lossy(&self.buf);
            on_line(Output::Line(line.trim_end_matches('\r')));
        }
        self.buf.clear();
        self.dropped = 0;
    }

    fn finish(&mut self, on_line: &mut dyn FnMut(Output<'_>)) {
        if !self.buf.is_empty() || self.dropped > 0 {
            self.emit(on_line);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut record = |o: Output<'_>| {
            out.push(match o {
                Output::Line(l) => l.to_owned(),
                Output::Cut { bytes, cap } => format!("<cut {bytes} over {cap}>"),
            })
        };
        for c in chunks {
            lines.push(c, &mut record);
        }
        lines.finish(&mut record);
        out
    }

    #[test]
    fn lines_are_joined_across_chunks_and_invalid_bytes_survive() {
        assert_eq!(
            split(&[b"a\r", b"\nb", b"c\n\xff\n", b"tail"]),
            ["a", "bc", "\u{fffd}", "tail"]
        );
    }

    #[test]
    fn a_line_over_the_cap_is_cut_and_the_next_one_kept() {
        let big = vec![b'x'; MAX_LINE + 10];
        let out = split(&[b"before\n", &big, b"\nafter\n"]);
        assert_eq!(
            out,
            [
                "before",
                &format!("<cut {} over {MAX_LINE}>", MAX_LINE + 10),
                "after"
            ]
        );
    }

    #[test]
    fn a_long_line_is_never_held_past_the_cap() {
        let mut lines = Lines::default();
        let chunk = vec![b'y'; 64 * 1024];
        let mut seen = Vec::new();
        // 100 MB without a line end.
        for _ in 0..1600 {
            lines.push(&chunk, &mut |o| seen.push(format!("{o:?}")));
            assert!(
                lines.buf.capacity() <= 2 * MAX_LINE,
                "{}",
                lines.buf.capacity()
            );
        }
        lines.finish(&mut |o| seen.push(format!("{o:?}")));
        assert_eq!(
            seen,
            [format!(
                "Cut {{ bytes: {}, cap: {MAX_LINE} }}",
                1600 * 64 * 1024
            )]
        );
    }
}
