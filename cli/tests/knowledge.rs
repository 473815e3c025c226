//! `kubectl vexa knowledge` against a mocked API server (`tower-test`): the exact request each
//! read and the upload make (path, query encoding, body), how refusals read, that a hostile
//! path or revision never becomes a request, and that what an agent wrote (escape sequences
//! in a file, a commit message, a file name) is neutralised before a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use rstest::rstest;
use serde_json::{Value, json};
use tower_test::mock::Handle;
use vexa_cli::CliError;
use vexa_cli::knowledge::{
    Knowledge, read_path, render_blob, render_diff, render_json, render_log, render_tree,
    upload_from_bytes,
};
use vexa_core::knowledge::{Blob, Diff, Log, Tree, Upload};

const BASE: &str = "/apis/streams.vexa.ai/v1/namespaces/team/workspaces/notes";
const STEP: Duration = Duration::from_secs(10);
const ESC: char = '\u{1b}';

fn mock() -> (Knowledge, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Knowledge::new(client, "team", "notes"), handle)
}

/// The next request: method, path and query, content type, body; answered with `code` and
/// `answer`.
async fn expect(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    code: StatusCode,
    answer: Value,
) -> (Method, String, Option<String>, Vec<u8>) {
    let (request, send) = tokio::time::timeout(STEP, handle.next_request())
        .await
        .expect("a request")
        .expect("the client is alive");
    let (parts, body) = request.into_parts();
    let body = body.collect_bytes().await.unwrap().to_vec();
    let mut response = Response::new(Body::from(serde_json::to_vec(&answer).unwrap()));
    *response.status_mut() = code;
    send.send_response(response);
    (
        parts.method,
        parts.uri.to_string(),
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body,
    )
}

async fn no_request(handle: &mut Handle<Request<Body>, Response<Body>>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), handle.next_request())
            .await
            .is_err(),
        "a request was made"
    );
}

fn commit(id: &str, summary: &str, message: &str) -> Value {
    json!({
        "id": id, "parents": ["1111111111111111111111111111111111111111"],
        "author": {"name": "alice", "email": "alice@example.com"},
        "committer": {"name": "vexa", "email": "vexa@example.com"},
        "time": "2026-12-07T06:00:00Z", "summary": summary, "message": message,
    })
}

const ID: &str = "0123456789abcdef0123456789abcdef01234567";

#[tokio::test]
async fn reads_ask_the_streams_api_with_encoded_queries() {
    let (k, mut h) = mock();
    let tree = json!({"commit": ID, "path": "", "entries": [], "omitted": 0});
    let blob = json!({"commit": ID, "path": "a b/c&d=é.md", "size": 2, "binary": false, "text": "hi", "truncated": false});
    let log = json!({"commits": [commit(ID, "s", "s")], "more": false});
    let diff = json!({"commit": commit(ID, "s", "s"), "files": [], "omitted": 0});

    let (read, (method, uri, _, body)) =
        tokio::join!(k.tree("", ""), expect(&mut h, StatusCode::OK, tree));
    assert_eq!(read.unwrap().commit, ID);
    assert_eq!(
        (method, uri.as_str()),
        (Method::GET, format!("{BASE}/tree").as_str())
    );
    assert!(body.is_empty());

    let (read, (_, uri, _, _)) = tokio::join!(
        k.blob("abcd", "a b/c&d=é.md"),
        expect(&mut h, StatusCode::OK, blob)
    );
    assert_eq!(read.unwrap().text.as_deref(), Some("hi"));
    assert_eq!(
        uri,
        format!("{BASE}/blob?rev=abcd&path=a%20b/c%26d%3D%C3%A9.md")
    );

    let (read, (_, uri, _, _)) = tokio::join!(k.log("", 50), expect(&mut h, StatusCode::OK, log));
    assert_eq!(read.unwrap().commits.len(), 1);
    assert_eq!(uri, format!("{BASE}/log?limit=50"));

    let (read, (_, uri, _, _)) = tokio::join!(k.diff(ID), expect(&mut h, StatusCode::OK, diff));
    assert_eq!(read.unwrap().commit.id, ID);
    assert_eq!(uri, format!("{BASE}/diff?commit={ID}"));

    // The path the pure helper builds is the one sent.
    assert_eq!(
        read_path("team", "notes", "tree", &[("rev", "beef"), ("path", "x y")]),
        format!("{BASE}/tree?rev=beef&path=x%20y")
    );
}

