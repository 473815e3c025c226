//! Who may act: whether the user who creates a Dispatch may claim its launcher, subject and
//! trigger (what admission decides, SPEC §5.1), and whether a dispatch's chain of custody
//! holds as far as the objects show it (what the operator checks again: the subject's
//! Identity, its delegation grants and the workspaces' owners).
//!
//! The chart's ValidatingAdmissionPolicy (`charts/vexa/templates/admission.yaml`) states the
//! admission rules in CEL; `evals/tests/admission.rs` proves it refuses the same cases.

use std::time::Duration;

use vexa_core::{Trigger, WorkspaceMode};

use crate::delegation::{self, DelegationRequest, Scope};
use crate::token::UnixTime;
use crate::{DispatchRequest, Refusal};

/// The prefix of a person's launcher.
pub const USER_LAUNCHER: &str = "user:";
/// The prefix of a schedule's launcher (reserved to the service accounts the chart names).
pub const SCHEDULE_LAUNCHER: &str = "schedule:";
/// The prefix of an integration's launcher (reserved to the service accounts the chart names).
pub const INTEGRATION_LAUNCHER: &str = "integration:";
/// The RBAC verb on `identities.vexa.ai/<subject>` that lets a user act for that subject.
pub const ACT_AS_VERB: &str = "act-as";

/// Who or what started a run, parsed from `spec.identity.launcher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher<'a> {
    /// A person, by their Kubernetes user name.
    User(&'a str),
    /// A Schedule, `<namespace>/<name>`.
    Schedule(&'a str),
    /// An integration, by name.
    Integration(&'a str),
}

impl<'a> Launcher<'a> {
    /// Parses a launcher; anything else is refused (the CRD's pattern already refuses it).
    pub fn parse(launcher: &'a str) -> Result<Self, Refusal> {
        if let Some(user) = launcher.strip_prefix(USER_LAUNCHER) {
            Ok(Self::User(user))
        } else if let Some(s) = launcher.strip_prefix(SCHEDULE_LAUNCHER) {
            Ok(Self::Schedule(s))
        } else if let Some(i) = launcher.strip_prefix(INTEGRATION_LAUNCHER) {
            Ok(Self::Integration(i))
        } else {
            Err(Refusal {
                reason: "LauncherMalformed",
                message: format!(
                    "launcher {launcher:?} is none of user:<name>, schedule:<namespace>/<name>, \
                     integration:<name>"
                ),
            })
        }
    }

    /// Whether only the service accounts the chart names may use it.
    pub fn is_reserved(self) -> bool {
        !matches!(self, Self::User(_))
    }
}

/// The user who sends the request, as the API server authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// `request.userInfo.username`.
    pub username: String,
    /// `request.userInfo.groups`.
    pub groups: Vec<String>,
}

/// The cluster's settings for admission (chart values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionRules {
    /// User names (`system:serviceaccount:<ns>:<name>`) that may use `schedule:` and
    /// `integration:` launchers and any trigger: the operator's own and those the chart names.
    pub launcher_accounts: Vec<String>,
    /// The user name of the operator: the only one that writes a Dispatch's status.
    pub operator: String,
    /// Groups whose members are not checked (by default `system:masters`, who may
    /// impersonate anyone anyway).
    pub exempt_groups: Vec<String>,
}

/// What is known about whether a person may act for a subject other than themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActFor {
    /// The subject's Identity lists the user in `kubernetesUsers`.
    pub mapped_by_identity: bool,
    /// RBAC allows the user the verb [`ACT_AS_VERB`] on `identities/<subject>`.
    pub act_as_allowed: bool,
}

