//! What a call to Keycloak can fail with.

/// A failed Keycloak call. `call` names it (e.g. `jwt_grant`, `ensure_subject: create user`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Keycloak answered with an error status.
    #[error("keycloak {call}: HTTP {status}: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        call: String,
        status: u16,
        /// Keycloak's `error` (or `errorMessage` of the admin API), else the body's start.
        error: String,
        /// Keycloak's `error_description`, when it sent one.
        description: Option<String>,
    },
    /// Keycloak could not be reached or the connection failed.
    #[error("keycloak {call}: {source}")]
    Transport {
        call: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Keycloak answered with success but a body we cannot read.
    #[error("keycloak {call}: unexpected answer: {detail}")]
    Unexpected { call: String, detail: String },
    /// An argument is unusable (an invalid base URL, an empty name).
    #[error("keycloak {call}: {detail}")]
    Invalid { call: String, detail: String },
}

impl Error {
    /// Keycloak's `error` code when it refused the call (e.g. `invalid_grant`).
    pub fn keycloak_error(&self) -> Option<&str> {
        match self {
            Error::Refused { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status Keycloak refused the call with.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Refused with an HTTP status, from the body Keycloak sent.
    pub(crate) fn refused(call: &str, status: u16, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Body {
            error: Option<String>,
            error_description: Option<String>,
            #[serde(rename = "errorMessage")]
            error_message: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_slice(body).ok();
        let (error, description) = match parsed {
            Some(Body {
                error: Some(e),
                error_description,
                ..
            }) => (e, error_description),
            Some(Body {
                error_message: Some(m),
                ..
            }) => (m, None),
            _ => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(200).collect();
                (
                    if text.is_empty() {
                        "(empty body)".to_owned()
                    } else {
                        text
                    },
                    None,
                )
            }
        };
        Error::Refused {
            call: call.to_owned(),
            status,
            error,
            description,
        }
    }
}
