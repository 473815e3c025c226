//! The agent CLI as a supervised child process of the shim, in the agent's container: no
//! shell, its own process group, and a [`StopHandle`] another thread uses to stop it (SIGTERM
//! to the group, SIGKILL later) without ever signalling a process id the kernel may have
//! reused.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustix::process::{
    Pid, Signal, WaitId, WaitIdOptions, WaitOptions, kill_process_group, waitid, waitpid,
};

use crate::shim::frame::CHUNK;

/// How often a finished agent's exit status is polled (reaping under the stop lock).
const REAP_POLL: Duration = Duration::from_millis(10);

/// Stops the agent process that is running, and any started after the stop.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<Mutex<StopState>>);

#[derive(Debug, Default)]
struct StopState {
    stopping: bool,
    /// The running agent's process group (its pid), until it has been reaped.
    group: Option<Pid>,
}

impl StopHandle {
    fn state(&self) -> MutexGuard<'_, StopState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the agent to stop: SIGTERM to its process group. Any later spawn fails. Returns
    /// whether a process was signalled.
    pub fn terminate(&self) -> bool {
        let mut state = self.state();
        state.stopping = true;
        signal(state.group, Signal::TERM)
    }

    /// Kills the agent's process group (after [`terminate`](Self::terminate) was not enough).
    /// Returns whether a process was signalled.
    pub fn kill(&self) -> bool {
        let mut state = self.state();
        state.stopping = true;
        signal(state.group, Signal::KILL)
    }

    /// Whether a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.state().stopping
    }

    /// Whether an agent process runs (has not been reaped yet).
    pub fn is_running(&self) -> bool {
        self.state().group.is_some()
    }

    fn spawn(&self, command: &mut Command) -> io::Result<Child> {
        let mut state = self.state();
        if state.stopping {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the run is stopping; the agent was not started",
            ));
        }
        let child = command.spawn()?;
        state.group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        if let Some(pid) = state.group {
            let stop = self.clone();
            std::thread::Builder::new()
                .name("agent-leftovers".into())
                .spawn(move || stop.kill_leftovers_when_done(pid))?;
        }
        Ok(child)
    }

    /// Watches the agent `pid` (its group's leader) without reaping it; once it has exited,
    /// kills what is left in its group, so a background process holding the agent's standard
    /// output cannot keep the turn open. Returns when the agent was reaped or the group killed.
    fn kill_leftovers_when_done(&self, pid: Pid) {
        loop {
            {
                let state = self.state();
                if state.group != Some(pid) {
                    return; // reaped already: its id may be reused, never signal it
                }
                let exited = waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
                );
                match exited {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        if signal(state.group, Signal::KILL) {
                            tracing::info!(
                                "killed what the agent left running in its process group"
                            );
                        }
                        return;
                    }
                    Err(_) => return,
                }
            }
            std::thread::sleep(REAP_POLL);
        }
    }

    /// Waits for `child`, reaping it under the lock so a signal never reaches a reused pid.
    ///
    /// Once the agent has exited, but before it is reaped (so its process group id cannot have
    /// been reused), whatever it left running in its group (a server started in the background,
    /// a stuck tool) is killed: a turn ends with nothing of it still running. As PID 1 of the
    /// pod, the worker then also reaps orphans the kernel handed to it.
    fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other("the agent has no valid process id"))?;
        loop {
            {
                let mut state = self.state();
                let exited = waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
                )?;
                if exited.is_some() {
                    // The watcher may not have looked yet: kill leftovers before the reap.
                    signal(state.group, Signal::KILL);
                    let status = child.wait()?;
                    state.group = None;
                    if std::process::id() == 1 {
                        reap_orphans();
                    }
                    return Ok(status);
                }
            }
            std::thread::sleep(REAP_POLL);
        }
    }
}

/// Reaps every child that has exited, without waiting. Only for PID 1, whose only children
/// between turns are orphans the kernel reparented to it (otherwise they stay zombies).
fn reap_orphans() {
    let mut reaped = 0;
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {
        reaped += 1;
    }
    if reaped > 0 {
        tracing::debug!(reaped, "reaped orphaned processes");
    }
}

fn signal(group: Option<Pid>, sig: Signal) -> bool {
    let Some(group) = group else {
        return false;
    };
    match kill_process_group(group, sig) {
        Ok(()) => true,
        Err(e) => {
            // ESRCH: the group is gone already (exited, not yet reaped by us).
            tracing::debug!(group = group.as_raw_nonzero().get(), error = %e, "signalling the agent failed");
            false
        }
    }
}

