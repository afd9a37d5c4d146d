//! `strata-ctl console`: a local web console. A client like the rest of strata-ctl: it
//! calls the services over their sockets with the invoking user's peer credentials and
//! token ([`Caller`]), and adds no listener to any service; its own listener is a
//! loopback HTTP server (unless `--allow-remote`) for one browser.
//!
//! - `http.rs`: the listener and the one security gate every request passes first.
//! - `api.rs`: the JSON endpoints and the actions (start, stop, restart, revoke).
//! - `sse.rs`: answer bodies, and the event streams (logs, audit).
//! - `audit.rs`: following the audit log across rotations.
//! - `metrics.rs`: `/proc` and the `sys.metrics` request rate for the node page.
//! - `peer.rs`: on loopback, which uid owns a connection's other end (only the
//!   console's own is served).
//! - `assets/`: the pages (HTML, CSS, JS), embedded.

// A refusal is the answer itself (`Err(Response)`), made at most once per request:
// boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod api;
mod audit;
mod http;
mod metrics;
mod peer;
mod sse;

use crate::cli::Global;
use crate::commands::Session;
use crate::failure::Failure;
use bytes::Bytes;
use http::{Admitted, Gate, Query};
use hyper::{Method, Response, StatusCode};
use sse::Body;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use strata_ipc::Client;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What `strata-ctl console` was asked for.
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Whether a non-loopback address is allowed.
    pub allow_remote: bool,
    /// The state directory holding `audit.log`.
    pub state_dir: Option<PathBuf>,
    /// How to reach etcd (endpoints, prefix, TLS and user), for the cluster page's node
    /// list.
    pub etcd: Option<strata_cluster::ClusterConfig>,
}

/// Who the console calls the services as: the global options and the token (kept here,
/// never sent to the browser).
pub struct Caller {
    global: Global,
    token: Option<String>,
}

impl Caller {
    /// A client for `service`, as every strata-ctl command gets one.
    pub async fn client(&self, service: &str) -> Result<Client, Failure> {
        crate::commands::client_for(&self.global, self.token.as_deref(), service).await
    }

    /// A client for a service's own socket as `svc.list` names it, for `sys.metrics`
    /// (admin by peer credentials, so no token is needed): it carries no token, since
    /// the socket is the manifest's path, not one in the checked runtime directory.
    pub fn client_at(&self, socket: &str) -> Result<Client, Failure> {
        let endpoint = strata_ipc::Endpoint::unix(std::path::Path::new(socket))
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let mut client = Client::new(endpoint);
        client.set_timeout(std::time::Duration::from_secs_f64(
            self.global.timeout.min(5.0),
        ));
        Ok(client)
    }
}

/// The console's shared state.
pub struct Console {
    gate: Gate,
    caller: Caller,
    /// `<state dir>/audit.log`, or why there is none.
    audit_log: Result<PathBuf, String>,
    rates: Mutex<metrics::Rates>,
    /// How to reach etcd (`--etcd`, `--cluster-prefix`, `--etcd-ca`…).
    etcd: Option<strata_cluster::ClusterConfig>,
}

/// Run the console until SIGINT or SIGTERM.
pub async fn run(session: Session, options: Options) -> Result<ExitCode, Failure> {
    let addr = options.listen;
    check_listen(addr, options.allow_remote).map_err(Failure::Usage)?;
    if !addr.ip().is_loopback() {
        let _ = writeln!(
            std::io::stderr(),
            "strata-ctl: warning: the console listens on {addr}, not loopback: anyone who can reach it and learns the URL acts as you, the traffic is not encrypted, and (unlike on loopback) connections are not limited to your own uid: only the secret and the session cookie hold others off"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Failed(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Failed(format!("cannot read the listen address: {e}")))?;
    let host = bound.to_string();
    let secret = http::random_text().map_err(Failure::Failed)?;
    let audit_log = state_dir(options.state_dir).map(|d| audit::log_path(&d));
    let console = Arc::new(Console {
        gate: Gate::new(host.clone(), &secret),
        caller: Caller {
            global: session.global,
            token: session.token,
        },
        audit_log,
        rates: Mutex::new(metrics::Rates::default()),
        etcd: options.etcd,
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Console: http://{host}/?secret={secret}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Failed(format!("cannot print the URL: {e}")))?;
    }
    let signals = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    // On loopback, only the console's own uid is served; a remote peer has no uid to check.
    let only_uid = bound
        .ip()
        .is_loopback()
        .then(|| rustix::process::geteuid().as_raw());
    tokio::select! {
        () = http::serve(listener, console, only_uid) => {}
        () = signals => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Why `--listen addr` is refused, if it is: an IPv4-mapped IPv6 address (it would
/// count as non-loopback, and a loopback one would escape the uid check), a non-loopback
/// one without `allow_remote`, or an unspecified one.
fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if let std::net::IpAddr::V6(v6) = addr.ip() {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(format!(
                "--listen {addr} is an IPv4-mapped address: give the IPv4 address itself ({v4}:{})",
                addr.port()
            ));
        }
    }
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(format!(
            "--listen {addr} is not a loopback address: anyone who reaches it with the printed URL acts as you; add --allow-remote to mean it"
        ));
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "--listen {addr}: give the one IP address the browser will use (the Host it sends must equal the listen address), not an unspecified one"
        ));
    }
    Ok(())
}

/// The state directory, checked as the services check theirs.
fn state_dir(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    strata_ipc::paths::resolve_state_dir(explicit).map_err(|e| e.to_string())
}

/// Route a request the gate admitted.
async fn route(
    console: &Arc<Console>,
    admitted: &Admitted,
    method: &Method,
    path: &str,
    query: &Query,
) -> Response<Body> {
    if let Some(rest) = path.strip_prefix("/api/") {
        return api::route(console, admitted, method, rest, query).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "Pages are for GET.\n");
    }
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return http::text(StatusCode::NOT_FOUND, "Not found.\n"),
    };
    http::with_type(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::check_listen;

    #[test]
    fn listen_addresses_are_loopback_or_meant_and_never_ipv4_mapped() {
        let ok = |a: &str, remote| check_listen(a.parse().unwrap(), remote).is_ok();
        assert!(ok("127.0.0.1:0", false));
        assert!(ok("[::1]:0", false));
        assert!(!ok("10.0.0.1:80", false));
        assert!(ok("10.0.0.1:80", true));
        assert!(!ok("0.0.0.0:80", true));
        // Mapped loopback would be "remote" (no uid check) with --allow-remote: refused.
        assert!(!ok("[::ffff:127.0.0.1]:80", true));
        assert!(!ok("[::ffff:127.0.0.1]:80", false));
        assert!(!ok("[::ffff:10.0.0.1]:80", true));
    }
}
