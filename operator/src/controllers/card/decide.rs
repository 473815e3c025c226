//! From one `card` event of a dispatch's output stream to the Card to create, or the reason it
//! is refused. Pure: the agent wrote the event, so every field is hostile input; what the Card
//! says about ownership and provenance comes from the Dispatch, never from the event.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde_json::Value;
use vexa_core::cards::{
    MAX_BODY_CHARS as MAX_BODY, MAX_RECORD_CONTENT, MAX_TITLE_CHARS as MAX_TITLE, safe_record_path,
};
use vexa_core::names::{bounded_name, job_name};
use vexa_crds::Dispatch;
use vexa_crds::card::{Card, CardKind, CardSpec, RecordProposal};
use vexa_stream::follow::EntryId;

use crate::controllers::dispatch::children::DISPATCH_LABEL;

/// The most Cards one dispatch may propose; later ones are refused.
pub const MAX_CARDS_PER_DISPATCH: usize = 50;
/// The longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// The longest card id taken from the event as it is.
const MAX_CARD_ID: usize = 63;
/// The schema's limits (crds/src/card.rs) are checked here too, so a refusal names the field.
const MAX_PATH: usize = 1024;

/// Why a card event does not become a Card. Each is a bounded `reason` (events, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JSON object, or a field of the wrong type, or one a kind needs is missing.
    Malformed(String),
    /// A kind the Card schema does not know.
    UnknownKind(String),
    /// `send` Cards come only from the gateway, from a real gated call.
    SendFromStream,
    /// A field longer than the schema allows.
    TooLarge(&'static str),
    /// The record names a workspace the dispatch does not use.
    ForeignWorkspace(String),
    /// The record's path leaves the workspace or writes into git's own folder.
    UnsafePath(String),
    /// The card names an owner other than the dispatch's subject.
    ForeignOwner(String),
    /// The card names a source dispatch other than the one that streamed it.
    ForeignSource(String),
    /// The agent tried to decide its own card.
    DecisionFromAgent,
    /// More than [`MAX_CARDS_PER_DISPATCH`] cards.
    TooMany,
}

impl Refusal {
    /// Every reason [`Refusal::reason`] gives (the metric starts each at zero).
    pub const REASONS: [&'static str; 10] = [
        "CardMalformed",
        "CardUnknownKind",
        "CardSendFromStream",
        "CardTooLarge",
        "CardForeignWorkspace",
        "CardUnsafePath",
        "CardForeignOwner",
        "CardForeignSource",
        "CardDecisionFromAgent",
        "CardTooMany",
    ];

    /// The bounded reason: the Warning event's reason and the metric's label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "CardMalformed",
            Refusal::UnknownKind(_) => "CardUnknownKind",
            Refusal::SendFromStream => "CardSendFromStream",
            Refusal::TooLarge(_) => "CardTooLarge",
            Refusal::ForeignWorkspace(_) => "CardForeignWorkspace",
            Refusal::UnsafePath(_) => "CardUnsafePath",
            Refusal::ForeignOwner(_) => "CardForeignOwner",
            Refusal::ForeignSource(_) => "CardForeignSource",
            Refusal::DecisionFromAgent => "CardDecisionFromAgent",
            Refusal::TooMany => "CardTooMany",
        }
    }

    /// What a person reads in `kubectl describe dispatch`.
    pub fn message(&self, entry: EntryId) -> String {
        let what = match self {
            Refusal::Malformed(why) => format!("is malformed: {why}"),
            Refusal::UnknownKind(kind) => format!(
                "has the unknown kind {kind:?} (record, draft, suggestion, alert or digest)"
            ),
            Refusal::SendFromStream => {
                "is a send card: those come only from a gated tool call through the gateway"
                    .to_owned()
            }
            Refusal::TooLarge(field) => format!("has a {field} longer than a Card allows"),
            Refusal::ForeignWorkspace(ws) => {
                format!("records into workspace {ws:?}, which this dispatch does not use")
            }
            Refusal::UnsafePath(path) => format!(
                "records at {path:?}: a path must stay inside the workspace (relative, no '..', \
                 no empty segment, not under .git)"
            ),
            Refusal::ForeignOwner(owner) => format!(
                "names the owner {owner:?}: a card belongs to the dispatch's subject, always"
            ),
            Refusal::ForeignSource(source) => {
                format!("names the source dispatch {source:?}, not this one")
            }
            Refusal::DecisionFromAgent => {
                "carries a decision: only a person decides a card".to_owned()
            }
            Refusal::TooMany => {
                format!("is beyond the {MAX_CARDS_PER_DISPATCH} cards one dispatch may propose")
            }
        };
        format!("The card event at stream entry {entry} {what}; no Card was created.")
    }
}