/// Runs `argv` (program first, no shell) in `cwd` as a child of its own process group, with
/// `env` set on top of this process's environment and standard input closed; calls `on_output`
/// with each chunk of its standard output as it comes (standard error goes to this process's
/// own, the container log) and returns its exit code (`None` when a signal ended it).
///
/// `stop` stops it from another thread. Once the agent has exited, whatever it left running
/// in its group is killed, so a turn ends with nothing of it still running.
pub fn run_supervised(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    stop: &StopHandle,
    on_output: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Option<i32>> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .process_group(0)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = stop.spawn(&mut command).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => io::Error::new(
            e.kind(),
            format!(
                "the agent CLI {program:?} was not found on PATH: check the runner's argv and image"
            ),
        ),
        _ => e,
    })?;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let result = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => on_output(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // Do not leave the child running unreaped behind an error.
                let _ = child.kill();
                let _ = stop.wait(&mut child);
                return Err(e);
            }
        }
    }
    Ok(stop.wait(&mut child)?.code())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Instant;

    /// Runs `argv` under `stop`, calling `on_line` with each line of its output.
    struct Agent<'a>(&'a StopHandle);

    impl Agent<'_> {
        fn run(&self, argv: &[String], on_line: &mut dyn FnMut(&str)) -> io::Result<Option<i32>> {
            let mut out = Vec::new();
            let code = run_supervised(
                argv,
                &std::env::temp_dir(),
                &[("FOR_AGENT".into(), "yes".into())],
                self.0,
                &mut |chunk| {
                    out.extend_from_slice(chunk);
                    Ok(())
                },
            )?;
            for line in String::from_utf8_lossy(&out).lines() {
                on_line(line);
            }
            Ok(code)
        }
    }

    fn agent(stop: &StopHandle) -> Agent<'_> {
        Agent(stop)
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn output_comes_as_printed_with_the_extra_environment() {
        let stop = StopHandle::default();
        let mut lines = Vec::new();
        let code = agent(&stop)
            .run(
                &sh("printf 'a\\r\\nb\\n'; printf '\\377\\n'; echo \"$FOR_AGENT\"; exit 3"),
                &mut |l| lines.push(l.to_owned()),
            )
            .unwrap();
        assert_eq!(code, Some(3));
        assert_eq!(lines, ["a", "b", "\u{fffd}", "yes"]);
    }

    #[test]
    fn terminate_stops_the_whole_process_group_promptly() {
        let stop = StopHandle::default();
        let stopper = stop.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            assert!(stopper.terminate());
        });
        let mut lines = Vec::new();
        // A grandchild holding stdout open would keep the read going if only the child died.
        let code = agent(&stop)
            .run(
                &sh("echo started; sleep 30 & sleep 30; echo never"),
                &mut |l| lines.push(l.to_owned()),
            )
            .unwrap();
        t.join().unwrap();
        assert_eq!(code, None, "killed by a signal");
        assert_eq!(lines, ["started"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!stop.terminate(), "nothing left to signal");
        let err = agent(&stop).run(&sh("true"), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn what_the_agent_leaves_running_is_killed_when_it_exits() {
        let stop = StopHandle::default();
        let started = Instant::now();
        let mut lines = Vec::new();
        // The background sleep inherits standard output: without the group kill the read
        // would last until it ends.
        let code = agent(&stop)
            .run(&sh("sleep 30 & echo done"), &mut |l| {
                lines.push(l.to_owned())
            })
            .unwrap();
        assert_eq!(code, Some(0));
        assert_eq!(lines, ["done"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn kill_ends_an_agent_that_ignores_sigterm() {
        let stop = StopHandle::default();
        let stopper = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stopper.terminate();
            std::thread::sleep(Duration::from_millis(300));
            stopper.kill()
        });
        let started = Instant::now();
        let code = agent(&stop)
            .run(
                &sh("trap '' TERM; echo up; while :; do sleep 0.05; done"),
                &mut |_| {},
            )
            .unwrap();
        assert!(t.join().unwrap(), "SIGKILL was needed");
        assert_eq!(code, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = agent(&StopHandle::default())
            .run(&["no-such-agent-cli".into()], &mut |_| {})
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"no-such-agent-cli\" was not found on PATH"),
            "{err}"
        );
    }
}
