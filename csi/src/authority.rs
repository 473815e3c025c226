//! A front for the registration socket that makes the kubelet's requests acceptable to `h2`.
//!
//! The kubelet's plugin watcher dials the registration socket with the socket's path as the
//! gRPC target, so its HTTP/2 requests carry `:authority: /var/lib/kubelet/plugins_registry/…`.
//! `h2` (under `tonic`) refuses that as a malformed authority and resets the stream
//! (PROTOCOL_ERROR); the kubelet's CSI client does not have this problem (it sends `localhost`).
//! So the registration socket is served by this front: it passes every byte through, except
//! that it decodes each header block the kubelet sends (HPACK), replaces an `:authority` that
//! is not a valid authority with `localhost`, and re-encodes it. The gRPC server itself listens
//! on a private socket next to the CSI socket.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The default (and smallest) SETTINGS_MAX_FRAME_SIZE, which every peer accepts.
const MAX_FRAME: usize = 16_384;
/// A bound on one header block the front assembles.
const MAX_BLOCK: usize = 64 * 1024;

/// Accepts connections on `listener` and relays each to the gRPC server at `upstream`.
pub async fn serve(listener: UnixListener, upstream: PathBuf) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(client, &upstream).await {
                tracing::debug!(error = %e, "registration connection ended");
            }
        });
    }
}

async fn relay(client: UnixStream, upstream: &Path) -> io::Result<()> {
    let server = UnixStream::connect(upstream).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let result = rewrite(&mut client_read, &mut server_write).await;
    let _ = server_write.shutdown().await;
    let _ = answers.await;
    result
}

/// Copies an HTTP/2 client's byte stream from `from` to `to`, rewriting header blocks.
pub async fn rewrite<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut preface = [0u8; PREFACE.len()];
    from.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/2 client",
        ));
    }
    to.write_all(&preface).await?;
    let mut decoder = hpack::Decoder::new();
    let mut encoder = hpack::Encoder::new();
    while let Some(frame) = read_frame(from).await? {
        if frame.kind == CONTINUATION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "CONTINUATION outside a header block",
            ));
        }
        if frame.kind != HEADERS {
            to.write_all(&frame.raw).await?;
            continue;
        }
        let (priority, mut block) = headers_payload(&frame)?;
        let mut flags = frame.flags;
        while flags & END_HEADERS == 0 {
            let next = read_frame(from).await?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "header block cut short")
            })?;
            if next.kind != CONTINUATION || next.stream != frame.stream {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header block interrupted",
                ));
            }
            block.extend_from_slice(next.payload());
            if block.len() > MAX_BLOCK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header block too large",
                ));
            }
            flags = next.flags;
        }
        let headers = decoder
            .decode(&block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e:?}")))?;
        let headers: Vec<(Vec<u8>, Vec<u8>)> = headers.into_iter().map(fix_authority).collect();
        let mut payload = priority;
        payload.extend(encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))));
        if payload.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "rewritten header block too large",
            ));
        }
        let flags = (frame.flags & (END_STREAM | PRIORITY)) | END_HEADERS;
        to.write_all(&frame_bytes(HEADERS, flags, frame.stream, &payload))
            .await?;
    }
    Ok(())
}

/// `:authority` values `h2` refuses (a socket path) become `localhost`.
fn fix_authority((name, value): (Vec<u8>, Vec<u8>)) -> (Vec<u8>, Vec<u8>) {
    if name == b":authority"
        && tonic::codegen::http::uri::Authority::try_from(value.as_slice()).is_err()
    {
        return (name, b"localhost".to_vec());
    }
    (name, value)
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    /// The whole frame, header included.
    raw: Vec<u8>,
}

impl Frame {
    fn payload(&self) -> &[u8] {
        &self.raw[9..]
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(from: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match from.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    if len > MAX_BLOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut raw = Vec::with_capacity(9 + len);
    raw.extend_from_slice(&head);
    raw.resize(9 + len, 0);
    from.read_exact(&mut raw[9..]).await?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok(Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        raw,
    }))
}

/// A HEADERS frame's priority fields (kept as they are) and its header block fragment
/// (without padding).
fn headers_payload(frame: &Frame) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let mut payload = frame.payload();
    if frame.flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or_else(bad)?;
        payload = rest
            .get(..rest.len().checked_sub(usize::from(pad)).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    let (priority, block) = if frame.flags & PRIORITY != 0 {
        (payload.get(..5).ok_or_else(bad)?, &payload[5..])
    } else {
        (&payload[..0], payload)
    };
    Ok((priority.to_vec(), block.to_vec()))
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(
        encoder: &mut hpack::Encoder,
        headers: &[(&[u8], &[u8])],
        flags: u8,
    ) -> Vec<u8> {
        frame_bytes(HEADERS, flags, 1, &encoder.encode(headers.iter().copied()))
    }

    async fn through(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        rewrite(&mut input.as_slice(), &mut out).await.unwrap();
        out
    }

    fn decoded_headers(out: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let frame = &out[PREFACE.len()..];
        let len = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
        assert_eq!(frame[3], HEADERS);
        assert_ne!(frame[4] & END_HEADERS, 0);
        hpack::Decoder::new().decode(&frame[9..9 + len]).unwrap()
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut enc = hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &mut enc,
            &[
                (b":method", b"POST"),
                (
                    b":authority",
                    b"/var/lib/kubelet/plugins_registry/csi.vexa.ai-reg.sock",
                ),
                (b":path", b"/pluginregistration.Registration/GetInfo"),
                (b"content-type", b"application/grpc"),
            ],
            END_HEADERS,
        ));
        let out = through(input).await;
        let headers = decoded_headers(&out);
        let get = |name: &[u8]| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(b":authority").as_deref(), Some(&b"localhost"[..]));
        assert_eq!(
            get(b":path").as_deref(),
            Some(&b"/pluginregistration.Registration/GetInfo"[..])
        );
        assert_eq!(
            get(b"content-type").as_deref(),
            Some(&b"application/grpc"[..])
        );
    }

    #[tokio::test]
    async fn a_block_split_over_continuation_frames_is_joined() {
        let mut enc = hpack::Encoder::new();
        let block = enc.encode([
            (&b":authority"[..], &b"/x.sock"[..]),
            (&b":path"[..], &b"/a/B"[..]),
        ]);
        let (first, second) = block.split_at(3);
        let mut input = PREFACE.to_vec();
        input.extend(frame_bytes(HEADERS, END_STREAM, 1, first));
        input.extend(frame_bytes(CONTINUATION, END_HEADERS, 1, second));
        let out = through(input).await;
        assert_eq!(out[PREFACE.len() + 4], END_STREAM | END_HEADERS);
        let headers = decoded_headers(&out);
        assert_eq!(headers[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(headers[1], (b":path".to_vec(), b"/a/B".to_vec()));
    }

    #[tokio::test]
    async fn other_frames_and_valid_authorities_pass_unchanged() {
        let mut enc = hpack::Encoder::new();
        let settings = frame_bytes(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let data = frame_bytes(0x0, END_STREAM, 1, b"\0\0\0\0\0");
        let mut input = PREFACE.to_vec();
        input.extend(&settings);
        input.extend(headers_frame(
            &mut enc,
            &[(b":authority", b"localhost")],
            END_HEADERS,
        ));
        input.extend(&data);
        let out = through(input).await;
        assert!(
            out.windows(settings.len())
                .any(|w| w == settings.as_slice())
        );
        assert!(out.ends_with(&data));
    }

    #[tokio::test]
    async fn a_non_http2_client_is_dropped() {
        let mut out = Vec::new();
        let err = rewrite(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.is_empty());
    }
}
