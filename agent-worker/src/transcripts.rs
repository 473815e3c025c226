//! Claude Code's transcripts, carried between runs by the worker.
//!
//! The CLI keeps its whole configuration (settings with hooks, commands, plugins, memory) and
//! its transcripts in `CLAUDE_CONFIG_DIR`. That folder is the pod's own
//! ([`vexa_core::pod::layout::AGENT_CONFIG_DIR`]), so nothing an agent writes there reaches a
//! later run. A later run still has to `--resume` a chat, so the worker keeps exactly one kind
//! of file across runs: the session's transcript, `projects/<project>/<session>.jsonl`. After
//! a turn it copies that file to the rw workspace's `.claude/projects/`; before a turn that
//! resumes, it copies it back into the fresh config folder. Both sides are writable by the
//! agent, so both copies go through [`crate::untrusted_fs`] (no links, regular files, capped).
//! A transcript is conversation, not configuration: the CLI does not execute anything in it.

use std::path::{Path, PathBuf};

use crate::session::{MAX_RESUME_TRANSCRIPT_BYTES, PROJECTS_DIR, valid_session_id};
use crate::untrusted_fs::{self, UntrustedFileError};

/// Where the transcripts are inside the CLI's config folder.
const CONFIG_PROJECTS: &str = "projects";

fn transcript(projects: &str, project: &str, id: &str) -> PathBuf {
    Path::new(projects)
        .join(project)
        .join(format!("{id}.jsonl"))
}

/// Copies session `id`'s transcripts from `from/<from_projects>` to `to/<to_projects>`, one per
/// project folder; a transcript larger than the resume cap is not copied (and a stale copy of
/// it at the destination is removed, so the next run starts fresh rather than resuming an old
/// state). Returns what was copied; the errors are for a note.
fn copy(
    from: &Path,
    from_projects: &str,
    to: &Path,
    to_projects: &str,
    id: &str,
) -> Result<Vec<PathBuf>, UntrustedFileError> {
    if !valid_session_id(id) {
        return Ok(Vec::new());
    }
    let mut copied = Vec::new();
    for project in untrusted_fs::subfolders(from, Path::new(from_projects))? {
        let src = transcript(from_projects, &project, id);
        let dst = transcript(to_projects, &project, id);
        match untrusted_fs::read(from, &src, MAX_RESUME_TRANSCRIPT_BYTES) {
            Ok(Some(bytes)) => {
                untrusted_fs::write(to, &dst, &bytes)?;
                copied.push(dst);
            }
            Ok(None) => {}
            Err(e @ UntrustedFileError::TooLarge { .. }) => {
                untrusted_fs::remove(to, &dst)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(copied)
}

/// Before a turn that resumes `id`: its kept transcript, from the workspace into the CLI's
/// config folder, unless the config folder already has it (a later turn of the same pod).
pub fn restore(
    workspace: &Path,
    config: &Path,
    id: &str,
) -> Result<Vec<PathBuf>, UntrustedFileError> {
    let present = untrusted_fs::subfolders(config, Path::new(CONFIG_PROJECTS))?
        .into_iter()
        .any(|p| {
            untrusted_fs::file_size(config, &transcript(CONFIG_PROJECTS, &p, id))
                .is_ok_and(|s| s.is_some())
        });
    if present {
        return Ok(Vec::new());
    }
    copy(workspace, PROJECTS_DIR, config, CONFIG_PROJECTS, id)
}

/// After a turn that ran session `id`: its transcript, from the CLI's config folder into the
/// workspace, for the next run.
pub fn keep(workspace: &Path, config: &Path, id: &str) -> Result<Vec<PathBuf>, UntrustedFileError> {
    copy(config, CONFIG_PROJECTS, workspace, PROJECTS_DIR, id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn only_the_sessions_transcript_crosses_between_runs() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        // What a run's CLI left in its config folder: the transcript, and configuration.
        put(
            cfg.path(),
            "projects/-workspaces-notes/s1.jsonl",
            "{\"a\":1}\n",
        );
        put(cfg.path(), "projects/-workspaces-notes/other.jsonl", "x");
        put(cfg.path(), "settings.json", r#"{"hooks":{}}"#);
        put(
            cfg.path(),
            "projects/-workspaces-notes/memory/MEMORY.md",
            "obey",
        );
        let kept = keep(ws.path(), cfg.path(), "s1").unwrap();
        assert_eq!(
            kept,
            [PathBuf::from(".claude/projects/-workspaces-notes/s1.jsonl")]
        );
        let mut files: Vec<String> = walk(ws.path());
        files.sort();
        assert_eq!(files, [".claude/projects/-workspaces-notes/s1.jsonl"]);

        // The next pod: a fresh config folder gets the transcript back, and nothing else.
        let next = tempfile::tempdir().unwrap();
        let restored = restore(ws.path(), next.path(), "s1").unwrap();
        assert_eq!(
            restored,
            [PathBuf::from("projects/-workspaces-notes/s1.jsonl")]
        );
        assert_eq!(walk(next.path()), ["projects/-workspaces-notes/s1.jsonl"]);
        // A later turn in the same pod: the CLI's own copy is newer and stays.
        put(next.path(), "projects/-workspaces-notes/s1.jsonl", "newer");
        assert!(restore(ws.path(), next.path(), "s1").unwrap().is_empty());
        assert_eq!(
            fs::read_to_string(next.path().join("projects/-workspaces-notes/s1.jsonl")).unwrap(),
            "newer"
        );
    }

    #[test]
    fn linked_or_huge_transcripts_are_not_copied() {
        let ws = tempfile::tempdir().unwrap();
        let cfg = tempfile::tempdir().unwrap();
        fs::create_dir_all(ws.path().join(".claude/projects/p")).unwrap();
        symlink(
            "/proc/self/environ",
            ws.path().join(".claude/projects/p/s1.jsonl"),
        )
        .unwrap();
        let err = restore(ws.path(), cfg.path(), "s1").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(walk(cfg.path()).is_empty());

        put(cfg.path(), "projects/p/s2.jsonl", "");
        fs::File::options()
            .write(true)
            .open(cfg.path().join("projects/p/s2.jsonl"))
            .unwrap()
            .set_len(MAX_RESUME_TRANSCRIPT_BYTES + 1)
            .unwrap();
        put(ws.path(), ".claude/projects/p/s2.jsonl", "stale");
        let err = keep(ws.path(), cfg.path(), "s2").unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(!ws.path().join(".claude/projects/p/s2.jsonl").exists());
        assert!(keep(ws.path(), cfg.path(), "../../x").unwrap().is_empty());
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        out
    }
}