/// The Card's name: `<dispatch>-<id>`, where `id` is the card's own `id` when it is a short DNS
/// label, else the stream entry's id (`<ms>-<seq>`): the same event always names the same Card,
/// so a replay of the stream adopts what it created before. At most 253 characters.
pub fn card_name(dispatch: &str, card_id: Option<&str>, entry: EntryId) -> String {
    let id = card_id
        .filter(|id| is_dns_label(id) && id.len() <= MAX_CARD_ID)
        .map_or_else(|| entry.to_string(), str::to_owned);
    let suffix = format!("-{id}");
    format!(
        "{}{suffix}",
        bounded_name(dispatch, MAX_NAME - suffix.len())
    )
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Turns the `index`-th card event (0-based, in stream order) of `dispatch`, read at `entry`,
/// into the Card to create.
pub fn decide(
    dispatch: &Dispatch,
    entry: EntryId,
    index: usize,
    card: &Value,
) -> Result<Card, Refusal> {
    if index >= MAX_CARDS_PER_DISPATCH {
        return Err(Refusal::TooMany);
    }
    let obj = card
        .as_object()
        .ok_or_else(|| Refusal::Malformed("the card is not a JSON object".into()))?;
    let text = |field: &'static str| -> Result<Option<&str>, Refusal> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(Refusal::Malformed(format!("{field} is not a string"))),
        }
    };
    let kind = match text("kind")? {
        None => return Err(Refusal::Malformed("kind is missing".into())),
        Some("record") => CardKind::Record,
        Some("draft") => CardKind::Draft,
        Some("suggestion") => CardKind::Suggestion,
        Some("alert") => CardKind::Alert,
        Some("digest") => CardKind::Digest,
        Some("send") => return Err(Refusal::SendFromStream),
        Some(other) => return Err(Refusal::UnknownKind(other.chars().take(64).collect())),
    };
    if obj.contains_key("send") {
        return Err(Refusal::SendFromStream);
    }
    if obj.get("decision").is_some_and(|d| !d.is_null()) {
        return Err(Refusal::DecisionFromAgent);
    }
    let subject = &dispatch.spec.identity.subject;
    if let Some(owner) = text("owner")?
        && owner != subject
    {
        return Err(Refusal::ForeignOwner(owner.chars().take(128).collect()));
    }
    let dispatch_name = dispatch.metadata.name.clone().unwrap_or_default();
    if let Some(source) = text("sourceDispatch")?
        && source != dispatch_name
    {
        return Err(Refusal::ForeignSource(source.chars().take(253).collect()));
    }
    let title = text("title")?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| Refusal::Malformed("title is missing or empty".into()))?;
    if title.chars().count() > MAX_TITLE {
        return Err(Refusal::TooLarge("title"));
    }
    let body = text("body")?;
    if body.is_some_and(|b| b.chars().count() > MAX_BODY) {
        return Err(Refusal::TooLarge("body"));
    }
    let record = match (kind, obj.get("record")) {
        (CardKind::Record, Some(r)) => Some(record(dispatch, r)?),
        (CardKind::Record, None) => {
            return Err(Refusal::Malformed("a record card needs record".into()));
        }
        (_, None | Some(Value::Null)) => None,
        (_, Some(_)) => {
            return Err(Refusal::Malformed(
                "record is only allowed on record cards".into(),
            ));
        }
    };

    let name = card_name(&dispatch_name, text("id").ok().flatten(), entry);
    let mut out = Card::new(
        &name,
        CardSpec {
            kind,
            owner: subject.clone(),
            source_dispatch: Some(dispatch_name.clone()),
            title: title.to_owned(),
            body: body.map(str::to_owned),
            record,
            send: None,
            decision: None,
        },
    );
    out.metadata.namespace = dispatch.metadata.namespace.clone();
    out.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/part-of".into(), "vexa".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            crate::FIELD_MANAGER.into(),
        ),
        (DISPATCH_LABEL.into(), job_name(&dispatch_name)),
    ]));
    out.metadata.owner_references = owner_reference(dispatch).map(|o| vec![o]);
    Ok(out)
}

