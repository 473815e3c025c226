//! Applying an approved `record` Card: trusted code (never the agent) writes the proposed file
//! into the workspace and commits it as the approver, with trailers naming the card, the
//! dispatch that proposed it and who approved it. Exactly once: a card whose trailer is already
//! in the recent history is not applied again (a retried Job finds its own commit).
//!
//! The file is written without following any link the agent may have planted in the
//! workspace (`untrusted_fs`), and only that path is staged: whatever else the folder holds is
//! left as it is.

use std::path::{Path, PathBuf};

use git2::Sort;
use serde::Serialize;
use vexa_core::cards::{
    APPROVED_BY_TRAILER, CARD_TRAILER, MAX_RECORD_CONTENT, SOURCE_DISPATCH_TRAILER,
    safe_record_path,
};

use crate::untrusted_fs;
use crate::workspace::{Provenance, clean, head_commit, make_commit, open};

/// How far back the history is searched for an earlier application of the same card.
const HISTORY_DEPTH: usize = 1000;

/// An approved record card to apply.
#[derive(Debug, Clone)]
pub struct Record {
    /// The Card, `<namespace>/<name>`.
    pub card: String,
    /// The card's title (the commit's subject line).
    pub title: String,
    /// The Dispatch that proposed it.
    pub source_dispatch: String,
    /// Who approved it: the commit's author.
    pub approved_by: String,
    /// The file, relative to the workspace folder.
    pub path: String,
    /// The file's full new content.
    pub content: Vec<u8>,
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The commit that carries the card.
    pub commit: String,
    /// True when the card had been applied before (by an earlier try): nothing was written.
    pub already_applied: bool,
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The path leaves the workspace or points into `.git`.
    #[error("the record's path {0:?} is not a file inside the workspace")]
    UnsafePath(String),
    /// The content is larger than a Card allows.
    #[error("the record's content is {0} bytes, more than a Card allows")]
    TooLarge(usize),
    /// The folder is not a prepared workspace, or git failed.
    #[error("git {doing} in {path}: {source}")]
    Git {
        /// What was being done.
        doing: &'static str,
        /// The folder.
        path: PathBuf,
        /// libgit2's error.
        source: git2::Error,
    },
    /// Writing the file failed (a link where a folder should be, a full volume, …).
    #[error("writing the record: {0}")]
    Write(#[from] untrusted_fs::UntrustedFileError),
}

impl RecordError {
    /// A short, bounded reason (the Card's `Applied=False` reason).
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::UnsafePath(_) => "UnsafePath",
            RecordError::TooLarge(_) => "TooLarge",
            RecordError::Git { .. } => "GitFailed",
            RecordError::Write(_) => "WriteFailed",
        }
    }
}

fn git<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(git2::Error) -> RecordError + 'a {
    move |source| RecordError::Git {
        doing,
        path: path.to_owned(),
        source,
    }
}

/// The commit message: the title, then the trailers (no source dispatch for a file a person
/// uploaded).
pub fn message(r: &Record) -> String {
    let source = if r.source_dispatch.is_empty() {
        String::new()
    } else {
        format!("{SOURCE_DISPATCH_TRAILER}: {}\n", clean(&r.source_dispatch))
    };
    format!(
        "{}\n\n{CARD_TRAILER}: {}\n{source}{APPROVED_BY_TRAILER}: {}\n",
        clean(&r.title),
        clean(&r.card),
        clean(&r.approved_by),
    )
}

/// Whether `message` carries the trailer of `card`.
fn names_card(message: &str, card: &str) -> bool {
    let wanted = format!("{CARD_TRAILER}: {}", clean(card));
    message.lines().any(|l| l.trim_end() == wanted)
}

/// Applies `r` to the workspace repository at `folder` (which must exist: the Workspace
/// controller prepared it).
pub fn apply(folder: &Path, r: &Record) -> Result<Applied, RecordError> {
    if !safe_record_path(&r.path) {
        return Err(RecordError::UnsafePath(r.path.clone()));
    }
    if r.content.len() > MAX_RECORD_CONTENT {
        return Err(RecordError::TooLarge(r.content.len()));
    }
    let repo = open(folder).map_err(git("open", folder))?;
    if let Some(commit) = applied_before(&repo, &r.card).map_err(git("read the history", folder))? {
        return Ok(Applied {
            commit,
            already_applied: true,
        });
    }
    untrusted_fs::write(folder, Path::new(&r.path), &r.content)?;
    let mut index = repo.index().map_err(git("read the index", folder))?;
    index
        .add_path(Path::new(&r.path))
        .map_err(git("add the record", folder))?;
    let tree = index.write_tree().map_err(git("write the tree", folder))?;
    index.write().map_err(git("write the index", folder))?;
    let who = Provenance {
        subject: r.approved_by.clone(),
        dispatch: r.source_dispatch.clone(),
        launcher: String::new(),
        runner: String::new(),
    };
    // Committed even when the file already had this content: the trailer is the record that
    // the card was applied, which a retry looks for.
    let oid = make_commit(&repo, tree, &message(r), &who).map_err(git("commit", folder))?;
    Ok(Applied {
        commit: oid.to_string(),
        already_applied: false,
    })
}

