//! What a workspace's trusted reader and its callers agree on (SPEC §3, the console's Knowledge
//! view): the reader (`vexa-agent-worker serve-knowledge`, one short-lived Job per Workspace,
//! the workspace's folder mounted read-only) answers only the operator, which asks it for a
//! person the cluster's RBAC allowed; the operator relays the answers through the streams API
//! (`streams.vexa.ai`, `workspaces/{log,tree,blob,diff}`) unchanged.
//!
//! Everything is read from git's object database at a commit, never from the working folder:
//! a symlink or a file an agent left uncommitted is never followed or read. Every answer is
//! bounded.

use serde::{Deserialize, Serialize};

/// The reader's port (plain HTTP on the pod network; every request but `/healthz` carries
/// [`TOKEN_HEADER`]).
pub const PORT: u16 = 8080;
/// The header that carries the reader's token (`Bearer <token>`).
pub const TOKEN_HEADER: &str = "authorization";
/// Where the reader's Job mounts its token (a Secret key).
pub const TOKEN_FILE: &str = "/run/vexa-knowledge/token";
/// Where the reader's Job mounts the workspace's folder (read-only).
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// The agent worker's subcommand that serves a workspace's knowledge.
pub const SERVE_SUBCOMMAND: &str = "serve-knowledge";
/// Seconds without a request after which the reader exits (the operator starts another when
/// one is needed).
pub const IDLE_EXIT_SECONDS: u64 = 600;

/// The most commits one `log` answers.
pub const MAX_LOG: usize = 200;
/// Commits a `log` answers when not told.
pub const DEFAULT_LOG: usize = 50;
/// The most entries one `tree` answers (the rest are counted in `omitted`).
pub const MAX_TREE_ENTRIES: usize = 1000;
/// The largest text a `blob` answers; a longer file is cut there and marked `truncated`.
pub const MAX_BLOB_TEXT: usize = 262_144;
/// The largest patch text a `diff` answers in all; files past it are listed without a patch.
pub const MAX_DIFF_TEXT: usize = 524_288;
/// The most files one `diff` lists.
pub const MAX_DIFF_FILES: usize = 500;
/// The longest commit message answered (a `log` of [`MAX_LOG`] commits stays a few MiB); a
/// longer one is cut there.
pub const MAX_MESSAGE: usize = 16_384;

/// The reader's routes (and the streams API's subresources of `workspaces`).
pub mod ops {
    /// Commits reachable from a revision, newest first: `?rev=&limit=`.
    pub const LOG: &str = "log";
    /// A folder at a revision: `?rev=&path=`.
    pub const TREE: &str = "tree";
    /// A file at a revision: `?rev=&path=`.
    pub const BLOB: &str = "blob";
    /// What one commit changed against its first parent: `?commit=`.
    pub const DIFF: &str = "diff";
    /// All four, in the order the streams API lists them.
    pub const READS: [&str; 4] = [LOG, TREE, BLOB, DIFF];
    /// The streams API's subresource that proposes a file as a record Card owned by the
    /// requesting person (`POST`, body [`super::Upload`]).
    pub const UPLOADS: &str = "uploads";
}

/// A person or program, as git records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The name.
    pub name: String,
    /// The email.
    pub email: String,
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    /// Its full hex id.
    pub id: String,
    /// Its parents' ids.
    pub parents: Vec<String>,
    /// Who wrote the change.
    pub author: Signature,
    /// Who made the commit.
    pub committer: Signature,
    /// The author's time, RFC 3339.
    pub time: String,
    /// The message's first line.
    pub summary: String,
    /// The whole message (bounded to [`MAX_MESSAGE`]).
    pub message: String,
}

/// `log`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    /// Newest first.
    pub commits: Vec<Commit>,
    /// Whether older commits exist past the limit.
    pub more: bool,
}

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryKind {
    /// A file.
    File,
    /// A folder.
    Folder,
    /// A symbolic link (shown, never followed).
    Link,
    /// A submodule (a commit of another repository).
    Submodule,
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its name in the folder.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// A file's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `tree`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tree {
    /// The commit read (the revision asked for, resolved).
    pub commit: String,
    /// The folder, `/`-separated, `""` for the top.
    pub path: String,
    /// Folders first, then by name.
    pub entries: Vec<Entry>,
    /// Entries left out past [`MAX_TREE_ENTRIES`].
    pub omitted: usize,
}

