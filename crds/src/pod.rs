//! How the kinds' fields become the pod contract (`vexa_core::pod`): the same data without the
//! schema rules only the API server enforces. Plain field-by-field conversions, so that adding
//! a field to one side and not the other fails to compile here.

use vexa_core::context::{RunContext, SourceRef as PodSourceRef};
use vexa_core::pod::{OptionalArgs as PodOptionalArgs, RunnerSpec, Start as PodStart};

use crate::dispatch::{DispatchContext, SourceRef, Start};
use crate::runner::{AgentRunnerSpec, OptionalArgs};

impl From<&Start> for PodStart {
    /// The schema makes a start set exactly one of `entrypoint` and `session`. Should both be
    /// set the entrypoint is taken; should neither, the start is an empty entrypoint, which
    /// the worker refuses by name.
    fn from(start: &Start) -> Self {
        match (&start.entrypoint, &start.session) {
            (Some(e), _) => PodStart::Entrypoint {
                inline: e.inline.clone(),
                path: e.path.clone(),
            },
            (None, Some(s)) => PodStart::Session {
                reference: s.reference.clone(),
                prompt: s.prompt.clone(),
            },
            (None, None) => PodStart::Entrypoint {
                inline: None,
                path: None,
            },
        }
    }
}

impl From<&DispatchContext> for RunContext {
    fn from(c: &DispatchContext) -> Self {
        RunContext {
            kind: c.kind,
            meeting: c.meeting.clone(),
            source: c.source.as_ref().map(PodSourceRef::from),
            session: c.session.clone(),
        }
    }
}

impl From<&SourceRef> for PodSourceRef {
    fn from(s: &SourceRef) -> Self {
        PodSourceRef {
            uri: s.uri.clone(),
            etag: s.etag.clone(),
        }
    }
}

impl From<&AgentRunnerSpec> for RunnerSpec {
    /// What the worker needs of a runner; the image, env, credential and defaults shape the
    /// Job instead.
    fn from(r: &AgentRunnerSpec) -> Self {
        RunnerSpec {
            argv: r.argv.clone(),
            model: r.model.clone(),
            optional_argv: r.optional_argv.iter().map(PodOptionalArgs::from).collect(),
            session_path: r.session_path.clone(),
            stream_format: r.stream_format,
        }
    }
}

impl From<&OptionalArgs> for PodOptionalArgs {
    fn from(o: &OptionalArgs) -> Self {
        PodOptionalArgs {
            argv: o.argv.clone(),
            when: o.when.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dispatch::{Entrypoint, SessionStart};

    /// The pod's start is the Dispatch's, byte for byte.
    #[test]
    fn a_start_keeps_its_json() {
        for start in [
            Start {
                entrypoint: Some(Entrypoint {
                    inline: Some("hi".into()),
                    path: Some("p.md".into()),
                }),
                session: None,
            },
            Start {
                entrypoint: None,
                session: Some(SessionStart {
                    reference: "s/main.session".into(),
                    prompt: None,
                }),
            },
        ] {
            assert_eq!(
                serde_json::to_string(&PodStart::from(&start)).unwrap(),
                serde_json::to_string(&start).unwrap()
            );
        }
    }

    #[test]
    fn a_context_keeps_its_json() {
        let context: DispatchContext = serde_json::from_str(
            r#"{"kind":"meeting","meeting":{"meetingId":"abc","sessionUid":"abc","platform":"zoom"},"source":{"uri":"x:y","etag":"1"},"session":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&RunContext::from(&context)).unwrap(),
            serde_json::to_string(&context).unwrap()
        );
    }
}
