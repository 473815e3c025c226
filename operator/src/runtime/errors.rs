//! The bounded reasons of API failures, shared by every controller's error type (they label
//! metrics and events, so the set must stay small).

/// Every reason [`kube_reason`] gives (the metrics start each at zero).
pub const KUBE_REASONS: [&str; 4] = ["Conflict", "NamespaceTerminating", "Forbidden", "KubeError"];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn every_reason_given_is_listed() {
        for e in [
            api(409, "conflict"),
            api(403, "namespace x is being terminated"),
            api(403, "forbidden"),
            api(500, "boom"),
        ] {
            assert!(KUBE_REASONS.contains(&kube_reason(&e)), "{e}");
        }
    }
}
