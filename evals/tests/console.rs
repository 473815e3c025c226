//! The web console in a real browser (issue "the web console", browser tests 1, 2, 3, 5, 6):
//! Debian's Chromium, driven by Playwright (`evals/browser/console.mjs`), against the console
//! binary as it ships, an in-process operator, the real agent worker and test agent. alice and
//! bob sign in with tokens the API server knows (`hack/cluster`'s test people), and the console
//! acts only as them: it starts with no credentials at all.
//!
//! What the browser saw is checked against the stream itself (Redis, read here as the admin):
//! every reply painted is exactly the turn's text, after a cut connection too.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use vexa_crds::Schedule;
use vexa_crds::card::Card;
use vexa_evals::admission::ChartAdmission;
use vexa_evals::brokered::events_of_turn;
use vexa_evals::browser::{BrowserRun, run_script_async, script};
use vexa_evals::fixtures::{
    WORKSPACE_CLAIM, claim_folder, free_port, git, golden_doc, test_agent_runner, workspace,
    workspace_ready, workspace_volume,
};
use vexa_evals::operator::assert_no_operator_in_cluster;
use vexa_evals::streams::StreamsApi;
use vexa_evals::{TestNamespace, built_binary, client, cluster_env, users, wait_for};
use vexa_stream::Event;

const CARD: &str = "console-card";
const SCHEDULE: &str = "morning-brief";

/// Binds `rules` to the user `person` in `ns`.
async fn grant(admin: &Client, ns: &str, person: &str, rules: Value) {
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": person}, "rules": rules})).unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": person},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": person},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": person}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The console binary on a free loopback port, with the admin kubeconfig only for the API
/// server's address and CA (it drops the credentials).
struct Console {
    child: Child,
    url: String,
    port: u16,
}

impl Console {
    async fn start(namespace: &str) -> Self {
        let port = free_port();
        let child = Command::new(built_binary("vexa-console", "VEXA_CONSOLE_BIN"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--namespace",
                namespace,
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vexa-console");
        let url = format!("http://127.0.0.1:{port}");
        let health = format!("{url}/healthz");
        wait_for("the console to listen", Duration::from_secs(30), || {
            let health = health.clone();
            async move { vexa_evals::http_get(&health).await.ok() }
        })
        .await;
        Self { child, url, port }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Signs `token` in over plain HTTP, as a browser's form would; returns the cookie.
    fn sign_in(&self, token: &str) -> String {
        let body = format!("token={token}");
        let response = self.raw(&format!(
            "POST /signin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {url}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len(),
            port = self.port,
            url = self.url,
        ));
        response
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie: {response}"))
            .to_owned()
    }

    fn raw(&self, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Opens a stream and keeps the connection.
    fn open_stream(&self, cookie: &str, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\n\
                 Accept: text/event-stream\r\n\r\n",
                self.port
            )
            .as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut first = [0u8; 64];
        let n = s.read(&mut first).unwrap();
        assert!(
            String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        s
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the console that can cut the line: `GET /cut?ms=N` on its control
/// port closes every open connection and refuses new ones for N ms, as a dropped network would.
struct CutProxy {
    port: u16,
    control: u16,
}

impl CutProxy {
    async fn start(target: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream as Tcp};
        use tokio::sync::watch;

        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (port, control_port) = (
            front.local_addr().unwrap().port(),
            control.local_addr().unwrap().port(),
        );
        // Each cut bumps the generation (closing the connections of earlier ones) and sets
        // until when new connections are refused (ms since the epoch).
        let (cuts, _) = watch::channel(0u64);
        let cuts = Arc::new(cuts);
        let blocked_until = Arc::new(AtomicU64::new(0));
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        {
            let (cuts, blocked_until) = (cuts.clone(), blocked_until.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut c, _)) = control.accept().await else {
                        return;
                    };
                    let mut buf = [0u8; 512];
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let ms: u64 = request
                        .split("ms=")
                        .nth(1)
                        .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1000);
                    blocked_until.store(now_ms() + ms, Ordering::SeqCst);
                    cuts.send_modify(|g| *g += 1);
                    eprintln!("cut proxy: cut, refusing connections for {ms} ms");
                    let _ = c
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                }
            });
        }
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = front.accept().await else {
                    return;
                };
                if now_ms() < blocked_until.load(Ordering::SeqCst) {
                    eprintln!("cut proxy: refused a connection");
                    drop(inbound);
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = Tcp::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => eprintln!("cut proxy: closed a connection"),
                    }
                });
            }
        });
        Self {
            port,
            control: control_port,
        }
    }
}

