//! Rendering an AgentRunner's argv template into the agent CLI's arguments, without any shell.
//!
//! A template item is parsed once into literal text and placeholders; rendering only
//! concatenates. A placeholder's value is inserted verbatim and never scanned again, so a prompt
//! containing `${sessionId}`, quotes, `;`, `$()` or newlines stays exactly the text it was, in
//! exactly one argument.
//!
//! A prompt is still an argument of a program that parses options, so a prompt
//! `--dangerously-skip-permissions` placed where an option may stand becomes one. A template
//! that ends its options with a literal `--` item puts everything after it out of the option
//! parser's reach; the optional groups (which are options) are inserted before that `--`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The placeholders an argv template may use, written `${name}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum Placeholder {
    /// The turn's prompt.
    Prompt,
    /// The agent CLI's session id to resume.
    SessionId,
    /// The runner's model.
    Model,
    /// The granted tools, comma separated.
    AllowedTools,
    /// Path of the generated MCP config file.
    McpConfig,
    /// The primary workspace's path.
    WorkspacePath,
    /// The dispatch id (`<namespace>/<name>`).
    DispatchId,
}

impl Placeholder {
    /// Every placeholder, in the order the AgentRunner documentation lists them.
    pub const ALL: [Placeholder; 7] = [
        Self::Prompt,
        Self::SessionId,
        Self::Model,
        Self::AllowedTools,
        Self::McpConfig,
        Self::WorkspacePath,
        Self::DispatchId,
    ];

    /// The name written between `${` and `}`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::SessionId => "sessionId",
            Self::Model => "model",
            Self::AllowedTools => "allowedTools",
            Self::McpConfig => "mcpConfig",
            Self::WorkspacePath => "workspacePath",
            Self::DispatchId => "dispatchId",
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Placeholder {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| TemplateError::Unknown(s.to_owned()))
    }
}

/// A template item that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${name}` with a name that is not a placeholder.
    #[error(
        "unknown placeholder ${{{0}}}: use ${{prompt}}, ${{sessionId}}, ${{model}}, ${{allowedTools}}, ${{mcpConfig}}, ${{workspacePath}} or ${{dispatchId}}"
    )]
    Unknown(String),
    /// `${` with no closing `}`.
    #[error("unclosed placeholder in {0:?}: write ${{name}}")]
    Unclosed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

/// One argv item, parsed: literal text and placeholders. A `$` not followed by `{` is text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArgTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl ArgTemplate {
    /// Parses one template item.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(source.to_owned()))?;
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            pieces.push(Piece::Value(after[..end].parse()?));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
        })
    }

    /// The item with every placeholder replaced by its value (empty when it has none).
    pub fn render(&self, values: &ArgValues) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value(p) => out.push_str(values.get(*p).unwrap_or_default()),
            }
        }
        out
    }
}

impl TryFrom<String> for ArgTemplate {
    type Error = TemplateError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ArgTemplate> for String {
    fn from(t: ArgTemplate) -> Self {
        t.source
    }
}

/// Arguments appended only when a placeholder has a non-empty value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionalArgs {
    /// The placeholder that must have a value.
    pub when: Placeholder,
    /// The arguments to append.
    pub argv: Vec<ArgTemplate>,
}

/// The values of the placeholders for one run of the agent CLI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArgValues {
    /// `${prompt}`.
    pub prompt: String,
    /// `${sessionId}`: set when resuming.
    pub session_id: Option<String>,
    /// `${model}`.
    pub model: Option<String>,
    /// `${allowedTools}`: comma separated.
    pub allowed_tools: Option<String>,
    /// `${mcpConfig}`.
    pub mcp_config: Option<String>,
    /// `${workspacePath}`.
    pub workspace_path: Option<String>,
    /// `${dispatchId}`.
    pub dispatch_id: Option<String>,
}

impl ArgValues {
    /// The value of `p`, if it has a non-empty one.
    pub fn get(&self, p: Placeholder) -> Option<&str> {
        let value = match p {
            Placeholder::Prompt => Some(self.prompt.as_str()),
            Placeholder::SessionId => self.session_id.as_deref(),
            Placeholder::Model => self.model.as_deref(),
            Placeholder::AllowedTools => self.allowed_tools.as_deref(),
            Placeholder::McpConfig => self.mcp_config.as_deref(),
            Placeholder::WorkspacePath => self.workspace_path.as_deref(),
            Placeholder::DispatchId => self.dispatch_id.as_deref(),
        };
        value.filter(|v| !v.is_empty())
    }
}

