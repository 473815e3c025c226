//! The rw workspace as a git repository (libgit2, no git binary): made ready before the first
//! turn, committed after each turn that changed something.
//!
//! libgit2 runs no hooks, no fsmonitor and no external filter drivers, so nothing the agent
//! writes into the workspace (including its `.git/config`) makes the worker run a program.
//! A read-only workspace never reaches this module: the worker neither initialises nor commits
//! one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};

/// The line the workspace's `.gitignore` must have: the agent's sessions and transcripts stay on
/// the volume, out of git history (SPEC §8).
pub const IGNORE_LINE: &str = ".claude/";
/// The subject line of the commit that adds [`IGNORE_LINE`].
pub const IGNORE_SUBJECT: &str =
    "Ignore .claude/: agent sessions stay on the volume, out of history";
/// The branch a new repository starts on.
pub const INITIAL_BRANCH: &str = "main";
/// The committer of every commit: the worker, on behalf of the author (the subject).
pub const COMMITTER_NAME: &str = "Vexa agent worker";
/// The committer's address (a reserved, never-delivered domain: RFC 2606).
pub const COMMITTER_EMAIL: &str = "agent-worker@vexa.invalid";

/// A workspace that could not be prepared or committed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A git operation failed.
    #[error("git {doing} in {path}: {source}")]
    Git {
        /// What was being done.
        doing: &'static str,
        /// The workspace.
        path: PathBuf,
        /// libgit2's error.
        source: git2::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn git<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(git2::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Git {
        doing,
        path: path.to_owned(),
        source,
    }
}

/// The rw workspace, ready for turns.
#[derive(Debug, Clone)]
pub struct GitWorkspace {
    path: PathBuf,
    /// The commit the run started from (`None`: a repository without commits).
    pub base: Option<String>,
    /// Whether the worker created the repository.
    pub initialised: bool,
}

/// Who a turn's commit is by and what it belongs to.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The subject (`VEXA_OWNER`): the commit's author.
    pub subject: String,
    /// The dispatch id.
    pub dispatch: String,
    /// The launcher.
    pub launcher: String,
    /// The runner.
    pub runner: String,
}

impl GitWorkspace {
    /// Opens the repository at `path` (exactly there, never a parent folder's), creating one on
    /// branch `main` when there is none, and makes sure `.gitignore` ignores `.claude/`. A
    /// `.gitignore` the worker had to change is committed on its own (without the turn trailer),
    /// so a turn's commit holds only what the agent changed.
    pub fn prepare(path: &Path, who: &Provenance) -> Result<Self, WorkspaceError> {
        let (repo, initialised) = match open(path) {
            Ok(repo) => (repo, false),
            Err(e) if e.code() == ErrorCode::NotFound => {
                let mut options = RepositoryInitOptions::new();
                options.initial_head(INITIAL_BRANCH).no_reinit(true);
                let repo = Repository::init_opts(path, &options).map_err(git("init", path))?;
                (repo, true)
            }
            Err(e) => return Err(git("open", path)(e)),
        };
        if ensure_ignored(path)? {
            let mut index = repo.index().map_err(git("read the index", path))?;
            index
                .add_path(Path::new(".gitignore"))
                .map_err(git("add .gitignore", path))?;
            let tree_id = index.write_tree().map_err(git("write the tree", path))?;
            index.write().map_err(git("write the index", path))?;
            make_commit(&repo, tree_id, &commit_text(IGNORE_SUBJECT, None, who), who)
                .map_err(git("commit .gitignore", path))?;
        }
        let base = head_commit(&repo)
            .map_err(git("read HEAD", path))?
            .map(|c| c.id().to_string());
        Ok(Self {
            path: path.to_owned(),
            base,
            initialised,
        })
    }

    /// The workspace's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit HEAD points at now (`None`: still no commit).
    pub fn head(&self) -> Result<Option<String>, WorkspaceError> {
        let path = &self.path;
        let repo = open(path).map_err(git("open", path))?;
        let head = head_commit(&repo).map_err(git("read HEAD", path))?;
        Ok(head.map(|c| c.id().to_string()))
    }

    /// Commits every change in the workspace (new, modified and deleted files, minus what
    /// `.gitignore` ignores) on the current branch, authored by the subject, with `subject_line`
    /// and trailers naming the dispatch, launcher, runner and turn. `None` when nothing changed.
    pub fn commit(
        &self,
        subject_line: &str,
        turn: &str,
        who: &Provenance,
    ) -> Result<Option<String>, WorkspaceError> {
        self.commit_message(&commit_text(subject_line, Some(turn), who), who)
    }

