//! Which folders the driver may mount onto: only the one the kubelet makes for a CSI volume of a
//! pod, `<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount`. A caller
//! names the target path; it is never trusted to name anything else (no `..`, no other folder
//! of the node, no symlink on the way).

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a target path was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not of the shape the kubelet uses for a CSI volume of a pod.
    #[error(
        "target path {path:?} is not a pod's CSI volume folder \
         (<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount): {why}"
    )]
    Shape {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The folder it names is not what it looks like (a symlink, or not a folder).
    #[error("target path {path:?} refused: {why}")]
    Unsafe {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The folder could not be inspected or created.
    #[error("target path {path:?}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// A target path of the right shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path, rebuilt from its checked components.
    pub path: PathBuf,
    /// The pod's UID, taken from the path.
    pub pod_uid: String,
}

/// Checks the shape of `target` against the kubelet's pods folder `pods_dir` (absolute, with no
/// symlinks: canonicalised at start). Pure: no file system access.
pub fn parse(pods_dir: &Path, target: &str) -> Result<Target, TargetError> {
    let shape = |why| TargetError::Shape {
        path: target.to_owned(),
        why,
    };
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(shape("not absolute"));
    }
    let rest = path
        .strip_prefix(pods_dir)
        .map_err(|_| shape("not under the kubelet's pods folder"))?;
    let mut parts = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(|| shape("not UTF-8"))?),
            _ => return Err(shape("has a `..` or other non-plain component")),
        }
    }
    let [pod_uid, volumes, plugin, volume, mount] = parts.as_slice() else {
        return Err(shape("wrong number of components"));
    };
    if !is_uid(pod_uid) {
        return Err(shape("the pod UID is not a UID"));
    }
    if *volumes != "volumes" || *plugin != "kubernetes.io~csi" || *mount != "mount" {
        return Err(shape("not a CSI volume folder"));
    }
    if volume.is_empty() {
        return Err(shape("empty volume name"));
    }
    let path = [
        pods_dir,
        Path::new(pod_uid),
        Path::new(volumes),
        Path::new(plugin),
        Path::new(volume),
        Path::new(mount),
    ]
    .iter()
    .collect();
    Ok(Target {
        path,
        pod_uid: (*pod_uid).to_owned(),
    })
}

/// A Kubernetes UID as the kubelet names pod folders: lowercase hex digits and dashes.
fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// Makes sure `target` can be mounted onto: its parent (the kubelet's volume folder) exists and
/// resolves to itself (no symlink on the way), and the target is a plain folder (created here
/// when missing, never followed if it is a symlink).
pub fn prepare(target: &Target) -> Result<(), TargetError> {
    let given = || target.path.display().to_string();
    let io_err = |source| TargetError::Io {
        path: given(),
        source,
    };
    let parent = target.path.parent().ok_or_else(|| TargetError::Unsafe {
        path: given(),
        why: "no parent".into(),
    })?;
    let real_parent = parent.canonicalize().map_err(io_err)?;
    if real_parent != parent {
        return Err(TargetError::Unsafe {
            path: given(),
            why: format!(
                "its folder resolves to {} (a symlink on the way)",
                real_parent.display()
            ),
        });
    }
    match std::fs::symlink_metadata(&target.path) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(_) => Err(TargetError::Unsafe {
            path: given(),
            why: "exists and is not a folder".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&target.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => prepare(target),
            Err(e) => Err(io_err(e)),
        },
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const PODS: &str = "/var/lib/kubelet/pods";
    const UID: &str = "0d3c1a5e-7f1b-4d7e-9a51-2b6f0c9e8d11";

    #[test]
    fn the_kubelets_folder_for_a_csi_volume_is_accepted() {
        let t = parse(
            Path::new(PODS),
            &format!("{PODS}/{UID}/volumes/kubernetes.io~csi/spire/mount"),
        )
        .unwrap();
        assert_eq!(t.pod_uid, UID);
        assert_eq!(
            t.path,
            PathBuf::from(format!(
                "{PODS}/{UID}/volumes/kubernetes.io~csi/spire/mount"
            ))
        );
    }

    #[rstest]
    #[case::relative("pods/x/volumes/kubernetes.io~csi/v/mount")]
    #[case::elsewhere("/etc")]
    #[case::the_pods_folder("/var/lib/kubelet/pods")]
    #[case::a_sibling_of_pods("/var/lib/kubelet/podsx/0d3c/volumes/kubernetes.io~csi/v/mount")]
    #[case::dot_dot_out(
        "/var/lib/kubelet/pods/0d3c/volumes/kubernetes.io~csi/../../../../../etc/mount"
    )]
    #[case::dot_dot_inside("/var/lib/kubelet/pods/0d3c/volumes/kubernetes.io~csi/v/../mount")]
    #[case::another_plugin("/var/lib/kubelet/pods/0d3c/volumes/kubernetes.io~empty-dir/v/mount")]
    #[case::the_volume_folder("/var/lib/kubelet/pods/0d3c/volumes/kubernetes.io~csi/v")]
    #[case::below_mount("/var/lib/kubelet/pods/0d3c/volumes/kubernetes.io~csi/v/mount/x")]
    #[case::not_a_uid("/var/lib/kubelet/pods/ETC/volumes/kubernetes.io~csi/v/mount")]
    #[case::a_pods_own_folder("/var/lib/kubelet/pods/0d3c/etc-hosts")]
    fn anything_else_is_refused(#[case] target: &str) {
        let err = parse(Path::new(PODS), target).unwrap_err();
        assert!(matches!(err, TargetError::Shape { .. }), "{target}: {err}");
    }

    #[test]
    fn a_symlinked_volume_folder_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("pods");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(pods.join(UID).join("volumes/kubernetes.io~csi")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(
            &elsewhere,
            pods.join(UID).join("volumes/kubernetes.io~csi/v"),
        )
        .unwrap();
        let t = parse(
            &pods,
            &format!("{}/{UID}/volumes/kubernetes.io~csi/v/mount", pods.display()),
        )
        .unwrap();
        let err = prepare(&t).unwrap_err();
        assert!(matches!(err, TargetError::Unsafe { .. }), "{err}");
        assert!(
            !elsewhere.join("mount").exists(),
            "nothing is created through the symlink"
        );
    }

    #[test]
    fn a_symlink_as_the_target_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("pods");
        let volume = pods.join(UID).join("volumes/kubernetes.io~csi/v");
        std::fs::create_dir_all(&volume).unwrap();
        std::os::unix::fs::symlink("/etc", volume.join("mount")).unwrap();
        let t = parse(
            &pods,
            &format!("{}/{UID}/volumes/kubernetes.io~csi/v/mount", pods.display()),
        )
        .unwrap();
        assert!(matches!(
            prepare(&t).unwrap_err(),
            TargetError::Unsafe { .. }
        ));
    }

    #[test]
    fn the_target_folder_is_made_once() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("pods");
        std::fs::create_dir_all(pods.join(UID).join("volumes/kubernetes.io~csi/v")).unwrap();
        let t = parse(
            &pods,
            &format!("{}/{UID}/volumes/kubernetes.io~csi/v/mount", pods.display()),
        )
        .unwrap();
        prepare(&t).unwrap();
        prepare(&t).unwrap();
        assert!(t.path.is_dir());
    }
}
