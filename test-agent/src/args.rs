//! The command line, parsed the way Claude Code parses its own (the flags a runner template
//! uses), including its refusals, so a runner that works with the test agent works with the real
//! CLI.

/// What the agent prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The reply only.
    Text,
    /// One JSON result object.
    Json,
    /// One JSON object per line, as Claude Code's `stream-json`.
    StreamJson,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The prompt (the positional argument).
    pub prompt: String,
    /// `--output-format`.
    pub output_format: OutputFormat,
    /// `--include-partial-messages`: stream text deltas as `stream_event` lines.
    pub partial_messages: bool,
    /// `--permission-mode`.
    pub permission_mode: String,
    /// `--resume` / `-r`: the session to continue.
    pub resume: Option<String>,
    /// `--model`.
    pub model: String,
    /// `--allowedTools`: accepted and reported in the init line.
    pub allowed_tools: Vec<String>,
    /// `--mcp-config`: accepted and reported in the init line.
    pub mcp_config: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run one turn.
    Run(Args),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// The usage text.
pub const USAGE: &str =
    "Usage: vexa-test-agent -p PROMPT --output-format stream-json --verbose [options]

A deterministic agent for tests and demos. It speaks Claude Code's stream-json and follows a
small script in its prompt, one command per line:

  write PATH TEXT          create or replace PATH with TEXT (\\n is a newline)
  append PATH TEXT         append TEXT to PATH
  link TARGET PATH         make PATH a symbolic link to TARGET
  read PATH                read PATH
  read and execute the plan at PATH
                           read PATH and follow its lines as commands
  say TEXT                 add TEXT to the reply
  remember TEXT            acknowledge TEXT (it stays in the session)
  recall                   reply with the earlier prompts of this session
  sleep SECONDS            wait (at most 600 s)
  fail [TEXT]              end the turn with an error
  env NAME                 say the value of the environment variable NAME
  grep TEXT PATH           say whether PATH contains TEXT
  model TEXT               ask the model at $ANTHROPIC_BASE_URL (key $ANTHROPIC_API_KEY),
                           say its reply
  connect HOST:PORT        try a TCP connection (3 s) and say whether it opened
  resolve NAME             look NAME up with the system resolver and say its addresses
  mcp-list SERVER          list the tools of SERVER (a server of --mcp-config)
  mcp-call SERVER TOOL JSON
                           call TOOL of SERVER with the JSON arguments, say the answer

Any other line is echoed. Sessions live under .claude/projects/ in the working directory.

