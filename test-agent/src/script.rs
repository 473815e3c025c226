//! The test agent's script language: one command per line of the prompt.

use std::time::Duration;

/// The longest `sleep`.
pub const MAX_SLEEP: Duration = Duration::from_secs(600);
/// The longest `bigline`, in MB.
pub const MAX_BIGLINE_MB: usize = 1024;
/// The most `events`.
pub const MAX_EVENTS: usize = 1_000_000;

/// One line of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `write PATH TEXT`: create or replace a file.
    Write {
        /// The file, relative to the working directory (or absolute).
        path: String,
        /// Its new content.
        text: String,
    },
    /// `append PATH TEXT`: add to the end of a file.
    Append {
        /// The file.
        path: String,
        /// What to add.
        text: String,
    },
    /// `link TARGET PATH`: make PATH a symbolic link to TARGET (what an agent with a shell
    /// does with `ln -sf`, e.g. to point a file the worker reads at `/proc/self/environ`).
    Link {
        /// Where the link points.
        target: String,
        /// The link.
        path: String,
    },
    /// `read PATH`.
    Read {
        /// The file.
        path: String,
    },
    /// `read and execute the plan at PATH`: read a file and follow its lines.
    Plan {
        /// The plan file.
        path: String,
    },
    /// `say TEXT`: a line of the reply.
    Say(String),
    /// `remember TEXT`.
    Remember(String),
    /// `recall`: the earlier prompts of the session.
    Recall,
    /// `sleep SECONDS`.
    Sleep(Duration),
    /// `fail [TEXT]`: end the turn with an error.
    Fail(String),
    /// `env NAME`: say the variable's value (what a prompt-injected agent would look for).
    Env(String),
    /// `grep TEXT PATH`: say whether the file contains the text.
    Grep {
        /// What to look for.
        text: String,
        /// The file.
        path: String,
    },
    /// `search TEXT DIR`: say which files under DIR contain the text (what a prompt-injected
    /// agent does to find a credential).
    Search {
        /// What to look for.
        text: String,
        /// The folder (or file).
        dir: String,
    },
    /// `model TEXT`: ask the model at `ANTHROPIC_BASE_URL` and say its reply.
    Model(String),
    /// `connect HOST:PORT`: try a TCP connection and say whether it opened.
    Connect(String),
    /// `resolve NAME`: look a name up with the system resolver and say the addresses.
    Resolve(String),
    /// `redis HOST:PORT COMMAND ARGS...`: send one command to a Redis server as raw RESP and say
    /// what it answered (arguments split at white space; `\s` in one is a space).
    Redis {
        /// `host:port`.
        addr: String,
        /// The command and its arguments.
        args: Vec<String>,
    },
    /// `bigline MEGABYTES`: print one output line that long (no line end until it is all out).
    BigLine(usize),
    /// `events N`: stream N one-character reply deltas.
    Events(usize),
    /// `mcp-list SERVER`: list the tools of a server of the `--mcp-config`.
    McpList(String),
    /// `mcp-call SERVER TOOL JSON`: call a tool of a server of the `--mcp-config`.
    McpCall {
        /// The server's name in the config (the Tool object's name).
        server: String,
        /// The MCP tool name.
        tool: String,
        /// The arguments (JSON text).
        arguments: String,
    },
    /// Any other line: echoed.
    Echo(String),
}

/// The steps of a prompt, in order. Blank lines are skipped; nothing is an error (an odd line is
/// echoed, as a chat agent would answer it).
pub fn parse(prompt: &str) -> Vec<Step> {
    prompt
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(step)
        .collect()
}

