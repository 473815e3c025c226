//! Errors of the Workspace reconciler; each has a short, bounded `reason` for events and
//! metric labels. A person's mistake (a missing claim or seed) is not an error: it is a
//! condition on the Workspace, decided in `decide`.

/// Why a Workspace reconcile did not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A serialization bug.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// The object lacks a namespace or name.
    #[error("object without namespace or name")]
    Malformed,
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
            Error::Serde(_) => "SerializationError",
            Error::Malformed => "Malformed",
        }
    }
}
