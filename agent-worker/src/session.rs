//! Session files: where the agent CLI's session id of a chat thread is kept in the rw
//! workspace, and whether a stored session is worth resuming (SPEC §8).
//!
//! Every function works under a workspace root it is given, so tests use a temporary folder.
//! The agent can write anything in the workspace, so every file here is read and written
//! through [`crate::untrusted_fs`]: no symbolic link followed, regular files only, capped.

use std::io;
use std::path::{Path, PathBuf};

use vexa_core::DEFAULT_THREAD;

use crate::untrusted_fs::{self, UntrustedFileError};

/// The legacy session file, read for thread `main` when the thread's own file is absent.
pub const LEGACY_SESSION_FILE: &str = ".claude/.session";
/// Where the agent CLI keeps its transcripts, relative to the workspace.
pub const PROJECTS_DIR: &str = ".claude/projects";
/// A stored transcript larger than this is not resumed: the run starts fresh (SPEC §8, "~1 MB").
pub const MAX_RESUME_TRANSCRIPT_BYTES: u64 = 1024 * 1024;
/// The longest session id accepted.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// The largest session file read (an id and a newline, with room for whitespace).
pub const MAX_SESSION_FILE_BYTES: u64 = 4096;

/// A session file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The file exists but does not hold a usable session id.
    #[error(
        "{path} does not hold a session id ({reason}); the run starts a fresh session and overwrites it"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<UntrustedFileError> for SessionError {
    fn from(e: UntrustedFileError) -> Self {
        match e {
            UntrustedFileError::Io { path, source } => Self::Io { path, source },
            UntrustedFileError::Symlink { ref path }
            | UntrustedFileError::NotRegular { ref path, .. }
            | UntrustedFileError::TooLarge { ref path, .. }
            | UntrustedFileError::BadPath { ref path } => Self::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            },
        }
    }
}

/// The session file of `thread`, relative to the workspace: `<sessionPath>/<thread>.session`
/// (the name the operator records as the Dispatch's `sessionRef`).
pub fn session_file(session_path: &str, thread: &str) -> PathBuf {
    PathBuf::from(vexa_core::session_file(session_path, thread))
}

/// Whether `id` can be passed to the agent CLI as a session id: 1 to 128 ASCII letters, digits,
/// `-`, `_` or `.`, starting with a letter or digit (so it can never look like an option).
pub fn valid_session_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= MAX_SESSION_ID_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads the session id in `file` (relative to `root`). `Ok(None)` when the file does not exist
/// or is empty.
pub fn read_session_id(root: &Path, file: &Path) -> Result<Option<String>, SessionError> {
    let path = root.join(file);
    let Some(text) = untrusted_fs::read(root, file, MAX_SESSION_FILE_BYTES)? else {
        return Ok(None);
    };
    let text = String::from_utf8(text).map_err(|_| SessionError::Invalid {
        path: path.clone(),
        reason: "not UTF-8".into(),
    })?;
    let id = text.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if !valid_session_id(id) {
        return Err(SessionError::Invalid {
            path,
            reason: format!(
                "{:?} is not 1-{MAX_SESSION_ID_LEN} letters, digits, '-', '_' or '.'",
                crate::events::first_chars(id, 40)
            ),
        });
    }
    Ok(Some(id.to_owned()))
}

/// The session id of a chat thread: its own file, else (the default thread `main` only) the
/// legacy file.
/// Returns the file the id came from with it.
pub fn read_thread_session(
    root: &Path,
    session_path: &str,
    thread: &str,
) -> Result<Option<(PathBuf, String)>, SessionError> {
    let own = session_file(session_path, thread);
    if let Some(id) = read_session_id(root, &own)? {
        return Ok(Some((own, id)));
    }
    if thread == DEFAULT_THREAD {
        let legacy = PathBuf::from(LEGACY_SESSION_FILE);
        if let Some(id) = read_session_id(root, &legacy)? {
            return Ok(Some((legacy, id)));
        }
    }
    Ok(None)
}

/// Writes `id` to `file` (relative to `root`), creating its folder. The file is replaced
/// atomically, so a crash never leaves half an id behind.
pub fn write_session_id(root: &Path, file: &Path, id: &str) -> Result<(), SessionError> {
    let path = root.join(file);
    if !valid_session_id(id) {
        return Err(SessionError::Invalid {
            path,
            reason: format!("refusing to store {:?}", crate::events::first_chars(id, 40)),
        });
    }
    Ok(untrusted_fs::write(
        root,
        file,
        format!("{id}\n").as_bytes(),
    )?)
}

