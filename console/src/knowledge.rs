//! Knowledge: a workspace's files, history and diffs, and uploads, as the signed-in person.
//!
//! Everything goes through the streams API (`workspaces/{log,tree,blob,diff,uploads}`), which
//! asks the cluster's RBAC about the person and reads through the workspace's trusted reader;
//! the console mounts nothing and never reaches an agent's pod. File text and patches are
//! painted by maud, which escapes them. An upload is a `record` Card the person owns (the
//! operator makes it; nobody else may), which the console then approves as them: the commit is
//! authored by the person, under the workspace's write lock, by the Card controller.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kube::Client;
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use vexa_core::knowledge::{
    self as contract, Blob, Diff, EntryKind, Log, Tree, Upload, UploadAccepted, ops,
};
use vexa_crds::Workspace;
use vexa_crds::card::Verdict;
use vexa_stream::api::workspace_path;

use crate::cluster::{Action, may};
use crate::guard::SignedIn;
use crate::pages::{self, Frame};
use crate::routes::{InNamespace, Problem, frame, html, list_of, names, written};

/// The largest upload form the console takes (a file of at most the record limit, and the
/// form's other fields).
pub const MAX_UPLOAD_FORM: usize = vexa_core::cards::MAX_RECORD_CONTENT + 16 * 1024;
/// Commits shown on a workspace's page.
const HISTORY: usize = 30;

/// `?path=&rev=` of a folder or file.
#[derive(Debug, Default, Deserialize)]
pub struct At {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    rev: Option<String>,
    #[serde(default)]
    uploaded: Option<String>,
}

impl At {
    fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("")
    }
    fn rev(&self) -> &str {
        self.rev.as_deref().unwrap_or("")
    }
    fn checked(&self) -> Result<(), Problem> {
        if !contract::readable_path(self.path()) || !contract::readable_rev(self.rev()) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "Bad path",
                "A path is relative, '/'-separated, with no '.' or '..'; a revision is a commit id.",
            ));
        }
        Ok(())
    }
}

/// One read of the streams API as the person.
async fn read<T: DeserializeOwned>(
    client: &Client,
    ns: &str,
    ws: &str,
    op: &str,
    query: &[(&str, &str)],
) -> Result<T, Problem> {
    let q: Vec<String> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", contract::encode_query_value(v)))
        .collect();
    let path = format!("{}?{}", workspace_path(ns, ws, op), q.join("&"));
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad request", e.to_string()))?;
    client
        .request::<T>(request)
        .await
        .map_err(|e| Problem::kube(&format!("read workspace {ns}/{ws}"), e))
}

/// Uploading needs `create` on `workspaces/uploads` in both groups, and deciding the Card it
/// becomes needs `patch` on cards.
async fn may_upload(client: &Client, ns: &str, ws: &str) -> bool {
    let ask = |group, resource| Action {
        verb: "create",
        group,
        resource,
        namespace: ns,
        name: Some(ws),
    };
    let (crd, streams, decide) = tokio::join!(
        may(client, ask("vexa.ai", "workspaces/uploads")),
        may(client, ask("streams.vexa.ai", "workspaces/uploads")),
        may(
            client,
            Action {
                verb: "patch",
                group: "vexa.ai",
                resource: "cards",
                namespace: ns,
                name: None,
            }
        ),
    );
    crd && streams && decide
}

/// `/knowledge`: the workspaces of a namespace.
pub(crate) async fn list(s: SignedIn, InNamespace(ns): InNamespace) -> Response {
    match list_of::<Workspace>(&s, &ns, "workspaces").await {
        Ok(list) => html(workspaces(&frame(&s, &ns), &list)),
        Err(page) => page,
    }
}

/// `/n/{ns}/workspaces/{name}`: a folder at a commit, the history, and the upload form.
pub(crate) async fn folder(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    Query(at): Query<At>,
) -> Response {
    if let Err(p) = names(&ns, &name).and_then(|()| at.checked()) {
        return p.page(&s, &ns);
    }
    let client = s.0.client.clone();
    let limit = HISTORY.to_string();
    let tree_q = [("rev", at.rev()), ("path", at.path())];
    let log_q = [("rev", at.rev()), ("limit", limit.as_str())];
    let (tree, log, upload) = tokio::join!(
        read::<Tree>(&client, &ns, &name, ops::TREE, &tree_q),
        read::<Log>(&client, &ns, &name, ops::LOG, &log_q),
        may_upload(&client, &ns, &name),
    );
    let tree = match tree {
        Ok(t) => t,
        Err(p) => return p.page(&s, &ns),
    };
    let uploaded = match at.uploaded.as_deref().filter(|c| crate::routes::is_name(c)) {
        Some(card) => Some(upload_state(&client, &ns, card).await),
        None => None,
    };
    html(folder_page(
        &frame(&s, &ns),
        &name,
        &tree,
        log,
        upload,
        uploaded.as_deref(),
    ))
}

