//! The streams API of the in-process operator, registered with the cluster as people reach
//! it: an `APIService` `v1.streams.vexa.ai` whose Service (no selector) has an EndpointSlice
//! pointing at this machine's node address, where the eval's operator listens. The serving
//! certificate is made here with openssl and its CA is the APIService's caBundle. The
//! APIService is removed again when this is dropped: one left behind with nobody serving it
//! breaks discovery, and with it namespace deletion, for the whole cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::operator::Operator;
use crate::wait_for;

/// The APIService's name.
pub const API_SERVICE: &str = "v1.streams.vexa.ai";
/// The Service (in the eval's namespace) the APIService points at.
const SERVICE: &str = "vexa-streams";
/// The port the in-process operator serves the streams API on, on the node's address.
pub const PORT: u16 = 18443;

/// A registered streams API; dropping it removes the APIService.
#[derive(Debug)]
pub struct StreamsApi {
    dir: PathBuf,
    addr: String,
}

impl StreamsApi {
    /// Makes a serving certificate and registers `v1.streams.vexa.ai` for a Service in `ns`
    /// that leads to this machine. Start the operator with [`StreamsApi::flags`], then wait
    /// with [`StreamsApi::available`].
    pub async fn register(client: &Client, ns: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vexa-eval-streams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = format!("{SERVICE}.{ns}.svc");
        certificates(&dir, &host);
        let node_ip = node_ip(client).await;
        let apis = Api::<APIService>::all(client.clone());
        // One left by an eval that crashed would point at a namespace that is gone.
        let _ = apis.delete(API_SERVICE, &DeleteParams::default()).await;
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": SERVICE},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": PORT, "protocol": "TCP"}]},
        }))
        .unwrap();
        Api::<Service>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &service)
            .await
            .expect("create the streams API's Service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": SERVICE, "labels": {"kubernetes.io/service-name": SERVICE}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node_ip], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": PORT, "protocol": "TCP"}],
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &slice)
            .await
            .expect("create the streams API's EndpointSlice");
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        let api_service: APIService = serde_json::from_value(json!({
            "metadata": {"name": API_SERVICE, "labels": {"vexa.ai/eval": "true"}},
            "spec": {
                "group": "streams.vexa.ai", "version": "v1",
                "service": {"namespace": ns, "name": SERVICE, "port": 443},
                "caBundle": k8s_openapi::ByteString(ca),
                "groupPriorityMinimum": 1000, "versionPriority": 15,
            },
        }))
        .unwrap();
        apis.create(&PostParams::default(), &api_service)
            .await
            .expect("create the APIService v1.streams.vexa.ai");
        Self {
            dir,
            addr: format!("{node_ip}:{PORT}"),
        }
    }

    /// The operator's flags that serve the streams API where the APIService expects it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            format!("--streams-addr={}", self.addr),
            format!("--streams-tls-cert={}", self.dir.join("tls.crt").display()),
            format!("--streams-tls-key={}", self.dir.join("tls.key").display()),
        ]
    }

    /// Starts the in-process operator with `flags` and this streams API's, and waits until it
    /// is ready and the API server reaches its streams API.
    pub async fn operator(&self, client: &Client, flags: &[String]) -> Operator {
        let mut flags = flags.to_vec();
        flags.extend(self.flags());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let operator = Operator::start(&flags);
        operator.ready().await;
        self.available(client).await;
        operator
    }

    /// Waits until the API server reports the streams API available (it reached the operator).
    pub async fn available(&self, client: &Client) {
        let apis = Api::<APIService>::all(client.clone());
        wait_for(
            "the APIService v1.streams.vexa.ai to be Available",
            Duration::from_secs(60),
            || async {
                let s = apis.get(API_SERVICE).await.ok()?;
                s.status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for StreamsApi {
    fn drop(&mut self) {
        // Drop cannot await: kubectl (on PATH via `hack/cluster env`) removes it, and waits.
        let _ = Command::new("kubectl")
            .args(["delete", "apiservice", API_SERVICE, "--ignore-not-found"])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node's InternalIP: where the API server reaches this machine.
async fn node_ip(client: &Client) -> String {
    let nodes = Api::<Node>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    nodes
        .items
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .expect("a node with an InternalIP")
}

/// A CA and a serving certificate for `host` under `dir` (`ca.crt`, `tls.crt`, `tls.key`).
fn certificates(dir: &Path, host: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (hack/cluster installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=vexa-eval-streams-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={host}"),
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=DNS:{host}\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "tls.crt",
    ]);
}
