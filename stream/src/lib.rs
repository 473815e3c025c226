//! The unit streams of SPEC §4 on Redis.
//!
//! Every dispatch has two streams: `unit:<id>:out` (one entry per unit event, field `event` =
//! JSON) and `unit:<id>:in` (one entry per turn, field `turn` = JSON). Streams, not pub/sub: a
//! reader that reconnects with the last id it saw gets an exact, duplicate-free replay.
//!
//! - `events`: the unit events themselves (the JSON every client reads).
//! - `publish`: the worker's side of `out` (ordered, exactly-once appends that survive a Redis
//!   restart) and of `in` (reading the next turn).
//! - `acl`: Redis per dispatch (the ACL user of a dispatch's worker, the append function).
//! - `api`: the streams API people use instead of Redis (paths, log lines, turn answers).
//! - `follow`: a client's side: follow `out` from an id, resuming after disconnects; send turns.

/// Field of an `out` entry holding the unit event JSON.
pub const EVENT_FIELD: &str = "event";
/// Field of an `in` entry holding the turn JSON.
pub const TURN_FIELD: &str = "turn";

pub mod acl;
pub mod api;
pub mod events;
pub mod follow;
pub mod publish;
mod wire;

#[cfg(feature = "testing")]
pub mod testing;

pub use events::{Event, TurnId, UnitEvent};