#[rstest]
#[case::escaping_path("", "../../etc/passwd")]
#[case::absolute_path("", "/etc/passwd")]
#[case::backslash("", "a\\b")]
#[case::ref_name("main", "a.md")]
#[case::revision_expression("HEAD~1", "a.md")]
#[case::option_injection("--all", "a.md")]
#[tokio::test]
async fn hostile_paths_and_revisions_never_become_requests(#[case] rev: &str, #[case] path: &str) {
    let (k, mut h) = mock();
    let e = k.blob(rev, path).await.unwrap_err();
    assert!(matches!(e, CliError::Usage(_)), "{e}");
    let e = k.tree(rev, path).await.unwrap_err();
    assert!(matches!(e, CliError::Usage(_)), "{e}");
    no_request(&mut h).await;
}

#[tokio::test]
async fn an_upload_posts_exactly_path_and_content() {
    let (k, mut h) = mock();
    let upload = upload_from_bytes(
        "notes/today.md",
        "today.md",
        b"# Today\n\"quoted\"\n".to_vec(),
    )
    .unwrap();
    let (accepted, (method, uri, content_type, body)) = tokio::join!(
        k.upload(&upload),
        expect(
            &mut h,
            StatusCode::CREATED,
            json!({"card": "upload-notes-1a2b"})
        )
    );
    assert_eq!(accepted.unwrap().card, "upload-notes-1a2b");
    assert_eq!(method, Method::POST);
    assert_eq!(uri, format!("{BASE}/uploads"));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sent,
        json!({"path": "notes/today.md", "content": "# Today\n\"quoted\"\n"})
    );
    // The server's own parser takes it (no other field: never an author).
    assert_eq!(serde_json::from_slice::<Upload>(&body).unwrap(), upload);
}

#[rstest]
#[case::too_large(vec![b'x'; vexa_core::cards::MAX_RECORD_CONTENT + 1], "at most 262144 bytes")]
#[case::not_utf8(vec![b'a', 0xff, 0xfe], "not UTF-8")]
fn local_files_that_cannot_be_uploaded_say_why(#[case] bytes: Vec<u8>, #[case] says: &str) {
    let e = upload_from_bytes("a.md", "f", bytes)
        .unwrap_err()
        .to_string();
    assert!(e.contains(says), "{e}");
}

#[tokio::test]
async fn an_upload_into_git_is_refused_before_any_request() {
    let (k, mut h) = mock();
    let hostile = Upload {
        path: ".git/hooks/pre-commit".into(),
        content: "#!/bin/sh".into(),
    };
    assert!(matches!(
        k.upload(&hostile).await.unwrap_err(),
        CliError::Usage(_)
    ));
    no_request(&mut h).await;
}

#[rstest]
// RBAC (the API server's or the operator's): the permission is named.
#[case::forbidden(
    StatusCode::FORBIDDEN,
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
           "message": "bob may not read the files of workspace team/notes (get on workspaces.vexa.ai)"}),
    &["you may not do this", "get on workspaces (vexa.ai) and on workspaces/blob (streams.vexa.ai) in namespace team", "bob may not"]
)]
// The operator's check of the query.
#[case::bad_request(
    StatusCode::BAD_REQUEST,
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "BadRequest", "code": 400,
           "message": "path \"x\" is not a path in the workspace"}),
    &["refused reading the blob of workspace team/notes", "is not a path"]
)]
// The reader's own answer, relayed: `{reason, message}` without a code.
#[case::reader_not_found(
    StatusCode::NOT_FOUND,
    json!({"reason": "NotFound", "message": "no such file: a.md"}),
    &["reading the blob of workspace team/notes", "no such file: a.md"]
)]
#[case::no_streams_api(
    StatusCode::NOT_FOUND,
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": "the server could not find the requested resource"}),
    &["does not serve the streams API"]
)]
#[case::reader_down(
    StatusCode::SERVICE_UNAVAILABLE,
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503,
           "message": "the workspace's reader did not answer"}),
    &["did not answer", "reader did not answer"]
)]
#[tokio::test]
async fn refusals_read_as_the_cli_says_others(
    #[case] code: StatusCode,
    #[case] answer: Value,
    #[case] says: &[&str],
) {
    let (k, mut h) = mock();
    let (read, _) = tokio::join!(k.blob("", "a.md"), expect(&mut h, code, answer));
    let e = read.unwrap_err().to_string();
    for words in says {
        assert!(e.contains(words), "{words:?} in {e}");
    }
}

