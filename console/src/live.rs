//! A dispatch's stream as server-sent events, read from the streams API as the person (the
//! console holds no Redis credentials). Each entry is one event whose `id` is the entry's id,
//! so a browser that loses the connection reconnects with `Last-Event-ID` and gets exactly the
//! entries after it: nothing missed, nothing twice.
//!
//! Events: `unit` (data: the published unit event, JSON), `malformed` (an entry that is not a
//! unit event: a JSON string saying why), `end` (the dispatch ended and every entry was sent;
//! data: its phase), `refused` (the person may not read it, or it does not exist; data: why).
//! A log that breaks off ends the response; the browser's reconnect resumes it.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use kube::Client;
use vexa_cli::pump::{LogSource, OpenError};
use vexa_cli::streams::Streams;
use vexa_stream::api::LogLine;
use vexa_stream::follow::EntryId;

/// How long a browser waits before reconnecting.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Where to resume: the `Last-Event-ID` the browser sent, else `?from=`, else the start. An id
/// that does not parse is the start, never an error (the browser would retry it forever).
pub fn resume_point(last_event_id: Option<&str>, from: Option<&str>) -> EntryId {
    last_event_id
        .or(from)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(EntryId::ZERO)
}

/// One log line as an event; `None` for keep-alive lines.
pub fn event_of(line: &LogLine) -> Option<Event> {
    match line {
        LogLine::Event(id, unit) => Some(
            Event::default()
                .id(id.to_string())
                .event("unit")
                .data(unit.to_json()),
        ),
        LogLine::Malformed(id, why) => Some(
            Event::default()
                .id(id.to_string())
                .event("malformed")
                .data(serde_json::Value::from(why.as_str()).to_string()),
        ),
        LogLine::End(phase) => Some(
            Event::default()
                .event("end")
                .data(serde_json::Value::from(phase.as_str()).to_string()),
        ),
        LogLine::Idle => None,
    }
}

/// The events of dispatch `namespace/name` after `from`, read as the person behind `client`.
pub async fn events(
    client: Client,
    namespace: &str,
    name: &str,
    from: EntryId,
) -> axum::response::Response {
    let streams = Streams::new(client, namespace, name);
    let retry = Event::default().retry(RETRY);
    let body: BoxStream<'static, Result<Event, Infallible>> = match streams.open(from).await {
        Ok(lines) => {
            // The streams API ends the body after `end`; a body that breaks off before it ends
            // the response too, and the browser resumes after its last id.
            let events = lines
                .take_while(|l| future::ready(l.is_ok()))
                .filter_map(|l| future::ready(l.ok().as_ref().and_then(event_of)));
            stream::once(future::ready(retry))
                .chain(events)
                .map(Ok)
                .boxed()
        }
        Err(OpenError::Fatal(e)) => stream::iter([
            retry,
            Event::default()
                .event("refused")
                .data(serde_json::Value::from(e.to_string()).to_string()),
        ])
        .map(Ok)
        .boxed(),
        // The streams API is down for a moment: the browser retries after `retry`.
        Err(OpenError::Retry(_)) => stream::once(future::ready(retry)).map(Ok).boxed(),
    };
    use axum::response::IntoResponse;
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexa_stream::{Event as UnitKind, TurnId, UnitEvent};

    #[test]
    fn the_browser_resumes_after_its_last_event() {
        let id: EntryId = "1700000000000-3".parse().unwrap();
        assert_eq!(resume_point(Some("1700000000000-3"), Some("5-0")), id);
        assert_eq!(resume_point(None, Some("1700000000000-3")), id);
        assert_eq!(resume_point(Some("garbage\r\n"), None), EntryId::ZERO);
        assert_eq!(resume_point(None, None), EntryId::ZERO);
    }

    async fn text(e: Event) -> String {
        use axum::response::IntoResponse;
        use http_body_util::BodyExt;
        let sse = Sse::new(stream::iter([Ok::<_, Infallible>(e)]));
        let body = sse.into_response().into_body().collect().await.unwrap();
        String::from_utf8(body.to_bytes().to_vec()).unwrap()
    }

    fn lines_starting(t: &str, prefix: &str) -> usize {
        t.lines().filter(|l| l.starts_with(prefix)).count()
    }

    #[tokio::test]
    async fn hostile_text_stays_data_on_one_line() {
        let unit = UnitEvent::new(
            TurnId(0),
            UnitKind::MessageDelta {
                text: "</script><script>alert(1)</script>\n\nevent: end\ndata: x".into(),
            },
        );
        let id: EntryId = "5-1".parse().unwrap();
        let e = event_of(&LogLine::Event(id, unit)).unwrap();
        let t = text(e).await;
        // The newlines are JSON escapes inside one data line: no forged `event:` line.
        assert_eq!(lines_starting(&t, "event:"), 1, "{t}");
        assert_eq!(lines_starting(&t, "data:"), 1, "{t}");
        assert!(t.contains("id: 5-1"), "{t}");
        assert!(event_of(&LogLine::Idle).is_none());
        let why = event_of(&LogLine::Malformed(id, "bad\nevent: end".into())).unwrap();
        assert_eq!(lines_starting(&text(why).await, "event:"), 1);
    }
}
