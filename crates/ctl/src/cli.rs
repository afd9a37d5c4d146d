//! Command-line grammar. Raw mode (`strata-ctl <method> [params_json]`) is what clap calls
//! an external subcommand: any first word containing a dot is a method name.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use strata_proto::ServiceName;

#[derive(Parser, Debug)]
#[command(
    name = "strata-ctl",
    version,
    about = "Operate a Strata node: services, capabilities, files, discovery, cluster certificates",
    allow_external_subcommands = true,
    after_help = "Raw mode: `strata-ctl [--token T] <method> [params_json]` calls any method and \
                  prints the response envelope.\n\
                  Exit status: 0 ok; 1 the server answered another error, or a local operation \
                  was refused; 2 usage (or local set-up) error; 66 not found; 69 the server \
                  could not be reached; 77 permission denied or bad token. Raw mode exits 1 \
                  for any error envelope.\n\
                  `-token` is accepted as a synonym of `--token`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Capability token sent with the request (also `$STRATA_TOKEN`); `-` reads it from
    /// stdin. A token on the command line shows in `ps`: prefer --token-file or stdin.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (`-`: stdin). Refused if others may read it.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Runtime directory holding the sockets (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, global = true, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Send to this socket instead of resolving the service.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Send to this endpoint (`unix:///path` or `tcp://host:port`) instead of resolving
    /// the service. tcp endpoints use mutual TLS with $STRATA_TLS_CA/CERT/KEY.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "socket")]
    pub endpoint: Option<String>,
    /// Cluster mode: use the service's instance on this node (resolved through the local
    /// registry; another node's is reached over mutual TLS).
    #[arg(long, global = true, value_name = "NODE", conflicts_with_all = ["socket", "endpoint"])]
    pub node: Option<String>,
    /// Send to this service (raw mode; default: the method's prefix).
    #[arg(long, global = true, value_name = "NAME")]
    pub service: Option<String>,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Output: table (default), wide (more columns), json (stable, for scripts), name
    /// (one name a line).
    #[arg(short = 'o', long = "output", global = true, value_enum, value_name = "FORMAT",
          default_value_t = Format::Table)]
    pub output: Format,
    /// Same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print tables without their header line.
    #[arg(long, global = true)]
    pub no_headers: bool,
}

impl Global {
    /// The output format asked for (`--json` is `-o json`).
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// How results are printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns fitted to the terminal, times relative ("3 min ago").
    Table,
    /// The table with every column.
    Wide,
    /// JSON: the server's result (times as unix numbers), stable for scripts.
    Json,
    /// One name a line, for `xargs` and `$(...)`.
    Name,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Node status (supervisor.status).
    Status,
    /// Re-read the supervisor's manifest and apply the difference (supervisor.reload).
    Reload,
    /// Managed services.
    #[command(subcommand)]
    Svc(Svc),
    /// Capability tokens.
    #[command(subcommand)]
    Cap(Cap),
    /// Files, through a token's path prefix.
    #[command(subcommand)]
    Fs(Fs),
    /// Service discovery.
    #[command(subcommand)]
    Registry(Registry),
    /// The cluster: its certificates (local files) and its nodes and their removal (etcd).
    #[command(subcommand)]
    Cluster(Cluster),
    /// A local web console: services, capabilities and audit events in a browser.
    ///
    /// Serves HTTP on 127.0.0.1 (a free port unless --listen says otherwise) and prints
    /// one line, `Console: http://127.0.0.1:PORT/?secret=…`: open it. The secret works
    /// once, and is exchanged for an HttpOnly, SameSite=Strict session cookie; every
    /// request must name the listen address as its Host (no DNS rebinding) and every
    /// change (start, stop, restart, revoke) carries the page's CSRF token. The console is
    /// a client like strata-ctl: it calls the services over their sockets as you, with
    /// your token if you give one (--token-file), so it shows and does no more than
    /// strata-ctl would for you. Tokens never reach the browser, only cap_ids. It serves
    /// until SIGINT or SIGTERM.
    Console {
        /// Address to listen on; anything but loopback needs --allow-remote.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Allow a non-loopback --listen address (anyone who can reach it and has the
        /// printed URL acts as you; the traffic is not encrypted).
        #[arg(long)]
        allow_remote: bool,
        /// State directory whose audit.log the audit page follows (default:
        /// $STRATA_STATE_DIR, /var/lib/strata for root).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// etcd client URLs, comma-separated: the cluster page lists the nodes etcd
        /// records (read as you, like `cluster nodes`). Without it, no node list.
        #[arg(long, value_name = "URLS", env = "STRATA_ETCD_ENDPOINTS")]
        etcd: Option<String>,
        /// The cluster's etcd key prefix.
        #[arg(
            long,
            value_name = "PREFIX",
            env = "STRATA_CLUSTER_PREFIX",
            default_value = "/strata"
        )]
        cluster_prefix: String,
        #[command(flatten)]
        etcd_access: EtcdAccessArgs,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: strata-ctl.1 and one page per subcommand.
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Raw mode: `<method> [params_json]`.
    #[command(external_subcommand)]
    Raw(Vec<String>),
}

