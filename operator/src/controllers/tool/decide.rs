//! The Tool decision, pure: from the Tool and what the probes found, its conditions
//! (`Reachable`, `AudienceKnown`, and `Ready` from both) and the events of a change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use vexa_crds::{Tool, ToolStatus};

use super::probe::Reach;
use crate::runtime::conditions::{ConditionType, Conditions, find};
use crate::runtime::events::Note;

/// What the directory of audiences said about the Tool's `audience`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceCheck {
    /// No directory is configured (`--keycloak-url` unset): nothing was asked.
    NotConfigured,
    /// The audience is a client there.
    Known,
    /// It is not.
    Unknown,
    /// The audience is a client, but the Tool's `scope` is no client scope there: the
    /// exchange, which asks for it by name, would be refused (`invalid_scope`).
    ScopeUnknown,
    /// The directory could not be asked: why.
    Failed(String),
}

/// Everything `decide` needs besides the Tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What the MCP `initialize` POST found.
    pub reach: Reach,
    /// What the directory said about the audience.
    pub audience: AudienceCheck,
    /// Where the audience was looked up (for messages), e.g. `Keycloak realm "vexa" at …`.
    pub directory: String,
}

/// A Tool's readiness, as the metric counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Readiness {
    /// `Ready=True`.
    Ready,
    /// `Ready=False`.
    NotReady,
}

impl Readiness {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "true",
            Readiness::NotReady => "false",
        }
    }
}

/// What the reconcile should do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write (`None`: it is unchanged).
    pub status: Option<ToolStatus>,
    /// Events to publish (only when `Ready` changes).
    pub notes: Vec<Note>,
    /// What the metric counts.
    pub readiness: Readiness,
}

