//! The report of a workspace's preparation: what the prepare Job's container
//! (`vexa-workspace-init`) leaves as its termination message, and the operator reads into the
//! Workspace's status. One type on both sides, so the two cannot drift.

use serde::{Deserialize, Serialize};

use crate::termination::MAX_BYTES as TERMINATION_MESSAGE_MAX;

/// How the preparation of a workspace's folder ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "outcome"
)]
pub enum PrepareReport {
    /// The folder holds a git repository on a commit.
    Ready {
        /// The commit the workspace's branch points at.
        head_commit: String,
        /// Whether this preparation created the repository (false: an existing one was adopted).
        created: bool,
        /// How many seed files were written.
        seeded: usize,
    },
    /// The folder could not be prepared; a person must fix something.
    Failed {
        /// A short CamelCase reason (`UnsafePath`, `BadSeed`, `Git`, `Io`).
        reason: String,
        /// What went wrong and what to do, in the user's terms.
        message: String,
    },
}

impl PrepareReport {
    /// The report as the termination message: JSON of at most 4096 bytes
    /// (a long failure message is shortened, never the JSON cut).
    pub fn to_message(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= TERMINATION_MESSAGE_MAX {
            return text;
        }
        match self {
            PrepareReport::Failed { reason, message } => {
                let mut keep = TERMINATION_MESSAGE_MAX / 2;
                while !message.is_char_boundary(keep) {
                    keep -= 1;
                }
                PrepareReport::Failed {
                    reason: reason.clone(),
                    message: format!("{}…", &message[..keep]),
                }
                .to_message()
            }
            PrepareReport::Ready { .. } => text,
        }
    }

    /// Reads a termination message; `None` when it is not a report (a crash, an old image).
    pub fn from_message(text: &str) -> Option<Self> {
        serde_json::from_str(text.trim()).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_trip_through_a_termination_message() {
        let ready = PrepareReport::Ready {
            head_commit: "a".repeat(40),
            created: true,
            seeded: 3,
        };
        let text = ready.to_message();
        assert!(text.contains("\"outcome\":\"ready\""), "{text}");
        assert!(text.contains("\"headCommit\""), "{text}");
        assert_eq!(PrepareReport::from_message(&text), Some(ready));
        assert_eq!(PrepareReport::from_message("panicked at main.rs"), None);
    }

    #[test]
    fn a_long_failure_stays_valid_json_within_the_limit() {
        let failed = PrepareReport::Failed {
            reason: "Io".into(),
            message: "é".repeat(10_000),
        };
        let text = failed.to_message();
        assert!(text.len() <= TERMINATION_MESSAGE_MAX, "{}", text.len());
        let Some(PrepareReport::Failed { reason, message }) = PrepareReport::from_message(&text)
        else {
            panic!("{text}")
        };
        assert_eq!(reason, "Io");
        assert!(message.ends_with('…'));
    }
}
