//! The commands: the cluster, the streams API and the terminal wired together. The decisions live in
//! [`crate::chat`], [`crate::dispatch`] and [`crate::pump`]; this module only sequences them.

use std::io::Read;
use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use vexa_core::trace;
use vexa_crds::card::Verdict;
use vexa_crds::{Dispatch, DispatchPhase};
use vexa_stream::TurnId;
use vexa_stream::follow::EntryId;

use crate::args::{
    self, AuditArgs, AuditCommand, AuditVerifyArgs, CardArgs, CardCommand, ChatArgs, Cli, Command,
    DispatchRef, FollowArgs, ScheduleCommand, SendArgs, StopArgs,
};
use crate::audit;
use crate::cards;
use crate::chat::{self, ChatRequest};
use crate::cluster::{Cluster, Placed};
use crate::dispatch;
use crate::error::CliError;
use crate::pump::{Ended, Format, Pump, Retry};
use crate::safe::for_terminal;
use crate::schedule;
use crate::streams::Streams;

/// How a command ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Done,
    /// The user interrupted a follow; it can resume after `last`.
    Interrupted {
        /// The dispatch id.
        dispatch: String,
        /// The last entry read.
        last: EntryId,
    },
}

/// What to tell a user who wants to pick a follow up where it stopped.
pub fn resume_hint(dispatch: &str, last: EntryId) -> String {
    if last == EntryId::ZERO {
        format!("resume with: kubectl vexa follow {dispatch}")
    } else {
        format!(
            "last entry read: {last}; resume with: kubectl vexa follow {dispatch} --from {last}"
        )
    }
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<Outcome, CliError> {
    let global = cli.global;
    if let Command::Audit(AuditArgs {
        command:
            Some(AuditCommand::Verify(AuditVerifyArgs {
                file: Some(file),
                jwks: Some(jwks),
            })),
        ..
    }) = &cli.command
    {
        // An exported copy: no cluster is asked.
        return verify_files(file, jwks);
    }
    if let Command::Version(a) = &cli.command {
        let v = crate::version::Version::of_this_build();
        match a.output.as_str() {
            "json" => println!("{}", v.json()),
            _ => println!("{}", v.text()),
        }
        return Ok(Outcome::Done);
    }
    let cluster = Cluster::connect().await?;
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace().to_owned());
    if let Command::Stop(a) = &cli.command {
        return stop(&cluster, &namespace, global.namespace.as_deref(), a).await;
    }
    if let Command::Audit(a) = &cli.command {
        return audit_command(&cluster, &namespace, global.namespace.as_deref(), a).await;
    }
    if let Command::Schedule(c) = &cli.command {
        return schedule_command(&cluster, &namespace, c).await;
    }
    if let Command::Knowledge(c) = &cli.command {
        crate::knowledge::command(&cluster, &namespace, global.namespace.as_deref(), c).await?;
        return Ok(Outcome::Done);
    }
    if let Command::Cards(a) = &cli.command {
        let filter = cards::Filter {
            owner: a.owner.clone(),
            pending: a.pending,
        };
        let list = cards::list(&cluster.client(), &namespace, &filter).await?;
        if list.is_empty() {
            eprintln!("no cards in {namespace}");
        } else {
            print!(
                "{}",
                cards::table(&list, k8s_openapi::jiff::Timestamp::now())
            );
        }
        return Ok(Outcome::Done);
    }
    if let Command::Card(CardArgs { command }) = &cli.command {
        let (verdict, a) = match command {
            CardCommand::Approve(a) => (Verdict::Approve, a),
            CardCommand::Reject(a) => (Verdict::Reject, a),
        };
        let ns = namespace_of(&a.card, global.namespace.as_deref(), &namespace)?;
        let by = cluster.username().await?;
        cards::decide(
            &cluster.client(),
            &ns,
            &a.card.name,
            verdict,
            a.reason.as_deref(),
            &by,
        )
        .await?;
        let done = match verdict {
            Verdict::Approve => "approved; the operator applies it",
            Verdict::Reject => "rejected",
        };
        println!("card {ns}/{}: {done} (decided by {by})", a.card.name);
        return Ok(Outcome::Done);
    }
    let ctx = Context {
        cluster,
        namespace,
        namespace_flag: global.namespace,
        retry: Retry {
            give_up_after: Duration::from_secs(global.retry_seconds),
            ..Retry::default()
        },
    };
    match cli.command {
        Command::Chat(a) => ctx.chat(a).await,
        Command::Send(a) => ctx.send(a).await,
        Command::Follow(a) => ctx.follow(a).await,
        Command::Stop(_)
        | Command::Audit(_)
        | Command::Schedule(_)
        | Command::Cards(_)
        | Command::Card(_)
        | Command::Knowledge(_)
        | Command::Version(_) => Ok(Outcome::Done),
    }
}

