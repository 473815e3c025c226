//! `kubectl vexa knowledge`: a workspace's history, files and diffs, and files a person
//! uploads, through the streams API (`streams.vexa.ai`, `workspaces/{log,tree,blob,diff}` and
//! `workspaces/uploads`; the contract is `vexa_core::knowledge`). The operator asks the
//! cluster's RBAC about the person and reads through the workspace's trusted reader; the CLI
//! mounts nothing. The web console (`console/src/knowledge.rs`) makes the same requests.
//!
//! Paths and revisions are checked here with the contract's own rules before any request (the
//! operator checks them again). Commit messages, file names and file text come from agents,
//! so everything shown on a terminal passes through [`crate::safe`]; `cat` into a pipe writes
//! the file's text exactly. An upload is a `record` Card the person owns; `--approve` decides
//! it as them (like the console) and waits for the commit.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vexa_core::cards::MAX_RECORD_CONTENT;
use vexa_core::knowledge::{
    self as contract, Blob, ChangeKind, Diff, EntryKind, Log, Tree, Upload, UploadAccepted, ops,
};
use vexa_crds::card::{Card, CardPhase, Verdict};
use vexa_stream::api::workspace_path;

use crate::args::{KnowledgeCommand, KnowledgeTarget};
use crate::cards;
use crate::cluster::Cluster;
use crate::error::CliError;
use crate::safe::{for_terminal, json_for_terminal};

/// How much of a commit id is shown in tables.
const SHORT: usize = 12;
/// How often an approved upload's Card is read while waiting for its commit.
const POLL: Duration = Duration::from_millis(500);
/// The reason recorded on an upload approved with `--approve`.
const APPROVE_REASON: &str = "uploaded with kubectl vexa knowledge upload --approve";

/// One workspace's knowledge, through the API server, as the kubeconfig's user.
#[derive(Clone)]
pub struct Knowledge {
    client: Client,
    namespace: String,
    workspace: String,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("namespace", &self.namespace)
            .field("workspace", &self.workspace)
            .finish()
    }
}

/// The query string of a read: the pairs with a value, each value percent-encoded as the
/// contract says (`encode_query_value`); empty pairs are left out (the head, the top).
pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", contract::encode_query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request path of a read: `…/workspaces/{name}/{op}?{query}`.
pub fn read_path(namespace: &str, workspace: &str, op: &str, pairs: &[(&str, &str)]) -> String {
    let q = query(pairs);
    let path = workspace_path(namespace, workspace, op);
    if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    }
}

impl Knowledge {
    /// The knowledge of workspace `namespace/workspace`.
    pub fn new(client: Client, namespace: &str, workspace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            workspace: workspace.to_owned(),
        }
    }

    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.workspace)
    }

    /// Commits reachable from `rev` (empty: the head), newest first, at most `limit`.
    pub async fn log(&self, rev: &str, limit: usize) -> Result<Log, CliError> {
        check_rev(rev)?;
        let limit = limit.to_string();
        self.read(ops::LOG, &[("rev", rev), ("limit", &limit)])
            .await
    }

    /// The folder `path` (empty: the top) at `rev` (empty: the head).
    pub async fn tree(&self, rev: &str, path: &str) -> Result<Tree, CliError> {
        check_rev(rev)?;
        check_path(path)?;
        self.read(ops::TREE, &[("rev", rev), ("path", path)]).await
    }

    /// The file `path` at `rev` (empty: the head).
    pub async fn blob(&self, rev: &str, path: &str) -> Result<Blob, CliError> {
        check_rev(rev)?;
        if path.is_empty() {
            return Err(CliError::Usage("name a file to read".into()));
        }
        check_path(path)?;
        self.read(ops::BLOB, &[("rev", rev), ("path", path)]).await
    }

    /// What `commit` changed against its first parent.
    pub async fn diff(&self, commit: &str) -> Result<Diff, CliError> {
        if commit.is_empty() {
            return Err(CliError::Usage("name a commit".into()));
        }
        check_rev(commit)?;
        self.read(ops::DIFF, &[("commit", commit)]).await
    }

    /// Proposes `upload` for the workspace: the streams API makes it a `record` Card owned by
    /// the requesting user and answers its name.
    pub async fn upload(&self, upload: &Upload) -> Result<UploadAccepted, CliError> {
        check_upload(upload)?;
        let request = http::Request::post(workspace_path(
            &self.namespace,
            &self.workspace,
            ops::UPLOADS,
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(upload)?)
        .map_err(|e| CliError::Usage(e.to_string()))?;
        self.client.request(request).await.map_err(|e| {
            refusal(
                format!("uploading {} to workspace {}", upload.path, self.id()),
                format!(
                    "create on workspaces/uploads in both vexa.ai and streams.vexa.ai in \
                     namespace {}",
                    self.namespace
                ),
                e,
            )
        })
    }

    async fn read<T: DeserializeOwned>(
        &self,
        op: &str,
        pairs: &[(&str, &str)],
    ) -> Result<T, CliError> {
        let path = read_path(&self.namespace, &self.workspace, op, pairs);
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        self.client.request::<T>(request).await.map_err(|e| {
            refusal(
                format!("reading the {op} of workspace {}", self.id()),
                format!(
                    "get on workspaces (vexa.ai) and on workspaces/{op} (streams.vexa.ai) in \
                     namespace {}",
                    self.namespace
                ),
                e,
            )
        })
    }
}

