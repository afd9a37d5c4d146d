//! The node's Prometheus endpoint (`--metrics-listen`): one scrape covers the node.
//!
//! Each scrape reads the supervisor's own facts about every service ([`node`]: state,
//! restarts, uptime, memory and CPU from the cgroup or `/proc`, [`process`]), asks every
//! Healthy Strata service and the supervisor's own control socket for `sys.metrics`
//! concurrently, each within [`SCRAPE_TIMEOUT`] (one that does not answer is left out and
//! counted in `strata_scrape_errors_total`), merges the families by name with a `service`
//! label ([`merge`], which checks and bounds what each service sent), and encodes them
//! through prometheus-client. [`http`] serves `GET /metrics` and nothing else.
//!
//! The node's families are merged first and their names are reserved ([`merge`]), so no
//! service can knock them out. Requests that arrive while a scrape is being gathered
//! share it (one gather and one encoding per format for all of them, [`Scraper`]).
//!
//! Authentication is optional: with a token file (`--metrics-token-file`) every request
//! must carry `Authorization: Bearer <token>`; without one, anyone who can reach the
//! address reads the node's metrics (for loopback: every local user). A warning is logged
//! for a non-loopback address without a token. The supervisor reads `sys.metrics` as root
//! or as the services' own user, the only callers a service answers it to.

mod flight;
pub mod http;
pub mod merge;
mod node;
pub mod process;

use crate::error::StartError;
use crate::supervisor::Supervisor;
use merge::Merged;
use node::ScrapeCounts;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_ipc::{Client, Endpoint};
use strata_proto::methods::sys::{self, MetricFamily};
use strata_proto::methods::NoParams;

/// How long a scrape waits for one service's `sys.metrics`.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most services whose scrape counts are kept (names come from the manifest; a reload
/// can add names, never without bound).
const MAX_COUNTED_SERVICES: usize = 1024;
/// The oldest a shared scrape may be when a request waiting for it gets it.
pub const SHARED_FOR: Duration = Duration::from_secs(1);
/// Longest token file read, in bytes.
const MAX_TOKEN_FILE: u64 = 4096;

/// The running endpoint; stops serving when dropped.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsEndpoint {
    /// Bind `addr` and serve the node's metrics there, to requests bearing the token in
    /// `token_file` when one is given. A bind failure or a token file that is unsafe or
    /// unreadable is a start-up error naming the setting. Must be called inside a Tokio
    /// runtime.
    pub fn start(
        addr: SocketAddr,
        token_file: Option<&Path>,
        supervisor: Supervisor,
    ) -> Result<MetricsEndpoint, StartError> {
        let token = token_file
            .map(|path| {
                read_token(path).map_err(|reason| StartError::MetricsToken {
                    path: path.to_owned(),
                    reason,
                })
            })
            .transpose()?;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|source| StartError::Metrics { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StartError::Metrics { addr, source })?;
        if !bound.ip().is_loopback() && token.is_none() {
            tracing::warn!(addr = %bound, "the metrics endpoint listens on a non-loopback address and has no token (--metrics-token-file): anyone who can reach it sees which services run and how busy they are; set a token, firewall it or use 127.0.0.1");
        }
        tracing::info!(addr = %bound, token = token.is_some(), "serving metrics at /metrics");
        let scraper = Arc::new(Scraper::new(supervisor));
        let task = tokio::spawn(http::serve(listener, scraper, token.map(Arc::new)));
        Ok(MetricsEndpoint { addr: bound, task })
    }

    /// The address it listens on (the port chosen, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The token a request must bear: the file's content, surrounding whitespace trimmed.
/// Refused when the file is not a regular file (it is opened non-blocking, so a FIFO
/// there cannot hold up the start), is owned by anyone but root or the supervisor's
/// user, is readable or writable by group or others, or holds no token. Read once, at
/// the start: a reload does not read it again (restart the supervisor to change the
/// token). The token is never logged.
fn read_token(path: &Path) -> Result<http::Token, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "it is owned by uid {}, who may change it; it must be owned by root or uid {me}, who runs the supervisor",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "its mode {:04o} lets group or others at it; chmod 600 it",
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!("longer than {MAX_TOKEN_FILE} bytes"));
    }
    http::Token::new(text.trim())
}

/// Builds an exposition on demand, keeping the scrape counts between scrapes. Requests
/// that come while one is gathered wait for it and share it.
pub struct Scraper {
    supervisor: Supervisor,
    counts: Mutex<ScrapeCounts>,
    shared: flight::SingleFlight<Shared>,
}

