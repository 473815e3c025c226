//! One turn of the test agent: run the prompt's script and report it exactly as Claude Code's
//! `--output-format stream-json --verbose [--include-partial-messages]` does: an init line, one
//! API round per tool call (`stream_event`s, the `assistant` message with its `tool_use`, the
//! `user` message with its `tool_result`), a final round with the reply text, and a `result`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::args::{Args, OutputFormat};
use crate::script::{self, Step};
use crate::store::{self, Exchange};

/// How deep plans may include plans.
const MAX_PLAN_DEPTH: usize = 3;
/// The version reported in the init line.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes the agent's output lines.
struct Output<'a, W: Write> {
    out: &'a mut W,
    args: &'a Args,
    session_id: String,
    serial: u64,
}

impl<W: Write> Output<'_, W> {
    fn uuid(&mut self) -> String {
        self.serial += 1;
        store::uuid(&[&self.session_id, &self.serial.to_string()])
    }

    /// One stream-json line, flushed at once so a reader sees it live.
    fn line(&mut self, mut v: Value) -> io::Result<()> {
        if self.args.output_format != OutputFormat::StreamJson {
            return Ok(());
        }
        if v["type"] != "result" {
            v["parent_tool_use_id"] = Value::Null;
            v["session_id"] = json!(self.session_id);
        }
        v["uuid"] = json!(self.uuid());
        writeln!(self.out, "{v}")?;
        self.out.flush()
    }

    fn stream_event(&mut self, event: Value) -> io::Result<()> {
        if self.args.partial_messages {
            self.line(json!({"type": "stream_event", "event": event}))?;
        }
        Ok(())
    }

    fn message(&mut self, id: &str, content: Value, stop_reason: &str) -> Value {
        json!({"id": id, "type": "message", "role": "assistant", "model": self.args.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}})
    }

    /// One API round: the model streams one content block and stops.
    fn round(&mut self, block: Value, stop_reason: &str) -> io::Result<()> {
        let id = format!("msg_{}", self.uuid().replace('-', ""));
        let empty = self.message(&id, json!([]), "");
        self.stream_event(json!({"type": "message_start", "message": empty}))?;
        let start = match block["type"].as_str() {
            Some("text") => json!({"type": "text", "text": ""}),
            _ => json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
        };
        self.stream_event(
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        )?;
        match block["type"].as_str() {
            Some("text") => {
                for chunk in chunks(block["text"].as_str().unwrap_or_default()) {
                    self.stream_event(json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": chunk}}))?;
                }
            }
            _ => {
                self.stream_event(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}))?;
            }
        }
        self.stream_event(json!({"type": "content_block_stop", "index": 0}))?;
        let message = self.message(&id, json!([block]), stop_reason);
        self.line(json!({"type": "assistant", "message": message}))?;
        self.stream_event(json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 0}}))?;
        self.stream_event(json!({"type": "message_stop"}))
    }
}

