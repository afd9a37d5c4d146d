//! What a service counts, and the snapshot `sys.metrics` answers with.
//!
//! Every [`Router`](crate::Router) counts its requests by method and result code and times
//! them into a fixed-bucket histogram ([`MethodStats`], a few relaxed atomic adds per
//! request, no allocation). The method label is bounded by the route table: a routed name,
//! `sys.health`, `sys.metrics`, or `other` for anything else a caller sends; the code label
//! by the protocol's eight error codes plus `OK`.
//!
//! A service adds its own metrics with [`Router::metrics`](crate::Router::metrics): a
//! closure called at snapshot time that appends families to a [`Snapshot`], reading
//! [`Counter`]s the service bumps where events happen, or computing gauges from its state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::methods::sys::{MetricFamily, MetricSample, MetricType, SampleValue};
use strata_proto::ErrorCode;

/// The method label of requests for a method no route has.
pub const OTHER_METHOD: &str = "other";

/// Upper bounds (seconds) of the request-latency histogram's buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, for the hot path's integer comparisons.
const BUCKET_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// A count that only goes up, shared by clones (an `Arc` around one atomic). What a
/// service bumps where an event happens and reads in its [`Router::metrics`](crate::Router::metrics)
/// closure.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Count one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Count `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One method's request counts by result code and its latency histogram.
#[derive(Debug, Default)]
pub struct MethodStats {
    /// `[OK, then ErrorCode::ALL in order]`.
    codes: [AtomicU64; 9],
    /// Observations per bucket of [`LATENCY_BUCKETS`] alone, the last one above 10 s.
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
}

impl MethodStats {
    /// Count one request that ended with `code` (`None`: success) after `elapsed`.
    pub fn record(&self, code: Option<ErrorCode>, elapsed: Duration) {
        let slot = code.map_or(0, |c| usize::from(c.code()));
        self.codes[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKET_NANOS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Requests so far that ended with `code` (`None`: success).
    pub fn count(&self, code: Option<ErrorCode>) -> u64 {
        self.codes[code.map_or(0, |c| usize::from(c.code()))].load(Ordering::Relaxed)
    }

    fn histogram(&self) -> SampleValue {
        let all: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        SampleValue::Histogram {
            buckets: LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(all.iter().copied())
                .collect(),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: all.iter().sum(),
        }
    }
}

/// The two request families, from each method's stats (in the order given).
pub(crate) fn request_families<'a>(
    methods: impl Iterator<Item = (&'a str, &'a MethodStats)>,
) -> [MetricFamily; 2] {
    let mut requests = Vec::new();
    let mut latency = Vec::new();
    for (method, stats) in methods {
        let codes = std::iter::once(None).chain(ErrorCode::ALL.into_iter().map(Some));
        for code in codes {
            let n = stats.count(code);
            // Every method shows its OK series; an error code once it happened.
            if n == 0 && code.is_some() {
                continue;
            }
            let name = code.map_or("OK", ErrorCode::name);
            requests.push(MetricSample {
                labels: labels(&[("method", method), ("code", name)]),
                value: SampleValue::Scalar { value: n as f64 },
            });
        }
        latency.push(MetricSample {
            labels: labels(&[("method", method)]),
            value: stats.histogram(),
        });
    }
    [
        MetricFamily {
            name: "strata_requests_total".into(),
            help: "Requests answered, by method and result code (OK or the protocol error).".into(),
            kind: MetricType::Counter,
            samples: requests,
        },
        MetricFamily {
            name: "strata_request_duration_seconds".into(),
            help: "Time from a request's frame to its answer, by method.".into(),
            kind: MetricType::Histogram,
            samples: latency,
        },
    ]
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The families a service reports, built at snapshot time. Values that are not finite
/// numbers are left out (JSON cannot carry them).
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<MetricFamily>,
}

impl Snapshot {
    /// A counter with one unlabelled sample. `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Snapshot {
        self.labelled(name, help, MetricType::Counter, &[(&[], value as f64)])
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Snapshot {
        self.labelled(name, help, MetricType::Gauge, &[(&[], value)])
    }

    /// A family of `kind` (counter or gauge) with one sample per `(labels, value)`.
    pub fn labelled(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: &[(&[(&str, &str)], f64)],
    ) -> &mut Snapshot {
        let samples = samples
            .iter()
            .filter(|(_, value)| value.is_finite())
            .map(|(pairs, value)| MetricSample {
                labels: labels(pairs),
                value: SampleValue::Scalar { value: *value },
            })
            .collect();
        self.families.push(MetricFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            samples,
        });
        self
    }

    /// Add a family as it is.
    pub fn family(&mut self, family: MetricFamily) -> &mut Snapshot {
        self.families.push(family);
        self
    }

    /// The families added so far.
    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_the_first_bucket_at_or_above_its_latency() {
        let stats = MethodStats::default();
        stats.record(None, Duration::from_micros(100));
        stats.record(None, Duration::from_micros(101));
        stats.record(Some(ErrorCode::NotFound), Duration::from_secs(60));
        let SampleValue::Histogram {
            buckets,
            sum,
            count,
        } = stats.histogram()
        else {
            panic!("not a histogram")
        };
        assert_eq!(count, 3);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[1], (0.00025, 1));
        assert_eq!(
            buckets.iter().map(|b| b.1).sum::<u64>(),
            2,
            "60 s is above 10 s"
        );
        assert!((sum - 60.000201).abs() < 1e-9, "{sum}");
        assert_eq!(stats.count(None), 2);
        assert_eq!(stats.count(Some(ErrorCode::NotFound)), 1);
        assert_eq!(stats.count(Some(ErrorCode::Internal)), 0);
    }

    #[test]
    fn request_families_show_ok_always_and_errors_once_seen() {
        let (read, stat) = (MethodStats::default(), MethodStats::default());
        read.record(Some(ErrorCode::PermissionDenied), Duration::ZERO);
        let [requests, latency] =
            request_families([("fs.read", &read), ("fs.stat", &stat)].into_iter());
        let series: Vec<(String, String, f64)> = requests
            .samples
            .iter()
            .map(|s| {
                let SampleValue::Scalar { value } = s.value else {
                    panic!()
                };
                (s.labels["method"].clone(), s.labels["code"].clone(), value)
            })
            .collect();
        assert_eq!(
            series,
            [
                ("fs.read".into(), "OK".into(), 0.0),
                ("fs.read".into(), "PERMISSION_DENIED".into(), 1.0),
                ("fs.stat".into(), "OK".into(), 0.0),
            ]
        );
        assert_eq!(latency.samples.len(), 2);
        assert_eq!(latency.kind, MetricType::Histogram);
    }

    #[test]
    fn a_snapshot_leaves_out_values_json_cannot_carry() {
        let mut snap = Snapshot::default();
        snap.gauge("strata_x", "x", f64::NAN)
            .counter("strata_y_total", "y", 2);
        let families = snap.into_families();
        assert!(families[0].samples.is_empty());
        assert_eq!(
            families[1].samples[0].value,
            SampleValue::Scalar { value: 2.0 }
        );
    }
}
