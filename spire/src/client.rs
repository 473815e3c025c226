//! The gRPC calls, over the server's admin Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::entry::{Entry, SpiffeId};
use crate::proto::{self, path};

/// How long one call may take before it fails (the server answers in milliseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries per page when listing.
const PAGE_SIZE: i32 = 500;

/// What went wrong talking to the SPIRE server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached or the connection broke.
    #[error(
        "cannot reach the SPIRE server at {socket}: {source} (is spire-server running, and may this process open its admin socket?)"
    )]
    Unavailable {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// The call as a whole failed.
    #[error("SPIRE server refused {call}: {status}")]
    Call {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// The call went through, but SPIRE refused one of its items.
    #[error("SPIRE server refused to {action} entry {id}: {code:?}: {message}")]
    Item {
        action: &'static str,
        id: String,
        code: Code,
        message: String,
    },
    /// An entry SPIRE holds under our ID differs from the one we asked for.
    #[error(
        "SPIRE already holds an entry like {id} under the ID {existing} (an entry with the same SPIFFE ID, parent and selectors); remove it with `spire-server entry delete -entryID {existing}`"
    )]
    Conflict { id: String, existing: String },
    /// SPIRE answered with fewer results than items asked for.
    #[error("SPIRE server answered {call} without a result for every item")]
    ShortAnswer { call: &'static str },
}

impl Error {
    /// A short, bounded reason for events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unavailable { .. } => "SpireUnavailable",
            Error::Call { status, .. } if status.code() == Code::Unavailable => "SpireUnavailable",
            // A connection that broke mid-call (the server went away) surfaces as Unknown with
            // the transport error as its source.
            Error::Call { status, .. }
                if status.code() == Code::Unknown
                    && std::error::Error::source(status).is_some() =>
            {
                "SpireUnavailable"
            }
            Error::Call { status, .. } if status.code() == Code::PermissionDenied => {
                "SpirePermissionDenied"
            }
            Error::Call { .. } => "SpireCallFailed",
            Error::Item { .. } => "SpireRefusedEntry",
            Error::Conflict { .. } => "SpireEntryConflict",
            Error::ShortAnswer { .. } => "SpireCallFailed",
        }
    }
}

/// A connection to the SPIRE server's entry API. Cheap to clone (one shared HTTP/2 channel).
#[derive(Clone, Debug)]
pub struct EntryClient {
    socket: PathBuf,
    grpc: tonic::client::Grpc<Channel>,
}

impl EntryClient {
    /// A client for the server whose admin socket is at `socket`. It connects lazily, on the
    /// first call, and reconnects after a server restart, so a server that is not up yet is an
    /// error of that call, not of this constructor.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        let socket = socket.as_ref().to_path_buf();
        let target = socket.clone();
        // The URI is never dialled: the connector below opens the Unix socket instead.
        let channel = Endpoint::from_static("http://spire-server.invalid")
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let target = target.clone();
                async move { UnixStream::connect(target).await.map(TokioIo::new) }
            }));
        EntryClient {
            socket,
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// The admin socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Creates the entries. An entry that already exists with the same ID counts as created
    /// (a retry after a lost answer, or a second operator replica); a similar entry under
    /// another ID is a [`Error::Conflict`].
    pub async fn create(&self, entries: &[Entry]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let request = proto::BatchCreateEntryRequest {
            entries: entries.iter().map(Entry::to_msg).collect(),
        };
        let response: proto::BatchCreateEntryResponse = self
            .unary("BatchCreateEntry", path::BATCH_CREATE, request)
            .await?;
        if response.results.len() != entries.len() {
            return Err(Error::ShortAnswer {
                call: "BatchCreateEntry",
            });
        }
        for (entry, result) in entries.iter().zip(&response.results) {
            let (code, message) = status_of(result.status.as_ref());
            let existing = result.entry.as_ref().map(|e| e.id.as_str()).unwrap_or("");
            match code {
                Code::Ok => {}
                Code::AlreadyExists if existing == entry.id => {}
                Code::AlreadyExists if !existing.is_empty() => {
                    return Err(Error::Conflict {
                        id: entry.id.clone(),
                        existing: existing.to_string(),
                    });
                }
                _ => {
                    return Err(Error::Item {
                        action: "create",
                        id: entry.id.clone(),
                        code,
                        message,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes the entries with these IDs; one that does not exist counts as deleted. Returns
    /// the IDs that existed and are now gone.
    pub async fn delete(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let request = proto::BatchDeleteEntryRequest { ids: ids.to_vec() };
        let response: proto::BatchDeleteEntryResponse = self
            .unary("BatchDeleteEntry", path::BATCH_DELETE, request)
            .await?;
        if response.results.len() != ids.len() {
            return Err(Error::ShortAnswer {
                call: "BatchDeleteEntry",
            });
        }
        let mut removed = Vec::new();
        for (id, result) in ids.iter().zip(&response.results) {
            let (code, message) = status_of(result.status.as_ref());
            match code {
                Code::Ok => removed.push(id.clone()),
                Code::NotFound => {}
                _ => {
                    return Err(Error::Item {
                        action: "delete",
                        id: id.clone(),
                        code,
                        message,
                    });
                }
            }
        }
        Ok(removed)
    }

    /// Every entry whose parent ID is `parent`, all pages.
    pub async fn list_by_parent(&self, parent: &SpiffeId) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListEntriesRequest {
                filter: Some(proto::ListFilter {
                    by_parent_id: Some(parent.to_msg()),
                }),
                page_size: PAGE_SIZE,
                page_token,
            };
            let response: proto::ListEntriesResponse =
                self.unary("ListEntries", path::LIST, request).await?;
            entries.extend(response.entries.iter().map(Entry::from_msg));
            if response.next_page_token.is_empty() {
                return Ok(entries);
            }
            page_token = response.next_page_token;
        }
    }

    async fn unary<Req, Resp>(
        &self,
        call: &'static str,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|source| Error::Unavailable {
            socket: self.socket.clone(),
            source,
        })?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(CALL_TIMEOUT);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Error::Call { call, status })
    }
}

fn status_of(status: Option<&proto::StatusMsg>) -> (Code, String) {
    match status {
        // An absent status is the proto default: code 0, OK.
        None => (Code::Ok, String::new()),
        Some(s) => (Code::from_i32(s.code), s.message.clone()),
    }
}