/// Splits a reply into the pieces a model would stream: a few words at a time.
fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for piece in text.split_inclusive(char::is_whitespace) {
        current.push_str(piece);
        words += 1;
        if words == 3 {
            out.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What running the script produced.
struct Turn<'h> {
    cwd: PathBuf,
    history: &'h [Exchange],
    reply: Vec<String>,
    /// The `--mcp-config` file, for the MCP steps.
    mcp_config: Option<String>,
    tool_rounds: usize,
    failure: Option<String>,
}

impl Turn<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.cwd.join(p)
    }

    fn tool<W: Write>(
        &mut self,
        out: &mut Output<'_, W>,
        name: &str,
        input: Value,
        run: impl FnOnce() -> io::Result<String>,
    ) -> io::Result<Result<String, String>> {
        self.tool_rounds += 1;
        let id = format!("toolu_{}", out.uuid().replace('-', "")[..24].to_owned());
        out.round(
            json!({"type": "tool_use", "id": id, "name": name, "input": input}),
            "tool_use",
        )?;
        let result = run().map_err(|e| e.to_string());
        let (content, is_error) = match &result {
            Ok(text) => (text.clone(), false),
            Err(e) => (format!("<tool_use_error>{e}</tool_use_error>"), true),
        };
        out.line(json!({"type": "user", "message": {"role": "user", "content": [
            {"tool_use_id": id, "type": "tool_result", "content": content, "is_error": is_error}]}}))?;
        Ok(result)
    }

    fn run<W: Write>(
        &mut self,
        out: &mut Output<'_, W>,
        steps: &[Step],
        depth: usize,
    ) -> io::Result<()> {
        for step in steps {
            if self.failure.is_some() {
                break;
            }
            match step {
                Step::Write { path, text } => {
                    let file = self.path(path);
                    let content = with_newline(text);
                    let input = json!({"file_path": file, "content": content});
                    let r = self.tool(out, "Write", input, || {
                        if let Some(dir) = file.parent() {
                            fs::create_dir_all(dir)?;
                        }
                        fs::write(&file, &content)?;
                        Ok(format!("File created successfully at: {}", file.display()))
                    })?;
                    self.reply.push(match r {
                        Ok(_) => format!("Wrote {path}."),
                        Err(e) => format!("Could not write {path}: {e}"),
                    });
                }
                Step::Append { path, text } => {
                    let file = self.path(path);
                    let content = with_newline(text);
                    let input = json!({"file_path": file, "old_string": "", "new_string": content});
                    let r = self.tool(out, "Edit", input, || {
                        let mut f = fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(&file)?;
                        f.write_all(content.as_bytes())?;
                        Ok(format!("The file {} has been updated.", file.display()))
                    })?;
                    self.reply.push(match r {
                        Ok(_) => format!("Appended to {path}."),
                        Err(e) => format!("Could not append to {path}: {e}"),
                    });
                }
                Step::Link { target, path } => {
                    let file = self.path(path);
                    let command = format!("ln -sf {target} {}", file.display());
                    let r = self.tool(out, "Bash", json!({"command": command}), || {
                        if let Some(dir) = file.parent() {
                            fs::create_dir_all(dir)?;
                        }
                        match fs::remove_file(&file) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                        std::os::unix::fs::symlink(target, &file)?;
                        Ok(String::new())
                    })?;
                    self.reply.push(match r {
                        Ok(_) => format!("Linked {path} to {target}."),
                        Err(e) => format!("Could not link {path}: {e}"),
                    });
                }
                Step::Read { path } => {
                    let file = self.path(path);
                    let r = self.tool(out, "Read", json!({"file_path": file}), || {
                        fs::read_to_string(&file)
                    })?;
                    self.reply.push(match r {
                        Ok(text) => format!("Read {path}: {} lines.", text.lines().count()),
                        Err(e) => format!("Could not read {path}: {e}"),
                    });
                }
                Step::Plan { path } => {
                    let file = self.path(path);
                    let r = self.tool(out, "Read", json!({"file_path": file}), || {
                        fs::read_to_string(&file)
                    })?;
                    match r {
                        Ok(_) if depth >= MAX_PLAN_DEPTH => {
                            self.reply
                                .push(format!("Not following {path}: plans nest too deep."));
                        }
                        Ok(plan) => {
                            self.reply.push(format!("Following the plan at {path}."));
                            self.run(out, &script::parse(&plan), depth + 1)?;
                        }
                        Err(e) => self
                            .reply
                            .push(format!("Could not read the plan at {path}: {e}")),
                    }
                }
                Step::Say(text) => self.reply.push(text.clone()),
                Step::Env(name) => self.reply.push(match std::env::var(name) {
                    Ok(value) => format!("{name}={value}"),
                    Err(_) => format!("{name} is unset"),
                }),
                Step::Grep { text, path } => {
                    let file = self.path(path);
                    let r =
                        self.tool(out, "Grep", json!({"pattern": text, "path": file}), || {
                            fs::read(&file).map(|b| String::from_utf8_lossy(&b).into_owned())
                        })?;
                    self.reply.push(match r {
                        Ok(content) if content.contains(text.as_str()) => {
                            format!("{path} contains {text}.")
                        }
                        Ok(_) => format!("{path} does not contain {text}."),
                        Err(e) => format!("Could not read {path}: {e}"),
                    });
                }
                Step::Search { text, dir } => {
                    let found = crate::search::search(text, &self.path(dir));
                    self.reply.push(crate::search::say(text, dir, &found));
                }
                Step::Model(prompt) => self.reply.push(match crate::model::ask(prompt) {
                    Ok(text) => format!("The model says: {text}"),
                    Err(e) => format!("The model request failed: {e}"),
                }),
                Step::McpList(server) => {
                    let said = crate::mcp::server_url(self.mcp_config.as_deref(), server)
                        .and_then(|url| crate::mcp::list(&url));
                    self.reply.push(match said {
                        Ok(answer) => format!("mcp-list {server}: {answer}"),
                        Err(e) => format!("mcp-list {server} failed: {e}"),
                    });
                }
                Step::McpCall {
                    server,
                    tool,
                    arguments,
                } => {
                    let said = crate::mcp::server_url(self.mcp_config.as_deref(), server)
                        .and_then(|url| crate::mcp::call(&url, tool, arguments));
                    self.reply.push(match said {
                        Ok(answer) => format!("mcp-call {server} {tool}: {answer}"),
                        Err(e) => format!("mcp-call {server} {tool} failed: {e}"),
                    });
                }
                Step::Connect(target) => self.reply.push(crate::probe::connect(target)),
                Step::Resolve(name) => self.reply.push(crate::probe::resolve(name)),
                Step::Redis { addr, args } => {
                    let said = crate::resp::send(addr, args);
                    let command = args.first().map(String::as_str).unwrap_or_default();
                    self.reply.push(match said {
                        Ok(reply) => format!("Redis {addr} {command}: {reply}"),
                        Err(e) => format!("Redis {addr} {command} failed: {e}"),
                    });
                }
                Step::BigLine(mb) => {
                    // Never held whole: written a piece at a time, then the line end.
                    let piece = vec![b'x'; 64 * 1024];
                    for _ in 0..(mb * 1024 * 1024 / piece.len()) {
                        out.out.write_all(&piece)?;
                    }
                    out.out.write_all(b"\n")?;
                    out.out.flush()?;
                    self.reply.push(format!("Printed a line of {mb} MB."));
                }
                Step::Events(n) => {
                    for _ in 0..*n {
                        out.line(
                            json!({"type": "stream_event", "event": {"type": "content_block_delta",
                            "index": 0, "delta": {"type": "text_delta", "text": "."}}}),
                        )?;
                    }
                    self.reply.push(format!("Streamed {n} events."));
                }
                Step::Remember(text) => self.reply.push(format!("I will remember: {text}")),
                Step::Recall => self.reply.push(recall(self.history)),
                Step::Sleep(d) => {
                    out.out.flush()?;
                    std::thread::sleep(*d);
                }
                Step::Fail(text) => self.failure = Some(text.clone()),
                Step::Echo(line) => self.reply.push(format!("Echo: {line}")),
            }
        }
        Ok(())
    }
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// The reply to `recall`: the earlier prompts of the session, oldest first.
fn recall(history: &[Exchange]) -> String {
    if history.is_empty() {
        return "I remember nothing earlier.".to_owned();
    }
    let prompts: Vec<String> = history
        .iter()
        .map(|e| e.prompt.trim().replace('\n', " / "))
        .collect();
    format!("I remember: {}", prompts.join(" | "))
}

