//! A workspace's trusted, read-only git reader (the contract is [`vexa_core::knowledge`]): its
//! history, its folders and files at a commit, and what a commit changed, each answer bounded.
//! [`serve`] answers them over HTTP (`vexa-agent-worker serve-knowledge`).
//!
//! Agents write the folder, so nothing in it is trusted. Everything is read from git's object
//! database at a commit, never from the working folder (the repository is opened bare), so a
//! symlink is shown as a link and never followed. A revision is a hex commit id or the head,
//! never a ref name or an expression. [`open`] refuses a repository whose `.git` could send
//! reads elsewhere (a `.git` file or symlink, alternates, a common dir).

mod diff;
pub mod serve;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use git2::{ErrorCode, ObjectType, Oid, Repository, RepositoryOpenFlags, Sort};
use http::StatusCode;
use vexa_core::knowledge::{
    Blob, Commit, DEFAULT_LOG, Entry, EntryKind, Log, MAX_BLOB_TEXT, MAX_LOG, MAX_MESSAGE,
    MAX_TREE_ENTRIES, Problem, Signature, Tree, readable_path, readable_rev,
};

/// Paths inside `.git` that make git read objects or refs from another repository.
const REDIRECTS: [&str; 3] = [
    "commondir",
    "objects/info/alternates",
    "objects/info/http-alternates",
];
/// Folders of `.git` that must be real folders, not symlinks to another repository's.
const REAL_FOLDERS: [&str; 2] = ["objects", "refs"];
/// How many leading bytes decide whether a file is binary (as git does).
const BINARY_PROBE: usize = 8000;
/// The longest name or email of a commit's signature answered.
const MAX_NAME: usize = 1024;
/// Hex digits of a commit id in messages.
const SHORT_ID: usize = 12;

/// Why a read was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// The request names a path or revision the reader does not accept.
    #[error("{0}")]
    BadRequest(String),
    /// No such commit, file or folder (or a file where a folder was asked, or the reverse).
    #[error("{0}")]
    NotFound(String),
    /// The folder is not a git repository the reader will read.
    #[error("{0}")]
    NotAGitWorkspace(String),
    /// Reading the repository failed.
    #[error("{doing}: {source}")]
    Internal {
        /// What was being read.
        doing: String,
        /// libgit2's error.
        source: git2::Error,
    },
}

impl KnowledgeError {
    /// One word for the kind of error ([`Problem::reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::NotFound(_) => "NotFound",
            Self::NotAGitWorkspace(_) => "NotAGitWorkspace",
            Self::Internal { .. } => "Internal",
        }
    }

    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            // The workspace's state, not the request, is at fault; it may change.
            Self::NotAGitWorkspace(_) => StatusCode::CONFLICT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as the reader answers it.
    pub fn problem(&self) -> Problem {
        Problem {
            reason: self.reason().to_owned(),
            message: self.to_string(),
        }
    }
}

/// A libgit2 failure while doing `doing`.
fn internal(doing: impl Into<String>) -> impl FnOnce(git2::Error) -> KnowledgeError {
    let doing = doing.into();
    move |source| KnowledgeError::Internal { doing, source }
}

/// A repository opened for reading (see [`open`]).
pub struct Reader {
    repo: Repository,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("git_dir", &self.repo.path())
            .finish()
    }
}

