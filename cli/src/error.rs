//! What can go wrong, in the user's terms: each message says what failed and what to do.

use vexa_stream::follow::EntryId;

/// An error of a `kubectl vexa` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument that clap could not check on its own.
    #[error("{0}")]
    Usage(String),
    /// No kubeconfig (or in-cluster config) could be loaded.
    #[error(
        "no Kubernetes cluster configured ({0}); set KUBECONFIG (for the local cluster: eval \"$(hack/cluster env)\")"
    )]
    NoCluster(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server while {action}: {message}")]
    ApiUnreachable {
        /// What was being done.
        action: String,
        /// The transport error.
        message: String,
    },
    /// The API server answered with an error.
    #[error("the Kubernetes API refused {action}: {message}")]
    Api {
        /// What was being done.
        action: String,
        /// The API server's message.
        message: String,
    },
    /// The dispatch does not exist.
    #[error("dispatch {0} not found (list them with `kubectl get dispatches -n <namespace>`)")]
    NotFound(String),
    /// The operator refused the dispatch: its `Authorized` (or `Valid`) condition says why.
    #[error("dispatch {id} was refused: {message}")]
    Refused {
        /// The dispatch id.
        id: String,
        /// The condition's message.
        message: String,
    },
    /// A turn was sent to a dispatch that is not running.
    #[error(
        "dispatch {id} is {phase}, not running: only a running dispatch takes turns (start a new one with `kubectl vexa chat`)"
    )]
    NotRunning {
        /// The dispatch id.
        id: String,
        /// Its phase.
        phase: String,
    },
    /// The chat thread runs in a dispatch with another runner or other workspaces.
    #[error(
        "thread {thread:?} of {subject} is live in dispatch {id} ({what}); stop it first with `kubectl vexa stop {id}`, or chat on another --thread"
    )]
    ThreadBusy {
        /// The subject.
        subject: String,
        /// The thread.
        thread: String,
        /// The live dispatch.
        id: String,
        /// How it differs from the request.
        what: String,
    },
    /// The dispatch ended before the awaited turn completed.
    #[error("dispatch {id} ended ({how}) before the turn completed")]
    EndedEarly {
        /// The dispatch id.
        id: String,
        /// Its phase and stop reason.
        how: String,
    },
    /// The subject could not be derived from the Kubernetes user.
    #[error("{0}; pass --subject (or set VEXA_SUBJECT)")]
    NoSubject(String),
    /// The user may not do this to the dispatch.
    #[error(
        "you may not do this: {action} needs {needs} (a cluster admin can bind the ClusterRole vexa-user, or one like it, in that namespace): {message}"
    )]
    Forbidden {
        /// What was being done.
        action: String,
        /// The permission that is missing.
        needs: String,
        /// The server's message.
        message: String,
    },
    /// The cluster refused a decision on a Card (admission, or it was decided already).
    #[error(
        "the cluster refused your decision on card {card}: {message} (only the card's owner, or a user granted the verb 'approve' on cards.vexa.ai/<name>, decides a card, once)"
    )]
    CardRefused {
        /// The card, `namespace/name`.
        card: String,
        /// Why.
        message: String,
    },
    /// The API server does not serve the streams API.
    #[error(
        "the cluster does not serve the streams API (streams.vexa.ai): is the Vexa operator installed? ({message}; check `kubectl get apiservice v1.streams.vexa.ai`)"
    )]
    NoStreamsApi {
        /// The API server's message.
        message: String,
    },
    /// The streams API is registered but does not answer (the operator is down or starting).
    #[error(
        "the streams API (streams.vexa.ai) did not answer while {action}: {message} (is the Vexa operator running? `kubectl get apiservice v1.streams.vexa.ai`)"
    )]
    StreamsUnavailable {
        /// What was being done.
        action: String,
        /// The API server's message.
        message: String,
    },
    /// Following the stream ended with an error; `last` is where to resume.
    #[error("{message}")]
    Follow {
        /// What went wrong.
        message: String,
        /// The last entry read (or the starting point).
        last: EntryId,
        /// The dispatch id, for the resume hint.
        dispatch: String,
    },
    /// `audit verify` found a chain broken.
    #[error(
        "the audit chain {chain:?} does not verify: line {line}{} ({what}); see above",
        seq.map(|s| format!(" (seq {s})")).unwrap_or_default()
    )]
    Tampered {
        /// The chain (writer).
        chain: String,
        /// The first bad line (1-based).
        line: usize,
        /// Its seq, when readable.
        seq: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// A file given on the command line is not what it should be.
    #[error("{0}")]
    BadFile(String),
    /// A response or file could not be (de)serialized.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing to standard output failed (for example a closed pipe).
    #[error("writing the output failed: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// Maps a kube error: transport failures become [`CliError::ApiUnreachable`], API statuses
    /// [`CliError::Api`] (404 is handled by callers that expect it).
    pub fn kube(action: impl Into<String>, e: kube::Error) -> Self {
        let action = action.into();
        match e {
            kube::Error::Api(status) => CliError::Api {
                action,
                message: if status.message.is_empty() {
                    format!("{} ({})", status.reason, status.code)
                } else {
                    status.message
                },
            },
            kube::Error::InferConfig(e) => CliError::NoCluster(e.to_string()),
            other => CliError::ApiUnreachable {
                action,
                message: other.to_string(),
            },
        }
    }
}
