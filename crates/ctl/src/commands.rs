//! What each subcommand does: one call (or a few) and a printout.

use crate::cli::{Cap, Cli, Command, Fs, Global, Registry, Svc};
use crate::output::{self, cell, table};
use crate::Failure;
use serde_json::{json, value::RawValue, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use strata_ipc::{paths, resolve_endpoint, resolve_on_node, Client, Endpoint};
use strata_proto::methods::supervisor::{
    self as sup, SvcLogsParams, SvcNameParams, SvcRestartParams, SvcStopParams,
};
use strata_proto::methods::{fs, identity, registry, Method, NoParams};
use strata_proto::ServiceName;

/// How many recent lines each `svc logs -f` poll looks at (the supervisor allows 10,000).
const FOLLOW_WINDOW: u64 = 1000;

/// Bytes asked for per `fs.read` by `fs cat`.
const CAT_CHUNK: u64 = 256 * 1024;

pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    // Local files only: no token, no connection.
    let command = match cli.command {
        Command::Cluster(c) => return crate::cluster::run(c, &cli.global).await,
        other => other,
    };
    let g = Session::new(cli.global)?;
    match command {
        Command::Raw(words) => g.raw(words).await,
        Command::Status => g.status().await,
        Command::Svc(s) => g.svc(s).await,
        Command::Cap(c) => g.cap(c).await,
        Command::Fs(f) => g.fs(f).await,
        Command::Registry(r) => g.registry(r).await,
        Command::Completions { .. } | Command::Cluster(_) => Ok(ExitCode::SUCCESS),
    }
}

struct Session {
    global: Global,
    token: Option<String>,
}