/// `/n/{ns}/workspaces/{name}/file?path=&rev=`: one file.
pub(crate) async fn file(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    Query(at): Query<At>,
) -> Response {
    if let Err(p) = names(&ns, &name).and_then(|()| at.checked()) {
        return p.page(&s, &ns);
    }
    match read::<Blob>(
        &s.0.client,
        &ns,
        &name,
        ops::BLOB,
        &[("rev", at.rev()), ("path", at.path())],
    )
    .await
    {
        Ok(blob) => html(file_page(&frame(&s, &ns), &name, &blob)),
        Err(p) => p.page(&s, &ns),
    }
}

/// `/n/{ns}/workspaces/{name}/commits/{id}`: what a commit changed.
pub(crate) async fn commit(
    s: SignedIn,
    Path((ns, name, id)): Path<(String, String, String)>,
) -> Response {
    if let Err(p) = names(&ns, &name) {
        return p.page(&s, &ns);
    }
    if id.is_empty() || !contract::readable_rev(&id) {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad commit",
            "A commit is 4 to 40 hex digits.",
        )
        .page(&s, &ns);
    }
    match read::<Diff>(&s.0.client, &ns, &name, ops::DIFF, &[("commit", &id)]).await {
        Ok(diff) => html(diff_page(&frame(&s, &ns), &name, &diff)),
        Err(p) => p.page(&s, &ns),
    }
}

/// `POST /n/{ns}/workspaces/{name}/upload` (multipart: `csrf`, `path`, `file`): the file is
/// proposed as a Card the person owns, which is then approved as them.
pub(crate) async fn upload(
    s: SignedIn,
    Path((ns, name)): Path<(String, String)>,
    h: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let back = format!("/n/{ns}/workspaces/{name}");
    let fields = match form {
        Ok(form) => upload_form(form).await,
        Err(e) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Bad upload",
            e.body_text(),
        )),
    };
    // The CSRF token first: a form that is not even multipart is refused as stale, like any
    // other write without it.
    let csrf = fields.as_ref().ok().and_then(|f| f.csrf.as_deref());
    if let Err(r) = s.check_csrf(&h, csrf) {
        return axum::response::IntoResponse::into_response(r);
    }
    let fields = match fields {
        Ok(f) => f,
        Err(p) => return written(&h, &back, Err(p), &s, &ns),
    };
    let result = async {
        names(&ns, &name)?;
        let path = fields.path.trim().trim_start_matches('/').to_owned();
        let path = if path.is_empty() || path.ends_with('/') {
            format!("{path}{}", fields.file_name)
        } else {
            path
        };
        let content = String::from_utf8(fields.content).map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "Not text",
                "Only text files (UTF-8) can be uploaded.",
            )
        })?;
        let body = serde_json::to_vec(&Upload {
            path: path.clone(),
            content,
        })
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad upload", e.to_string()))?;
        let request = http::Request::post(workspace_path(&ns, &name, ops::UPLOADS))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "Bad upload", e.to_string()))?;
        let accepted: UploadAccepted =
            s.0.client.request(request).await.map_err(|e| {
                Problem::kube(&format!("upload {path} to workspace {ns}/{name}"), e)
            })?;
        // The person's own decision on their own proposal: the commit is authored by them.
        vexa_cli::cards::decide(
            &s.0.client,
            &ns,
            &accepted.card,
            Verdict::Approve,
            Some("uploaded in the console"),
            &s.0.person.name,
        )
        .await
        .map_err(Problem::cli)?;
        Ok(json!({"card": accepted.card, "path": path}))
    }
    .await;
    let back = match &result {
        Ok(v) => format!("{back}?uploaded={}", v["card"].as_str().unwrap_or_default()),
        Err(_) => back,
    };
    written(&h, &back, result, &s, &ns)
}

