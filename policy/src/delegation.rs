//! What a schedule or integration may do for a subject: its request checked against the
//! delegation grant it holds, giving the scope the operator puts into the dispatch token. A
//! dispatch may only narrow a grant, never widen it (SPEC §3 Identity, §5.1).

use std::time::Duration;

use vexa_core::{Grant, WorkspaceMode};

use crate::token::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME, UnixTime, WorkspaceClaim};
use crate::{Authorization, DispatchRequest, GrantFacts, Refusal, ToolFacts};

/// What a non-human launcher asks for under a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRequest {
    /// The launcher: `schedule:<namespace>/<name>` or `integration:<name>`.
    pub launcher: String,
    /// The workspaces, in the order of the dispatch.
    pub workspaces: Vec<DelegatedWorkspace>,
    /// The names of the tools.
    pub tools: Vec<String>,
    /// The token lifetime asked for; `None` takes [`DEFAULT_TOKEN_LIFETIME`] shortened to what
    /// the grant allows.
    pub lifetime: Option<Duration>,
}

impl DelegationRequest {
    /// What `dispatch` asks of its grant: its workspaces in the modes the trust rules gave them
    /// (`modes`, e.g. [`Authorization::modes`]), marked asked-for where its spec names a mode,
    /// its tools, and the default token lifetime.
    pub fn of<'a>(
        dispatch: &DispatchRequest,
        modes: impl IntoIterator<Item = (&'a str, WorkspaceMode)>,
    ) -> Self {
        Self {
            launcher: dispatch.launcher.clone(),
            workspaces: modes
                .into_iter()
                .map(|(name, mode)| DelegatedWorkspace {
                    name: name.to_string(),
                    mode,
                    asked: dispatch
                        .workspaces
                        .iter()
                        .any(|w| w.name == name && w.mode.is_some()),
                })
                .collect(),
            tools: dispatch.tools.clone(),
            lifetime: None,
        }
    }
}

/// A workspace of a delegated dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatedWorkspace {
    /// The Workspace object's name.
    pub name: String,
    /// The mode the trust rules give it ([`crate::authorize`]: asked for, or the trigger's and
    /// the workspace's default).
    pub mode: WorkspaceMode,
    /// Whether the dispatch asked for that mode. An asked-for mode must fit the grant; a
    /// default is narrowed to the grant instead.
    pub asked: bool,
}

/// The effective scope of a run: what goes into its dispatch token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The workspaces with the mode each gets.
    pub workspaces: Vec<WorkspaceClaim>,
    /// The tools the run may call.
    pub tools: Vec<String>,
    /// The subset of `tools` whose calls become Cards.
    pub gated_tools: Vec<String>,
    /// When the token is issued (`iat`).
    pub iat: UnixTime,
    /// When it expires (`exp`).
    pub exp: UnixTime,
}

impl GrantFacts {
    /// The widest mode the grant allows for `workspace`, if any.
    pub fn mode_of(&self, workspace: &str) -> Option<WorkspaceMode> {
        self.workspaces
            .iter()
            .find(|(w, _)| w == workspace)
            .map(|(_, m)| *m)
    }

