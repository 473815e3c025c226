//! The mount operations: a read-only bind mount of one folder, whether a folder is a mount point
//! and of what, and the unmount.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, StatVfsMountFlags, StatxAttributes, StatxFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// Bind-mounts `source` onto `target`, then makes that mount read-only (a bind mount takes its
/// flags only on a remount). If the remount fails the bind is undone, so a writable view of
/// `source` is never left behind.
pub fn bind_read_only(source: &Path, target: &Path) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC;
    if let Err(e) = rustix::mount::mount_remount(target, flags, "") {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
        return Err(e.into());
    }
    Ok(())
}

/// Whether `path` is the root of a mount (not following a symlink).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let stat = rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    )?;
    if !stat
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
    {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not report mount roots (statx)",
        ));
    }
    Ok(stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// Whether the mount holding `path` is read-only.
pub fn is_read_only(path: &Path) -> io::Result<bool> {
    Ok(rustix::fs::statvfs(path)?
        .f_flag
        .contains(StatVfsMountFlags::RDONLY))
}

/// Whether `a` and `b` are the same folder (device and inode).
pub fn same_folder(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Unmounts `target` (never following a symlink). A mount still in use (a process with a file
/// open in it) is detached instead: it disappears from the pod folder at once and from the
/// kernel when its last user lets go.
pub fn unmount(target: &Path) -> io::Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
        Err(rustix::io::Errno::BUSY) => Ok(rustix::mount::unmount(
            target,
            UnmountFlags::NOFOLLOW | UnmountFlags::DETACH,
        )?),
        other => Ok(other?),
    }
}
