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
//! No authentication: the endpoint is for a loopback or otherwise private address (a
//! warning is logged for any other). The supervisor reads `sys.metrics` as root or as
//! the services' own user, the only callers a service answers it to.

pub mod http;
pub mod merge;
mod node;
pub mod process;

use crate::error::StartError;
use crate::supervisor::Supervisor;
use merge::Merged;
use node::ScrapeCounts;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Bind `addr` and serve the node's metrics there. A bind failure is a start-up error
    /// naming the setting. Must be called inside a Tokio runtime.
    pub fn start(addr: SocketAddr, supervisor: Supervisor) -> Result<MetricsEndpoint, StartError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|source| StartError::Metrics { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StartError::Metrics { addr, source })?;
        if !bound.ip().is_loopback() {
            tracing::warn!(addr = %bound, "the metrics endpoint listens on a non-loopback address and has no authentication: anyone who can reach it sees which services run and how busy they are; firewall it or use 127.0.0.1");
        }
        tracing::info!(addr = %bound, "serving metrics at /metrics");
        let scraper = Arc::new(Scraper::new(supervisor));
        let task = tokio::spawn(http::serve(listener, scraper));
        Ok(MetricsEndpoint { addr: bound, task })
    }

    /// The address it listens on (the port chosen, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Builds an exposition on demand, keeping the scrape counts between scrapes.
pub struct Scraper {
    supervisor: Supervisor,
    counts: Mutex<ScrapeCounts>,
}

impl Scraper {
    /// A scraper of `supervisor`'s node.
    pub fn new(supervisor: Supervisor) -> Scraper {
        Scraper {
            supervisor,
            counts: Mutex::new(ScrapeCounts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, ScrapeCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One scrape of the whole node, encoded (OpenMetrics when `openmetrics`, else the
    /// Prometheus text format 0.0.4).
    pub async fn exposition(&self, openmetrics: bool) -> String {
        self.gather().await.encode(openmetrics)
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
        let (mut errors, mut refusals) = (Vec::new(), Vec::new());
        for (service, answer) in answers {
            match answer {
                Ok(families) => {
                    let refused = merged.add(Some(&service), families);
                    if !refused.is_empty() {
                        tracing::debug!(%service, ?refused, "metric families refused");
                        refusals.push((service, refused.len() as u64));
                    }
                }
                Err(e) => {
                    tracing::debug!(%service, error = %e, "no metrics from the service");
                    errors.push(service);
                }
            }
        }
        let counts = {
            let mut counts = self.counts();
            for service in errors {
                bump(&mut counts.errors, &service, 1);
            }
            for (service, n) in refusals {
                bump(&mut counts.refused, &service, n);
            }
            counts.clone()
        };
        let refused = merged.add(None, node::families(&self.supervisor, &services, &counts));
        debug_assert!(refused.is_empty(), "node families refused: {refused:?}");
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
