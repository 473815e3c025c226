//! The command line: `kubectl vexa chat | send | follow | stop | … | knowledge`. Every option
//! that a user sets once per shell also reads an environment variable.

use clap::{Args, Parser, Subcommand};
use vexa_crds::{WorkspaceMode, WorkspaceUse};
use vexa_stream::follow::EntryId;

/// Chat with Vexa agents and follow their dispatches.
#[derive(Parser, Debug)]
#[command(name = "kubectl-vexa", bin_name = "kubectl vexa", version)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Namespace of the dispatches (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, env = "VEXA_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Give up when a dispatch's stream stays unreadable this many seconds (an operator
    /// restart is retried until then).
    #[arg(long, env = "VEXA_RETRY_SECONDS", default_value_t = 60, global = true)]
    pub retry_seconds: u64,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a message to your agent on a chat thread and print its reply.
    ///
    /// The thread's dispatch is named `agent-<subject>-chat-<thread>`. When it is live the
    /// message becomes its next turn; when it has ended, a new dispatch
    /// `agent-<subject>-chat-<thread>-<n>` resumes the thread's saved session.
    Chat(ChatArgs),
    /// Send a turn to a running dispatch and print the reply.
    Send(SendArgs),
    /// Print a dispatch's stream from the start (or --from an entry) until the dispatch ends.
    Follow(FollowArgs),
    /// Ask a dispatch to stop.
    Stop(StopArgs),
    /// Show a dispatch's audit records (every effect resolved to subject · launcher · scope),
    /// or verify or export the audit log.
    Audit(AuditArgs),
    /// A Schedule's next run and history, and the actions the operator carries out once:
    /// run-now, backfill, resume.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// List Cards: proposals from agents (a file to record, a draft, a gated tool call) and
    /// notices, awaiting a person.
    Cards(CardsArgs),
    /// Approve or reject a Card.
    Card(CardArgs),
    /// A workspace's knowledge: its history, files and diffs, read through the workspace's
    /// trusted reader, and files you upload (committed once you approve them).
    #[command(subcommand)]
    Knowledge(KnowledgeCommand),
    /// Print this plugin's version, commit and platform (asks no cluster).
    Version(VersionArgs),
}

/// `knowledge log | ls | cat | diff | upload`.
#[derive(Subcommand, Debug)]
pub enum KnowledgeCommand {
    /// The workspace's commits, newest first (short id, time, author, summary).
    Log(KnowledgeLogArgs),
    /// A folder of the workspace at a commit (default: the head).
    Ls(KnowledgeLsArgs),
    /// A file of the workspace at a commit (default: the head).
    ///
    /// On a terminal, control characters in the file are shown, not obeyed (like agent
    /// output). Into a pipe or a file, the text is written exactly as stored. A binary file
    /// is not shown.
    Cat(KnowledgeCatArgs),
    /// What one commit changed against its first parent.
    Diff(KnowledgeDiffArgs),
    /// Propose a local text file for the workspace: it becomes a record Card you own; with
    /// --approve you approve it at once and wait until it is committed (authored by you).
    Upload(KnowledgeUploadArgs),
}

/// A workspace named on the command line, and how to print the answer.
#[derive(Args, Debug)]
pub struct KnowledgeTarget {
    /// The workspace: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "WORKSPACE", value_parser = parse_workspace_ref)]
    pub workspace: DispatchRef,
    /// `text` (default) or `json` (the streams API's answer, as it came).
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// `knowledge log`.
#[derive(Args, Debug)]
pub struct KnowledgeLogArgs {
    /// The workspace and output.
    #[command(flatten)]
    pub target: KnowledgeTarget,
    /// Start at this commit (4 to 40 hex digits) instead of the head.
    #[arg(long, value_name = "COMMIT", value_parser = parse_rev)]
    pub rev: Option<String>,
    /// How many commits (at most 200).
    #[arg(long, default_value_t = vexa_core::knowledge::DEFAULT_LOG,
          value_parser = parse_limit)]
    pub limit: usize,
}

