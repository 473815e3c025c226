//! The bounded reasons of API failures, shared by every controller's error type (they label
//! metrics and events, so the set must stay small).

/// A short reason for a failed API call.
pub fn kube_reason(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(s) if s.code == 409 => "Conflict",
        kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated") => {
            "NamespaceTerminating"
        }
        kube::Error::Api(s) if s.code == 403 => "Forbidden",
        _ => "KubeError",
    }
}
