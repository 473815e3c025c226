//! The reader against real repositories in temporary folders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use git2::{IndexAddOption, Repository, RepositoryInitOptions, Time};
use tempfile::TempDir;
use vexa_core::knowledge::{
    ChangeKind, EntryKind, MAX_BLOB_TEXT, MAX_DIFF_FILES, MAX_DIFF_TEXT, MAX_MESSAGE,
    MAX_TREE_ENTRIES,
};

use super::{KnowledgeError, Reader, open};

/// A repository with a work tree in a temporary folder, committed to with libgit2.
pub(crate) struct Repo {
    dir: TempDir,
    repo: Repository,
}

impl Repo {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_opts(
            dir.path(),
            RepositoryInitOptions::new().initial_head("main"),
        )
        .unwrap();
        Self { dir, repo }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `files` (making their folders), stages every change, and commits as `author` at
    /// `time` (UTC+2); returns the commit's id.
    pub(crate) fn commit(
        &self,
        author: &str,
        time: i64,
        message: &str,
        files: &[(&str, &[u8])],
    ) -> String {
        for (path, content) in files {
            let path = self.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = git2::Signature::new(
            author,
            &format!("{author}@example.com"),
            &Time::new(time, 120),
        )
        .unwrap();
        let parent = crate::workspace::head_commit(&self.repo).unwrap();
        let parents: Vec<_> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &who, &who, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    fn reader(&self) -> Reader {
        open(self.path()).unwrap()
    }
}

const T0: i64 = 1_700_000_000;

fn bad_request<T: std::fmt::Debug>(r: Result<T, KnowledgeError>) -> String {
    match r {
        Err(e @ KnowledgeError::BadRequest(_)) => {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            e.to_string()
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T, KnowledgeError>) -> String {
    match r {
        Err(e @ KnowledgeError::NotFound(_)) => {
            assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
            e.to_string()
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn refused(path: &Path) -> String {
    match open(path) {
        Err(e @ KnowledgeError::NotAGitWorkspace(_)) => {
            assert_eq!(e.reason(), "NotAGitWorkspace");
            e.to_string()
        }
        other => panic!("expected NotAGitWorkspace, got {other:?}"),
    }
}

#[test]
fn history_is_newest_first_with_authors_and_bounded() {
    let repo = Repo::new();
    let first = repo.commit("alice", T0, "First\n\nbody", &[("a.md", b"a\n")]);
    let second = repo.commit("bob", T0 + 60, "Second", &[("a.md", b"b\n")]);
    let long = format!("Third\n\n{}", "x".repeat(MAX_MESSAGE * 2));
    let third = repo.commit("carol", T0 + 120, &long, &[("a.md", b"c\n")]);
    let reader = repo.reader();

    let log = reader.log("", None).unwrap();
    let ids: Vec<_> = log.commits.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [&third, &second, &first]);
    assert!(!log.more);
    let authors: Vec<_> = log.commits.iter().map(|c| c.author.name.as_str()).collect();
    assert_eq!(authors, ["carol", "bob", "alice"]);
    assert_eq!(log.commits[2].author.email, "alice@example.com");
    assert_eq!(log.commits[2].time, "2023-11-15T00:13:20+02:00");
    assert_eq!(log.commits[2].summary, "First");
    assert_eq!(log.commits[2].message, "First\n\nbody");
    assert!(log.commits[2].parents.is_empty());
    assert_eq!(log.commits[1].parents, std::slice::from_ref(&first));
    assert_eq!(log.commits[0].summary, "Third");
    assert!(log.commits[0].message.len() <= MAX_MESSAGE);

    let log = reader.log("", Some(2)).unwrap();
    assert_eq!(log.commits.len(), 2);
    assert!(log.more);
    let log = reader.log(&second[..7], Some(0)).unwrap();
    assert_eq!(log.commits.len(), 1, "a limit of 0 is clamped to 1");
    assert_eq!(log.commits[0].id, second);
    assert!(log.more);
    assert_eq!(reader.log(&second, Some(10_000)).unwrap().commits.len(), 2);
}

#[test]
fn folders_at_the_head_and_at_a_commit() {
    let repo = Repo::new();
    let first = repo.commit("alice", T0, "One", &[("notes/a.md", b"a\n")]);
    repo.commit(
        "alice",
        T0 + 1,
        "Two",
        &[
            ("z.md", b"z\n"),
            ("b.md", b"bb\n"),
            ("notes/b.md", b"b\n"),
            ("notes/deep/c.md", b"c\n"),
        ],
    );
    let reader = repo.reader();

    let top = reader.tree("", "").unwrap();
    assert_eq!(top.path, "");
    assert_eq!(top.omitted, 0);
    let names: Vec<_> = top
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.size))
        .collect();
    assert_eq!(
        names,
        [
            ("notes", EntryKind::Folder, None),
            ("b.md", EntryKind::File, Some(3)),
            ("z.md", EntryKind::File, Some(2)),
        ]
    );

    let notes = reader.tree("", "notes").unwrap();
    let names: Vec<_> = notes.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["deep", "a.md", "b.md"]);

    let then = reader.tree(&first[..8], "notes").unwrap();
    assert_eq!(then.commit, first);
    let names: Vec<_> = then.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.md"]);

    let message = not_found(reader.tree("", "b.md"));
    assert!(message.contains("b.md is a file"), "{message}");
    let message = not_found(reader.tree(&first, "notes/deep"));
    assert!(
        message.contains(&format!("no folder notes/deep at commit {}", &first[..12])),
        "{message}"
    );
}

#[test]
fn files_text_binary_and_cut() {
    let repo = Repo::new();
    let mut big = b"a".to_vec();
    big.extend("é".repeat(MAX_BLOB_TEXT / 2 + 10).as_bytes());
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let commit = repo.commit(
        "alice",
        T0,
        "Files",
        &[
            ("notes/today.md", "# Today\nçà\n".as_bytes()),
            ("logo.png", png),
            ("big.txt", &big),
        ],
    );
    let reader = repo.reader();

    let today = reader.blob("", "notes/today.md").unwrap();
    assert_eq!(today.commit, commit);
    assert_eq!(today.text.as_deref(), Some("# Today\nçà\n"));
    assert_eq!(today.size, "# Today\nçà\n".len() as u64);
    assert!(!today.binary && !today.truncated);

    let logo = reader.blob(&commit[..6], "logo.png").unwrap();
    assert!(logo.binary);
    assert_eq!(logo.text, None);
    assert_eq!(logo.size, png.len() as u64);

    let cut = reader.blob("", "big.txt").unwrap();
    assert!(cut.truncated && !cut.binary);
    assert_eq!(cut.size, big.len() as u64);
    let text = cut.text.unwrap();
    // The last character that fits only in part is left out, not mangled.
    assert_eq!(text.len(), MAX_BLOB_TEXT - 1);
    assert!(big.starts_with(text.as_bytes()));

    let message = not_found(reader.blob(&commit, "notes/x.md"));
    assert_eq!(
        message,
        format!("no file notes/x.md at commit {}", &commit[..12])
    );
    let message = not_found(reader.blob("", "notes"));
    assert!(message.contains("notes is a folder"), "{message}");
    bad_request(reader.blob("", ""));
}

#[test]
fn a_symlink_is_shown_never_followed() {
    let repo = Repo::new();
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("passwd")).unwrap();
    repo.commit("mallory", T0, "Link", &[]);
    let reader = repo.reader();

    let top = reader.tree("", "").unwrap();
    assert_eq!(top.entries.len(), 1);
    assert_eq!(top.entries[0].kind, EntryKind::Link);
    assert_eq!(top.entries[0].size, None);

    let link = reader.blob("", "passwd").unwrap();
    assert_eq!(link.text.as_deref(), Some("/etc/passwd"));
    assert_eq!(link.size, "/etc/passwd".len() as u64);
    assert!(!link.binary);
    not_found(reader.tree("", "passwd"));
}

#[test]
fn paths_and_revisions_outside_the_contract_are_refused() {
    let repo = Repo::new();
    repo.commit("alice", T0, "One", &[("a.md", b"a\n")]);
    repo.commit("alice", T0 + 1, "Two", &[("a.md", b"b\n")]);
    let reader = repo.reader();

    for path in ["../x", "/etc/passwd", "a//b", "./a.md", "a\\b"] {
        bad_request(reader.blob("", path));
        bad_request(reader.tree("", path));
    }
    for rev in ["HEAD~1", "HEAD", "main", "refs/heads/main", "abc", "--all"] {
        let message = bad_request(reader.log(rev, None));
        assert!(message.contains("commit id"), "{message}");
        bad_request(reader.tree(rev, ""));
        bad_request(reader.blob(rev, "a.md"));
        bad_request(reader.diff(rev));
    }
    let message = not_found(reader.log("abcdef12", None));
    assert_eq!(message, "no commit abcdef12 in the workspace");
    not_found(reader.diff("0123456789abcdef0123456789abcdef01234567"));
    // The id of a tree or a blob is no commit.
    let blob = repo
        .repo
        .revparse_single("HEAD:a.md")
        .unwrap()
        .id()
        .to_string();
    not_found(reader.tree(&blob, ""));
}

#[test]
fn a_workspace_without_commits_reads_as_empty() {
    let repo = Repo::new();
    let reader = repo.reader();
    let log = reader.log("", None).unwrap();
    assert!(log.commits.is_empty() && !log.more);
    let top = reader.tree("", "").unwrap();
    assert_eq!((top.commit.as_str(), top.entries.len()), ("", 0));
    let message = not_found(reader.blob("", "a.md"));
    assert!(message.contains("no commits yet"), "{message}");
    not_found(reader.tree("", "notes"));
    not_found(reader.diff(""));
}

#[test]
fn diffs_of_a_first_commit_a_change_and_a_rename() {
    let repo = Repo::new();
    let png: &[u8] = b"\x89PNG\0\0\0";
    let first = repo.commit(
        "alice",
        T0,
        "One",
        &[
            ("a.md", b"hello\nold line\n"),
            (
                "moved.md",
                b"a file long enough to be recognised after a move\n",
            ),
            ("logo.png", png),
        ],
    );
    let reader = repo.reader();
    let diff = reader.diff(&first).unwrap();
    assert_eq!(diff.commit.id, first);
    assert_eq!(diff.omitted, 0);
    let a = diff.files.iter().find(|f| f.path == "a.md").unwrap();
    assert_eq!(a.change, ChangeKind::Added);
    assert_eq!(
        a.patch.as_deref(),
        Some("@@ -0,0 +1,2 @@\n+hello\n+old line\n")
    );
    let logo = diff.files.iter().find(|f| f.path == "logo.png").unwrap();
    assert!(logo.binary && logo.patch.is_none() && !logo.truncated);

    std::fs::remove_file(repo.path().join("moved.md")).unwrap();
    let second = repo.commit(
        "bob",
        T0 + 1,
        "Two",
        &[
            ("a.md", b"hello\nnew line\n"),
            (
                "notes/moved.md",
                b"a file long enough to be recognised after a move\n",
            ),
        ],
    );
    let diff = repo.reader().diff("").unwrap();
    assert_eq!(diff.commit.id, second);
    assert_eq!(diff.commit.parents, [first]);
    assert_eq!(diff.files.len(), 2, "{:?}", diff.files);
    let a = diff.files.iter().find(|f| f.path == "a.md").unwrap();
    assert_eq!(a.change, ChangeKind::Modified);
    let patch = a.patch.as_deref().unwrap();
    assert!(
        patch.starts_with("@@ ") && patch.contains("\n-old line\n+new line\n"),
        "{patch}"
    );
    assert!(!patch.contains("diff --git"), "{patch}");
    let moved = diff
        .files
        .iter()
        .find(|f| f.path == "notes/moved.md")
        .unwrap();
    assert_eq!(moved.change, ChangeKind::Renamed);
    assert_eq!(moved.old_path.as_deref(), Some("moved.md"));
}

#[test]
fn patches_stop_at_the_diff_budget() {
    let repo = Repo::new();
    let lines: String = (0..30_000).map(|i| format!("line {i:06}\n")).collect();
    assert!(lines.len() * 2 > MAX_DIFF_TEXT && lines.len() < MAX_DIFF_TEXT);
    let commit = repo.commit(
        "alice",
        T0,
        "Three big files",
        &[
            ("1.txt", lines.as_bytes()),
            ("2.txt", lines.as_bytes()),
            ("3.txt", lines.as_bytes()),
        ],
    );
    let diff = repo.reader().diff(&commit).unwrap();
    let [one, two, three] = &diff.files[..] else {
        panic!("{:?}", diff.files.len())
    };
    assert!(!one.truncated && one.patch.is_some());
    assert!(two.truncated && two.patch.is_some());
    assert!(three.truncated && three.patch.is_none());
    let total: usize = diff
        .files
        .iter()
        .filter_map(|f| f.patch.as_ref())
        .map(String::len)
        .sum();
    assert_eq!(total, MAX_DIFF_TEXT);
}

#[test]
fn many_files_are_capped() {
    let repo = Repo::new();
    let files: Vec<(String, &[u8])> = (0..MAX_TREE_ENTRIES + 5)
        .map(|i| (format!("f{i:05}.md"), &b"x\n"[..]))
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    let commit = repo.commit("alice", T0, "Many", &files);
    let reader = repo.reader();

    let top = reader.tree("", "").unwrap();
    assert_eq!(top.entries.len(), MAX_TREE_ENTRIES);
    assert_eq!(top.omitted, 5);
    assert_eq!(top.entries[0].name, "f00000.md");

    let diff = reader.diff(&commit).unwrap();
    assert_eq!(diff.files.len(), MAX_DIFF_FILES);
    assert_eq!(diff.omitted, MAX_TREE_ENTRIES + 5 - MAX_DIFF_FILES);
}

#[test]
fn repositories_that_read_elsewhere_are_refused() {
    let elsewhere = Repo::new();
    elsewhere.commit("alice", T0, "Elsewhere", &[("secret.md", b"s\n")]);
    let git_dir = elsewhere.path().join(".git");

    let alternates = Repo::new();
    std::fs::write(
        alternates.path().join(".git/objects/info/alternates"),
        format!("{}\n", git_dir.join("objects").display()),
    )
    .unwrap();
    let message = refused(alternates.path());
    assert!(message.contains("alternates"), "{message}");

    let common = Repo::new();
    std::fs::write(
        common.path().join(".git/commondir"),
        git_dir.to_str().unwrap(),
    )
    .unwrap();
    assert!(refused(common.path()).contains("commondir"));

    let gitlink = tempfile::tempdir().unwrap();
    std::fs::write(
        gitlink.path().join(".git"),
        format!("gitdir: {}\n", git_dir.display()),
    )
    .unwrap();
    assert!(refused(gitlink.path()).contains(".git is a file"));

    let linked = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&git_dir, linked.path().join(".git")).unwrap();
    assert!(refused(linked.path()).contains("symbolic link"));

    let objects = Repo::new();
    let theirs = objects.path().join(".git/objects");
    std::fs::remove_dir_all(&theirs).unwrap();
    std::os::unix::fs::symlink(git_dir.join("objects"), &theirs).unwrap();
    assert!(refused(objects.path()).contains("objects is a symbolic link"));
}

#[test]
fn only_the_folder_itself_is_opened() {
    let repo = Repo::new();
    repo.commit("alice", T0, "One", &[("notes/a.md", b"a\n")]);
    // No search upwards: a folder inside a repository is not one.
    let message = refused(&repo.path().join("notes"));
    assert!(message.contains("no .git folder"), "{message}");
    let empty = tempfile::tempdir().unwrap();
    refused(empty.path());
    std::fs::create_dir(empty.path().join(".git")).unwrap();
    let message = refused(empty.path());
    assert!(message.contains("not a repository"), "{message}");
}
