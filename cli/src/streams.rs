//! The streams API (`streams.vexa.ai`, contract in `vexa_stream::api`), reached through the
//! Kubernetes API server with the kubeconfig's credentials: a dispatch's log and its turns.
//! The CLI never holds Redis credentials; the API server authenticates the user and the
//! operator authorizes each request on the Dispatch.

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use kube::Client;
use vexa_stream::api::{self, LogLine, TurnAccepted};
use vexa_stream::follow::EntryId;

use crate::error::CliError;
use crate::pump::{Lines, LogSource, OpenError};

/// A dispatch's streams, through the API server.
#[derive(Clone)]
pub struct Streams {
    client: Client,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish()
    }
}

/// What a request was for, in messages.
#[derive(Debug, Clone, Copy)]
enum Doing {
    Read,
    Send,
}

impl Streams {
    /// The streams of dispatch `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn id(&self) -> String {
        vexa_core::dispatch_id(&self.namespace, &self.name)
    }

    /// Sends `{"prompt": …}` or `{"type": "stop"}`.
    pub async fn send(&self, turn: &serde_json::Value) -> Result<TurnAccepted, CliError> {
        let path = api::path(&self.namespace, &self.name, api::TURNS);
        let request = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(turn.to_string().into_bytes())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        self.client
            .request::<TurnAccepted>(request)
            .await
            .map_err(|e| self.error(Doing::Send, e))
    }

    /// Whether a stream of this name holds anything (a deleted dispatch of that name left it).
    pub async fn has_entries(&self) -> Result<bool, CliError> {
        let path = format!(
            "{}?follow=false",
            api::path(&self.namespace, &self.name, api::LOG)
        );
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| self.error(Doing::Read, e))?;
        Ok(text.lines().any(|l| !l.trim().is_empty()))
    }

    /// The error for a failed request: refusals name the permission that is missing.
    fn error(&self, doing: Doing, e: kube::Error) -> CliError {
        let id = self.id();
        let what = match doing {
            Doing::Read => format!("reading the stream of dispatch {id}"),
            Doing::Send => format!("sending a turn to dispatch {id}"),
        };
        match e {
            kube::Error::Api(s) if s.code == 403 => CliError::Forbidden {
                action: what,
                needs: match doing {
                    Doing::Read => format!(
                        "get on dispatches (vexa.ai) and on dispatches/log (streams.vexa.ai) in namespace {}",
                        self.namespace
                    ),
                    Doing::Send => format!(
                        "create on dispatches/turns, in both vexa.ai and streams.vexa.ai, in namespace {}",
                        self.namespace
                    ),
                },
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 404 && s.message.contains(&self.name) => {
                CliError::NotFound(id)
            }
            kube::Error::Api(s) if s.code == 404 => CliError::NoStreamsApi {
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 503 => CliError::StreamsUnavailable {
                action: what,
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 409 => CliError::Api {
                action: what,
                message: s.message.clone(),
            },
            other => CliError::kube(what, other),
        }
    }
}

impl LogSource for Streams {
    async fn open(&self, from: EntryId) -> Result<Lines, OpenError> {
        let path = format!(
            "{}?from={from}",
            api::path(&self.namespace, &self.name, api::LOG)
        );
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| OpenError::Fatal(CliError::Usage(e.to_string())))?;
        let body = match self.client.request_stream(request).await {
            Ok(body) => body,
            Err(e) => {
                let e = self.error(Doing::Read, e);
                return Err(match e {
                    CliError::ApiUnreachable { .. } | CliError::StreamsUnavailable { .. } => {
                        OpenError::Retry(e.to_string())
                    }
                    fatal => OpenError::Fatal(fatal),
                });
            }
        };
        let lines = body
            .lines()
            .map_err(|e| format!("reading the log failed: {e}"))
            .and_then(|line| async move { LogLine::decode(&line) });
        Ok(lines.boxed())
    }
}