/// What admission decides on a Dispatch's creation: the launcher is the requesting person
/// (`user:<their username>`), or a reserved launcher used by a service account the chart
/// names; only those accounts may use another trigger than `message`; a person's subject is
/// their own or one they may act for.
pub fn admit(
    requester: &Requester,
    rules: &AdmissionRules,
    dispatch: &DispatchRequest,
    act_for: ActFor,
) -> Result<(), Refusal> {
    if requester
        .groups
        .iter()
        .any(|g| rules.exempt_groups.contains(g))
    {
        return Ok(());
    }
    let launcher = Launcher::parse(&dispatch.launcher)?;
    if rules.launcher_accounts.contains(&requester.username) {
        if let Launcher::User(_) = launcher {
            return Err(Refusal {
                reason: "LauncherNotRequester",
                message: format!(
                    "service account {} may launch only as schedule: or integration:, not as a \
                     person ({})",
                    requester.username, dispatch.launcher
                ),
            });
        }
        return Ok(());
    }
    if launcher.is_reserved() {
        return Err(Refusal {
            reason: "LauncherReserved",
            message: format!(
                "launcher {:?} is reserved to the service accounts the chart names \
                 (admission.launcherServiceAccounts); a person launches as user:{}",
                dispatch.launcher, requester.username
            ),
        });
    }
    if launcher != Launcher::User(&requester.username) {
        return Err(Refusal {
            reason: "LauncherNotRequester",
            message: format!(
                "launcher must be user:{} (the requesting user), not {:?}",
                requester.username, dispatch.launcher
            ),
        });
    }
    persons_trigger(dispatch.trigger)?;
    if dispatch.subject != requester.username
        && !act_for.mapped_by_identity
        && !act_for.act_as_allowed
    {
        return Err(not_permitted(&requester.username, &dispatch.subject));
    }
    Ok(())
}

/// Only the operator writes a Dispatch's status (and the exempt groups).
pub fn may_write_status(requester: &Requester, rules: &AdmissionRules) -> Result<(), Refusal> {
    if requester.username == rules.operator
        || requester
            .groups
            .iter()
            .any(|g| rules.exempt_groups.contains(g))
    {
        return Ok(());
    }
    Err(Refusal {
        reason: "StatusReserved",
        message: format!(
            "only the operator ({}) writes a Dispatch's status, not {}",
            rules.operator, requester.username
        ),
    })
}

/// Only the subject itself (the user of that name) or an exempt group creates, changes or
/// deletes an Identity: it says who acts for the subject and what the subject delegates.
pub fn may_change_identity(
    requester: &Requester,
    rules: &AdmissionRules,
    subject: &str,
) -> Result<(), Refusal> {
    if requester.username == subject
        || requester
            .groups
            .iter()
            .any(|g| rules.exempt_groups.contains(g))
    {
        return Ok(());
    }
    Err(Refusal {
        reason: "IdentityNotOwn",
        message: format!(
            "only the subject {subject:?} (or an admin) may create, change or delete its \
             Identity, not {}",
            requester.username
        ),
    })
}

/// What the operator knows of an Identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFacts {
    /// `spec.subject`.
    pub subject: String,
    /// `spec.kubernetesUsers`.
    pub kubernetes_users: Vec<String>,
    /// `spec.grants`.
    pub grants: Vec<GrantFacts>,
}

/// What the operator knows of a delegation grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFacts {
    /// Its name.
    pub name: String,
    /// The launcher it is for.
    pub launcher: String,
    /// Workspaces with the widest mode each allows.
    pub workspaces: Vec<(String, WorkspaceMode)>,
    /// Tools it allows.
    pub tools: Vec<String>,
    /// `expires`, Unix seconds: the grant is expired from then on.
    pub expires: Option<UnixTime>,
    /// `maxTokenLifetimeSeconds` (see [`GrantFacts::max_token_lifetime`]).
    pub max_token_lifetime: Option<Duration>,
}

impl GrantFacts {
    /// Whether it allows `workspace` in `mode` (`rw` allows `ro`).
    fn allows(&self, workspace: &str, mode: WorkspaceMode) -> bool {
        self.workspaces
            .iter()
            .any(|(w, m)| w == workspace && (*m == WorkspaceMode::ReadWrite || *m == mode))
    }
}

/// A workspace of the run and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedWorkspace {
    /// The Workspace object's name.
    pub name: String,
    /// `spec.owner`.
    pub owner: String,
    /// The mode the run gets (after [`crate::authorize`]).
    pub mode: WorkspaceMode,
}

