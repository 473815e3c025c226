//! The writer and the verifier together: every tampering is named at its line.

use std::path::Path;

use vexa_core::WorkspaceMode;

use crate::sign::testing::TestKey;
use crate::*;

const KEYS: [TestKey; 2] = [TestKey("k1", "secret-1"), TestKey("k0", "old-secret")];

fn effect(name: &str) -> Effect {
    Effect {
        dispatch: DispatchRef {
            namespace: "team".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        subject: "alice".into(),
        launcher: "schedule:team/nightly".into(),
        scope: ScopeRecord {
            workspaces: vec![WorkspaceGrant {
                name: "notes".into(),
                mode: Some(WorkspaceMode::ReadOnly),
            }],
            tools: vec!["search".into()],
        },
    }
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::open(dir, "operator")
        .unwrap()
        .with_signer(Box::new(TestKey("k1", "secret-1")), 3)
}

/// Records a1..aN (admitted) with a checkpoint after every third record.
fn chain(dir: &Path, n: usize) -> String {
    let mut log = open(dir);
    for i in 1..=n {
        log.append(&effect(&format!("a{i}")), Event::Admitted)
            .unwrap();
    }
    read(dir)
}

fn read(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("operator.jsonl")).unwrap()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_written_chain_verifies_and_says_what_is_not_yet_signed() {
    let dir = tempfile::tempdir().unwrap();
    // r1 r2 r3 cp4 r5
    let text = chain(dir.path(), 4);
    let report = verify(&text, &KEYS[..]).unwrap();
    assert_eq!(report.lines, 5);
    assert_eq!(report.records, 4);
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.signed_through, Some(3));
    assert_eq!(report.unsigned_tail, 1);
    assert_eq!(report.writer.as_deref(), Some("operator"));
}

#[test]
fn the_chain_continues_across_a_reopen_and_a_checkpoint_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path(), 2);
    let mut log = open(dir.path());
    assert_eq!(log.seq(), 2);
    log.append(
        &effect("b"),
        Event::Stopped {
            reason: "completed".into(),
        },
    )
    .unwrap();
    // The third record since the last checkpoint made one due, so it was written already.
    assert_eq!(log.checkpoint().unwrap(), None);
    log.append(&effect("c"), Event::Admitted).unwrap();
    assert_eq!(log.checkpoint().unwrap(), Some(6));
    let report = verify(&read(dir.path()), &KEYS[..]).unwrap();
    assert_eq!(report.last_seq, 6);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.checkpoints, 2);
}

#[test]
fn an_event_is_recorded_once_per_dispatch_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    assert_eq!(
        log.append_once(&effect("a"), Event::Admitted).unwrap(),
        Some(1)
    );
    assert_eq!(
        log.append_once(&effect("a"), Event::Admitted).unwrap(),
        None
    );
    drop(log);
    let mut log = open(dir.path());
    assert_eq!(
        log.append_once(&effect("a"), Event::Admitted).unwrap(),
        None
    );
    // Another dispatch, or another event, is new.
    assert_eq!(
        log.append_once(&effect("b"), Event::Admitted).unwrap(),
        Some(2)
    );
    let stopped = Event::Stopped {
        reason: "failed".into(),
    };
    assert_eq!(log.append_once(&effect("a"), stopped).unwrap(), Some(3));
}

#[test]
fn a_torn_last_line_is_set_aside_and_named_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path(), 2);
    let torn = br#"{"seq":3,"time":"2026-12-05T1"#;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("operator.jsonl"))
            .unwrap();
        f.write_all(torn).unwrap();
    }
    let mut log = open(dir.path());
    log.append(&effect("c"), Event::Admitted).unwrap();
    let text = read(dir.path());
    let report = verify(&text, &KEYS[..]).unwrap();
    assert_eq!(report.recovered.len(), 1, "{text}");
    let (seq, file) = &report.recovered[0];
    assert_eq!(*seq, 3);
    assert_eq!(std::fs::read(dir.path().join(file)).unwrap(), torn);
    let line: Line = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert_eq!(
        line.body,
        Body::Recovered {
            file: file.clone(),
            bytes: torn.len() as u64,
            sha256: line_hash(torn),
        }
    );
}

