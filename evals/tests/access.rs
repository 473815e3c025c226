//! Eval 7 (issue 9): people read and steer runs only through the streams API, authorized by the
//! cluster's own RBAC on the Dispatch. Real users of the cluster (client certificates signed
//! through the CertificateSigningRequest API, as a person would hold) run the real
//! `kubectl vexa` against the in-process operator's streams API, registered as the APIService
//! `v1.streams.vexa.ai`:
//! - carol (may `get` the Dispatch) follows it; her follow is killed mid-run and resumed with
//!   the last id it printed: what she saw in two parts is exactly the full stream, no gap, no
//!   repeat;
//! - bob (no `get` on the Dispatch, though the API server would let him reach the streams API)
//!   is refused by the operator, and `kubectl vexa follow` says which permission he lacks;
//! - dave (may `get`, not `create` on `dispatches/turns`) cannot send a turn: nothing reaches
//!   the run's input stream;
//! - alice (both) sends turns and stops the run, all without Redis credentials.
//!
//! Needs `eval "$(hack/cluster env)"` and the worker image; `hack/test` provides both.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use vexa_crds::Dispatch;
use vexa_evals::fixtures::{
    chat_dispatch, phase, stop_reason, test_agent_runner, wait_dispatch, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::streams::StreamsApi;
use vexa_evals::{TestNamespace, cli_binary, client, cluster_env, wait_for};
use vexa_stream::api;

const TIMEOUT: Duration = Duration::from_secs(180);
const DISPATCH: &str = "agent-alice-chat-main";

/// A person of the cluster: their kubeconfig (a client certificate the cluster signed) and a
/// client acting as them.
struct Person {
    name: &'static str,
    kubeconfig: PathBuf,
    client: Client,
}

impl Person {
    async fn new(admin: &Client, name: &'static str) -> Self {
        let user = vexa_evals::users::user(admin, name).await;
        Self {
            name,
            kubeconfig: user.kubeconfig,
            client: user.client,
        }
    }

    /// `kubectl vexa ARGS` as this person (no Redis URL anywhere in its environment).
    fn vexa(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(cli_binary());
        cmd.args(["-n", ns])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("REDIS_URL")
            .env_remove("VEXA_REDIS_URL")
            .env("VEXA_RETRY_SECONDS", "20");
        cmd
    }

    fn run(&self, ns: &str, args: &[&str]) -> Output {
        let out = self.vexa(ns, args).output().unwrap();
        eprintln!(
            "{} $ kubectl vexa {}: {}\n{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Binds `rules` to `person` in `ns` (a Role of their own).
async fn grant(admin: &Client, ns: &str, person: &Person, rules: Value) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": person.name}, "rules": rules,
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": person.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": person.name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": person.name}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// What the chart's ClusterRole `vexa-user` grants on dispatches: reading them and their
/// stream, and (with `send`) turns.
fn rules(read_dispatch: bool, read_log: bool, send_vexa: bool, send_streams: bool) -> Value {
    let mut rules = Vec::new();
    if read_dispatch {
        rules.push(json!({"apiGroups": ["vexa.ai"], "resources": ["dispatches"], "verbs": ["get", "list", "watch"]}));
    }
    if read_log {
        rules.push(json!({"apiGroups": ["streams.vexa.ai"], "resources": ["dispatches/log"], "verbs": ["get"]}));
    }
    if send_vexa {
        rules.push(json!({"apiGroups": ["vexa.ai"], "resources": ["dispatches/turns"], "verbs": ["create"]}));
    }
    if send_streams {
        rules.push(json!({"apiGroups": ["streams.vexa.ai"], "resources": ["dispatches/turns"], "verbs": ["create"]}));
    }
    Value::Array(rules)
}

/// A follow running in the background; its standard output is collected line by line.
struct Follow {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follow {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // Only whole lines: what a person saw printed.
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                sink.lock().unwrap().push(line.trim_end().to_owned());
                line.clear();
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    async fn wait_for_lines(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        wait_for(what, TIMEOUT, || async {
            let lines = self.lines();
            done(&lines).then_some(())
        })
        .await;
    }
}

fn id_of(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    v["id"].as_str().unwrap().to_owned()
}

fn turn_completes(lines: &[String], turn: &str) -> bool {
    lines.iter().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        v["event"]["type"] == "turn-complete" && v["event"]["turn_id"] == turn
    })
}

async fn in_stream_len(ns: &str) -> usize {
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let topic = vexa_core::in_topic(&vexa_core::dispatch_id(ns, DISPATCH));
    redis::cmd("XLEN")
        .arg(topic)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs a cluster: run hack/test"]
async fn people_follow_and_steer_runs_only_as_rbac_allows_and_a_follow_resumes_exactly() {
    cli_binary();
    let admin = client().await;
    // The chart's operator would own v1.streams.vexa.ai, which this eval registers for itself.
    assert_no_operator_in_cluster(&admin).await;
    let ns = TestNamespace::new(&admin, "access").await;
    // Dropped before the namespace: the APIService goes first.
    let streams = StreamsApi::register(&admin, &ns.name).await;
    let operator = streams
        .operator(
            &admin,
            &[
                "--job-ttl-seconds".to_owned(),
                "5".to_owned(),
                format!("--redis-url={}", cluster_env("POD_REDIS_URL")),
            ],
        )
        .await;

    let (alice, bob, carol, dave) = (
        Person::new(&admin, "alice").await,
        Person::new(&admin, "bob").await,
        Person::new(&admin, "carol").await,
        Person::new(&admin, "dave").await,
    );
    grant(&admin, &ns.name, &alice, rules(true, true, true, true)).await;
    grant(&admin, &ns.name, &carol, rules(true, true, false, false)).await;
    // bob may reach the streams API through the API server, but not read the Dispatch.
    grant(&admin, &ns.name, &bob, rules(false, true, false, false)).await;
    // dave may read, and reach the turns endpoint, but has no create on dispatches/turns.
    grant(&admin, &ns.name, &dave, rules(true, true, false, true)).await;

    let runner = format!("test-agent-{}", ns.name);
    test_agent_runner(
        &admin,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 120}}),
    )
    .await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;
    let dispatches = Api::<Dispatch>::namespaced(admin.clone(), &ns.name);
    dispatches
        .create(
            &PostParams::default(),
            &chat_dispatch(DISPATCH, &runner, "say one"),
        )
        .await
        .unwrap();
    wait_dispatch(&dispatches, DISPATCH, "running", TIMEOUT, |d| {
        phase(d) == "running"
    })
    .await;

    // carol follows; alice sends two turns; carol's follow is killed after turn t2.
    let mut first = Follow::start(carol.vexa(&ns.name, &["follow", DISPATCH, "--json"]));
    let mut sends = Vec::new();
    for prompt in ["say two", "say three"] {
        let started = std::time::Instant::now();
        let out = alice.run(&ns.name, &["send", DISPATCH, prompt]);
        sends.push(started.elapsed());
        assert!(out.status.success(), "alice's turn {prompt:?}");
        let reply = String::from_utf8_lossy(&out.stdout);
        assert!(reply.contains(&prompt[4..]), "alice's reply: {reply:?}");
    }
    eprintln!(
        "eval 7: kubectl vexa send, from start to reply printed (process start included): {sends:?}"
    );
    first
        .wait_for_lines("carol's follow to print turn t2", |l| {
            turn_completes(l, "t2")
        })
        .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let seen = first.lines();
    let last = id_of(seen.last().unwrap());

    // dave may read but not send: refused by the operator's own check, nothing is added.
    let before = in_stream_len(&ns.name).await;
    let out = dave.run(&ns.name, &["send", DISPATCH, "say mischief"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dave's turn was accepted: {err}");
    assert!(
        err.contains("dispatches/turns"),
        "dave's error names the permission: {err}"
    );
    assert_eq!(
        in_stream_len(&ns.name).await,
        before,
        "dave's turn reached the run"
    );

    // bob may not read the Dispatch: the CLI says so, and the operator refuses him itself
    // (the API server lets him reach the streams API).
    let out = bob.run(&ns.name, &["follow", DISPATCH]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "bob read the stream"
    );
    assert!(
        err.contains("get on dispatches"),
        "bob's error names the permission: {err}"
    );
    let raw = bob
        .client
        .request_text(
            http::Request::get(api::path(&ns.name, DISPATCH, api::LOG))
                .body(Vec::new())
                .unwrap(),
        )
        .await;
    match raw {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("get on dispatches.vexa.ai"), "{s:?}");
        }
        other => panic!("bob read the stream through the API server: {other:?}"),
    }

    // More turns while carol is away, then alice stops the run.
    for prompt in ["say four", "say five"] {
        assert!(
            alice
                .run(&ns.name, &["send", DISPATCH, prompt])
                .status
                .success()
        );
    }
    assert!(alice.run(&ns.name, &["stop", DISPATCH]).status.success());
    let stopped = wait_dispatch(&dispatches, DISPATCH, "stopped", TIMEOUT, |d| {
        !stop_reason(d).is_empty()
    })
    .await;
    eprintln!("stopped: {}", stop_reason(&stopped));

    // carol resumes after the last id she saw; the follow ends with the run.
    let out = carol.run(&ns.name, &["follow", DISPATCH, "--json", "--from", &last]);
    assert!(out.status.success(), "carol's resumed follow");
    let resumed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let out = carol.run(&ns.name, &["follow", DISPATCH, "--json"]);
    assert!(out.status.success(), "carol's full follow");
    let full: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        turn_completes(&full, "t4"),
        "the full stream has every turn: {full:#?}"
    );
    let mut joined = seen.clone();
    joined.extend(resumed.iter().cloned());
    eprintln!(
        "eval 7: full stream {} entries; killed follow saw {}, the resumed one {}",
        full.len(),
        seen.len(),
        resumed.len()
    );
    assert!(!resumed.is_empty() && !seen.is_empty());
    assert_eq!(
        joined, full,
        "the two parts are the full stream: no gap, no repeat"
    );

    operator.kill().await;
    drop(streams);
}
