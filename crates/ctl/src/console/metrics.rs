//! The node page's numbers: a process's memory and CPU from `/proc` (what `ps` shows any
//! user), and a service's request rate from its `sys.metrics` counter, differenced
//! between two answers of this console. `sys.metrics` is admin-only: a service that
//! refuses it is not asked again for [`REFUSED_FOR`], so a non-admin user's console
//! does not fill the audit log with denials.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use strata_proto::methods::sys::{MetricsResult, SampleValue};

/// How long a service that refused `sys.metrics` is left alone.
pub const REFUSED_FOR: Duration = Duration::from_secs(300);

/// The counter summed for the request rate.
const REQUESTS: &str = "strata_requests_total";

/// Resident memory and CPU time of process `pid`, when `/proc` shows them.
pub fn process(pid: u32) -> (Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| vm_rss(&s));
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| cpu_ticks(&s))
        .map(|ticks| ticks as f64 / rustix::param::clock_ticks_per_second() as f64);
    (rss, cpu)
}

/// `VmRSS:   1234 kB` → bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses: fields are counted after the
/// last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// The sum of a snapshot's request counters, if it has them.
pub fn requests(snapshot: &MetricsResult) -> Option<f64> {
    let family = snapshot.families.iter().find(|f| f.name == REQUESTS)?;
    Some(
        family
            .samples
            .iter()
            .filter_map(|s| match s.value {
                SampleValue::Scalar { value } => Some(value),
                SampleValue::Histogram { .. } => None,
            })
            .sum(),
    )
}

/// The first scalar sample of family `name`, if the snapshot has one.
pub fn scalar(snapshot: &MetricsResult, name: &str) -> Option<f64> {
    let family = snapshot.families.iter().find(|f| f.name == name)?;
    family.samples.iter().find_map(|s| match s.value {
        SampleValue::Scalar { value } => Some(value),
        SampleValue::Histogram { .. } => None,
    })
}

/// The registry's view of its etcd contact, for the cluster page: seconds since etcd
/// last answered the lease keep-alive, whether the lease is held, whether etcd is
/// connected (each `null` when the registry does not report it).
pub fn staleness(snapshot: &MetricsResult) -> serde_json::Value {
    let flag = |name| scalar(snapshot, name).map(|v| v != 0.0);
    serde_json::json!({
        "contact_age_s": scalar(snapshot, "strata_cluster_etcd_contact_age_seconds"),
        "lease_held": flag("strata_cluster_lease_held"),
        "etcd_connected": flag("strata_cluster_etcd_connected"),
    })
}

/// What the console remembers between two node answers, per service.
#[derive(Default)]
pub struct Rates {
    seen: HashMap<String, Seen>,
    refused: HashMap<String, Instant>,
}

struct Seen {
    pid: Option<u32>,
    total: f64,
    at: Instant,
}

impl Rates {
    /// Whether `service` refused `sys.metrics` lately (do not ask).
    pub fn refused_lately(&self, service: &str, now: Instant) -> bool {
        self.refused
            .get(service)
            .is_some_and(|at| now.duration_since(*at) < REFUSED_FOR)
    }

    /// `service` refused `sys.metrics`.
    pub fn refused(&mut self, service: &str, now: Instant) {
        self.refused.insert(service.to_owned(), now);
        self.seen.remove(service);
    }

    /// Record `total` requests for `service` (run `pid`) at `now`: the rate since the
    /// last record, `None` on the first, after a restart or when the counter went back.
    pub fn rate(
        &mut self,
        service: &str,
        pid: Option<u32>,
        total: f64,
        now: Instant,
    ) -> Option<f64> {
        let before = self.seen.insert(
            service.to_owned(),
            Seen {
                pid,
                total,
                at: now,
            },
        )?;
        let secs = now.duration_since(before.at).as_secs_f64();
        (before.pid == pid && total >= before.total && secs > 0.0)
            .then(|| (total - before.total) / secs)
    }

    /// Forget services no longer listed (bounds the maps by the manifest).
    pub fn keep_only(&mut self, names: &[String]) {
        self.seen.retain(|k, _| names.contains(k));
        self.refused.retain(|k, _| names.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_past_a_hostile_command_name() {
        assert_eq!(vm_rss("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(12));
        assert_eq!(cpu_ticks("42 (x"), None);
        let (rss, cpu) = process(std::process::id());
        assert!(rss.is_some_and(|r| r > 0) && cpu.is_some());
    }

    #[test]
    fn a_rate_needs_two_answers_of_the_same_run() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.rate("fs", Some(1), 10.0, t0), None);
        assert_eq!(
            r.rate("fs", Some(1), 30.0, t0 + Duration::from_secs(2)),
            Some(10.0)
        );
        // Another run (its counter restarted, whatever it reads now), then a counter that went back.
        assert_eq!(
            r.rate("fs", Some(2), 50.0, t0 + Duration::from_secs(3)),
            None
        );
        assert_eq!(
            r.rate("fs", Some(2), 10.0, t0 + Duration::from_secs(4)),
            None
        );
        r.refused("fs", t0);
        assert!(r.refused_lately("fs", t0 + Duration::from_secs(1)));
        assert!(!r.refused_lately("fs", t0 + REFUSED_FOR));
    }

    #[test]
    fn staleness_reads_the_registrys_cluster_gauges() {
        let m: MetricsResult = serde_json::from_value(serde_json::json!({"families": [
            {"name": "strata_cluster_etcd_contact_age_seconds", "help": "", "type": "gauge",
             "samples": [{"value": 42.5}]},
            {"name": "strata_cluster_lease_held", "help": "", "type": "gauge",
             "samples": [{"value": 1.0}]},
            {"name": "strata_cluster_etcd_connected", "help": "", "type": "gauge",
             "samples": [{"value": 0.0}]},
        ]}))
        .unwrap();
        assert_eq!(
            staleness(&m),
            serde_json::json!({"contact_age_s": 42.5, "lease_held": true, "etcd_connected": false})
        );
        let none = MetricsResult { families: vec![] };
        assert_eq!(
            staleness(&none),
            serde_json::json!({"contact_age_s": null, "lease_held": null, "etcd_connected": null})
        );
    }
}