/// The entries of a stream: (milliseconds of the id, fields).
async fn entries(redis: &redis::Client, key: &str) -> Vec<(u64, Vec<(String, String)>)> {
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    raw.into_iter()
        .map(|(id, fields)| (id.split('-').next().unwrap().parse().unwrap(), fields))
        .collect()
}

/// The stream's own warm-turn latency, by Redis's clock: from the turn's entry on the input
/// stream to the first reply text of its turn on the output stream, for each `say <text>`.
async fn stream_latencies_ms(
    redis: &redis::Client,
    ns: &str,
    name: &str,
    texts: &[String],
) -> Vec<u64> {
    let id = vexa_policy::names::dispatch_id(ns, name);
    let input = entries(redis, &vexa_policy::names::in_topic(&id)).await;
    let output = entries(redis, &vexa_policy::names::out_topic(&id)).await;
    let json = |fields: &[(String, String)]| -> Value {
        fields
            .iter()
            .find_map(|(_, v)| serde_json::from_str(v).ok())
            .unwrap_or(Value::Null)
    };
    texts
        .iter()
        .filter_map(|text| {
            let sent = input
                .iter()
                .find(|(_, f)| json(f)["prompt"] == format!("say {text}"))?
                .0;
            let first = output
                .iter()
                .find(|(_, f)| {
                    let e = json(f);
                    e["type"] == "message-delta" && e["text"] == text.as_str()
                })?
                .0;
            Some(first.saturating_sub(sent))
        })
        .collect()
}

