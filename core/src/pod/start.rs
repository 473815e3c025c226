//! How the agent begins (`VEXA_START`): a fresh entrypoint or a saved session to resume.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// How the agent begins (the Dispatch's `spec.start`). On the wire it is the Dispatch's own
/// shape: `{"entrypoint": {"inline", "path"}}` or `{"session": {"ref", "prompt"}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase", try_from = "RawStart")]
pub enum Start {
    /// A fresh first turn: a prompt, a plan file in the workspace, or both.
    Entrypoint {
        /// The prompt.
        #[serde(skip_serializing_if = "Option::is_none")]
        inline: Option<String>,
        /// A plan file, relative to the workspace.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Resume the session whose id is in the file `reference` (relative to the workspace).
    Session {
        /// The session file.
        #[serde(rename = "ref")]
        reference: String,
        /// The first turn's prompt; without one the worker waits for a turn on the input stream.
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
}

impl Start {
    /// The prompt of turn `t0`, if the start has one. A plan path becomes "read and execute the
    /// plan at <path>", after the inline text when both are set (SPEC §4).
    pub fn first_prompt(&self) -> Option<String> {
        match self {
            Start::Entrypoint { inline, path } => {
                let plan = path
                    .as_ref()
                    .map(|p| format!("read and execute the plan at {p}"));
                match (inline, plan) {
                    (Some(i), Some(p)) => Some(format!("{i}\n\n{p}")),
                    (i, p) => i.clone().or(p),
                }
            }
            Start::Session { prompt, .. } => prompt.clone(),
        }
    }
}

/// `VEXA_START` as written, before the checks that make it a [`Start`]. Unknown fields are
/// refused: a field this worker does not know could be one it ought to honour.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawStart {
    entrypoint: Option<RawEntrypoint>,
    session: Option<RawSession>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntrypoint {
    inline: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    #[serde(rename = "ref")]
    reference: String,
    prompt: Option<String>,
}

impl TryFrom<RawStart> for Start {
    type Error = String;

    /// Exactly one of entrypoint and session; an entrypoint with text or a plan; every path
    /// inside the workspace. Blank texts count as unset.
    fn try_from(raw: RawStart) -> Result<Self, Self::Error> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        match (raw.entrypoint, raw.session) {
            (Some(e), None) => {
                let (inline, path) = (nonempty(e.inline), nonempty(e.path));
                if inline.is_none() && path.is_none() {
                    return Err("entrypoint sets neither inline nor path".into());
                }
                if let Some(p) = &path {
                    relative_path("entrypoint.path", p)?;
                }
                Ok(Start::Entrypoint { inline, path })
            }
            (None, Some(s)) => {
                relative_path("session.ref", &s.reference)?;
                Ok(Start::Session {
                    reference: s.reference,
                    prompt: nonempty(s.prompt),
                })
            }
            _ => Err("must set exactly one of entrypoint and session".into()),
        }
    }
}

/// Checks that `path` stays inside the workspace: relative, no `..`. The problem names `what`.
pub fn relative_path(what: &str, path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {path:?} must be a relative path inside the workspace, without '..'"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::inline(Some("hi"), None, Some("hi"))]
    #[case::plan(
        None,
        Some("plans/today.md"),
        Some("read and execute the plan at plans/today.md")
    )]
    #[case::both(
        Some("be brief"),
        Some("p.md"),
        Some("be brief\n\nread and execute the plan at p.md")
    )]
    fn first_prompt_of_an_entrypoint(
        #[case] inline: Option<&str>,
        #[case] path: Option<&str>,
        #[case] want: Option<&str>,
    ) {
        let start = Start::Entrypoint {
            inline: inline.map(Into::into),
            path: path.map(Into::into),
        };
        assert_eq!(start.first_prompt().as_deref(), want);
    }

    /// The wire form is the Dispatch's `spec.start`, byte for byte.
    #[rstest]
    #[case::inline(r#"{"entrypoint":{"inline":"hi"}}"#)]
    #[case::both(r#"{"entrypoint":{"inline":"hi","path":"p.md"}}"#)]
    #[case::session(r#"{"session":{"ref":".claude/sessions/main.session"}}"#)]
    #[case::session_prompt(r#"{"session":{"ref":"s/a.session","prompt":"go on"}}"#)]
    fn the_wire_form_round_trips(#[case] text: &str) {
        let start: Start = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&start).unwrap(), text);
    }

    #[test]
    fn deserialising_checks_the_start() {
        let err = serde_json::from_str::<Start>(r#"{"entrypoint":{"path":"../x"}}"#).unwrap_err();
        assert!(err.to_string().contains("without '..'"), "{err}");
    }
}