/// The item that ends a command line's options.
pub const END_OF_OPTIONS: &str = "--";

/// The full command line: `argv`, with each optional group whose placeholder has a value, in
/// order, appended, or inserted before the first `--` item of `argv` when it has one (so a
/// template `claude -p --output-format stream-json -- ${prompt}` gets `--resume <id>` among its
/// options and the prompt stays after `--`). The first item is the program; nothing is ever
/// passed through a shell.
pub fn render(argv: &[ArgTemplate], optional: &[OptionalArgs], values: &ArgValues) -> Vec<String> {
    let end = argv
        .iter()
        .position(|t| t.source == END_OF_OPTIONS)
        .unwrap_or(argv.len());
    let groups = optional
        .iter()
        .filter(|g| values.get(g.when).is_some())
        .flat_map(|g| g.argv.iter());
    argv[..end]
        .iter()
        .chain(groups)
        .chain(&argv[end..])
        .map(|t| t.render(values))
        .collect()
}

/// Whether `${prompt}` appears only after a `--` item, where no option parser looks: what
/// every runner that takes a prompt from a person (or from a turn an agent could have written)
/// must do.
pub fn prompt_after_end_of_options(argv: &[ArgTemplate]) -> bool {
    let end = argv.iter().position(|t| t.source == END_OF_OPTIONS);
    argv.iter().enumerate().all(|(i, t)| {
        !t.pieces.contains(&Piece::Value(Placeholder::Prompt)) || end.is_some_and(|e| i > e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn templates(items: &[&str]) -> Vec<ArgTemplate> {
        items
            .iter()
            .map(|s| ArgTemplate::parse(s).unwrap())
            .collect()
    }

    fn optional(when: Placeholder, items: &[&str]) -> OptionalArgs {
        OptionalArgs {
            when,
            argv: templates(items),
        }
    }

    /// The Claude Code runner of `goldens/agentrunners/valid`.
    fn claude() -> (Vec<ArgTemplate>, Vec<OptionalArgs>) {
        (
            templates(&[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--include-partial-messages",
                "--permission-mode",
                "acceptEdits",
                "--",
                "${prompt}",
            ]),
            vec![
                optional(
                    Placeholder::AllowedTools,
                    &[
                        "--allowedTools",
                        "${allowedTools}",
                        "--mcp-config",
                        "${mcpConfig}",
                        "--strict-mcp-config",
                    ],
                ),
                optional(Placeholder::SessionId, &["--resume", "${sessionId}"]),
                optional(Placeholder::Model, &["--model", "${model}"]),
            ],
        )
    }

    const BASE: [&str; 8] = [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--permission-mode",
        "acceptEdits",
    ];

    /// `BASE`, the optional arguments, `--` and the prompt.
    fn line<'a>(extra: &[&'a str], prompt: &'a str) -> Vec<&'a str> {
        BASE.iter()
            .chain(extra)
            .copied()
            .chain(["--", prompt])
            .collect()
    }

    #[rstest]
    #[case::fresh(None, None, None, &[])]
    #[case::resume(Some("s-1"), None, None, &["--resume", "s-1"])]
    #[case::empty_session_is_no_session(Some(""), None, None, &[])]
    #[case::model(None, Some("m"), None, &["--model", "m"])]
    #[case::everything(Some("s-1"), Some("m"), Some("a,b"),
        &["--allowedTools", "a,b", "--mcp-config", "/tmp/mcp.json", "--strict-mcp-config", "--resume", "s-1", "--model", "m"])]
    fn claude_code_command_lines(
        #[case] session: Option<&str>,
        #[case] model: Option<&str>,
        #[case] tools: Option<&str>,
        #[case] extra: &[&str],
    ) {
        let (argv, opt) = claude();
        let values = ArgValues {
            prompt: "PROMPT".into(),
            session_id: session.map(Into::into),
            model: model.map(Into::into),
            allowed_tools: tools.map(Into::into),
            mcp_config: tools.map(|_| "/tmp/mcp.json".into()),
            ..ArgValues::default()
        };
        assert_eq!(render(&argv, &opt, &values), line(extra, "PROMPT"));
    }

    #[rstest]
    #[case::quotes(r#"say "hi" and 'bye'"#)]
    #[case::separators("a; rm -rf / && echo x || true | cat &")]
    #[case::substitution("$(touch /tmp/pwned) `id` $HOME ${HOME}")]
    #[case::placeholder_text("resume ${sessionId} with ${model} in ${prompt}")]
    #[case::unknown_placeholder_text("${nope} ${")]
    #[case::newlines("line one\nline two\r\n\tthree\n")]
    #[case::leading_dash("--resume evil")]
    #[case::globs("* ? [a-z] ~ ~/x")]
    #[case::nul_free_unicode("héllo 👋 \u{202e}reversed")]
    #[case::empty_looking("   ")]
    fn a_hostile_prompt_is_one_verbatim_argument(#[case] prompt: &str) {
        let (argv, opt) = claude();
        let values = ArgValues {
            prompt: prompt.into(),
            session_id: Some("s-1".into()),
            model: Some("m".into()),
            ..ArgValues::default()
        };
        let out = render(&argv, &opt, &values);
        assert_eq!(out, line(&["--resume", "s-1", "--model", "m"], prompt));
        assert_eq!(out.iter().filter(|a| *a == prompt).count(), 1);
    }

    /// A minimal option parser with the rule every getopt/commander-style parser shares: `--`
    /// ends the options, and before it anything starting with `-` is an option. Returns the
    /// options the command line turns on and the other arguments (option values included: it
    /// does not know which options take one).
    fn parse_like_a_cli(argv: &[String]) -> (Vec<&str>, Vec<&str>) {
        let (mut options, mut positional) = (Vec::new(), Vec::new());
        let mut rest = argv[1..].iter();
        for arg in rest.by_ref() {
            match arg.as_str() {
                "--" => break,
                a if a.starts_with('-') && a.len() > 1 => options.push(a),
                a => positional.push(a),
            }
        }
        positional.extend(rest.map(String::as_str));
        (options, positional)
    }

    #[rstest]
    #[case::skip_permissions("--dangerously-skip-permissions")]
    #[case::inline_value("--permission-mode=bypassPermissions")]
    #[case::short("-r")]
    #[case::end_of_options("--")]
    #[case::settings(r#"--settings={"hooks":{}}"#)]
    #[case::subcommand_looking("doctor")]
    fn a_hostile_turn_is_never_an_option(#[case] prompt: &str) {
        let (argv, opt) = claude();
        assert!(prompt_after_end_of_options(&argv));
        for session in [None, Some("s-1")] {
            let values = ArgValues {
                prompt: prompt.into(),
                session_id: session.map(Into::into),
                model: Some("m".into()),
                ..ArgValues::default()
            };
            let out = render(&argv, &opt, &values);
            let (options, positional) = parse_like_a_cli(&out);
            assert_eq!(positional.last(), Some(&prompt), "{out:?}");
            assert!(!options.contains(&prompt), "{out:?}");
            assert_eq!(out.last().map(String::as_str), Some(prompt));
        }
        // The same template without `--` (what runners had before): the turn is an option.
        let unsafe_argv = templates(&["claude", "-p", "${prompt}", "--verbose"]);
        assert!(!prompt_after_end_of_options(&unsafe_argv));
        let values = ArgValues {
            prompt: "--dangerously-skip-permissions".into(),
            ..ArgValues::default()
        };
        let out = render(&unsafe_argv, &[], &values);
        let (options, _) = parse_like_a_cli(&out);
        assert!(options.contains(&"--dangerously-skip-permissions"));
    }

    #[rstest]
    #[case::after(&["a", "--", "${prompt}"], true)]
    #[case::inside_after(&["a", "--", "say: ${prompt}"], true)]
    #[case::no_prompt(&["a", "-x"], true)]
    #[case::before(&["a", "${prompt}", "--"], false)]
    #[case::no_end(&["a", "-p", "${prompt}"], false)]
    #[case::glued(&["a", "--prompt=${prompt}", "--"], false)]
    fn where_the_prompt_may_stand(#[case] items: &[&str], #[case] safe: bool) {
        assert_eq!(prompt_after_end_of_options(&templates(items)), safe);
    }

    #[test]
    fn optional_groups_go_before_the_end_of_options() {
        let argv = templates(&["agent", "-x", "--", "${prompt}", "tail"]);
        let opt = [optional(Placeholder::Model, &["--model", "${model}"])];
        let values = ArgValues {
            prompt: "P".into(),
            model: Some("m".into()),
            ..ArgValues::default()
        };
        assert_eq!(
            render(&argv, &opt, &values),
            ["agent", "-x", "--model", "m", "--", "P", "tail"]
        );
        let plain = templates(&["agent", "${prompt}"]);
        assert_eq!(
            render(&plain, &opt, &values),
            ["agent", "P", "--model", "m"]
        );
    }

    /// A small deterministic generator (xorshift) over an alphabet of everything a shell or a
    /// template engine would treat specially: many random prompts, each must come out whole.
    #[test]
    fn random_hostile_prompts_are_never_split_or_expanded() {
        const ALPHABET: &[&str] = &[
            "$",
            "{",
            "}",
            "${",
            "${prompt}",
            "${sessionId}",
            "$(",
            ")",
            "`",
            "'",
            "\"",
            "\\",
            ";",
            "&",
            "|",
            "\n",
            "\r",
            "\t",
            " ",
            "*",
            "-",
            "--",
            "a",
            "é",
            "👋",
            "%s",
            "{}",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (argv, opt) = claude();
        for _ in 0..2000 {
            let len = next() % 24;
            let prompt: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let session = format!("s{}", next() % 10);
            let values = ArgValues {
                prompt: prompt.clone(),
                session_id: Some(session.clone()),
                ..ArgValues::default()
            };
            let out = render(&argv, &opt, &values);
            assert_eq!(out, line(&["--resume", &session], &prompt), "{prompt:?}");
        }
    }

    #[test]
    fn a_value_is_not_rescanned_for_placeholders() {
        let t = ArgTemplate::parse("--x=${model}/${sessionId}").unwrap();
        let values = ArgValues {
            model: Some("${sessionId}".into()),
            session_id: Some("${model}".into()),
            ..ArgValues::default()
        };
        assert_eq!(t.render(&values), "--x=${sessionId}/${model}");
    }

    #[rstest]
    #[case("plain", &[], "plain")]
    #[case("${prompt}", &[], "P")]
    #[case("pre-${prompt}-post", &[], "pre-P-post")]
    #[case("${workspacePath}/${dispatchId}", &[], "/workspaces/notes/team-a/d1")]
    #[case("$5 and $ and $", &[], "$5 and $ and $")]
    #[case("${model}", &[], "")]
    fn items_render(#[case] item: &str, #[case] _unused: &[&str], #[case] want: &str) {
        let values = ArgValues {
            prompt: "P".into(),
            workspace_path: Some("/workspaces/notes".into()),
            dispatch_id: Some("team-a/d1".into()),
            ..ArgValues::default()
        };
        assert_eq!(ArgTemplate::parse(item).unwrap().render(&values), want);
    }

    #[rstest]
    #[case("${nope}", TemplateError::Unknown("nope".into()))]
    #[case("${}", TemplateError::Unknown(String::new()))]
    #[case("${prompt", TemplateError::Unclosed("${prompt".into()))]
    #[case("x ${ y", TemplateError::Unclosed("x ${ y".into()))]
    fn bad_items_are_refused(#[case] item: &str, #[case] want: TemplateError) {
        assert_eq!(ArgTemplate::parse(item), Err(want));
    }

    #[test]
    fn the_placeholders_are_the_crds() {
        let names: Vec<&str> = Placeholder::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, vexa_crds::runner::ARGV_PLACEHOLDERS);
    }

    #[test]
    fn templates_round_trip_through_json() {
        let t: ArgTemplate = serde_json::from_str(r#""--resume=${sessionId}""#).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#""--resume=${sessionId}""#
        );
        let err = serde_json::from_str::<ArgTemplate>(r#""${bogus}""#).unwrap_err();
        assert!(
            err.to_string().contains("unknown placeholder ${bogus}"),
            "{err}"
        );
    }
}