// ---- what reaches a terminal ----

const HOSTILE: &str = "ok\u{1b}]52;c;Y3VybCBldmlsIHwgc2g=\u{7}\u{1b}[2K\u{9b}31m\u{202e}txt";

fn clean(s: &str) -> bool {
    !s.chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}'))
}

#[test]
fn a_hostile_file_is_neutralised_on_a_terminal_and_exact_into_a_pipe() {
    let blob: Blob = serde_json::from_value(json!({
        "commit": ID, "path": "notes/evil.md", "size": HOSTILE.len(), "binary": false,
        "text": HOSTILE, "truncated": false,
    }))
    .unwrap();
    let shown = render_blob(&blob, true).unwrap();
    assert!(clean(&shown), "{shown:?}");
    assert!(shown.starts_with("ok^[]52;c;"), "{shown:?}");
    assert!(shown.ends_with('\n'));
    // Into a pipe or a file: the text as stored, byte for byte.
    assert_eq!(render_blob(&blob, false).unwrap(), HOSTILE);
}

#[test]
fn a_binary_file_is_not_shown() {
    let blob: Blob = serde_json::from_value(json!({
        "commit": ID, "path": "img.png", "size": 2048, "binary": true, "truncated": false,
    }))
    .unwrap();
    for tty in [true, false] {
        let e = render_blob(&blob, tty).unwrap_err().to_string();
        assert!(e.contains("img.png is a binary file (2048 bytes)"), "{e}");
    }
}

#[test]
fn hostile_commit_messages_and_names_are_neutralised() {
    let log: Log = serde_json::from_value(json!({
        "commits": [commit(ID, HOSTILE, &format!("{HOSTILE}\n\nbody {ESC}[31mred"))], "more": false,
    }))
    .unwrap();
    let text = render_log(&log);
    assert!(clean(&text), "{text:?}");
    assert_eq!(
        text,
        "0123456789ab  2026-12-07T06:00:00Z  alice  ok^[]52;c;Y3VybCBldmlsIHwgc2g=^G^[[2K<U+009B>31m<U+202E>txt\n"
    );

    let diff: Diff = serde_json::from_value(json!({
        "commit": commit(ID, HOSTILE, &format!("{HOSTILE}\n\nbody {ESC}[31mred")),
        "files": [
            {"path": format!("a{ESC}[8m.md"), "change": "added", "binary": false,
             "patch": format!("@@ -0,0 +1 @@\n+{HOSTILE}\n"), "truncated": false},
            {"path": "img.png", "change": "modified", "binary": true, "truncated": false},
        ],
        "omitted": 0,
    }))
    .unwrap();
    let text = render_diff(&diff);
    assert!(clean(&text), "{text:?}");
    assert!(
        text.contains("added: a^[[8m.md\n@@ -0,0 +1 @@\n+ok^[]52"),
        "{text}"
    );
    assert!(text.contains("    body ^[[31mred\n"), "{text}");
    assert!(
        text.contains("modified: img.png\n  (binary: no patch)\n"),
        "{text}"
    );

    let tree: Tree = serde_json::from_value(json!({
        "commit": ID, "path": "",
        "entries": [
            {"name": "docs", "kind": "folder"},
            {"name": format!("x{ESC}]0;title{}", '\u{7}'), "kind": "file", "size": 12},
            {"name": "passwd-link", "kind": "link"},
        ],
        "omitted": 0,
    }))
    .unwrap();
    assert_eq!(
        render_tree(&tree),
        "folder      -  docs/\nfile       12  x^[]0;title^G\nlink        -  passwd-link -> (link)\n"
    );

    // -o json keeps the meaning and no raw control reaches the terminal.
    let line = render_json(&log).unwrap();
    assert!(clean(&line), "{line:?}");
    assert_eq!(serde_json::from_str::<Log>(&line).unwrap(), log);
}
