//! Preparing a workspace's folder before any dispatch uses it (the Workspace controller's
//! prepare Job runs this as `vexa-workspace-init`): the folder on the volume, the seed files,
//! a git repository with a first commit.
//!
//! The prepare Job mounts the whole volume, so every path is checked here: the workspace's
//! folder and each seed file must stay inside it, and no symlink is followed on the way (a
//! folder on a shared volume may hold links that an agent planted).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use vexa_core::PrepareReport;

use crate::workspace::{GitWorkspace, Provenance, WorkspaceError};

/// A ConfigMap key spells a `/` as this (keys cannot hold `/`).
pub const SEED_SEPARATOR: &str = "__";
/// The subject line of the commit holding the seed files.
pub const SEED_SUBJECT: &str = "Seed the workspace";
/// The subject line of the commit adopting files that were there before git.
pub const ADOPT_SUBJECT: &str = "Adopt the files already in the folder";

/// What to prepare.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where the volume is mounted.
    pub volume: PathBuf,
    /// The workspace's folder, relative to the volume.
    pub path: String,
    /// The mounted seed ConfigMap, if the workspace has one.
    pub seed: Option<PathBuf>,
    /// Who the first commits are by (the workspace's owner) and what they belong to.
    pub who: Provenance,
}

/// Why a folder could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A path leaves the volume, or passes through a symlink.
    #[error("{0}")]
    UnsafePath(String),
    /// A seed file's key cannot become a path.
    #[error("{0}")]
    BadSeed(String),
    /// git failed.
    #[error(transparent)]
    Git(#[from] WorkspaceError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl InitError {
    /// The report the operator reads.
    pub fn report(&self) -> PrepareReport {
        let reason = match self {
            InitError::UnsafePath(_) => "UnsafePath",
            InitError::BadSeed(_) => "BadSeed",
            InitError::Git(_) => "Git",
            InitError::Io { .. } => "Io",
        };
        PrepareReport::Failed {
            reason: reason.into(),
            message: self.to_string(),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The relative path's plain segments; `.` is dropped, anything else but a name is refused.
fn segments(path: &str, what: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{what} {path:?} must be a relative path without '..'"
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{what} {path:?} names no folder"));
    }
    Ok(out)
}

/// Creates `root/segments…` one folder at a time, refusing to pass through anything that is
/// not a real folder (a symlink above all).
fn make_dirs(root: &Path, segments: &[String]) -> Result<PathBuf, InitError> {
    let mut at = root.to_owned();
    for s in segments {
        at.push(s);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(InitError::UnsafePath(format!(
                    "{} exists and is not a folder (a symlink or a file): refusing to follow it; \
                     remove it from the volume",
                    at.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(io_error(&at))?;
            }
            Err(e) => return Err(io_error(&at)(e)),
        }
    }
    Ok(at)
}

/// The seed files: (relative path, mounted file). A ConfigMap volume also holds its own
/// bookkeeping (`..data` and timestamped folders); those are skipped.
pub fn seed_files(seed: &Path) -> Result<Vec<(Vec<String>, PathBuf)>, InitError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(seed).map_err(io_error(seed))? {
        let entry = entry.map_err(io_error(seed))?;
        let key = entry.file_name().to_string_lossy().into_owned();
        if key.starts_with("..") {
            continue;
        }
        let path = key.replace(SEED_SEPARATOR, "/");
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(InitError::BadSeed(format!(
                "seed key {key:?} becomes the path {path:?}: every part between {SEED_SEPARATOR:?} \
                 must be a file or folder name (no empty part, '.' or '..')"
            )));
        }
        if parts.first() == Some(&".git") {
            return Err(InitError::BadSeed(format!(
                "seed key {key:?} writes into .git: seed files are content, not repository internals"
            )));
        }
        files.push((parts.into_iter().map(str::to_owned).collect(), entry.path()));
    }
    files.sort();
    Ok(files)
}

fn is_empty_dir(path: &Path) -> Result<bool, InitError> {
    Ok(fs::read_dir(path).map_err(io_error(path))?.next().is_none())
}

/// Prepares the folder and reports its head commit. Idempotent: a folder that is already a
/// repository is adopted as it is (seed files are written only into an empty folder).
pub fn prepare(req: &Request) -> Result<PrepareReport, InitError> {
    let parts = segments(&req.path, "the workspace folder").map_err(InitError::UnsafePath)?;
    let folder = make_dirs(&req.volume, &parts)?;
    let is_repo = fs::symlink_metadata(folder.join(".git")).is_ok();
    let empty = is_empty_dir(&folder)?;
    let mut seeded = 0;
    if empty && let Some(seed) = &req.seed {
        for (parts, source) in seed_files(seed)? {
            let (file, dirs) = parts
                .split_last()
                .ok_or_else(|| InitError::BadSeed("a seed key names no file".into()))?;
            let dir = make_dirs(&folder, dirs)?;
            let target = dir.join(file);
            // The mounted key is a symlink into the ConfigMap's data folder: read its content.
            let content = fs::read(&source).map_err(io_error(&source))?;
            fs::write(&target, content).map_err(io_error(&target))?;
            seeded += 1;
        }
    }
    let git = GitWorkspace::prepare(&folder, &req.who)?;
    let subject = if seeded > 0 {
        Some(SEED_SUBJECT)
    } else if !empty && !is_repo {
        Some(ADOPT_SUBJECT)
    } else {
        None
    };
    let head = match subject {
        Some(line) => git.commit_all(line, &req.who)?.or(git.base.clone()),
        None => git.base.clone(),
    };
    let head_commit = head.ok_or_else(|| InitError::Io {
        path: folder.clone(),
        source: io::Error::other("the repository has no commit after preparing it"),
    })?;
    Ok(PrepareReport::Ready {
        head_commit,
        created: !is_repo,
        seeded,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn who() -> Provenance {
        Provenance {
            subject: "alice".into(),
            dispatch: "workspace/notes".into(),
            launcher: "operator".into(),
            runner: "workspace-init".into(),
        }
    }

    fn seed_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in files {
            fs::write(dir.path().join(k), v).unwrap();
        }
        // What a ConfigMap volume holds besides the keys.
        fs::create_dir(dir.path().join("..2026_12_04_17_00_00.1")).unwrap();
        dir
    }

    fn request(volume: &Path, path: &str, seed: Option<&Path>) -> Request {
        Request {
            volume: volume.to_owned(),
            path: path.into(),
            seed: seed.map(Path::to_owned),
            who: who(),
        }
    }

    fn head(path: &Path) -> String {
        let repo = git2::Repository::open(path).unwrap();
        repo.head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string()
    }

    #[test]
    fn a_new_folder_gets_the_seed_and_one_head_commit() {
        let volume = tempfile::tempdir().unwrap();
        let seed = seed_dir(&[
            ("README.md", "# notes\n"),
            ("plans__weekly.md", "- review\n"),
        ]);
        let report = prepare(&request(volume.path(), "alice/notes", Some(seed.path()))).unwrap();
        let folder = volume.path().join("alice/notes");
        let PrepareReport::Ready {
            head_commit,
            created,
            seeded,
        } = &report
        else {
            panic!("{report:?}")
        };
        assert!(*created);
        assert_eq!(*seeded, 2);
        assert_eq!(*head_commit, head(&folder));
        assert_eq!(
            fs::read_to_string(folder.join("plans/weekly.md")).unwrap(),
            "- review\n"
        );
        let repo = git2::Repository::open(&folder).unwrap();
        let tip = repo.head().unwrap().peel_to_commit().unwrap();
        assert!(tip.message().unwrap().starts_with(SEED_SUBJECT));
        assert_eq!(tip.author().name().unwrap(), "alice");
        let tree = tip.tree().unwrap();
        assert!(tree.get_path(Path::new("plans/weekly.md")).is_ok());
        assert!(tree.get_path(Path::new(".gitignore")).is_ok());
    }

    #[test]
    fn preparing_again_adopts_the_repository_and_changes_nothing() {
        let volume = tempfile::tempdir().unwrap();
        let seed = seed_dir(&[("a.md", "a")]);
        let first = prepare(&request(volume.path(), "w", Some(seed.path()))).unwrap();
        fs::write(volume.path().join("w/a.md"), "edited by a run").unwrap();
        let second = prepare(&request(volume.path(), "w", Some(seed.path()))).unwrap();
        let (
            PrepareReport::Ready {
                head_commit: h1, ..
            },
            PrepareReport::Ready {
                head_commit: h2,
                created,
                seeded,
            },
        ) = (&first, &second)
        else {
            panic!("{first:?} {second:?}")
        };
        assert_eq!(h1, h2);
        assert!(!created);
        assert_eq!(*seeded, 0);
        assert_eq!(
            fs::read_to_string(volume.path().join("w/a.md")).unwrap(),
            "edited by a run"
        );
    }

    #[test]
    fn files_already_in_the_folder_are_adopted_in_a_commit() {
        let volume = tempfile::tempdir().unwrap();
        fs::create_dir_all(volume.path().join("w")).unwrap();
        fs::write(volume.path().join("w/old.md"), "old").unwrap();
        let report = prepare(&request(volume.path(), "w", None)).unwrap();
        let folder = volume.path().join("w");
        let repo = git2::Repository::open(&folder).unwrap();
        let tip = repo.head().unwrap().peel_to_commit().unwrap();
        assert!(tip.message().unwrap().starts_with(ADOPT_SUBJECT));
        assert!(tip.tree().unwrap().get_path(Path::new("old.md")).is_ok());
        assert!(matches!(
            report,
            PrepareReport::Ready {
                created: true,
                seeded: 0,
                ..
            }
        ));
    }

    #[test]
    fn an_empty_folder_without_seed_still_gets_a_first_commit() {
        let volume = tempfile::tempdir().unwrap();
        let report = prepare(&request(volume.path(), "fresh", None)).unwrap();
        let PrepareReport::Ready { head_commit, .. } = report else {
            panic!()
        };
        assert_eq!(head_commit, head(&volume.path().join("fresh")));
    }

    #[rstest::rstest]
    #[case::parent("../escape")]
    #[case::nested_parent("a/../../escape")]
    #[case::absolute("/etc")]
    #[case::nothing(".")]
    fn a_folder_outside_the_volume_is_refused(#[case] path: &str) {
        let volume = tempfile::tempdir().unwrap();
        let e = prepare(&request(volume.path(), path, None)).unwrap_err();
        assert!(matches!(e, InitError::UnsafePath(_)), "{e}");
        assert!(
            matches!(e.report(), PrepareReport::Failed { reason, .. } if reason == "UnsafePath")
        );
    }

    #[test]
    fn a_planted_symlink_on_the_way_is_not_followed() {
        let volume = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        // An earlier run that could write `alice/` made `alice/notes` point outside.
        fs::create_dir(volume.path().join("alice")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), volume.path().join("alice/notes")).unwrap();
        let e = prepare(&request(volume.path(), "alice/notes", None)).unwrap_err();
        assert!(e.to_string().contains("refusing to follow"), "{e}");
        assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    }

    #[rstest::rstest]
    #[case::traversal("x__..__..__escape.md")]
    #[case::leading("__abs.md")]
    #[case::empty_part("a____b.md")]
    #[case::into_git(".git__config")]
    fn a_seed_key_that_is_not_a_plain_path_is_refused(#[case] key: &str) {
        let volume = tempfile::tempdir().unwrap();
        let seed = seed_dir(&[(key, "x")]);
        let e = prepare(&request(volume.path(), "w", Some(seed.path()))).unwrap_err();
        assert!(matches!(e, InitError::BadSeed(_)), "{e}");
        assert!(!volume.path().join("escape.md").exists());
    }
}