/// Decides `tool`'s status from what was observed at `now`.
pub fn decide(tool: &Tool, seen: &Observed, now: &Time) -> Decision {
    let old = tool.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = tool.metadata.generation;
    let url = &tool.spec.server.url;
    let audience = &tool.spec.audience;
    let scope = &tool.spec.scope;
    let mut conditions = Conditions::new(&mut status.conditions, tool.metadata.generation, now);

    let reachable = match &seen.reach {
        Reach::Answered(code) => {
            conditions.set(
                ConditionType::Reachable,
                true,
                "ServerAnswered",
                &format!("the MCP server at {url} answered an initialize with HTTP {code}"),
            );
            true
        }
        Reach::Unreachable(why) => {
            conditions.set(
                ConditionType::Reachable,
                false,
                "ServerUnreachable",
                &format!("the MCP server at {url} did not answer an initialize: {why}"),
            );
            false
        }
    };
    let where_ = &seen.directory;
    match &seen.audience {
        AudienceCheck::NotConfigured => conditions.set_unknown(
            ConditionType::AudienceKnown,
            "KeycloakNotConfigured",
            "the operator has no --keycloak-url, so whether the gateway can exchange tokens for \
             this audience is not checked",
        ),
        AudienceCheck::Known => conditions.set(
            ConditionType::AudienceKnown,
            true,
            "ClientFound",
            &format!("{audience:?} is a client of {where_}"),
        ),
        AudienceCheck::Unknown => conditions.set(
            ConditionType::AudienceKnown,
            false,
            "AudienceUnknown",
            &format!(
                "{audience:?} is not a client of {where_}: the gateway could not exchange a \
                 token for it; create the client or correct spec.audience"
            ),
        ),
        AudienceCheck::ScopeUnknown => conditions.set(
            ConditionType::AudienceKnown,
            false,
            "ScopeUnknown",
            &format!(
                "{audience:?} is a client of {where_}, but {scope:?} is not a client scope \
                 there: the gateway asks for it by name in each exchange and would be refused \
                 (invalid_scope); create the client scope or correct spec.scope"
            ),
        ),
        AudienceCheck::Failed(why) => conditions.set_unknown(
            ConditionType::AudienceKnown,
            "KeycloakUnavailable",
            &format!("{where_} could not be asked whether {audience:?} is a client: {why}"),
        ),
    }

    let (ready, reason, message) = if url.starts_with("https://") {
        (
            false,
            "TlsUpstreamUnsupported",
            format!(
                "tool calls would be refused: the MCP gateway reaches tools over plain HTTP \
                 only and never sends a token in clear text to {url}; serve the tool on an \
                 http:// in-cluster address"
            ),
        )
    } else if !reachable {
        (
            false,
            "ServerUnreachable",
            format!(
                "tool calls would fail: the MCP server at {url} does not answer (see condition \
                 Reachable)"
            ),
        )
    } else {
        match &seen.audience {
            AudienceCheck::Unknown => (
                false,
                "AudienceUnknown",
                format!(
                    "tool calls would fail: the gateway cannot exchange a token for audience \
                     {audience:?} (see condition AudienceKnown)"
                ),
            ),
            AudienceCheck::ScopeUnknown => (
                false,
                "ScopeUnknown",
                format!(
                    "tool calls would fail: the gateway cannot exchange a token with scope \
                     {scope:?} (see condition AudienceKnown)"
                ),
            ),
            AudienceCheck::Failed(_) => (
                false,
                "KeycloakUnavailable",
                format!(
                    "tool calls would fail while {where_} cannot be reached (see condition \
                     AudienceKnown)"
                ),
            ),
            AudienceCheck::Known => (
                true,
                "Ready",
                format!("the MCP server answers and {audience:?} is a known audience"),
            ),
            AudienceCheck::NotConfigured => (
                true,
                "Ready",
                "the MCP server answers (the audience is not checked: no Keycloak configured)"
                    .to_owned(),
            ),
        }
    };
    conditions.ready(ready, reason, &message);

    let was =
        find(&old.conditions, ConditionType::Ready).map(|c| (c.status.clone(), c.reason.clone()));
    let mut notes = Vec::new();
    if was
        != Some((
            if ready { "True" } else { "False" }.to_owned(),
            reason.to_owned(),
        ))
    {
        notes.push(if ready {
            Note::normal(reason, Some(message), "Probe")
        } else {
            Note::warning(reason, Some(message), "Probe")
        });
    }
    Decision {
        status: (status != old).then_some(status),
        notes,
        readiness: if ready {
            Readiness::Ready
        } else {
            Readiness::NotReady
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn tool() -> Tool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "vexa.ai/v1", "kind": "Tool",
            "metadata": {"name": "notes", "namespace": "t", "generation": 3},
            "spec": {"toolName": "notes.append", "scope": "notes:append", "grant": "auto",
                "server": {"url": "http://notes.t.svc:8080/mcp"}, "audience": "vexa-notes"},
        }))
        .unwrap()
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn seen(reach: Reach, audience: AudienceCheck) -> Observed {
        Observed {
            reach,
            audience,
            directory: "Keycloak realm \"vexa\" at http://kc".into(),
        }
    }

    fn condition(status: &ToolStatus, t: ConditionType) -> (String, String, String) {
        let c = find(&status.conditions, t).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[rstest]
    #[case::answers_and_known(
        Reach::Answered(401),
        AudienceCheck::Known,
        "True",
        "Ready",
        "True",
        "True"
    )]
    #[case::answers_without_keycloak(
        Reach::Answered(200),
        AudienceCheck::NotConfigured,
        "True",
        "Ready",
        "True",
        "Unknown"
    )]
    #[case::connection_refused(Reach::Unreachable("cannot connect: Connection refused".into()), AudienceCheck::Known, "False", "ServerUnreachable", "False", "True")]
    #[case::unreachable_wins_over_unknown_audience(Reach::Unreachable("no answer within 5 s".into()), AudienceCheck::Unknown, "False", "ServerUnreachable", "False", "False")]
    #[case::audience_unknown(
        Reach::Answered(405),
        AudienceCheck::Unknown,
        "False",
        "AudienceUnknown",
        "True",
        "False"
    )]
    #[case::scope_unknown(
        Reach::Answered(401),
        AudienceCheck::ScopeUnknown,
        "False",
        "ScopeUnknown",
        "True",
        "False"
    )]
    #[case::keycloak_down(Reach::Answered(200), AudienceCheck::Failed("connection refused".into()), "False", "KeycloakUnavailable", "True", "Unknown")]
    fn ready_follows_reachability_and_audience(
        #[case] reach: Reach,
        #[case] audience: AudienceCheck,
        #[case] ready: &str,
        #[case] reason: &str,
        #[case] reachable: &str,
        #[case] known: &str,
    ) {
        let d = decide(&tool(), &seen(reach, audience), &at(10));
        let status = d.status.unwrap();
        assert_eq!(status.observed_generation, Some(3));
        let (s, r, _) = condition(&status, ConditionType::Ready);
        assert_eq!((s.as_str(), r.as_str()), (ready, reason));
        assert_eq!(condition(&status, ConditionType::Reachable).0, reachable);
        assert_eq!(condition(&status, ConditionType::AudienceKnown).0, known);
        assert_eq!(d.readiness == Readiness::Ready, ready == "True");
    }

    #[test]
    fn an_https_server_is_not_ready_because_the_gateway_would_refuse_it() {
        let mut t = tool();
        t.spec.server.url = "https://notes.example.org/mcp".into();
        let d = decide(
            &t,
            &seen(Reach::Answered(401), AudienceCheck::Known),
            &at(10),
        );
        let (s, r, m) = condition(d.status.as_ref().unwrap(), ConditionType::Ready);
        assert_eq!(
            (s.as_str(), r.as_str()),
            ("False", "TlsUpstreamUnsupported")
        );
        assert!(m.contains("https://notes.example.org/mcp"), "{m}");
    }

    #[test]
    fn an_unreachable_server_says_why_and_where() {
        let d = decide(
            &tool(),
            &seen(
                Reach::Unreachable("cannot connect: Connection refused (os error 111)".into()),
                AudienceCheck::NotConfigured,
            ),
            &at(10),
        );
        let status = d.status.unwrap();
        let (_, _, message) = condition(&status, ConditionType::Reachable);
        assert_eq!(
            message,
            "the MCP server at http://notes.t.svc:8080/mcp did not answer an initialize: cannot \
             connect: Connection refused (os error 111)"
        );
        let (s, r, m) = condition(&status, ConditionType::AudienceKnown);
        assert_eq!(
            (s.as_str(), r.as_str()),
            ("Unknown", "KeycloakNotConfigured")
        );
        assert!(m.contains("--keycloak-url"), "{m}");
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].warning);
        assert_eq!(d.notes[0].reason, "ServerUnreachable");
    }

    #[test]
    fn an_unknown_audience_names_the_audience_and_the_realm() {
        let d = decide(
            &tool(),
            &seen(Reach::Answered(401), AudienceCheck::Unknown),
            &at(10),
        );
        let (_, _, m) = condition(d.status.as_ref().unwrap(), ConditionType::AudienceKnown);
        assert!(
            m.contains("\"vexa-notes\" is not a client of Keycloak realm \"vexa\""),
            "{m}"
        );
    }

    #[test]
    fn the_same_state_again_writes_nothing_and_says_nothing() {
        let mut t = tool();
        let first = decide(
            &t,
            &seen(Reach::Answered(401), AudienceCheck::Known),
            &at(10),
        );
        assert_eq!(first.notes.len(), 1);
        assert!(!first.notes[0].warning);
        t.status = first.status;
        let again = decide(
            &t,
            &seen(Reach::Answered(401), AudienceCheck::Known),
            &at(70),
        );
        assert_eq!(again.status, None);
        assert!(again.notes.is_empty());
    }

    #[test]
    fn a_tool_that_breaks_warns_once_and_recovers_with_a_normal_event() {
        let mut t = tool();
        t.status = decide(
            &t,
            &seen(Reach::Answered(200), AudienceCheck::Known),
            &at(10),
        )
        .status;
        let broken = seen(
            Reach::Unreachable("no answer within 5 s".into()),
            AudienceCheck::Known,
        );
        let d = decide(&t, &broken, &at(70));
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].warning);
        t.status = d.status;
        let ready = find(&t.status.as_ref().unwrap().conditions, ConditionType::Ready).unwrap();
        assert_eq!(ready.last_transition_time, at(70));
        let d = decide(&t, &broken, &at(130));
        assert!(d.notes.is_empty());
        assert_eq!(d.status, None);
        let d = decide(
            &t,
            &seen(Reach::Answered(200), AudienceCheck::Known),
            &at(190),
        );
        assert_eq!(d.notes.len(), 1);
        assert!(!d.notes[0].warning);
        assert_eq!(d.notes[0].reason, "Ready");
    }

    #[test]
    fn a_new_generation_is_observed() {
        let mut t = tool();
        t.status = decide(
            &t,
            &seen(Reach::Answered(200), AudienceCheck::Known),
            &at(10),
        )
        .status;
        t.metadata.generation = Some(4);
        let d = decide(
            &t,
            &seen(Reach::Answered(200), AudienceCheck::Known),
            &at(20),
        );
        let status = d.status.unwrap();
        assert_eq!(status.observed_generation, Some(4));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }
}