    /// The longest token the grant allows: its `maxTokenLifetimeSeconds`, never more than
    /// [`MAX_TOKEN_LIFETIME`] (what every verifier accepts).
    pub fn max_token_lifetime(&self) -> Duration {
        self.max_token_lifetime
            .unwrap_or(MAX_TOKEN_LIFETIME)
            .min(MAX_TOKEN_LIFETIME)
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: UnixTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// The narrower of two modes.
fn narrower(a: WorkspaceMode, b: WorkspaceMode) -> WorkspaceMode {
    if a == WorkspaceMode::ReadOnly || b == WorkspaceMode::ReadOnly {
        WorkspaceMode::ReadOnly
    } else {
        WorkspaceMode::ReadWrite
    }
}

/// Whether `tool` must stay gated: its Tool says `gate`, or nothing is known of it (what we
/// do not know we never let run on its own).
fn gated(tool: &str, tools: &[ToolFacts]) -> bool {
    tools
        .iter()
        .find(|t| t.name == tool)
        .is_none_or(|t| t.grant == Grant::Gate)
}

/// Authorizes a non-human launcher's request under `grant` at `now`: the launcher is the
/// grant's, the grant has not expired, every workspace is in the grant (an asked-for `rw` only
/// where the grant says `rw`; a mode not asked for is narrowed to the grant's), every tool is in
/// the grant, and the token lifetime is within the grant's maximum. The token never outlives
/// the grant, and a tool whose Tool says `gate` is always in `gated_tools`.
pub fn authorize(
    request: &DelegationRequest,
    grant: &GrantFacts,
    tools: &[ToolFacts],
    now: UnixTime,
) -> Result<Scope, Refusal> {
    if request.launcher != grant.launcher {
        return Err(Refusal {
            reason: "LauncherNotGranted",
            message: format!(
                "grant {:?} is for {}, not for {}",
                grant.name, grant.launcher, request.launcher
            ),
        });
    }
    if grant.expired(now) {
        return Err(Refusal {
            reason: "GrantExpired",
            message: format!(
                "grant {:?} to {} has expired: ask the subject to renew it",
                grant.name, grant.launcher
            ),
        });
    }
    let too_narrow = |what: String| Refusal {
        reason: "GrantTooNarrow",
        message: format!(
            "grant {:?} does not allow {what} to {}",
            grant.name, request.launcher
        ),
    };
    let mut workspaces = Vec::with_capacity(request.workspaces.len());
    for w in &request.workspaces {
        let allowed = grant
            .mode_of(&w.name)
            .ok_or_else(|| too_narrow(format!("workspace {:?}", w.name)))?;
        if w.asked && narrower(w.mode, allowed) != w.mode {
            return Err(too_narrow(format!(
                "workspace {:?} in mode '{}'",
                w.name,
                w.mode.as_str()
            )));
        }
        workspaces.push(WorkspaceClaim {
            name: w.name.clone(),
            mode: narrower(w.mode, allowed),
        });
    }
    if let Some(tool) = request.tools.iter().find(|t| !grant.tools.contains(t)) {
        return Err(too_narrow(format!("tool {tool:?}")));
    }
    let max = grant.max_token_lifetime();
    let lifetime = match request.lifetime {
        None => DEFAULT_TOKEN_LIFETIME.min(max),
        Some(asked) if asked > max => {
            return Err(Refusal {
                reason: "TokenLifetimeTooLong",
                message: format!(
                    "a token of {} s was asked for, but grant {:?} allows at most {} s",
                    asked.as_secs(),
                    grant.name,
                    max.as_secs()
                ),
            });
        }
        Some(asked) => asked,
    };
    let mut exp = now.saturating_add(lifetime.as_secs());
    if let Some(expires) = grant.expires {
        exp = exp.min(expires);
    }
    Ok(Scope {
        workspaces,
        gated_tools: request
            .tools
            .iter()
            .filter(|t| gated(t, tools))
            .cloned()
            .collect(),
        tools: request.tools.clone(),
        iat: now,
        exp,
    })
}

/// The scope of a person's own run (no grant): the modes the trust rules gave, the tools it
/// named with the gated ones marked, and a token of `lifetime` (at most
/// [`MAX_TOKEN_LIFETIME`]).
pub fn person_scope(
    auth: &Authorization,
    requested_tools: &[String],
    tools: &[ToolFacts],
    now: UnixTime,
    lifetime: Duration,
) -> Scope {
    Scope {
        workspaces: auth
            .modes
            .iter()
            .map(|(name, mode)| WorkspaceClaim {
                name: name.clone(),
                mode: *mode,
            })
            .collect(),
        tools: requested_tools.to_vec(),
        gated_tools: requested_tools
            .iter()
            .filter(|t| gated(t, tools))
            .cloned()
            .collect(),
        iat: now,
        exp: now.saturating_add(lifetime.min(MAX_TOKEN_LIFETIME).as_secs()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use WorkspaceMode::{ReadOnly as Ro, ReadWrite as Rw};
    use rstest::rstest;

    const NOW: UnixTime = 1_800_000_000;
    const LAUNCHER: &str = "schedule:team/nightly";

    fn grant() -> GrantFacts {
        GrantFacts {
            name: "nightly".into(),
            launcher: LAUNCHER.into(),
            workspaces: vec![("notes".into(), Ro), ("drafts".into(), Rw)],
            tools: vec!["search".into(), "email-send".into()],
            expires: Some(NOW + 7200),
            max_token_lifetime: None,
        }
    }

    fn tool_facts() -> Vec<ToolFacts> {
        vec![
            ToolFacts {
                name: "search".into(),
                grant: Grant::Auto,
                irreversible: false,
            },
            ToolFacts {
                name: "email-send".into(),
                grant: Grant::Gate,
                irreversible: true,
            },
        ]
    }

    fn ws(name: &str, mode: WorkspaceMode, asked: bool) -> DelegatedWorkspace {
        DelegatedWorkspace {
            name: name.into(),
            mode,
            asked,
        }
    }

    fn request(workspaces: Vec<DelegatedWorkspace>, tools: &[&str]) -> DelegationRequest {
        DelegationRequest {
            launcher: LAUNCHER.into(),
            workspaces,
            tools: tools.iter().map(|t| t.to_string()).collect(),
            lifetime: None,
        }
    }

    #[rstest]
    #[case::workspace_not_in_grant(request(vec![ws("secrets", Ro, true)], &[]), "GrantTooNarrow", "workspace \"secrets\"")]
    #[case::rw_where_grant_says_ro(request(vec![ws("notes", Rw, true)], &[]), "GrantTooNarrow", "mode 'rw'")]
    #[case::extra_tool(request(vec![ws("notes", Ro, true)], &["shell"]), "GrantTooNarrow", "tool \"shell\"")]
    #[case::other_launcher(DelegationRequest { launcher: "integration:email".into(), ..request(vec![], &[]) }, "LauncherNotGranted", "not for integration:email")]
    #[case::lifetime(DelegationRequest { lifetime: Some(Duration::from_secs(3601)), ..request(vec![], &[]) }, "TokenLifetimeTooLong", "at most 3600 s")]
    fn refusals_say_what_the_grant_lacks(
        #[case] r: DelegationRequest,
        #[case] reason: &str,
        #[case] message: &str,
    ) {
        let refusal = authorize(&r, &grant(), &tool_facts(), NOW).unwrap_err();
        assert_eq!(refusal.reason, reason);
        assert!(refusal.message.contains(message), "{}", refusal.message);
    }

    #[test]
    fn an_expired_grant_is_refused() {
        let r = request(vec![ws("notes", Ro, true)], &[]);
        authorize(&r, &grant(), &tool_facts(), NOW + 7199).unwrap();
        let refusal = authorize(&r, &grant(), &tool_facts(), NOW + 7200).unwrap_err();
        assert_eq!(refusal.reason, "GrantExpired");
    }

    #[test]
    fn a_default_mode_is_narrowed_to_the_grant_and_gated_tools_stay_gated() {
        let r = request(
            vec![ws("notes", Rw, false), ws("drafts", Rw, false)],
            &["search", "email-send"],
        );
        let scope = authorize(&r, &grant(), &tool_facts(), NOW).unwrap();
        assert_eq!(
            scope.workspaces,
            [
                WorkspaceClaim {
                    name: "notes".into(),
                    mode: Ro
                },
                WorkspaceClaim {
                    name: "drafts".into(),
                    mode: Rw
                }
            ]
        );
        assert_eq!(scope.gated_tools, ["email-send"]);
        assert_eq!((scope.iat, scope.exp), (NOW, NOW + 600));
    }

    #[test]
    fn the_token_never_outlives_the_grant_nor_its_maximum() {
        let r = request(vec![], &[]);
        let scope = authorize(&r, &grant(), &tool_facts(), NOW + 7000).unwrap();
        assert_eq!(scope.exp, NOW + 7200);
        let short = GrantFacts {
            max_token_lifetime: Some(Duration::from_secs(120)),
            ..grant()
        };
        let scope = authorize(&r, &short, &tool_facts(), NOW).unwrap();
        assert_eq!(scope.exp, NOW + 120);
        let long = GrantFacts {
            max_token_lifetime: Some(Duration::from_secs(86_400)),
            expires: None,
            ..grant()
        };
        let asked = DelegationRequest {
            lifetime: Some(Duration::from_secs(7200)),
            ..r
        };
        let refusal = authorize(&asked, &long, &tool_facts(), NOW).unwrap_err();
        assert_eq!(refusal.reason, "TokenLifetimeTooLong");
    }

    #[test]
    fn a_person_scope_marks_gated_and_unknown_tools() {
        let auth = Authorization {
            modes: vec![("notes".into(), Rw)],
            trust: vexa_core::Trust::Trusted,
            ungated_irreversible: false,
        };
        let tools = ["search".to_string(), "email-send".into(), "mystery".into()];
        let scope = person_scope(
            &auth,
            &tools,
            &tool_facts(),
            NOW,
            Duration::from_secs(86_400),
        );
        assert_eq!(scope.gated_tools, ["email-send", "mystery"]);
        assert_eq!(scope.exp, NOW + MAX_TOKEN_LIFETIME.as_secs());
        assert_eq!(scope.workspaces[0].mode, Rw);
    }
}