/// A revision the streams API reads, or a clear error before any request.
pub fn check_rev(rev: &str) -> Result<(), CliError> {
    if contract::readable_rev(rev) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{rev:?} is not a commit id (4 to 40 hex digits; ref names such as main or HEAD~1 \
             are not read)"
        )))
    }
}

/// A path the streams API reads, or a clear error before any request.
pub fn check_path(path: &str) -> Result<(), CliError> {
    if contract::readable_path(path) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{path:?} is not a path in the workspace (relative to its top, '/'-separated, no \
             '.' or '..' segment, no backslash)"
        )))
    }
}

fn check_upload(upload: &Upload) -> Result<(), CliError> {
    if upload.path.len() > 1024 || !vexa_core::cards::safe_record_path(&upload.path) {
        return Err(CliError::Usage(format!(
            "{:?} is not a file path in the workspace (relative, no '.', '..' or empty segment, \
             not under .git)",
            upload.path
        )));
    }
    if upload.content.len() > MAX_RECORD_CONTENT {
        return Err(CliError::BadFile(format!(
            "the upload is {} bytes; at most {MAX_RECORD_CONTENT} bytes are taken",
            upload.content.len()
        )));
    }
    Ok(())
}

/// The upload of the local file `file` to `path`: its text, refused (before any request) when
/// it is larger than a record Card holds or is not UTF-8.
pub fn upload_of(path: &str, file: &Path) -> Result<Upload, CliError> {
    let shown = file.display();
    let size = std::fs::metadata(file)
        .map_err(|e| CliError::BadFile(format!("{shown} cannot be read: {e}")))?
        .len();
    if size > MAX_RECORD_CONTENT as u64 {
        return Err(CliError::BadFile(format!(
            "{shown} is {size} bytes; an upload is at most {MAX_RECORD_CONTENT} bytes (256 KiB)"
        )));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::BadFile(format!("{shown} cannot be read: {e}")))?;
    upload_from_bytes(path, &shown.to_string(), bytes)
}

