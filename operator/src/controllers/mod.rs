//! One folder per kind the operator reconciles.

pub mod dispatch;
pub mod workspace;