/// What the operator checks again, without knowing who created the Dispatch: a person's
/// launcher comes with a person's trigger and a subject they may act for; a schedule or
/// integration holds a grant from the subject's Identity that [`delegation::authorize`]
/// accepts at `now` (every workspace in its mode, every tool); every workspace is the
/// subject's own, or its owner's Identity grants this launcher that workspace in that mode.
///
/// For a schedule or integration it returns the grant's scope: a workspace mode the dispatch
/// did not ask for may be narrower there than in `workspaces` (narrowed to the grant), and the
/// run must get the scope's (see [`crate::Authorization::narrow`]). It knows no Tool, so its
/// `gated_tools` lists every tool: mint a token from [`delegation::authorize`] with the
/// Tools' facts instead (which also checks the grant again at each re-mint).
pub fn check_custody(
    dispatch: &DispatchRequest,
    workspaces: &[OwnedWorkspace],
    identities: &[IdentityFacts],
    act_as_allowed: bool,
    now: UnixTime,
) -> Result<Option<Scope>, Refusal> {
    let identity_of = |subject: &str| identities.iter().find(|i| i.subject == subject);
    let scope = match Launcher::parse(&dispatch.launcher)? {
        Launcher::User(user) => {
            persons_trigger(dispatch.trigger)?;
            let mapped = identity_of(&dispatch.subject)
                .is_some_and(|i| i.kubernetes_users.iter().any(|u| u == user));
            if user != dispatch.subject && !mapped && !act_as_allowed {
                return Err(not_permitted(user, &dispatch.subject));
            }
            None
        }
        Launcher::Schedule(_) | Launcher::Integration(_) => {
            let grant = usable_grant(identity_of(&dispatch.subject), dispatch, now)?;
            let request = DelegationRequest::of(
                dispatch,
                workspaces.iter().map(|w| (w.name.as_str(), w.mode)),
            );
            // The tools' facts only mark the gated ones in the scope; whether the run may have
            // them at all is decided here by the grant alone.
            let scope = delegation::authorize(&request, grant, &[], now).map_err(|r| Refusal {
                message: format!("{} (subject {:?})", r.message, dispatch.subject),
                ..r
            })?;
            Some(scope)
        }
    };
    let mode_of = |w: &OwnedWorkspace| {
        scope
            .as_ref()
            .and_then(|s| s.workspaces.iter().find(|c| c.name == w.name))
            .map_or(w.mode, |c| c.mode)
    };
    for w in workspaces.iter().filter(|w| w.owner != dispatch.subject) {
        let mode = mode_of(w);
        let granted = identity_of(&w.owner).is_some_and(|owner| {
            owner.grants.iter().any(|g| {
                !g.expired(now) && g.launcher == dispatch.launcher && g.allows(&w.name, mode)
            })
        });
        if !granted {
            return Err(Refusal {
                reason: "WorkspaceNotGranted",
                message: format!(
                    "workspace {:?} belongs to {:?}, not to the subject {:?}, and {:?} grants \
                     {} no access to it in mode '{}'",
                    w.name,
                    w.owner,
                    dispatch.subject,
                    w.owner,
                    dispatch.launcher,
                    mode.as_str()
                ),
            });
        }
    }
    Ok(scope)
}

fn usable_grant<'a>(
    identity: Option<&'a IdentityFacts>,
    dispatch: &DispatchRequest,
    now: UnixTime,
) -> Result<&'a GrantFacts, Refusal> {
    let Some(identity) = identity else {
        return Err(Refusal {
            reason: "NoDelegationGrant",
            message: format!(
                "{} acts for {:?} only with a delegation grant from an Identity with subject \
                 {:?} in this namespace, and there is none",
                dispatch.launcher, dispatch.subject, dispatch.subject
            ),
        });
    };
    let mut for_launcher = identity
        .grants
        .iter()
        .filter(|g| g.launcher == dispatch.launcher);
    let Some(first) = for_launcher.clone().next() else {
        return Err(Refusal {
            reason: "NoDelegationGrant",
            message: format!(
                "the Identity of {:?} grants nothing to {}",
                dispatch.subject, dispatch.launcher
            ),
        });
    };
    for_launcher
        .find(|g| !g.expired(now))
        .ok_or_else(|| Refusal {
            reason: "GrantExpired",
            message: format!(
                "grant {:?} of subject {:?} to {} has expired",
                first.name, dispatch.subject, dispatch.launcher
            ),
        })
}

