//! `strata-notes-client`: put, get and list notes with the `notes` capability routed to
//! it (`$CREDENTIALS_DIRECTORY/notes`, or `--credential`).
//!
//! Exit status as strata-ctl's: 0 done; 1 another error answered; 2 bad usage or local
//! set-up (no credential); 66 NOT_FOUND; 69 notes unreachable; 77 PERMISSION_DENIED or
//! UNAUTHENTICATED.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use strata_ipc::{Client, ClientError, Endpoint};
use strata_notes::api::{self, NoteName, NoteText};
use strata_proto::ErrorCode;
use strata_service::Credential;

#[derive(Parser)]
#[command(
    version,
    about = "Put, get and list Strata notes with a routed notes capability"
)]
struct Args {
    /// notes' socket (default: `<runtime dir>/notes.sock`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Runtime directory (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// The capability, by its name in `$CREDENTIALS_DIRECTORY`.
    #[arg(long, value_name = "NAME", default_value = "notes")]
    credential: String,
    /// Seconds to wait for an answer.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
    /// Print the result as JSON, as the protocol defines it.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a note.
    Put {
        /// The note's name.
        name: String,
        /// Its text.
        text: String,
    },
    /// Print a note's text.
    Get {
        /// The note's name.
        name: String,
    },
    /// Print every note's name, one a line.
    List,
}

/// How the client failed: the exit status and one line for stderr.
struct Failure(u8, String);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, line)) => {
            let _ = writeln!(
                std::io::stderr(),
                "strata-notes-client: {}",
                printable(&line)
            );
            ExitCode::from(code)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let usage = |e: &dyn std::fmt::Display| Failure(2, e.to_string());
    let token = Credential::from_env(&args.credential)
        .and_then(|c| c.token())
        .map_err(|e| usage(&e))?;
    let socket = match args.socket {
        Some(s) => s,
        None => {
            let dir =
                strata_ipc::paths::resolve_runtime_dir(args.runtime_dir).map_err(|e| usage(&e))?;
            strata_ipc::paths::socket_path(&dir, "notes")
        }
    };
    let mut client = Client::new(Endpoint::unix(&socket).map_err(|e| usage(&e))?);
    client.set_timeout(Duration::from_secs(args.timeout));
    client.set_token(Some(token.as_str().to_owned()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(1, format!("cannot start the async runtime: {e}")))?;
    let mut out = std::io::stdout().lock();
    let printed = runtime.block_on(async {
        match args.command {
            Command::Put { name, text } => {
                let params = api::PutParams {
                    name: NoteName::parse(&name).map_err(|e| usage(&e))?,
                    text: NoteText::new(text).map_err(|e| usage(&e))?,
                };
                let r = client.call::<api::Put>(&params).await.map_err(failure)?;
                Ok(if args.json {
                    json(&r)
                } else {
                    format!("{} {} ({} bytes)\n", r.status, r.name, r.bytes)
                })
            }
            Command::Get { name } => {
                let params = api::GetParams {
                    name: NoteName::parse(&name).map_err(|e| usage(&e))?,
                };
                let r = client.call::<api::Get>(&params).await.map_err(failure)?;
                Ok(if args.json {
                    json(&r)
                } else {
                    let mut text = printable_text(&r.text);
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text
                })
            }
            Command::List => {
                let r = client
                    .call::<api::List>(&api::ListParams {})
                    .await
                    .map_err(failure)?;
                Ok(if args.json {
                    json(&r)
                } else {
                    r.names.iter().map(|n| format!("{n}\n")).collect()
                })
            }
        }
    })?;
    match out.write_all(printed.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed stdout (`| head`) is a quiet success, as with strata-ctl.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure(1, format!("cannot write the output: {e}"))),
    }
}

fn json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The exit status of strata-ctl for the same failure.
fn failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::Server(body) => match body.code {
            ErrorCode::NotFound => 66,
            ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => 77,
            _ => 1,
        },
        ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            77
        }
        ClientError::Connect { .. }
        | ClientError::Timeout { .. }
        | ClientError::Io { .. }
        | ClientError::Closed { .. }
        | ClientError::Tls { .. }
        | ClientError::Protocol { .. } => 69,
        _ => 2,
    };
    Failure(code, e.to_string())
}

/// One line of text a server or another caller chose, safe for a terminal: the rule of
/// strata-ctl's `output::printable` — control characters other than tab (newline
/// included) and the bidirectional controls (U+202A–U+202E, U+2066–U+2069) are shown
/// escaped (`\x0a`, `\u{202e}`).
fn printable(text: &str) -> String {
    escaped(text, false)
}

/// A note's text, safe for a terminal: as [`printable`], but its newlines are kept.
fn printable_text(text: &str) -> String {
    escaped(text, true)
}

fn escaped(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let unsafe_char = (c.is_control() && c != '\t' && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if !unsafe_char {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_text};

    #[test]
    fn controls_and_bidi_overrides_never_reach_the_terminal() {
        let hostile = "a\u{1b}[2J\u{202e}cba\u{2066}x\u{2069}\u{9b}\tb\nc";
        assert_eq!(
            printable(hostile),
            "a\\x1b[2J\\u{202e}cba\\u{2066}x\\u{2069}\\u{9b}\tb\\x0ac"
        );
        assert_eq!(
            printable_text(hostile),
            "a\\x1b[2J\\u{202e}cba\\u{2066}x\\u{2069}\\u{9b}\tb\nc"
        );
        assert_eq!(printable("plain text"), "plain text");
    }
}