/// `knowledge ls`.
#[derive(Args, Debug)]
pub struct KnowledgeLsArgs {
    /// The workspace and output.
    #[command(flatten)]
    pub target: KnowledgeTarget,
    /// The folder, relative to the workspace's top (default: the top).
    #[arg(value_name = "PATH", value_parser = parse_folder)]
    pub path: Option<String>,
    /// At this commit (4 to 40 hex digits) instead of the head.
    #[arg(long, value_name = "COMMIT", value_parser = parse_rev)]
    pub rev: Option<String>,
}

/// `knowledge cat`.
#[derive(Args, Debug)]
pub struct KnowledgeCatArgs {
    /// The workspace and output.
    #[command(flatten)]
    pub target: KnowledgeTarget,
    /// The file, relative to the workspace's top.
    #[arg(value_name = "PATH", value_parser = parse_file)]
    pub path: String,
    /// At this commit (4 to 40 hex digits) instead of the head.
    #[arg(long, value_name = "COMMIT", value_parser = parse_rev)]
    pub rev: Option<String>,
}

/// `knowledge diff`.
#[derive(Args, Debug)]
pub struct KnowledgeDiffArgs {
    /// The workspace and output.
    #[command(flatten)]
    pub target: KnowledgeTarget,
    /// The commit (4 to 40 hex digits).
    #[arg(value_name = "COMMIT", value_parser = parse_rev)]
    pub commit: String,
}

/// `knowledge upload`.
#[derive(Args, Debug)]
pub struct KnowledgeUploadArgs {
    /// The workspace and output.
    #[command(flatten)]
    pub target: KnowledgeTarget,
    /// Where the file goes in the workspace (relative; not under `.git`).
    #[arg(value_name = "PATH", value_parser = parse_upload_path)]
    pub path: String,
    /// The local file to upload (UTF-8 text, at most 256 KiB).
    #[arg(value_name = "LOCAL_FILE")]
    pub file: std::path::PathBuf,
    /// Approve the Card as yourself at once, and wait until it is committed.
    #[arg(long)]
    pub approve: bool,
    /// With --approve: how long to wait for the commit.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait: u64,
}

/// `version`.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// `text` (default) or `json`.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// `cards`.
#[derive(Args, Debug)]
pub struct CardsArgs {
    /// Only the Cards of this owner (a subject).
    #[arg(long, value_name = "SUBJECT")]
    pub owner: Option<String>,
    /// Only the Cards that wait for a decision.
    #[arg(long)]
    pub pending: bool,
}

/// `card`.
#[derive(Args, Debug)]
pub struct CardArgs {
    /// What to do with the Card.
    #[command(subcommand)]
    pub command: CardCommand,
}

/// `card approve | reject`.
#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Approve the Card: trusted code then applies it (commits a record, sends a message).
    Approve(DecideArgs),
    /// Reject the Card: nothing happens.
    Reject(DecideArgs),
}

/// `card approve | reject NAME`.
#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The Card: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "CARD")]
    pub card: DispatchRef,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// `schedule next | history | run-now | backfill | resume`.
#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// When the next run is due, what is active or waiting, and what blocks it.
    Next(ScheduleName),
    /// Recent runs with their outcome, skipped runs with their reason, and past actions.
    History(ScheduleName),
    /// Start one run now, outside the cadence (under the same grant and overlap policy).
    RunNow(ScheduleAction),
    /// Run every nominal time from --from to --to (at most 100), waiting behind each other;
    /// a time that already ran is not run again.
    Backfill(BackfillArgs),
    /// Lift the pause after a failed run (pauseOnFailure).
    Resume(ScheduleAction),
}

/// A Schedule by name.
#[derive(Args, Debug)]
pub struct ScheduleName {
    /// The Schedule's name.
    pub name: String,
}

/// An action on a Schedule.
#[derive(Args, Debug)]
pub struct ScheduleAction {
    /// The Schedule's name.
    pub name: String,
    /// The action's id; the same id is carried out only once (default: a new one).
    #[arg(long)]
    pub id: Option<String>,
    /// How long to wait for the operator to carry it out.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
}

/// `schedule backfill`.
#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// The action.
    #[command(flatten)]
    pub action: ScheduleAction,
    /// The first nominal time (RFC 3339, for example 2026-12-01T00:00:00Z).
    #[arg(long, value_parser = parse_timestamp)]
    pub from: k8s_openapi::jiff::Timestamp,
    /// The last nominal time (RFC 3339).
    #[arg(long, value_parser = parse_timestamp)]
    pub to: k8s_openapi::jiff::Timestamp,
}