/// [`upload_of`] for bytes already read (`name` is what the messages call them).
pub fn upload_from_bytes(path: &str, name: &str, bytes: Vec<u8>) -> Result<Upload, CliError> {
    if bytes.len() > MAX_RECORD_CONTENT {
        return Err(CliError::BadFile(format!(
            "{name} is {} bytes; an upload is at most {MAX_RECORD_CONTENT} bytes (256 KiB)",
            bytes.len()
        )));
    }
    let content = String::from_utf8(bytes).map_err(|e| {
        CliError::BadFile(format!(
            "{name} is not UTF-8 text (invalid at byte {}): only text files can be uploaded",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let upload = Upload {
        path: path.to_owned(),
        content,
    };
    check_upload(&upload)?;
    Ok(upload)
}

/// The error for a refused knowledge request, as the CLI says others: what was being done, and
/// for a 403 which permission is missing. A reader's own refusal (`{reason, message}`, no
/// `code`) is read by its reason.
pub fn refusal(action: String, needs: String, e: kube::Error) -> CliError {
    let kube::Error::Api(s) = e else {
        return CliError::kube(action, e);
    };
    let code = match (s.code, s.reason.as_str()) {
        (0, "BadRequest") => 400,
        (0, "Unauthorized" | "Forbidden") => 403,
        (0, "NotFound") => 404,
        (0, "ServiceUnavailable") => 503,
        (code, _) => code,
    };
    let message = if s.message.is_empty() {
        format!("{} ({code})", s.reason)
    } else {
        s.message.clone()
    };
    match code {
        403 => CliError::Forbidden {
            action,
            needs,
            message,
        },
        // The API server's own 404 for a group nobody serves.
        404 if message.contains("could not find the requested resource") => {
            CliError::NoStreamsApi { message }
        }
        503 => CliError::StreamsUnavailable { action, message },
        _ => CliError::Api { action, message },
    }
}

// ---- rendering (pure) ----------------------------------------------------------------------

fn short(id: &str) -> &str {
    id.get(..SHORT).unwrap_or(id)
}

/// A line of an agent's text for a table: controls shown, line breaks flattened.
fn cell(s: &str) -> String {
    for_terminal(s)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `log` as text: one line per commit (short id, time, author, summary), newest first.
pub fn render_log(log: &Log) -> String {
    let mut out = String::new();
    for c in &log.commits {
        let _ = writeln!(
            out,
            "{}  {}  {}  {}",
            short(&c.id),
            cell(&c.time),
            cell(&c.author.name),
            cell(&c.summary)
        );
    }
    out
}

/// `ls` as text: kind, size and name of each entry (folders end in `/`).
pub fn render_tree(tree: &Tree) -> String {
    let rows: Vec<(&str, String, String)> = tree
        .entries
        .iter()
        .map(|e| {
            let name = cell(&e.name);
            match e.kind {
                EntryKind::Folder => ("folder", "-".to_owned(), format!("{name}/")),
                EntryKind::File => (
                    "file",
                    e.size.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    name,
                ),
                EntryKind::Link => ("link", "-".to_owned(), format!("{name} -> (link)")),
                EntryKind::Submodule => ("submodule", "-".to_owned(), name),
            }
        })
        .collect();
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (kind, size, name) in rows {
        let _ = writeln!(out, "{kind:<9}  {size:>width$}  {name}");
    }
    out
}

/// `diff` as text: the commit, as `git show` lays it out, then each file with its patch.
pub fn render_diff(diff: &Diff) -> String {
    let c = &diff.commit;
    let mut out = String::new();
    let _ = writeln!(out, "commit {}", cell(&c.id));
    let _ = writeln!(
        out,
        "Author:    {} <{}>",
        cell(&c.author.name),
        cell(&c.author.email)
    );
    let _ = writeln!(
        out,
        "Committer: {} <{}>",
        cell(&c.committer.name),
        cell(&c.committer.email)
    );
    let _ = writeln!(out, "Date:      {}", cell(&c.time));
    if !c.parents.is_empty() {
        let parents: Vec<&str> = c.parents.iter().map(|p| short(p)).collect();
        let _ = writeln!(out, "Parents:   {}", cell(&parents.join(" ")));
    }
    out.push('\n');
    for line in for_terminal(c.message.trim_end()).lines() {
        let _ = writeln!(out, "    {line}");
    }
    for f in &diff.files {
        let change = match f.change {
            ChangeKind::Added => "added",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
            ChangeKind::TypeChanged => "type changed",
        };
        out.push('\n');
        match &f.old_path {
            Some(old) => {
                let _ = writeln!(out, "{change}: {} (from {})", cell(&f.path), cell(old));
            }
            None => {
                let _ = writeln!(out, "{change}: {}", cell(&f.path));
            }
        }
        match (&f.patch, f.binary) {
            (_, true) => out.push_str("  (binary: no patch)\n"),
            (Some(patch), false) => {
                let patch = for_terminal(patch);
                out.push_str(&patch);
                if !patch.ends_with('\n') {
                    out.push('\n');
                }
                if f.truncated {
                    out.push_str("  (the patch was cut for size)\n");
                }
            }
            (None, false) => out.push_str("  (too large to show)\n"),
        }
    }
    if diff.omitted > 0 {
        let _ = writeln!(out, "\n({} more files not shown)", diff.omitted);
    }
    out
}

/// What `cat` writes: the file's text, made safe when it goes to a terminal (`tty`), exactly as
/// stored otherwise. A binary file is an error that says so.
pub fn render_blob(blob: &Blob, tty: bool) -> Result<String, CliError> {
    let text = match (&blob.text, blob.binary) {
        (Some(text), false) => text,
        _ => {
            return Err(CliError::BadFile(format!(
                "{} is a binary file ({} bytes) at commit {}: not shown (only text is read)",
                for_terminal(&blob.path),
                blob.size,
                short(&blob.commit)
            )));
        }
    };
    if !tty {
        return Ok(text.clone());
    }
    let mut shown = for_terminal(text).into_owned();
    // The shell's prompt starts on a line of its own.
    if !shown.is_empty() && !shown.ends_with('\n') {
        shown.push('\n');
    }
    Ok(shown)
}

/// `-o json`: the answer as one line of JSON, safe for a terminal without changing what it
/// means.
pub fn render_json(value: &impl Serialize) -> Result<String, CliError> {
    let line = serde_json::to_string(value)?;
    Ok(format!("{}\n", json_for_terminal(&line)))
}

// ---- the command ---------------------------------------------------------------------------

/// Runs `kubectl vexa knowledge …`.
pub async fn command(
    cluster: &Cluster,
    default_namespace: &str,
    flag: Option<&str>,
    c: &KnowledgeCommand,
) -> Result<(), CliError> {
    let target = match c {
        KnowledgeCommand::Log(a) => &a.target,
        KnowledgeCommand::Ls(a) => &a.target,
        KnowledgeCommand::Cat(a) => &a.target,
        KnowledgeCommand::Diff(a) => &a.target,
        KnowledgeCommand::Upload(a) => &a.target,
    };
    let ns = target
        .workspace
        .namespace(flag, default_namespace)
        .map_err(CliError::Usage)?
        .to_owned();
    let k = Knowledge::new(cluster.client(), &ns, &target.workspace.name);
    let json = is_json(target);
    let out = match c {
        KnowledgeCommand::Log(a) => {
            let log = k.log(a.rev.as_deref().unwrap_or(""), a.limit).await?;
            if json {
                render_json(&log)?
            } else {
                if log.commits.is_empty() {
                    eprintln!("nothing is committed in workspace {} yet", k.id());
                } else if log.more {
                    eprintln!(
                        "(older commits not shown: --limit up to {}, or --rev <oldest shown>)",
                        contract::MAX_LOG
                    );
                }
                render_log(&log)
            }
        }
        KnowledgeCommand::Ls(a) => {
            let tree = k
                .tree(
                    a.rev.as_deref().unwrap_or(""),
                    a.path.as_deref().unwrap_or(""),
                )
                .await?;
            if json {
                render_json(&tree)?
            } else {
                if tree.commit.is_empty() {
                    eprintln!("nothing is committed in workspace {} yet", k.id());
                }
                if tree.omitted > 0 {
                    eprintln!("({} more entries not shown)", tree.omitted);
                }
                render_tree(&tree)
            }
        }
        KnowledgeCommand::Cat(a) => {
            let blob = k.blob(a.rev.as_deref().unwrap_or(""), &a.path).await?;
            if json {
                render_json(&blob)?
            } else {
                let shown = render_blob(&blob, std::io::stdout().is_terminal())?;
                if blob.truncated {
                    eprintln!(
                        "{}: {} bytes, only the first {} are shown",
                        for_terminal(&blob.path),
                        blob.size,
                        blob.text.as_deref().map_or(0, str::len)
                    );
                }
                shown
            }
        }
        KnowledgeCommand::Diff(a) => {
            let diff = k.diff(&a.commit).await?;
            if json {
                render_json(&diff)?
            } else {
                render_diff(&diff)
            }
        }
        KnowledgeCommand::Upload(a) => {
            let upload = upload_of(&a.path, &a.file)?;
            let done = upload_command(cluster, &k, &upload, a.approve, a.wait).await?;
            if json {
                render_json(&done)?
            } else {
                match &done.commit {
                    Some(commit) => format!(
                        "card {}/{}: {} committed as {commit}\n",
                        done.namespace, done.card, done.path
                    ),
                    None => format!(
                        "card {ns}/{card}: {path} proposed; approve it with `kubectl vexa card \
                         approve {ns}/{card}` (or upload with --approve)\n",
                        ns = done.namespace,
                        card = done.card,
                        path = done.path
                    ),
                }
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn is_json(t: &KnowledgeTarget) -> bool {
    t.output == "json"
}

/// What an upload came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uploaded {
    /// The Card's namespace.
    pub namespace: String,
    /// The Card.
    pub card: String,
    /// The file's path in the workspace.
    pub path: String,
    /// The commit, once approved and applied (`--approve`).
    pub commit: Option<String>,
}

async fn upload_command(
    cluster: &Cluster,
    k: &Knowledge,
    upload: &Upload,
    approve: bool,
    wait: u64,
) -> Result<Uploaded, CliError> {
    let accepted = k.upload(upload).await?;
    let card_id = format!("{}/{}", k.namespace, accepted.card);
    eprintln!("{} proposed as card {card_id}", upload.path);
    let mut done = Uploaded {
        namespace: k.namespace.clone(),
        card: accepted.card.clone(),
        path: upload.path.clone(),
        commit: None,
    };
    if !approve {
        return Ok(done);
    }
    let client = cluster.client();
    let api = Api::<Card>::namespaced(client.clone(), &k.namespace);
    let card = api
        .get(&accepted.card)
        .await
        .map_err(|e| CliError::kube(format!("reading card {card_id}"), e))?;
    match &card.spec.decision {
        // The same file from the same person is the same Card: decided before, it is waited on.
        Some(d) => eprintln!(
            "card {card_id} was already {} by {}",
            match d.verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            },
            d.by.as_deref().unwrap_or("someone")
        ),
        None => {
            let by = cluster.username().await?;
            cards::decide(
                &client,
                &k.namespace,
                &accepted.card,
                Verdict::Approve,
                Some(APPROVE_REASON),
                &by,
            )
            .await?;
            eprintln!("card {card_id}: approved by {by}; waiting for the commit");
        }
    }
    done.commit = Some(
        until_committed(
            &api,
            &k.namespace,
            &accepted.card,
            Duration::from_secs(wait),
        )
        .await?,
    );
    Ok(done)
}

/// Waits until the Card is applied and returns its commit; progress (each new phase) goes to
/// standard error. A rejected or failed Card, or no commit within `wait`, is an error.
async fn until_committed(
    api: &Api<Card>,
    namespace: &str,
    name: &str,
    wait: Duration,
) -> Result<String, CliError> {
    let card_id = format!("{namespace}/{name}");
    let start = Instant::now();
    let mut told: Option<CardPhase> = None;
    loop {
        match api.get(name).await {
            Ok(card) => {
                let st = card.status.unwrap_or_default();
                if st.phase != told {
                    if let Some(p) = st.phase {
                        eprintln!(
                            "card {card_id}: {} ({} s)",
                            phase_word(p),
                            start.elapsed().as_secs()
                        );
                    }
                    told = st.phase;
                }
                match (st.phase, st.applied_commit) {
                    (Some(CardPhase::Applied), Some(commit)) => return Ok(commit),
                    (Some(p @ (CardPhase::Failed | CardPhase::Rejected)), _) => {
                        let why = st
                            .conditions
                            .iter()
                            .rev()
                            .map(|c| c.message.as_str())
                            .find(|m| !m.is_empty())
                            .unwrap_or("no reason given");
                        return Err(CliError::Api {
                            action: format!("committing the upload of card {card_id}"),
                            message: format!(
                                "the card is {}: {}",
                                phase_word(p),
                                for_terminal(why)
                            ),
                        });
                    }
                    _ => {}
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading card {card_id} failed; retrying"),
        }
        if start.elapsed() >= wait {
            return Err(CliError::Api {
                action: format!("waiting for the commit of card {card_id}"),
                message: format!(
                    "not applied after {} s (phase {}); it is committed once the workspace is \
                     free: check `kubectl get card {name} -n {}` later",
                    wait.as_secs(),
                    told.map_or("pending", phase_word),
                    namespace
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn phase_word(p: CardPhase) -> &'static str {
    match p {
        CardPhase::Pending => "pending",
        CardPhase::Approved => "approved",
        CardPhase::Rejected => "rejected",
        CardPhase::Applied => "applied",
        CardPhase::Failed => "failed",
    }
}
