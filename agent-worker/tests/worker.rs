//! The worker binary end to end: the real `vexa-agent-worker` process, the real `vexa-test-agent`
//! as its agent CLI, a temporary workspace and a throwaway redis-server. Each test reads the unit
//! events from the `out` stream as a client would and checks the workspace's git history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{Value, json};
use vexa_agent_worker::{Event, TurnId, UnitEvent};
use vexa_core::pod::{
    GrantedTool, OptionalArgs, PodContract, RunnerSpec, Start, StreamFormat, WorkspaceMount,
};
use vexa_core::{
    CommitRange, DEFAULT_SESSION_PATH, DEFAULT_THREAD, StopReason, Termination, Trigger,
    WorkspaceMode,
};
use vexa_stream::testing::RedisServer;

const UNIT: &str = "team-a/agent-alice-chat-main";
const OUT: &str = "unit:team-a/agent-alice-chat-main:out";
const IN: &str = "unit:team-a/agent-alice-chat-main:in";

/// The folder holding a fresh `vexa-test-agent` of the same profile as this test (built on
/// first use: cargo builds only this package's binaries for its tests).
fn test_agent_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--offline", "--quiet", "-p", "vexa-test-agent"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building vexa-test-agent failed");
        assert!(profile_dir.join("vexa-test-agent").is_file());
        profile_dir
    })
}

fn runner_spec(program: &str) -> RunnerSpec {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    RunnerSpec {
        argv: strings(&[
            program,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--",
            "${prompt}",
        ]),
        model: None,
        optional_argv: vec![
            OptionalArgs {
                argv: strings(&[
                    "--allowedTools",
                    "${allowedTools}",
                    "--mcp-config",
                    "${mcpConfig}",
                ]),
                when: "allowedTools".into(),
            },
            OptionalArgs {
                argv: strings(&["--resume", "${sessionId}"]),
                when: "sessionId".into(),
            },
        ],
        session_path: DEFAULT_SESSION_PATH.into(),
        stream_format: StreamFormat::ClaudeStreamJson,
    }
}

fn mount(name: &str, id: &str, mode: WorkspaceMode, path: &Path) -> WorkspaceMount {
    WorkspaceMount {
        id: id.into(),
        mode,
        name: name.into(),
        path: path.to_owned(),
    }
}

fn inline(prompt: impl Into<String>) -> Start {
    Start::Entrypoint {
        inline: Some(prompt.into()),
        path: None,
    }
}

/// One worker process with its environment, and the shim it drives the agent through (the
/// agent container's side; in a pod the two share only the socket and the workspaces).
struct Worker {
    child: Child,
    shim: Child,
    termination_log: PathBuf,
    log: PathBuf,
}

impl Worker {
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The termination message, which must be the typed JSON document.
    fn termination(&self) -> Termination {
        let text = fs::read_to_string(&self.termination_log).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the shim (the agent container) to exit.
    fn wait_shim(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.shim.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the shim did not exit within {limit:?}; worker log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.shim.kill();
        let _ = self.shim.wait();
    }
}

/// A dispatch's setting: Redis, workspaces, and what the operator would put in the environment.
struct Dispatch {
    redis: RedisServer,
    dir: tempfile::TempDir,
    workspaces: Vec<WorkspaceMount>,
    primary: PathBuf,
    start: Start,
    idle_sec: u64,
    program: String,
    tools: Vec<String>,
}

impl Dispatch {
    /// One rw workspace `notes`, starting with `prompt`.
    fn new(prompt: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("workspaces/notes");
        fs::create_dir_all(&notes).unwrap();
        Self {
            redis: RedisServer::start(),
            workspaces: vec![mount("notes", "ws-1", WorkspaceMode::ReadWrite, &notes)],
            primary: notes,
            dir,
            start: inline(prompt),
            idle_sec: 30,
            program: "vexa-test-agent".into(),
            tools: Vec::new(),
        }
    }

    fn notes(&self) -> PathBuf {
        self.dir.path().join("workspaces/notes")
    }

    /// Adds a ro workspace `wiki` (returns its path).
    fn with_ro(&mut self) -> PathBuf {
        let wiki = self.dir.path().join("workspaces/wiki");
        fs::create_dir_all(&wiki).unwrap();
        self.workspaces
            .push(mount("wiki", "ws-2", WorkspaceMode::ReadOnly, &wiki));
        wiki
    }

