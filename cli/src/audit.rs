//! `kubectl vexa audit`: a dispatch's records, each effect resolved to subject · launcher ·
//! scope, and `audit verify` / `audit export` of the whole log, through the streams API
//! (`vexa_audit` types both sides of it). Everything printed passes through [`for_terminal`].

use std::path::Path;

use vexa_audit::{Body, DispatchAudit, Event, Export, Jwks, Line, Report, ScopeRecord, Tamper};
use vexa_stream::api;

use crate::error::CliError;
use crate::safe::{for_terminal, json_for_terminal};

/// One record as a person reads it: `writer#seq  time  event  subject · launcher · scope`.
pub fn render(line: &Line) -> String {
    let Body::Record { effect, event } = &line.body else {
        return String::new();
    };
    let text = format!(
        "{}#{:<4} {}  {:<17} {} · {} · {}{}",
        line.writer,
        line.seq,
        line.time,
        event.kind(),
        effect.subject,
        effect.launcher,
        scope(&effect.scope),
        detail(event)
            .map(|d| format!("  ({d})"))
            .unwrap_or_default(),
    );
    for_terminal(&text).into_owned()
}

fn scope(s: &ScopeRecord) -> String {
    let workspaces: Vec<String> = s
        .workspaces
        .iter()
        .map(|w| match w.mode {
            Some(m) => format!("{}:{}", w.name, m.as_str()),
            None => w.name.clone(),
        })
        .collect();
    let tools = if s.tools.is_empty() {
        "no tools".to_owned()
    } else {
        format!("tools {}", s.tools.join(","))
    };
    format!("workspaces {} · {tools}", workspaces.join(","))
}

fn detail(e: &Event) -> Option<String> {
    match e {
        Event::Admitted | Event::EntryRemoved => None,
        Event::Refused { reason, message } => Some(format!("{reason}: {message}")),
        Event::TokenMinted { kid, exp } => Some(format!("key {kid}, expires {exp}")),
        Event::EntryRegistered {
            spiffe_id,
            entry_id,
        } => Some(format!("{spiffe_id}, entry {entry_id}")),
        Event::Stopped { reason } => Some(reason.clone()),
        Event::ToolCall {
            tool,
            mcp_method,
            decision,
            reason,
            arguments_sha256,
        } => Some(if arguments_sha256.is_empty() {
            format!("tool {tool} {mcp_method}: {decision} ({reason})")
        } else {
            format!(
                "tool {tool} {mcp_method}: {decision} ({reason}), arguments sha256 {arguments_sha256}"
            )
        }),
    }
}

/// Prints the records of `namespace/name`, grouped by dispatch UID (a name can be reused).
pub async fn show(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    json: bool,
) -> Result<(), CliError> {
    let id = vexa_core::dispatch_id(namespace, name);
    let request = http::Request::get(api::path(namespace, name, api::AUDIT))
        .body(Vec::new())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let audit: DispatchAudit = client
        .request(request)
        .await
        .map_err(|e| error(e, format!("reading the audit records of dispatch {id}"), || {
            format!("get on dispatches (vexa.ai) and on dispatches/audit (streams.vexa.ai) in namespace {namespace}")
        }))?;
    if audit.records.is_empty() {
        eprintln!("no audit records of dispatch {id}");
        return Ok(());
    }
    let mut uid = None;
    for line in &audit.records {
        if json {
            println!("{}", json_for_terminal(&serde_json::to_string(line)?));
            continue;
        }
        // The gateway's records name the dispatch by namespace and name only (it never sees
        // the UID): they belong to the run they fall within.
        if let Body::Record { effect, .. } = &line.body
            && !effect.dispatch.uid.is_empty()
            && uid.as_ref() != Some(&effect.dispatch.uid)
        {
            println!("dispatch {id} (uid {})", for_terminal(&effect.dispatch.uid));
            uid = Some(effect.dispatch.uid.clone());
        }
        println!("  {}", render(line));
    }
    Ok(())
}

/// The whole log and its keys, from the operator.
pub async fn fetch(client: &kube::Client) -> Result<Export, CliError> {
    let request = http::Request::get(format!("{}/{}", api::group_version_path(), api::AUDIT_LOG))
        .body(Vec::new())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    client.request(request).await.map_err(|e| {
        error(e, "reading the audit log".into(), || {
            "get on auditlog (streams.vexa.ai), cluster-wide: the ClusterRole vexa-auditor".into()
        })
    })
}

/// Writes `export` into `dir` as `<writer>.jsonl` and `jwks.json`.
pub fn export(export: &Export, dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    for (writer, text) in &export.chains {
        std::fs::write(dir.join(vexa_audit::file_name(writer)), text)?;
    }
    std::fs::write(
        dir.join("jwks.json"),
        serde_json::to_vec_pretty(&export.jwks)?,
    )?;
    for writer in export.chains.keys() {
        println!("{}", dir.join(vexa_audit::file_name(writer)).display());
    }
    println!("{}", dir.join("jwks.json").display());
    Ok(())
}