Options:
  -p, --print                     print the response and exit (required)
  --output-format FORMAT          text, json or stream-json
  --verbose                       required with --output-format stream-json
  --include-partial-messages      stream text deltas
  --permission-mode MODE          accepted (default: default)
  -r, --resume ID                 continue session ID
  --model MODEL                   reported in the init line
  --allowedTools TOOLS            accepted, comma or space separated
  --mcp-config FILE               the MCP servers of mcp-list and mcp-call
  --strict-mcp-config             accepted
  --setting-sources SOURCES       accepted
  --disable-slash-commands        accepted
  -h, --help                      show this help
  -v, --version                   show the version";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut print = false;
    let mut verbose = false;
    let mut format = None;
    let mut partial = false;
    let mut permission_mode = "default".to_owned();
    let mut resume = None;
    let mut model = "vexa-test-model".to_owned();
    let mut allowed_tools = Vec::new();
    let mut mcp_config = None;
    let mut positional: Vec<String> = Vec::new();
    let mut options_done = false;

    while let Some(arg) = args.next() {
        if options_done || !arg.starts_with('-') || arg == "-" {
            positional.push(arg);
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("error: option '{name}' argument missing"))
        };
        match flag.as_str() {
            "--" => options_done = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-v" | "--version" => return Ok(Command::Version),
            "-p" | "--print" => print = true,
            "--verbose" => verbose = true,
            "--include-partial-messages" => partial = true,
            "--strict-mcp-config"
            | "--dangerously-skip-permissions"
            | "--disable-slash-commands" => {}
            "--setting-sources" => {
                value("--setting-sources <sources>")?;
            }
            "--output-format" => {
                format = Some(match value("--output-format <format>")?.as_str() {
                    "text" => OutputFormat::Text,
                    "json" => OutputFormat::Json,
                    "stream-json" => OutputFormat::StreamJson,
                    other => {
                        return Err(format!(
                            "error: option '--output-format <format>' argument '{other}' is invalid. Allowed choices are text, json, stream-json."
                        ));
                    }
                });
            }
            "--permission-mode" => permission_mode = value("--permission-mode <mode>")?,
            "-r" | "--resume" => resume = Some(value("-r, --resume [value]")?),
            "--model" => model = value("--model <model>")?,
            "--allowedTools" | "--allowed-tools" => allowed_tools.extend(
                value("--allowedTools <tools...>")?
                    .split([',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "--mcp-config" => mcp_config = Some(value("--mcp-config <configs...>")?),
            _ => return Err(format!("error: unknown option '{flag}'")),
        }
    }

    if !print {
        return Err("Error: vexa-test-agent runs non-interactively only: pass -p".into());
    }
    let output_format = format.unwrap_or(OutputFormat::Text);
    if output_format == OutputFormat::StreamJson && !verbose {
        return Err(
            "Error: When using --print, --output-format=stream-json requires --verbose".into(),
        );
    }
    if positional.len() > 1 {
        return Err(format!(
            "error: too many arguments. Expected 1 argument but got {}.",
            positional.len()
        ));
    }
    let prompt = positional.pop().filter(|p| !p.trim().is_empty()).ok_or(
        "Error: Input must be provided either through stdin or as a prompt argument when using --print",
    )?;
    Ok(Command::Run(Args {
        prompt,
        output_format,
        partial_messages: partial,
        permission_mode,
        resume,
        model,
        allowed_tools,
        mcp_config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn the_claude_code_runner_line_parses() {
        let cmd = run(&[
            "-p",
            "hello; $(x)",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "mcp__gw__a,mcp__gw__b",
            "--mcp-config",
            "/tmp/m.json",
            "--strict-mcp-config",
            "--resume",
            "s-1",
            "--model",
            "m",
        ])
        .unwrap();
        let Command::Run(a) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(a.prompt, "hello; $(x)");
        assert_eq!(a.output_format, OutputFormat::StreamJson);
        assert!(a.partial_messages);
        assert_eq!(a.permission_mode, "acceptEdits");
        assert_eq!(a.resume.as_deref(), Some("s-1"));
        assert_eq!(a.model, "m");
        assert_eq!(a.allowed_tools, ["mcp__gw__a", "mcp__gw__b"]);
        assert_eq!(a.mcp_config.as_deref(), Some("/tmp/m.json"));
    }

    #[rstest]
    #[case::no_print(&["hi"], "pass -p")]
    #[case::stream_needs_verbose(&["-p", "hi", "--output-format", "stream-json"], "requires --verbose")]
    #[case::bad_format(&["-p", "hi", "--output-format", "xml"], "is invalid")]
    #[case::unknown(&["-p", "hi", "--shell"], "unknown option '--shell'")]
    #[case::dash_prompt(&["-p", "-rf"], "unknown option '-rf'")]
    #[case::no_prompt(&["-p"], "Input must be provided")]
    #[case::two_prompts(&["-p", "a", "b"], "too many arguments")]
    #[case::missing_value(&["-p", "a", "--resume"], "argument missing")]
    fn refusals_match_the_cli(#[case] args: &[&str], #[case] says: &str) {
        let err = run(args).unwrap_err();
        assert!(err.contains(says), "{err}");
    }

    #[test]
    fn a_prompt_after_double_dash_may_start_with_a_dash() {
        let Command::Run(a) = run(&["-p", "--output-format=json", "--", "--resume x"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (a.prompt.as_str(), a.output_format),
            ("--resume x", OutputFormat::Json)
        );
    }
}
