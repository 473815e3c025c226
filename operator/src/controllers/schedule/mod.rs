//! The Schedule controller, being built: so far only its pure plan (which nominal times are
//! due, which are skipped and why, when the next one is, and the Dispatch name of each).
//! Nothing reconciles Schedules yet; observe/decide/apply come next.

pub mod plan;
