//! The Card controller, part two, pure: what to do about a decided Card. An approved `record`
//! is committed into its workspace by a short trusted Job (`vexa-agent-worker apply-record`, in
//! the agent worker's image) that mounts the workspace's volume; the content reaches it in a
//! Secret the Job mounts (a record may be 256 KiB, too large for a variable), both owned by the
//! Card. The Job runs only while the Card holds the workspace's write lock (a rw Dispatch that
//! holds it is waited for), and at most once: a Card Applied or Failed is never applied again,
//! and the Job itself finds its own commit when retried.
//!
//! An approved `send` card whose Tool is `email.send` is sent by the operator itself, from the
//! owner's mailbox (`--mail-config`), with `vexa_email::send_once` and a Message-ID fixed by
//! the Card's UID (`card-<uid>@vexa.local`): a retry after a crash finds it in Sent and sends
//! nothing. Its arguments are the tool's (`{to, subject, body}`), checked here before anything
//! is sent: one recipient, one-line subject, bounded sizes, no other field.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaimVolumeSource, Secret, SecretVolumeSource, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use vexa_core::cards::{APPLY_RECORD_SUBCOMMAND, apply_env};
use vexa_core::names::bounded_name;
use vexa_crds::card::{Card, CardKind, CardPhase, SendProposal, Verdict};
use vexa_crds::{Tool, Workspace};
use vexa_email::{Mailbox, Message, Sent};

use crate::mail::MailboxEntry;

use crate::controllers::workspace::storage::Storage;
use crate::runtime::security::{JobBounds, trusted_job};

/// The holder a Card writes on a workspace's lock while its record is committed.
pub const CARD_HOLDER_PREFIX: &str = "card:";
/// The agent worker's binary in its image; the apply Job runs its `apply-record` subcommand.
pub const WORKER_COMMAND: &str = "vexa-agent-worker";
/// `app.kubernetes.io/component` of an apply Job.
pub const APPLY_COMPONENT: &str = "card-apply";
const VOLUME_MOUNT: &str = "/volume";
const CONTENT_MOUNT: &str = "/record";
const CONTENT_KEY: &str = "content";
/// Seconds an apply Job may run (it writes one file and makes one commit).
const APPLY_DEADLINE_SECONDS: i64 = 300;
/// Seconds a finished apply Job is kept: long enough to read why it failed.
const APPLY_TTL_SECONDS: i32 = 3600;

/// The holder identity of `card` on a lock.
pub fn holder(card: &Card) -> String {
    format!("{CARD_HOLDER_PREFIX}{}", card.name_any())
}

/// Name of the apply Job (and its Secret) of a Card.
pub fn apply_job_name(card: &Card) -> String {
    let suffix = "-apply";
    format!(
        "{}{suffix}",
        bounded_name(&card.name_any(), 63 - suffix.len())
    )
}

/// What the apply Job reported (its termination message).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The commit carrying the card.
    pub commit: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The bounded reason of a failure.
    pub reason: Option<String>,
}

/// How the apply Job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// No Job yet.
    Absent,
    /// Created, not finished.
    Running,
    /// Finished with a report (or none readable).
    Succeeded(Option<Report>),
    /// Failed, with a report if one was left and the Job's message.
    Failed(Option<Report>, String),
}

/// What the applier observed about a decided Card.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The record's Workspace, if it exists.
    pub workspace: Option<Workspace>,
    /// Who holds the workspace's lock, when it is held by someone alive other than this Card.
    pub busy_with: Option<String>,
    /// The apply Job.
    pub job: JobState,
    /// For a `send` card: the Tool it names, if it exists.
    pub tool: Option<Tool>,
    /// For a `send` card: the owner's mailbox, if the mail config has one.
    pub mailbox: Option<MailboxEntry>,
}