async fn stop(
    cluster: &Cluster,
    default_namespace: &str,
    flag: Option<&str>,
    a: &StopArgs,
) -> Result<Outcome, CliError> {
    let ns = namespace_of(&a.dispatch, flag, default_namespace)?;
    let name = &a.dispatch.name;
    let d = cluster.get(&ns, name).await?;
    let id = dispatch::id(&d);
    if dispatch::is_over(&d) {
        eprintln!(
            "dispatch {id} has already ended: {}",
            for_terminal(&dispatch::how_it_ended(&d))
        );
    } else if d.spec.stop == Some(true) {
        eprintln!("dispatch {id}: a stop was already requested");
    } else {
        // Through the streams API: the worker hears it at once, the operator records it.
        Streams::new(cluster.client(), &ns, name)
            .send(&json!({"type": "stop"}))
            .await?;
        println!("dispatch {id}: stop requested");
    }
    Ok(Outcome::Done)
}

async fn audit_command(
    cluster: &Cluster,
    default_namespace: &str,
    flag: Option<&str>,
    a: &AuditArgs,
) -> Result<Outcome, CliError> {
    match (&a.command, &a.dispatch) {
        (Some(AuditCommand::Export(e)), _) => {
            audit::export(&audit::fetch(&cluster.client()).await?, &e.dir)?
        }
        (Some(AuditCommand::Verify(_)), _) => {
            let export = audit::fetch(&cluster.client()).await?;
            let chains: Vec<(String, String)> = export.chains.into_iter().collect();
            audit::verify(&chains, &export.jwks)?;
        }
        (None, Some(d)) => {
            let ns = namespace_of(d, flag, default_namespace)?;
            audit::show(&cluster.client(), &ns, &d.name, a.json).await?;
        }
        (None, None) => {
            return Err(CliError::Usage(
                "name a dispatch, or use `audit verify` or `audit export`".into(),
            ));
        }
    }
    Ok(Outcome::Done)
}

async fn schedule_command(
    cluster: &Cluster,
    namespace: &str,
    c: &ScheduleCommand,
) -> Result<Outcome, CliError> {
    let api: kube::Api<vexa_crds::Schedule> = kube::Api::namespaced(cluster.client(), namespace);
    let (name, action, a) = match c {
        ScheduleCommand::Next(n) => {
            print!(
                "{}",
                schedule::render_next(&schedule::get(&api, namespace, &n.name).await?)
            );
            return Ok(Outcome::Done);
        }
        ScheduleCommand::History(n) => {
            print!(
                "{}",
                schedule::render_history(&schedule::get(&api, namespace, &n.name).await?)
            );
            return Ok(Outcome::Done);
        }
        ScheduleCommand::RunNow(a) => (&a.name, schedule::Action::RunNow, a),
        ScheduleCommand::Resume(a) => (&a.name, schedule::Action::Resume, a),
        ScheduleCommand::Backfill(b) => {
            if b.from > b.to {
                return Err(CliError::Usage(format!(
                    "--from {} is after --to {}",
                    b.from, b.to
                )));
            }
            (
                &b.action.name,
                schedule::Action::Backfill {
                    from: b.from,
                    to: b.to,
                },
                &b.action,
            )
        }
    };
    let id =
        a.id.clone()
            .unwrap_or_else(|| schedule::new_id(k8s_openapi::jiff::Timestamp::now()));
    let done = schedule::request(
        &api,
        namespace,
        name,
        &action,
        &id,
        Duration::from_secs(a.wait),
    )
    .await?;
    println!(
        "schedule {namespace}/{name}: {}",
        schedule::render_record(&done)
    );
    Ok(Outcome::Done)
}