struct UploadForm {
    csrf: Option<String>,
    path: String,
    file_name: String,
    content: Vec<u8>,
}

async fn upload_form(mut form: Multipart) -> Result<UploadForm, Problem> {
    let bad = |m: String| Problem::new(StatusCode::BAD_REQUEST, "Bad upload", m);
    let mut out = UploadForm {
        csrf: None,
        path: String::new(),
        file_name: String::new(),
        content: Vec::new(),
    };
    let mut had_file = false;
    while let Some(field) = form.next_field().await.map_err(|e| bad(e.to_string()))? {
        match field.name() {
            Some("csrf") => out.csrf = Some(field.text().await.map_err(|e| bad(e.to_string()))?),
            Some("path") => out.path = field.text().await.map_err(|e| bad(e.to_string()))?,
            Some("file") => {
                out.file_name = field
                    .file_name()
                    .unwrap_or_default()
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                out.content = field
                    .bytes()
                    .await
                    .map_err(|e| bad(e.to_string()))?
                    .to_vec();
                had_file = true;
            }
            _ => {}
        }
    }
    if !had_file {
        return Err(bad("Choose a file to upload.".into()));
    }
    Ok(out)
}

/// What became of an upload's Card, in words.
async fn upload_state(client: &Client, ns: &str, card: &str) -> String {
    match kube::Api::<vexa_crds::card::Card>::namespaced(client.clone(), ns)
        .get(card)
        .await
    {
        Ok(c) => {
            let st = c.status.unwrap_or_default();
            let phase = st
                .phase
                .map(|p| format!("{p:?}").to_lowercase())
                .unwrap_or_else(|| "pending".into());
            match st.applied_commit {
                Some(commit) => format!("Card {card}: {phase}, commit {}", short(&commit)),
                None => format!(
                    "Card {card}: {phase} (the commit appears in the history once it is applied)"
                ),
            }
        }
        Err(e) => format!("Card {card}: {e}"),
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

// ---- Pages -------------------------------------------------------------------------------

fn workspaces(frame: &Frame<'_>, list: &[Workspace]) -> Markup {
    let ns = frame.namespace;
    pages::page(
        frame,
        "Knowledge",
        html! {
            table #workspaces {
                thead { tr { th { "Workspace" } th { "Owner" } th { "Head" } th { "Written by" } } }
                @for w in list {
                    @let st = w.status.clone().unwrap_or_default();
                    tr {
                        td { a href={"/n/" (ns) "/workspaces/" (kube::ResourceExt::name_any(w))} { (kube::ResourceExt::name_any(w)) } }
                        td { (w.spec.owner) }
                        td.mono { (st.head_commit.as_deref().map(short).unwrap_or("")) }
                        td { (st.held_by.unwrap_or_default()) }
                    }
                }
            }
            @if list.is_empty() { p.empty { "No workspaces here that you may see." } }
        },
    )
}

fn crumbs(ns: &str, ws: &str, path: &str, rev: &str) -> Markup {
    let base = format!("/n/{ns}/workspaces/{ws}");
    let rev_q = if rev.is_empty() {
        String::new()
    } else {
        format!("&rev={rev}")
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let upto = |i: usize| parts[..=i].join("/");
    html! {
        nav.crumbs {
            a href=(format!("{base}?path={rev_q}")) { (ws) }
            @for (i, part) in parts.iter().enumerate() {
                " / " a href=(format!("{base}?path={}{rev_q}", contract::encode_query_value(&upto(i)))) { (part) }
            }
            @if !rev.is_empty() { " at " span.mono { (short(rev)) } }
        }
    }
}

fn folder_page(
    frame: &Frame<'_>,
    ws: &str,
    tree: &Tree,
    log: Result<Log, Problem>,
    may_upload: bool,
    uploaded: Option<&str>,
) -> Markup {
    let ns = frame.namespace;
    let base = format!("/n/{ns}/workspaces/{ws}");
    let rev_q = if tree.commit.is_empty() {
        String::new()
    } else {
        format!("&rev={}", tree.commit)
    };
    let child = |name: &str| {
        if tree.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", tree.path)
        }
    };
    pages::page(
        frame,
        &format!("Knowledge · {ws}"),
        html! {
            (crumbs(ns, ws, &tree.path, ""))
            @if let Some(u) = uploaded { p #uploaded.notice { (u) } }
            @if tree.commit.is_empty() { p.empty { "Nothing is committed in this workspace yet." } }
            table #files {
                thead { tr { th { "Name" } th { "Size" } } }
                @for e in &tree.entries {
                    tr data-kind=(format!("{:?}", e.kind).to_lowercase()) {
                        td {
                            @match e.kind {
                                EntryKind::Folder => a href=(format!("{base}?path={}{rev_q}", contract::encode_query_value(&child(&e.name)))) { (e.name) "/" },
                                EntryKind::Submodule => span { (e.name) " (submodule)" },
                                EntryKind::Link => a href=(format!("{base}/file?path={}{rev_q}", contract::encode_query_value(&child(&e.name)))) { (e.name) " → (link)" },
                                EntryKind::File => a href=(format!("{base}/file?path={}{rev_q}", contract::encode_query_value(&child(&e.name)))) { (e.name) },
                            }
                        }
                        td { (e.size.map(|s| s.to_string()).unwrap_or_default()) }
                    }
                }
            }
            @if tree.omitted > 0 { p.empty { (tree.omitted) " more entries not shown." } }
            h2 { "History" }
            @match &log {
                Ok(log) => {
                    table #history {
                        thead { tr { th { "Commit" } th { "Summary" } th { "Author" } th { "When" } } }
                        @for c in &log.commits {
                            tr data-commit=(c.id) {
                                td.mono { a href=(format!("{base}/commits/{}", c.id)) { (short(&c.id)) } }
                                td { (c.summary) }
                                td.author { (c.author.name) " <" (c.author.email) ">" }
                                td { (c.time) }
                            }
                        }
                    }
                    @if log.more { p.empty { "Older commits are not shown." } }
                }
                Err(problem) => { p.error { (problem.message) } }
            }
            @if may_upload {
                h2 { "Upload a file" }
                form #upload method="post" action=(format!("{base}/upload")) enctype="multipart/form-data" {
                    input type="hidden" name="csrf" value=[frame.csrf];
                    label { "Path in the workspace (a folder ending in / keeps the file's name) "
                        input name="path" value=(if tree.path.is_empty() { String::new() } else { format!("{}/", tree.path) }) size="40"; }
                    input type="file" name="file" required;
                    button type="submit" { "Upload and commit" }
                }
                p.hint { "The file becomes a card you own, approved by you now; the commit is authored by you once the workspace is free." }
            }
        },
    )
}

