//! The Card controller, part two, pure: what to do about a decided Card. An approved `record`
//! is committed into its workspace by a short trusted Job (`vexa-agent-worker apply-record`, in
//! the agent worker's image) that mounts the workspace's volume; the content reaches it in a
//! Secret the Job mounts (a record may be 256 KiB, too large for a variable), both owned by the
//! Card. The Job runs only while the Card holds the workspace's write lock (a rw Dispatch that
//! holds it is waited for), and at most once: a Card Applied or Failed is never applied again,
//! and the Job itself finds its own commit when retried.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use vexa_core::cards::{APPLY_RECORD_SUBCOMMAND, apply_env};
use vexa_core::names::bounded_name;
use vexa_crds::Workspace;
use vexa_crds::card::{Card, CardKind, CardPhase, Verdict};

use crate::controllers::workspace::storage::Storage;
use crate::runtime::security::{restricted_container, restricted_pod};

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
    let Some(record) = &card.spec.record else {
        // A send card is executed by the integration that owns its tool, not here.
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
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: ns,
            labels: Some(labels.clone()),
            owner_references: owner,
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A retry is harmless (the commit is found), but one is enough.
            backoff_limit: Some(1),
            active_deadline_seconds: Some(APPLY_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(APPLY_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod()),
                    containers: vec![Container {
                        name: "apply".into(),
                        image: Some(image.to_owned()),
                        image_pull_policy: Some("IfNotPresent".into()),
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
                        security_context: Some(restricted_container()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), Quantity("10m".into())),
                                ("memory".to_owned(), Quantity("32Mi".into())),
                            ])),
                            limits: Some(BTreeMap::from([(
                                "memory".to_owned(),
                                Quantity("256Mi".into()),
                            )])),
                            ..ResourceRequirements::default()
                        }),
                        ..Container::default()
                    }],
                    volumes: Some(vec![
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
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    };
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
}
