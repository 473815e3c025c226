//! Errors of the Schedule reconciler. A bad expression, a missing grant or a malformed
//! annotation is not an error: it is a condition or an action record, decided in `decide`.

/// Why a Schedule reconcile did not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a namespace or name.
    #[error("object without namespace or name")]
    Malformed,
}

impl Error {
    /// A short, bounded reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::runtime::errors::kube_reason(e),
            Error::Malformed => "Malformed",
        }
    }
}
