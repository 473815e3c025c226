//! `vexa-csi-node`: a CSI node driver that shows the node's SPIRE Workload API socket folder to
//! a dispatch pod's trusted container, read-only, as an inline ephemeral volume
//! (`csi: {driver: csi.vexa.ai, readOnly: true}`).
//!
//! Why a CSI driver: tenant namespaces enforce Pod Security `restricted`, which refuses
//! `hostPath` volumes; inline `csi` volumes are allowed, and the driver, not the pod, decides
//! what is mounted: always the one folder configured at start.
//!
//! - [`proto`]: the messages (hand-written prost) and service names.
//! - [`grpc`]: unary gRPC routing without generated code; a Unix-socket client.
//! - [`services`]: plugin registration, CSI Identity, CSI Node.
//! - [`publish`]: what a publish request may ask for, and the mounts it makes.
//! - [`target`]: which folders may be mounted onto.
//! - [`mount`]: the system calls.
//! - [`serve`]: the sockets.
//! - [`authority`]: the front of the registration socket (the kubelet's `:authority` there is
//!   a socket path, which `h2` refuses).

pub mod authority;
pub mod grpc;
pub mod mount;
pub mod proto;
pub mod publish;
pub mod serve;
pub mod services;
pub mod target;