impl Session {
    fn new(global: Global) -> Result<Session, Failure> {
        let token = match (&global.token, &global.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        Ok(Session { global, token })
    }

    /// The runtime directory, checked (a socket in a directory another user controls is
    /// never trusted with a token). Only asked for when no `--socket` names the server.
    fn runtime_dir(&self) -> Result<PathBuf, Failure> {
        paths::resolve_runtime_dir(self.global.runtime_dir.clone())
            .map_err(|e| Failure::Usage(e.to_string()))
    }

    async fn client(&self, service: &str) -> Result<Client, Failure> {
        let endpoint = match &self.global.socket {
            Some(socket) => {
                let absolute =
                    std::path::absolute(socket).map_err(|e| Failure::Usage(e.to_string()))?;
                Endpoint::unix(&absolute).map_err(|e| Failure::Usage(e.to_string()))?
            }
            None => match (&self.global.endpoint, &self.global.node) {
                (Some(url), _) => {
                    Endpoint::parse(url).map_err(|e| Failure::Usage(e.to_string()))?
                }
                (None, Some(node)) => resolve_on_node(&self.runtime_dir()?, service, node).await?,
                (None, None) => resolve_endpoint(&self.runtime_dir()?, service).await?,
            },
        };
        let mut client = Client::new(endpoint);
        client.set_timeout(Duration::from_secs_f64(self.global.timeout));
        client.set_token(self.token.clone());
        Ok(client)
    }

    fn need_token(&self, what: &str) -> Result<(), Failure> {
        if self.token.is_none() {
            return Err(Failure::Usage(format!(
                "{what} needs a token: --token, --token-file or $STRATA_TOKEN"
            )));
        }
        Ok(())
    }

    /// Call a supervisor method; the result comes back as JSON for printing, keys in the
    /// order `--json` has always printed them.
    async fn supervisor<M: Method>(&self, params: &M::Params) -> Result<Value, Failure> {
        let mut client = self.client("supervisor").await?;
        let result = client.call::<M>(params).await?;
        serde_json::to_value(&result).map_err(|e| Failure::Usage(e.to_string()))
    }

    async fn raw(&self, words: Vec<String>) -> Result<ExitCode, Failure> {
        let (method, params) = match words.as_slice() {
            [m] => (m.clone(), None),
            [m, p] => (m.clone(), Some(parse_params(p)?)),
            _ => {
                return Err(Failure::Usage(
                    "usage: strata-ctl <method> [params_json]".into(),
                ))
            }
        };
        let service = match (&self.global.service, method.split_once('.')) {
            (Some(s), _) => s.clone(),
            (None, Some(("sys", _))) if self.global.socket.is_none() => {
                return Err(Failure::Usage(format!(
                    "{method} is answered by every service: choose one with --service NAME"
                )))
            }
            (None, Some((s, rest))) if !s.is_empty() && !rest.is_empty() => s.to_owned(),
            _ if self.global.socket.is_some() => String::new(),
            _ => {
                return Err(Failure::Usage(format!(
                "`{method}` is not a method name like `registry.list` or a subcommand (see --help)"
            )))
            }
        };
        let mut client = self.client(&service).await?;
        let response = client.call_raw(&method, params).await?;
        output::json(&response);
        Ok(if response.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::EXIT_SERVER_ERROR)
        })
    }

    async fn status(&self) -> Result<ExitCode, Failure> {
        let r = self.supervisor::<sup::Status>(&NoParams {}).await?;
        if self.global.json {
            output::json(&r);
        } else if let Value::Object(map) = &r {
            let pairs: Vec<(&str, String)> =
                map.iter().map(|(k, v)| (k.as_str(), cell(v))).collect();
            output::fields(&pairs);
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn svc(&self, cmd: Svc) -> Result<ExitCode, Failure> {
        let done = |r: Value, what: &str, name: &str| {
            if self.global.json {
                output::json(&r);
            } else {
                println!("{name}: {what}");
            }
            Ok(ExitCode::SUCCESS)
        };
        match cmd {
            Svc::List => {
                let r = self.supervisor::<sup::SvcList>(&NoParams {}).await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    let rows: Vec<Vec<String>> = r["services"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            vec![
                                cell(&s["name"]),
                                cell(&s["state"]),
                                cell(&s["pid"]),
                                cell(&s["restarts"]),
                                cell(&s["since"]),
                            ]
                        })
                        .collect();
                    table(&["NAME", "STATE", "PID", "RESTARTS", "SINCE"], &rows);
                }
                Ok(ExitCode::SUCCESS)
            }
            Svc::Start { name } => {
                let params = SvcNameParams { name: name.clone() };
                let r = self.supervisor::<sup::SvcStart>(&params).await?;
                done(r, "started", &name)
            }
            Svc::Stop { name, drain_ms } => {
                let params = SvcStopParams {
                    name: name.clone(),
                    drain_ms,
                };
                let r = self.supervisor::<sup::SvcStop>(&params).await?;
                done(r, "stopped", &name)
            }
            Svc::Restart { name } => {
                let params = SvcRestartParams {
                    name: name.clone(),
                    drain_ms: sup::DEFAULT_DRAIN_MS,
                };
                let r = self.supervisor::<sup::SvcRestart>(&params).await?;
                done(r, "restarted", &name)
            }
            Svc::Logs {
                name,
                lines,
                follow,
            } => self.logs(&name, lines, follow).await,
        }
    }

    async fn logs(
        &self,
        name: &ServiceName,
        lines: u64,
        follow: bool,
    ) -> Result<ExitCode, Failure> {
        // Following: each poll returns the latest lines; print those after the last one
        // already printed (all of them if it scrolled out of the window).
        let mut last: Option<Value> = None;
        loop {
            // The first call shows the last `lines`; later ones look back further so no
            // line written between polls is missed.
            let window = if last.is_some() {
                FOLLOW_WINDOW.max(lines)
            } else {
                lines
            };
            let params = SvcLogsParams {
                name: name.clone(),
                lines: usize::try_from(window).unwrap_or(usize::MAX),
            };
            let r = self.supervisor::<sup::SvcLogs>(&params).await?;
            let entries = r["lines"].as_array().cloned().unwrap_or_default();
            let fresh = match &last {
                Some(seen) => match entries.iter().rposition(|e| e == seen) {
                    Some(i) => &entries[i + 1..],
                    None => &entries[..],
                },
                None => &entries[..],
            };
            if self.global.json && !follow {
                output::json(&r);
            } else {
                let mut out = std::io::stdout().lock();
                for entry in fresh {
                    let _ = writeln!(out, "{}", log_text(entry));
                }
                let _ = out.flush();
            }
            if let Some(newest) = entries.last() {
                last = Some(newest.clone());
            }
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn cap(&self, cmd: Cap) -> Result<ExitCode, Failure> {
        match cmd {
            Cap::Issue {
                service,
                rights,
                actions,
                prefix,
                ttl,
                rate,
                quiet,
            } => {
                let ttl = ttl
                    .map(|t| crate::cli::parse_duration(&t))
                    .transpose()
                    .map_err(Failure::Usage)?;
                let params = identity::IssueParams {
                    service,
                    rights: (!rights.is_empty()).then_some(rights),
                    actions: (!actions.is_empty()).then_some(actions),
                    path_prefix: prefix,
                    ttl_seconds: ttl,
                    rate_limit: rate,
                };
                let mut client = self.client("identity").await?;
                let issued = client.call::<identity::Issue>(&params).await?;
                self.print_issued(&issued, quiet);
            }
            Cap::Delegate {
                rights,
                prefix,
                ttl,
                rate,
                quiet,
            } => {
                self.need_token("cap delegate")?;
                let ttl = ttl
                    .map(|t| crate::cli::parse_duration(&t))
                    .transpose()
                    .map_err(Failure::Usage)?;
                let params = identity::DelegateParams {
                    token: self.token.clone().unwrap_or_default(),
                    rights: (!rights.is_empty()).then_some(rights),
                    path_prefix: prefix,
                    ttl_seconds: ttl,
                    rate_limit: rate,
                };
                let mut client = self.client("identity").await?;
                let issued = client.call::<identity::Delegate>(&params).await?;
                self.print_issued(&issued, quiet);
            }
            Cap::Revoke { cap } => {
                let mut client = self.client("identity").await?;
                let cap_id = if cap.starts_with("v2.") || cap.starts_with("v4.") {
                    let seen = client
                        .call::<identity::Introspect>(&identity::IntrospectParams { token: cap })
                        .await?;
                    match seen.claims["jti"].as_str() {
                        Some(jti) => jti.to_owned(),
                        None => {
                            return Err(Failure::Usage(format!(
                                "cannot read a cap_id from that token: {}",
                                seen.reason.unwrap_or_default()
                            )))
                        }
                    }
                } else {
                    cap
                };
                let r = client
                    .call::<identity::Revoke>(&identity::RevokeParams {
                        cap_id: cap_id.clone(),
                    })
                    .await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    println!("{cap_id}: {}", r.status);
                }
            }
            Cap::Inspect { token } => {
                let mut client = self.client("identity").await?;
                let r = client
                    .call::<identity::Introspect>(&identity::IntrospectParams { token })
                    .await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    let c = &r.claims;
                    output::fields(&[
                        ("valid", r.valid.to_string()),
                        ("reason", r.reason.clone().unwrap_or_default()),
                        ("cap_id", cell(&c["jti"])),
                        ("service", cell(&c["service"])),
                        ("rights", cell(&c["rights"])),
                        ("path_prefix", cell(&c["constraints"]["path_prefix"])),
                        ("rate_limit", cell(&c["constraints"]["rate_limit"])),
                        ("expires", cell(&c["exp"])),
                        ("subject", cell(&c["sub"])),
                        ("parents", cell(&c["parents"])),
                        ("kid", r.kid.clone().unwrap_or_default()),
                    ]);
                }
                if !r.valid {
                    return Ok(ExitCode::from(crate::EXIT_SERVER_ERROR));
                }
            }
            Cap::Keys => {
                let mut client = self.client("identity").await?;
                let r = client.call::<identity::Keys>(&NoParams {}).await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    let rows: Vec<Vec<String>> = r
                        .keys
                        .iter()
                        .map(|k| {
                            vec![
                                k.kid.clone(),
                                if k.current {
                                    "current".into()
                                } else {
                                    "retired".into()
                                },
                                k.not_after.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(&["KID", "STATUS", "TRUSTED UNTIL"], &rows);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn print_issued(&self, issued: &identity::IssueResult, quiet: bool) {
        if quiet {
            println!("{}", issued.token);
        } else if self.global.json {
            output::json(issued);
        } else {
            output::fields(&[
                ("token", issued.token.clone()),
                ("cap_id", issued.cap_id.clone()),
                ("expires", issued.expires.to_string()),
            ]);
        }
    }

    async fn fs(&self, cmd: Fs) -> Result<ExitCode, Failure> {
        self.need_token("fs commands")?;
        let mut client = self.client("fs").await?;
        match cmd {
            Fs::Ls { path } => {
                let mut entries = Vec::new();
                let mut cursor = None;
                loop {
                    let page = client
                        .call::<fs::List>(&fs::ListParams {
                            path: path.clone(),
                            limit: None,
                            cursor,
                        })
                        .await?;
                    entries.extend(page.entries);
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                if self.global.json {
                    output::json(&json!({ "entries": entries }));
                } else {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            let name = if e.is_dir {
                                format!("{}/", e.name)
                            } else {
                                e.name.clone()
                            };
                            vec![e.size.to_string(), name]
                        })
                        .collect();
                    table(&["SIZE", "NAME"], &rows);
                }
            }
            Fs::Stat { path } => {
                let s = client.call::<fs::Stat>(&fs::StatParams { path }).await?;
                if self.global.json {
                    output::json(&s);
                } else {
                    output::fields(&[
                        ("size", s.size.to_string()),
                        (
                            "type",
                            if s.is_dir {
                                "directory".into()
                            } else {
                                "file".into()
                            },
                        ),
                        ("modified", s.modified.clone()),
                        ("mode", format!("{:04o}", s.mode)),
                    ]);
                }
            }
            Fs::Cat { path } => cat(&mut client, &path).await?,
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn registry(&self, cmd: Registry) -> Result<ExitCode, Failure> {
        let mut client = self.client("registry").await?;
        match cmd {
            Registry::Ls => {
                let r = client.call::<registry::List>(&NoParams {}).await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    let rows: Vec<Vec<String>> = r
                        .services
                        .iter()
                        .map(|e| vec![e.service.clone(), e.endpoint.clone(), e.api_v.to_string()])
                        .collect();
                    table(&["SERVICE", "ENDPOINT", "API"], &rows);
                }
            }
            Registry::Resolve { name } => {
                let r = client
                    .call::<registry::Resolve>(&registry::ServiceParams::new(name.clone()))
                    .await?;
                if self.global.json {
                    output::json(&r);
                } else {
                    println!("{}", output::printable(&r.endpoint));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Open, stream every chunk to stdout as raw bytes, close (also on error).
async fn cat(client: &mut Client, path: &str) -> Result<(), Failure> {
    let size = client
        .call::<fs::Stat>(&fs::StatParams {
            path: path.to_owned(),
        })
        .await
        .map(|s| s.size)
        .unwrap_or(0);
    let handle = client
        .call::<fs::Open>(&fs::OpenParams {
            path: path.to_owned(),
            mode: "r".into(),
        })
        .await?
        .handle;
    let streamed = stream(client, &handle, size).await;
    let closed = client.call::<fs::Close>(&fs::CloseParams { handle }).await;
    streamed?;
    closed?;
    Ok(())
}

async fn stream(client: &mut Client, handle: &str, size: u64) -> Result<(), Failure> {
    let progress = std::io::stderr().is_terminal() && size >= 8 * CAT_CHUNK;
    let mut stdout = std::io::stdout().lock();
    let mut offset = 0u64;
    loop {
        let chunk = client
            .call::<fs::Read>(&fs::ReadParams {
                handle: handle.to_owned(),
                offset,
                size: CAT_CHUNK,
            })
            .await?;
        let bytes = decode_b64(&chunk.data_b64)?;
        stdout
            .write_all(&bytes)
            .map_err(|e| Failure::Usage(format!("cannot write to stdout: {e}")))?;
        offset += chunk.bytes_read;
        if progress {
            eprint!(
                "\r{:>3}% of {size} bytes",
                (offset * 100).checked_div(size).unwrap_or(100).min(100)
            );
        }
        if chunk.eof || chunk.bytes_read == 0 {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    stdout
        .flush()
        .map_err(|e| Failure::Usage(format!("cannot write to stdout: {e}")))
}

fn decode_b64(text: &str) -> Result<Vec<u8>, Failure> {
    use ct_codecs::{Base64, Decoder};
    Base64::decode_to_vec(text, None)
        .map_err(|_| Failure::Usage("server sent invalid base64".into()))
}

fn parse_params(text: &str) -> Result<Box<RawValue>, Failure> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("params_json is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Failure::Usage(
            "params_json must be a JSON object, e.g. '{\"service\":\"fs\"}'".into(),
        ));
    }
    serde_json::value::to_raw_value(&value).map_err(|e| Failure::Usage(e.to_string()))
}

/// One captured line as text: the line itself, or the whole entry if it has no `text`.
fn log_text(entry: &Value) -> String {
    match entry.get("text") {
        Some(Value::String(t)) => output::printable(t).into_owned(),
        _ => output::printable(&cell(entry)).into_owned(),
    }
}