fn parse_timestamp(s: &str) -> Result<k8s_openapi::jiff::Timestamp, String> {
    s.parse()
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-12-01T00:00:00Z: {e}"))
}

/// `audit`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AuditArgs {
    /// The dispatch: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "DISPATCH", required = true)]
    pub dispatch: Option<DispatchRef>,
    /// Print each record as the JSON line it was written as.
    #[arg(long)]
    pub json: bool,
    /// Verify or export the whole log instead.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
}

/// `audit verify | export`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify every chain of the audit log (or an exported chain): exits non-zero naming the
    /// first edited, deleted or reordered record, or a checkpoint whose signature does not hold.
    Verify(AuditVerifyArgs),
    /// Write every chain (`<writer>.jsonl`) and the keys (`jwks.json`) into a folder, for
    /// keeping or for `audit verify --file`.
    Export(AuditExportArgs),
}

/// `audit verify`.
#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    /// Verify this exported chain instead of the live log (no cluster is asked).
    #[arg(long, value_name = "PATH", requires = "jwks")]
    pub file: Option<std::path::PathBuf>,
    /// The published keys (JWKS) to check the exported chain's checkpoints with.
    #[arg(long, value_name = "PATH", requires = "file")]
    pub jwks: Option<std::path::PathBuf>,
}

/// `audit export`.
#[derive(Args, Debug)]
pub struct AuditExportArgs {
    /// The folder to write into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,
}

/// `chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The AgentRunner to run.
    #[arg(long, env = "VEXA_RUNNER")]
    pub runner: String,
    /// A workspace, `NAME`, `NAME:rw` or `NAME:ro` (without a mode: the workspace's default).
    /// Repeat the option, or separate them with commas.
    #[arg(
        short = 'w',
        long = "workspace",
        value_name = "NAME[:rw|:ro]",
        env = "VEXA_WORKSPACES",
        value_delimiter = ',',
        required = true,
        value_parser = parse_workspace
    )]
    pub workspaces: Vec<WorkspaceUse>,
    /// On whose behalf the agent runs (default: your Kubernetes user name). The launcher is
    /// always `user:<your Kubernetes user name>`: for another subject, admission asks for the
    /// RBAC verb `act-as` on `identities.vexa.ai/<subject>`, and the operator for that or the
    /// subject's Identity listing you in `kubernetesUsers`.
    #[arg(long, env = "VEXA_SUBJECT", value_parser = subject)]
    pub subject: Option<String>,
    /// The chat thread; each thread has its own agent session.
    #[arg(long, env = "VEXA_THREAD", default_value = vexa_core::DEFAULT_THREAD, value_parser = parse_thread)]
    pub thread: String,
    /// Keep following until the dispatch stops, not only until the reply is complete.
    #[arg(long)]
    pub follow_to_end: bool,
    /// The message; `-` reads it from standard input.
    pub prompt: String,
}

/// `send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The dispatch: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "DISPATCH")]
    pub dispatch: DispatchRef,
    /// The message; `-` reads it from standard input.
    pub prompt: String,
}

/// `follow`.
#[derive(Args, Debug)]
pub struct FollowArgs {
    /// The dispatch: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "DISPATCH")]
    pub dispatch: DispatchRef,
    /// Start after this entry id (printed when a follow is interrupted) instead of the start.
    #[arg(long, value_name = "ENTRY_ID", value_parser = parse_entry_id)]
    pub from: Option<EntryId>,
    /// Print each unit event as one JSON line with its entry id.
    #[arg(long)]
    pub json: bool,
}

/// `stop`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// The dispatch: `NAME` or `NAMESPACE/NAME`.
    #[arg(value_name = "DISPATCH")]
    pub dispatch: DispatchRef,
}

/// A dispatch named on the command line: `NAME`, or `NAMESPACE/NAME` (its dispatch id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchRef {
    /// The namespace, when given with the name.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl std::str::FromStr for DispatchRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, "dispatch")
    }
}

