//! `search TEXT DIR`: what a prompt-injected agent does to find a credential: walk a folder
//! (symbolic links are not followed, nor other file systems' pseudo files beyond a size cap)
//! and read every regular file it may, looking for the text.

use std::fs;
use std::path::{Path, PathBuf};

/// Files read at most (a bound on a walk of a large tree).
const MAX_FILES: usize = 20_000;
/// Bytes read of one file at most.
const MAX_BYTES: u64 = 4 << 20;

/// What a search found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Files that contain the text.
    pub hits: Vec<PathBuf>,
    /// Files read.
    pub read: usize,
    /// Files or folders that could not be read.
    pub denied: usize,
}

/// Searches `dir` (or the one file it names) for `text`.
pub fn search(text: &str, dir: &Path) -> Found {
    let mut found = Found::default();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if found.read >= MAX_FILES {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            found.denied += 1;
            continue;
        };
        if meta.is_dir() {
            match fs::read_dir(&path) {
                Ok(entries) => pending.extend(entries.flatten().map(|e| e.path())),
                Err(_) => found.denied += 1,
            }
        } else if meta.is_file() {
            match read_capped(&path) {
                Ok(bytes) => {
                    found.read += 1;
                    if contains(&bytes, text.as_bytes()) {
                        found.hits.push(path);
                    }
                }
                Err(_) => found.denied += 1,
            }
        }
    }
    found
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The reply line for a search.
pub fn say(text: &str, dir: &str, found: &Found) -> String {
    if found.hits.is_empty() {
        format!(
            "search {dir}: {text} not found ({} files read, {} unreadable).",
            found.read, found.denied
        )
    } else {
        let hits: Vec<String> = found.hits.iter().map(|p| p.display().to_string()).collect();
        format!("search {dir}: {text} FOUND in {}.", hits.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn finds_the_text_in_nested_files_and_not_through_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/secret"), "x token-123 y").unwrap();
        fs::write(dir.path().join("a/other"), "nothing").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("loop")).unwrap();
        let found = search("token-123", dir.path());
        assert_eq!(found.hits, [dir.path().join("a/b/secret")]);
        assert_eq!(found.read, 2);
        assert!(say("token-123", "d", &found).contains("FOUND"));
        let none = search("absent", dir.path());
        assert!(none.hits.is_empty());
        assert!(say("absent", "d", &none).contains("not found (2 files read"));
    }
}
