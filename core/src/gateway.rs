//! The MCP gateway's side of the contract (SPEC §5.4–5.5): how a dispatch pod's worker addresses
//! a tool through the gateway, and what the gateway proves about itself. The worker, the
//! gateway's authorization filter and the operator read these from one place.

/// The path of the gateway's own SPIFFE ID: the worker accepts the gateway's server certificate
/// only if it names exactly this identity in the pod's trust domain.
pub const GATEWAY_ID_PATH: &str = "/vexa/gateway";

/// The path prefix of every tool behind the gateway: `/tools/<namespace>/<tool>`, where `<tool>`
/// is the name of a `Tool` object in the dispatch's namespace.
pub const TOOLS_PREFIX: &str = "/tools/";

/// The header in which the worker presents the dispatch token to the gateway (as
/// `Bearer <token>`); the gateway replaces it with the token it exchanged for the tool.
pub const TOKEN_HEADER: &str = "authorization";

/// Headers the gateway sets for its own routing; it removes every header with this prefix a
/// client sends, and the upstream never sees them.
pub const INTERNAL_HEADER_PREFIX: &str = "x-vexa-";

/// `spiffe://<trust domain>/vexa/gateway`: the identity the gateway's server certificate names.
pub fn gateway_spiffe_id(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}{GATEWAY_ID_PATH}")
}

/// `/tools/<namespace>/<tool>`: where a dispatch in `namespace` reaches the Tool `tool`.
pub fn tool_path(namespace: &str, tool: &str) -> String {
    format!("{TOOLS_PREFIX}{namespace}/{tool}")
}

/// The (namespace, tool) a gateway path names, or `None` for any other path. Both parts must be
/// non-empty Kubernetes names (no `/`, `.` or `..` segment, no query), so a crafted path never
/// reaches another namespace's tool.
pub fn parse_tool_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(TOOLS_PREFIX)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (namespace, tool) = rest.split_once('/')?;
    (is_dns_label(namespace) && is_dns_subdomain(tool)).then_some((namespace, tool))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The Secret (in the operator's namespace) holding the key set the MCP gateway signs its audit
/// chain's checkpoints with; the operator publishes its public half with its own keys.
pub const GATEWAY_AUDIT_KEY_SECRET: &str = "vexa-gateway-audit-keys";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_path_round_trips() {
        let path = tool_path("team-a", "notes");
        assert_eq!(path, "/tools/team-a/notes");
        assert_eq!(parse_tool_path(&path), Some(("team-a", "notes")));
        assert_eq!(
            parse_tool_path("/tools/team-a/notes?x=1"),
            Some(("team-a", "notes"))
        );
    }

    #[test]
    fn crafted_paths_name_no_tool() {
        for path in [
            "/tools/team-a/notes/extra",
            "/tools/team-a/../team-b/notes",
            "/tools/../notes",
            "/tools/team-a/",
            "/tools//notes",
            "/tools/Team-A/notes",
            "/tools/team-a/.",
            "/tools/team-a/..",
            "/tools/team-a/no%2Fpe",
            "/other/team-a/notes",
            "/tools/team-a",
        ] {
            assert_eq!(parse_tool_path(path), None, "{path}");
        }
    }

    #[test]
    fn the_gateway_names_itself_in_the_trust_domain() {
        assert_eq!(
            gateway_spiffe_id("vexa.local"),
            "spiffe://vexa.local/vexa/gateway"
        );
    }
}
