//! Methods every Strata service answers, without a token.

use super::{method, NoParams};
use serde::{Deserialize, Serialize};

/// The readiness probe's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResult {
    /// The answering service's name.
    pub service: String,
    /// Its version.
    pub version: String,
    /// `ok` when it can serve, else `unavailable` (with `status_reason` in `extra`).
    pub status: String,
    /// Service-specific facts (for example whether fs runs under Landlock).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

method!(
    /// `sys.health`: answers when the service is up and serving.
    Health,
    "sys.health",
    NoParams,
    HealthResult
);

/// What a metric family measures, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Only ever goes up (until the process restarts). Its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into fixed buckets, with their sum and count.
    Histogram,
}

impl MetricType {
    /// The name as on the wire (and in the Prometheus `# TYPE` line).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One sample's value: a number (counter, gauge) or a histogram's buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleValue {
    /// A counter's or a gauge's value.
    Scalar {
        /// The value (finite).
        value: f64,
    },
    /// A histogram.
    Histogram {
        /// `[upper bound, observations in this bucket alone]`, bounds finite and rising;
        /// observations above the last bound are `count` less the buckets' total (the
        /// `+Inf` bucket is implied).
        buckets: Vec<(f64, u64)>,
        /// The sum of all observations.
        sum: f64,
        /// How many observations in all.
        count: u64,
    },
}

/// One sample of a family: its labels and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Label name → value (a service's own; the supervisor adds `service`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The value.
    #[serde(flatten)]
    pub value: SampleValue,
}

/// One metric family: every sample of one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFamily {
    /// The name as Prometheus shows it (`strata_` prefix; a counter's ends in `_total`).
    pub name: String,
    /// What it measures, one line.
    pub help: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: MetricType,
    /// Its samples.
    pub samples: Vec<MetricSample>,
}

/// `sys.metrics`'s answer: a snapshot of the service's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsResult {
    /// Every family the service keeps.
    pub families: Vec<MetricFamily>,
}

method!(
    /// `sys.metrics`: the service's request counters and latencies and its own metrics,
    /// for the supervisor's Prometheus endpoint. Admin callers only (root or the
    /// service's own uid, local): metrics reveal callers' activity.
    Metrics,
    "sys.metrics",
    NoParams,
    MetricsResult
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_metrics_snapshot_has_the_documented_shape() {
        let result = MetricsResult {
            families: vec![
                MetricFamily {
                    name: "strata_requests_total".into(),
                    help: "Requests answered.".into(),
                    kind: MetricType::Counter,
                    samples: vec![MetricSample {
                        labels: [("method".to_owned(), "fs.read".to_owned())].into(),
                        value: SampleValue::Scalar { value: 3.0 },
                    }],
                },
                MetricFamily {
                    name: "strata_request_duration_seconds".into(),
                    help: "Latency.".into(),
                    kind: MetricType::Histogram,
                    samples: vec![MetricSample {
                        labels: Default::default(),
                        value: SampleValue::Histogram {
                            buckets: vec![(0.001, 2), (0.01, 0)],
                            sum: 0.5,
                            count: 3,
                        },
                    }],
                },
            ],
        };
        let wire = json!({"families": [
            {"name": "strata_requests_total", "help": "Requests answered.", "type": "counter",
             "samples": [{"labels": {"method": "fs.read"}, "value": 3.0}]},
            {"name": "strata_request_duration_seconds", "help": "Latency.", "type": "histogram",
             "samples": [{"labels": {}, "buckets": [[0.001, 2], [0.01, 0]], "sum": 0.5, "count": 3}]},
        ]});
        assert_eq!(serde_json::to_value(&result).unwrap(), wire);
        assert_eq!(
            serde_json::from_value::<MetricsResult>(wire).unwrap(),
            result
        );
    }

    #[test]
    fn a_sample_without_a_value_or_of_an_unknown_type_is_refused() {
        let no_value = json!({"name": "strata_x", "help": "", "type": "gauge",
            "samples": [{"labels": {}}]});
        assert!(serde_json::from_value::<MetricFamily>(no_value).is_err());
        let summary = json!({"name": "strata_x", "help": "", "type": "summary", "samples": []});
        assert!(serde_json::from_value::<MetricFamily>(summary).is_err());
    }
}
