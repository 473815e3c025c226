//! The messages this driver sends and receives, written by hand with `prost`: only the fields
//! it uses, with the field numbers of the public protos (CSI spec v1.9.0 `csi.v1`, and the
//! kubelet's plugin registration API `pluginregistration` v1). Fields a peer sends that are not
//! declared here are skipped by the decoder (never acted on), e.g. a request's `secrets`.

use std::collections::HashMap;

/// gRPC service names (`package.Service`) and their methods, spelled once for the server's
/// routing and the client's paths.
pub mod service {
    /// The kubelet's plugin registration service, served on the registration socket.
    pub const REGISTRATION: &str = "pluginregistration.Registration";
    /// CSI Identity, served on the CSI socket.
    pub const IDENTITY: &str = "csi.v1.Identity";
    /// CSI Node, served on the CSI socket.
    pub const NODE: &str = "csi.v1.Node";

    /// `Registration/GetInfo`.
    pub const GET_INFO: &str = "GetInfo";
    /// `Registration/NotifyRegistrationStatus`.
    pub const NOTIFY_REGISTRATION_STATUS: &str = "NotifyRegistrationStatus";
    /// `Identity/GetPluginInfo`.
    pub const GET_PLUGIN_INFO: &str = "GetPluginInfo";
    /// `Identity/GetPluginCapabilities`.
    pub const GET_PLUGIN_CAPABILITIES: &str = "GetPluginCapabilities";
    /// `Identity/Probe`.
    pub const PROBE: &str = "Probe";
    /// `Node/NodeGetInfo`.
    pub const NODE_GET_INFO: &str = "NodeGetInfo";
    /// `Node/NodeGetCapabilities`.
    pub const NODE_GET_CAPABILITIES: &str = "NodeGetCapabilities";
    /// `Node/NodePublishVolume`.
    pub const NODE_PUBLISH_VOLUME: &str = "NodePublishVolume";
    /// `Node/NodeUnpublishVolume`.
    pub const NODE_UNPUBLISH_VOLUME: &str = "NodeUnpublishVolume";
}

// ---- pluginregistration (kubelet) ----

/// `InfoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InfoRequest {}

/// `PluginInfo`: what the kubelet learns from the registration socket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginInfo {
    /// `CSIPlugin` for a CSI driver.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// The driver's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The CSI socket the kubelet then dials.
    #[prost(string, tag = "3")]
    pub endpoint: String,
    /// CSI versions the driver speaks.
    #[prost(string, repeated, tag = "4")]
    pub supported_versions: Vec<String>,
}

/// `RegistrationStatus`: the kubelet's verdict on the registration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegistrationStatus {
    /// Whether the kubelet registered the driver.
    #[prost(bool, tag = "1")]
    pub plugin_registered: bool,
    /// Why not, when it did not.
    #[prost(string, tag = "2")]
    pub error: String,
}

/// `RegistrationStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegistrationStatusResponse {}

// ---- csi.v1 Identity ----

/// `GetPluginInfoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoRequest {}

/// `GetPluginInfoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoResponse {
    /// The driver's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The driver's version.
    #[prost(string, tag = "2")]
    pub vendor_version: String,
}

/// `GetPluginCapabilitiesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesRequest {}

/// `GetPluginCapabilitiesResponse`: no capabilities (no controller service, no topology).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesResponse {}

/// `ProbeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeRequest {}

/// `google.protobuf.BoolValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BoolValue {
    /// The value.
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// `ProbeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeResponse {
    /// Whether the driver is ready.
    #[prost(message, optional, tag = "1")]
    pub ready: Option<BoolValue>,
}

// ---- csi.v1 Node ----

/// `NodeGetInfoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoRequest {}

/// `NodeGetInfoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoResponse {
    /// The node's id (its Kubernetes name), shown in the node's CSINode object.
    #[prost(string, tag = "1")]
    pub node_id: String,
}

/// `NodeGetCapabilitiesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesRequest {}

/// `NodeGetCapabilitiesResponse`: none, so the kubelet never stages (only publishes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesResponse {}

/// `VolumeCapability.MountVolume`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountVolume {
    /// Filesystem type asked for (ignored: a bind mount has none).
    #[prost(string, tag = "1")]
    pub fs_type: String,
    /// Mount flags asked for (refused when any: the driver chooses the flags).
    #[prost(string, repeated, tag = "2")]
    pub mount_flags: Vec<String>,
}

/// `VolumeCapability.BlockVolume`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockVolume {}

/// `VolumeCapability.access_type`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AccessType {
    /// A raw block device (refused).
    #[prost(message, tag = "1")]
    Block(BlockVolume),
    /// A mounted filesystem.
    #[prost(message, tag = "2")]
    Mount(MountVolume),
}

/// `VolumeCapability`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeCapability {
    /// Block or mount.
    #[prost(oneof = "AccessType", tags = "1, 2")]
    pub access_type: Option<AccessType>,
}

/// `NodePublishVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePublishVolumeRequest {
    /// The volume's id (for an inline volume, one the kubelet made up).
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Set only by drivers that stage (this one does not).
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
    /// Where the kubelet wants the volume: a folder of the pod under the kubelet's root.
    #[prost(string, tag = "4")]
    pub target_path: String,
    /// How the volume is to be used.
    #[prost(message, optional, tag = "5")]
    pub volume_capability: Option<VolumeCapability>,
    /// The pod's `readOnly`.
    #[prost(bool, tag = "6")]
    pub readonly: bool,
    /// The pod's `volumeAttributes`, plus the kubelet's `csi.storage.k8s.io/*` keys.
    #[prost(map = "string, string", tag = "8")]
    pub volume_context: HashMap<String, String>,
}

/// `NodePublishVolumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePublishVolumeResponse {}

/// `NodeUnpublishVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeRequest {
    /// The volume's id.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// The folder to unmount and remove.
    #[prost(string, tag = "2")]
    pub target_path: String,
}

/// `NodeUnpublishVolumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeResponse {}