/// The last scrape gathered, and its encodings once asked for.
struct Shared {
    merged: Arc<Merged>,
    text: Option<bytes::Bytes>,
    openmetrics: Option<bytes::Bytes>,
}

impl Scraper {
    /// A scraper of `supervisor`'s node.
    pub fn new(supervisor: Supervisor) -> Scraper {
        Scraper {
            supervisor,
            counts: Mutex::new(ScrapeCounts::default()),
            shared: flight::SingleFlight::new(SHARED_FOR),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, ScrapeCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One scrape of the whole node, encoded (OpenMetrics when `openmetrics`, else the
    /// Prometheus text format 0.0.4). A scrape finished after this request came (it was
    /// waiting for it), at most [`SHARED_FOR`] ago, is shared rather than gathered again;
    /// otherwise this request gathers one, and those that come meanwhile wait for it.
    pub async fn exposition(&self, openmetrics: bool) -> bytes::Bytes {
        let mut current = self
            .shared
            .get(|| async {
                Shared {
                    merged: Arc::new(self.gather().await),
                    text: None,
                    openmetrics: None,
                }
            })
            .await;
        let merged = Arc::clone(&current.merged);
        let slot = if openmetrics {
            &mut current.openmetrics
        } else {
            &mut current.text
        };
        slot.get_or_insert_with(|| bytes::Bytes::from(merged.encode_shared(openmetrics)))
            .clone()
    }

    /// One scrape of the whole node: the node families and every service's, merged.
    pub async fn gather(&self) -> Merged {
        let services = node::services(&self.supervisor);
        let control =
            strata_ipc::paths::socket_path(&self.supervisor.shared.runtime_dir, "supervisor");
        let targets: Vec<(String, PathBuf)> = services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.scrape.clone()?)))
            .chain([("supervisor".to_owned(), control)])
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for (name, socket) in targets {
            calls.spawn(async move { (name, scrape(&socket).await) });
        }
        let mut answers = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Ok(answer) = done {
                answers.push(answer);
            }
        }
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged = Merged::default();
        // The node's families first (their names are reserved from the services anyway).
        let mut node_refused = merged.add(None, node::families(&self.supervisor, &services));
        // (service, failed to answer, families refused): every service scraped is counted,
        // 0 included, so its series are there before anything went wrong.
        let mut tally = Vec::with_capacity(answers.len());
        for (service, answer) in answers {
            match answer {
                Ok(families) => {
                    let refused = merged.add(Some(&service), families);
                    if !refused.is_empty() {
                        tracing::debug!(%service, ?refused, "metric families refused");
                    }
                    tally.push((service, 0, refused.len() as u64));
                }
                Err(e) => {
                    tracing::debug!(%service, error = %e, "no metrics from the service");
                    tally.push((service, 1, 0));
                }
            }
        }
        let counts = {
            let mut counts = self.counts();
            for (service, failed, refused) in tally {
                bump(&mut counts.errors, &service, failed);
                bump(&mut counts.refused, &service, refused);
            }
            counts.clone()
        };
        node_refused.extend(merged.add(None, node::scrape_families(&counts)));
        if !node_refused.is_empty() {
            // A bug, never a service's doing: counted as the supervisor's refusals.
            tracing::error!(refused = ?node_refused, "the node's own metric families were refused");
            bump(
                &mut self.counts().refused,
                "supervisor",
                node_refused.len() as u64,
            );
        }
        merged
    }
}

fn bump(counts: &mut std::collections::BTreeMap<String, u64>, service: &str, n: u64) {
    if let Some(count) = counts.get_mut(service) {
        *count += n;
    } else if counts.len() < MAX_COUNTED_SERVICES {
        counts.insert(service.to_owned(), n);
    }
}

/// `sys.metrics` of the service at `socket`, within [`SCRAPE_TIMEOUT`].
async fn scrape(socket: &std::path::Path) -> Result<Vec<MetricFamily>, String> {
    let endpoint = Endpoint::unix(socket).map_err(|e| e.to_string())?;
    let mut client = Client::new(endpoint);
    client.set_timeout(SCRAPE_TIMEOUT);
    let call = client.call::<sys::Metrics>(&NoParams {});
    match tokio::time::timeout(SCRAPE_TIMEOUT, call).await {
        Ok(Ok(result)) => Ok(result.families),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    }
}

#[cfg(test)]
mod tests;
