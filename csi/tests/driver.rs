//! The driver over its real sockets, as the kubelet drives it: registration, identity, and
//! publish/unpublish with real bind mounts in a temporary kubelet root (needs root, as the
//! driver does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;
use vexa_csi::grpc;
use vexa_csi::proto::*;
use vexa_csi::serve::{self, Config};

const UID: &str = "6f1e1f7c-3c1d-4c59-a6a4-1b0f7d0b9a01";

struct Driver {
    _root: tempfile::TempDir,
    config: Config,
    pods: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Driver {
    async fn start() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests bind-mount: run them as root"
        );
        let root = tempfile::tempdir().unwrap();
        let kubelet = root.path().join("kubelet");
        let pods = kubelet.join("pods");
        std::fs::create_dir_all(&pods).unwrap();
        let source = root.path().join("spire-agent");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("marker"), "from the node").unwrap();
        let config = Config {
            kubelet_root: kubelet,
            workload_api_dir: source,
            node_name: "node-a".into(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve::run(config.clone(), async {
            let _ = stopped.await;
        }));
        for _ in 0..100 {
            if config.csi_socket().exists() && config.registration_socket().exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Driver {
            _root: root,
            config,
            pods,
            stop: Some(stop),
            task,
        }
    }

    async fn csi<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        request: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = grpc::connect(&self.config.csi_socket()).await.unwrap();
        grpc::call(channel, service, method, request).await
    }

    /// The folder the kubelet makes for a pod's CSI volume, and the target inside it.
    fn volume_dir(&self, volume: &str) -> PathBuf {
        let dir = self
            .pods
            .join(UID)
            .join("volumes/kubernetes.io~csi")
            .join(volume);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("mount")
    }

    async fn publish(
        &self,
        request: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, tonic::Status> {
        self.csi(service::NODE, service::NODE_PUBLISH_VOLUME, request)
            .await
    }

    async fn unpublish(&self, target: &Path) -> Result<NodeUnpublishVolumeResponse, tonic::Status> {
        let request = NodeUnpublishVolumeRequest {
            volume_id: "csi-1".into(),
            target_path: target.display().to_string(),
        };
        self.csi(service::NODE, service::NODE_UNPUBLISH_VOLUME, request)
            .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
        assert!(
            !self.config.csi_socket().exists(),
            "the CSI socket is removed on stop"
        );
        assert!(
            !self.config.registration_socket().exists(),
            "the registration socket is removed on stop"
        );
    }
}

/// What the kubelet sends for `csi: {driver: csi.vexa.ai, readOnly: true}` with podInfoOnMount.
fn inline_request(target: &Path) -> NodePublishVolumeRequest {
    let context: HashMap<String, String> = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("csi.storage.k8s.io/pod.name", "p"),
        ("csi.storage.k8s.io/pod.namespace", "ns"),
        ("csi.storage.k8s.io/pod.uid", UID),
        ("csi.storage.k8s.io/serviceAccount.name", "default"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    NodePublishVolumeRequest {
        volume_id: "csi-1".into(),
        staging_target_path: String::new(),
        target_path: target.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: String::new(),
                mount_flags: vec![],
            })),
        }),
        readonly: true,
        volume_context: context,
    }
}

fn is_mounted(path: &Path) -> bool {
    vexa_csi::mount::is_mount_point(path).unwrap_or(false)
}

#[tokio::test]
async fn the_kubelet_learns_the_driver_and_its_node() {
    let driver = Driver::start().await;
    let channel = grpc::connect(&driver.config.registration_socket())
        .await
        .unwrap();
    let info: PluginInfo = grpc::call(
        channel,
        service::REGISTRATION,
        service::GET_INFO,
        InfoRequest {},
    )
    .await
    .unwrap();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, "csi.vexa.ai");
    assert_eq!(
        info.endpoint,
        driver.config.csi_socket().display().to_string()
    );
    assert_eq!(info.supported_versions, ["1.0.0"]);

    let plugin: GetPluginInfoResponse = driver
        .csi(
            service::IDENTITY,
            service::GET_PLUGIN_INFO,
            GetPluginInfoRequest {},
        )
        .await
        .unwrap();
    assert_eq!(plugin.name, "csi.vexa.ai");
    let probe: ProbeResponse = driver
        .csi(service::IDENTITY, service::PROBE, ProbeRequest {})
        .await
        .unwrap();
    assert_eq!(probe.ready.map(|r| r.value), Some(true));
    let node: NodeGetInfoResponse = driver
        .csi(service::NODE, service::NODE_GET_INFO, NodeGetInfoRequest {})
        .await
        .unwrap();
    assert_eq!(node.node_id, "node-a");
    let unknown: Result<NodeGetInfoResponse, _> = driver
        .csi(service::NODE, "NodeStageVolume", NodeGetInfoRequest {})
        .await;
    assert_eq!(unknown.unwrap_err().code(), Code::Unimplemented);

    use std::os::unix::fs::PermissionsExt;
    for socket in [
        driver.config.csi_socket(),
        driver.config.registration_socket(),
    ] {
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is for root only", socket.display());
    }
    let dir_mode = std::fs::metadata(driver.config.csi_socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    driver.stop().await;
}