fn persons_trigger(trigger: Trigger) -> Result<(), Refusal> {
    if trigger == Trigger::Message {
        return Ok(());
    }
    Err(Refusal {
        reason: "TriggerNotPersons",
        message: format!(
            "a person's dispatch has trigger 'message'; '{}' is for the schedules and \
             integrations the chart names",
            trigger.as_str()
        ),
    })
}

fn not_permitted(user: &str, subject: &str) -> Refusal {
    Refusal {
        reason: "SubjectNotPermitted",
        message: format!(
            "user {user} may not act for subject {subject:?}: use your own subject, be listed in \
             its Identity's kubernetesUsers, or be granted '{ACT_AS_VERB}' on \
             identities.vexa.ai/{subject}"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::WantedWorkspace;
    use WorkspaceMode::{ReadOnly as Ro, ReadWrite as Rw};
    use rstest::rstest;

    const SCHEDULER: &str = "system:serviceaccount:vexa-system:scheduler";
    const NOW: UnixTime = 1_800_000_000;

    fn rules() -> AdmissionRules {
        AdmissionRules {
            launcher_accounts: vec![SCHEDULER.into()],
            operator: "system:serviceaccount:vexa-system:vexa".into(),
            exempt_groups: vec!["system:masters".into()],
        }
    }

    fn person(name: &str) -> Requester {
        Requester {
            username: name.into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    fn dispatch(subject: &str, launcher: &str, trigger: Trigger) -> DispatchRequest {
        DispatchRequest {
            subject: subject.into(),
            launcher: launcher.into(),
            trigger,
            workspaces: vec![WantedWorkspace {
                name: "notes".into(),
                mode: None,
            }],
            tools: vec![],
        }
    }

    #[rstest]
    #[case::own_chat("bob", "user:bob", Trigger::Message, None)]
    #[case::another_subject("alice", "user:bob", Trigger::Message, Some("SubjectNotPermitted"))]
    #[case::another_launcher("alice", "user:alice", Trigger::Message, Some("LauncherNotRequester"))]
    #[case::own_subject_other_launcher(
        "bob",
        "user:alice",
        Trigger::Message,
        Some("LauncherNotRequester")
    )]
    #[case::schedule(
        "bob",
        "schedule:ns/nightly",
        Trigger::Scheduled,
        Some("LauncherReserved")
    )]
    #[case::integration("bob", "integration:email", Trigger::Event, Some("LauncherReserved"))]
    #[case::event("bob", "user:bob", Trigger::Event, Some("TriggerNotPersons"))]
    #[case::scheduled("bob", "user:bob", Trigger::Scheduled, Some("TriggerNotPersons"))]
    #[case::transcription("bob", "user:bob", Trigger::Transcription, Some("TriggerNotPersons"))]
    #[case::prefix_is_not_a_name(
        "bob",
        "user:bobby",
        Trigger::Message,
        Some("LauncherNotRequester")
    )]
    fn a_person_acts_only_as_themselves(
        #[case] subject: &str,
        #[case] launcher: &str,
        #[case] trigger: Trigger,
        #[case] refused: Option<&str>,
    ) {
        let got = admit(
            &person("bob"),
            &rules(),
            &dispatch(subject, launcher, trigger),
            ActFor::default(),
        );
        assert_eq!(got.as_ref().err().map(|r| r.reason), refused, "{got:?}");
        if let Err(r) = got {
            assert!(!r.message.is_empty());
        }
    }

    #[test]
    fn another_subject_needs_a_mapping_or_act_as() {
        let d = dispatch("alice", "user:bob", Trigger::Message);
        for act_for in [
            ActFor {
                mapped_by_identity: true,
                act_as_allowed: false,
            },
            ActFor {
                mapped_by_identity: false,
                act_as_allowed: true,
            },
        ] {
            admit(&person("bob"), &rules(), &d, act_for).unwrap();
        }
        let r = admit(&person("bob"), &rules(), &d, ActFor::default()).unwrap_err();
        assert!(r.message.contains("act-as"), "{}", r.message);
    }

    #[test]
    fn a_named_service_account_uses_reserved_launchers_but_never_a_persons() {
        let sa = person(SCHEDULER);
        admit(
            &sa,
            &rules(),
            &dispatch("alice", "schedule:ns/nightly", Trigger::Scheduled),
            ActFor::default(),
        )
        .unwrap();
        admit(
            &sa,
            &rules(),
            &dispatch("alice", "integration:email", Trigger::Event),
            ActFor::default(),
        )
        .unwrap();
        let r = admit(
            &sa,
            &rules(),
            &dispatch("alice", "user:alice", Trigger::Message),
            ActFor::default(),
        )
        .unwrap_err();
        assert_eq!(r.reason, "LauncherNotRequester");
    }

    #[test]
    fn another_service_account_is_a_requester_like_any_other() {
        let other = person("system:serviceaccount:tenant:ci");
        let r = admit(
            &other,
            &rules(),
            &dispatch("alice", "schedule:ns/nightly", Trigger::Scheduled),
            ActFor::default(),
        )
        .unwrap_err();
        assert_eq!(r.reason, "LauncherReserved");
    }

    #[test]
    fn exempt_groups_and_only_the_operator_write_status() {
        let admin = Requester {
            username: "vexa-admin".into(),
            groups: vec!["system:masters".into()],
        };
        admit(
            &admin,
            &rules(),
            &dispatch("alice", "user:alice", Trigger::Event),
            ActFor::default(),
        )
        .unwrap();
        may_write_status(&admin, &rules()).unwrap();
        may_write_status(&person("system:serviceaccount:vexa-system:vexa"), &rules()).unwrap();
        let r = may_write_status(&person("bob"), &rules()).unwrap_err();
        assert_eq!(r.reason, "StatusReserved");
    }

    #[test]
    fn only_the_subject_changes_its_identity() {
        may_change_identity(&person("alice"), &rules(), "alice").unwrap();
        let r = may_change_identity(&person("bob"), &rules(), "alice").unwrap_err();
        assert_eq!(r.reason, "IdentityNotOwn");
        assert!(r.message.contains("not bob"), "{}", r.message);
    }

    fn alice(grants: Vec<GrantFacts>, users: &[&str]) -> IdentityFacts {
        IdentityFacts {
            subject: "alice".into(),
            kubernetes_users: users.iter().map(|u| u.to_string()).collect(),
            grants,
        }
    }

    fn grant(launcher: &str, mode: WorkspaceMode, tools: &[&str], expired: bool) -> GrantFacts {
        GrantFacts {
            name: "g".into(),
            launcher: launcher.into(),
            workspaces: vec![("notes".into(), mode)],
            tools: tools.iter().map(|t| t.to_string()).collect(),
            expires: Some(if expired { NOW } else { NOW + 1 }),
            max_token_lifetime: None,
        }
    }

    fn owned(owner: &str, mode: WorkspaceMode) -> Vec<OwnedWorkspace> {
        vec![OwnedWorkspace {
            name: "notes".into(),
            owner: owner.into(),
            mode,
        }]
    }

    #[rstest]
    #[case::own(dispatch("alice", "user:alice", Trigger::Message), vec![], false, None)]
    #[case::stranger(dispatch("alice", "user:bob", Trigger::Message), vec![alice(vec![], &[])], false, Some("SubjectNotPermitted"))]
    #[case::mapped(dispatch("alice", "user:bob", Trigger::Message), vec![alice(vec![], &["bob"])], false, None)]
    #[case::act_as(dispatch("alice", "user:bob", Trigger::Message), vec![], true, None)]
    #[case::persons_event(dispatch("alice", "user:alice", Trigger::Event), vec![], false, Some("TriggerNotPersons"))]
    #[case::no_identity(dispatch("alice", "integration:email", Trigger::Event), vec![], false, Some("NoDelegationGrant"))]
    #[case::no_grant(dispatch("alice", "integration:email", Trigger::Event), vec![alice(vec![grant("integration:chat", Rw, &[], false)], &[])], false, Some("NoDelegationGrant"))]
    #[case::expired(dispatch("alice", "integration:email", Trigger::Event), vec![alice(vec![grant("integration:email", Rw, &[], true)], &[])], false, Some("GrantExpired"))]
    #[case::granted(dispatch("alice", "integration:email", Trigger::Event), vec![alice(vec![grant("integration:email", Ro, &[], false)], &[])], false, None)]
    fn the_operator_checks_the_chain_of_custody(
        #[case] d: DispatchRequest,
        #[case] identities: Vec<IdentityFacts>,
        #[case] act_as: bool,
        #[case] refused: Option<&str>,
    ) {
        let got = check_custody(&d, &owned("alice", Ro), &identities, act_as, NOW);
        assert_eq!(got.as_ref().err().map(|r| r.reason), refused, "{got:?}");
    }

    #[test]
    fn a_grant_is_only_narrowed() {
        let mut d = dispatch("alice", "schedule:ns/nightly", Trigger::Scheduled);
        let ids = [alice(
            vec![grant("schedule:ns/nightly", Ro, &["search"], false)],
            &[],
        )];
        // A default mode (none asked for) is narrowed to the grant's...
        let scope = check_custody(&d, &owned("alice", Rw), &ids, false, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(scope.workspaces[0].mode, Ro);
        // ...an asked-for `rw` where the grant says `ro` is refused.
        d.workspaces[0].mode = Some(Rw);
        let r = check_custody(&d, &owned("alice", Rw), &ids, false, NOW).unwrap_err();
        assert_eq!(r.reason, "GrantTooNarrow");
        assert!(r.message.contains("'rw'"), "{}", r.message);
        d.workspaces[0].mode = Some(Ro);
        check_custody(&d, &owned("alice", Ro), &ids, false, NOW).unwrap();
        d.tools = vec!["send".into()];
        let r = check_custody(&d, &owned("alice", Ro), &ids, false, NOW).unwrap_err();
        assert!(r.message.contains("\"send\""), "{}", r.message);
    }

    #[test]
    fn someone_elses_workspace_needs_the_owners_grant() {
        let d = dispatch("bob", "user:bob", Trigger::Message);
        let r = check_custody(&d, &owned("alice", Ro), &[], false, NOW).unwrap_err();
        assert_eq!(r.reason, "WorkspaceNotGranted");
        assert!(r.message.contains("belongs to \"alice\""), "{}", r.message);

        let d = dispatch("bob", "integration:email", Trigger::Event);
        let bob = IdentityFacts {
            subject: "bob".into(),
            kubernetes_users: vec![],
            grants: vec![grant("integration:email", Rw, &[], false)],
        };
        let r = check_custody(
            &d,
            &owned("alice", Ro),
            std::slice::from_ref(&bob),
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(r.reason, "WorkspaceNotGranted");
        let ids = [
            bob,
            alice(vec![grant("integration:email", Ro, &[], false)], &[]),
        ];
        check_custody(&d, &owned("alice", Ro), &ids, false, NOW).unwrap();
    }

    #[test]
    fn a_foreign_workspace_is_checked_in_the_narrowed_mode() {
        // Bob's own grant allows alice's workspace only `ro`, and so does alice's: the `rw`
        // default narrows to `ro` and alice's grant covers that.
        let d = dispatch("bob", "integration:email", Trigger::Event);
        let bob = IdentityFacts {
            subject: "bob".into(),
            kubernetes_users: vec![],
            grants: vec![grant("integration:email", Ro, &[], false)],
        };
        let ids = [
            bob,
            alice(vec![grant("integration:email", Ro, &[], false)], &[]),
        ];
        let scope = check_custody(&d, &owned("alice", Rw), &ids, false, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(scope.workspaces[0].mode, Ro);
    }
}
