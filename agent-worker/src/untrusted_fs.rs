//! Files the agent could have written (anything in a workspace or in the agent CLI's config
//! folder), read and written by the trusted worker without trusting them: no symbolic link is
//! followed in any part of the path, only regular files are read, and never more than a cap.
//!
//! Each path is walked from a folder the worker chose (`root`) one name at a time with
//! `openat(O_NOFOLLOW)`, so a link the agent planted as `.claude`, as a folder inside it or as
//! the file itself is refused, not followed to `/proc/self/environ` or the dispatch's Secret.
//! A FIFO is opened non-blocking and refused, so it cannot hang the worker.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a file was not read or written.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFileError {
    /// A symbolic link where a folder or the file should be.
    #[error("{path} is a symbolic link, which the worker does not follow")]
    Symlink {
        /// The link (the path up to it).
        path: PathBuf,
    },
    /// Something other than a regular file (a folder, a FIFO, a socket, a device).
    #[error("{path} is not a regular file ({kind})")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The file is larger than the caller accepts.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// The path is absolute or leaves its folder (`..`).
    #[error("{path} is not a plain relative path")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// Any other failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, UntrustedFileError>;

fn io_err(path: &Path, e: impl Into<io::Error>) -> UntrustedFileError {
    UntrustedFileError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The names of `rel`, which must be relative and stay below its root.
fn names(rel: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(UntrustedFileError::BadPath {
                    path: rel.to_owned(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(UntrustedFileError::BadPath {
            path: rel.to_owned(),
        });
    }
    Ok(out)
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "a folder",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Symlink => "a symbolic link",
        _ => "not a file",
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the folder `root/names...` without following links. `Ok(None)` when a part is
/// missing and `create` is false. With `create`, missing folders are made, and a symbolic link
/// where a folder should be is removed and replaced by the folder (the worker owns these
/// folders; the link is what an agent left).
fn open_dir(root: &Path, names: &[&std::ffi::OsStr], create: bool) -> Result<Option<OwnedFd>> {
    let mut dir = rustix::fs::open(root, DIR_FLAGS, Mode::empty()).map_err(|e| io_err(root, e))?;
    let mut at = root.to_owned();
    for name in names {
        at.push(name);
        let mut attempts = 0;
        dir = loop {
            attempts += 1;
            match rustix::fs::openat(&dir, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => break fd,
                Err(Errno::NOENT) if create && attempts < 3 => {
                    match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(&at, e)),
                    }
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_err(&at, e))?;
                    let t = FileType::from_raw_mode(st.st_mode);
                    if t == FileType::Symlink && create && attempts < 3 {
                        rustix::fs::unlinkat(&dir, *name, AtFlags::empty())
                            .map_err(|e| io_err(&at, e))?;
                        continue;
                    }
                    return Err(if t == FileType::Symlink {
                        UntrustedFileError::Symlink { path: at }
                    } else {
                        UntrustedFileError::NotRegular {
                            path: at,
                            kind: kind(t),
                        }
                    });
                }
                Err(e) => return Err(io_err(&at, e)),
            }
        };
    }
    Ok(Some(dir))
}

/// Opens the regular file `root/rel` for reading; `Ok(None)` when it (or a folder on its way)
/// does not exist. Returns the file and its size.
fn open_file(root: &Path, rel: &Path) -> Result<Option<(File, u64)>> {
    let names = names(rel)?;
    let (file, dirs) = names
        .split_last()
        .ok_or_else(|| UntrustedFileError::BadPath {
            path: rel.to_owned(),
        })?;
    let path = root.join(rel);
    let Some(dir) = open_dir(root, dirs, false)? else {
        return Ok(None);
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, *file, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(UntrustedFileError::Symlink { path }),
        Err(e) => return Err(io_err(&path, e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&path, e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::RegularFile {
        return Err(UntrustedFileError::NotRegular {
            path,
            kind: kind(t),
        });
    }
    Ok(Some((
        File::from(fd),
        u64::try_from(st.st_size).unwrap_or(0),
    )))
}

/// The size of the regular file `root/rel`, `Ok(None)` when it does not exist.
pub fn file_size(root: &Path, rel: &Path) -> Result<Option<u64>> {
    Ok(open_file(root, rel)?.map(|(_, size)| size))
}

/// Reads the regular file `root/rel`, at most `limit` bytes (a larger file is an error, also
/// one that grows while it is read). `Ok(None)` when it does not exist.
pub fn read(root: &Path, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let path = root.join(rel);
    let Some((file, size)) = open_file(root, rel)? else {
        return Ok(None);
    };
    let too_large = || UntrustedFileError::TooLarge {
        path: path.clone(),
        limit,
    };
    if size > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(&path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// Replaces `root/rel` with `bytes` atomically (a temporary file beside it, then a rename that
/// replaces whatever had the name, a link included, without following it). Missing folders are
/// made; a link where a folder should be is replaced by the folder.
pub fn write(root: &Path, rel: &Path, bytes: &[u8]) -> Result<()> {
    let names = names(rel)?;
    let (file, dirs) = names
        .split_last()
        .ok_or_else(|| UntrustedFileError::BadPath {
            path: rel.to_owned(),
        })?;
    let path = root.join(rel);
    let dir = open_dir(root, dirs, true)?.ok_or_else(|| {
        io_err(
            &path,
            io::Error::new(io::ErrorKind::NotFound, "its folder could not be made"),
        )
    })?;
    let mut tmp = file.to_os_string();
    tmp.push(".vexa-tmp");
    match rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(io_err(&path, e)),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, &tmp, flags, Mode::from_raw_mode(0o644))
        .map_err(|e| io_err(&path, e))?;
    let mut out = File::from(fd);
    out.write_all(bytes).map_err(|e| io_err(&path, e))?;
    drop(out);
    rustix::fs::renameat(&dir, &tmp, &dir, *file).map_err(|e| io_err(&path, e))
}

/// Removes `root/rel` (the link itself when it is one); a missing file is fine.
pub fn remove(root: &Path, rel: &Path) -> Result<()> {
    let names = names(rel)?;
    let (file, dirs) = names
        .split_last()
        .ok_or_else(|| UntrustedFileError::BadPath {
            path: rel.to_owned(),
        })?;
    let Some(dir) = open_dir(root, dirs, false)? else {
        return Ok(());
    };
    match rustix::fs::unlinkat(&dir, *file, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(&root.join(rel), e)),
    }
}

/// The names in the folder `root/rel` that are themselves folders (not links), sorted; empty
/// when it does not exist.
pub fn subfolders(root: &Path, rel: &Path) -> Result<Vec<String>> {
    let names = names(rel)?;
    let Some(dir) = open_dir(root, &names, false)? else {
        return Ok(Vec::new());
    };
    let path = root.join(rel);
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir).map_err(|e| io_err(&path, e))? {
        let entry = entry.map_err(|e| io_err(&path, e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let is_dir = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if is_dir {
            out.push(name.to_owned());
        }
    }
    out.sort();
    Ok(out)
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
    fn regular_files_are_read_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "a/b/c.txt", "hello");
        let rel = Path::new("a/b/c.txt");
        assert_eq!(read(dir.path(), rel, 5).unwrap().unwrap(), b"hello");
        assert_eq!(file_size(dir.path(), rel).unwrap(), Some(5));
        let err = read(dir.path(), rel, 4).unwrap_err();
        assert!(matches!(err, UntrustedFileError::TooLarge { limit: 4, .. }));
        assert!(
            err.to_string().ends_with("c.txt is larger than 4 bytes"),
            "{err}"
        );
        assert!(
            read(dir.path(), Path::new("a/missing"), 9)
                .unwrap()
                .is_none()
        );
        assert!(read(dir.path(), Path::new("nope/x"), 9).unwrap().is_none());
    }

    #[test]
    fn a_huge_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "big", "");
        let f = fs::File::options()
            .write(true)
            .open(dir.path().join("big"))
            .unwrap();
        f.set_len(1 << 40).unwrap(); // 1 TiB, sparse
        let err = read(dir.path(), Path::new("big"), 4096).unwrap_err();
        assert!(matches!(err, UntrustedFileError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn links_are_never_followed_anywhere_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "outside/secret", "s3cret");
        fs::create_dir_all(root.join("ws/.claude")).unwrap();
        symlink("/proc/self/environ", root.join("ws/.claude/file")).unwrap();
        symlink(root.join("outside"), root.join("ws/.claude/dir")).unwrap();
        symlink(root.join("outside"), root.join("ws/linked")).unwrap();
        let ws = root.join("ws");
        for rel in [".claude/file", ".claude/dir/secret", "linked/secret"] {
            let err = read(&ws, Path::new(rel), 1 << 20).unwrap_err();
            assert!(
                matches!(err, UntrustedFileError::Symlink { .. }),
                "{rel}: {err}"
            );
            assert!(err.to_string().contains("symbolic link"), "{err}");
            assert!(file_size(&ws, Path::new(rel)).is_err());
        }
    }

    #[test]
    fn fifos_and_folders_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("d")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read(root, Path::new("fifo"), 10).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        let err = read(root, Path::new("d"), 10).unwrap_err();
        assert!(err.to_string().contains("(a folder)"), "{err}");
    }

    #[test]
    fn paths_stay_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        for rel in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(
                matches!(
                    read(dir.path(), Path::new(rel), 10),
                    Err(UntrustedFileError::BadPath { .. })
                ),
                "{rel}"
            );
        }
    }

    #[test]
    fn writes_replace_links_instead_of_following_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "outside/target", "keep");
        fs::create_dir_all(root.join("ws")).unwrap();
        let ws = root.join("ws");
        // The file is a link: the rename replaces the link.
        fs::create_dir_all(ws.join("s")).unwrap();
        symlink(root.join("outside/target"), ws.join("s/main.session")).unwrap();
        write(&ws, Path::new("s/main.session"), b"id\n").unwrap();
        // A folder on the way is a link: it is replaced by a folder.
        symlink(root.join("outside"), ws.join("t")).unwrap();
        write(&ws, Path::new("t/x/f"), b"new").unwrap();
        // The temporary name is a link: it is removed first.
        fs::create_dir_all(ws.join("u")).unwrap();
        symlink(root.join("outside/target"), ws.join("u/f.vexa-tmp")).unwrap();
        write(&ws, Path::new("u/f"), b"u").unwrap();

        assert_eq!(
            fs::read_to_string(root.join("outside/target")).unwrap(),
            "keep"
        );
        assert!(!root.join("outside/x").exists());
        assert_eq!(
            fs::read_to_string(ws.join("s/main.session")).unwrap(),
            "id\n"
        );
        assert!(!ws.join("t").is_symlink());
        assert_eq!(fs::read_to_string(ws.join("t/x/f")).unwrap(), "new");
        assert_eq!(fs::read_to_string(ws.join("u/f")).unwrap(), "u");
        remove(&ws, Path::new("u/f")).unwrap();
        remove(&ws, Path::new("u/f")).unwrap();
        remove(&ws, Path::new("nope/f")).unwrap();
        assert!(!ws.join("u/f").exists());
    }

    #[test]
    fn subfolders_skip_links_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "p/b/x", "");
        put(root, "p/a/x", "");
        put(root, "p/file", "");
        symlink("/", root.join("p/root")).unwrap();
        assert_eq!(subfolders(root, Path::new("p")).unwrap(), ["a", "b"]);
        assert!(subfolders(root, Path::new("missing")).unwrap().is_empty());
        symlink(root.join("p"), root.join("q")).unwrap();
        assert!(subfolders(root, Path::new("q")).is_err());
    }
}