impl DispatchRef {
    /// `NAME` or `NAMESPACE/NAME` of a `kind` (for the message when it is neither).
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        let (namespace, name) = match s.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, s),
        };
        if let Some(ns) = namespace
            && !is_dns_label(ns)
        {
            return Err(format!("{ns:?} is not a namespace name"));
        }
        if !is_object_name(name) {
            return Err(format!(
                "{name:?} is not a {kind} name (lowercase letters, digits, '-' and '.')"
            ));
        }
        Ok(DispatchRef {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The namespace to use: the one in the reference, else `-n`, else the kubeconfig's. A
    /// reference and `-n` that disagree are an error.
    pub fn namespace<'a>(
        &'a self,
        flag: Option<&'a str>,
        default: &'a str,
    ) -> Result<&'a str, String> {
        match (self.namespace.as_deref(), flag) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "{a}/{} is in namespace {a}, but -n says {b}",
                self.name
            )),
            (Some(ns), _) | (None, Some(ns)) => Ok(ns),
            (None, None) => Ok(default),
        }
    }
}

fn parse_workspace(s: &str) -> Result<WorkspaceUse, String> {
    let (name, mode) = match s.rsplit_once(':') {
        Some((name, "rw")) => (name, Some(WorkspaceMode::ReadWrite)),
        Some((name, "ro")) => (name, Some(WorkspaceMode::ReadOnly)),
        Some((_, other)) => return Err(format!("mode {other:?} is neither rw nor ro")),
        None => (s, None),
    };
    if !is_object_name(name) {
        return Err(format!(
            "{name:?} is not a workspace name (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(WorkspaceUse {
        name: name.to_owned(),
        mode,
    })
}

fn parse_workspace_ref(s: &str) -> Result<DispatchRef, String> {
    DispatchRef::parse(s, "workspace")
}

/// A revision to read at: a commit id, checked as the streams API checks it, so a ref name or
/// a revision expression fails before any request.
fn parse_rev(s: &str) -> Result<String, String> {
    if !s.is_empty() && vexa_core::knowledge::readable_rev(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a commit id (4 to 40 hex digits; ref names such as main or HEAD~1 are not read)"
        ))
    }
}

fn parse_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=vexa_core::knowledge::MAX_LOG).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of commits from 1 to {}",
            vexa_core::knowledge::MAX_LOG
        )),
    }
}

const NOT_A_PATH: &str = "is not a path in the workspace (relative to its top, '/'-separated, no '.' or '..' segment, no backslash)";

/// A folder: a path the streams API reads (`""` is the top); one trailing `/` is allowed.
fn parse_folder(s: &str) -> Result<String, String> {
    let trimmed = s.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(s);
    if vexa_core::knowledge::readable_path(trimmed) {
        Ok(trimmed.to_owned())
    } else {
        Err(format!("{s:?} {NOT_A_PATH}"))
    }
}

/// A file: a path the streams API reads, not the top.
fn parse_file(s: &str) -> Result<String, String> {
    if !s.is_empty() && vexa_core::knowledge::readable_path(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} {NOT_A_PATH}"))
    }
}

/// Where an upload goes: a record Card's path (never into `.git`), as the operator checks it.
fn parse_upload_path(s: &str) -> Result<String, String> {
    if s.len() <= 1024 && vexa_core::cards::safe_record_path(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a file path in the workspace (relative, '/'-separated, no '.', '..' or empty segment, not under .git, at most 1024 bytes)"
        ))
    }
}

fn parse_thread(s: &str) -> Result<String, String> {
    // The CRD's rule for context.session, checked here so a typo fails before any request.
    if vexa_core::valid_thread(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a thread name (1-63 letters, digits, '.', '_' or '-', starting with a letter or digit)"
        ))
    }
}

/// A subject as the CRD accepts it: a letter or digit, then letters, digits and `._@+-`.
pub fn subject(s: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&s.len())
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a subject (letters, digits and '._@+-', starting with a letter or digit)"
        ))
    }
}

fn parse_entry_id(s: &str) -> Result<EntryId, String> {
    s.parse()
        .map_err(|e: vexa_stream::follow::BadEntryId| e.to_string())
}

