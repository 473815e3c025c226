//! The part of an AgentRunner the worker needs (`VEXA_RUNNER_SPEC`): its command line
//! template, how to parse its output, where its sessions live and its model.
//!
//! The argv items stay text here; the worker parses them into templates (its `argv` module),
//! where an unknown placeholder is an error naming `VEXA_RUNNER_SPEC`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Output formats the agent worker can parse.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StreamFormat {
    /// Claude Code's `--output-format stream-json` (with `--include-partial-messages`).
    ClaudeStreamJson,
    /// One unit event per line, as JSON (for runners that emit unit events themselves).
    UnitJsonl,
}

// The fields of the two structs below are in alphabetical order on purpose: it is the order of
// their JSON keys, kept from when the operator wrote this variable with `json!` (whose maps are
// sorted), so the Jobs it builds did not change when the contract became typed.

/// The runner as the worker receives it (`VEXA_RUNNER_SPEC`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerSpec {
    /// The argv template, one item per argument.
    pub argv: Vec<String>,
    /// The model, if the runner sets one (written as `null` when not).
    #[serde(default)]
    pub model: Option<String>,
    /// Groups appended when their placeholder has a value.
    #[serde(default)]
    pub optional_argv: Vec<OptionalArgs>,
    /// Folder of the session files, relative to the rw workspace.
    pub session_path: String,
    /// How to parse the CLI's output.
    pub stream_format: StreamFormat,
}

/// Arguments appended only when a placeholder has a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OptionalArgs {
    /// The arguments to append, with placeholders.
    pub argv: Vec<String>,
    /// The placeholder that must have a value (without `${}`), for example `sessionId`.
    pub when: String,
}