    /// Commits every change like [`GitWorkspace::commit`], for work that is not a turn (the
    /// workspace's seed): no turn trailer.
    pub fn commit_all(
        &self,
        subject_line: &str,
        who: &Provenance,
    ) -> Result<Option<String>, WorkspaceError> {
        self.commit_message(&commit_text(subject_line, None, who), who)
    }

    fn commit_message(
        &self,
        message: &str,
        who: &Provenance,
    ) -> Result<Option<String>, WorkspaceError> {
        let path = &self.path;
        let repo = open(path).map_err(git("open", path))?;
        let mut index = repo.index().map_err(git("read the index", path))?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .map_err(git("add", path))?;
        index
            .update_all(["*"], None)
            .map_err(git("stage deletions", path))?;
        let tree_id = index.write_tree().map_err(git("write the tree", path))?;
        let parent = head_commit(&repo).map_err(git("read HEAD", path))?;
        let unchanged = match &parent {
            Some(p) => p.tree_id() == tree_id,
            None => index.is_empty(),
        };
        if unchanged {
            return Ok(None);
        }
        index.write().map_err(git("write the index", path))?;
        let oid = make_commit(&repo, tree_id, message, who).map_err(git("commit", path))?;
        Ok(Some(oid.to_string()))
    }
}

/// Commits tree `tree_id` on HEAD, authored by the subject, committed by the worker.
pub(crate) fn make_commit(
    repo: &Repository,
    tree_id: Oid,
    message: &str,
    who: &Provenance,
) -> Result<Oid, git2::Error> {
    let tree = repo.find_tree(tree_id)?;
    let author = Signature::now(&clean(&who.subject), &author_email(&who.subject))?;
    let committer = Signature::now(COMMITTER_NAME, COMMITTER_EMAIL)?;
    let parent = head_commit(repo)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &author, &committer, message, &tree, &parents)
}

/// Opens the repository whose work tree is exactly `path`.
pub(crate) fn open(path: &Path) -> Result<Repository, git2::Error> {
    Repository::open_ext(
        path,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
}

pub(crate) fn head_commit(repo: &Repository) -> Result<Option<git2::Commit<'_>>, git2::Error> {
    match repo.head() {
        Ok(head) => head.peel_to_commit().map(Some),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds `.claude/` to `.gitignore` unless a line already ignores that folder; returns whether it
/// changed the file.
fn ensure_ignored(root: &Path) -> Result<bool, WorkspaceError> {
    let path = root.join(".gitignore");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(WorkspaceError::Io { path, source }),
    };
    let ignored = text
        .lines()
        .map(str::trim)
        .any(|l| matches!(l, ".claude" | ".claude/" | "/.claude" | "/.claude/"));
    if ignored {
        return Ok(false);
    }
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    fs::write(&path, format!("{text}{separator}{IGNORE_LINE}\n"))
        .map_err(|source| WorkspaceError::Io { path, source })?;
    Ok(true)
}

/// The full commit message: the subject line, a blank line, the provenance trailers (the turn's
/// when the commit holds a turn's changes).
pub fn commit_text(subject_line: &str, turn: Option<&str>, who: &Provenance) -> String {
    let mut text = format!(
        "{}\n\nVexa-Dispatch: {}\nVexa-Launcher: {}\nVexa-Runner: {}\n",
        clean(subject_line),
        clean(&who.dispatch),
        clean(&who.launcher),
        clean(&who.runner),
    );
    if let Some(turn) = turn {
        text.push_str(&format!("Vexa-Turn: {}\n", clean(turn)));
    }
    text
}

/// The author's address: the subject at a reserved, never-delivered domain (RFC 2606), with
/// every character an address cannot hold replaced.
pub fn author_email(subject: &str) -> String {
    let local: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{}@vexa.invalid",
        if local.is_empty() { "unknown" } else { &local }
    )
}