/// Opens the repository whose work tree is exactly `path` (no search upwards), refusing one
/// whose `.git` is not a plain folder of this repository's own objects.
pub fn open(path: &Path) -> Result<Reader, KnowledgeError> {
    let refuse = |why: String| {
        KnowledgeError::NotAGitWorkspace(format!(
            "{} is not a git workspace the reader will read: {why}",
            path.display()
        ))
    };
    let git_dir = path.join(".git");
    match fs::symlink_metadata(&git_dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refuse(".git is a symbolic link".into()));
        }
        Ok(m) if m.is_file() => {
            return Err(refuse(
                ".git is a file (a link to a repository elsewhere), not a folder".into(),
            ));
        }
        Ok(m) if !m.is_dir() => return Err(refuse(".git is not a folder".into())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refuse("it has no .git folder".into()));
        }
        Err(e) => return Err(refuse(format!("cannot read .git: {e}"))),
    }
    for redirect in REDIRECTS {
        if exists(&git_dir.join(redirect)).map_err(|e| refuse(e.to_string()))? {
            return Err(refuse(format!(
                ".git/{redirect} exists (it would read objects from another repository)"
            )));
        }
    }
    for folder in REAL_FOLDERS {
        if let Ok(m) = fs::symlink_metadata(git_dir.join(folder))
            && m.file_type().is_symlink()
        {
            return Err(refuse(format!(".git/{folder} is a symbolic link")));
        }
    }
    // Bare: the reader has no work tree, so libgit2 never reads the working folder (not even
    // its .gitattributes).
    let repo = Repository::open_ext(
        &git_dir,
        RepositoryOpenFlags::NO_SEARCH | RepositoryOpenFlags::BARE,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| match e.code() {
        ErrorCode::Owner => refuse(format!(
            "it belongs to another user than the reader's, so git refuses it ({})",
            e.message()
        )),
        ErrorCode::NotFound => refuse(format!(".git is not a repository ({})", e.message())),
        _ => refuse(e.message().to_owned()),
    })?;
    // The folder may have changed since the checks above: make sure of what libgit2 opened.
    if repo.path() != repo.commondir() {
        return Err(refuse(
            "it is a linked worktree of another repository".into(),
        ));
    }
    Ok(Reader { repo })
}

/// Whether anything (even a broken symlink) is at `path`.
fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

impl Reader {
    /// Commits reachable from `rev` (empty: the head), newest first; `limit` defaults to
    /// [`DEFAULT_LOG`] and is clamped to 1..=[`MAX_LOG`]. A workspace without commits has an
    /// empty log.
    pub fn log(&self, rev: &str, limit: Option<usize>) -> Result<Log, KnowledgeError> {
        let limit = limit.unwrap_or(DEFAULT_LOG).clamp(1, MAX_LOG);
        let Some(start) = self.commit(rev)? else {
            return Ok(Log {
                commits: Vec::new(),
                more: false,
            });
        };
        let mut walk = self
            .repo
            .revwalk()
            .map_err(internal("walking the history"))?;
        walk.set_sorting(Sort::TIME)
            .and_then(|()| walk.push(start.id()))
            .map_err(internal("walking the history"))?;
        let mut commits = Vec::new();
        for id in walk {
            let id = id.map_err(internal("walking the history"))?;
            if commits.len() == limit {
                return Ok(Log {
                    commits,
                    more: true,
                });
            }
            let commit = self
                .repo
                .find_commit(id)
                .map_err(internal(format!("reading commit {id}")))?;
            commits.push(commit_of(&commit));
        }
        Ok(Log {
            commits,
            more: false,
        })
    }

