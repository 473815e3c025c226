//! Errors of the Card controller. A hostile card event is not an error: it is a refusal,
//! decided in `decide`. These are the failures of I/O, retried by following the stream again.

/// Why a Card could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Card has no namespace or name.
    #[error("card without namespace or name")]
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