/// One line without the characters git refuses in names (`<`, `>`) or that would break a
/// trailer (line breaks).
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '<' | '>' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn who() -> Provenance {
        Provenance {
            subject: "alice".into(),
            dispatch: "team-a/d1".into(),
            launcher: "user:alice".into(),
            runner: "test-agent".into(),
        }
    }

    fn log(path: &Path) -> Vec<(String, String, Vec<String>)> {
        let repo = Repository::open(path).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        walk.map(|oid| {
            let c = repo.find_commit(oid.unwrap()).unwrap();
            let tree = c.tree().unwrap();
            let mut files = Vec::new();
            tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
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

    #[test]
    fn a_new_folder_becomes_a_repository_and_turns_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = GitWorkspace::prepare(dir.path(), &who()).unwrap();
        assert!(ws.initialised);
        assert_eq!(
            fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            ".claude/\n"
        );
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(
            repo.find_reference("HEAD")
                .unwrap()
                .symbolic_target()
                .unwrap(),
            Some("refs/heads/main")
        );
        // The worker's own change is its own commit: the base of the first turn.
        let base = repo.head().unwrap().target().unwrap().to_string();
        assert_eq!(ws.base.as_deref(), Some(base.as_str()));

        fs::create_dir_all(dir.path().join("notes")).unwrap();
        fs::write(dir.path().join("notes/hello.md"), "hi\n").unwrap();
        fs::create_dir_all(dir.path().join(".claude/sessions")).unwrap();
        fs::write(dir.path().join(".claude/sessions/main.session"), "s\n").unwrap();
        assert_eq!(ws.head().unwrap(), ws.base, "nothing committed yet");
        let first = ws
            .commit("Wrote notes/hello.md.", "t0", &who())
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 40);
        assert_eq!(ws.head().unwrap().as_deref(), Some(first.as_str()));
        assert_eq!(
            ws.commit("nothing", "t1", &who()).unwrap(),
            None,
            "no change, no commit"
        );

        fs::remove_file(dir.path().join("notes/hello.md")).unwrap();
        fs::write(dir.path().join("b.md"), "b\n").unwrap();
        ws.commit("Moved.", "t2", &who()).unwrap().unwrap();

        let log = log(dir.path());
        assert_eq!(log.len(), 3);
        assert_eq!(
            log[2].0,
            format!(
                "{IGNORE_SUBJECT}\n\nVexa-Dispatch: team-a/d1\nVexa-Launcher: user:alice\nVexa-Runner: test-agent\n"
            )
        );
        assert_eq!(log[2].2, [".gitignore"]);
        assert_eq!(
            log[1].0,
            "Wrote notes/hello.md.\n\nVexa-Dispatch: team-a/d1\nVexa-Launcher: user:alice\nVexa-Runner: test-agent\nVexa-Turn: t0\n"
        );
        assert_eq!(log[1].1, "alice@vexa.invalid");
        assert_eq!(
            log[1].2,
            [".gitignore", "notes/hello.md"],
            "sessions are not committed"
        );
        assert_eq!(
            log[0].2,
            [".gitignore", "b.md"],
            "the deletion is committed"
        );
        assert!(log[0].0.contains("Vexa-Turn: t2"));
        let mut clean = git2::StatusOptions::new();
        clean.include_untracked(true).include_ignored(false);
        let repo = Repository::open(dir.path()).unwrap();
        assert!(repo.statuses(Some(&mut clean)).unwrap().is_empty());
    }

    #[test]
    fn an_existing_repository_keeps_its_history_and_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".gitignore"), "*.tmp\n/.claude").unwrap();
        fs::write(dir.path().join("a.md"), "a\n").unwrap();
        let ws = GitWorkspace::prepare(dir.path(), &who()).unwrap();
        assert_eq!(
            ws.base, None,
            "nothing to commit for the worker: no commit yet"
        );
        let base = ws.commit("seed", "t0", &who()).unwrap();

        let again = GitWorkspace::prepare(dir.path(), &who()).unwrap();
        assert!(!again.initialised);
        assert_eq!(again.base, base);
        assert_eq!(
            fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            "*.tmp\n/.claude",
            "already ignored: untouched"
        );
    }

    #[test]
    fn a_gitignore_without_the_line_gets_it_appended() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".gitignore"), "*.tmp").unwrap();
        GitWorkspace::prepare(dir.path(), &who()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            "*.tmp\n.claude/\n"
        );
    }

    #[test]
    fn a_folder_inside_another_repository_gets_its_own() {
        let outer = tempfile::tempdir().unwrap();
        Repository::init(outer.path()).unwrap();
        let inner = outer.path().join("ws");
        fs::create_dir(&inner).unwrap();
        let ws = GitWorkspace::prepare(&inner, &who()).unwrap();
        assert!(ws.initialised);
        assert!(inner.join(".git").is_dir());
    }

    #[test]
    fn names_and_messages_cannot_break_the_commit() {
        assert_eq!(author_email("alice"), "alice@vexa.invalid");
        assert_eq!(author_email("Bob <b@x>\n"), "Bob--b-x--@vexa.invalid");
        assert_eq!(author_email(""), "unknown@vexa.invalid");
        let w = Provenance {
            subject: "a".into(),
            dispatch: "d\nVexa-Turn: t9".into(),
            launcher: "l".into(),
            runner: "r".into(),
        };
        let text = commit_text("line\r\none", Some("t1"), &w);
        assert_eq!(
            text.matches("Vexa-Turn").count(),
            2,
            "one real, one flattened"
        );
        assert!(
            text.starts_with("line  one\n\nVexa-Dispatch: d Vexa-Turn: t9\n"),
            "{text}"
        );
    }
}