fn result_line(
    session_id: &str,
    started: Instant,
    num_turns: usize,
    outcome: Result<&str, &str>,
) -> Value {
    let duration = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut v = json!({"type": "result", "duration_ms": duration, "duration_api_ms": 0,
        "num_turns": num_turns, "session_id": session_id, "total_cost_usd": 0,
        "usage": {"input_tokens": 0, "output_tokens": 0}, "modelUsage": {}, "permission_denials": []});
    match outcome {
        Ok(reply) => {
            v["subtype"] = json!("success");
            v["is_error"] = json!(false);
            v["result"] = json!(reply);
        }
        Err(error) => {
            v["subtype"] = json!("error_during_execution");
            v["is_error"] = json!(true);
            v["errors"] = json!([error]);
        }
    }
    v
}

/// Runs one turn in `cwd`, writing the CLI's output to `out` and `err`. Returns the exit code.
pub fn run(args: &Args, cwd: &Path, out: &mut impl Write, err: &mut impl Write) -> io::Result<i32> {
    let started = Instant::now();
    let history = match &args.resume {
        None => Vec::new(),
        Some(id) => match store::load(cwd, id) {
            Some(h) => h,
            None => {
                let error = format!("No conversation found with session ID: {id}");
                writeln!(err, "{error}")?;
                let fresh = store::new_id(cwd, None, &args.prompt);
                let line = result_line(&fresh, started, 0, Err(&error));
                if args.output_format != OutputFormat::Text {
                    writeln!(out, "{line}")?;
                }
                return Ok(1);
            }
        },
    };
    // A resumed session continues under a new id, as Claude Code's `--resume` does.
    let session_id = store::new_id(cwd, args.resume.as_deref(), &args.prompt);
    let mut output = Output {
        out,
        args,
        session_id: session_id.clone(),
        serial: 0,
    };
    output.line(json!({"type": "system", "subtype": "init", "cwd": cwd,
        "tools": ["Read", "Write", "Edit"], "mcp_servers": [], "model": args.model,
        "permissionMode": args.permission_mode, "slash_commands": [], "apiKeySource": "none",
        "claude_code_version": format!("vexa-test-agent {VERSION}"), "output_style": "default",
        "agents": [], "skills": [], "plugins": [],
        "allowedTools": args.allowed_tools, "mcpConfig": args.mcp_config}))?;

    let mut turn = Turn {
        cwd: cwd.to_owned(),
        history: &history,
        reply: Vec::new(),
        mcp_config: args.mcp_config.clone(),
        tool_rounds: 0,
        failure: None,
    };
    turn.run(&mut output, &script::parse(&args.prompt), 0)?;
    let failure = turn.failure.take();
    let mut reply = turn.reply.join("\n");
    if reply.is_empty() && failure.is_none() {
        reply = "Done.".to_owned();
    }
    if failure.is_none() {
        output.round(json!({"type": "text", "text": reply}), "end_turn")?;
    }
    let mut exchanges = history.clone();
    exchanges.push(Exchange {
        prompt: args.prompt.clone(),
        reply: reply.clone(),
    });
    store::save(cwd, &session_id, &exchanges)?;

    let num_turns = turn.tool_rounds + 1;
    let outcome = failure.as_deref().map_or(Ok(reply.as_str()), Err);
    let result = result_line(&session_id, started, num_turns, outcome);
    match args.output_format {
        OutputFormat::StreamJson => output.line(result)?,
        OutputFormat::Json => writeln!(output.out, "{result}")?,
        OutputFormat::Text => match &failure {
            None => writeln!(output.out, "{reply}")?,
            Some(e) => writeln!(err, "Error: {e}")?,
        },
    }
    Ok(if failure.is_some() { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("", &[])]
    #[case("one", &["one"])]
    #[case("a b c d e", &["a b c ", "d e"])]
    #[case("line\nnext  x y", &["line\nnext  ", "x y"])]
    fn replies_stream_in_pieces_that_add_up(#[case] text: &str, #[case] want: &[&str]) {
        let got = chunks(text);
        assert_eq!(got, want);
        assert_eq!(got.concat(), text);
    }

    #[test]
    fn recall_lists_earlier_prompts() {
        let h = [
            Exchange {
                prompt: "write a.md x\nremember blue".into(),
                reply: String::new(),
            },
            Exchange {
                prompt: "recall".into(),
                reply: String::new(),
            },
        ];
        assert_eq!(
            recall(&h),
            "I remember: write a.md x / remember blue | recall"
        );
        assert_eq!(recall(&[]), "I remember nothing earlier.");
    }
}
