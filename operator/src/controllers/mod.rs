//! One folder per kind the operator reconciles.

pub mod card;
pub mod dispatch;
pub mod identity;
pub mod schedule;
pub mod subjects;
pub mod tool;
pub mod transcript;
pub mod workspace;