    /// What the operator would tell the worker.
    fn contract(&self) -> PodContract {
        PodContract {
            unit_id: UNIT.into(),
            trigger: Trigger::Message,
            out_topic: OUT.into(),
            in_topic: IN.into(),
            start: self.start.clone(),
            workspaces: self.workspaces.clone(),
            workspace_path: self.primary.clone(),
            owner: "alice".into(),
            launcher: "user:alice".into(),
            runner: "test-agent".into(),
            runner_spec: runner_spec(&self.program),
            tools: self
                .tools
                .iter()
                .map(|name| GrantedTool {
                    name: name.clone(),
                    tool_name: None,
                })
                .collect(),
            context: None,
            thread: DEFAULT_THREAD.into(),
            idle_timeout: Duration::from_secs(self.idle_sec),
            redis_url: self.redis.url(),
            model: None,
            spiffe: None,
            mcp_gateway: None,
        }
    }

    fn spawn(&self) -> Worker {
        let n = fs::read_dir(self.dir.path()).unwrap().count();
        self.spawn_as(&self.dir.path().join(format!("worker-state-{n}")), false)
    }

    /// A worker whose own folder (restart marker, ready file) is `state`; as a `sidecar` it
    /// refuses to run twice and waits for SIGTERM after the run, as in a pod.
    fn spawn_as(&self, state: &Path, sidecar: bool) -> Worker {
        let n = fs::read_dir(self.dir.path()).unwrap().count();
        let termination_log = self.dir.path().join(format!("termination-log-{n}"));
        let log = self.dir.path().join(format!("worker-{n}.log"));
        let path = format!(
            "{}:{}",
            test_agent_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let socket = self.dir.path().join(format!("shim-{n}.sock"));
        let shim = Command::new(env!("CARGO_BIN_EXE_vexa-agent-shim"))
            .env_clear()
            .env("PATH", &path)
            .env("VEXA_AGENT_SOCKET", &socket)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.path().join(format!("shim-{n}.log"))).unwrap())
            .spawn()
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vexa-agent-worker"))
            .env_clear()
            .env("PATH", path)
            .env("VEXA_AGENT_SOCKET", &socket)
            .envs(self.contract().to_env())
            .env("VEXA_TERMINATION_LOG", &termination_log)
            .env("VEXA_LOG_FORMAT", "text")
            .env("VEXA_STOP_GRACE_SEC", "2")
            .env("VEXA_WORKER_STATE_DIR", state)
            .env("VEXA_SIDECAR", sidecar.to_string())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker {
            child,
            shim,
            termination_log,
            log,
        }
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every unit event on `out`, in stream order, with its entry id.
    fn events(&self) -> Vec<(String, UnitEvent)> {
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(OUT)
            .arg("-")
            .arg("+")
            .query(&mut self.redis())
            .unwrap();
        raw.into_iter()
            .map(|(id, fields)| {
                assert_eq!(fields[0], "event");
                (id, serde_json::from_str(&fields[1]).unwrap())
            })
            .collect()
    }

