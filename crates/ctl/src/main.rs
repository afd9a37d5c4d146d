//! `strata-ctl`: operate a Strata node from a shell.
//!
//! Subcommands (`status`, `svc`, `reload`, `cap`, `fs`, `registry`, `cluster`) print
//! tables fitted to the terminal with relative times, or `-o wide|json|name`. Raw mode
//! (`strata-ctl <method> [params_json]`, compatible with the original client) prints the
//! whole response envelope. `console` serves a local web console (`console/`), a client
//! of the services like every other subcommand. Exit codes are in `failure.rs` (0 ok, 1
//! other error, 2 usage, 66 not found, 69 unreachable, 77 denied).

// stderr is written with `let _ = writeln!`: see `quiet_on_broken_pipe`.
#![deny(clippy::print_stderr)]

mod cli;
mod cluster;
mod commands;
mod console;
mod failure;
mod man;
mod output;
mod svc;
mod svc_caps;
mod token;
mod when;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use failure::Failure;
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    // args_os: an argument that is not UTF-8 is clap's usage error (or a path), not a
    // panic.
    let args = cli::normalise_args(std::env::args_os());
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match &cli.command {
        // A first word with no dot is a mistyped subcommand, not a method: let clap say
        // so, with its "a similar subcommand exists" tip.
        Command::Raw(words) if words.first().is_some_and(|w| !w.contains('.')) => {
            let strict = Cli::command()
                .allow_external_subcommands(false)
                .external_subcommand_value_parser(None::<clap::builder::ValueParser>);
            if let Err(e) = strict.try_get_matches_from(&args) {
                e.exit();
            }
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "strata-ctl", &mut script);
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => Failure::Failed(format!("cannot write the script: {e}")).report(),
            };
        }
        Command::Man { out_dir } => {
            return match man::write_pages(out_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => f.report(),
            }
        }
        _ => {}
    }
    if !(cli.global.timeout.is_finite() && cli.global.timeout > 0.0) {
        return Failure::Usage("--timeout must be a positive number of seconds".into()).report();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::Failed(format!("cannot start: {e}")).report(),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

/// A reader that went away (`strata-ctl svc status fs | head -1`) ends the program
/// quietly with status 0, as it would end cat(1). Rust ignores SIGPIPE, so `println!`
/// to a closed pipe panics ("failed printing to stdout: Broken pipe"), and std has no
/// safe way to restore SIGPIPE's default; this hook turns that one panic (and only it)
/// into the quiet exit. Commands that loop (`svc logs -f`) stop on the write error
/// themselves. Only stdout: what goes to stderr is written with `let _ = writeln!`
/// (never `eprintln!`), so a closed stderr neither panics nor changes the exit status
/// of a command that failed.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        let broken = std::io::Error::from_raw_os_error(epipe()).to_string();
        if message.starts_with("failed printing to stdout") && message.ends_with(&broken) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// EPIPE's number, as std's message for it spells it.
fn epipe() -> i32 {
    rustix::io::Errno::PIPE.raw_os_error()
}
