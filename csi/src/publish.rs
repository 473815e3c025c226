//! NodePublishVolume and NodeUnpublishVolume: what a request may ask for, and the mounts.
//!
//! The driver mounts exactly one folder (the node's Workload API folder, fixed at start) and
//! only read-only, only as a pod's inline ephemeral volume, only onto that pod's CSI volume
//! folder. Nothing in a request is used as a source path; `volumeAttributes` are refused, so a
//! pod cannot steer the driver at all (an attacker's `volumeAttributes: {path: ../../etc}` is
//! an error in the pod's events, never a mount).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tonic::Status;

use crate::mount;
use crate::proto::{AccessType, NodePublishVolumeRequest, NodeUnpublishVolumeRequest};
use crate::target::{self, Target, TargetError};

/// Keys the kubelet itself puts into an inline volume's context (pod info, ephemeral flag).
const KUBELET_KEY_PREFIX: &str = "csi.storage.k8s.io/";
const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
const POD_UID_KEY: &str = "csi.storage.k8s.io/pod.uid";

/// The node side of the driver.
#[derive(Debug)]
pub struct Publisher {
    /// The folder every volume shows (the SPIRE agent's socket folder).
    source: PathBuf,
    /// The kubelet's pods folder, canonical.
    pods_dir: PathBuf,
    /// Mount operations run one at a time (the kubelet may call in parallel for several pods).
    lock: Mutex<()>,
}

impl Publisher {
    /// A publisher of `source` onto pod folders under `pods_dir` (canonical: checked at start).
    pub fn new(source: PathBuf, pods_dir: PathBuf) -> Self {
        Self {
            source,
            pods_dir,
            lock: Mutex::new(()),
        }
    }

    /// Checks a publish request and bind-mounts the source read-only onto its target.
    /// Idempotent: a target that already shows the source, read-only, is fine as it is.
    pub fn publish(&self, request: &NodePublishVolumeRequest) -> Result<(), Status> {
        let target = check_publish(&self.pods_dir, request)?;
        let source_is_dir = std::fs::metadata(&self.source)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !source_is_dir {
            return Err(Status::failed_precondition(format!(
                "the Workload API folder {} is missing on this node: is the SPIRE agent running?",
                self.source.display()
            )));
        }
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Status::internal("mount lock poisoned"))?;
        target::prepare(&target).map_err(target_status)?;
        let io = |what: &str| {
            let path = target.path.display().to_string();
            let what = what.to_owned();
            move |e: io::Error| Status::internal(format!("{what} {path}: {e}"))
        };
        if mount::is_mount_point(&target.path).map_err(io("inspecting"))? {
            if !mount::same_folder(&target.path, &self.source).map_err(io("inspecting"))? {
                return Err(Status::failed_precondition(format!(
                    "{} already has something else mounted on it",
                    target.path.display()
                )));
            }
            if !mount::is_read_only(&target.path).map_err(io("inspecting"))? {
                // A bind whose remount never happened (a crash in between): finish it.
                mount::unmount(&target.path).map_err(io("unmounting a writable bind at"))?;
                mount::bind_read_only(&self.source, &target.path).map_err(io("mounting onto"))?;
            }
            return Ok(());
        }
        mount::bind_read_only(&self.source, &target.path).map_err(io("mounting onto"))?;
        tracing::info!(volume = %request.volume_id, target = %target.path.display(), pod_uid = %target.pod_uid, "published");
        Ok(())
    }

    /// Unmounts and removes a target. Idempotent: a target that is gone is fine. Only an empty
    /// folder is removed, so a failed unmount can never lead to deleting what the source holds.
    pub fn unpublish(&self, request: &NodeUnpublishVolumeRequest) -> Result<(), Status> {
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is empty"));
        }
        let target = target::parse(&self.pods_dir, &request.target_path).map_err(target_status)?;
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Status::internal("mount lock poisoned"))?;
        let path = &target.path;
        let io = |what: &'static str| {
            move |e: io::Error| Status::internal(format!("{what} {}: {e}", path.display()))
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("inspecting")(e)),
            Ok(meta) if !meta.file_type().is_dir() => {
                return Err(Status::failed_precondition(format!(
                    "{} is not a folder",
                    path.display()
                )));
            }
            Ok(_) => {}
        }
        if mount::is_mount_point(path).map_err(io("inspecting"))? {
            mount::unmount(path).map_err(io("unmounting"))?;
        }
        match std::fs::remove_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io("removing")(e)),
            _ => {
                tracing::info!(volume = %request.volume_id, target = %path.display(), "unpublished");
                Ok(())
            }
        }
    }
}

/// What a publish request may ask for. Pure.
pub fn check_publish(
    pods_dir: &Path,
    request: &NodePublishVolumeRequest,
) -> Result<Target, Status> {
    if request.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is empty"));
    }
    let context = &request.volume_context;
    if context.get(EPHEMERAL_KEY).map(String::as_str) != Some("true") {
        return Err(Status::invalid_argument(format!(
            "{} serves only inline ephemeral volumes (a pod's `csi:` volume), not persistent volumes",
            vexa_core::pod::layout::WORKLOAD_API_CSI_DRIVER
        )));
    }
    if let Some(keys) = foreign_keys(context) {
        return Err(Status::invalid_argument(format!(
            "{} takes no volumeAttributes (it always shows the node's Workload API folder); remove: {keys}",
            vexa_core::pod::layout::WORKLOAD_API_CSI_DRIVER
        )));
    }
    if !request.readonly {
        return Err(Status::invalid_argument(format!(
            "{} volumes are read-only: set `readOnly: true` on the pod's csi volume",
            vexa_core::pod::layout::WORKLOAD_API_CSI_DRIVER
        )));
    }
    match request
        .volume_capability
        .as_ref()
        .and_then(|c| c.access_type.as_ref())
    {
        Some(AccessType::Mount(m)) if m.mount_flags.is_empty() => {}
        Some(AccessType::Mount(_)) => {
            return Err(Status::invalid_argument("mount flags are not accepted"));
        }
        Some(AccessType::Block(_)) => {
            return Err(Status::invalid_argument("block volumes are not served"));
        }
        None => {
            return Err(Status::invalid_argument(
                "volume_capability with a mount access type is required",
            ));
        }
    }
    if !request.staging_target_path.is_empty() {
        return Err(Status::invalid_argument(
            "this driver does not stage; staging_target_path must be empty",
        ));
    }
    let target = target::parse(pods_dir, &request.target_path).map_err(target_status)?;
    if let Some(uid) = context.get(POD_UID_KEY)
        && *uid != target.pod_uid
    {
        return Err(Status::invalid_argument(format!(
            "target path belongs to pod {} but the volume to pod {uid:?}",
            target.pod_uid
        )));
    }
    Ok(target)
}

/// The keys of `context` that the kubelet did not put there, listed (bounded) for an error.
fn foreign_keys(context: &HashMap<String, String>) -> Option<String> {
    let mut keys: Vec<&str> = context
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with(KUBELET_KEY_PREFIX))
        .collect();
    if keys.is_empty() {
        return None;
    }
    keys.sort_unstable();
    let mut listed: String = keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some((cut, _)) = listed.char_indices().nth(200) {
        listed.truncate(cut);
        listed.push('…');
    }
    Some(listed)
}

fn target_status(e: TargetError) -> Status {
    match e {
        TargetError::Shape { .. } => Status::invalid_argument(e.to_string()),
        TargetError::Unsafe { .. } => Status::failed_precondition(e.to_string()),
        TargetError::Io { .. } => Status::internal(e.to_string()),
    }
}
