//! A run's lifecycle: its phases, which of them are final, and why a run ends (SPEC §3).
//!
//! The `///` docs of these types are also the descriptions in the Dispatch CRD (vexa-crds
//! re-exports them), so they are written for `kubectl explain`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a run is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DispatchPhase {
    /// Accepted by the API server, not yet looked at by the operator.
    Pending,
    /// Refused: see the `Authorized` or `Valid` condition. No Job is created.
    Refused,
    /// Waiting: a workspace it writes is held by another dispatch.
    Queued,
    /// The Job exists; the pod is being scheduled or its containers are starting.
    Starting,
    /// The agent worker runs.
    Running,
    /// A stop was requested or the deadline passed; the pod is terminating.
    Stopping,
    /// The run ended; see `stopReason`.
    Stopped,
    /// The run ended and its Job and pod have been cleaned up.
    Destroyed,
}

impl DispatchPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [DispatchPhase; 8] = [
        Self::Pending,
        Self::Refused,
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Destroyed,
    ];

    /// The phase as the CRD spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Refused => "refused",
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Destroyed => "destroyed",
        }
    }

    /// Whether the run is over for good: it holds no workspace and writes nothing more to its
    /// stream (stopped, destroyed, or refused before it began).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Destroyed | Self::Refused)
    }
}

/// Why a run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The worker finished its work and exited 0.
    Completed,
    /// A stop was requested.
    Stopped,
    /// No new turn arrived within the idle timeout.
    IdleTimeout,
    /// The worker exited with an error (see `exitCode`).
    Failed,
    /// The agent container ran out of memory.
    Oom,
    /// The pod could not start (image or container creation errors).
    StartFailed,
    /// The run reached its maximum lifetime.
    MaxLifetime,
}

impl StopReason {
    /// Every stop reason, in the order SPEC §3 lists them.
    pub const ALL: [StopReason; 7] = [
        Self::Completed,
        Self::Stopped,
        Self::IdleTimeout,
        Self::Failed,
        Self::Oom,
        Self::StartFailed,
        Self::MaxLifetime,
    ];

    /// The reason as the CRD and the termination message spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::IdleTimeout => "idle_timeout",
            Self::Failed => "failed",
            Self::Oom => "oom",
            Self::StartFailed => "start_failed",
            Self::MaxLifetime => "max_lifetime",
        }
    }

    /// The reason spelled `word`, if it is one.
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }

    /// Whether the run ended the way runs normally end (done, idle, or stopped on request),
    /// as opposed to a failure a person should look at.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Completed | Self::IdleTimeout | Self::Stopped)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `as_str` is what serde writes, so code that needs the word never re-spells it.
    #[test]
    fn the_words_are_the_serialised_forms() {
        for p in DispatchPhase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for r in StopReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(StopReason::from_word(r.as_str()), Some(r));
        }
        assert_eq!(StopReason::from_word("terminated"), None);
    }

    #[test]
    fn the_spec_names_the_stop_reasons() {
        let words: Vec<&str> = StopReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            words,
            [
                "completed",
                "stopped",
                "idle_timeout",
                "failed",
                "oom",
                "start_failed",
                "max_lifetime"
            ]
        );
    }

    #[test]
    fn terminal_phases() {
        let terminal: Vec<DispatchPhase> = DispatchPhase::ALL
            .into_iter()
            .filter(|p| p.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                DispatchPhase::Refused,
                DispatchPhase::Stopped,
                DispatchPhase::Destroyed
            ]
        );
    }
}