    /// Waits until an event matches `want`; returns every event so far.
    fn wait_for(
        &self,
        worker: &Worker,
        limit: Duration,
        want: impl Fn(&UnitEvent) -> bool,
    ) -> Vec<UnitEvent> {
        let deadline = Instant::now() + limit;
        loop {
            if self.redis.is_running() {
                let events: Vec<UnitEvent> = self.events().into_iter().map(|e| e.1).collect();
                if events.iter().any(&want) {
                    return events;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no such event within {limit:?}; log:\n{}",
                worker.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn turn_complete(&self, worker: &Worker, turn: u32) -> Vec<UnitEvent> {
        self.wait_for(worker, Duration::from_secs(30), |e| {
            e.turn_id == TurnId(turn) && e.event == Event::TurnComplete {}
        })
    }

    fn send(&self, turn: &Value) {
        let _: String = self
            .redis()
            .xadd(IN, "*", &[("turn", turn.to_string())])
            .unwrap();
    }
}

fn of_turn(events: &[UnitEvent], turn: u32) -> Vec<Event> {
    events
        .iter()
        .filter(|e| e.turn_id == TurnId(turn))
        .map(|e| e.event.clone())
        .collect()
}

fn kind(e: &Event) -> &'static str {
    match e {
        Event::MessageDelta { .. } => "message-delta",
        Event::ToolCall { .. } => "tool-call",
        Event::ToolResult { .. } => "tool-result",
        Event::Done { .. } => "done",
        Event::Commit { .. } => "commit",
        Event::TurnComplete {} => "turn-complete",
        Event::AuthError { .. } => "auth-error",
        Event::ModelError { .. } => "model-error",
        Event::Card { .. } => "card",
        Event::Note { .. } => "note",
    }
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = events.iter().map(kind).collect();
    out.dedup();
    out
}

fn done(events: &[Event]) -> (String, Option<String>, bool) {
    events
        .iter()
        .find_map(|e| match e {
            Event::Done {
                reply,
                session_id,
                ok,
            } => Some((reply.clone(), session_id.clone(), *ok)),
            _ => None,
        })
        .expect("a done event")
}

fn commit_sha(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Commit { sha } => Some(sha.clone()),
        _ => None,
    })
}

/// (message, author email, files) of each commit, newest first.
fn git_log(path: &Path) -> Vec<(String, String, Vec<String>)> {
    let repo = git2::Repository::open(path).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.map(|oid| {
        let c = repo.find_commit(oid.unwrap()).unwrap();
        let mut files = Vec::new();
        c.tree()
            .unwrap()
            .walk(git2::TreeWalkMode::PreOrder, |dir, e| {
                if e.kind() == Some(git2::ObjectType::Blob) {
                    files.push(format!("{dir}{}", e.name().unwrap()));
                }
                git2::TreeWalkResult::Ok
            })
            .unwrap();
        (
            c.message().unwrap().to_owned(),
            c.author().email().unwrap().to_owned(),
            files,
        )
    })
    .collect()
}

/// Every file under `root` with its content, except the agent's own `.claude/` folder.
fn snapshot(root: &Path) -> HashMap<PathBuf, Vec<u8>> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.strip_prefix(root).unwrap().starts_with(".claude") {
                continue;
            }
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(path, Vec::new());
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn turns_stream_commit_and_complete_then_the_run_ends_when_idle() {
    let mut d = Dispatch::new("write notes/hello.md Hello from the test agent\nsay Done.");
    d.idle_sec = 3;
    let mut worker = d.spawn();

    let events = d.turn_complete(&worker, 0);
    let t0 = of_turn(&events, 0);
    // The test agent runs its tools first and streams its reply text after them.
    assert_eq!(
        kinds(&t0),
        [
            "tool-call",
            "tool-result",
            "message-delta",
            "done",
            "commit",
            "turn-complete"
        ],
        "{t0:?}"
    );
    assert!(
        matches!(&t0[0], Event::ToolCall { tool, args, .. } if tool == "Write" && args["file_path"].as_str().unwrap().ends_with("notes/hello.md"))
    );
    assert!(matches!(&t0[1], Event::ToolResult { ok: true, .. }));
    let (reply, session, ok) = done(&t0);
    assert!(ok);
    assert_eq!(reply, "Wrote notes/hello.md.\nDone.");
    let session = session.unwrap();
    let sha = commit_sha(&t0).unwrap();

    let notes = d.notes();
    assert_eq!(
        fs::read_to_string(notes.join("notes/hello.md")).unwrap(),
        "Hello from the test agent\n"
    );
    let log = git_log(&notes);
    assert_eq!(
        log.len(),
        2,
        "the worker's .gitignore commit, then the turn's"
    );
    assert!(log[1].0.starts_with("Ignore .claude/"));
    assert_eq!(
        git2::Repository::open(&notes)
            .unwrap()
            .head()
            .unwrap()
            .target()
            .unwrap()
            .to_string(),
        sha
    );
    assert_eq!(
        log[0].0,
        format!(
            "Wrote notes/hello.md.\n\nVexa-Dispatch: {UNIT}\nVexa-Launcher: user:alice\nVexa-Runner: test-agent\nVexa-Turn: t0\n"
        )
    );
    assert_eq!(log[0].1, "alice@vexa.invalid");
    assert_eq!(log[0].2, [".gitignore", "notes/hello.md"]);
    assert_eq!(
        fs::read_to_string(notes.join(".gitignore")).unwrap(),
        ".claude/\n"
    );
    assert_eq!(
        fs::read_to_string(notes.join(".claude/sessions/main.session")).unwrap(),
        format!("{session}\n")
    );

    // A second turn, answered by the same process, in the same session.
    d.send(&json!({"prompt": "append notes/hello.md A second line\nrecall"}));
    let events = d.turn_complete(&worker, 1);
    assert!(worker.child.try_wait().unwrap().is_none());
    let t1 = of_turn(&events, 1);
    let (reply, session_1, ok) = done(&t1);
    assert!(ok);
    // Like Claude Code, the agent continues a resumed session under a new id: the worker keeps
    // the newest.
    assert_eq!(
        fs::read_to_string(notes.join(".claude/sessions/main.session")).unwrap(),
        format!("{}\n", session_1.unwrap())
    );
    assert!(
        reply.contains("I remember: write notes/hello.md Hello from the test agent / say Done."),
        "{reply}"
    );
    assert!(commit_sha(&t1).is_some());
    assert_eq!(git_log(&notes).len(), 3);
    assert!(git_log(&notes)[0].0.contains("Vexa-Turn: t1"));

    // Nothing more: the run ends after the idle timeout, with exit code 0.
    let idle_from = Instant::now();
    let status = worker.wait(Duration::from_secs(15));
    let idle_for = idle_from.elapsed();
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    // The report: idle, from the worker's own .gitignore commit to the last turn's.
    let repo = git2::Repository::open(&notes).unwrap();
    let sha = |rev: &str| Some(repo.revparse_single(rev).unwrap().id().to_string());
    let mut report = worker.termination();
    // The first turn's milestones, for the run's trace: all there, in order, times only.
    let m = report
        .milestones
        .take()
        .expect("the worker reports its milestones");
    // And what it published: every entry of the stream, counted once.
    let published = report
        .published
        .take()
        .expect("the worker reports what it published");
    assert_eq!(published.events, d.events().len() as u64);
    assert!(published.bytes > 0);
    let steps = [m.ready, m.turn, m.first_event, m.done, m.commit];
    assert!(steps.iter().all(Option::is_some), "{m:?}");
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {m:?}"
    );
    assert_eq!(
        report,
        Termination {
            reason: Some(StopReason::IdleTimeout),
            message: None,
            provenance: vec![CommitRange {
                workspace: "notes".into(),
                base: sha("HEAD~2"),
                result: sha("HEAD"),
            }],
            usage: None,
            milestones: None,
            published: None,
        }
    );
    assert!(
        idle_for > Duration::from_secs(2) && idle_for < Duration::from_secs(6),
        "{idle_for:?}"
    );
    let last = d.events().pop().unwrap().1;
    assert!(
        matches!(&last.event, Event::Note { note } if note == "no turn for 3 s: exiting"),
        "{last:?}"
    );
}

#[test]
fn a_second_run_resumes_the_stored_session() {
    let mut d = Dispatch::new("remember the colour is blue");
    d.idle_sec = 0;
    let mut first = d.spawn();
    assert_eq!(first.wait(Duration::from_secs(20)).code(), Some(0));
    let (_, session, _) = done(&of_turn(
        &d.events().into_iter().map(|e| e.1).collect::<Vec<_>>(),
        0,
    ));
    let session = session.unwrap();

    // The next dispatch on the same thread, started from the session file.
    d.start = Start::Session {
        reference: ".claude/sessions/main.session".into(),
        prompt: Some("recall".into()),
    };
    let before = d.events().len();
    let mut second = d.spawn();
    assert_eq!(
        second.wait(Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        second.log()
    );
    let events: Vec<UnitEvent> = d.events().into_iter().skip(before).map(|e| e.1).collect();
    let (reply, _, ok) = done(&of_turn(&events, 0));
    assert!(ok);
    assert_eq!(reply, "I remember: remember the colour is blue");
    assert!(
        second.log().contains(&format!(
            "resuming file=.claude/sessions/main.session session={session}"
        )),
        "{}",
        second.log()
    );
    assert!(
        commit_sha(&of_turn(&events, 0)).is_none(),
        "nothing changed"
    );
}

#[test]
fn a_stale_session_is_dropped_and_the_turn_runs_fresh() {
    let mut d = Dispatch::new("say hello");
    d.idle_sec = 0;
    let notes = d.notes();
    fs::create_dir_all(notes.join(".claude/sessions")).unwrap();
    fs::write(
        notes.join(".claude/sessions/main.session"),
        "0b5e3c1a-7f2d-4c9e-9a61-3d2f1e0c9b8a\n",
    )
    .unwrap();
    let mut worker = d.spawn();
    assert_eq!(worker.wait(Duration::from_secs(20)).code(), Some(0));
    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    let t0 = of_turn(&events, 0);
    assert!(
        matches!(&t0[0], Event::Note { note } if note.contains("could not resume session 0b5e3c1a")),
        "{t0:?}"
    );
    let (_, session, ok) = done(&t0);
    assert!(ok);
    let stored = fs::read_to_string(notes.join(".claude/sessions/main.session")).unwrap();
    assert_eq!(
        stored.trim(),
        session.unwrap(),
        "the new session replaced the stale one"
    );
}

#[test]
fn a_read_only_workspace_is_never_changed() {
    // rw notes + ro wiki (a repository with history): the agent reads the wiki, writes notes.
    let mut d = Dispatch::new("");
    let wiki = d.with_ro();
    fs::write(wiki.join("a.md"), "wiki page\n").unwrap();
    fs::write(wiki.join("untracked.md"), "loose\n").unwrap();
    let repo = git2::Repository::init(&wiki).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("a.md")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("seed", "seed@example.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "seed", &tree, &[])
        .unwrap();
    let before = snapshot(&wiki);
    d.start = inline(format!(
        "read {}\nwrite notes/summary.md the wiki has one page",
        wiki.join("a.md").display()
    ));
    d.idle_sec = 0;
    let mut worker = d.spawn();
    assert_eq!(worker.wait(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(snapshot(&wiki), before, "the ro workspace changed");
    assert_eq!(git_log(&wiki).len(), 1);
    assert_eq!(git_log(&d.notes())[0].2, [".gitignore", "notes/summary.md"]);

    // A run whose only workspace is ro (propose-only): no git init, no .gitignore, no commit,
    // no session file, even though the agent wrote into it (the pod's mount would refuse that).
    let mut d = Dispatch::new("");
    let plain = d.dir.path().join("workspaces/plain");
    fs::create_dir_all(&plain).unwrap();
    fs::write(plain.join("b.md"), "b\n").unwrap();
    d.workspaces = vec![mount("plain", "ws-3", WorkspaceMode::ReadOnly, &plain)];
    d.primary = plain.clone();
    d.start = inline("write b.md changed by the agent");
    d.idle_sec = 0;
    let mut worker = d.spawn();
    assert_eq!(worker.wait(Duration::from_secs(20)).code(), Some(0));
    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    assert!(commit_sha(&of_turn(&events, 0)).is_none());
    assert!(!plain.join(".git").exists());
    assert!(!plain.join(".gitignore").exists());
    assert!(!plain.join(".claude/sessions").exists());
    assert_eq!(
        worker.termination().provenance,
        [],
        "git says nothing of a ro workspace"
    );
}

#[test]
fn the_agent_proposes_cards_through_the_workers_card_server_and_bad_ones_stream_nothing() {
    let card = json!({"id": "minutes", "kind": "record", "title": "Minutes",
                      "record": {"workspace": "notes", "path": "meetings/m.md", "content": "# M\n"}});
    let mut d = Dispatch::new(&format!(
        "mcp-call vexa_cards propose {card}\n\
         mcp-call vexa_cards propose {{\"kind\": \"send\", \"title\": \"pay bob\"}}\n\
         mcp-call vexa_cards propose {{\"kind\": \"alert\", \"title\": \"x\", \"owner\": \"bob\"}}"
    ));
    d.idle_sec = 0;
    let mut worker = d.spawn();
    assert_eq!(worker.wait(Duration::from_secs(20)).code(), Some(0));
    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    let t0 = of_turn(&events, 0);
    let cards: Vec<&serde_json::Value> = t0
        .iter()
        .filter_map(|e| match e {
            Event::Card { card } => Some(card),
            _ => None,
        })
        .collect();
    assert_eq!(cards, [&card], "only the good proposal streams: {t0:?}");
    let (reply, _, ok) = done(&t0);
    assert!(ok, "{reply}");
    assert!(reply.contains("Proposed card 1"), "{reply}");
    assert!(reply.contains("a send card comes only from"), "{reply}");
    assert!(reply.contains("unknown field \\\"owner\\\""), "{reply}");
    assert!(
        !d.notes().join("meetings/m.md").exists(),
        "a proposal writes nothing"
    );
}

#[test]
fn sigterm_mid_turn_ends_promptly_with_a_final_event() {
    let mut d = Dispatch::new("write notes/partial.md half done\nsleep 60\nsay never");
    d.idle_sec = 60;
    let mut worker = d.spawn();
    d.wait_for(&worker, Duration::from_secs(20), |e| {
        matches!(e.event, Event::ToolResult { .. })
    });
    let signalled = Instant::now();
    worker.signal(rustix::process::Signal::TERM);
    let status = worker.wait(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(143), "{}", worker.log());
    assert!(took < Duration::from_secs(3), "{took:?}");
    let report = worker.termination();
    assert_eq!(report.reason, None, "the operator knows why SIGTERM came");
    assert_eq!(report.message.as_deref(), Some("terminated: SIGTERM"));

    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    let t0 = of_turn(&events, 0);
    assert_eq!(
        kinds(&t0),
        [
            "tool-call",
            "tool-result",
            "model-error",
            "done",
            "commit",
            "turn-complete",
            "note"
        ],
        "{t0:?}"
    );
    assert!(matches!(&t0[2], Event::ModelError { error } if error.contains("was killed")));
    assert!(matches!(t0.last(), Some(Event::Note { note }) if note.contains("SIGTERM")));
    let log = git_log(&d.notes());
    assert!(
        log[0]
            .0
            .starts_with(&format!("Interrupted turn t0 of {UNIT}")),
        "{}",
        log[0].0
    );
    // The interrupted turn's commit is the run's result.
    assert_eq!(
        report.provenance[0].result,
        commit_sha(&t0),
        "{:?}",
        report.provenance
    );
    // No agent process is left behind in the workspace.
    let notes = fs::canonicalize(d.notes()).unwrap();
    let left: Vec<_> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|p| fs::read_link(p.ok()?.path().join("cwd")).ok())
        .filter(|cwd| *cwd == notes)
        .collect();
    assert!(left.is_empty(), "processes left in the workspace: {left:?}");
}

#[test]
fn sigterm_while_waiting_for_a_turn_ends_at_once() {
    let mut d = Dispatch::new("say hi");
    d.idle_sec = 60;
    let mut worker = d.spawn();
    d.turn_complete(&worker, 0);
    let signalled = Instant::now();
    worker.signal(rustix::process::Signal::TERM);
    assert_eq!(worker.wait(Duration::from_secs(10)).code(), Some(143));
    assert!(signalled.elapsed() < Duration::from_secs(2));
    let last = d.events().pop().unwrap().1;
    assert!(
        matches!(&last.event, Event::Note { note } if note.contains("SIGTERM")),
        "{last:?}"
    );
}

/// Redis crashes while the agent streams and restarts 1.5 s later, and restarts again while the
/// worker waits for a turn: every event is on the stream once, in order, and the next turn is
/// still answered.
#[test]
fn a_redis_restart_mid_run_loses_and_duplicates_nothing() {
    const FILES: usize = 30;
    let mut script: Vec<String> = (0..FILES / 2)
        .map(|i| format!("write notes/f{i}.md {i}"))
        .collect();
    script.push("sleep 2".into());
    script.extend((FILES / 2..FILES).map(|i| format!("write notes/f{i}.md {i}")));
    script.push("say all written".into());
    let mut d = Dispatch::new(&script.join("\n"));
    d.idle_sec = 60;
    let worker = d.spawn();
    d.wait_for(&worker, Duration::from_secs(20), |e| {
        matches!(e.event, Event::ToolResult { .. })
    });
    d.redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    d.redis.restart();

    let events = d.turn_complete(&worker, 0);
    let t0 = of_turn(&events, 0);
    let calls: Vec<&str> = t0
        .iter()
        .filter_map(|e| match e {
            Event::ToolCall { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    let results: Vec<&str> = t0
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), FILES, "{t0:?}");
    assert_eq!(
        calls, results,
        "each call once, each followed by its result, in order"
    );
    let mut unique = calls.clone();
    unique.dedup();
    assert_eq!(unique.len(), FILES);
    let mut want: Vec<&str> = (0..FILES)
        .flat_map(|_| ["tool-call", "tool-result"])
        .collect();
    want.extend(["message-delta", "done", "commit", "turn-complete"]);
    assert_eq!(kinds(&t0), want);
    assert_eq!(git_log(&d.notes())[0].2.len(), FILES + 1);
    let log = worker.log();
    assert!(
        log.contains("appending to failed; reconnecting")
            && log.contains("Redis is reachable again"),
        "the outage did not hit the publisher:\n{log}"
    );

    // Restart while the worker blocks on the input stream; the next turn still arrives.
    d.redis.restart();
    d.send(&json!({"prompt": "say still here"}));
    let events = d.turn_complete(&worker, 1);
    assert_eq!(done(&of_turn(&events, 1)).0, "still here");
    let ids: Vec<String> = d.events().into_iter().map(|e| e.0).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    sorted.dedup();
    assert_eq!(ids, sorted);
}

#[test]
fn a_hostile_prompt_reaches_the_agent_as_one_argument() {
    let d0 = tempfile::tempdir().unwrap();
    let canary = d0.path().join("pwned");
    let hostile = format!(
        "say a \"double\" and 'single' quote; rm -rf / && echo $(touch {c}) `touch {c}` $HOME ${{prompt}} | cat &\nsay --resume evil \\ * ?",
        c = canary.display()
    );
    let mut d = Dispatch::new(&hostile);
    d.idle_sec = 10;
    let mut worker = d.spawn();
    let events = d.turn_complete(&worker, 0);
    let want = format!(
        "a \"double\" and 'single' quote; rm -rf / && echo $(touch {c}) `touch {c}` $HOME ${{prompt}} | cat &\n--resume evil \\ * ?",
        c = canary.display()
    );
    assert_eq!(done(&of_turn(&events, 0)).0, want);
    // The same prompt as a turn on the input stream (JSON over Redis).
    d.send(&json!({ "prompt": hostile }));
    let events = d.turn_complete(&worker, 1);
    assert_eq!(done(&of_turn(&events, 1)).0, want);
    assert!(!canary.exists(), "a shell ran the prompt");
    d.send(&json!({"type": "stop"}));
    assert_eq!(worker.wait(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn turns_sent_before_the_worker_started_are_run_and_a_stop_ends_the_run() {
    let mut d = Dispatch::new("say first");
    d.tools = vec!["email.send".into()];
    d.send(&json!({"prompt": "say second"}));
    d.send(&json!({"prompt": 42}));
    d.send(&json!({"type": "stop"}));
    d.send(&json!({"prompt": "say never run"}));
    let mut worker = d.spawn();
    let status = worker.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", worker.log());
    assert_eq!(worker.termination().reason, Some(StopReason::Stopped));
    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    assert!(
        matches!(&of_turn(&events, 0)[0], Event::Note { note } if note.contains("granted tools (email.send) are not passed")),
        "{events:?}"
    );
    assert_eq!(done(&of_turn(&events, 0)).0, "first");
    let t1 = of_turn(&events, 1);
    assert_eq!(done(&t1).0, "second");
    let notes: Vec<&str> = t1
        .iter()
        .filter_map(|e| match e {
            Event::Note { note } => Some(note.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 2, "{t1:?}");
    assert!(notes[0].contains("is not a string"), "{notes:?}");
    assert_eq!(notes[1], "stopped on request");
    assert!(of_turn(&events, 2).is_empty());

    // The same dispatch id again (a chat thread's next run): it gets the turn left after the
    // stop, not the turns the first run took.
    let before = d.events().len();
    d.idle_sec = 1;
    let mut again = d.spawn();
    assert_eq!(again.wait(Duration::from_secs(20)).code(), Some(0));
    let events: Vec<UnitEvent> = d.events().into_iter().skip(before).map(|e| e.1).collect();
    let replies: Vec<String> = [0, 1]
        .iter()
        .map(|t| done(&of_turn(&events, *t)).0)
        .collect();
    assert_eq!(replies, ["first", "never run"]);
    assert!(
        of_turn(&events, 2)
            .iter()
            .all(|e| matches!(e, Event::Note { .. }))
    );
}

#[test]
fn an_agent_that_cannot_run_fails_the_run_with_a_clear_message() {
    let mut d = Dispatch::new("say hi");
    d.program = "no-such-agent-cli".into();
    let mut worker = d.spawn();
    assert_eq!(worker.wait(Duration::from_secs(20)).code(), Some(1));
    let report = worker.termination();
    assert_eq!(report.reason, Some(StopReason::Failed));
    let message = report.message.unwrap();
    assert!(
        message.contains("\"no-such-agent-cli\" was not found on PATH"),
        "{message}"
    );
    // The workspace was prepared and nothing was committed: base and result are one commit.
    let [range] = &report.provenance[..] else {
        panic!("{:?}", report.provenance)
    };
    assert_eq!(
        (range.workspace.as_str(), &range.result),
        ("notes", &range.base)
    );
    assert!(range.base.is_some());
    let events: Vec<UnitEvent> = d.events().into_iter().map(|e| e.1).collect();
    assert_eq!(
        kinds(&of_turn(&events, 0)),
        ["model-error", "done", "turn-complete"]
    );
}

#[test]
fn a_bad_environment_fails_before_anything_runs() {
    let d = Dispatch::new("say hi");
    let termination_log = d.dir.path().join("termination-log");
    let status = Command::new(env!("CARGO_BIN_EXE_vexa-agent-worker"))
        .env_clear()
        .env("VEXA_TERMINATION_LOG", &termination_log)
        .env("VEXA_LOG_FORMAT", "text")
        .env("VEXA_WORKER_STATE_DIR", d.dir.path().join("state"))
        .env("VEXA_AGENT_SOCKET", d.dir.path().join("no-shim.sock"))
        .env("VEXA_AGENT_CONNECT_TIMEOUT_SEC", "1")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let report: Termination =
        serde_json::from_str(&fs::read_to_string(termination_log).unwrap()).unwrap();
    assert_eq!(report.reason, Some(StopReason::Failed));
    let message = report.message.unwrap();
    assert!(message.starts_with("VEXA_UNIT_ID: is not set"), "{message}");
    assert!(report.provenance.is_empty());
}

/// The pod's lifecycle around a run (the worker is a native sidecar): the agent container's
/// shim exits with the run's code only when the worker says so, and a worker the kubelet
/// restarted never runs the dispatch a second time.
#[test]
fn the_shim_exits_with_the_runs_code_and_a_restarted_worker_never_runs_again() {
    let mut d = Dispatch::new("write notes/hello.md hi");
    d.idle_sec = 0;
    let state = d.dir.path().join("state");
    let mut first = d.spawn_as(&state, true);
    assert_eq!(first.wait_shim(Duration::from_secs(30)).code(), Some(0));
    first.signal(rustix::process::Signal::TERM);
    let code = first.wait(Duration::from_secs(5)).code();
    assert_eq!(code, Some(0), "{}", first.log());
    assert!(state.join("ready").exists(), "the startup probe's file");
    let ready = Command::new(env!("CARGO_BIN_EXE_vexa-agent-worker"))
        .arg("ready")
        .env_clear()
        .env("VEXA_WORKER_STATE_DIR", &state)
        .status()
        .unwrap();
    assert!(ready.success());
    let events_before = d.events().len();
    let commits_before = git_log(&d.notes()).len();

    // The kubelet restarts the worker container: same folder, a new agent container side.
    let mut again = d.spawn_as(&state, true);
    let shim = again.wait_shim(Duration::from_secs(30)).code();
    assert_eq!(
        shim,
        Some(1),
        "the agent container ends failed: {}",
        again.log()
    );
    again.signal(rustix::process::Signal::TERM);
    let code = again.wait(Duration::from_secs(5)).code();
    assert_eq!(code, Some(1), "{}", again.log());
    let report = again.termination();
    assert_eq!(report.reason, Some(StopReason::Failed));
    let message = report.message.unwrap();
    assert!(message.contains("never runs twice"), "{message}");
    assert_eq!(
        d.events().len(),
        events_before,
        "no second t0 on the stream"
    );
    assert_eq!(
        git_log(&d.notes()).len(),
        commits_before,
        "no second commit"
    );
}

#[test]
fn a_startup_probe_fails_until_the_worker_is_ready() {
    let d = Dispatch::new("say hi");
    let status = Command::new(env!("CARGO_BIN_EXE_vexa-agent-worker"))
        .arg("ready")
        .env_clear()
        .env("VEXA_WORKER_STATE_DIR", d.dir.path().join("never-started"))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// In a pod the worker leaves only at the kubelet's SIGTERM (a sidecar that exits on its own
/// is restarted); the agent container ends first, with the run's code.
#[test]
fn the_worker_waits_for_sigterm_after_ending_the_agent_container() {
    let mut d = Dispatch::new("say hi");
    d.idle_sec = 0;
    let mut worker = d.spawn_as(&d.dir.path().join("state"), true);
    assert_eq!(worker.wait_shim(Duration::from_secs(30)).code(), Some(0));
    let report_written = Instant::now() + Duration::from_secs(5);
    while fs::metadata(&worker.termination_log).is_err() {
        assert!(Instant::now() < report_written, "{}", worker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker must not exit on its own: {}",
        worker.log()
    );
    assert_eq!(worker.termination().reason, Some(StopReason::IdleTimeout));
    worker.signal(rustix::process::Signal::TERM);
    assert_eq!(worker.wait(Duration::from_secs(5)).code(), Some(0));
}

/// A worker that dies without ending the run (killed, crashed) never leaves the agent
/// container a success.
#[test]
fn the_shim_of_a_vanished_worker_does_not_exit_0() {
    let d = Dispatch::new("say hi");
    let mut worker = d.spawn();
    d.turn_complete(&worker, 0);
    worker.signal(rustix::process::Signal::KILL);
    assert_eq!(worker.wait_shim(Duration::from_secs(5)).code(), Some(70));
}