/// `audit verify --file CHAIN --jwks KEYS`.
fn verify_files(file: &std::path::Path, jwks: &std::path::Path) -> Result<Outcome, CliError> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| CliError::BadFile(format!("{} cannot be read: {e}", p.display())))
    };
    let text = read(file)?;
    let keys: vexa_audit::Jwks = serde_json::from_str(&read(jwks)?)
        .map_err(|e| CliError::BadFile(format!("{} is not a JWKS (JSON): {e}", jwks.display())))?;
    let name = file.display().to_string();
    audit::verify(&[(name, text)], &keys)?;
    Ok(Outcome::Done)
}

fn namespace_of(r: &DispatchRef, flag: Option<&str>, default: &str) -> Result<String, CliError> {
    r.namespace(flag, default)
        .map(str::to_owned)
        .map_err(CliError::Usage)
}

struct Context {
    cluster: Cluster,
    namespace: String,
    namespace_flag: Option<String>,
    retry: Retry,
}

impl Context {
    async fn chat(&self, a: ChatArgs) -> Result<Outcome, CliError> {
        let prompt = args::prompt(&a.prompt, read_stdin).map_err(CliError::Usage)?;
        // A person launches as themselves: admission refuses any other `user:` launcher.
        let user = self.cluster.username().await?;
        let launcher_name = args::subject(&user).map_err(|e| {
            CliError::NoSubject(format!(
                "your Kubernetes user name cannot be a launcher (user:<name>): {e}"
            ))
        })?;
        let subject = match a.subject {
            Some(s) => s,
            None => launcher_name.clone(),
        };
        let req = ChatRequest {
            subject,
            launcher: format!("user:{launcher_name}"),
            thread: a.thread,
            runner: a.runner,
            workspaces: a.workspaces,
            prompt,
        };
        let trace = chat::trace_context(std::env::var(trace::ENV).ok().as_deref());
        match self
            .cluster
            .place(&self.namespace, &req, trace.as_ref())
            .await?
        {
            Placed::Existing(d) => {
                eprintln!(
                    "thread {} continues in dispatch {} ({})",
                    req.thread,
                    dispatch::id(&d),
                    dispatch::phase_name(&d)
                );
                self.converse(&d, &req.prompt, a.follow_to_end).await
            }
            Placed::Created(created) => {
                match &trace {
                    Some(t) => eprintln!(
                        "created dispatch {} (trace {})",
                        dispatch::id(&created),
                        t.trace_hex()
                    ),
                    None => eprintln!("created dispatch {}", dispatch::id(&created)),
                }
                let pump = self.pump(&created, EntryId::ZERO, None, !a.follow_to_end, false);
                self.watch(&created, pump).await
            }
        }
    }

    async fn send(&self, a: SendArgs) -> Result<Outcome, CliError> {
        let prompt = args::prompt(&a.prompt, read_stdin).map_err(CliError::Usage)?;
        let ns = namespace_of(&a.dispatch, self.namespace_flag.as_deref(), &self.namespace)?;
        let d = self.cluster.get(&ns, &a.dispatch.name).await?;
        if let Some(message) = dispatch::refusal(&d) {
            return Err(CliError::Refused {
                id: dispatch::id(&d),
                message,
            });
        }
        if dispatch::phase(&d) != Some(DispatchPhase::Running) || d.spec.stop == Some(true) {
            return Err(CliError::NotRunning {
                id: dispatch::id(&d),
                phase: if d.spec.stop == Some(true) && !dispatch::is_over(&d) {
                    "stopping".into()
                } else {
                    dispatch::phase_name(&d)
                },
            });
        }
        self.converse(&d, &prompt, false).await
    }

    async fn follow(&self, a: FollowArgs) -> Result<Outcome, CliError> {
        let ns = namespace_of(&a.dispatch, self.namespace_flag.as_deref(), &self.namespace)?;
        let d = self.cluster.get(&ns, &a.dispatch.name).await?;
        if let Some(message) = dispatch::refusal(&d) {
            return Err(CliError::Refused {
                id: dispatch::id(&d),
                message,
            });
        }
        let pump = self.pump(&d, a.from.unwrap_or(EntryId::ZERO), None, false, a.json);
        self.watch(&d, pump).await
    }

