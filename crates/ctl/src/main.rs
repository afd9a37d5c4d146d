//! `strata-ctl`: operate a Strata node from a shell.
//!
//! Subcommands (`status`, `svc`, `reload`, `cap`, `fs`, `registry`, `cluster`) print
//! tables fitted to the terminal with relative times, or `-o wide|json|name`. Raw mode
//! (`strata-ctl <method> [params_json]`, compatible with the original client) prints the
//! whole response envelope. Exit codes are in `failure.rs` (0 ok, 1 other error, 2 usage,
//! 66 not found, 69 unreachable, 77 denied).

mod cli;
mod cluster;
mod commands;
mod failure;
mod man;
mod output;
mod svc;
mod token;
mod when;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use failure::Failure;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::normalise_args(std::env::args());
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
            clap_complete::generate(*shell, &mut cmd, "strata-ctl", &mut std::io::stdout());
            return ExitCode::SUCCESS;
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
