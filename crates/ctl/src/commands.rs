//! What each subcommand does: one call (or a few) and a printout. The `svc`, `status`
//! and `reload` commands are in `svc.rs`; `cluster` in `cluster.rs`.

use crate::cli::{Cap, Cli, Command, Format, Fs, Global, Registry};
use crate::failure::{Failure, EXIT_FAILED};
use crate::output::{self, cell, table, Column, Layout};
use crate::token::{self, Stdin};
use crate::when;
use serde::Serialize;
use serde_json::{json, value::RawValue, Value};
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use strata_ipc::{paths, resolve_endpoint, resolve_on_node, Client, Endpoint};
use strata_proto::methods::{fs, identity, registry, supervisor as sup, Method, NoParams};

/// Bytes asked for per `fs.read` by `fs cat`.
const CAT_CHUNK: u64 = 256 * 1024;

pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    // Local files and etcd only: no token, no socket.
    let command = match cli.command {
        Command::Cluster(c) => return crate::cluster::run(c, &cli.global).await,
        other => other,
    };
    let g = Session::new(cli.global)?;
    match command {
        Command::Raw(words) => g.raw(words).await,
        Command::Status => g.status().await,
        Command::Reload => g.reload().await,
        Command::Svc(s) => g.svc(s).await,
        Command::Cap(c) => g.cap(c).await,
        Command::Fs(f) => g.fs(f).await,
        Command::Registry(r) => g.registry(r).await,
        Command::Console {
            listen,
            allow_remote,
            state_dir,
            etcd,
            cluster_prefix,
            etcd_access,
        } => {
            let etcd = etcd
                .map(|e| crate::cluster::etcd_config(&e, &cluster_prefix, &etcd_access))
                .transpose()?;
            crate::console::run(
                g,
                crate::console::Options {
                    listen,
                    allow_remote,
                    state_dir,
                    etcd,
                },
            )
            .await
        }
        Command::Completions { .. } | Command::Man { .. } | Command::Cluster(_) => {
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One invocation: the global options and the token, read once.
pub struct Session {
    pub global: Global,
    pub token: Option<String>,
    stdin: RefCell<Stdin>,
}

impl Session {
    /// The session for `global`, its token read now (from the option, a file or stdin).
    fn new(global: Global) -> Result<Session, Failure> {
        let mut stdin = Stdin::default();
        let token = match (&global.token, &global.token_file) {
            (Some(t), _) if t == "-" => Some(stdin.token()?),
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(file)) => Some(token::from_file(file, &mut stdin)?),
            (None, None) => None,
        };
        Ok(Session {
            global,
            token,
            stdin: RefCell::new(stdin),
        })
    }

    /// A token given as an argument (`cap inspect`, `cap revoke`): `-` is stdin, none
    /// is the session's token.
    fn token_arg(&self, given: Option<String>, what: &str) -> Result<String, Failure> {
        match given {
            Some(t) if t == "-" => self.stdin.borrow_mut().token(),
            Some(t) => Ok(t),
            None => self.token.clone().ok_or_else(|| {
                Failure::Usage(format!(
                    "{what} needs a token: as its argument (`-` for stdin), or --token-file, --token or $STRATA_TOKEN"
                ))
            }),
        }
    }

    pub fn format(&self) -> Format {
        self.global.format()
    }

    /// How tables are laid out for this invocation.
    pub fn layout(&self) -> Layout {
        Layout {
            wide: self.format() == Format::Wide,
            headers: !self.global.no_headers,
            width: output::terminal_width(),
        }
    }

    /// Print a listing as asked: JSON (`value`), names, or a table.
    pub fn listing<T: Serialize + ?Sized>(
        &self,
        value: &T,
        columns: &[Column],
        rows: &[Vec<String>],
        names: &[String],
    ) {
        match self.format() {
            Format::Json => output::json(value),
            Format::Name => {
                for name in names {
                    println!("{}", output::printable(name));
                }
            }
            Format::Table | Format::Wide => table(&self.layout(), columns, rows),
        }
    }

    /// `-o name` has nothing to name outside a listing.
    pub fn not_a_listing(&self, what: &str) -> Result<(), Failure> {
        if self.format() == Format::Name {
            return Err(Failure::Usage(format!(
                "-o name is for listings; {what} is not one (try -o json)"
            )));
        }
        Ok(())
    }

    pub async fn client(&self, service: &str) -> Result<Client, Failure> {
        client_for(&self.global, self.token.as_deref(), service).await
    }

    fn need_token(&self, what: &str) -> Result<(), Failure> {
        if self.token.is_none() {
            return Err(Failure::Usage(format!(
                "{what} needs a token: --token-file FILE (`-`: stdin), --token or $STRATA_TOKEN"
            )));
        }
        Ok(())
    }

    /// Call a supervisor method.
    pub async fn supervisor<M: Method>(&self, params: &M::Params) -> Result<M::Result, Failure> {
        let mut client = self.client("supervisor").await?;
        Ok(client.call::<M>(params).await?)
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
        // Raw mode keeps the original client's status: 1 for any error envelope.
        Ok(if response.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        })
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
                self.not_a_listing("cap issue")?;
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
                    subject: None,
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
                self.not_a_listing("cap delegate")?;
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
                self.not_a_listing("cap revoke")?;
                let cap = self.token_arg(cap, "cap revoke")?;
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
                                output::printable(&seen.reason.unwrap_or_default())
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
                if self.format() == Format::Json {
                    output::json(&r);
                } else {
                    println!("{cap_id}: {}", output::printable(&r.status));
                }
                if r.unconfirmed > 0 {
                    // Durable and enforced by every verifier that confirmed; the others
                    // catch up from the feed.
                    let _ = writeln!(
                        std::io::stderr(),
                        "strata-ctl: warning: {} verifier(s) did not confirm the revocation in time and may accept the token until they catch up (repeat `cap revoke` to check)",
                        r.unconfirmed
                    );
                }
            }
            Cap::Inspect { subject } => {
                self.not_a_listing("cap inspect")?;
                let token = self.token_arg(subject, "cap inspect")?;
                let mut client = self.client("identity").await?;
                let r = client
                    .call::<identity::Introspect>(&identity::IntrospectParams { token })
                    .await?;
                if self.format() == Format::Json {
                    output::json(&r);
                } else {
                    let c = &r.claims;
                    output::fields(&[
                        ("valid", r.valid.to_string()),
                        ("reason", r.reason.clone().unwrap_or_else(|| "-".into())),
                        ("cap_id", cell(&c["jti"])),
                        ("service", cell(&c["service"])),
                        ("rights", words(&c["rights"])),
                        ("path_prefix", dash(cell(&c["constraints"]["path_prefix"]))),
                        ("rate_limit", dash(cell(&c["constraints"]["rate_limit"]))),
                        ("issued", time_cell(&c["iat"])),
                        ("expires", time_cell(&c["exp"])),
                        ("subject", cell(&c["sub"])),
                        ("issuer", cell(&c["iss"])),
                        ("parents", words(&c["parents"])),
                        ("kid", r.kid.clone().unwrap_or_default()),
                    ]);
                }
                if !r.valid {
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
            Cap::Keys => {
                let mut client = self.client("identity").await?;
                let r = client.call::<identity::Keys>(&NoParams {}).await?;
                let rows: Vec<Vec<String>> = r
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.kid.clone(),
                            if k.current { "current" } else { "retired" }.to_owned(),
                            k.not_after
                                .as_deref()
                                .map_or_else(|| "-".to_owned(), when::relative_rfc3339),
                            k.node.clone().unwrap_or_else(|| "-".into()),
                            k.not_before
                                .as_deref()
                                .map_or_else(|| "-".to_owned(), when::relative_rfc3339),
                            k.public_key.clone(),
                        ]
                    })
                    .collect();
                let names: Vec<String> = r.keys.iter().map(|k| k.kid.clone()).collect();
                self.listing(
                    &r,
                    &[
                        Column::fixed("KID"),
                        Column::fixed("STATUS"),
                        Column::fixed("TRUSTED UNTIL"),
                        Column::wide("NODE"),
                        Column::wide("NOT BEFORE"),
                        Column::wide_elastic("PUBLIC KEY"),
                    ],
                    &rows,
                    &names,
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn print_issued(&self, issued: &identity::IssueResult, quiet: bool) {
        if quiet {
            println!("{}", issued.token);
        } else if self.format() == Format::Json {
            output::json(issued);
        } else {
            output::fields(&[
                ("token", issued.token.clone()),
                ("cap_id", issued.cap_id.clone()),
                ("expires", when::stamp_and_relative(issued.expires)),
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
                let names: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        if e.is_dir {
                            format!("{}/", e.name)
                        } else {
                            e.name.clone()
                        }
                    })
                    .collect();
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .zip(&names)
                    .map(|(e, name)| {
                        let kind = if e.is_dir { "directory" } else { "file" };
                        vec![e.size.to_string(), name.clone(), kind.to_owned()]
                    })
                    .collect();
                self.listing(
                    &json!({ "entries": entries }),
                    &[
                        Column::fixed("SIZE"),
                        Column::elastic("NAME"),
                        Column::wide("TYPE"),
                    ],
                    &rows,
                    &names,
                );
            }
            Fs::Stat { path } => {
                self.not_a_listing("fs stat")?;
                let s = client.call::<fs::Stat>(&fs::StatParams { path }).await?;
                if self.format() == Format::Json {
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
                        (
                            "modified",
                            format!("{} ({})", s.modified, when::relative_rfc3339(&s.modified)),
                        ),
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
                // Entries without a node are this node's (the registry names nodes only in
                // cluster mode): the supervisor says which node this is.
                let here = if r.services.iter().any(|e| e.node.is_none())
                    && self.format() != Format::Json
                {
                    self.supervisor::<sup::Status>(&NoParams {})
                        .await
                        .map(|s| s.node_id)
                        .unwrap_or_else(|_| "-".to_owned())
                } else {
                    "-".to_owned()
                };
                let rows: Vec<Vec<String>> = r
                    .services
                    .iter()
                    .map(|e| {
                        vec![
                            e.service.clone(),
                            e.node.clone().unwrap_or_else(|| here.clone()),
                            e.endpoint.clone(),
                            e.api_v.to_string(),
                            e.remote_endpoint.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                let mut names: Vec<String> = r.services.iter().map(|e| e.service.clone()).collect();
                names.dedup();
                self.listing(
                    &r,
                    &[
                        Column::fixed("SERVICE"),
                        Column::fixed("NODE"),
                        Column::elastic("ENDPOINT"),
                        Column::wide("API"),
                        Column::wide_elastic("REMOTE ENDPOINT"),
                    ],
                    &rows,
                    &names,
                );
            }
            Registry::Resolve { name } => {
                let r = client
                    .call::<registry::Resolve>(&registry::ServiceParams::new(name.clone()))
                    .await?;
                self.not_a_listing("registry resolve")?;
                if self.format() == Format::Json {
                    output::json(&r);
                } else {
                    println!("{}", output::printable(&r.endpoint));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A client for `service` as the global options say (`--socket`, `--endpoint`, `--node`,
/// else resolved in the runtime directory), sending `token`: what every subcommand and
/// the console call through.
pub async fn client_for(
    global: &Global,
    token: Option<&str>,
    service: &str,
) -> Result<Client, Failure> {
    // The runtime directory, checked (a socket in a directory another user controls is
    // never trusted with a token). Only asked for when no `--socket` names the server.
    let runtime_dir = || {
        paths::resolve_runtime_dir(global.runtime_dir.clone())
            .map_err(|e| Failure::Usage(e.to_string()))
    };
    let endpoint = match &global.socket {
        Some(socket) => {
            let absolute =
                std::path::absolute(socket).map_err(|e| Failure::Usage(e.to_string()))?;
            Endpoint::unix(&absolute).map_err(|e| Failure::Usage(e.to_string()))?
        }
        None => match (&global.endpoint, &global.node) {
            (Some(url), _) => Endpoint::parse(url).map_err(|e| Failure::Usage(e.to_string()))?,
            (None, Some(node)) => resolve_on_node(&runtime_dir()?, service, node).await?,
            (None, None) => resolve_endpoint(&runtime_dir()?, service).await?,
        },
    };
    let mut client = Client::new(endpoint);
    client.set_timeout(Duration::from_secs_f64(global.timeout));
    client.set_token(token.map(str::to_owned));
    Ok(client)
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
            let _ = write!(
                std::io::stderr(),
                "\r{:>3}% of {size} bytes",
                (offset * 100).checked_div(size).unwrap_or(100).min(100)
            );
        }
        if chunk.eof || chunk.bytes_read == 0 {
            break;
        }
    }
    if progress {
        let _ = writeln!(std::io::stderr());
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

/// A time claim (RFC 3339 text, or unix seconds) as `2026-12-01 13:40:02 UTC (in 59
/// min)`; `-` when absent.
fn time_cell(v: &Value) -> String {
    match (v.as_i64(), v.as_str().and_then(when::parse_rfc3339)) {
        (Some(t), _) | (None, Some(t)) => when::stamp_and_relative(t),
        (None, None) => dash(cell(v)),
    }
}

/// `a, b` from a JSON array (a string or nothing as itself); `-` when empty.
fn words(v: &Value) -> String {
    match v.as_array() {
        Some(items) => dash(items.iter().map(cell).collect::<Vec<_>>().join(", ")),
        None => dash(cell(v)),
    }
}

fn dash(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}
