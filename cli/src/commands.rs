//! The commands: the cluster, Redis and the terminal wired together. The decisions live in
//! [`crate::chat`], [`crate::dispatch`] and [`crate::pump`]; this module only sequences them.

use std::io::Read;
use std::time::Duration;

use kube::ResourceExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use vexa_crds::{Dispatch, DispatchPhase};
use vexa_stream::follow::{EntryId, FollowOptions, last_event, send_turn};
use vexa_stream::{TurnId, UnitEvent};

use crate::args::{self, ChatArgs, Cli, Command, DispatchRef, FollowArgs, SendArgs, StopArgs};
use crate::chat::{self, ChatRequest, Plan};
use crate::cluster::Cluster;
use crate::dispatch;
use crate::error::CliError;
use crate::pump::{Ended, Format, Pump};
use crate::safe::for_terminal;

/// How often `chat` re-plans when another client took the name it was about to create.
const CREATE_ATTEMPTS: usize = 3;
/// How long a single Redis request outside the follow may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

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
    let cluster = Cluster::connect().await?;
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace().to_owned());
    if let Command::Stop(a) = &cli.command {
        return stop(&cluster, &namespace, global.namespace.as_deref(), a).await;
    }
    let url = args::redis_url(
        global.redis_url.as_deref(),
        std::env::var("REDIS_URL").ok().as_deref(),
    )?;
    let redis = Client::open(url).map_err(CliError::BadRedisUrl)?;
    let ctx = Context {
        cluster,
        redis,
        namespace,
        namespace_flag: global.namespace,
        options: FollowOptions {
            give_up_after: Some(Duration::from_secs(global.redis_retry_seconds)),
            ..FollowOptions::default()
        },
    };
    match cli.command {
        Command::Chat(a) => ctx.chat(a).await,
        Command::Send(a) => ctx.send(a).await,
        Command::Follow(a) => ctx.follow(a).await,
        Command::Stop(_) => Ok(Outcome::Done),
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
        cluster.request_stop(&ns, name).await?;
        println!("dispatch {id}: stop requested");
    }
    Ok(Outcome::Done)
}

fn namespace_of(r: &DispatchRef, flag: Option<&str>, default: &str) -> Result<String, CliError> {
    r.namespace(flag, default)
        .map(str::to_owned)
        .map_err(CliError::Usage)
}

struct Context {
    cluster: Cluster,
    redis: Client,
    namespace: String,
    namespace_flag: Option<String>,
    options: FollowOptions,
}

impl Context {
    async fn chat(&self, a: ChatArgs) -> Result<Outcome, CliError> {
        let prompt = args::prompt(&a.prompt, read_stdin).map_err(CliError::Usage)?;
        // Redis first: a chat whose reply cannot be read should not start a run.
        let mut conn = self.redis().await?;
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
        let ns = &self.namespace;
        for _ in 0..CREATE_ATTEMPTS {
            let existing = self.cluster.list(ns).await?;
            match chat::plan(&existing, &req)? {
                Plan::Send { name } => {
                    let Some(d) = existing.into_iter().find(|d| d.name_any() == name) else {
                        continue;
                    };
                    eprintln!(
                        "thread {} continues in dispatch {} ({})",
                        req.thread,
                        dispatch::id(&d),
                        dispatch::phase_name(&d)
                    );
                    return self.converse(&d, &req.prompt, a.follow_to_end).await;
                }
                Plan::Create { after, start } => {
                    let name = self.fresh_name(&mut conn, &existing, &req, after).await?;
                    let d = chat::new_dispatch(ns, &name, &req, start);
                    let Some(created) = self.cluster.create(&d).await? else {
                        // Another client took the name meanwhile: look again.
                        continue;
                    };
                    eprintln!("created dispatch {}", dispatch::id(&created));
                    let pump = self.pump(&created, EntryId::ZERO, None, !a.follow_to_end, false);
                    return self.watch(&created, pump).await;
                }
            }
        }
        Err(CliError::Api {
            action: "creating the chat's dispatch".into(),
            message: "other clients kept taking the next name of the thread; try again".into(),
        })
    }

    /// The first free name of the thread's chain whose streams do not exist either: a new run
    /// must not inherit the turns or events of a deleted dispatch that had its name.
    async fn fresh_name(
        &self,
        conn: &mut MultiplexedConnection,
        existing: &[Dispatch],
        req: &ChatRequest,
        after: u32,
    ) -> Result<String, CliError> {
        for name in chat::free_names(existing, req, after) {
            let id = vexa_core::dispatch_id(&self.namespace, &name);
            let streams: u64 = redis::cmd("EXISTS")
                .arg(vexa_core::out_topic(&id))
                .arg(vexa_core::in_topic(&id))
                .query_async(conn)
                .await
                .map_err(|e| self.unreachable(e))?;
            if streams == 0 {
                return Ok(name);
            }
        }
        // `free_names` never ends; the loop returns or fails first.
        Err(CliError::Usage("no free dispatch name".into()))
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
        // Fail now, not after the follow's reconnect window, when Redis is not there at all.
        self.redis().await?;
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
        let (out, input) = dispatch::topics(d);
        let mut conn = self.redis().await?;
        let newest = last_event::<UnitEvent>(&mut conn, &out)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (from, skip_through) = match newest {
            Some((id, Ok(event))) => (id, Some(event.turn_id)),
            // An unreadable newest entry says nothing about turns: show all that follows.
            Some((id, Err(_))) => (id, None),
            // Nothing written yet: the run's own first turn, if it has one, is not the reply.
            None => (
                EntryId::ZERO,
                dispatch::has_first_turn(d).then_some(TurnId(0)),
            ),
        };
        send_turn(&mut conn, &input, prompt)
            .await
            .map_err(|e| self.unreachable(e))?;
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
            topic: dispatch::topics(d).0,
            from,
            skip_through,
            stop_after_turn,
            format: if json { Format::Json } else { Format::Text },
            options: self.options.clone(),
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
        let ended = self
            .cluster
            .until_over(&ns, &name, |waiting| eprintln!("{}", for_terminal(waiting)));
        let mut stdout = std::io::stdout().lock();
        let pumped = pump
            .run(&self.redis, ended, interrupted(), &mut stdout)
            .await?;
        match pumped.ended {
            Ended::Turn(_) => Ok(Outcome::Done),
            Ended::Interrupted => Ok(Outcome::Interrupted {
                dispatch: id,
                last: pumped.last,
            }),
            Ended::Dispatch(end) => {
                let how = match &end {
                    Some(d) => {
                        if let Some(message) = dispatch::refusal(d) {
                            return Err(CliError::Refused { id, message });
                        }
                        dispatch::how_it_ended(d)
                    }
                    None => "deleted".to_owned(),
                };
                if stop_after_turn {
                    return Err(CliError::EndedEarly { id, how });
                }
                eprintln!("dispatch {id} ended: {}", for_terminal(&how));
                Ok(Outcome::Done)
            }
        }
    }

    /// A connection for single requests, checked with a PING so an unreachable Redis is
    /// reported before anything else happens.
    async fn redis(&self) -> Result<MultiplexedConnection, CliError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut conn = self
            .redis
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.unreachable(e))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(conn)
    }

    fn unreachable(&self, source: redis::RedisError) -> CliError {
        CliError::RedisUnreachable {
            addr: self.redis.get_connection_info().addr().to_string(),
            source,
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