    /// The folder `path` (`""`: the top) at `rev` (empty: the head): folders first, then by
    /// name, at most [`MAX_TREE_ENTRIES`]. A workspace without commits has an empty top folder
    /// (with commit `""`).
    pub fn tree(&self, rev: &str, path: &str) -> Result<Tree, KnowledgeError> {
        check_path(path)?;
        let Some(commit) = self.commit(rev)? else {
            if path.is_empty() {
                return Ok(Tree {
                    commit: String::new(),
                    path: String::new(),
                    entries: Vec::new(),
                    omitted: 0,
                });
            }
            return Err(no_commits_yet(&format!("no folder {path}")));
        };
        let id = commit.id();
        let root = commit
            .tree()
            .map_err(internal(format!("reading the tree of commit {id}")))?;
        let tree = if path.is_empty() {
            root
        } else {
            let entry = self.entry(&root, path, id, "folder")?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(KnowledgeError::NotFound(format!(
                    "{path} is {} at commit {}, not a folder",
                    describe(&entry),
                    short(id)
                )));
            }
            self.repo
                .find_tree(entry.id())
                .map_err(internal(format!("reading folder {path} at commit {id}")))?
        };
        let mut entries: Vec<(Entry, Oid)> = tree
            .iter()
            .map(|e| {
                let entry = Entry {
                    name: String::from_utf8_lossy(e.name_bytes()).into_owned(),
                    kind: kind_of(&e),
                    size: None,
                };
                (entry, e.id())
            })
            .collect();
        entries.sort_by(|(a, _), (b, _)| {
            (a.kind != EntryKind::Folder, &a.name).cmp(&(b.kind != EntryKind::Folder, &b.name))
        });
        let omitted = entries.len().saturating_sub(MAX_TREE_ENTRIES);
        entries.truncate(MAX_TREE_ENTRIES);
        let odb = self.repo.odb().map_err(internal("opening the objects"))?;
        let entries = entries
            .into_iter()
            .map(|(mut entry, oid)| {
                if entry.kind == EntryKind::File {
                    entry.size = odb.read_header(oid).ok().map(|(size, _)| size as u64);
                }
                entry
            })
            .collect();
        Ok(Tree {
            commit: id.to_string(),
            path: path.to_owned(),
            entries,
            omitted,
        })
    }

    /// The file `path` at `rev` (empty: the head): its text, cut at [`MAX_BLOB_TEXT`] bytes,
    /// unless it looks binary. A symlink's text is its target.
    pub fn blob(&self, rev: &str, path: &str) -> Result<Blob, KnowledgeError> {
        check_path(path)?;
        if path.is_empty() {
            return Err(KnowledgeError::BadRequest(
                "name a file: the path is empty".into(),
            ));
        }
        let Some(commit) = self.commit(rev)? else {
            return Err(no_commits_yet(&format!("no file {path}")));
        };
        let id = commit.id();
        let root = commit
            .tree()
            .map_err(internal(format!("reading the tree of commit {id}")))?;
        let entry = self.entry(&root, path, id, "file")?;
        let kind = kind_of(&entry);
        if !matches!(kind, EntryKind::File | EntryKind::Link) {
            return Err(KnowledgeError::NotFound(format!(
                "{path} is {} at commit {}, not a file",
                describe(&entry),
                short(id)
            )));
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(internal(format!("reading file {path} at commit {id}")))?;
        let content = blob.content();
        let binary = kind == EntryKind::File && looks_binary(content, blob.is_binary());
        let (text, truncated) = if binary {
            (None, false)
        } else {
            let (text, cut) = bounded_text(content, MAX_BLOB_TEXT);
            (Some(text), cut)
        };
        Ok(Blob {
            commit: id.to_string(),
            path: path.to_owned(),
            size: content.len() as u64,
            binary,
            text,
            truncated,
        })
    }

    /// What `commit` (empty: the head) changed against its first parent (everything, for a
    /// first commit): renames found, patches bounded in all by
    /// [`vexa_core::knowledge::MAX_DIFF_TEXT`], at most
    /// [`vexa_core::knowledge::MAX_DIFF_FILES`] files.
    pub fn diff(&self, commit: &str) -> Result<vexa_core::knowledge::Diff, KnowledgeError> {
        let Some(commit) = self.commit(commit)? else {
            return Err(no_commits_yet("nothing to compare"));
        };
        diff::of(&self.repo, &commit)
    }

    /// The commit `rev` names: the head's when empty (`None` if the head is unborn), else the
    /// one commit whose id starts with `rev`.
    fn commit(&self, rev: &str) -> Result<Option<git2::Commit<'_>>, KnowledgeError> {
        if !readable_rev(rev) {
            return Err(KnowledgeError::BadRequest(format!(
                "{rev:?} is not a revision the reader accepts: give a commit id (4 to 40 hex \
                 digits) or nothing for the latest commit; branch names and expressions such as \
                 HEAD~1 are not read"
            )));
        }
        if rev.is_empty() {
            return crate::workspace::head_commit(&self.repo)
                .map_err(internal("reading the head commit"));
        }
        match self.repo.find_commit_by_prefix(rev) {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.code() == ErrorCode::NotFound => Err(KnowledgeError::NotFound(format!(
                "no commit {rev} in the workspace"
            ))),
            Err(e) if e.code() == ErrorCode::Ambiguous => Err(KnowledgeError::BadRequest(format!(
                "{rev} is the start of several object ids: give more digits"
            ))),
            Err(e) => Err(internal(format!("looking up commit {rev}"))(e)),
        }
    }

    /// The entry at `path` under `root` of commit `id`; `what` names what was asked for.
    fn entry(
        &self,
        root: &git2::Tree<'_>,
        path: &str,
        id: Oid,
        what: &str,
    ) -> Result<git2::TreeEntry<'static>, KnowledgeError> {
        root.get_path(Path::new(path)).map_err(|e| {
            if e.code() == ErrorCode::NotFound {
                KnowledgeError::NotFound(format!("no {what} {path} at commit {}", short(id)))
            } else {
                internal(format!("looking up {path} at commit {id}"))(e)
            }
        })
    }
}

