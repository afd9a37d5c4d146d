//! The supervisor's own families: every service's state, restarts, uptime, memory and
//! CPU, read from the service table (and cgroups or `/proc`) at scrape time, plus what
//! the scrapes themselves counted.

use super::process::{usage, Usage};
use crate::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use strata_proto::methods::supervisor::SvcState;
use strata_proto::methods::sys::{MetricFamily, MetricSample, MetricType, SampleValue};

/// Every state, as the `state` label spells it.
const STATES: [(SvcState, &str); 7] = [
    (SvcState::Declared, "Declared"),
    (SvcState::Starting, "Starting"),
    (SvcState::Healthy, "Healthy"),
    (SvcState::Crashed, "Crashed"),
    (SvcState::Restarting, "Restarting"),
    (SvcState::Stopped, "Stopped"),
    (SvcState::Quarantined, "Quarantined"),
];

/// One service as a scrape sees it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceView {
    pub name: String,
    pub state: SvcState,
    pub restarts: u64,
    /// Since its last state change.
    pub in_state: Duration,
    pub pid: Option<i32>,
    /// Its cgroup directory, while it has one.
    pub cgroup: Option<PathBuf>,
    /// The socket of a Healthy service that speaks the Strata protocol (`health`
    /// readiness): it is asked for `sys.metrics`.
    pub scrape: Option<PathBuf>,
}

/// Every service in the table, in start order.
pub(crate) fn services(supervisor: &Supervisor) -> Vec<ServiceView> {
    let shared = &supervisor.shared;
    let cgroup_root = shared.cgroups.as_ref().ok().map(|r| r.dir().to_path_buf());
    let now = SystemTime::now();
    let table = shared.table();
    table
        .order
        .iter()
        .filter_map(|name| table.services.get(name).map(|r| (name, r)))
        .map(|(name, r)| {
            let running = crate::state::is_running(r.state);
            let speaks_strata = r.spec.readiness == crate::manifest::Readiness::Health;
            ServiceView {
                name: name.clone(),
                state: r.state,
                restarts: r.restarts,
                in_state: now.duration_since(r.since).unwrap_or_default(),
                pid: r.pid,
                cgroup: cgroup_root
                    .as_ref()
                    .map(|root| root.join(name))
                    .filter(|dir| running && dir.is_dir()),
                scrape: (r.state == SvcState::Healthy && speaks_strata)
                    .then(|| r.spec.socket_path(&shared.runtime_dir))
                    .flatten(),
            }
        })
        .collect()
}

fn sample(labels: &[(&str, &str)], value: f64) -> MetricSample {
    MetricSample {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value: SampleValue::Scalar { value },
    }
}

fn family(name: &str, help: &str, kind: MetricType, samples: Vec<MetricSample>) -> MetricFamily {
    MetricFamily {
        name: name.to_owned(),
        help: help.to_owned(),
        kind,
        samples,
    }
}

/// What the scrapes counted, per service.
#[derive(Debug, Default, Clone)]
pub(crate) struct ScrapeCounts {
    /// Services that did not answer `sys.metrics` (in time, or at all).
    pub errors: BTreeMap<String, u64>,
    /// Families refused from a service.
    pub refused: BTreeMap<String, u64>,
}

/// The node families: per service state, restarts, uptime, memory, CPU; the supervisor's
/// uptime. (The scrape counts are [`scrape_families`], known once the services answered.)
pub(crate) fn families(supervisor: &Supervisor, services: &[ServiceView]) -> Vec<MetricFamily> {
    let (mut state, mut restarts, mut uptime, mut memory, mut cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in services {
        let svc = s.name.as_str();
        for (st, label) in STATES {
            let on = f64::from(u8::from(s.state == st));
            state.push(sample(&[("service", svc), ("state", label)], on));
        }
        restarts.push(sample(&[("service", svc)], s.restarts as f64));
        let up = if s.state == SvcState::Healthy {
            s.in_state.as_secs_f64()
        } else {
            0.0
        };
        uptime.push(sample(&[("service", svc)], up));
        let Usage {
            memory_bytes,
            cpu_seconds,
        } = if crate::state::is_running(s.state) {
            usage(s.cgroup.as_deref(), s.pid)
        } else {
            Usage::default()
        };
        if let Some(bytes) = memory_bytes {
            memory.push(sample(&[("service", svc)], bytes as f64));
        }
        if let Some(secs) = cpu_seconds {
            cpu.push(sample(&[("service", svc)], secs));
        }
    }
    let started = supervisor.shared.started_at.elapsed().as_secs_f64();
    use MetricType::{Counter, Gauge};
    vec![
        family(
            "strata_service_state",
            "1 for the lifecycle state the service is in, 0 for the others.",
            Gauge,
            state,
        ),
        family(
            "strata_service_restarts_total",
            "Restarts after crashes since the service was declared (or last reloaded).",
            Counter,
            restarts,
        ),
        family(
            "strata_service_uptime_seconds",
            "Seconds since the service became Healthy; 0 while it is not.",
            Gauge,
            uptime,
        ),
        family(
            "strata_service_memory_bytes",
            "Memory of the running service: its cgroup's memory.current, else the main process's VmRSS.",
            Gauge,
            memory,
        ),
        family(
            "strata_service_cpu_seconds_total",
            "CPU time (user and system) of the running service: its cgroup's cpu.stat usage, else the main process's utime and stime.",
            Counter,
            cpu,
        ),
        family(
            "strata_supervisor_uptime_seconds",
            "Seconds since the supervisor started.",
            Gauge,
            vec![sample(&[], started)],
        ),
    ]
}

/// What the scrapes counted, per service.
pub(crate) fn scrape_families(counts: &ScrapeCounts) -> Vec<MetricFamily> {
    let per_service = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(svc, n)| sample(&[("service", svc)], *n as f64))
            .collect()
    };
    use MetricType::Counter;
    vec![
        family(
            "strata_scrape_errors_total",
            "Scrapes in which a service did not answer sys.metrics in time (its families are left out).",
            Counter,
            per_service(&counts.errors),
        ),
        family(
            "strata_scrape_refused_families_total",
            "Families refused from a service's sys.metrics (bad name, label or help text, a name reserved for the supervisor, type clash, over a bound).",
            Counter,
            per_service(&counts.refused),
        ),
    ]
}
