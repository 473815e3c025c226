//! The three gRPC services: the kubelet's plugin registration, CSI Identity and CSI Node.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::body::Body;
use tonic::codegen::http;

use crate::grpc::{BoxFuture, Methods, unary};
use crate::proto::{self, service};
use crate::publish::Publisher;

/// The driver's name, as pods and the CSIDriver object spell it.
pub const DRIVER_NAME: &str = vexa_core::pod::layout::WORKLOAD_API_CSI_DRIVER;
/// The CSI versions this driver speaks (what the kubelet asks for in registration).
pub const CSI_VERSIONS: &[&str] = &["1.0.0"];

/// `pluginregistration.Registration`: tells the kubelet where the CSI socket is.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The CSI socket, as the kubelet (on the same node) dials it.
    pub endpoint: PathBuf,
}

impl Methods for Registration {
    const SERVICE: &'static str = service::REGISTRATION;

    fn call(&self, method: &str, request: http::Request<Body>) -> Option<BoxFuture> {
        let endpoint = self.endpoint.display().to_string();
        Some(match method {
            service::GET_INFO => unary(request, move |_: proto::InfoRequest| async move {
                Ok(proto::PluginInfo {
                    r#type: "CSIPlugin".into(),
                    name: DRIVER_NAME.into(),
                    endpoint,
                    supported_versions: CSI_VERSIONS.iter().map(|v| (*v).into()).collect(),
                })
            }),
            service::NOTIFY_REGISTRATION_STATUS => {
                unary(request, |status: proto::RegistrationStatus| async move {
                    if status.plugin_registered {
                        tracing::info!("the kubelet registered the driver");
                    } else {
                        tracing::error!(error = %status.error, "the kubelet refused the driver's registration");
                    }
                    Ok(proto::RegistrationStatusResponse {})
                })
            }
            _ => return None,
        })
    }
}

/// `csi.v1.Identity`.
#[derive(Debug, Clone)]
pub struct Identity;

impl Methods for Identity {
    const SERVICE: &'static str = service::IDENTITY;

    fn call(&self, method: &str, request: http::Request<Body>) -> Option<BoxFuture> {
        Some(match method {
            service::GET_PLUGIN_INFO => unary(request, |_: proto::GetPluginInfoRequest| async {
                Ok(proto::GetPluginInfoResponse {
                    name: DRIVER_NAME.into(),
                    vendor_version: env!("CARGO_PKG_VERSION").into(),
                })
            }),
            service::GET_PLUGIN_CAPABILITIES => {
                unary(request, |_: proto::GetPluginCapabilitiesRequest| async {
                    Ok(proto::GetPluginCapabilitiesResponse {})
                })
            }
            service::PROBE => unary(request, |_: proto::ProbeRequest| async {
                Ok(proto::ProbeResponse {
                    ready: Some(proto::BoolValue { value: true }),
                })
            }),
            _ => return None,
        })
    }
}

/// `csi.v1.Node`.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node's name (its CSI node id).
    pub node_id: String,
    /// Does the mounting.
    pub publisher: Arc<Publisher>,
}

impl Methods for Node {
    const SERVICE: &'static str = service::NODE;

    fn call(&self, method: &str, request: http::Request<Body>) -> Option<BoxFuture> {
        let publisher = self.publisher.clone();
        let node_id = self.node_id.clone();
        Some(match method {
            service::NODE_GET_INFO => {
                unary(request, move |_: proto::NodeGetInfoRequest| async move {
                    Ok(proto::NodeGetInfoResponse { node_id })
                })
            }
            service::NODE_GET_CAPABILITIES => {
                unary(request, |_: proto::NodeGetCapabilitiesRequest| async {
                    Ok(proto::NodeGetCapabilitiesResponse {})
                })
            }
            service::NODE_PUBLISH_VOLUME => unary(
                request,
                move |r: proto::NodePublishVolumeRequest| async move {
                    // Mount system calls block: they run off the runtime's threads.
                    let (r, result) = blocking(move || {
                        let result = publisher.publish(&r);
                        (r, result)
                    })
                    .await?;
                    result.inspect_err(|status| {
                    tracing::warn!(volume = %r.volume_id, target = %r.target_path, error = %status.message(), "publish refused");
                })?;
                    Ok(proto::NodePublishVolumeResponse {})
                },
            ),
            service::NODE_UNPUBLISH_VOLUME => unary(
                request,
                move |r: proto::NodeUnpublishVolumeRequest| async move {
                    let (r, result) = blocking(move || {
                        let result = publisher.unpublish(&r);
                        (r, result)
                    })
                    .await?;
                    result.inspect_err(|status| {
                    tracing::warn!(volume = %r.volume_id, target = %r.target_path, error = %status.message(), "unpublish failed");
                })?;
                    Ok(proto::NodeUnpublishVolumeResponse {})
                },
            ),
            _ => return None,
        })
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("mount task failed: {e}")))
}
