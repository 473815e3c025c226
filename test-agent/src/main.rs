//! `vexa-test-agent`: a deterministic agent CLI for tests and demos. It accepts Claude Code's
//! flags, speaks its stream-json, keeps its sessions in the working directory and follows a small
//! script in its prompt (see `--help`), so every test exercises the worker's real parser and
//! resume path without a model.

mod agent;
mod args;
mod mcp;
mod model;
mod probe;
mod resp;
mod script;
mod search;
mod store;

use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stderr = io::stderr();
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(stderr, "{e}");
            return ExitCode::FAILURE;
        }
    };
    let args = match command {
        args::Command::Help => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        args::Command::Version => {
            println!("{} (vexa-test-agent)", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        args::Command::Run(a) => a,
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(stderr, "Error: cannot read the working directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    match agent::run(&args, &cwd, &mut io::stdout().lock(), &mut stderr) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let _ = writeln!(stderr, "Error: {e}");
            ExitCode::FAILURE
        }
    }
}