/// Removes `file` (after a failed resume); a missing file is fine.
pub fn remove_session_file(root: &Path, file: &Path) -> Result<(), SessionError> {
    Ok(untrusted_fs::remove(root, file)?)
}

/// The size of session `id`'s stored transcript, `.claude/projects/<project>/<id>.jsonl`, if
/// there is one. The CLI names the project folder after its working directory, so every
/// project folder is looked at.
pub fn transcript_size(root: &Path, id: &str) -> Option<u64> {
    if !valid_session_id(id) {
        return None;
    }
    let name = format!("{id}.jsonl");
    let projects = Path::new(PROJECTS_DIR);
    untrusted_fs::subfolders(root, projects)
        .ok()?
        .into_iter()
        .filter_map(|project| {
            untrusted_fs::file_size(root, &projects.join(project).join(&name))
                .ok()
                .flatten()
        })
        .max()
}

/// What to do with a stored session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeDecision {
    /// Resume it.
    Resume(String),
    /// Start fresh: the stored transcript is too large to resume cheaply.
    TooLarge {
        /// The session id.
        id: String,
        /// The transcript's size.
        bytes: u64,
    },
}

/// Resume `id` unless its stored transcript exceeds [`MAX_RESUME_TRANSCRIPT_BYTES`]. A missing
/// transcript still resumes: the CLI decides, and a failed resume is retried fresh.
pub fn resume_decision(root: &Path, id: &str) -> ResumeDecision {
    match transcript_size(root, id) {
        Some(bytes) if bytes > MAX_RESUME_TRANSCRIPT_BYTES => ResumeDecision::TooLarge {
            id: id.to_owned(),
            bytes,
        },
        _ => ResumeDecision::Resume(id.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[rstest]
    #[case(".claude/sessions", "main", ".claude/sessions/main.session")]
    #[case(".claude/sessions/", "t-2", ".claude/sessions/t-2.session")]
    #[case("state", "x.y", "state/x.y.session")]
    fn session_files_are_named_by_thread(
        #[case] dir: &str,
        #[case] thread: &str,
        #[case] want: &str,
    ) {
        assert_eq!(session_file(dir, thread), PathBuf::from(want));
    }

    #[rstest]
    #[case("0b5e3c1a-7f2d-4c9e-9a61-3d2f1e0c9b8a", true)]
    #[case("s.1_x", true)]
    #[case("", false)]
    #[case("-rf", false)]
    #[case("--resume", false)]
    #[case("a b", false)]
    #[case("a/b", false)]
    #[case("../x", false)]
    #[case("é", false)]
    fn session_ids_are_validated(#[case] id: &str, #[case] ok: bool) {
        assert_eq!(valid_session_id(id), ok);
        assert!(!valid_session_id(&"a".repeat(MAX_SESSION_ID_LEN + 1)));
    }

    #[test]
    fn ids_are_trimmed_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = session_file(".claude/sessions", "main");
        assert_eq!(read_session_id(dir.path(), &file).unwrap(), None);
        write_session_id(dir.path(), &file, "abc-123").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(&file)).unwrap(),
            "abc-123\n"
        );
        assert_eq!(
            read_session_id(dir.path(), &file).unwrap().as_deref(),
            Some("abc-123")
        );
        put(dir.path(), ".claude/sessions/main.session", "  \n xyz \r\n");
        assert_eq!(
            read_session_id(dir.path(), &file).unwrap().as_deref(),
            Some("xyz")
        );
        remove_session_file(dir.path(), &file).unwrap();
        remove_session_file(dir.path(), &file).unwrap();
        assert_eq!(read_session_id(dir.path(), &file).unwrap(), None);
    }

    #[rstest]
    #[case::blank(" \n", None)]
    #[case::garbage("--dangerous flag", Some("does not hold a session id"))]
    #[case::binary("\u{0}\u{1}", Some("does not hold a session id"))]
    fn unusable_files(#[case] text: &str, #[case] err: Option<&str>) {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "s/main.session", text);
        let got = read_session_id(dir.path(), Path::new("s/main.session"));
        match err {
            None => assert_eq!(got.unwrap(), None),
            Some(e) => assert!(got.unwrap_err().to_string().contains(e)),
        }
    }

    /// An agent replaced the session file with a link to the worker's environment (or made it
    /// huge, or a FIFO): the worker reads none of it, says why, and starts fresh; the next
    /// write replaces the link.
    #[rstest]
    #[case::link_to_environ("link")]
    #[case::link_to_a_folder_on_the_way("dirlink")]
    #[case::huge("huge")]
    #[case::fifo("fifo")]
    fn hostile_session_files_are_refused_with_a_reason(#[case] how: &str) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let file = session_file(".claude/sessions", "main");
        fs::create_dir_all(root.join(".claude/sessions")).unwrap();
        let path = root.join(&file);
        let want = match how {
            "link" => {
                symlink("/proc/self/environ", &path).unwrap();
                "is a symbolic link, which the worker does not follow"
            }
            "dirlink" => {
                fs::remove_dir_all(root.join(".claude/sessions")).unwrap();
                let elsewhere = root.join("outside");
                fs::create_dir_all(&elsewhere).unwrap();
                fs::write(elsewhere.join("main.session"), "stolen-id\n").unwrap();
                symlink(&elsewhere, root.join(".claude/sessions")).unwrap();
                "is a symbolic link"
            }
            "huge" => {
                let f = fs::File::create(&path).unwrap();
                f.set_len(10 << 30).unwrap();
                "is larger than 4096 bytes"
            }
            _ => {
                rustix::fs::mkfifoat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::Mode::from_raw_mode(0o600),
                )
                .unwrap();
                "not a regular file (a FIFO)"
            }
        };
        let err = read_thread_session(root, ".claude/sessions", "main").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(want), "{text}");
        assert!(text.contains("starts a fresh session"), "{text}");
        if how != "dirlink" {
            write_session_id(root, &file, "fresh-1").unwrap();
            assert!(!path.is_symlink());
            assert_eq!(
                read_session_id(root, &file).unwrap().as_deref(),
                Some("fresh-1")
            );
        }
    }

    #[test]
    fn a_linked_transcript_is_not_measured() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".claude/projects/p")).unwrap();
        symlink(
            "/proc/self/environ",
            dir.path().join(".claude/projects/p/s1.jsonl"),
        )
        .unwrap();
        assert_eq!(transcript_size(dir.path(), "s1"), None);
    }

    #[test]
    fn invalid_ids_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new("s/main.session");
        assert!(write_session_id(dir.path(), file, "-x").is_err());
        assert!(!dir.path().join(file).exists());
    }

    #[rstest]
    #[case::own_file_wins("main", true, true, Some(".claude/sessions/main.session"))]
    #[case::legacy_for_main("main", false, true, Some(".claude/.session"))]
    #[case::no_legacy_for_other_threads("work", false, true, None)]
    #[case::nothing("main", false, false, None)]
    fn thread_sessions(
        #[case] thread: &str,
        #[case] own: bool,
        #[case] legacy: bool,
        #[case] want: Option<&str>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        if own {
            put(
                dir.path(),
                &format!(".claude/sessions/{thread}.session"),
                "own",
            );
        }
        if legacy {
            put(dir.path(), LEGACY_SESSION_FILE, "legacy\n");
        }
        let got = read_thread_session(dir.path(), ".claude/sessions", thread).unwrap();
        assert_eq!(
            got.as_ref().map(|(f, _)| f.to_str().unwrap()),
            want,
            "{got:?}"
        );
        if let Some((_, id)) = got {
            assert_eq!(id, if own { "own" } else { "legacy" });
        }
    }

    #[rstest]
    #[case::no_transcript(None, true)]
    #[case::small(Some(10), true)]
    #[case::at_the_limit(Some(MAX_RESUME_TRANSCRIPT_BYTES), true)]
    #[case::too_large(Some(MAX_RESUME_TRANSCRIPT_BYTES + 1), false)]
    fn large_transcripts_are_not_resumed(#[case] size: Option<u64>, #[case] resume: bool) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(n) = size {
            put(
                dir.path(),
                ".claude/projects/-workspaces-notes/s1.jsonl",
                "",
            );
            let f = fs::File::options()
                .write(true)
                .open(
                    dir.path()
                        .join(".claude/projects/-workspaces-notes/s1.jsonl"),
                )
                .unwrap();
            f.set_len(n).unwrap();
        }
        put(
            dir.path(),
            ".claude/projects/-other/s2.jsonl",
            &"x".repeat(2_000_000),
        );
        assert_eq!(transcript_size(dir.path(), "s1"), size);
        let decision = resume_decision(dir.path(), "s1");
        assert_eq!(
            matches!(decision, ResumeDecision::Resume(_)),
            resume,
            "{decision:?}"
        );
    }

    #[test]
    fn transcript_lookup_never_leaves_the_projects_folder() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "secret.jsonl", &"x".repeat(10));
        put(dir.path(), ".claude/projects/p/keep", "");
        assert_eq!(transcript_size(dir.path(), "../../secret"), None);
    }
}
