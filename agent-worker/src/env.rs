//! The worker's environment. What the operator sets is the pod contract
//! ([`vexa_core::pod::PodContract`]), read and checked there, one definition for both sides;
//! on top of it the worker parses the runner's command line into templates, so an argv it could
//! not render fails at start. Every bad value is an [`EnvError`] that names its variable.

use crate::argv::{ArgTemplate, ArgValues, OptionalArgs, render};

pub use vexa_core::pod::{DEFAULT_IDLE_TIMEOUT, EnvError, PodContract};
use vexa_core::pod::{OptionalArgs as OptionalArgsText, RunnerSpec, var};

/// Everything the worker reads from its environment.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerEnv {
    /// The pod contract, as the operator wrote it.
    pub pod: PodContract,
    /// The runner's command line, parsed.
    pub command: CommandLine,
}

/// A runner's command line (`VEXA_RUNNER_SPEC`'s `argv` and `optionalArgv`), parsed into
/// templates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// The argv template.
    pub argv: Vec<ArgTemplate>,
    /// The groups appended when their placeholder has a value.
    pub optional_argv: Vec<OptionalArgs>,
}

impl CommandLine {
    /// Parses the runner's templates; an item the worker could not render is an error naming
    /// `VEXA_RUNNER_SPEC`.
    pub fn parse(spec: &RunnerSpec) -> Result<Self, EnvError> {
        Ok(Self {
            argv: templates("argv", &spec.argv)?,
            optional_argv: spec
                .optional_argv
                .iter()
                .map(optional_args)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The agent CLI's arguments for `values` (see [`render`]).
    pub fn render(&self, values: &ArgValues) -> Vec<String> {
        render(&self.argv, &self.optional_argv, values)
    }
}

impl WorkerEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        Self::new(PodContract::from_lookup(get)?)
    }

    /// Reads the variables from `(name, value)` pairs, such as a container's `env`.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, EnvError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self::new(PodContract::from_vars(vars)?)
    }

    /// Parses the runner's command line of `pod`.
    pub fn new(pod: PodContract) -> Result<Self, EnvError> {
        let command = CommandLine::parse(&pod.runner_spec)?;
        Ok(Self { pod, command })
    }
}

fn templates(field: &str, items: &[String]) -> Result<Vec<ArgTemplate>, EnvError> {
    items
        .iter()
        .map(|item| {
            ArgTemplate::parse(item)
                .map_err(|e| EnvError::new(var::RUNNER_SPEC, format!("{field}: {e}")))
        })
        .collect()
}

fn optional_args(group: &OptionalArgsText) -> Result<OptionalArgs, EnvError> {
    let when = group
        .when
        .parse()
        .map_err(|e| EnvError::new(var::RUNNER_SPEC, format!("optionalArgv.when: {e}")))?;
    Ok(OptionalArgs {
        when,
        argv: templates("optionalArgv.argv", &group.argv)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    use crate::argv::Placeholder;

    const SPEC: &str = r#"{"argv":["vexa-test-agent","-p","${prompt}"],"optionalArgv":[{"when":"sessionId","argv":["--resume","${sessionId}"]}],"streamFormat":"claude-stream-json","sessionPath":".claude/sessions","model":null}"#;

    fn vars(runner_spec: &str) -> HashMap<&'static str, String> {
        HashMap::from([
            ("VEXA_UNIT_ID", "team-a/d".to_owned()),
            ("VEXA_UNIT_TRIGGER", "message".to_owned()),
            ("VEXA_START", r#"{"entrypoint":{"inline":"hi"}}"#.to_owned()),
            (
                "VEXA_WORKSPACES",
                r#"[{"name":"notes","id":"ws-1","mode":"rw","path":"/workspaces/notes"}]"#
                    .to_owned(),
            ),
            ("VEXA_WORKSPACE_PATH", "/workspaces/notes".to_owned()),
            ("VEXA_OWNER", "alice".to_owned()),
            ("VEXA_LAUNCHER", "user:alice".to_owned()),
            ("VEXA_RUNNER", "test-agent".to_owned()),
            ("VEXA_RUNNER_SPEC", runner_spec.to_owned()),
            ("REDIS_URL", "redis://redis:6379".to_owned()),
        ])
    }

    fn parse(runner_spec: &str) -> Result<WorkerEnv, EnvError> {
        let vars = vars(runner_spec);
        WorkerEnv::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_runners_command_line_is_parsed() {
        let env = parse(SPEC).unwrap();
        assert_eq!(env.command.optional_argv[0].when, Placeholder::SessionId);
        assert_eq!(env.pod.owner, "alice");
        let values = ArgValues {
            prompt: "P".into(),
            session_id: Some("s".into()),
            ..ArgValues::default()
        };
        assert_eq!(
            env.command.render(&values),
            ["vexa-test-agent", "-p", "P", "--resume", "s"]
        );
    }

    #[rstest]
    #[case::unknown_placeholder(
        r#"{"argv":["x","${shell}"],"streamFormat":"unit-jsonl","sessionPath":"s"}"#,
        "argv: unknown placeholder ${shell}"
    )]
    #[case::unclosed(
        r#"{"argv":["x","${prompt"],"streamFormat":"unit-jsonl","sessionPath":"s"}"#,
        "unclosed placeholder"
    )]
    #[case::unknown_when(
        r#"{"argv":["x"],"optionalArgv":[{"when":"home","argv":["y"]}],"streamFormat":"unit-jsonl","sessionPath":"s"}"#,
        "optionalArgv.when: unknown placeholder ${home}"
    )]
    #[case::unknown_in_a_group(
        r#"{"argv":["x"],"optionalArgv":[{"when":"model","argv":["${home}"]}],"streamFormat":"unit-jsonl","sessionPath":"s"}"#,
        "optionalArgv.argv: unknown placeholder ${home}"
    )]
    fn a_command_line_the_worker_cannot_render_names_the_runner_spec(
        #[case] spec: &str,
        #[case] problem: &str,
    ) {
        let err = parse(spec).unwrap_err();
        assert_eq!(err.var, "VEXA_RUNNER_SPEC", "{err}");
        assert!(err.problem.contains(problem), "{err}");
    }

    /// The contract's own checks still come first and name their variable.
    #[test]
    fn the_contracts_errors_pass_through() {
        let mut vars = vars(SPEC);
        vars.insert("VEXA_UNIT_TRIGGER", "cron".into());
        let err = WorkerEnv::from_lookup(|k| vars.get(k).cloned()).unwrap_err();
        assert_eq!(err.var, "VEXA_UNIT_TRIGGER");
    }
}
