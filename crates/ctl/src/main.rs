//! `strata-ctl`: talk to Strata services from a shell.
//!
//! Raw mode, compatible with the original client:
//! `strata-ctl [-token TOKEN | --token TOKEN] <method> [params_json]` prints the response
//! envelope as pretty JSON. Exit codes: 0 when the server answered ok, 1 when it answered
//! an error, 2 for usage errors and when no answer could be had (one line on stderr).

use clap::Parser;
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use strata_ipc::{paths, resolve_endpoint, Client, Endpoint};

const EXIT_SERVER_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "strata-ctl",
    version,
    about = "Call a Strata method and print the response",
    after_help = "Exit status: 0 ok, 1 the server answered an error, 2 usage or connection error.\n\
                  `-token` is accepted as a synonym of `--token`."
)]
struct Args {
    /// Capability token sent in `auth` (also `$STRATA_TOKEN`).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Runtime directory holding the sockets (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Send to this socket instead of resolving the service.
    #[arg(long, value_name = "PATH", conflicts_with = "service")]
    socket: Option<PathBuf>,
    /// Send to this service (default: the part of the method before the first dot).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Method name, e.g. `registry.list`.
    method: String,
    /// Params as a JSON object, e.g. '{"service":"fs"}'.
    params_json: Option<String>,
}

/// Accept the original client's single-dash `-token`.
fn normalise_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| {
        if a == "-token" {
            "--token".to_owned()
        } else if let Some(v) = a.strip_prefix("-token=") {
            format!("--token={v}")
        } else {
            a
        }
    })
    .collect()
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("strata-ctl: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = match Args::try_parse_from(normalise_args(std::env::args())) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let params = match args.params_json.as_deref().map(parse_params).transpose() {
        Ok(p) => p,
        Err(msg) => return fail(EXIT_USAGE, msg),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return fail(EXIT_USAGE, "--timeout must be a positive number of seconds");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_USAGE, format!("cannot start: {e}")),
    };
    runtime.block_on(run(args, params))
}

fn parse_params(text: &str) -> Result<Box<RawValue>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("params_json is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("params_json must be a JSON object, e.g. '{\"service\":\"fs\"}'".to_owned());
    }
    serde_json::value::to_raw_value(&value).map_err(|e| e.to_string())
}

async fn run(args: Args, params: Option<Box<RawValue>>) -> ExitCode {
    let runtime_dir = args.runtime_dir.clone().unwrap_or_else(paths::runtime_dir);
    let endpoint = match target(&args, &runtime_dir).await {
        Ok(e) => e,
        Err(msg) => return fail(EXIT_USAGE, msg),
    };
    let mut client = Client::new(endpoint);
    client.set_timeout(Duration::from_secs_f64(args.timeout));
    client.set_token(args.token.clone());
    match client.call_raw(&args.method, params).await {
        Ok(response) => {
            let ok = response.ok;
            match serde_json::to_string_pretty(&response) {
                Ok(text) => println!("{text}"),
                Err(e) => return fail(EXIT_USAGE, format!("cannot print the response: {e}")),
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_SERVER_ERROR)
            }
        }
        Err(e) => fail(EXIT_USAGE, e),
    }
}

/// Which socket to talk to: `--socket`, else the service's endpoint (registry and
/// supervisor by convention, others through the registry with the convention as fallback).
async fn target(args: &Args, runtime_dir: &std::path::Path) -> Result<Endpoint, String> {
    if let Some(socket) = &args.socket {
        let absolute = std::path::absolute(socket).map_err(|e| e.to_string())?;
        return Endpoint::unix(&absolute).map_err(|e| e.to_string());
    }
    let service = match &args.service {
        Some(s) => s.clone(),
        None => match args.method.split_once('.') {
            Some(("sys", _)) => {
                return Err(format!(
                    "{} is answered by every service: choose one with --service NAME",
                    args.method
                ))
            }
            Some((service, rest)) if !service.is_empty() && !rest.is_empty() => service.to_owned(),
            _ => {
                return Err(format!(
                    "`{}` is not a method name like `registry.list`",
                    args.method
                ))
            }
        },
    };
    resolve_endpoint(runtime_dir, &service)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_token_is_accepted() {
        let argv = ["strata-ctl", "-token", "T", "fs.list", "{}"].map(String::from);
        let args = Args::try_parse_from(normalise_args(argv.into_iter())).unwrap();
        assert_eq!(args.token.as_deref(), Some("T"));
        assert_eq!(args.method, "fs.list");
        let argv = ["strata-ctl", "-token=U", "fs.list"].map(String::from);
        let args = Args::try_parse_from(normalise_args(argv.into_iter())).unwrap();
        assert_eq!(args.token.as_deref(), Some("U"));
    }

    #[test]
    fn params_must_be_a_json_object() {
        assert!(parse_params(r#"{"a":1}"#).is_ok());
        assert!(parse_params("[1]").unwrap_err().contains("object"));
        assert!(parse_params("{").unwrap_err().contains("not valid JSON"));
    }
}