/// Verifies each chain against `jwks`; prints a summary per chain, and fails at the first bad
/// record of any.
pub fn verify(chains: &[(String, String)], keys: &Jwks) -> Result<(), CliError> {
    let mut failed = None;
    for (name, text) in chains {
        match vexa_audit::verify(text, keys) {
            Ok(report) => println!("{}", for_terminal(&summary(name, &report))),
            Err(t) => {
                eprintln!("{}", for_terminal(&format!("{name}: TAMPERED: {t}")));
                failed.get_or_insert((name.clone(), t));
            }
        }
    }
    match failed {
        None => Ok(()),
        Some((name, t)) => Err(CliError::Tampered {
            chain: name,
            line: t.line(),
            seq: t.seq(),
            what: tamper_kind(&t).into(),
        }),
    }
}

fn tamper_kind(t: &Tamper) -> &'static str {
    match t {
        Tamper::Malformed { .. } => "not an audit line",
        Tamper::WrongWriter { .. } => "another writer's line",
        Tamper::Edited { .. } => "edited",
        Tamper::Deleted { .. } => "records deleted before it",
        Tamper::Reordered { .. } => "reordered",
        Tamper::BadCheckpoint { .. } => "bad checkpoint",
    }
}

/// `operator: 12 lines intact (10 records, 2 checkpoints); signed through seq 11; 1 line not yet signed`.
pub fn summary(name: &str, r: &Report) -> String {
    let signed = match r.signed_through {
        Some(seq) => format!("signed through seq {seq}"),
        None => "no checkpoint yet".to_owned(),
    };
    let mut s = format!(
        "{name}: {} lines intact ({} records, {} checkpoints); {signed}",
        r.lines, r.records, r.checkpoints
    );
    if r.unsigned_tail > 0 {
        s.push_str(&format!(
            "; the last {} line(s) are linked but not yet signed (a deletion of them could not be told)",
            r.unsigned_tail
        ));
    }
    for (seq, file) in &r.recovered {
        s.push_str(&format!(
            "; seq {seq} records a torn line the writer set aside in {file}"
        ));
    }
    s
}

fn error(e: kube::Error, action: String, needs: impl FnOnce() -> String) -> CliError {
    match e {
        kube::Error::Api(s) if s.code == 403 => CliError::Forbidden {
            action,
            needs: needs(),
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 404 => CliError::NoStreamsApi {
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 503 => CliError::StreamsUnavailable {
            action,
            message: s.message.clone(),
        },
        other => CliError::kube(action, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexa_audit::{DispatchRef, Effect, WorkspaceGrant};
    use vexa_core::WorkspaceMode;

    #[test]
    fn a_record_reads_as_subject_launcher_scope_with_control_sequences_shown() {
        let line = Line {
            seq: 7,
            time: "2026-12-05T12:00:00.000Z".into(),
            writer: "operator".into(),
            prev: vexa_audit::GENESIS.into(),
            body: Body::Record {
                effect: Effect {
                    dispatch: DispatchRef {
                        namespace: "team".into(),
                        name: "d".into(),
                        uid: "u".into(),
                    },
                    subject: "alice".into(),
                    launcher: "schedule:team/nightly".into(),
                    scope: ScopeRecord {
                        workspaces: vec![
                            WorkspaceGrant {
                                name: "notes".into(),
                                mode: Some(WorkspaceMode::ReadWrite),
                            },
                            WorkspaceGrant {
                                name: "wiki".into(),
                                mode: None,
                            },
                        ],
                        tools: vec!["search".into()],
                    },
                },
                event: Event::Refused {
                    reason: "GrantMissing".into(),
                    message: "no grant \u{1b}]52;c;x\u{7}".into(),
                },
            },
        };
        let text = render(&line);
        assert!(
            text.starts_with("operator#7    2026-12-05T12:00:00.000Z  refused"),
            "{text}"
        );
        assert!(
            text.contains(
                "alice · schedule:team/nightly · workspaces notes:rw,wiki · tools search"
            ),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("(GrantMissing: no grant ^[]52;c;x^G)"),
            "{text}"
        );
    }

    #[test]
    fn a_tool_call_reads_as_subject_launcher_tool_scope_decision_reason() {
        let line = Line {
            seq: 2,
            time: "2026-12-05T12:00:01.000Z".into(),
            writer: "gateway".into(),
            prev: vexa_audit::GENESIS.into(),
            body: Body::Record {
                effect: Effect {
                    dispatch: DispatchRef {
                        namespace: "team".into(),
                        name: "d".into(),
                        uid: String::new(),
                    },
                    subject: "alice".into(),
                    launcher: "user:alice".into(),
                    scope: ScopeRecord {
                        workspaces: vec![],
                        tools: vec!["notes".into(), "mail".into()],
                    },
                },
                event: Event::ToolCall {
                    tool: "mail".into(),
                    mcp_method: "tools/call".into(),
                    decision: "gated".into(),
                    reason: "ProposalCreated".into(),
                    arguments_sha256: "ab12".into(),
                },
            },
        };
        let text = render(&line);
        assert!(text.starts_with("gateway#2"), "{text}");
        assert!(
            text.contains("tool_call         alice · user:alice · workspaces  · tools notes,mail"),
            "{text}"
        );
        assert!(
            text.contains("(tool mail tools/call: gated (ProposalCreated), arguments sha256 ab12)"),
            "{text}"
        );
    }
}