fn step(line: &str) -> Step {
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let path_and_text = || {
        let (path, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        (path.to_owned(), unescape(text.trim_start()))
    };
    match word.to_ascii_lowercase().as_str() {
        "write" if !rest.is_empty() => {
            let (path, text) = path_and_text();
            Step::Write { path, text }
        }
        "append" if !rest.is_empty() => {
            let (path, text) = path_and_text();
            Step::Append { path, text }
        }
        "link" if rest.contains(char::is_whitespace) => {
            let (target, path) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            Step::Link {
                target: target.to_owned(),
                path: path.trim().to_owned(),
            }
        }
        "read" if !rest.is_empty() => {
            let lower = rest.to_ascii_lowercase();
            match lower.strip_prefix("and execute the plan at ") {
                Some(_) => Step::Plan {
                    path: rest["and execute the plan at ".len()..].trim().to_owned(),
                },
                None => Step::Read {
                    path: rest.to_owned(),
                },
            }
        }
        "say" => Step::Say(rest.to_owned()),
        "env" if !rest.is_empty() => Step::Env(rest.to_owned()),
        "grep" if rest.contains(char::is_whitespace) => {
            let (text, path) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            Step::Grep {
                text: text.to_owned(),
                path: path.trim().to_owned(),
            }
        }
        "search" if rest.contains(char::is_whitespace) => {
            let (text, dir) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            Step::Search {
                text: text.to_owned(),
                dir: dir.trim().to_owned(),
            }
        }
        "model" if !rest.is_empty() => Step::Model(rest.to_owned()),
        "mcp-list" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Step::McpList(rest.to_owned())
        }
        "mcp-call" if rest.split_whitespace().count() >= 2 => {
            let (server, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let rest = rest.trim_start();
            let (tool, arguments) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
            Step::McpCall {
                server: server.to_owned(),
                tool: tool.to_owned(),
                arguments: arguments.trim().to_owned(),
            }
        }
        "connect" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Step::Connect(rest.to_owned())
        }
        "resolve" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Step::Resolve(rest.to_owned())
        }
        "redis" if rest.contains(char::is_whitespace) => {
            let mut words = rest.split_whitespace();
            let addr = words.next().unwrap_or_default().to_owned();
            let args = words.map(|w| unescape(w).replace("\\s", " ")).collect();
            Step::Redis { addr, args }
        }
        "bigline" => match rest.parse::<usize>() {
            Ok(mb) if mb <= MAX_BIGLINE_MB => Step::BigLine(mb),
            _ => Step::Echo(line.to_owned()),
        },
        "events" => match rest.parse::<usize>() {
            Ok(n) if n <= MAX_EVENTS => Step::Events(n),
            _ => Step::Echo(line.to_owned()),
        },
        "remember" => Step::Remember(rest.to_owned()),
        "recall" if rest.is_empty() => Step::Recall,
        "fail" => Step::Fail(if rest.is_empty() {
            "the script asked to fail".to_owned()
        } else {
            rest.to_owned()
        }),
        "sleep" => match rest.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                Step::Sleep(Duration::from_secs_f64(s).min(MAX_SLEEP))
            }
            _ => Step::Echo(line.to_owned()),
        },
        _ => Step::Echo(line.to_owned()),
    }
}

/// `\n` → newline, `\t` → tab, `\\` → backslash; anything else stays as written.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("write notes/hello.md Hello, world!", Step::Write { path: "notes/hello.md".into(), text: "Hello, world!".into() })]
    #[case("write a.md line1\\nline2\\\\n", Step::Write { path: "a.md".into(), text: "line1\nline2\\n".into() })]
    #[case("write empty.md", Step::Write { path: "empty.md".into(), text: String::new() })]
    #[case("APPEND log.md  more", Step::Append { path: "log.md".into(), text: "more".into() })]
    #[case("read notes/a.md", Step::Read { path: "notes/a.md".into() })]
    #[case("read and execute the plan at plans/Today.md", Step::Plan { path: "plans/Today.md".into() })]
    #[case("Read and execute the plan at p.md", Step::Plan { path: "p.md".into() })]
    #[case("say $(rm -rf /); \"x\"", Step::Say("$(rm -rf /); \"x\"".into()))]
    #[case("remember the sky is green", Step::Remember("the sky is green".into()))]
    #[case("recall", Step::Recall)]
    #[case("recall everything", Step::Echo("recall everything".into()))]
    #[case("sleep 0.25", Step::Sleep(Duration::from_millis(250)))]
    #[case("sleep 99999", Step::Sleep(MAX_SLEEP))]
    #[case("sleep -1", Step::Echo("sleep -1".into()))]
    #[case("sleep NaN", Step::Echo("sleep NaN".into()))]
    #[case("fail", Step::Fail("the script asked to fail".into()))]
    #[case("fail disk on fire", Step::Fail("disk on fire".into()))]
    #[case("connect 10.96.0.1:443", Step::Connect("10.96.0.1:443".into()))]
    #[case("connect a b", Step::Echo("connect a b".into()))]
    #[case("resolve kubernetes.default.svc", Step::Resolve("kubernetes.default.svc".into()))]
    #[case("resolve", Step::Echo("resolve".into()))]
    #[case("write", Step::Echo("write".into()))]
    #[case("link /proc/self/environ .claude/s", Step::Link { target: "/proc/self/environ".into(), path: ".claude/s".into() })]
    #[case("link alone", Step::Echo("link alone".into()))]
    #[case("Please write me a poem", Step::Echo("Please write me a poem".into()))]
    #[case("redis 10.88.0.1:6379 XADD unit:a:in * turn {\"prompt\":\"hi\\sthere\"}", Step::Redis { addr: "10.88.0.1:6379".into(), args: ["XADD", "unit:a:in", "*", "turn", "{\"prompt\":\"hi there\"}"].map(String::from).to_vec() })]
    #[case("redis 10.88.0.1:6379", Step::Echo("redis 10.88.0.1:6379".into()))]
    #[case("bigline 100", Step::BigLine(100))]
    #[case("bigline 99999", Step::Echo("bigline 99999".into()))]
    #[case("events 100000", Step::Events(100_000))]
    #[case("mcp-list notes", Step::McpList("notes".into()))]
    #[case(
        r#"mcp-call notes-append notes.append {"text": "a b"}"#,
        Step::McpCall {
            server: "notes-append".into(),
            tool: "notes.append".into(),
            arguments: r#"{"text": "a b"}"#.into(),
        }
    )]
    #[case("mcp-call notes", Step::Echo("mcp-call notes".into()))]
    fn lines_parse(#[case] line: &str, #[case] want: Step) {
        assert_eq!(parse(line), [want]);
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(parse("\n  say a\n\n\tsay b  \n").len(), 2);
    }
}
