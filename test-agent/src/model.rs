//! The test agent's model call (`model TEXT`): one streamed Messages API request to the
//! endpoint in `ANTHROPIC_BASE_URL` with the key in `ANTHROPIC_API_KEY`, as an agent CLI makes
//! it, over plain HTTP/1.1 (the endpoint is the pod's loopback model proxy). No dependencies:
//! a request, a chunked or plain body, and the text deltas of the event stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

/// The longest response the agent reads.
const MAX_RESPONSE: u64 = 4 << 20;

/// Sends `prompt` and returns the reply's text, or what went wrong.
pub fn ask(prompt: &str) -> Result<String, String> {
    let base = std::env::var("ANTHROPIC_BASE_URL")
        .map_err(|_| "ANTHROPIC_BASE_URL is unset".to_owned())?;
    let key = std::env::var("ANTHROPIC_API_KEY").unwrap_or_default();
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base} is not an http:// URL"))?
        .trim_end_matches('/');
    let body = json!({
        "model": "vexa-test", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {authority}\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = exchange(authority, &request).map_err(|e| format!("{base}: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    Ok(text_of(&body))
}

/// An HTTP answer: status, headers, body.
pub(crate) type Answer = (u16, Vec<(String, String)>, String);

/// Sends one HTTP/1.1 request (with `connection: close`) and reads the status, the headers and
/// the whole body (chunked or not).
pub(crate) fn exchange(authority: &str, request: &str) -> io::Result<Answer> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream.take(MAX_RESPONSE));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut chunked = false;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// The text of a streamed reply (its `text_delta`s), or of a plain JSON message.
fn text_of(body: &str) -> String {
    let mut text = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(data.trim())
            && v["delta"]["type"] == "text_delta"
        {
            text.push_str(v["delta"]["text"].as_str().unwrap_or_default());
        }
    }
    if text.is_empty()
        && let Ok(v) = serde_json::from_str::<Value>(body)
    {
        for block in v["content"].as_array().into_iter().flatten() {
            text.push_str(block["text"].as_str().unwrap_or_default());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_text_comes_from_the_deltas_or_the_message() {
        let stream = "event: x\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"he\"}}\n\ndata: {\"delta\":{\"type\":\"text_delta\",\"text\":\"llo\"}}\n";
        assert_eq!(text_of(stream), "hello");
        assert_eq!(
            text_of(r#"{"content":[{"type":"text","text":"hi"}]}"#),
            "hi"
        );
    }
}