fn file_page(frame: &Frame<'_>, ws: &str, blob: &Blob) -> Markup {
    pages::page(
        frame,
        &format!("Knowledge · {ws}"),
        html! {
            (crumbs(frame.namespace, ws, &blob.path, &blob.commit))
            p { (blob.size) " bytes" @if blob.truncated { " (cut: only the start is shown)" } }
            @match (&blob.text, blob.binary) {
                (Some(text), false) => pre #blob { (text) },
                _ => p.empty { "A binary file: not shown." },
            }
        },
    )
}

fn diff_page(frame: &Frame<'_>, ws: &str, diff: &Diff) -> Markup {
    let c = &diff.commit;
    pages::page(
        frame,
        &format!("Commit {}", short(&c.id)),
        html! {
            (crumbs(frame.namespace, ws, "", &c.id))
            dl.facts {
                dt { "Author" } dd #author { (c.author.name) " <" (c.author.email) ">" }
                dt { "Committer" } dd { (c.committer.name) " <" (c.committer.email) ">" }
                dt { "When" } dd { (c.time) }
                dt { "Parents" } dd.mono { @for p in &c.parents { (short(p)) " " } }
            }
            pre.message { (c.message) }
            @for f in &diff.files {
                section.file data-path=(f.path) {
                    h3 { (format!("{:?}", f.change).to_lowercase()) " " span.mono { (f.path) }
                        @if let Some(old) = &f.old_path { " (from " span.mono { (old) } ")" } }
                    @match (&f.patch, f.binary) {
                        (_, true) => p.empty { "Binary: no patch." },
                        (Some(patch), _) => pre.patch {
                            @for line in patch.lines() {
                                span class=(match line.as_bytes().first() { Some(b'+') => "add", Some(b'-') => "del", Some(b'@') => "hunk", _ => "ctx" }) { (line) "\n" }
                            }
                        },
                        (None, _) => p.empty { "Too large to show." },
                    }
                }
            }
            @if diff.omitted > 0 { p.empty { (diff.omitted) " more files not shown." } }
        },
    )
}
