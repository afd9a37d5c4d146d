//! `strata-ctl`: operate a Strata node from a shell.
//!
//! Subcommands (`status`, `svc`, `cap`, `fs`, `registry`, `cluster`) print tables, or JSON
//! with `--json`. Raw mode (`strata-ctl <method> [params_json]`, compatible with the
//! original client) prints the whole response envelope. Exit codes: 0 ok, 1 the server
//! answered an error (one line on stderr: `CODE_NAME: message`) or a local operation was
//! refused or failed (`cluster init` over an existing CA), 2 usage or connection error.

mod cli;
mod cluster;
mod commands;
mod output;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

pub const EXIT_SERVER_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How a command failed, which decides the exit code.
pub enum Failure {
    /// The server answered with an error (exit 1).
    Server(strata_proto::ErrorBody),
    /// Bad usage, or no answer could be had (exit 2).
    Usage(String),
    /// A local operation was refused or failed, e.g. `cluster init` over an existing CA
    /// (exit 1).
    Failed(String),
}

impl From<strata_ipc::ClientError> for Failure {
    fn from(e: strata_ipc::ClientError) -> Failure {
        match e {
            strata_ipc::ClientError::Server(body) => Failure::Server(body),
            other => Failure::Usage(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(cli::normalise_args(std::env::args())) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "strata-ctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if !(cli.global.timeout.is_finite() && cli.global.timeout > 0.0) {
        return fail(Failure::Usage(
            "--timeout must be a positive number of seconds".into(),
        ));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(Failure::Usage(format!("cannot start: {e}"))),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Server(body) => {
            eprintln!("{}: {}", body.code.name(), output::printable(&body.message));
            ExitCode::from(EXIT_SERVER_ERROR)
        }
        Failure::Usage(msg) => {
            eprintln!("strata-ctl: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Failure::Failed(msg) => {
            eprintln!("strata-ctl: {msg}");
            ExitCode::from(EXIT_SERVER_ERROR)
        }
    }
}