#[test]
fn a_damaged_complete_line_stops_the_writer_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let text = chain(dir.path(), 2);
    let mut l = lines(&text);
    l[0] = "not json".into();
    std::fs::write(dir.path().join("operator.jsonl"), join(&l)).unwrap();
    let e = AuditLog::open(dir.path(), "operator").unwrap_err();
    assert!(matches!(e, LogError::Damaged { line: 1, .. }), "{e}");
    assert!(e.to_string().contains("audit verify"), "{e}");
}

#[test]
fn an_edited_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l[1] = l[1].replace("\"alice\"", "\"mallory\"");
    assert_eq!(
        verify(&join(&l), &KEYS[..]).unwrap_err(),
        Tamper::Edited {
            line: 2,
            seq: 2,
            next_line: 3
        }
    );
}

#[test]
fn a_deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l.remove(1);
    assert_eq!(
        verify(&join(&l), &KEYS[..]).unwrap_err(),
        Tamper::Deleted {
            line: 2,
            seq: 3,
            first_missing: 2,
            last_missing: 2
        }
    );
}

#[test]
fn a_deleted_first_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l.remove(0);
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    assert!(
        matches!(
            e,
            Tamper::Deleted {
                line: 1,
                seq: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_reordered_pair_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l.swap(1, 2);
    assert_eq!(
        verify(&join(&l), &KEYS[..]).unwrap_err(),
        Tamper::Reordered {
            line: 2,
            seq: 3,
            expected: 2,
            found_at: Some(3)
        }
    );
}

#[test]
fn a_reordering_with_the_seqs_rewritten_is_still_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l.swap(0, 1);
    l[0] = l[0].replacen("\"seq\":2", "\"seq\":1", 1);
    l[1] = l[1].replacen("\"seq\":1", "\"seq\":2", 1);
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    // Line 1 now links to a predecessor: what came first was moved.
    assert!(matches!(e, Tamper::Deleted { line: 1, .. }), "{e}");
}

#[test]
fn a_deletion_hidden_by_renumbering_and_relinking_is_caught_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    // Drop record 2, then rewrite every later line so seqs and prevs match again.
    l.remove(1);
    let mut prev = line_hash(l[0].as_bytes());
    for (i, raw) in l.iter_mut().enumerate().skip(1) {
        let mut line: Line = serde_json::from_str(raw).unwrap();
        line.seq = i as u64 + 1;
        line.prev = prev;
        *raw = serde_json::to_string(&line).unwrap();
        prev = line_hash(raw.as_bytes());
    }
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    assert!(
        matches!(
            e,
            Tamper::BadCheckpoint {
                line: 3,
                seq: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_checkpoint_by_an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = chain(dir.path(), 4);
    let e = verify(&text, &KEYS[1..]).unwrap_err();
    assert!(
        matches!(
            e,
            Tamper::BadCheckpoint {
                line: 4,
                seq: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("no published key has the id \"k1\""),
        "{e}"
    );
}

#[test]
fn a_forged_checkpoint_signature_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    let mut cp: Line = serde_json::from_str(&l[3]).unwrap();
    let Body::Checkpoint { signature, .. } = &mut cp.body else {
        panic!("line 4 is a checkpoint: {}", l[3]);
    };
    signature.sig = TestKey("k1", "guessed").sign(b"x").unwrap().sig;
    l[3] = serde_json::to_string(&cp).unwrap();
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    assert!(matches!(e, Tamper::BadCheckpoint { line: 4, .. }), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn a_checkpoint_moved_to_cover_other_lines_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 4));
    l[3] = l[3].replacen("\"covers\":3", "\"covers\":2", 1);
    // Its own bytes changed too, so line 5's prev no longer matches; the claim comes first.
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    assert!(matches!(e, Tamper::BadCheckpoint { line: 4, .. }), "{e}");
}

#[test]
fn a_line_of_another_writer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = lines(&chain(dir.path(), 2));
    l[1] = l[1].replace("\"writer\":\"operator\"", "\"writer\":\"gateway\"");
    let e = verify(&join(&l), &KEYS[..]).unwrap_err();
    assert!(matches!(e, Tamper::WrongWriter { line: 2, .. }), "{e}");
}

#[test]
fn writer_names_are_file_names() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "../x", "Op", "a/b"] {
        assert!(matches!(
            AuditLog::open(dir.path(), bad),
            Err(LogError::BadWriter(_))
        ));
    }
}

