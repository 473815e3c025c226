//! Errors of the Dispatch reconciler. Each has a short, bounded `reason` for conditions,
//! events and metric labels.

use vexa_policy::Refusal;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced object does not exist (yet). The dispatch waits for it.
    #[error("{kind} {name:?} not found: create it, or fix the reference in the Dispatch")]
    NotFound {
        /// Kind of the missing object.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The referenced model credential Secret or key is missing.
    #[error("model credential {0}")]
    Credential(String),
    /// The dispatch may not run as specified.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A child of the run's name exists and belongs to something else: it is never adopted,
    /// changed or deleted, and the run does not start.
    #[error(
        "a {kind} named {name:?} already exists and does not belong to this Dispatch: it was \
         left alone and the run did not start; remove it, or create the Dispatch under another name"
    )]
    ForeignChild {
        /// `Secret` or `Job`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The API server refused a child for good (forbidden or invalid): the run cannot start.
    #[error("the API server refused the run's {kind}: {message}")]
    ChildRejected {
        /// `Secret` or `Job`.
        kind: &'static str,
        /// The API server's message.
        message: String,
    },
    /// Redis failed creating or removing the dispatch's user; retried with backoff.
    #[error(transparent)]
    Redis(#[from] crate::redis_users::UserError),
    /// The audit log could not be written; retried with backoff (nothing is done unaudited).
    #[error("audit log: {0}")]
    Audit(#[from] crate::runtime::audit::AuditError),
    /// The dispatch token could not be signed; retried with backoff.
    #[error("dispatch token: {0}")]
    Token(#[from] vexa_policy::token::TokenError),
    /// The Kubernetes API failed; retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A serialization bug.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// The object lacks a namespace or name (cannot happen for a namespaced object read from
    /// the API server).
    #[error("object without namespace or name")]
    Malformed,
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound {
                kind: "AgentRunner",
                ..
            } => "RunnerNotFound",
            Error::NotFound {
                kind: "Workspace", ..
            } => "WorkspaceNotFound",
            Error::NotFound { kind: "Tool", .. } => "ToolNotFound",
            Error::NotFound { .. } => "NotFound",
            Error::Credential(_) => "CredentialNotFound",
            Error::ForeignChild { .. } => "ChildNotOwned",
            Error::ChildRejected { .. } => "ChildRejected",
            Error::Refused(r) => r.reason,
            Error::Redis(_) => "RedisUnavailable",
            Error::Audit(_) => "AuditLogUnwritable",
            Error::Token(_) => "TokenNotMinted",
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
            Error::Serde(_) => "SerializationError",
            Error::Malformed => "Malformed",
        }
    }

    /// Whether the run cannot start at all (it ends `start_failed`).
    pub fn fails_the_start(&self) -> bool {
        matches!(
            self,
            Error::ForeignChild { .. } | Error::ChildRejected { .. }
        )
    }

    /// Whether a person must change something (as opposed to a transient failure).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. } | Error::Credential(_) | Error::Refused(_)
        )
    }
}