    /// Sends `prompt` as the dispatch's next turn and prints the reply: the first turn that
    /// completes after whatever turn the stream was in when the prompt was sent.
    async fn converse(
        &self,
        d: &Dispatch,
        prompt: &str,
        to_end: bool,
    ) -> Result<Outcome, CliError> {
        let streams = Streams::new(
            self.cluster.client(),
            &d.namespace().unwrap_or_else(|| self.namespace.clone()),
            &d.name_any(),
        );
        let accepted = streams.send(&json!({ "prompt": prompt })).await?;
        let newest = accepted.last.map(|last| {
            (
                last.id.parse::<EntryId>().unwrap_or(EntryId::ZERO),
                last.turn_id.and_then(|t| t.parse::<TurnId>().ok()),
            )
        });
        let (from, skip_through) = match newest {
            // An unreadable newest entry says nothing about turns: show all that follows.
            Some((id, turn)) => (id, turn),
            // Nothing written yet: the run's own first turn, if it has one, is not the reply.
            None => (
                EntryId::ZERO,
                dispatch::has_first_turn(d).then_some(TurnId(0)),
            ),
        };
        let pump = self.pump(d, from, skip_through, !to_end, false);
        self.watch(d, pump).await
    }

    fn pump(
        &self,
        d: &Dispatch,
        from: EntryId,
        skip_through: Option<TurnId>,
        stop_after_turn: bool,
        json: bool,
    ) -> Pump {
        Pump {
            dispatch: dispatch::id(d),
            from,
            skip_through,
            stop_after_turn,
            format: if json { Format::Json } else { Format::Text },
            retry: self.retry.clone(),
        }
    }

    /// Prints the stream until the pump stops, and turns how it stopped into the outcome.
    async fn watch(&self, d: &Dispatch, pump: Pump) -> Result<Outcome, CliError> {
        let id = dispatch::id(d);
        let (ns, name) = (
            d.namespace().unwrap_or_else(|| self.namespace.clone()),
            d.name_any(),
        );
        let stop_after_turn = pump.stop_after_turn;
        let streams = Streams::new(self.cluster.client(), &ns, &name);
        // What the run waits for (queued, a missing runner) is told while the log is quiet.
        let waiting = async {
            self.cluster
                .until_running(&ns, &name, |waiting| eprintln!("{}", for_terminal(waiting)))
                .await;
            std::future::pending::<std::convert::Infallible>().await
        };
        let mut stdout = std::io::stdout().lock();
        let pumped = tokio::select! {
            pumped = pump.run(&streams, interrupted(), &mut stdout) => pumped?,
            never = waiting => match never {},
        };
        match pumped.ended {
            Ended::Turn(_) => Ok(Outcome::Done),
            Ended::Interrupted => Ok(Outcome::Interrupted {
                dispatch: id,
                last: pumped.last,
            }),
            Ended::Dispatch(phase) => {
                let how = match self.cluster.get(&ns, &name).await {
                    Ok(d) => {
                        if let Some(message) = dispatch::refusal(&d) {
                            return Err(CliError::Refused { id, message });
                        }
                        dispatch::how_it_ended(&d)
                    }
                    Err(CliError::NotFound(_)) => "deleted".to_owned(),
                    Err(_) => phase,
                };
                if stop_after_turn {
                    return Err(CliError::EndedEarly { id, how });
                }
                eprintln!("dispatch {id} ended: {}", for_terminal(&how));
                Ok(Outcome::Done)
            }
        }
    }
}

fn read_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s)
}

/// Resolves on Ctrl-C (never, if the signal cannot be watched).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_hint_names_the_entry_to_resume_after() {
        assert_eq!(
            resume_hint("team-a/x", EntryId { ms: 17, seq: 2 }),
            "last entry read: 17-2; resume with: kubectl vexa follow team-a/x --from 17-2"
        );
        assert_eq!(
            resume_hint("team-a/x", EntryId::ZERO),
            "resume with: kubectl vexa follow team-a/x"
        );
    }
}
