//! What a dispatch token says: the chain of custody (subject, launcher), the scope (workspaces
//! with modes, tools, which of them are gated), the run it belongs to and the workload it is
//! bound to.

use serde::{Deserialize, Serialize};
use vexa_core::{Grant, WorkspaceMode};

use super::UnixTime;
use crate::delegation::Scope;

/// The claims of a dispatch token. Registered claim names follow RFC 7519 (`iss`, `sub`, `aud`,
/// `jti`, `iat`, `exp`), the launcher is the RFC 8693 actor (`act.sub`) and the workload binding
/// is an RFC 7800 confirmation (`cnf`) naming the pod's SPIFFE ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DispatchClaims {
    /// Who minted it: the operator's issuer URL or name.
    pub iss: String,
    /// The subject: on whose behalf the run happens (owns the data and the quota).
    pub sub: String,
    /// The actor: who or what launched the run.
    pub act: Actor,
    /// Who may accept it (the tool gateway).
    pub aud: String,
    /// The workspaces the run may use, each with the mode it got.
    pub workspaces: Vec<WorkspaceClaim>,
    /// The names of the tools the run may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The subset of `tools` whose calls become proposals (Cards) instead of running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gated_tools: Vec<String>,
    /// The dispatch id, `<namespace>/<name>` (see `vexa_core::names::dispatch_id`).
    pub jti: String,
    /// Issued at, Unix seconds.
    pub iat: UnixTime,
    /// Expires at, Unix seconds.
    pub exp: UnixTime,
    /// The workload the token is bound to.
    pub cnf: Confirmation,
}

/// Who a run is and for whom: the claims that are not its scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIdentity {
    /// On whose behalf (`sub`).
    pub subject: String,
    /// Who launched it (`act.sub`).
    pub launcher: String,
    /// `<namespace>/<name>` (`jti`).
    pub dispatch_id: String,
    /// The pod's SPIFFE ID (`cnf.spiffe_id`).
    pub spiffe_id: String,
}

impl DispatchClaims {
    /// The claims of a run: its identity and the scope it was authorized for
    /// ([`crate::delegation::authorize`] or [`crate::delegation::person_scope`]).
    pub fn new(issuer: &str, audience: &str, run: RunIdentity, scope: Scope) -> Self {
        Self {
            iss: issuer.to_string(),
            sub: run.subject,
            act: Actor { sub: run.launcher },
            aud: audience.to_string(),
            workspaces: scope.workspaces,
            tools: scope.tools,
            gated_tools: scope.gated_tools,
            jti: run.dispatch_id,
            iat: scope.iat,
            exp: scope.exp,
            cnf: Confirmation {
                spiffe_id: run.spiffe_id,
            },
        }
    }

    /// When to mint the next token for a running dispatch: once two thirds of this one's
    /// lifetime have passed, which leaves the kubelet time to update the mounted Secret.
    pub fn refresh_at(&self) -> UnixTime {
        self.iat.saturating_add(self.lifetime() * 2 / 3)
    }

    /// How long the token is valid, in seconds (0 if it expires before it was issued).
    pub fn lifetime(&self) -> u64 {
        self.exp.saturating_sub(self.iat)
    }

    /// How the token lets its holder call `tool`: `Some(Gate)` (the call becomes a Card),
    /// `Some(Auto)` (it runs), `None` (not in scope: refused).
    pub fn tool(&self, tool: &str) -> Option<Grant> {
        if !self.tools.iter().any(|t| t == tool) {
            None
        } else if self.gated_tools.iter().any(|t| t == tool) {
            Some(Grant::Gate)
        } else {
            Some(Grant::Auto)
        }
    }

    /// The mode the token grants on `workspace`; `None` if it grants none.
    pub fn workspace(&self, workspace: &str) -> Option<WorkspaceMode> {
        self.workspaces
            .iter()
            .find(|w| w.name == workspace)
            .map(|w| w.mode)
    }

    /// The launcher (`act.sub`).
    pub fn launcher(&self) -> &str {
        &self.act.sub
    }
}

/// The RFC 8693 actor claim: who acts for the subject.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The launcher: `user:<name>`, `schedule:<namespace>/<name>` or `integration:<name>`.
    pub sub: String,
}

/// A workspace in the token's scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceClaim {
    /// The Workspace object's name.
    pub name: String,
    /// `ro` or `rw`.
    pub mode: WorkspaceMode,
}

/// The RFC 7800 confirmation claim: the only workload that may present the token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    /// `spiffe://<trust-domain>/ns/<namespace>/dispatch/<name>`: the SVID the presenter must hold.
    pub spiffe_id: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_json_names_are_the_rfc_names() {
        let claims = DispatchClaims {
            iss: "vexa-operator".into(),
            sub: "alice".into(),
            act: Actor {
                sub: "schedule:team/nightly".into(),
            },
            aud: "vexa-gateway".into(),
            workspaces: vec![WorkspaceClaim {
                name: "notes".into(),
                mode: WorkspaceMode::ReadOnly,
            }],
            tools: vec!["email-send".into(), "search".into()],
            gated_tools: vec!["email-send".into()],
            jti: "team/nightly-1".into(),
            iat: 1_000,
            exp: 1_600,
            cnf: Confirmation {
                spiffe_id: "spiffe://vexa.local/ns/team/dispatch/nightly-1".into(),
            },
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": "vexa-operator",
                "sub": "alice",
                "act": {"sub": "schedule:team/nightly"},
                "aud": "vexa-gateway",
                "workspaces": [{"name": "notes", "mode": "ro"}],
                "tools": ["email-send", "search"],
                "gated_tools": ["email-send"],
                "jti": "team/nightly-1",
                "iat": 1000,
                "exp": 1600,
                "cnf": {"spiffe_id": "spiffe://vexa.local/ns/team/dispatch/nightly-1"},
            })
        );
        assert_eq!(
            serde_json::from_value::<DispatchClaims>(json).unwrap(),
            claims
        );
        assert_eq!(claims.lifetime(), 600);
        assert_eq!(claims.refresh_at(), 1_400);
        assert_eq!(claims.tool("email-send"), Some(Grant::Gate));
        assert_eq!(claims.tool("search"), Some(Grant::Auto));
        assert_eq!(claims.tool("shell"), None);
        assert_eq!(claims.workspace("notes"), Some(WorkspaceMode::ReadOnly));
        assert_eq!(claims.workspace("secrets"), None);
        assert_eq!(
            claims.cnf.spiffe_id,
            vexa_core::identity::spiffe_id("vexa.local", "team", "nightly-1")
        );
        let again = DispatchClaims::new(
            "vexa-operator",
            "vexa-gateway",
            RunIdentity {
                subject: "alice".into(),
                launcher: "schedule:team/nightly".into(),
                dispatch_id: "team/nightly-1".into(),
                spiffe_id: "spiffe://vexa.local/ns/team/dispatch/nightly-1".into(),
            },
            Scope {
                workspaces: claims.workspaces.clone(),
                tools: claims.tools.clone(),
                gated_tools: claims.gated_tools.clone(),
                iat: 1_000,
                exp: 1_600,
            },
        );
        assert_eq!(again, claims);
        assert_eq!(claims.launcher(), "schedule:team/nightly");
    }
}
