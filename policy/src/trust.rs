//! Which mode each workspace gets, whether a run is trusted, and whether it may run at all.

use vexa_core::{Grant, Trigger, Trust, WorkspaceMode};

/// What a dispatch asks for, as the policy needs it: the operator builds it from a Dispatch's
/// spec, the gateway (later) from a dispatch token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRequest {
    /// On whose behalf the run happens.
    pub subject: String,
    /// Who or what started it: `user:…`, `schedule:…` or `integration:…`.
    pub launcher: String,
    /// What started it.
    pub trigger: Trigger,
    /// The workspaces it names, in order.
    pub workspaces: Vec<WantedWorkspace>,
    /// The names of the tools it asks for.
    pub tools: Vec<String>,
}

/// A workspace a dispatch names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedWorkspace {
    /// The Workspace object's name.
    pub name: String,
    /// The mode asked for; `None` leaves it to the trigger and the workspace's default.
    pub mode: Option<WorkspaceMode>,
}

/// What the policy needs to know about a Workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceFacts {
    /// The Workspace object's name.
    pub name: String,
    /// Its default mode.
    pub default_mode: WorkspaceMode,
}

/// What the policy needs to know about a Tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFacts {
    /// The Tool object's name.
    pub name: String,
    /// `auto` or `gate`.
    pub grant: Grant,
    /// Whether its effects cannot be undone.
    pub irreversible: bool,
}

/// The outcome of authorizing a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The mode of each workspace, in the order of the spec.
    pub modes: Vec<(String, WorkspaceMode)>,
    /// Derived trust.
    pub trust: Trust,
    /// Whether an irreversible tool runs without a gate (then the run is trusted whatever its
    /// modes).
    pub ungated_irreversible: bool,
}

impl Authorization {
    /// The workspaces the run writes.
    pub fn writes(&self) -> impl Iterator<Item = &str> {
        self.modes
            .iter()
            .filter(|(_, m)| *m == WorkspaceMode::ReadWrite)
            .map(|(n, _)| n.as_str())
    }

    /// Lowers each workspace's mode to the one `scope` gives it (a delegation grant narrowed a
    /// default), and derives the trust again. Never widens a mode.
    pub fn narrow(&mut self, scope: &crate::Scope) {
        for (name, mode) in &mut self.modes {
            if scope
                .workspaces
                .iter()
                .any(|w| &w.name == name && w.mode == WorkspaceMode::ReadOnly)
            {
                *mode = WorkspaceMode::ReadOnly;
            }
        }
        self.trust = derive_trust(&self.modes, self.ungated_irreversible);
    }
}

/// `trust` = every workspace is `ro` and every irreversible tool is gated (SPEC §3).
fn derive_trust(modes: &[(String, WorkspaceMode)], ungated_irreversible: bool) -> Trust {
    if modes.iter().all(|(_, m)| *m == WorkspaceMode::ReadOnly) && !ungated_irreversible {
        Trust::ProposeOnly
    } else {
        Trust::Trusted
    }
}

/// Why a dispatch may not run. `reason` is short and bounded (for conditions, events and
/// metric labels); `message` tells the person what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

/// The mode a workspace gets in a run: what the dispatch asked for, else read-only for an
/// untrusted trigger, else the workspace's default.
pub fn effective_mode(
    trigger: Trigger,
    requested: Option<WorkspaceMode>,
    default: WorkspaceMode,
) -> WorkspaceMode {
    match requested {
        Some(mode) => mode,
        None if !trigger.is_trusted() => WorkspaceMode::ReadOnly,
        None => default,
    }
}

