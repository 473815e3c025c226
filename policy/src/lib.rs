//! Pure policy shared by the operator and the gateway, so the two can never disagree: how a
//! dispatch is named, which mode each workspace gets, whether a run is trusted, and whether a
//! dispatch may run at all. No I/O and no Kubernetes client here.

pub mod names;
pub mod prepare;
pub mod trust;

pub use names::*;
pub use prepare::PrepareReport;
pub use trust::*;