#[tokio::test]
async fn a_publish_shows_the_folder_read_only_and_unpublish_removes_it_both_idempotent() {
    let driver = Driver::start().await;
    // The SPIRE agent's socket, in the source folder: the worker must be able to connect
    // through the read-only mount.
    let socket = driver.config.workload_api_dir.join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let target = driver.volume_dir("spire");

    driver.publish(inline_request(&target)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("marker")).unwrap(),
        "from the node"
    );
    let write = std::fs::write(target.join("planted"), "x").unwrap_err();
    assert_eq!(
        write.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error()),
        "{write}"
    );
    assert!(!driver.config.workload_api_dir.join("planted").exists());
    // Through /proc/self/fd: the pod folder's path is longer than a socket address may be.
    let folder = std::fs::File::open(&target).unwrap();
    let short = format!(
        "/proc/self/fd/{}/api.sock",
        std::os::fd::AsRawFd::as_raw_fd(&folder)
    );
    std::os::unix::net::UnixStream::connect(short).expect("the socket is reachable read-only");
    drop(listener);

    // The kubelet may publish again (after its own restart): same answer, one mount.
    driver.publish(inline_request(&target)).await.unwrap();
    assert!(is_mounted(&target));

    // Still in use (a file open in it): unpublish detaches it all the same.
    driver.unpublish(&target).await.unwrap();
    drop(folder);
    assert!(!target.exists(), "the target folder is removed");
    assert!(
        driver.config.workload_api_dir.join("marker").exists(),
        "the source is untouched"
    );
    driver.unpublish(&target).await.unwrap();
    driver.stop().await;
}

#[tokio::test]
async fn what_a_pod_or_a_caller_may_not_ask_for_is_refused_and_nothing_is_mounted() {
    let driver = Driver::start().await;
    let target = driver.volume_dir("spire");
    let with = |edit: &dyn Fn(&mut NodePublishVolumeRequest)| {
        let mut request = inline_request(&target);
        edit(&mut request);
        request
    };
    let etc = driver
        .pods
        .join(UID)
        .join("volumes/kubernetes.io~csi/../../../../etc/mount");
    let cases: Vec<(&str, NodePublishVolumeRequest, Code)> = vec![
        (
            "a path in volumeAttributes",
            with(&|r| {
                r.volume_context
                    .insert("path".into(), "../../../../etc".into());
            }),
            Code::InvalidArgument,
        ),
        (
            "a source in volumeAttributes",
            with(&|r| {
                r.volume_context.insert("source".into(), "/".into());
            }),
            Code::InvalidArgument,
        ),
        (
            "not ephemeral (a PersistentVolume)",
            with(&|r| {
                r.volume_context.remove("csi.storage.k8s.io/ephemeral");
            }),
            Code::InvalidArgument,
        ),
        (
            "writable",
            with(&|r| r.readonly = false),
            Code::InvalidArgument,
        ),
        (
            "a block device",
            with(&|r| {
                r.volume_capability = Some(VolumeCapability {
                    access_type: Some(AccessType::Block(BlockVolume {})),
                });
            }),
            Code::InvalidArgument,
        ),
        (
            "mount flags",
            with(&|r| {
                r.volume_capability = Some(VolumeCapability {
                    access_type: Some(AccessType::Mount(MountVolume {
                        fs_type: String::new(),
                        mount_flags: vec!["rw".into()],
                    })),
                });
            }),
            Code::InvalidArgument,
        ),
        (
            "another pod's folder",
            with(&|r| {
                r.volume_context
                    .insert("csi.storage.k8s.io/pod.uid".into(), "0000".into());
            }),
            Code::InvalidArgument,
        ),
        (
            "a target outside the pods folder",
            with(&|r| r.target_path = "/etc".into()),
            Code::InvalidArgument,
        ),
        (
            "a target with ..",
            with(&|r| r.target_path = etc.display().to_string()),
            Code::InvalidArgument,
        ),
    ];
    for (what, request, code) in cases {
        let status = driver.publish(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(!is_mounted(&target), "{what}: nothing mounted");
    }
    let status = driver
        .publish(with(&|r| {
            r.volume_context.insert("path".into(), "/etc".into());
        }))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("takes no volumeAttributes"),
        "{}",
        status.message()
    );
    assert!(!Path::new("/etc/mount").exists());

    let status = driver.unpublish(Path::new("/proc")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    driver.stop().await;
}

#[tokio::test]
async fn a_missing_workload_api_folder_is_named() {
    let driver = Driver::start().await;
    std::fs::remove_file(driver.config.workload_api_dir.join("marker")).unwrap();
    std::fs::remove_dir(&driver.config.workload_api_dir).unwrap();
    let target = driver.volume_dir("spire");
    let status = driver.publish(inline_request(&target)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is the SPIRE agent running?"),
        "{}",
        status.message()
    );
    driver.stop().await;
}