/// Authorizes a dispatch against the workspaces and tools it names (which must all be given:
/// resolving references is the caller's job). Untrusted triggers must be propose-only: every
/// workspace read-only and every irreversible tool gated.
pub fn authorize(
    spec: &DispatchRequest,
    workspaces: &[WorkspaceFacts],
    tools: &[ToolFacts],
) -> Result<Authorization, Refusal> {
    let trusted_trigger = spec.trigger.is_trusted();
    let mut modes = Vec::with_capacity(spec.workspaces.len());
    for wanted in &spec.workspaces {
        let facts = workspaces
            .iter()
            .find(|w| w.name == wanted.name)
            .ok_or_else(|| Refusal {
                reason: "WorkspaceNotFound",
                message: format!("workspace {:?} is not known", wanted.name),
            })?;
        let mode = effective_mode(spec.trigger, wanted.mode, facts.default_mode);
        if mode == WorkspaceMode::ReadWrite && !trusted_trigger {
            return Err(Refusal {
                reason: "UntrustedTriggerWrites",
                message: format!(
                    "a dispatch with trigger '{}' is propose-only and may not write workspace {:?}: \
                     use mode 'ro' (its changes become Cards for a person to approve)",
                    spec.trigger.as_str(),
                    wanted.name
                ),
            });
        }
        modes.push((wanted.name.clone(), mode));
    }
    let mut ungated_irreversible = Vec::new();
    for name in &spec.tools {
        let facts = tools
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| Refusal {
                reason: "ToolNotFound",
                message: format!("tool {name:?} is not known"),
            })?;
        if facts.irreversible && facts.grant == Grant::Auto {
            ungated_irreversible.push(name.as_str());
        }
    }
    if !trusted_trigger && !ungated_irreversible.is_empty() {
        return Err(Refusal {
            reason: "UntrustedTriggerUngatedTool",
            message: format!(
                "a dispatch with trigger '{}' is propose-only, but tool(s) {} are irreversible and not gated: \
                 set their grant to 'gate' or leave them out",
                spec.trigger.as_str(),
                ungated_irreversible.join(", ")
            ),
        });
    }
    let ungated_irreversible = !ungated_irreversible.is_empty();
    Ok(Authorization {
        trust: derive_trust(&modes, ungated_irreversible),
        modes,
        ungated_irreversible,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spec(trigger: Trigger, mode: Option<WorkspaceMode>, tools: &[&str]) -> DispatchRequest {
        DispatchRequest {
            subject: "alice".into(),
            launcher: "user:alice".into(),
            trigger,
            workspaces: vec![WantedWorkspace {
                name: "notes".into(),
                mode,
            }],
            tools: tools.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn ws(default_mode: WorkspaceMode) -> Vec<WorkspaceFacts> {
        vec![WorkspaceFacts {
            name: "notes".into(),
            default_mode,
        }]
    }

    fn tools() -> Vec<ToolFacts> {
        vec![
            ToolFacts {
                name: "send".into(),
                grant: Grant::Gate,
                irreversible: true,
            },
            ToolFacts {
                name: "send-now".into(),
                grant: Grant::Auto,
                irreversible: true,
            },
            ToolFacts {
                name: "search".into(),
                grant: Grant::Auto,
                irreversible: false,
            },
        ]
    }

    use WorkspaceMode::{ReadOnly as Ro, ReadWrite as Rw};

    #[rstest]
    #[case::chat_defaults_to_workspace_mode(Trigger::Message, None, Rw, Rw)]
    #[case::chat_may_ask_ro(Trigger::Message, Some(Ro), Rw, Ro)]
    #[case::event_defaults_to_ro(Trigger::Event, None, Rw, Ro)]
    #[case::transcription_defaults_to_ro(Trigger::Transcription, None, Rw, Ro)]
    #[case::scheduled_may_write(Trigger::Scheduled, Some(Rw), Ro, Rw)]
    fn modes(
        #[case] trigger: Trigger,
        #[case] requested: Option<WorkspaceMode>,
        #[case] default: WorkspaceMode,
        #[case] expected: WorkspaceMode,
    ) {
        assert_eq!(effective_mode(trigger, requested, default), expected);
    }

    #[rstest]
    #[case::event(Trigger::Event)]
    #[case::transcription(Trigger::Transcription)]
    fn untrusted_triggers_may_not_write(#[case] trigger: Trigger) {
        let err = authorize(&spec(trigger, Some(Rw), &[]), &ws(Ro), &tools()).unwrap_err();
        assert_eq!(err.reason, "UntrustedTriggerWrites");
        assert!(err.message.contains("use mode 'ro'"), "{}", err.message);
    }

    #[test]
    fn untrusted_triggers_may_not_hold_ungated_irreversible_tools() {
        let err = authorize(
            &spec(Trigger::Event, None, &["send-now"]),
            &ws(Ro),
            &tools(),
        )
        .unwrap_err();
        assert_eq!(err.reason, "UntrustedTriggerUngatedTool");
        assert!(err.message.contains("send-now"));
    }

    #[test]
    fn propose_only_when_all_ro_and_irreversible_tools_gated() {
        let a = authorize(
            &spec(Trigger::Event, None, &["send", "search"]),
            &ws(Rw),
            &tools(),
        )
        .unwrap();
        assert_eq!(a.trust, Trust::ProposeOnly);
        assert_eq!(a.writes().count(), 0);
    }

    #[test]
    fn a_writing_chat_is_trusted() {
        let a = authorize(
            &spec(Trigger::Message, Some(Rw), &["search"]),
            &ws(Ro),
            &tools(),
        )
        .unwrap();
        assert_eq!(a.trust, Trust::Trusted);
        assert_eq!(a.writes().collect::<Vec<_>>(), vec!["notes"]);
    }

    #[test]
    fn a_read_only_chat_with_an_ungated_send_is_trusted_not_propose_only() {
        let a = authorize(
            &spec(Trigger::Message, Some(Ro), &["send-now"]),
            &ws(Ro),
            &tools(),
        )
        .unwrap();
        assert_eq!(a.trust, Trust::Trusted);
    }

    #[test]
    fn narrowing_to_a_grant_lowers_modes_and_derives_trust_again() {
        let mut a = authorize(
            &spec(Trigger::Scheduled, None, &["search"]),
            &ws(Rw),
            &tools(),
        )
        .unwrap();
        assert_eq!(a.trust, Trust::Trusted);
        let scope = crate::Scope {
            workspaces: vec![crate::token::WorkspaceClaim {
                name: "notes".into(),
                mode: Ro,
            }],
            tools: vec![],
            gated_tools: vec![],
            iat: 0,
            exp: 1,
        };
        a.narrow(&scope);
        assert_eq!(a.modes, [("notes".to_string(), Ro)]);
        assert_eq!(a.trust, Trust::ProposeOnly);
        let mut with_send = authorize(
            &spec(Trigger::Scheduled, None, &["send-now"]),
            &ws(Rw),
            &tools(),
        )
        .unwrap();
        with_send.narrow(&scope);
        assert_eq!(with_send.trust, Trust::Trusted);
    }

    #[test]
    fn unknown_references_are_refused_with_their_name() {
        let err =
            authorize(&spec(Trigger::Message, None, &["nope"]), &ws(Ro), &tools()).unwrap_err();
        assert_eq!(err.reason, "ToolNotFound");
        assert!(err.message.contains("\"nope\""));
        let err = authorize(&spec(Trigger::Message, None, &[]), &[], &tools()).unwrap_err();
        assert_eq!(err.reason, "WorkspaceNotFound");
    }
}