/// Refuses a path that [`readable_path`] does not accept.
fn check_path(path: &str) -> Result<(), KnowledgeError> {
    if readable_path(path) {
        Ok(())
    } else {
        Err(KnowledgeError::BadRequest(format!(
            "{path:?} is not a path the reader accepts: use /-separated names relative to the \
             workspace, without empty, . or .. parts"
        )))
    }
}

fn no_commits_yet(what: &str) -> KnowledgeError {
    KnowledgeError::NotFound(format!("the workspace has no commits yet: {what}"))
}

/// The first digits of a commit id, for messages.
fn short(id: Oid) -> String {
    let mut hex = id.to_string();
    hex.truncate(SHORT_ID);
    hex
}

fn kind_of(entry: &git2::TreeEntry<'_>) -> EntryKind {
    match entry.filemode() {
        0o040000 => EntryKind::Folder,
        0o120000 => EntryKind::Link,
        0o160000 => EntryKind::Submodule,
        _ => EntryKind::File,
    }
}

/// What an entry is, for a message ("a folder", ...).
fn describe(entry: &git2::TreeEntry<'_>) -> &'static str {
    match kind_of(entry) {
        EntryKind::File => "a file",
        EntryKind::Folder => "a folder",
        EntryKind::Link => "a symbolic link",
        EntryKind::Submodule => "a submodule (a commit of another repository)",
    }
}

/// Whether a file's content looks binary: a NUL in its first bytes, or libgit2's own guess.
fn looks_binary(content: &[u8], libgit2_says: bool) -> bool {
    content[..content.len().min(BINARY_PROBE)].contains(&0) || libgit2_says
}

/// `commit` as the reader answers it.
fn commit_of(commit: &git2::Commit<'_>) -> Commit {
    let (message, _) = bounded_text(commit.message_bytes(), MAX_MESSAGE);
    let summary = message.lines().next().unwrap_or_default().trim().to_owned();
    Commit {
        id: commit.id().to_string(),
        parents: commit.parent_ids().map(|p| p.to_string()).collect(),
        author: signature(&commit.author()),
        committer: signature(&commit.committer()),
        time: rfc3339(commit.author().when()),
        summary,
        message,
    }
}

fn signature(s: &git2::Signature<'_>) -> Signature {
    Signature {
        name: bounded_text(s.name_bytes(), MAX_NAME).0,
        email: bounded_text(s.email_bytes(), MAX_NAME).0,
    }
}

/// A git time (seconds and the writer's offset) as RFC 3339, in the writer's offset; in UTC
/// when the offset is not one, `""` when the time is out of range.
fn rfc3339(time: git2::Time) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp(time.seconds(), 0) else {
        return String::new();
    };
    match chrono::FixedOffset::east_opt(time.offset_minutes().saturating_mul(60)) {
        Some(offset) => utc.with_timezone(&offset).to_rfc3339(),
        None => utc.to_rfc3339(),
    }
}

/// `bytes` as UTF-8 (invalid sequences replaced) of at most `max` bytes, cut on a character
/// boundary; and whether it was cut.
pub(crate) fn bounded_text(bytes: &[u8], max: usize) -> (String, bool) {
    let long = bytes.len() > max;
    let head = if long {
        without_partial_char(&bytes[..max])
    } else {
        bytes
    };
    let mut text = String::from_utf8_lossy(head).into_owned();
    // Replacement characters (3 bytes each) can make the text longer than the bytes.
    let cut = cut_at(&mut text, max);
    (text, long || cut)
}

/// `bytes` without a UTF-8 sequence cut short at its end.
fn without_partial_char(bytes: &[u8]) -> &[u8] {
    // The last character starts in the last 4 bytes; find its leading byte.
    for back in 1..=bytes.len().min(4) {
        let at = bytes.len() - back;
        let b = bytes[at];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let wanted = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if wanted > back { &bytes[..at] } else { bytes };
    }
    bytes
}

/// Cuts `text` to at most `max` bytes on a character boundary; whether it cut.
pub(crate) fn cut_at(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}
