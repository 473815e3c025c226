//! Pod identity, how the SVID's socket reaches the pod: our CSI driver `csi.vexa.ai`
//! (`vexa-csi-node`, run by `hack/cluster`) against the real kubelet. A tenant namespace
//! enforces Pod Security `restricted`, which refuses a `hostPath` volume for the SPIRE agent's
//! socket folder; an inline `csi` volume of our driver is admitted, and shows that folder,
//! read-only, to the one container that mounts it (the worker), never to the other (the agent).
//! A pod whose volume tries to steer the driver (`volumeAttributes` with a path) never starts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use vexa_core::pod::layout::{
    AGENT_CONTAINER, WORKER_CONTAINER, WORKLOAD_API_CSI_DRIVER, WORKLOAD_API_DIR,
};
use vexa_evals::fixtures::fake_worker_image;
use vexa_evals::{TestNamespace, client, cluster_env, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A file the eval puts into the node's Workload API folder (and removes again).
struct Marker {
    path: PathBuf,
    name: String,
    content: String,
}

impl Marker {
    fn new() -> Self {
        let dir = PathBuf::from(cluster_env("VEXA_SPIRE_AGENT_SOCKET_DIR"));
        let name = format!(
            "vexa-eval-csi-{:x}",
            std::process::id()
                ^ std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
        );
        let content = format!("seen through csi.vexa.ai by {name}");
        let path = dir.join(&name);
        std::fs::write(&path, &content)
            .unwrap_or_else(|e| panic!("writing {}: {e} (run as root)", path.display()));
        Self {
            path,
            name,
            content,
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn restricted_container(name: &str, image: &str, script: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// A two-container pod like a dispatch's: the worker mounts `volume`, the agent does not.
fn pod(name: &str, volume: Value, worker_script: &str, agent_script: &str) -> Pod {
    let image = fake_worker_image();
    let mut worker = restricted_container(WORKER_CONTAINER, image, worker_script);
    worker["volumeMounts"] =
        json!([{"name": "workload-api", "mountPath": WORKLOAD_API_DIR, "readOnly": true}]);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [worker, restricted_container(AGENT_CONTAINER, image, agent_script)],
            "volumes": [volume],
        }
    }))
    .unwrap()
}

fn csi_volume(attributes: Option<Value>) -> Value {
    let mut csi = json!({"driver": WORKLOAD_API_CSI_DRIVER, "readOnly": true});
    if let Some(a) = attributes {
        csi["volumeAttributes"] = a;
    }
    json!({"name": "workload-api", "csi": csi})
}

async fn logs(pods: &Api<Pod>, pod: &str, container: &str) -> String {
    pods.logs(
        pod,
        &LogParams {
            container: Some(container.into()),
            ..LogParams::default()
        },
    )
    .await
    .unwrap()
}

/// Whether any mount of this host (the kubelet's mount namespace) is in the pod's folder.
fn mounted_for(uid: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(uid))
}

#[tokio::test]
#[ignore = "needs the hack/ cluster (hack/cluster up runs vexa-csi-node)"]
async fn the_worker_alone_sees_the_workload_api_folder_read_only_in_a_restricted_namespace() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "csi").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let marker = Marker::new();
    let socket_on_node = marker.path.with_file_name("api.sock").exists();

    // The premise: the namespace refuses the hostPath a pod would otherwise use.
    let host_path = json!({"name": "workload-api", "hostPath": {"path": marker.path.parent().unwrap(), "type": "Directory"}});
    let refused = pods
        .create(
            &PostParams::default(),
            &pod("hostpath", host_path, "true", "true"),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("restricted"),
        "hostPath must be refused by Pod Security: {refused}"
    );

    let dir = WORKLOAD_API_DIR;
    let worker = format!(
        "echo marker=$(cat {dir}/{m}); \
         if [ -S {dir}/api.sock ]; then echo socket=yes; else echo socket=no; fi; \
         if touch {dir}/planted 2>/dev/null; then echo write=allowed; else echo write=refused; fi",
        m = marker.name
    );
    let agent = format!(
        "if [ -e {dir}/{m} ] || [ -e {dir} ]; then echo agent=sees; else echo agent=blind; fi",
        m = marker.name
    );
    let started = Instant::now();
    let created = pods
        .create(
            &PostParams::default(),
            &pod("identity", csi_volume(None), &worker, &agent),
        )
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let done = wait_for("the pod to finish", TIMEOUT, || async {
        let p = pods.get("identity").await.ok()?;
        let phase = p.status.as_ref()?.phase.clone()?;
        (phase == "Succeeded" || phase == "Failed").then_some(p)
    })
    .await;
    let running_at = done
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == WORKER_CONTAINER))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.started_at.clone());
    println!(
        "pod created -> finished: {:.1}s; worker started at {:?} (created {:?})",
        started.elapsed().as_secs_f64(),
        running_at.map(|t| t.0),
        created.metadata.creation_timestamp.map(|t| t.0)
    );

    let worker_out = logs(&pods, "identity", WORKER_CONTAINER).await;
    let agent_out = logs(&pods, "identity", AGENT_CONTAINER).await;
    println!("worker: {worker_out}agent: {agent_out}");
    assert!(
        worker_out.contains(&format!("marker={}", marker.content)),
        "the worker reads the node's folder: {worker_out}"
    );
    assert!(
        worker_out.contains("write=refused"),
        "the folder is read-only: {worker_out}"
    );
    assert!(!marker.path.with_file_name("planted").exists());
    if socket_on_node {
        assert!(
            worker_out.contains("socket=yes"),
            "the SPIRE agent's socket is there: {worker_out}"
        );
    } else {
        println!("no SPIRE agent socket on this node: only the marker was checked");
    }
    assert!(
        agent_out.contains("agent=blind"),
        "the agent container must not see it: {agent_out}"
    );

    // Unpublish: the kubelet tears the volume down once the pod has finished (the driver
    // unmounts and removes the folder), so nothing of the pod stays mounted on the node.
    wait_for("the pod's volume to be unmounted", TIMEOUT, || async {
        (!mounted_for(&uid)).then_some(())
    })
    .await;
    pods.delete("identity", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the hack/ cluster (hack/cluster up runs vexa-csi-node)"]
async fn a_volume_that_tries_to_steer_the_driver_never_mounts() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "csi-steer").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let attributes = json!({"path": "../../../../../etc", "source": "/"});
    let created = pods
        .create(
            &PostParams::default(),
            &pod(
                "steer",
                csi_volume(Some(attributes)),
                "cat /run/spire/agent/passwd",
                "true",
            ),
        )
        .await
        .expect("Pod Security admits a csi volume; the driver is what refuses it");
    let uid = created.metadata.uid.unwrap();
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let message = wait_for(
        "a FailedMount event naming the refusal",
        TIMEOUT,
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=steer"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedMount"))
                .filter_map(|e| e.message)
                .find(|m| m.contains("takes no volumeAttributes"))
        },
    )
    .await;
    println!("event: {message}");
    let pod = pods.get("steer").await.unwrap();
    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
    assert_eq!(phase, "Pending", "the pod never starts");
    assert!(!mounted_for(&uid), "nothing was mounted for it");
}
