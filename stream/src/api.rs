//! The streams API (`streams.vexa.ai/v1`): how people read a dispatch's stream and send it
//! turns without Redis credentials (SPEC §4). The operator serves it behind the Kubernetes API
//! server (an aggregated API), the CLI and the console call it. This module is the contract
//! both sides share: paths, the lines of a log, and the answer to a turn.
//!
//! - `GET …/namespaces/<ns>/dispatches/<name>/log?from=<entry id>`: newline-delimited JSON, one
//!   line per entry after `from` (`0-0`, the default, replays everything), as long as the
//!   dispatch runs: [`LogLine`]. The last line is `{"end": "<phase>"}` once the dispatch has ended
//!   and every entry was sent; a connection that closes without it can resume after the last
//!   id received, with no gap and no repeat. Empty lines keep an idle connection open.
//!   `follow=false` sends what the stream holds now, then closes (it answers for a name with no
//!   Dispatch too: whether a previous run of that name left a stream behind).
//! - `POST …/namespaces/<ns>/dispatches/<name>/turns` with `{"prompt": …}` or `{"type":
//!   "stop"}`: [`TurnAccepted`].
//!
//! Reading needs `get` on the Dispatch (group `vexa.ai`); sending a turn or a stop needs
//! `create` on `dispatches/turns` (group `vexa.ai`). The API server first checks the same verbs
//! on the `streams.vexa.ai` resources `dispatches/log` and `dispatches/turns`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::UnitEvent;
use crate::follow::EntryId;

/// The API group.
pub const GROUP: &str = "streams.vexa.ai";
/// The version.
pub const VERSION: &str = "v1";
/// The subresource that reads a dispatch's stream (named like `pods/log`, which the API server
/// also treats as a long-running request, so a follow is not cut after a minute).
pub const LOG: &str = "log";
/// The subresource that takes turns and stops.
pub const TURNS: &str = "turns";
/// The resource the subresources hang off.
pub const DISPATCHES: &str = "dispatches";

/// `/apis/streams.vexa.ai/v1`.
pub fn group_version_path() -> String {
    format!("/apis/{GROUP}/{VERSION}")
}

/// The path of a dispatch's `subresource`.
pub fn path(namespace: &str, name: &str, subresource: &str) -> String {
    format!(
        "{}/namespaces/{namespace}/{DISPATCHES}/{name}/{subresource}",
        group_version_path()
    )
}

/// One line of a log response.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// An entry and its event.
    Event(EntryId, UnitEvent),
    /// An entry that is not a unit event, and why.
    Malformed(EntryId, String),
    /// The dispatch has ended (its phase) and every entry was sent.
    End(String),
    /// Nothing new (keeps the connection open).
    Idle,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

impl LogLine {
    /// The line, with its newline: `{"id": "<entry id>", "event": {…}}`, `{"id": …, "error":
    /// …}`, `{"end": "<phase>"}`, or an empty line.
    pub fn encode(&self) -> String {
        match self {
            // By hand, so the id comes first and the event is the published JSON.
            LogLine::Event(id, unit) => {
                format!("{{\"id\":\"{id}\",\"event\":{}}}\n", unit.to_json())
            }
            LogLine::Malformed(id, reason) => {
                format!(
                    "{{\"id\":\"{id}\",\"error\":{}}}\n",
                    Value::from(reason.as_str())
                )
            }
            LogLine::End(phase) => format!("{{\"end\":{}}}\n", Value::from(phase.as_str())),
            LogLine::Idle => "\n".into(),
        }
    }

    /// Reads one line (without its newline); the error says what is wrong with it.
    pub fn decode(line: &str) -> Result<Self, String> {
        if line.trim().is_empty() {
            return Ok(LogLine::Idle);
        }
        let wire: Wire = serde_json::from_str(line).map_err(|e| format!("not a log line ({e})"))?;
        let id = |id: Option<String>| -> Result<EntryId, String> {
            let id = id.ok_or("a log line without an entry id")?;
            id.parse().map_err(|e| format!("{e}"))
        };
        match wire {
            Wire { end: Some(end), .. } => Ok(LogLine::End(end)),
            Wire {
                id: i,
                event: Some(event),
                ..
            } => {
                let id = id(i)?;
                match serde_json::from_value::<UnitEvent>(event) {
                    Ok(unit) => Ok(LogLine::Event(id, unit)),
                    Err(e) => Ok(LogLine::Malformed(id, format!("not a unit event: {e}"))),
                }
            }
            Wire {
                id: i,
                error: Some(error),
                ..
            } => Ok(LogLine::Malformed(id(i)?, error)),
            _ => Err(format!("a log line of no known shape: {line:?}")),
        }
    }
}

/// The answer to a turn or a stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnAccepted {
    /// The id of the turn's entry on the input stream.
    pub id: String,
    /// The newest entry of the output stream just before the turn was added: the reply comes
    /// after it. `None` when nothing was written yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastEntry>,
}

/// The newest entry of a dispatch's output stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastEntry {
    /// Its id.
    pub id: String,
    /// The turn it belongs to; `None` when it is not a unit event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{Event, TurnId};

    #[test]
    fn every_line_reads_back_as_written() {
        let id = EntryId { ms: 17, seq: 3 };
        for line in [
            LogLine::Event(
                id,
                UnitEvent::new(TurnId(2), Event::Commit { sha: "ab".into() }),
            ),
            LogLine::Malformed(id, "key must be a string \"x\"".into()),
            LogLine::End("succeeded".into()),
            LogLine::Idle,
        ] {
            let text = line.encode();
            assert!(text.ends_with('\n'));
            assert_eq!(LogLine::decode(text.trim_end_matches('\n')).unwrap(), line);
        }
        assert_eq!(
            LogLine::Event(
                id,
                UnitEvent::new(TurnId(1), Event::Commit { sha: "abc".into() })
            )
            .encode(),
            "{\"id\":\"17-3\",\"event\":{\"type\":\"commit\",\"sha\":\"abc\",\"turn_id\":\"t1\"}}\n"
        );
    }

    #[test]
    fn a_line_of_no_known_shape_is_an_error() {
        for bad in [
            "{oops",
            "{}",
            "{\"event\":{}}",
            "{\"id\":\"x\",\"error\":\"e\"}",
        ] {
            assert!(LogLine::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            path("team-a", "agent-x", LOG),
            "/apis/streams.vexa.ai/v1/namespaces/team-a/dispatches/agent-x/log"
        );
    }
}