fn record(dispatch: &Dispatch, r: &Value) -> Result<RecordProposal, Refusal> {
    let field = |f: &'static str| -> Result<&str, Refusal> {
        r.get(f)
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::Malformed(format!("record.{f} is missing or not a string")))
    };
    let workspace = field("workspace")?;
    let path = field("path")?;
    let content = field("content")?;
    if !dispatch.spec.workspaces.iter().any(|w| w.name == workspace) {
        return Err(Refusal::ForeignWorkspace(
            workspace.chars().take(253).collect(),
        ));
    }
    if path.len() > MAX_PATH {
        return Err(Refusal::TooLarge("record.path"));
    }
    if !safe_record_path(path) {
        return Err(Refusal::UnsafePath(path.to_owned()));
    }
    if content.len() > MAX_RECORD_CONTENT {
        return Err(Refusal::TooLarge("record.content"));
    }
    Ok(RecordProposal {
        workspace: workspace.to_owned(),
        path: path.to_owned(),
        content: content.to_owned(),
    })
}

/// The Dispatch as the Card's owner: the Card goes when its run is deleted.
fn owner_reference(dispatch: &Dispatch) -> Option<OwnerReference> {
    let mut o = dispatch.controller_owner_ref(&())?;
    // Deleting a Dispatch must not wait on its Cards.
    o.block_owner_deletion = None;
    Some(o)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    #[test]
    fn every_refusal_reason_is_listed() {
        let all = [
            Refusal::Malformed(String::new()),
            Refusal::UnknownKind(String::new()),
            Refusal::SendFromStream,
            Refusal::TooLarge(""),
            Refusal::ForeignWorkspace(String::new()),
            Refusal::UnsafePath(String::new()),
            Refusal::ForeignOwner(String::new()),
            Refusal::ForeignSource(String::new()),
            Refusal::DecisionFromAgent,
            Refusal::TooMany,
        ];
        let reasons: Vec<&str> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons, Refusal::REASONS);
    }

    const ENTRY: EntryId = EntryId {
        ms: 1_700_000_000_000,
        seq: 3,
    };

    fn dispatch() -> Dispatch {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Dispatch",
            "metadata": {"name": "triage-1", "namespace": "team", "uid": "u-1"},
            "spec": {
                "identity": {"subject": "alice", "launcher": "schedule:team/triage"},
                "runner": "claude",
                "workspaces": [{"name": "alice-notes", "mode": "ro"}],
                "trigger": "event",
                "start": {"entrypoint": {"inline": "triage"}},
            },
        }))
        .unwrap()
    }

    fn record_card() -> Value {
        json!({
            "id": "notes-1", "kind": "record", "title": "Meeting notes",
            "record": {"workspace": "alice-notes", "path": "meetings/a.md", "content": "# A\n"},
        })
    }

    fn with(mut card: Value, path: &str, value: Value) -> Value {
        let mut at = &mut card;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = at.get_mut(*p).unwrap();
        }
        at[parts[parts.len() - 1]] = value;
        card
    }

    #[test]
    fn a_record_card_becomes_a_card_owned_by_the_dispatch_subject() {
        let card = decide(&dispatch(), ENTRY, 0, &record_card()).unwrap();
        assert_eq!(card.metadata.name.as_deref(), Some("triage-1-notes-1"));
        assert_eq!(card.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(card.spec.owner, "alice");
        assert_eq!(card.spec.source_dispatch.as_deref(), Some("triage-1"));
        assert_eq!(card.spec.kind, CardKind::Record);
        assert_eq!(card.spec.decision, None);
        let record = card.spec.record.unwrap();
        assert_eq!(
            (record.workspace.as_str(), record.path.as_str()),
            ("alice-notes", "meetings/a.md")
        );
        let owner = &card.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Dispatch", "triage-1", "u-1")
        );
        assert_eq!(
            card.metadata.labels.unwrap()[DISPATCH_LABEL],
            "triage-1".to_owned()
        );
    }

    #[rstest]
    #[case::unknown_kind(with(record_card(), "kind", json!("exec")), "CardUnknownKind")]
    #[case::send_kind(json!({"kind": "send", "title": "t", "send": {"tool": "mail", "arguments": "{}"}}), "CardSendFromStream")]
    #[case::send_field_on_draft(json!({"kind": "draft", "title": "t", "send": {"tool": "mail", "arguments": "{}"}}), "CardSendFromStream")]
    #[case::oversize_content(with(record_card(), "record.content", json!("x".repeat(MAX_RECORD_CONTENT + 1))), "CardTooLarge")]
    #[case::oversize_title(with(record_card(), "title", json!("t".repeat(MAX_TITLE + 1))), "CardTooLarge")]
    #[case::oversize_body(with(record_card(), "body", json!("b".repeat(MAX_BODY + 1))), "CardTooLarge")]
    #[case::foreign_workspace(with(record_card(), "record.workspace", json!("bob-notes")), "CardForeignWorkspace")]
    #[case::dotdot(with(record_card(), "record.path", json!("meetings/../../etc/passwd")), "CardUnsafePath")]
    #[case::absolute(with(record_card(), "record.path", json!("/etc/passwd")), "CardUnsafePath")]
    #[case::git_config(with(record_card(), "record.path", json!(".git/hooks/post-commit")), "CardUnsafePath")]
    #[case::git_nested(with(record_card(), "record.path", json!("sub/.GIT/config")), "CardUnsafePath")]
    #[case::foreign_owner(with(record_card(), "owner", json!("bob")), "CardForeignOwner")]
    #[case::foreign_source(with(record_card(), "sourceDispatch", json!("other")), "CardForeignSource")]
    #[case::self_approved(with(record_card(), "decision", json!({"verdict": "approve", "by": "alice"})), "CardDecisionFromAgent")]
    #[case::not_an_object(json!("approve me"), "CardMalformed")]
    #[case::no_title(json!({"kind": "alert"}), "CardMalformed")]
    #[case::record_without_record(json!({"kind": "record", "title": "t"}), "CardMalformed")]
    #[case::record_on_alert(json!({"kind": "alert", "title": "t", "record": {"workspace": "alice-notes", "path": "a", "content": ""}}), "CardMalformed")]
    #[case::kind_not_string(json!({"kind": 7, "title": "t"}), "CardMalformed")]
    fn hostile_cards_are_refused_with_a_reason(#[case] card: Value, #[case] reason: &str) {
        let refused = decide(&dispatch(), ENTRY, 0, &card).unwrap_err();
        assert_eq!(refused.reason(), reason, "{refused:?}");
        assert!(refused.message(ENTRY).contains("1700000000000-3"));
    }

    #[test]
    fn the_owner_field_may_only_repeat_the_subject() {
        let card = decide(
            &dispatch(),
            ENTRY,
            0,
            &with(record_card(), "owner", json!("alice")),
        )
        .unwrap();
        assert_eq!(card.spec.owner, "alice");
    }

    #[test]
    fn the_fifty_first_card_is_refused() {
        let alert = json!({"kind": "alert", "title": "disk full"});
        assert!(decide(&dispatch(), ENTRY, MAX_CARDS_PER_DISPATCH - 1, &alert).is_ok());
        assert_eq!(
            decide(&dispatch(), ENTRY, MAX_CARDS_PER_DISPATCH, &alert).unwrap_err(),
            Refusal::TooMany
        );
    }

    #[rstest]
    #[case::own_id(Some("notes-1"), "triage-1-notes-1")]
    #[case::no_id(None, "triage-1-1700000000000-3")]
    #[case::uppercase(Some("Notes"), "triage-1-1700000000000-3")]
    #[case::dots(Some("a.b"), "triage-1-1700000000000-3")]
    #[case::slash(Some("../x"), "triage-1-1700000000000-3")]
    #[case::empty(Some(""), "triage-1-1700000000000-3")]
    #[case::leading_dash(Some("-x"), "triage-1-1700000000000-3")]
    fn card_names_are_deterministic(#[case] id: Option<&str>, #[case] name: &str) {
        assert_eq!(card_name("triage-1", id, ENTRY), name);
    }

    #[test]
    fn card_names_fit_a_dns_subdomain_and_stay_distinct() {
        let long = "d".repeat(253);
        let a = card_name(&long, Some(&"a".repeat(63)), ENTRY);
        let b = card_name(&long, Some(&format!("{}b", "a".repeat(62))), ENTRY);
        assert!(a.len() <= 253 && b.len() <= 253, "{}", a.len());
        assert_ne!(a, b);
        let too_long_id = card_name("d", Some(&"a".repeat(64)), ENTRY);
        assert_eq!(too_long_id, "d-1700000000000-3");
    }

    #[test]
    fn a_card_id_that_is_not_a_string_falls_back_to_the_entry() {
        let card = decide(&dispatch(), ENTRY, 0, &with(record_card(), "id", json!(5))).unwrap();
        assert_eq!(
            card.metadata.name.as_deref(),
            Some("triage-1-1700000000000-3")
        );
    }
}