/// An RFC 1123 subdomain, as Kubernetes object names are.
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// An RFC 1123 label: lowercase letters, digits and inner '-', at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The prompt: the argument itself, or standard input for `-`.
pub fn prompt(
    arg: &str,
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, String> {
    let prompt = if arg == "-" {
        stdin().map_err(|e| format!("reading the prompt from standard input failed: {e}"))?
    } else {
        arg.to_owned()
    };
    if prompt.trim().is_empty() {
        return Err("the prompt is empty".into());
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::CommandFactory;
    use rstest::rstest;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-vexa").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn audit_takes_a_dispatch_or_verify_or_export() {
        let Command::Audit(a) = parse(&["audit", "team/d1"]).unwrap().command else {
            panic!("not audit")
        };
        assert_eq!(a.dispatch.unwrap().name, "d1");
        assert!(a.command.is_none());
        let Command::Audit(a) = parse(&["audit", "verify"]).unwrap().command else {
            panic!("not audit")
        };
        assert!(matches!(
            a.command,
            Some(AuditCommand::Verify(AuditVerifyArgs {
                file: None,
                jwks: None
            }))
        ));
        let Command::Audit(a) = parse(&["audit", "verify", "--file", "c", "--jwks", "k"])
            .unwrap()
            .command
        else {
            panic!("not audit")
        };
        assert!(matches!(a.command, Some(AuditCommand::Verify(_))));
        // An exported chain is checked only against keys given with it.
        assert!(parse(&["audit", "verify", "--file", "c"]).is_err());
        assert!(parse(&["audit"]).is_err());
        assert!(matches!(
            parse(&["audit", "export", "out"]).unwrap().command,
            Command::Audit(AuditArgs {
                command: Some(AuditCommand::Export(_)),
                ..
            })
        ));
    }

    #[test]
    fn chat_takes_workspaces_with_modes_and_defaults_the_thread() {
        let cli = parse(&[
            "chat",
            "--runner",
            "claude",
            "-w",
            "notes:rw",
            "--workspace",
            "docs:ro,wiki",
            "-n",
            "team-a",
            "Hello there",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
        let Command::Chat(chat) = cli.command else {
            panic!("not chat")
        };
        assert_eq!(chat.runner, "claude");
        assert_eq!(
            chat.workspaces,
            vec![
                WorkspaceUse {
                    name: "notes".into(),
                    mode: Some(WorkspaceMode::ReadWrite)
                },
                WorkspaceUse {
                    name: "docs".into(),
                    mode: Some(WorkspaceMode::ReadOnly)
                },
                WorkspaceUse {
                    name: "wiki".into(),
                    mode: None
                },
            ]
        );
        assert_eq!(chat.thread, "main");
        assert_eq!(chat.subject, None);
        assert!(!chat.follow_to_end);
        assert_eq!(chat.prompt, "Hello there");
    }

    #[rstest]
    #[case::no_workspace(&["chat", "--runner", "r", "hi"], "--workspace")]
    #[case::no_runner(&["chat", "-w", "a", "hi"], "--runner")]
    #[case::bad_mode(&["chat", "--runner", "r", "-w", "a:rx", "hi"], "neither rw nor ro")]
    #[case::bad_workspace(&["chat", "--runner", "r", "-w", "Notes", "hi"], "not a workspace name")]
    #[case::bad_subject(&["chat", "--runner", "r", "-w", "a", "--subject", "system:admin", "hi"], "not a subject")]
    #[case::bad_thread(&["chat", "--runner", "r", "-w", "a", "--thread", "my thread", "hi"], "not a thread name")]
    #[case::no_prompt(&["chat", "--runner", "r", "-w", "a"], "<PROMPT>")]
    #[case::bad_dispatch(&["follow", "Agent_1"], "not a dispatch name")]
    #[case::bad_namespace(&["follow", "Team/agent"], "not a namespace name")]
    #[case::bad_from(&["follow", "a", "--from", "$"], "not a stream entry id")]
    fn bad_arguments_are_rejected_with_a_reason(#[case] args: &[&str], #[case] words: &str) {
        let e = parse(args).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
    }

    #[rstest]
    #[case::escaping_path(&["knowledge", "cat", "notes", "../../etc/passwd"], "not a path in the workspace")]
    #[case::absolute_path(&["knowledge", "cat", "notes", "/etc/passwd"], "not a path in the workspace")]
    #[case::escaping_folder(&["knowledge", "ls", "notes", "a/../.."], "not a path in the workspace")]
    #[case::ref_name(&["knowledge", "log", "notes", "--rev", "main"], "not a commit id")]
    #[case::revision_expression(&["knowledge", "ls", "notes", "--rev", "HEAD~1"], "not a commit id")]
    #[case::short_commit(&["knowledge", "diff", "notes", "abc"], "not a commit id")]
    #[case::too_many(&["knowledge", "log", "notes", "--limit", "201"], "from 1 to 200")]
    #[case::into_git(&["knowledge", "upload", "notes", ".git/hooks/pre-commit", "f"], "not under .git")]
    #[case::upload_escaping(&["knowledge", "upload", "notes", "../x.md", "f"], "not a file path")]
    #[case::bad_workspace(&["knowledge", "log", "Notes"], "not a workspace name")]
    #[case::bad_output(&["knowledge", "log", "notes", "-o", "yaml"], "possible values")]
    fn knowledge_arguments_are_checked_before_any_request(
        #[case] args: &[&str],
        #[case] words: &str,
    ) {
        let e = parse(args).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
    }

    #[test]
    fn knowledge_takes_a_workspace_a_path_and_a_revision() {
        let cli = parse(&[
            "-n",
            "team",
            "knowledge",
            "ls",
            "notes",
            "docs/",
            "--rev",
            "ABCDEF12",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("team"));
        let Command::Knowledge(KnowledgeCommand::Ls(ls)) = cli.command else {
            panic!("not knowledge ls")
        };
        assert_eq!(ls.target.workspace.name, "notes");
        // One trailing '/' names the folder; a commit id is read in lowercase.
        assert_eq!(ls.path.as_deref(), Some("docs"));
        assert_eq!(ls.rev.as_deref(), Some("abcdef12"));
        assert_eq!(ls.target.output, "json");

        let Command::Knowledge(KnowledgeCommand::Upload(u)) = parse(&[
            "knowledge",
            "upload",
            "team/notes",
            "notes/today.md",
            "./today.md",
            "--approve",
        ])
        .unwrap()
        .command
        else {
            panic!("not knowledge upload")
        };
        assert_eq!(u.target.workspace.namespace.as_deref(), Some("team"));
        assert_eq!(u.path, "notes/today.md");
        assert!(u.approve);
        assert_eq!(u.wait, 60);

        let Command::Knowledge(KnowledgeCommand::Log(l)) =
            parse(&["knowledge", "log", "notes"]).unwrap().command
        else {
            panic!("not knowledge log")
        };
        assert_eq!(
            (l.limit, l.rev, l.target.output.as_str()),
            (50, None, "text")
        );
    }

    #[test]
    fn follow_takes_a_dispatch_id_and_a_resume_point() {
        let cli = parse(&[
            "follow",
            "team-a/agent-alice-chat-main",
            "--from",
            "17-3",
            "--json",
        ])
        .unwrap();
        let Command::Follow(f) = cli.command else {
            panic!("not follow")
        };
        assert_eq!(
            f.dispatch,
            DispatchRef {
                namespace: Some("team-a".into()),
                name: "agent-alice-chat-main".into()
            }
        );
        assert_eq!(f.from, Some(EntryId { ms: 17, seq: 3 }));
        assert!(f.json);
    }

    #[rstest]
    #[case::own(Some("a"), None, Ok("a"))]
    #[case::flag(None, Some("b"), Ok("b"))]
    #[case::same(Some("a"), Some("a"), Ok("a"))]
    #[case::default(None, None, Ok("default"))]
    #[case::conflict(Some("a"), Some("b"), Err(()))]
    fn the_namespace_comes_from_the_reference_the_flag_or_the_kubeconfig(
        #[case] own: Option<&str>,
        #[case] flag: Option<&str>,
        #[case] want: Result<&str, ()>,
    ) {
        let r = DispatchRef {
            namespace: own.map(Into::into),
            name: "x".into(),
        };
        assert_eq!(r.namespace(flag, "default").map_err(|_| ()), want);
    }

    #[test]
    fn a_dash_prompt_is_read_from_stdin_and_an_empty_one_is_refused() {
        assert_eq!(prompt("hi", || unreachable!()).unwrap(), "hi");
        assert_eq!(
            prompt("-", || Ok("from stdin\n".into())).unwrap(),
            "from stdin\n"
        );
        assert!(
            prompt("-", || Ok("  \n".into()))
                .unwrap_err()
                .contains("empty")
        );
    }
}