/// The reply text of a turn as the stream holds it.
async fn stream_reply(redis: &redis::Client, ns: &str, name: &str, turn: &str) -> String {
    events_of_turn(redis, ns, name, turn, Duration::from_secs(10))
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::MessageDelta { text } => Some(text),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster and the browser: run hack/test"]
async fn people_chat_follow_and_decide_in_the_console_only_as_rbac_allows() {
    let admin = client().await;
    assert_no_operator_in_cluster(&admin).await;
    let ns = TestNamespace::new(&admin, "console").await;
    let streams = StreamsApi::register(&admin, &ns.name).await;
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

    let runner = format!("test-agent-{}", ns.name);
    test_agent_runner(
        &admin,
        &ns,
        &runner,
        json!({"defaults": {"idleTimeoutSeconds": 300}}),
    )
    .await;
    workspace_volume(&admin, &ns.name).await;
    workspace(&admin, &ns.name, "alice-notes", "alice/notes", "rw").await;
    workspace_ready(&admin, &ns.name, "alice-notes").await;
    let mut card: Card =
        serde_json::from_value(golden_doc("goldens/cards/valid/record-action-items.yaml")).unwrap();
    card.metadata.name = Some(CARD.into());
    card.spec.source_dispatch = None;
    Api::<Card>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &card)
        .await
        .unwrap();

    // A tool, for the admin page.
    let mut tool: vexa_crds::Tool =
        serde_json::from_value(golden_doc("goldens/tools/valid/email-send.yaml")).unwrap();
    // Nothing answers there (loopback: the probe leaves the machine for nothing).
    tool.spec.server.url = "https://127.0.0.1:9/mcp".into();
    Api::<vexa_crds::Tool>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &tool)
        .await
        .unwrap();

    // alice's routine: her Identity grants the schedule its launcher; it would fire on weekday
    // mornings, so only the console's "Run now" starts it here.
    let mut identity: vexa_crds::Identity =
        serde_json::from_value(golden_doc("goldens/identities/valid/alice.yaml")).unwrap();
    identity.spec.grants.truncate(1);
    identity.spec.grants[0].launcher = format!("schedule:{}/{SCHEDULE}", ns.name);
    identity.spec.grants[0].workspaces.truncate(1);
    identity.spec.grants[0].tools.clear();
    Api::<vexa_crds::Identity>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
    let mut schedule: Schedule =
        serde_json::from_value(golden_doc("goldens/schedules/valid/morning-brief.yaml")).unwrap();
    schedule.metadata.name = Some(SCHEDULE.into());
    schedule.spec.template.runner = runner.clone();
    schedule.spec.template.tools.clear();
    schedule.spec.template.start =
        serde_json::from_value(json!({"entrypoint": {"inline": "say good morning"}})).unwrap();
    Api::<Schedule>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap();

    // alice: what the chart's vexa-user role gives a person in their namespace. bob: only the
    // cards, with patch, so it is admission (only the owner decides) that refuses him.
    grant(
        &admin,
        &ns.name,
        "alice",
        json!([
            {"apiGroups": ["vexa.ai"], "resources": ["dispatches"], "verbs": ["get", "list", "watch", "create"]},
            {"apiGroups": ["vexa.ai", "streams.vexa.ai"], "resources": ["dispatches/turns"], "verbs": ["create"]},
            {"apiGroups": ["streams.vexa.ai"], "resources": ["dispatches/log", "dispatches/audit"], "verbs": ["get"]},
            {"apiGroups": ["vexa.ai"], "resources": ["workspaces", "cards", "schedules", "identities", "tools"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["vexa.ai"], "resources": ["schedules"], "verbs": ["patch"]},
            {"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["patch", "update"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
            {"apiGroups": ["streams.vexa.ai"], "resources": ["workspaces/log", "workspaces/tree", "workspaces/blob", "workspaces/diff"], "verbs": ["get"]},
            {"apiGroups": ["streams.vexa.ai", "vexa.ai"], "resources": ["workspaces/uploads"], "verbs": ["create"]},
        ]),
    )
    .await;
    grant(
        &admin,
        &ns.name,
        "bob",
        json!([{"apiGroups": ["vexa.ai"], "resources": ["cards"], "verbs": ["get", "list", "patch", "update"]}]),
    )
    .await;

    let console = Console::start(&ns.name).await;
    let proxy = CutProxy::start(console.port).await;
    let artifacts = std::env::temp_dir().join(format!("vexa-console-artifacts-{}", ns.name));
    let env = vec![
        ("CONSOLE_URL", format!("http://127.0.0.1:{}", proxy.port)),
        (
            "CONSOLE_CUT_URL",
            format!("http://127.0.0.1:{}", proxy.control),
        ),
        ("CONSOLE_NAMESPACE", ns.name.clone()),
        ("CONSOLE_RUNNER", runner.clone()),
        ("CONSOLE_WORKSPACE", "alice-notes".to_owned()),
        ("CONSOLE_CARD", CARD.to_owned()),
        ("CONSOLE_SCHEDULE", SCHEDULE.to_owned()),
        ("ALICE_TOKEN", users::token("alice")),
        ("BOB_TOKEN", users::token("bob")),
        ("VEXA_BROWSER_TIMEOUT_MS", "300000".to_owned()),
    ];
    let run = run_script_async(script("console.mjs"), env, artifacts.clone()).await;
    eprintln!("browser stderr:\n{}", run.stderr);
    for r in &run.results {
        eprintln!("browser: {r}");
    }
    run.assert_success();
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();

    // Sign-in: a token the cluster does not know is refused; the cookie is HttpOnly, Strict.
    let bad = run.check("bad-token");
    assert_eq!(bad["status"], 401, "{bad}");
    let cookies = run.check("cookie")["cookies"].as_array().unwrap().clone();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");

    // 1. The reply streamed; the next turns went to the same pod; the edit was committed.
    let first = run.check("first-reply");
    let name = first["dispatch"].as_str().unwrap().to_owned();
    assert_eq!(name, "agent-alice-chat-main");
    assert_eq!(
        first["reply"],
        stream_reply(&redis, &ns.name, &name, "t0").await
    );
    assert!(
        first["reply"]
            .as_str()
            .unwrap()
            .contains("hello from the console"),
        "{first}"
    );
    let turns = run.check("turns");
    assert!(!turns["pod"].as_str().unwrap().is_empty(), "{turns}");
    assert_eq!(
        turns["pod"], turns["podAfter"],
        "one pod serves every turn: {turns}"
    );
    let second = turns["second"].as_str().unwrap();
    assert_eq!(
        turns["secondReply"],
        stream_reply(&redis, &ns.name, &name, second).await
    );
    // The run's audit trail, read as alice: admitted, its identity, its token.
    let audit = turns["audit"].as_str().unwrap();
    assert!(
        audit.contains("admitted") && audit.contains("alice"),
        "{turns}"
    );
    let commit = turns["commit"]
        .as_str()
        .expect("the write was committed")
        .to_owned();
    let dir = claim_folder(&admin, &ns.name, WORKSPACE_CLAIM, "alice/notes").await;
    // The commit the page named is the workspace's (later turns and the upload of test 4 came
    // after it), and it holds the file.
    assert_eq!(
        git(&dir, &["rev-parse", &format!("{commit}^{{commit}}")]),
        commit
    );
    assert_eq!(
        git(&dir, &["show", &format!("{commit}:from-the-console.md")]),
        "written in the browser"
    );

    // 2. Cut mid-reply: the browser reconnected and painted exactly the stream's text.
    let resume = run.check("resume");
    assert!(
        resume["connections"].as_u64().unwrap() > resume["connectionsBefore"].as_u64().unwrap(),
        "the connection was not cut: {resume}"
    );
    assert_eq!(resume["duplicates"], 0, "{resume}");
    let cut = resume["turn"].as_str().unwrap();
    assert_eq!(
        resume["reply"],
        stream_reply(&redis, &ns.name, &name, cut).await
    );

    // 6. Hostile output is text.
    let hostile = run.check("hostile");
    assert_eq!(hostile["pwned"], Value::Null, "{hostile}");
    assert_eq!(hostile["elements"], 0, "{hostile}");
    assert!(
        hostile["reply"].as_str().unwrap().contains("<script>"),
        "{hostile}"
    );
    assert_eq!(
        hostile["reply"],
        stream_reply(&redis, &ns.name, &name, hostile["turn"].as_str().unwrap()).await
    );
    assert_eq!(run.check("csp")["violations"].as_array().unwrap().len(), 0);

    // The list views answer alice; the admin page (cluster-wide runners) tells her she may not.
    for (view, status) in [
        ("view-dispatches", 200),
        ("view-schedules", 200),
        ("view-admin", 200),
    ] {
        assert_eq!(run.check(view)["status"], status, "{}", run.check(view));
    }
    // The admin page: runners are cluster-scoped, which her namespace role cannot list (it says
    // so); the namespace's tools she may list.
    let admin_text = run.check("view-admin")["text"].as_str().unwrap().to_owned();
    assert!(
        admin_text.contains("You may not list the agent runners"),
        "{admin_text}"
    );
    assert!(admin_text.contains("email.send"), "{admin_text}");
    assert!(
        run.check("view-dispatches")["text"]
            .as_str()
            .unwrap()
            .contains(&name)
    );

    // Schedules: alice has the buttons; "Run now" is carried out by the operator, once, under
    // the id the console gave it; "Suspend" suspends it. Identities list her grant.
    let sched = run.check("schedule");
    assert_eq!(sched["buttons"], 3, "{sched}");
    let schedules = Api::<Schedule>::namespaced(admin.clone(), &ns.name);
    let done = wait_for(
        "the operator to carry out the console's run-now",
        Duration::from_secs(60),
        || {
            let schedules = schedules.clone();
            async move {
                let s = schedules.get(SCHEDULE).await.ok()?;
                let st = s.status?;
                st.actions
                    .iter()
                    .find(|a| a.id.starts_with("console-"))
                    .cloned()
                    .map(|a| (s.spec.suspend, a, st.recent))
            }
        },
    )
    .await;
    eprintln!(
        "run-now as carried out: {:?}; recent runs {:?}",
        done.1, done.2
    );
    assert!(done.0, "suspended from the console");
    assert!(
        run.check("view-identities")["text"]
            .as_str()
            .unwrap()
            .contains(&format!("schedule:{}/{SCHEDULE}", ns.name))
    );

    // A forged write (no CSRF token) was refused and reached nothing.
    let forged = run.check("forged-csrf");
    assert_eq!(forged["status"], 403, "{forged}");

    // 3. bob: alice's dispatches are invisible, direct URLs and writes refused.
    let bob = run.check("bob");
    assert_eq!(bob["list"], 403, "{bob}");
    assert_eq!(bob["direct"], 403, "{bob}");
    assert!(!bob["listText"].as_str().unwrap().contains(&name), "{bob}");
    assert!(
        bob["stream"]["text"]
            .as_str()
            .unwrap()
            .contains("event: refused"),
        "{bob}"
    );
    assert!(
        !bob["stream"]["text"].as_str().unwrap().contains("hello"),
        "{bob}"
    );
    assert_eq!(bob["turn"]["status"], 403, "{bob}");

    // 4. Knowledge, as alice.
    knowledge_as_alice(&run, &admin, &ns.name, &commit).await;
    // 3. …and bob: her workspace is not listed, not readable, and his upload is refused.
    let bob_k = run.check("bob-knowledge");
    assert_eq!(bob_k["list"], 403, "{bob_k}");
    assert_eq!(bob_k["folder"], 403, "{bob_k}");
    assert_eq!(bob_k["file"], 403, "{bob_k}");
    assert_eq!(bob_k["upload"]["status"], 403, "{bob_k}");
    assert!(
        !bob_k["listText"].as_str().unwrap().contains("alice/notes"),
        "{bob_k}"
    );
    let planted = Api::<Card>::namespaced(admin.clone(), &ns.name)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.owner == "bob")
        .count();
    assert_eq!(planted, 0, "bob's upload made no Card");

    // 5. The card: buttons for alice, none for bob, whose POST the cluster refused.
    assert_eq!(run.check("card-alice")["buttons"], 2);
    let card_bob = run.check("card-bob");
    assert_eq!(card_bob["row"], 1, "{card_bob}");
    assert_eq!(card_bob["buttons"], 0, "{card_bob}");
    assert_eq!(card_bob["approve"]["status"], 403, "{card_bob}");
    let decided = Api::<Card>::namespaced(admin.clone(), &ns.name)
        .get(CARD)
        .await
        .unwrap();
    let decision = decided.spec.decision.expect("alice decided");
    assert_eq!(decision.by.as_deref(), Some("alice"));
    assert!(
        run.check("card-approved")["decision"]
            .as_str()
            .unwrap()
            .contains("alice")
    );

    // No stream holds a turn from bob or a forged one.
    for prompt in ["say from bob", "say forged"] {
        let held: Vec<Value> = redis::cmd("XRANGE")
            .arg(vexa_policy::names::in_topic(
                &vexa_policy::names::dispatch_id(&ns.name, &name),
            ))
            .arg("-")
            .arg("+")
            .query_async::<Vec<(String, Vec<(String, String)>)>>(
                &mut redis.get_multiplexed_async_connection().await.unwrap(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|(_, fields)| json!(fields))
            .collect();
        assert!(
            !format!("{held:?}").contains(prompt),
            "{prompt} reached the run"
        );
    }

    // Figures: send → first token painted; page weight; the server's RSS with 50 open streams.
    let figure = run.check("send-to-first-token-ms");
    let warm: Vec<String> = (0..figure["n"].as_u64().unwrap())
        .map(|i| format!("warm {i}"))
        .collect();
    let mut own = stream_latencies_ms(&redis, &ns.name, &name, &warm).await;
    assert_eq!(own.len(), warm.len(), "every warm turn is on the streams");
    own.sort_unstable();
    let weight = &first["weight"];
    let cookie = console.sign_in(&users::token("alice"));
    let idle = console.rss_kib();
    let open: Vec<TcpStream> = (0..50)
        .map(|_| console.open_stream(&cookie, &format!("/n/{}/dispatches/{name}/stream", ns.name)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = console.rss_kib();
    drop(open);
    eprintln!(
        "console figures: send → first token painted p50 {:.0} ms (min {:.0}, max {:.0}, {} warm turns); \
         the stream's own (turn entry → first reply entry, Redis clock) p50 {} ms (min {}, max {}); \
         dispatch page weight: document {} B, script {} B, style {} B; console RSS {} KiB signed in, \
         {} KiB with 50 open streams; artifacts in {}",
        figure["p50"].as_f64().unwrap(),
        figure["min"].as_f64().unwrap(),
        figure["max"].as_f64().unwrap(),
        figure["n"],
        own[(own.len() - 1) / 2],
        own[0],
        own[own.len() - 1],
        weight["document"],
        weight["script"],
        weight["stylesheet"],
        idle,
        busy,
        artifacts.display()
    );
    for shot in [
        "signin",
        "chat",
        "dispatch",
        "hostile",
        "dispatches",
        "admin",
        "cards-alice",
        "cards-bob",
        "bob-dispatches",
        "knowledge",
        "knowledge-folder",
        "knowledge-diff",
        "knowledge-uploaded",
        "bob-knowledge",
    ] {
        assert!(
            artifacts.join(format!("{shot}.png")).exists(),
            "screenshot {shot}"
        );
    }
    knowledge_api_walls(&admin, &ns.name).await;
    drop(console);
    drop(operator);
    drop(streams);
}

/// Test 4 and the Knowledge walls, from what the browser reported as alice: the history holds
/// the chat's commit (authored by her), a symlink the agent planted is shown as a link and
/// never followed, paths out of the workspace are refused, the diff shows the turn's change,
/// and an uploaded file is a commit authored by alice, with its markup painted as text.
async fn knowledge_as_alice(run: &BrowserRun, admin: &Client, ns: &str, chat_commit: &str) {
    let list = run.check("knowledge-list");
    assert_eq!(list["status"], 200, "{list}");
    assert!(
        list["text"].as_str().unwrap().contains("alice-notes"),
        "{list}"
    );

    let folder = run.check("knowledge-folder");
    assert_eq!(folder["status"], 200, "{folder}");
    let history = folder["history"].as_array().unwrap();
    let chat = history
        .iter()
        .find(|h| h["id"] == chat_commit)
        .unwrap_or_else(|| panic!("the chat's commit {chat_commit} in the history: {folder}"));
    assert!(
        chat["author"].as_str().unwrap().starts_with("alice"),
        "{chat}"
    );
    let files = folder["files"].as_array().unwrap();
    let kind = |name: &str| {
        files
            .iter()
            .find(|f| f["name"].as_str().unwrap().starts_with(name))
            .map(|f| f["kind"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        kind("from-the-console.md").as_deref(),
        Some("file"),
        "{folder}"
    );
    assert_eq!(kind("passwd-link").as_deref(), Some("link"), "{folder}");

    let file = run.check("knowledge-file");
    assert_eq!(
        file["written"]["text"].as_str().map(str::trim_end),
        Some("written in the browser"),
        "{file}"
    );
    // The link is its target's name: the reader never follows it to the node's /etc/passwd.
    assert_eq!(file["link"]["text"], "/etc/passwd", "{file}");
    assert!(
        !file["link"]["main"].as_str().unwrap().contains("root:"),
        "{file}"
    );
    let traversal = run.check("knowledge-traversal");
    for case in ["escaped", "absolute"] {
        assert_eq!(traversal[case]["status"], 400, "{traversal}");
        assert!(traversal[case]["text"].is_null(), "{traversal}");
    }

    let diff = run.check("knowledge-diff");
    assert!(
        diff["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("+written in the browser")),
        "{diff}"
    );
    assert!(
        diff["author"].as_str().unwrap().starts_with("alice"),
        "{diff}"
    );

    // The upload: a Card alice owns and decided, applied as a commit authored by her.
    let upload = run.check("knowledge-upload");
    let uploaded = &upload["uploaded"];
    assert!(
        uploaded.is_object(),
        "the upload's commit in the history: {upload}"
    );
    assert!(
        uploaded["author"].as_str().unwrap().starts_with("alice"),
        "{upload}"
    );
    assert_eq!(upload["pwned"], Value::Null, "{upload}");
    assert_eq!(upload["elements"], 0, "{upload}");
    assert!(
        upload["shown"]["text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__pwned = 4</script>"),
        "{upload}"
    );
    let dir = claim_folder(admin, ns, WORKSPACE_CLAIM, "alice/notes").await;
    let id = uploaded["id"].as_str().unwrap();
    assert_eq!(git(&dir, &["log", "-1", "--format=%an", id]), "alice");
    assert!(
        git(&dir, &["log", "-1", "--format=%B", id]).contains("Vexa-Approved-By: alice"),
        "the trailer names who approved"
    );
    assert_eq!(
        git(&dir, &["show", &format!("{id}:notes/uploaded.md")]),
        "# Uploaded in the browser\n<script>window.__pwned = 4</script>"
    );
    let card = Api::<Card>::namespaced(admin.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|c| {
            c.spec
                .record
                .as_ref()
                .is_some_and(|r| r.path == "notes/uploaded.md")
        })
        .expect("the upload's Card");
    assert_eq!(card.spec.owner, "alice");
    assert_eq!(
        card.spec.decision.and_then(|d| d.by).as_deref(),
        Some("alice")
    );
    eprintln!(
        "knowledge figures: first read of a workspace (its reader started) {} ms, a warm page {} ms; \
         upload → commit in the history {} ms",
        folder["firstReadMs"], folder["warmReadMs"], upload["uploadMs"]
    );
}

/// The status of a request to the API server.
async fn status_of(client: &Client, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    match client.request_text(request).await {
        Ok(text) => (200, text),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// The Knowledge walls through the streams API itself, as `kubectl` would reach them: hostile
/// paths, revisions and uploads are refused with a message; a person's undecided uploads are
/// bounded; bob reads and uploads nothing; the reader the operator started holds no
/// credential and mounts the folder read-only.
async fn knowledge_api_walls(admin: &Client, ns: &str) {
    let alice = users::user_client(admin, "alice").await;
    let bob = users::user_client(admin, "bob").await;
    let at = |op: &str, query: &str| {
        format!(
            "{}?{query}",
            vexa_stream::api::workspace_path(ns, "alice-notes", op)
        )
    };
    for (op, query, code) in [
        ("tree", "path=..%2F..%2Fetc", 400),
        ("blob", "path=%2Fetc%2Fpasswd", 400),
        ("log", "rev=HEAD~1", 400),
        ("log", "rev=--all", 400),
        ("diff", "commit=main", 400),
        // Not a read: the API server's RBAC refuses it before it reaches the operator.
        ("exec", "", 403),
        ("blob", "path=passwd-link", 200),
    ] {
        let (got, text) = status_of(&alice, "GET", &at(op, query), vec![]).await;
        assert_eq!(got, code, "{op}?{query}: {text}");
        if code == 200 {
            assert!(text.contains("\"text\":\"/etc/passwd\""), "{text}");
            assert!(!text.contains("root:"), "{text}");
        }
    }
    let upload = |body: serde_json::Value| serde_json::to_vec(&body).unwrap();
    for (body, what) in [
        (
            json!({"path": "a.md", "content": "x", "author": "bob"}),
            "an author",
        ),
        (
            json!({"path": ".git/hooks/pre-commit", "content": "#!/bin/sh"}),
            "git's files",
        ),
        (json!({"path": "../../x.md", "content": "x"}), "a path out"),
        (
            json!({"path": "big.md", "content": "x".repeat(262_145)}),
            "too large",
        ),
    ] {
        let (got, text) = status_of(&alice, "POST", &at("uploads", ""), upload(body)).await;
        assert_eq!(got, 400, "{what}: {text}");
    }
    // bob: nothing of alice's workspace, and no Card in her name or his.
    let (got, _) = status_of(&bob, "GET", &at("log", ""), vec![]).await;
    assert_eq!(got, 403);
    let (got, _) = status_of(
        &bob,
        "POST",
        &at("uploads", ""),
        upload(json!({"path": "b.md", "content": "from bob"})),
    )
    .await;
    assert_eq!(got, 403);
    // A flood of uploads stops at the bound, with a message.
    let mut accepted = 0;
    let last = loop {
        let body = upload(json!({"path": format!("flood/{accepted}.md"), "content": "x"}));
        let (got, text) = status_of(&alice, "POST", &at("uploads", ""), body).await;
        if got != 200 {
            break (got, text);
        }
        accepted += 1;
        assert!(accepted <= 50, "uploads were never bounded");
    };
    assert_eq!(last.0, 403, "{}", last.1);
    assert!(last.1.contains("undecided uploads"), "{}", last.1);
    eprintln!(
        "knowledge: {accepted} undecided uploads accepted, then: {}",
        last.1
    );
    // The reader the operator started: no token, the folder read-only, the token file.
    let readers = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), ns)
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/component=knowledge-reader"),
        )
        .await
        .unwrap()
        .items;
    assert!(!readers.is_empty(), "a reader ran");
    for pod in readers {
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert!(
            mounts.iter().all(|m| m.read_only == Some(true)),
            "{mounts:?}"
        );
        assert!(
            !mounts
                .iter()
                .any(|m| m.mount_path.contains("serviceaccount")),
            "{mounts:?}"
        );
    }
}