#[derive(Subcommand, Debug)]
pub enum Svc {
    /// Every service, its state and pid.
    List,
    /// One service in detail: state, pid, uptime, restarts, last exit, limits, last lines.
    Status {
        name: ServiceName,
        /// How many recent log lines to show (0: none).
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
    },
    /// Start a service.
    Start { name: ServiceName },
    /// Stop a service (stop signal, drain, then SIGKILL).
    Stop {
        name: ServiceName,
        /// Milliseconds between the stop signal and SIGKILL.
        #[arg(long, default_value_t = 2000)]
        drain_ms: u64,
    },
    /// Stop then start a service.
    Restart { name: ServiceName },
    /// The capabilities routed to a service's current run: cap_id, rights, constraints,
    /// expiry and rotations (never a token).
    Caps { name: ServiceName },
    /// A service's captured output, with time and stream.
    Logs {
        name: ServiceName,
        /// How many recent lines (default 100; with --since, all since then, up to 10,000).
        #[arg(short = 'n', long)]
        lines: Option<u64>,
        /// Only lines from this long ago on: 90s, 10m, 2h, 1d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Keep printing new lines as they arrive.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Cap {
    /// Obtain a capability from identity.
    Issue {
        /// The service the capability is for, e.g. `fs`.
        #[arg(long)]
        service: String,
        /// A right, e.g. `fs.read` (repeatable).
        #[arg(long = "right", value_name = "RIGHT")]
        rights: Vec<String>,
        /// A legacy action, e.g. `read` (repeatable).
        #[arg(long = "action", value_name = "ACTION")]
        actions: Vec<String>,
        /// Path prefix the capability is confined to.
        #[arg(long, value_name = "DIR")]
        prefix: Option<String>,
        /// Lifetime: seconds, or with a unit: 90s, 30m, 1h, 7d.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Rate limit, e.g. 50rps.
        #[arg(long, value_name = "RATE")]
        rate: Option<String>,
        /// Print only the token (for `strata-ctl cap issue … -q > token`).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Mint a weaker child of the token given with --token.
    Delegate {
        #[arg(long = "right", value_name = "RIGHT")]
        rights: Vec<String>,
        #[arg(long, value_name = "DIR")]
        prefix: Option<String>,
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        #[arg(long, value_name = "RATE")]
        rate: Option<String>,
        /// Print only the token.
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
    },
    /// Revoke a capability and its descendants: give its cap_id, or the token itself
    /// (`-`: read from stdin; none: the token of --token/--token-file).
    Revoke {
        #[arg(value_name = "CAP_ID_OR_TOKEN")]
        cap: Option<String>,
    },
    /// Decode and check a token (`-`: read from stdin; none: the token of
    /// --token/--token-file).
    Inspect {
        // Not called `token`: that id is the global --token's.
        #[arg(value_name = "TOKEN")]
        subject: Option<String>,
    },
    /// Identity's trusted signing keys.
    Keys,
}

#[derive(Subcommand, Debug)]
pub enum Fs {
    /// List a directory.
    Ls {
        #[arg(default_value = ".")]
        path: String,
    },
    /// Size, type, time and mode of a path.
    Stat { path: String },
    /// Write a file's bytes to stdout.
    Cat { path: String },
}

#[derive(Subcommand, Debug)]
pub enum Registry {
    /// Every registration.
    Ls,
    /// One service's endpoint.
    Resolve {
        /// The service (its id is not `service`, which the global `--service` flag has).
        #[arg(value_name = "SERVICE")]
        name: ServiceName,
    },
}

#[derive(Subcommand, Debug)]
pub enum Cluster {
    /// Create the cluster CA.
    ///
    /// Writes DIR/ca.crt (0644) and DIR/ca.key (0600). Refuses to replace an existing CA.
    Init {
        /// Directory for the CA's files (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA certificate's common name.
        #[arg(long, default_value = "Strata cluster CA")]
        name: String,
    },
    /// Issue a node's certificate and key, signed by the cluster CA.
    ///
    /// Writes node.crt (0644), node.key (0600) and a copy of ca.crt into --out; copy those
    /// three to the node. Refuses to replace existing node files unless --force. Only a
    /// node certificate (O=strata:nodes) serves TLS and signs the node's trust-bundle keys:
    /// give one to nodes only, and `add-user` certificates to people.
    AddNode {
        /// Node id: lowercase letters, digits and `-`, starting with a letter.
        node: String,
        /// The directory made by `cluster init`.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// An IP address or DNS name the node is reached at (repeatable, at least one).
        #[arg(long = "host", value_name = "HOST", required = true)]
        hosts: Vec<String>,
        /// Directory for the node's files (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
        /// Replace the node's files if --out already has them.
        #[arg(long)]
        force: bool,
    },
    /// Issue a user's certificate and key, for `strata-ctl --node` over mutual TLS.
    ///
    /// Writes user.crt (0644), user.key (0600) and a copy of ca.crt into --out; point
    /// STRATA_TLS_CA/CERT/KEY at them. A user certificate (O=strata:users, clientAuth
    /// only) opens connections to nodes, but never counts as a node: it cannot serve TLS or
    /// sign trust-bundle keys, and nodes see it as `user:<name>`. Refuses to replace
    /// existing user files unless --force.
    AddUser {
        /// User name: lowercase letters, digits and `-`, starting with a letter.
        user: String,
        /// The directory made by `cluster init`.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Directory for the user's files (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, value_name = "N", default_value_t = 90)]
        days: u32,
        /// Replace the user's files if --out already has them.
        #[arg(long)]
        force: bool,
    },
    /// Every node etcd knows of: alive (holding its lease), down (keys in the trust
    /// bundle but no lease) or removed, with its services and keys.
    Nodes {
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Remove a node from the cluster, in etcd: its signing keys leave the trust bundle
    /// (every token it issued is refused on every node from then on), its registrations
    /// vanish, and its id is never trusted again.
    RemoveNode {
        /// The node id to remove.
        node: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// Where the cluster's shared state is: the etcd endpoints and the key prefix.
#[derive(Args, Debug)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_name = "URLS", env = "STRATA_ETCD_ENDPOINTS")]
    pub etcd: String,
    /// The cluster's etcd key prefix.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "STRATA_CLUSTER_PREFIX",
        default_value = "/strata"
    )]
    pub prefix: String,
    #[command(flatten)]
    pub access: EtcdAccessArgs,
}

/// How to reach etcd over TLS and as which etcd user: the supervisor's flags of the same
/// names (files are read and checked before etcd is asked anything).
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdAccessArgs {
    /// The CA certificate (PEM) that signed etcd's server certificate; needed for
    /// https:// endpoints.
    #[arg(long, value_name = "FILE", env = "STRATA_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// A TLS client certificate for etcd (PEM), when etcd runs with --client-cert-auth.
    #[arg(long, value_name = "FILE", env = "STRATA_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM, mode 0600).
    #[arg(long, value_name = "FILE", env = "STRATA_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user to authenticate as (with --etcd-password-file).
    #[arg(long, value_name = "USER", env = "STRATA_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file (mode 0600 or stricter) holding the etcd user's password.
    #[arg(long, value_name = "FILE", env = "STRATA_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdAccessArgs {
    /// The value of the `STRATA_ETCD_*` variable `name` these flags stand for.
    pub fn var(&self, name: &str) -> Option<String> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match name {
            strata_cluster::ENV_ETCD_CA => path(&self.etcd_ca),
            strata_cluster::ENV_ETCD_CERT => path(&self.etcd_cert),
            strata_cluster::ENV_ETCD_KEY => path(&self.etcd_key),
            strata_cluster::ENV_ETCD_USER => self.etcd_user.clone(),
            strata_cluster::ENV_ETCD_PASSWORD_FILE => path(&self.etcd_password_file),
            _ => None,
        }
    }
}

/// Accept the original client's single-dash `-token`.
pub fn normalise_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    args.map(|a| match a.to_str() {
        Some("-token") => "--token".into(),
        Some(text) => match text.strip_prefix("-token=") {
            Some(v) => format!("--token={v}").into(),
            None => a,
        },
        None => a,
    })
    .collect()
}

/// `3600`, `90s`, `30m`, `1h`, `7d` → seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not a duration like 3600, 90s, 30m, 1h or 7d");
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests;