/// The tool whose calls the operator sends itself.
pub const EMAIL_SEND_TOOL: &str = "email.send";
/// The domain of the Message-ID of a sent card.
pub const MESSAGE_ID_DOMAIN: &str = "vexa.local";
/// The longest subject a send card may carry (characters; one header line).
pub const MAX_SUBJECT_CHARS: usize = 998;
/// The largest body a send card may carry (bytes).
pub const MAX_BODY_BYTES: usize = 128 * 1024;
/// The longest recipient address (RFC 5321 path limit).
pub const MAX_ADDRESS_LEN: usize = 254;

/// A message to send for an approved `send` card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The owner's mailbox.
    pub mailbox: Mailbox,
    /// The message, with the Card's fixed Message-ID.
    pub message: Message,
}

/// The next step for a Card.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do (undecided, informational, or already done).
    Nothing,
    /// Record the phase (rejected, or an approved card that is not a record).
    Phase(CardPhase),
    /// Wait for the workspace (its lock is held); look again later.
    Wait(String),
    /// Take the lock and create the Secret and the Job.
    Start(Box<(Secret, Job)>),
    /// Still applying.
    Applying,
    /// Done: Applied with the commit.
    Applied(String),
    /// Done: Failed with a bounded reason and a message.
    Failed(&'static str, String),
    /// Send the message (exactly once: `send_once` looks in Sent first).
    Send(Box<Outgoing>),
    /// Stay Approved with `Applied=False`, this reason and message; look again later.
    Hold(&'static str, String),
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sending {
    /// Applied (`Sent` or `AlreadySent`), with the condition's message.
    Applied(&'static str, String),
    /// A transient error: stays Approved with this reason and message; retried with backoff.
    Retry(&'static str, String),
    /// A permanent error: Failed with this reason and message.
    Failed(&'static str, String),
}

/// Whether a Card is finished: applied or failed records are never applied again.
pub fn is_done(card: &Card) -> bool {
    matches!(
        card.status.as_ref().and_then(|s| s.phase),
        Some(CardPhase::Applied | CardPhase::Failed | CardPhase::Rejected)
    )
}

/// Whether the Card still needs its workspace (approved record, not done): a lock it holds
/// is alive while this is true.
pub fn is_applying(card: &Card) -> bool {
    card.spec.kind == CardKind::Record
        && card
            .spec
            .decision
            .as_ref()
            .is_some_and(|d| d.verdict == Verdict::Approve)
        && !is_done(card)
}

/// Decides the next step for `card`, given what was seen. Pure.
pub fn step(card: &Card, seen: &Seen, image: &str) -> Step {
    let Some(decision) = &card.spec.decision else {
        return Step::Nothing;
    };
    if is_done(card) {
        return Step::Nothing;
    }
    if decision.verdict == Verdict::Reject {
        return Step::Phase(CardPhase::Rejected);
    }
    if let Some(send) = &card.spec.send {
        return send_step(card, send, seen);
    }
    let Some(record) = &card.spec.record else {
        // Any other approved card (a draft) has nothing to apply.
        let approved = card.status.as_ref().and_then(|s| s.phase) == Some(CardPhase::Approved);
        return if approved {
            Step::Nothing
        } else {
            Step::Phase(CardPhase::Approved)
        };
    };
    match &seen.job {
        JobState::Succeeded(Some(Report {
            commit: Some(sha), ..
        })) => return Step::Applied(sha.clone()),
        JobState::Succeeded(_) => {
            return Step::Failed(
                "NoReport",
                "the apply Job succeeded but left no commit in its report".into(),
            );
        }
        JobState::Failed(report, message) => {
            let (reason, text) = match report {
                Some(Report {
                    error: Some(e),
                    reason,
                    ..
                }) => (
                    reason_word(reason.as_deref()),
                    format!("applying the record failed: {e}"),
                ),
                _ => ("JobFailed", format!("the apply Job failed: {message}")),
            };
            return Step::Failed(reason, text);
        }
        JobState::Running => return Step::Applying,
        JobState::Absent => {}
    }
    let Some(ws) = &seen.workspace else {
        return Step::Failed(
            "WorkspaceNotFound",
            format!(
                "the Workspace {:?} the record is for does not exist",
                record.workspace
            ),
        );
    };
    if let Some(holder) = &seen.busy_with {
        return Step::Wait(format!(
            "the workspace {} is being written by {holder}; the record is committed once it is free",
            record.workspace
        ));
    }
    Step::Start(Box::new(children(card, ws, image)))
}

/// The next step of an approved, undone `send` card.
fn send_step(card: &Card, send: &SendProposal, seen: &Seen) -> Step {
    let Some(tool) = &seen.tool else {
        return Step::Failed(
            "ToolNotFound",
            format!(
                "the Tool {:?} the card calls does not exist; nothing was sent",
                send.tool
            ),
        );
    };
    if tool.spec.tool_name != EMAIL_SEND_TOOL {
        return Step::Failed(
            "UnsupportedTool",
            format!(
                "the Tool {:?} is {:?}; only {EMAIL_SEND_TOOL} cards are applied; nothing was sent",
                send.tool,
                bounded(&tool.spec.tool_name, 128)
            ),
        );
    }
    let args = match email_arguments(&send.arguments) {
        Ok(a) => a,
        Err(why) => {
            return Step::Failed(
                "BadArguments",
                format!("the {EMAIL_SEND_TOOL} arguments are refused: {why}; nothing was sent"),
            );
        }
    };
    let Some(entry) = &seen.mailbox else {
        return Step::Hold(
            "NoMailbox",
            format!(
                "no mailbox of {} in the operator's mail config; the card is sent once one is configured",
                card.spec.owner
            ),
        );
    };
    let Some(uid) = card.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
        return Step::Failed("NoUid", "the Card has no UID to name its message".into());
    };
    Step::Send(Box::new(Outgoing {
        mailbox: entry.mailbox.clone(),
        message: Message {
            from: entry.address.clone(),
            to: vec![args.to],
            subject: args.subject,
            body: args.body,
            message_id: message_id(uid),
        },
    }))
}

/// The Message-ID (without brackets) of the message of the Card with `uid`.
pub fn message_id(uid: &str) -> String {
    format!("card-{uid}@{MESSAGE_ID_DOMAIN}")
}

/// The arguments of an `email.send` card, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailArguments {
    /// The one recipient.
    pub to: String,
    /// One line.
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// `to` as the tool takes it (a list), or a single address.
#[derive(Deserialize)]
#[serde(untagged)]
enum Recipients {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArguments {
    to: Recipients,
    subject: String,
    body: String,
}

/// Parses and checks the arguments of an `email.send` card: a JSON object with exactly `to`
/// (one address, or a list of one), `subject` (one line, at most 998 characters, not blank)
/// and `body` (at most 128 KiB, no control characters but tab and line ends). Anything else
/// (another field such as `messageId` or `cc`, two recipients, CR/LF in the subject) is
/// refused with a short reason.
pub fn email_arguments(text: &str) -> Result<EmailArguments, String> {
    let shape = |e: serde_json::Error| format!("not a JSON object of to, subject and body ({e})");
    let value: serde_json::Value = serde_json::from_str(text).map_err(shape)?;
    if !value.is_object() {
        // serde would take a list of three for the three fields.
        return Err("not a JSON object of to, subject and body".into());
    }
    let raw: RawArguments = serde_json::from_value(value).map_err(shape)?;
    let to = match raw.to {
        Recipients::One(a) => a,
        Recipients::List(mut list) if list.len() == 1 => list.remove(0),
        Recipients::List(list) => {
            return Err(format!(
                "exactly one recipient is sent to, not {}",
                list.len()
            ));
        }
    };
    check_address(&to)?;
    if raw.subject.chars().any(char::is_control) {
        return Err("the subject holds a control character (CR/LF would inject headers)".into());
    }
    if raw.subject.trim().is_empty() {
        return Err("the subject is empty".into());
    }
    if raw.subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!(
            "the subject is longer than {MAX_SUBJECT_CHARS} characters"
        ));
    }
    if raw.body.len() > MAX_BODY_BYTES {
        return Err(format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    }
    if raw
        .body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("the body holds a control character".into());
    }
    Ok(EmailArguments {
        to,
        subject: raw.subject,
        body: raw.body,
    })
}

/// One plain address `local@domain`: dot-atom characters, one `@`, a dotted domain of letters,
/// digits and hyphens; no display name, no list, no spaces or control characters.
fn check_address(a: &str) -> Result<(), String> {
    let shown = bounded(a, 80);
    if a.len() > MAX_ADDRESS_LEN {
        return Err(format!("the recipient is longer than {MAX_ADDRESS_LEN}"));
    }
    let local_ok = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = a.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && local.chars().all(local_ok)
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && domain.split('.').all(label_ok)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("the recipient {shown:?} is not one plain address"))
    }
}

fn bounded(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What a `send_once` result means for the card whose message has `message_id`. Pure.
pub fn sending(result: &Result<Sent, vexa_email::Error>, message_id: &str) -> Sending {
    match result {
        Ok(Sent::Sent) => Sending::Applied("Sent", format!("sent as Message-ID <{message_id}>")),
        Ok(Sent::AlreadySent) => Sending::Applied(
            "AlreadySent",
            format!("Message-ID <{message_id}> was already in Sent; not sent again"),
        ),
        Err(e) if e.is_transient() => Sending::Retry(
            e.reason(),
            format!(
                "sending failed and is retried: {}",
                bounded(&e.to_string(), 1024)
            ),
        ),
        Err(e) => Sending::Failed(
            e.reason(),
            format!("sending failed: {}", bounded(&e.to_string(), 1024)),
        ),
    }
}

fn reason_word(reason: Option<&str>) -> &'static str {
    match reason {
        Some("UnsafePath") => "UnsafePath",
        Some("TooLarge") => "TooLarge",
        Some("GitFailed") => "GitFailed",
        Some("WriteFailed") => "WriteFailed",
        Some("ContentUnreadable") => "ContentUnreadable",
        _ => "ApplyFailed",
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The Secret carrying the record's content and the Job that commits it, both owned by the
/// Card. The Job runs as the agents' non-root user under the `restricted` profile, with no
/// service-account token; it mounts the whole volume (the folder exists: the Workspace is
/// prepared) and the Secret read-only.
pub fn children(card: &Card, ws: &Workspace, image: &str) -> (Secret, Job) {
    let name = apply_job_name(card);
    let ns = card.metadata.namespace.clone();
    let owner = card.controller_owner_ref(&()).map(|o| vec![o]);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "vexa-card".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            APPLY_COMPONENT.to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "vexa".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::FIELD_MANAGER.to_owned(),
        ),
    ]);
    let record = card.spec.record.clone().unwrap_or_else(|| {
        // Only called for record cards; an empty record fails the Job's path check.
        vexa_crds::card::RecordProposal {
            workspace: String::new(),
            path: String::new(),
            content: String::new(),
        }
    });
    let approver = card
        .spec
        .decision
        .as_ref()
        .and_then(|d| d.by.clone())
        // Decided before `by` existed: the owner (the only one who could decide, bar admins).
        .unwrap_or_else(|| card.spec.owner.clone());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ns.clone(),
            labels: Some(labels.clone()),
            owner_references: owner.clone(),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CONTENT_KEY.to_owned(),
            ByteString(record.content.into_bytes()),
        )])),
        ..Secret::default()
    };
    let storage = Storage::of(&ws.spec);
    let env = vec![
        env(apply_env::VOLUME, VOLUME_MOUNT),
        env(apply_env::SUBPATH, storage.path.clone()),
        env(
            apply_env::CARD,
            format!("{}/{}", ns.as_deref().unwrap_or_default(), card.name_any()),
        ),
        env(apply_env::TITLE, card.spec.title.clone()),
        env(
            apply_env::SOURCE_DISPATCH,
            card.spec.source_dispatch.clone().unwrap_or_default(),
        ),
        env(apply_env::APPROVED_BY, approver),
        env(apply_env::PATH, record.path),
        env(
            apply_env::CONTENT_FILE,
            format!("{CONTENT_MOUNT}/{CONTENT_KEY}"),
        ),
    ];
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: ns,
        labels: Some(labels),
        owner_references: owner,
        ..ObjectMeta::default()
    };
    let bounds = JobBounds {
        // A retry is harmless (the commit is found), but one is enough.
        backoff_limit: 1,
        deadline_seconds: APPLY_DEADLINE_SECONDS,
        ttl_seconds: APPLY_TTL_SECONDS,
    };
    let container = Container {
        name: "apply".into(),
        image: Some(image.to_owned()),
        command: Some(vec![WORKER_COMMAND.into()]),
        args: Some(vec![APPLY_RECORD_SUBCOMMAND.into()]),
        env: Some(env),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "volume".into(),
                mount_path: VOLUME_MOUNT.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "record".into(),
                mount_path: CONTENT_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "volume".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: storage.claim,
                read_only: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: "record".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let job = trusted_job(metadata, bounds, container, volumes);
    (secret, job)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;

    fn card(decision: Value, status: Value) -> Card {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Card",
            "metadata": {"name": "triage-1-notes", "namespace": "team", "uid": "c-1"},
            "spec": {
                "kind": "record", "owner": "alice", "sourceDispatch": "triage-1",
                "title": "Notes",
                "record": {"workspace": "alice-notes", "path": "m/a.md", "content": "# A\n"},
                "decision": decision,
            },
            "status": status,
        }))
        .unwrap()
    }

    fn workspace() -> Workspace {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Workspace",
            "metadata": {"name": "alice-notes", "namespace": "team"},
            "spec": {"id": "alice-notes", "owner": "alice",
                     "storage": {"persistentVolumeClaim": {"claimName": "vol", "subPath": "alice/notes"}}},
        }))
        .unwrap()
    }

    fn seen(job: JobState) -> Seen {
        Seen {
            workspace: Some(workspace()),
            busy_with: None,
            job,
            tool: None,
            mailbox: None,
        }
    }

    fn approved() -> Value {
        json!({"verdict": "approve", "by": "carol"})
    }

    #[test]
    fn an_approved_record_starts_a_job_that_commits_as_the_approver() {
        let Step::Start(children) =
            step(&card(approved(), json!({})), &seen(JobState::Absent), "img")
        else {
            panic!("expected a start");
        };
        let (secret, job) = *children;
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("triage-1-notes-apply")
        );
        assert_eq!(secret.data.unwrap()["content"].0, b"# A\n");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["apply-record".to_owned()][..]));
        let env: BTreeMap<_, _> = c
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert_eq!(env["VEXA_APPROVED_BY"], "carol");
        assert_eq!(env["VEXA_CARD"], "team/triage-1-notes");
        assert_eq!(env["VEXA_WORKSPACE_SUBPATH"], "alice/notes");
        assert_eq!(env["VEXA_RECORD_PATH"], "m/a.md");
        assert_eq!(env["VEXA_SOURCE_DISPATCH"], "triage-1");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.volumes.unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "vol"
        );
        assert_eq!(
            job.metadata.owner_references.unwrap()[0].uid,
            "c-1".to_owned()
        );
    }

    #[rstest]
    #[case::undecided(Value::Null, json!({}), JobState::Absent, "Nothing")]
    #[case::rejected(json!({"verdict": "reject", "by": "alice"}), json!({}), JobState::Absent, "Phase")]
    #[case::applied_never_again(approved(), json!({"phase": "applied"}), JobState::Absent, "Nothing")]
    #[case::failed_never_again(approved(), json!({"phase": "failed"}), JobState::Absent, "Nothing")]
    #[case::running(approved(), json!({"phase": "approved"}), JobState::Running, "Applying")]
    #[case::done(approved(), json!({"phase": "approved"}), JobState::Succeeded(Some(Report{commit: Some("abc".into()), error: None, reason: None})), "Applied")]
    #[case::no_report(approved(), json!({}), JobState::Succeeded(None), "Failed")]
    #[case::job_failed(approved(), json!({}), JobState::Failed(Some(Report{commit: None, error: Some("x".into()), reason: Some("UnsafePath".into())}), "BackoffLimitExceeded".into()), "Failed")]
    fn steps(
        #[case] decision: Value,
        #[case] status: Value,
        #[case] job: JobState,
        #[case] expected: &str,
    ) {
        let s = step(&card(decision, status), &seen(job), "img");
        assert!(format!("{s:?}").starts_with(expected), "{s:?}");
    }

    #[test]
    fn a_held_workspace_is_waited_for() {
        let mut s = seen(JobState::Absent);
        s.busy_with = Some("dispatch alice-chat".into());
        assert!(matches!(
            step(&card(approved(), json!({})), &s, "img"),
            Step::Wait(_)
        ));
    }

    #[test]
    fn a_missing_workspace_fails_the_card() {
        let mut s = seen(JobState::Absent);
        s.workspace = None;
        assert!(matches!(
            step(&card(approved(), json!({})), &s, "img"),
            Step::Failed("WorkspaceNotFound", _)
        ));
    }

    #[test]
    fn a_failure_reports_the_appliers_reason() {
        let job = JobState::Failed(
            Some(Report {
                commit: None,
                error: Some("bad path".into()),
                reason: Some("UnsafePath".into()),
            }),
            "BackoffLimitExceeded".into(),
        );
        assert!(matches!(
            step(&card(approved(), json!({})), &seen(job), "img"),
            Step::Failed("UnsafePath", _)
        ));
    }

    fn send_card(arguments: &str, decision: Value, status: Value) -> Card {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Card",
            "metadata": {"name": "triage-1-reply", "namespace": "team", "uid": "0b1c-uid"},
            "spec": {
                "kind": "send", "owner": "alice", "sourceDispatch": "triage-1",
                "title": "Reply to bob",
                "send": {"tool": "mail-send", "arguments": arguments},
                "decision": decision,
            },
            "status": status,
        }))
        .unwrap()
    }

    fn tool(tool_name: &str) -> Tool {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Tool",
            "metadata": {"name": "mail-send", "namespace": "team"},
            "spec": {"toolName": tool_name, "scope": "email:send", "grant": "gate",
                     "server": {"url": "http://mail.example/mcp"}, "audience": "mail"},
        }))
        .unwrap()
    }

    fn mailbox() -> MailboxEntry {
        serde_json::from_value(json!({
            "owner": "alice", "address": "alice@vexa.test", "id": "alice",
            "imap": {"host": "127.0.0.1", "port": 1143}, "smtp": {"host": "127.0.0.1", "port": 2525},
            "username": "alice", "passwordFile": "/run/alice",
        }))
        .unwrap()
    }

    fn send_seen(tool_name: Option<&str>, with_mailbox: bool) -> Seen {
        Seen {
            workspace: None,
            busy_with: None,
            job: JobState::Absent,
            tool: tool_name.map(tool),
            mailbox: with_mailbox.then(mailbox),
        }
    }

    fn args(to: Value, subject: &str, body: &str) -> String {
        json!({"to": to, "subject": subject, "body": body}).to_string()
    }

    fn good() -> String {
        args(json!(["bob@vexa.test"]), "Re: Thursday", "Yes.\n")
    }

    #[test]
    fn an_approved_email_card_is_sent_from_the_owners_mailbox_with_the_cards_message_id() {
        let card = send_card(&good(), approved(), json!({}));
        let Step::Send(out) = step(&card, &send_seen(Some("email.send"), true), "img") else {
            panic!("expected a send");
        };
        assert_eq!(out.mailbox.id, "alice");
        assert_eq!(
            out.message,
            Message {
                from: "alice@vexa.test".into(),
                to: vec!["bob@vexa.test".into()],
                subject: "Re: Thursday".into(),
                body: "Yes.\n".into(),
                message_id: "card-0b1c-uid@vexa.local".into(),
            }
        );
        vexa_email::validate_message_id(&out.message.message_id).unwrap();
        // A single address (not a list) is the same call.
        let single = send_card(
            &args(json!("bob@vexa.test"), "Re: Thursday", "Yes.\n"),
            approved(),
            json!({"phase": "approved"}),
        );
        assert!(matches!(
            step(&single, &send_seen(Some("email.send"), true), "img"),
            Step::Send(_)
        ));
    }

    #[rstest]
    #[case::undecided(Value::Null, json!({}), Some("email.send"), true, "Nothing")]
    #[case::rejected_sends_nothing(json!({"verdict": "reject", "by": "alice"}), json!({}), Some("email.send"), true, "Phase(Rejected)")]
    #[case::applied_never_again(approved(), json!({"phase": "applied"}), Some("email.send"), true, "Nothing")]
    #[case::failed_never_again(approved(), json!({"phase": "failed"}), Some("email.send"), true, "Nothing")]
    #[case::retry_while_approved(approved(), json!({"phase": "approved"}), Some("email.send"), true, "Send")]
    #[case::other_tool(approved(), json!({}), Some("slack.post"), true, "Failed(\"UnsupportedTool\"")]
    #[case::draft_tool(approved(), json!({}), Some("email.draft"), true, "Failed(\"UnsupportedTool\"")]
    #[case::no_tool(approved(), json!({}), None, true, "Failed(\"ToolNotFound\"")]
    #[case::no_mailbox(approved(), json!({}), Some("email.send"), false, "Hold(\"NoMailbox\"")]
    fn send_steps(
        #[case] decision: Value,
        #[case] status: Value,
        #[case] tool_name: Option<&str>,
        #[case] with_mailbox: bool,
        #[case] expected: &str,
    ) {
        let s = step(
            &send_card(&good(), decision, status),
            &send_seen(tool_name, with_mailbox),
            "img",
        );
        assert!(format!("{s:?}").starts_with(expected), "{s:?}");
    }

    #[rstest]
    #[case::not_json("to bob: hi")]
    #[case::not_an_object(r#"["bob@vexa.test", "hi", "x"]"#)]
    #[case::missing_body(r#"{"to": ["bob@vexa.test"], "subject": "hi"}"#)]
    #[case::extra_field_message_id(
        r#"{"to": ["bob@vexa.test"], "subject": "hi", "body": "x", "messageId": "evil@x"}"#
    )]
    #[case::extra_field_cc(
        r#"{"to": ["bob@vexa.test"], "subject": "hi", "body": "x", "cc": ["eve@evil.test"]}"#
    )]
    #[case::two_recipients(&args(json!(["bob@vexa.test", "eve@evil.test"]), "hi", "x"))]
    #[case::no_recipient(&args(json!([]), "hi", "x"))]
    #[case::two_recipients_in_one(&args(json!("bob@vexa.test, eve@evil.test"), "hi", "x"))]
    #[case::display_name(&args(json!("Bob <bob@vexa.test>"), "hi", "x"))]
    #[case::crlf_in_recipient(&args(json!("bob@vexa.test\r\nBcc: eve@evil.test"), "hi", "x"))]
    #[case::not_an_address(&args(json!("bob"), "hi", "x"))]
    #[case::comma_in_local_part(&args(json!("eve,bob@vexa.test"), "hi", "x"))]
    #[case::space_in_local_part(&args(json!("eve bob@vexa.test"), "hi", "x"))]
    #[case::leading_dot(&args(json!(".bob@vexa.test"), "hi", "x"))]
    #[case::trailing_dot(&args(json!("bob.@vexa.test"), "hi", "x"))]
    #[case::double_dot(&args(json!("b..ob@vexa.test"), "hi", "x"))]
    #[case::empty_local_part(&args(json!("@vexa.test"), "hi", "x"))]
    #[case::hyphen_label(&args(json!("bob@-vexa.test"), "hi", "x"))]
    #[case::hyphen_label_end(&args(json!("bob@vexa-.test"), "hi", "x"))]
    #[case::long_label(&args(json!(format!("bob@{}.test", "a".repeat(64))), "hi", "x"))]
    #[case::empty_domain_label(&args(json!("bob@vexa..test"), "hi", "x"))]
    #[case::huge_address(&args(json!(format!("{}@vexa.test", "b".repeat(300))), "hi", "x"))]
    #[case::crlf_in_subject(&args(json!(["bob@vexa.test"]), "hi\r\nBcc: eve@evil.test", "x"))]
    #[case::lf_in_subject(&args(json!(["bob@vexa.test"]), "hi\nBcc: eve@evil.test", "x"))]
    #[case::blank_subject(&args(json!(["bob@vexa.test"]), "  ", "x"))]
    #[case::huge_subject(&args(json!(["bob@vexa.test"]), &"s".repeat(999), "x"))]
    #[case::huge_body(&args(json!(["bob@vexa.test"]), "hi", &"x".repeat(MAX_BODY_BYTES + 1)))]
    #[case::nul_in_body(&args(json!(["bob@vexa.test"]), "hi", "a\u{0}b"))]
    #[case::wrong_type(r#"{"to": ["bob@vexa.test"], "subject": 7, "body": "x"}"#)]
    fn hostile_arguments_fail_the_card_and_send_nothing(#[case] arguments: &str) {
        assert!(
            email_arguments(arguments).is_err(),
            "{arguments:?} accepted"
        );
        let s = step(
            &send_card(arguments, approved(), json!({})),
            &send_seen(Some("email.send"), true),
            "img",
        );
        assert!(matches!(s, Step::Failed("BadArguments", _)), "{s:?}");
    }

    #[rstest]
    #[case::largest_subject(&args(json!(["bob@vexa.test"]), &"s".repeat(MAX_SUBJECT_CHARS), "x"))]
    #[case::largest_body(&args(json!(["bob@vexa.test"]), "hi", &"x".repeat(MAX_BODY_BYTES)))]
    #[case::lines_and_tabs(&args(json!(["bob@vexa.test"]), "Ré: ünïcode", "a\r\nb\n\tc"))]
    #[case::plus_address(&args(json!(["bob+vexa@mail.vexa-test.example"]), "hi", "x"))]
    fn fair_arguments_are_accepted(#[case] arguments: &str) {
        email_arguments(arguments).unwrap();
    }

    #[test]
    fn send_results_apply_retry_or_fail_the_card() {
        let id = "card-u@vexa.local";
        let applied = sending(&Ok(Sent::Sent), id);
        assert!(
            matches!(&applied, Sending::Applied("Sent", m) if m.contains("<card-u@vexa.local>")),
            "{applied:?}"
        );
        let again = sending(&Ok(Sent::AlreadySent), id);
        assert!(
            matches!(&again, Sending::Applied("AlreadySent", m) if m.contains(id)),
            "{again:?}"
        );
        let down = sending(
            &Err(vexa_email::Error::Timeout("127.0.0.1:1143".into())),
            id,
        );
        assert!(matches!(down, Sending::Retry("Timeout", _)), "{down:?}");
        let smtp = sending(&Err(vexa_email::Error::Smtp("421 busy".into())), id);
        assert!(matches!(smtp, Sending::Retry("Smtp", _)), "{smtp:?}");
        let refused = sending(&Err(vexa_email::Error::Invalid("bad".into())), id);
        assert!(
            matches!(refused, Sending::Failed("Invalid", _)),
            "{refused:?}"
        );
        let login = sending(
            &Err(vexa_email::Error::Login {
                user: "alice".into(),
                detail: "no".into(),
            }),
            id,
        );
        assert!(
            matches!(login, Sending::Failed("LoginRefused", _)),
            "{login:?}"
        );
    }
}
