//! The shim protocol's frames: one tag byte, a 4-byte big-endian length, the payload.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocol version the shim announces and the worker requires. [`Frame::Finish`] came
/// later without a new version: a shim that does not know it reads it as a broken connection
/// and exits as it always did, so images of both ages still work together.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest payload either side accepts. Output comes in chunks far below it.
pub const MAX_FRAME: usize = 1 << 20;
/// The size of the output chunks the shim sends.
pub const CHUNK: usize = 64 * 1024;

/// What the worker asks the shim to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Program and arguments, passed to `execve` as they are (no shell).
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Variables set on top of the agent container's own environment.
    pub env: Vec<(String, String)>,
}

/// How a run ended, as the shim reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// The exit code; `None` when a signal ended the agent or it never started.
    pub code: Option<i32>,
    /// Why the agent could not be started or followed, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
}

/// A run that failed before or while the agent ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// The `std::io::ErrorKind` it maps to, by name (`NotFound`, `Interrupted`, `Other`).
    pub kind: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl RunError {
    /// The error as the worker's `io::Error`.
    pub fn into_io(self) -> io::Error {
        let kind = match self.kind.as_str() {
            "NotFound" => io::ErrorKind::NotFound,
            "Interrupted" => io::ErrorKind::Interrupted,
            "InvalidInput" => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.message)
    }

    /// The shim's report of `e`.
    pub fn from_io(e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => "NotFound",
            io::ErrorKind::Interrupted => "Interrupted",
            io::ErrorKind::InvalidInput => "InvalidInput",
            _ => "Other",
        };
        Self {
            kind: kind.into(),
            message: e.to_string(),
        }
    }
}

/// One message across the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Shim → worker, first: the protocol version.
    Hello {
        /// [`PROTOCOL_VERSION`] of the shim.
        version: u32,
    },
    /// Worker → shim: start the agent.
    Run(RunRequest),
    /// Worker → shim: SIGTERM to the running agent's process group; no later run starts.
    Terminate,
    /// Worker → shim: SIGKILL to the running agent's process group; no later run starts.
    Kill,
    /// Worker → shim: the run is over; kill whatever still runs and exit with this code (the
    /// outcome's, so the Job's view agrees with the worker's report).
    Finish {
        /// The agent container's exit code.
        code: u8,
    },
    /// Shim → worker: a chunk of the agent's standard output.
    Stdout(Vec<u8>),
    /// Shim → worker: the run is over.
    Exit(ExitReport),
}

const HELLO: u8 = b'H';
const RUN: u8 = b'R';
const TERMINATE: u8 = b'T';
const KILL: u8 = b'K';
const FINISH: u8 = b'F';
const STDOUT: u8 = b'O';
const EXIT: u8 = b'X';

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

fn parse<T: for<'de> Deserialize<'de>>(tag: u8, payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("a malformed {:?} frame: {e}", char::from(tag))))
}

impl Frame {
    /// Writes the frame (one `write_all`, so frames from two threads never interleave when the
    /// writer is shared behind a lock).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let (tag, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Hello { version } => (HELLO, json(version)?.into()),
            Frame::Run(r) => (RUN, json(r)?.into()),
            Frame::Terminate => (TERMINATE, (&[][..]).into()),
            Frame::Kill => (KILL, (&[][..]).into()),
            Frame::Finish { code } => (FINISH, json(code)?.into()),
            Frame::Stdout(bytes) => (STDOUT, bytes.as_slice().into()),
            Frame::Exit(e) => (EXIT, json(e)?.into()),
        };
        if payload.len() > MAX_FRAME {
            return Err(invalid(format!(
                "a frame of {} bytes is over the {MAX_FRAME}-byte limit",
                payload.len()
            )));
        }
        let len = u32::try_from(payload.len()).map_err(|_| invalid("frame too long"))?;
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.push(tag);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&payload);
        w.write_all(&buf)?;
        w.flush()
    }

    /// Reads one frame; `None` when the peer closed the connection between frames.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            match r.read(&mut head[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let tag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!(
                "the peer sent a frame of {len} bytes, over the {MAX_FRAME}-byte limit"
            )));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        let empty = |f: Frame| {
            if payload.is_empty() {
                Ok(f)
            } else {
                Err(invalid("a signal frame carries no payload"))
            }
        };
        let frame = match tag {
            HELLO => Frame::Hello {
                version: parse(tag, &payload)?,
            },
            RUN => Frame::Run(parse(tag, &payload)?),
            TERMINATE => empty(Frame::Terminate)?,
            KILL => empty(Frame::Kill)?,
            FINISH => Frame::Finish {
                code: parse(tag, &payload)?,
            },
            STDOUT => Frame::Stdout(payload),
            EXIT => Frame::Exit(parse(tag, &payload)?),
            other => return Err(invalid(format!("an unknown frame tag {other:#04x}"))),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Frame::Hello { version: 1 })]
    #[case(Frame::Run(RunRequest { argv: vec!["a".into(), "--x; rm -rf /".into()], cwd: "/w".into(), env: vec![("K".into(), "v".into())] }))]
    #[case(Frame::Terminate)]
    #[case(Frame::Kill)]
    #[case(Frame::Finish { code: 143 })]
    #[case(Frame::Stdout(vec![0, 255, b'\n']))]
    #[case(Frame::Exit(ExitReport { code: Some(3), error: None }))]
    #[case(Frame::Exit(ExitReport { code: None, error: Some(RunError { kind: "NotFound".into(), message: "m".into() }) }))]
    fn frames_round_trip(#[case] frame: Frame) {
        let mut buf = Vec::new();
        frame.write_to(&mut buf).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(Frame::read_from(&mut r).unwrap(), Some(frame));
        assert_eq!(Frame::read_from(&mut r).unwrap(), None, "clean end");
    }

    #[rstest]
    #[case::oversized(vec![b'O', 0x7f, 0xff, 0xff, 0xff], "over the 1048576-byte limit")]
    #[case::unknown_tag(vec![b'Z', 0, 0, 0, 0], "unknown frame tag 0x5a")]
    #[case::truncated_head(vec![b'O', 0, 0], "")]
    #[case::truncated_payload(vec![b'O', 0, 0, 0, 9, 1, 2], "")]
    #[case::bad_json(vec![b'X', 0, 0, 0, 1, b'{'], "malformed 'X' frame")]
    #[case::signal_with_payload(vec![b'K', 0, 0, 0, 1, 0], "carries no payload")]
    fn a_hostile_peer_gets_an_error_not_a_crash(#[case] bytes: Vec<u8>, #[case] says: &str) {
        let err = Frame::read_from(&mut bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }

    #[test]
    fn an_oversized_frame_is_never_written() {
        let err = Frame::Stdout(vec![0; MAX_FRAME + 1])
            .write_to(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