fn applied_before(repo: &git2::Repository, card: &str) -> Result<Option<String>, git2::Error> {
    if head_commit(repo)?.is_none() {
        return Ok(None);
    }
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL)?;
    walk.push_head()?;
    for oid in walk.take(HISTORY_DEPTH) {
        let oid = oid?;
        let commit = repo.find_commit(oid)?;
        if names_card(&String::from_utf8_lossy(commit.message_bytes()), card) {
            return Ok(Some(oid.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use git2::Repository;

    use super::*;
    use crate::workspace::GitWorkspace;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let who = Provenance {
            subject: "alice".into(),
            dispatch: "workspace:team/notes".into(),
            launcher: "operator".into(),
            runner: "vexa-workspace-init".into(),
        };
        GitWorkspace::prepare(dir.path(), &who).unwrap();
        dir
    }

    fn record(path: &str) -> Record {
        Record {
            card: "team/triage-1-notes".into(),
            title: "Meeting notes".into(),
            source_dispatch: "triage-1".into(),
            approved_by: "carol".into(),
            path: path.into(),
            content: b"# Notes\n".to_vec(),
        }
    }

    #[test]
    fn an_approved_record_is_committed_as_the_approver_with_trailers() {
        let ws = workspace();
        let applied = apply(ws.path(), &record("meetings/a.md")).unwrap();
        assert!(!applied.already_applied);
        assert_eq!(
            std::fs::read_to_string(ws.path().join("meetings/a.md")).unwrap(),
            "# Notes\n"
        );
        let repo = Repository::open(ws.path()).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.id().to_string(), applied.commit);
        assert_eq!(head.author().name().unwrap(), "carol");
        assert_eq!(
            head.message().unwrap(),
            "Meeting notes\n\nVexa-Card: team/triage-1-notes\nVexa-Source-Dispatch: triage-1\nVexa-Approved-By: carol\n"
        );
        // Only the record is in the commit; the working tree is clean.
        assert!(repo.statuses(None).unwrap().is_empty());
    }

    #[test]
    fn a_retry_finds_the_earlier_commit_and_writes_nothing() {
        let ws = workspace();
        let first = apply(ws.path(), &record("a.md")).unwrap();
        // A later run changed the file and committed after the card.
        std::fs::write(ws.path().join("a.md"), "edited\n").unwrap();
        let repo = Repository::open(ws.path()).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.md")).unwrap();
        let tree = index.write_tree().unwrap();
        index.write().unwrap();
        let who = Provenance {
            subject: "alice".into(),
            dispatch: "d2".into(),
            launcher: "user:alice".into(),
            runner: "r".into(),
        };
        make_commit(&repo, tree, "edit", &who).unwrap();

        let again = apply(ws.path(), &record("a.md")).unwrap();
        assert_eq!(
            again,
            Applied {
                commit: first.commit,
                already_applied: true
            }
        );
        assert_eq!(
            std::fs::read_to_string(ws.path().join("a.md")).unwrap(),
            "edited\n"
        );
    }

    #[test]
    fn unchanged_content_still_records_the_card() {
        let ws = workspace();
        let mut r = record("a.md");
        apply(ws.path(), &r).unwrap();
        r.card = "team/other".into();
        let second = apply(ws.path(), &r).unwrap();
        assert!(!second.already_applied);
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let ws = workspace();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("meetings")).unwrap();
        let _ = apply(ws.path(), &record("meetings/a.md"));
        assert!(!outside.path().join("a.md").exists());
    }

    #[test]
    fn unsafe_paths_and_oversize_content_are_refused() {
        let ws = workspace();
        for bad in ["../x", ".git/hooks/post-commit", "/etc/passwd"] {
            let e = apply(ws.path(), &record(bad)).unwrap_err();
            assert_eq!(e.reason(), "UnsafePath", "{bad}");
        }
        let mut big = record("a.md");
        big.content = vec![b'x'; MAX_RECORD_CONTENT + 1];
        assert_eq!(apply(ws.path(), &big).unwrap_err().reason(), "TooLarge");
    }

    #[test]
    fn a_folder_that_is_not_a_workspace_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            apply(dir.path(), &record("a.md")).unwrap_err().reason(),
            "GitFailed"
        );
    }
}