#[test]
fn checkpoints_signed_by_the_operators_key_set_verify_against_its_jwks_only() {
    use vexa_policy::token::KeySet;
    let dir = tempfile::tempdir().unwrap();
    let keys = std::sync::Arc::new(KeySet::generate(0).unwrap());
    let mut log = AuditLog::open(dir.path(), "operator")
        .unwrap()
        .with_signer(Box::new(keys.clone()), 2);
    for i in 0..2 {
        log.append(&effect(&format!("a{i}")), Event::Admitted)
            .unwrap();
    }
    let text = read(dir.path());
    let report = verify(&text, &keys.jwks()).unwrap();
    assert_eq!((report.checkpoints, report.signed_through), (1, Some(2)));
    let other = KeySet::generate(0).unwrap();
    let e = verify(&text, &other.jwks()).unwrap_err();
    assert!(matches!(e, Tamper::BadCheckpoint { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("no published key"), "{e}");
}

/// What a record costs (each one synced to disk before `append` returns) and what verifying
/// costs; run with `cargo test -p vexa-audit --release -- --ignored --nocapture cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_appending_and_verifying() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let keys = std::sync::Arc::new(vexa_policy::token::KeySet::generate(0).unwrap());
    let mut log = AuditLog::open(dir.path(), "operator")
        .unwrap()
        .with_signer(Box::new(keys.clone()), DEFAULT_CHECKPOINT_EVERY);
    let mut took = Vec::new();
    for i in 0..2000 {
        let t = Instant::now();
        log.append(&effect(&format!("d{i}")), Event::Admitted)
            .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    let text = read(dir.path());
    let t = Instant::now();
    let report = verify(&text, &keys.jwks()).unwrap();
    let verified = t.elapsed();
    let t = Instant::now();
    drop(AuditLog::open(dir.path(), "operator").unwrap());
    let reopened = t.elapsed();
    eprintln!(
        "append (synced): p50 {:?}, p95 {:?}, max {:?}; verify {} lines ({} checkpoints): {:?}; reopen: {:?}",
        took[took.len() / 2],
        took[took.len() * 95 / 100],
        took[took.len() - 1],
        report.lines,
        report.checkpoints,
        verified,
        reopened
    );
}

#[test]
fn a_dispatchs_records_interleave_the_writers_by_time() {
    let line = |writer: &str, seq: u64, time: &str, event: Event| {
        serde_json::to_string(&Line {
            seq,
            time: time.into(),
            writer: writer.into(),
            prev: GENESIS.into(),
            body: Body::Record {
                effect: effect("d1"),
                event,
            },
        })
        .unwrap()
    };
    let call = || Event::ToolCall {
        tool: "notes".into(),
        mcp_method: "tools/call".into(),
        decision: "allowed".into(),
        reason: "Allowed".into(),
        arguments_sha256: String::new(),
    };
    let chains = std::collections::BTreeMap::from([
        (
            "gateway".to_owned(),
            join(&[
                line("gateway", 1, "2026-12-05T10:00:01.000Z", call()),
                line("gateway", 2, "2026-12-05T10:00:01.000Z", call()),
            ]),
        ),
        (
            "operator".to_owned(),
            join(&[
                line("operator", 1, "2026-12-05T10:00:00.500Z", Event::Admitted),
                line(
                    "operator",
                    2,
                    "2026-12-05T10:00:02.000Z",
                    Event::Stopped {
                        reason: "idle_timeout".into(),
                    },
                ),
            ]),
        ),
    ]);
    let order: Vec<(String, u64)> = records_of(&chains, "team", "d1")
        .into_iter()
        .map(|l| (l.writer, l.seq))
        .collect();
    assert_eq!(
        order,
        [
            ("operator".to_owned(), 1),
            ("gateway".to_owned(), 1),
            ("gateway".to_owned(), 2),
            ("operator".to_owned(), 2)
        ]
    );
    assert!(records_of(&chains, "team", "d2").is_empty());
}