/// `blob`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// The commit read.
    pub commit: String,
    /// The file's path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it looks binary (then `text` is absent).
    pub binary: bool,
    /// Its text (UTF-8; invalid sequences replaced), at most [`MAX_BLOB_TEXT`] bytes. A
    /// symlink's text is its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Whether `text` was cut.
    pub truncated: bool,
}

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// New.
    Added,
    /// Removed.
    Deleted,
    /// Changed in place.
    Modified,
    /// Moved (and maybe changed).
    Renamed,
    /// Its type changed (for example a file became a link).
    TypeChanged,
}

/// One file of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// Its path after the commit (before it, for a deletion).
    pub path: String,
    /// Its path before, for a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// How.
    pub change: ChangeKind,
    /// Whether either side is binary (then there is no patch).
    pub binary: bool,
    /// The unified patch (hunks only, no header), absent past [`MAX_DIFF_TEXT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Whether the patch was left out or cut for size.
    pub truncated: bool,
}

/// `diff`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// The commit.
    pub commit: Commit,
    /// What it changed against its first parent (everything, for a first commit).
    pub files: Vec<FileChange>,
    /// Files left out past [`MAX_DIFF_FILES`].
    pub omitted: usize,
}

/// A refusal or failure, as the reader and the streams API say it (with a 4xx or 5xx status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// One word: `BadRequest`, `NotFound`, `Unauthorized`, `NotAGitWorkspace`, `Internal`.
    pub reason: String,
    /// For a person.
    pub message: String,
}

/// The body of a `POST` to `workspaces/uploads`: a file the person proposes for their
/// workspace. It becomes a `record` Card owned by the requesting user (never by a name in the
/// body), which they then approve like any card; the apply Job commits it as its approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The file's path in the workspace ([`crate::cards::safe_record_path`]).
    pub path: String,
    /// Its full text, at most [`crate::cards::MAX_RECORD_CONTENT`] bytes.
    pub content: String,
}

/// The answer to an upload: the Card that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadAccepted {
    /// The Card's name (in the workspace's namespace).
    pub card: String,
}

/// Whether `path` may name a folder or file to read: `""` (the top) or `/`-separated segments
/// that are neither empty, `.` nor `..`, with no backslash or NUL. (Reads go through git's
/// tree objects, so this is about clear errors, not about escaping a folder.)
pub fn readable_path(path: &str) -> bool {
    path.is_empty()
        || (path.len() <= 4096
            && !path.contains('\0')
            && !path.contains('\\')
            && path
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."))
}

/// Whether `rev` may name a revision: empty (the head), or a 4 to 40 digit hex commit id. No
/// ref names or revision expressions: nothing an agent wrote into `.git` picks what is read.
pub fn readable_rev(rev: &str) -> bool {
    rev.is_empty() || ((4..=40).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `value` percent-encoded for a query string (all but unreserved characters and `/`), as the
/// console asks the streams API and the streams API asks a reader.
pub fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("", true)]
    #[case("notes", true)]
    #[case("notes/today.md", true)]
    #[case("a/../b", false)]
    #[case("../etc", false)]
    #[case("/etc/passwd", false)]
    #[case("a//b", false)]
    #[case("./a", false)]
    #[case("a\\b", false)]
    #[case("a\0b", false)]
    fn paths(#[case] path: &str, #[case] ok: bool) {
        assert_eq!(readable_path(path), ok, "{path:?}");
    }

    #[rstest]
    #[case("", true)]
    #[case("abcd", true)]
    #[case("0123456789abcdef0123456789abcdef01234567", true)]
    #[case("abc", false)]
    #[case("HEAD~1", false)]
    #[case("main", false)]
    #[case("0123456789abcdef0123456789abcdef012345678", false)]
    #[case("--upload-pack=x", false)]
    fn revs(#[case] rev: &str, #[case] ok: bool) {
        assert_eq!(readable_rev(rev), ok, "{rev:?}");
    }

    #[test]
    fn an_upload_names_no_author() {
        let forged = r#"{"path":"a.md","content":"x","author":"alice"}"#;
        assert!(serde_json::from_str::<Upload>(forged).is_err());
    }
}
