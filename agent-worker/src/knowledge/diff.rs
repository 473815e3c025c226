//! `diff`: what one commit changed against its first parent, with bounded patches.

use git2::{Delta, DiffFindOptions, DiffOptions, Oid, Patch, Repository};
use vexa_core::knowledge::{ChangeKind, Diff, FileChange, MAX_DIFF_FILES, MAX_DIFF_TEXT};

use super::{KnowledgeError, commit_of, cut_at, internal};

/// A side of a change larger than this gets no patch: libgit2 would load it whole to compute
/// one that could not be answered anyway.
const MAX_PATCHED_FILE: usize = 8 * 1024 * 1024;

/// What `commit` changed against its first parent (against nothing, for a first commit).
pub(super) fn of(repo: &Repository, commit: &git2::Commit<'_>) -> Result<Diff, KnowledgeError> {
    let id = commit.id();
    let new = commit
        .tree()
        .map_err(internal(format!("reading the tree of commit {id}")))?;
    let old = match commit.parent_count() {
        0 => None,
        _ => Some(
            commit
                .parent(0)
                .and_then(|p| p.tree())
                .map_err(internal(format!("reading the first parent of commit {id}")))?,
        ),
    };
    let comparing = || internal(format!("comparing commit {id} with its parent"));
    let mut options = DiffOptions::new();
    options.include_typechange(true);
    let mut diff = repo
        .diff_tree_to_tree(old.as_ref(), Some(&new), Some(&mut options))
        .map_err(comparing())?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))
        .map_err(comparing())?;
    let odb = repo.odb().map_err(internal("opening the objects"))?;
    let too_big = |oid: Oid| {
        !oid.is_zero()
            && odb
                .read_header(oid)
                .is_ok_and(|(size, _)| size > MAX_PATCHED_FILE)
    };

    let mut budget = MAX_DIFF_TEXT;
    let mut files = Vec::new();
    for (i, delta) in diff.deltas().enumerate().take(MAX_DIFF_FILES) {
        let change = change_of(delta.status());
        let old_path = lossy(delta.old_file().path_bytes());
        let new_path = lossy(delta.new_file().path_bytes());
        let mut file = FileChange {
            path: if change == ChangeKind::Deleted {
                old_path.clone()
            } else {
                new_path
            },
            old_path: (change == ChangeKind::Renamed).then_some(old_path),
            change,
            binary: false,
            patch: None,
            truncated: false,
        };
        if budget == 0 || too_big(delta.old_file().id()) || too_big(delta.new_file().id()) {
            file.truncated = true;
        } else {
            let patch = Patch::from_diff(&diff, i)
                .map_err(internal(format!("comparing {} in commit {id}", file.path)))?;
            file.binary = match &patch {
                Some(p) => p.delta().flags().is_binary(),
                None => delta.flags().is_binary(),
            };
            if let Some(p) = patch.filter(|_| !file.binary) {
                let (text, cut) = patch_text(&p, budget)
                    .map_err(internal(format!("comparing {} in commit {id}", file.path)))?;
                budget = if cut { 0 } else { budget - text.len() };
                file.patch = Some(text);
                file.truncated = cut;
            }
        }
        files.push(file);
    }
    Ok(Diff {
        commit: commit_of(commit),
        omitted: diff.deltas().len().saturating_sub(files.len()),
        files,
    })
}

fn change_of(status: Delta) -> ChangeKind {
    match status {
        Delta::Added | Delta::Copied | Delta::Untracked => ChangeKind::Added,
        Delta::Deleted => ChangeKind::Deleted,
        Delta::Renamed => ChangeKind::Renamed,
        Delta::Typechange => ChangeKind::TypeChanged,
        _ => ChangeKind::Modified,
    }
}

fn lossy(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// The patch's hunks as unified diff text (no file header), at most `max` bytes; and whether
/// it was cut.
fn patch_text(patch: &Patch<'_>, max: usize) -> Result<(String, bool), git2::Error> {
    let mut text = String::new();
    for h in 0..patch.num_hunks() {
        let (hunk, lines) = patch.hunk(h)?;
        text.push_str(&String::from_utf8_lossy(hunk.header()));
        if cut_at(&mut text, max) {
            return Ok((text, true));
        }
        for l in 0..lines {
            let line = patch.line_in_hunk(h, l)?;
            let content = String::from_utf8_lossy(line.content());
            match line.origin() {
                origin @ ('+' | '-' | ' ') => {
                    text.push(origin);
                    text.push_str(&content);
                }
                // "\ No newline at end of file", which carries its own line breaks.
                _ => text.push_str(&content),
            }
            if cut_at(&mut text, max) {
                return Ok((text, true));
            }
        }
    }
    Ok((text, false))
}
