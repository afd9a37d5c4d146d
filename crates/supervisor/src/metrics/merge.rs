//! One exposition from many services: each service's families checked and bounded, a
//! `service` label added, families merged by name, and the result encoded in the
//! Prometheus text format through a prometheus-client [`Collector`].
//!
//! A service's answer is not trusted to be well-formed: a family whose name lacks the
//! `strata_` prefix or has characters Prometheus does not allow, whose type clashes with
//! the family of that name already merged, or with a bad sample (labels, values, buckets)
//! is refused whole and counted; beyond [`MAX_FAMILIES_PER_SERVICE`] families,
//! [`MAX_SAMPLES_PER_SERVICE`] samples or [`MAX_BYTES_PER_SERVICE`] bytes of exposition
//! the rest are refused too.
//!
//! The supervisor's own names are its alone: a service's family named
//! `strata_service_*`, `strata_supervisor_*` or `strata_scrape_*` is refused
//! ([`RESERVED_PREFIXES`]), and the request families every router reports have their
//! type fixed in advance ([`DECLARED`]), so no service can claim them with another type.
//! Help text is printable ASCII without a backslash: the OpenMetrics encoder writes it
//! as it is, so a newline there would let a service write lines of its own.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType as PromType;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use strata_proto::methods::sys::{MetricFamily, MetricType, SampleValue};

/// Most families taken from one service.
pub const MAX_FAMILIES_PER_SERVICE: usize = 256;
/// Most samples taken from one service, all its families together.
pub const MAX_SAMPLES_PER_SERVICE: usize = 20_000;
/// Most labels on one sample (the added `service` label not counted).
pub const MAX_LABELS: usize = 16;
/// Longest family or label name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 128;
/// Longest help text, in bytes.
pub const MAX_HELP_LEN: usize = 512;
/// Most buckets of one histogram sample (the `+Inf` bucket, added here, not counted).
pub const MAX_BUCKETS: usize = 32;
/// Most bytes of exposition one service's families may take (estimated before encoding,
/// the worst case of escaping counted): a service's labels are repeated on every line of
/// every sample, so its answer's size alone does not bound the scrape's.
pub const MAX_BYTES_PER_SERVICE: usize = 2 * 1024 * 1024;
/// Family name prefixes only the supervisor's own families may have.
pub const RESERVED_PREFIXES: [&str; 3] =
    ["strata_service_", "strata_supervisor_", "strata_scrape_"];
/// Families every router reports, with their type fixed before any service is merged.
pub const DECLARED: [(&str, MetricType); 2] = [
    ("strata_requests_total", MetricType::Counter),
    ("strata_request_duration_seconds", MetricType::Histogram),
];

/// A sample's labels in exposition order: `service` first, then the service's own, sorted.
type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: String,
    kind: MetricType,
    samples: Vec<(Labels, SampleValue)>,
    seen: HashSet<Labels>,
}

/// Families merged by name from every service, ready to encode.
#[derive(Debug, Default)]
pub struct Merged {
    families: BTreeMap<String, Family>,
}

/// Why a family was refused (for the log at debug level; the count is what is exported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The family's name, cut to [`MAX_NAME_LEN`].
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

impl Merged {
    /// Merge `families` from `service` (`None`: the supervisor's own node families, which
    /// carry their `service` label already). Returns the families refused.
    pub fn add(&mut self, service: Option<&str>, families: Vec<MetricFamily>) -> Vec<Refused> {
        let mut refused = Vec::new();
        let mut samples_left = MAX_SAMPLES_PER_SERVICE;
        let mut bytes_left = MAX_BYTES_PER_SERVICE;
        for (i, family) in families.into_iter().enumerate() {
            let outcome = if i >= MAX_FAMILIES_PER_SERVICE {
                Err("more families than one service may report")
            } else if family.samples.len() > samples_left {
                Err("more samples than one service may report")
            } else {
                self.add_family(service, &family, bytes_left)
            };
            match outcome {
                Ok((n, bytes)) => {
                    samples_left -= n;
                    bytes_left -= bytes;
                }
                Err(reason) => refused.push(Refused {
                    name: strata_proto::clip(&family.name, MAX_NAME_LEN).to_owned(),
                    reason,
                }),
            }
        }
        refused
    }

    /// Check one family whole, then merge it; returns how many samples it added and the
    /// bytes of exposition they may take, at most `bytes_left`.
    fn add_family(
        &mut self,
        service: Option<&str>,
        family: &MetricFamily,
        bytes_left: usize,
    ) -> Result<(usize, usize), &'static str> {
        check_family_name(&family.name, family.kind)?;
        if service.is_some() && RESERVED_PREFIXES.iter().any(|p| family.name.starts_with(p)) {
            return Err("name is reserved for the supervisor's own families");
        }
        check_help(&family.help)?;
        let declared = DECLARED.iter().find(|(name, _)| *name == family.name);
        if declared.is_some_and(|(_, kind)| *kind != family.kind) {
            return Err("type differs from the one this family is declared with");
        }
        if let Some(known) = self.families.get(&family.name) {
            if known.kind != family.kind {
                return Err("type clashes with the family of that name already merged");
            }
        }
        // `# HELP` and `# TYPE` lines, written once per name (counted for every service:
        // an over-estimate, never an under-one).
        let mut bytes = 2 * family.name.len() + family.help.len() + 32;
        let mut checked = Vec::with_capacity(family.samples.len());
        let mut fresh = HashSet::new();
        for sample in &family.samples {
            check_value(family.kind, &sample.value)?;
            if sample.labels.len() > MAX_LABELS {
                return Err("too many labels");
            }
            let mut labels: Labels = Vec::with_capacity(sample.labels.len() + 1);
            if let Some(service) = service {
                labels.push(("service".to_owned(), service.to_owned()));
            }
            for (name, value) in &sample.labels {
                check_label(name, value, family.kind, service.is_some())?;
                labels.push((name.clone(), value.clone()));
            }
            let known = self.families.get(&family.name);
            if known.is_some_and(|f| f.seen.contains(&labels)) || !fresh.insert(labels.clone()) {
                return Err("two samples with the same labels");
            }
            bytes = bytes.saturating_add(encoded_bytes(&family.name, &labels, &sample.value));
            if bytes > bytes_left {
                return Err("more bytes of exposition than one service may take");
            }
            checked.push((labels, with_inf_bucket(&sample.value)));
        }
        let merged = self
            .families
            .entry(family.name.clone())
            .or_insert_with(|| Family {
                help: family.help.clone(),
                kind: family.kind,
                samples: Vec::new(),
                seen: HashSet::new(),
            });
        merged.seen.extend(fresh);
        let n = checked.len();
        merged.samples.extend(checked);
        Ok((n, bytes))
    }

    /// The names of the merged families, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.families.keys().map(String::as_str)
    }

    /// The Prometheus text format (0.0.4), or OpenMetrics 1.0 when `openmetrics`.
    pub fn encode(self, openmetrics: bool) -> String {
        Arc::new(self).encode_shared(openmetrics)
    }

    /// [`Merged::encode`], of families shared with other requests.
    pub fn encode_shared(self: &Arc<Self>, openmetrics: bool) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(Arc::clone(self))));
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        if encoded.is_err() {
            // Writing to a String cannot fail; an encoder refusal would be a bug here.
            tracing::error!("metrics did not encode");
        }
        out
    }
}

/// Help text is printable ASCII (no control character, newline included), without a
/// backslash, within [`MAX_HELP_LEN`]: the OpenMetrics encoder writes it unescaped.
fn check_help(help: &str) -> Result<(), &'static str> {
    if help.len() > MAX_HELP_LEN {
        return Err("help text too long");
    }
    if !help
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'\\')
    {
        return Err("help text is not printable ASCII without a backslash");
    }
    Ok(())
}

/// The most bytes one sample can take encoded: every line it is written on (one, or a
/// histogram's buckets, `+Inf`, sum and count), each with the name, a suffix, every
/// label with its value escaped at worst (each byte two), `le` and the number.
fn encoded_bytes(name: &str, labels: &Labels, value: &SampleValue) -> usize {
    let labels: usize = labels.iter().map(|(k, v)| k.len() + 2 * v.len() + 4).sum();
    let line = name.len() + labels + 64;
    let lines = match value {
        SampleValue::Scalar { .. } => 1,
        SampleValue::Histogram { buckets, .. } => buckets.len() + 3,
    };
    line.saturating_mul(lines)
}

/// A histogram's buckets with the `+Inf` bucket last (what falls above the last finite
/// bound: its count less the rest); the OpenMetrics encoder writes only the buckets it is
/// given, the text one adds `+Inf` only when it is missing. A scalar as it is.
fn with_inf_bucket(value: &SampleValue) -> SampleValue {
    match value {
        SampleValue::Histogram {
            buckets,
            sum,
            count,
        } => {
            let finite: u64 = buckets.iter().map(|(_, n)| n).sum();
            let mut all = buckets.clone();
            all.push((f64::INFINITY, count.saturating_sub(finite)));
            SampleValue::Histogram {
                buckets: all,
                sum: *sum,
                count: *count,
            }
        }
        scalar => scalar.clone(),
    }
}

/// `strata_` then `[a-z0-9_]`, not ending in `_`, within [`MAX_NAME_LEN`]; a counter's
/// ends in `_total` and nothing else's does; no name ends in the suffixes a histogram's
/// series use.
fn check_family_name(name: &str, kind: MetricType) -> Result<(), &'static str> {
    let Some(rest) = name.strip_prefix("strata_") else {
        return Err("name lacks the strata_ prefix");
    };
    if name.len() > MAX_NAME_LEN
        || rest.is_empty()
        || rest.ends_with('_')
        || !rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("name is not [a-z0-9_] after strata_");
    }
    let base = match (kind, name.strip_suffix("_total")) {
        (MetricType::Counter, Some(base)) => base,
        (MetricType::Counter, None) => return Err("a counter's name must end in _total"),
        (_, Some(_)) => return Err("only a counter's name may end in _total"),
        (_, None) => name,
    };
    if ["_bucket", "_sum", "_count", "_created", "_info"]
        .iter()
        .any(|s| base.ends_with(s))
    {
        return Err("name ends in a suffix Prometheus reserves");
    }
    Ok(())
}

/// A label Prometheus accepts: `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed, not `service`
/// (the supervisor's) nor a histogram's `le`, a value within [`MAX_LABEL_VALUE_LEN`].
fn check_label(
    name: &str,
    value: &str,
    kind: MetricType,
    service_added: bool,
) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok
        || name.len() > MAX_NAME_LEN
        || name.starts_with("__")
        || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("bad label name");
    }
    if (service_added && name == "service") || (kind == MetricType::Histogram && name == "le") {
        return Err("reserved label name");
    }
    if value.len() > MAX_LABEL_VALUE_LEN {
        return Err("label value too long");
    }
    Ok(())
}

fn check_value(kind: MetricType, value: &SampleValue) -> Result<(), &'static str> {
    match (kind, value) {
        (MetricType::Counter, SampleValue::Scalar { value })
            if value.is_finite() && *value >= 0.0 =>
        {
            Ok(())
        }
        (MetricType::Gauge, SampleValue::Scalar { value }) if value.is_finite() => Ok(()),
        (
            MetricType::Histogram,
            SampleValue::Histogram {
                buckets,
                sum,
                count,
            },
        ) => {
            let rising = buckets.windows(2).all(|w| w[0].0 < w[1].0);
            let finite = buckets.iter().all(|(le, _)| le.is_finite()) && sum.is_finite();
            let total = buckets
                .iter()
                .try_fold(0u64, |acc, (_, n)| acc.checked_add(*n));
            if buckets.len() > MAX_BUCKETS || !rising || !finite {
                return Err("bad histogram buckets");
            }
            match total {
                Some(total) if total <= *count => Ok(()),
                _ => Err("histogram buckets hold more than its count"),
            }
        }
        _ => Err("a sample's value does not fit the family's type"),
    }
}

/// The merged families as a prometheus-client collector: a descriptor per family, a
/// metric per sample.
#[derive(Debug)]
struct Exposition(Arc<Merged>);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, family) in &self.0.families {
            let (base, kind) = match family.kind {
                // The encoder appends `_total` to a counter's name.
                MetricType::Counter => (
                    name.strip_suffix("_total").unwrap_or(name),
                    PromType::Counter,
                ),
                MetricType::Gauge => (name.as_str(), PromType::Gauge),
                MetricType::Histogram => (name.as_str(), PromType::Histogram),
            };
            let mut metric = encoder.encode_descriptor(base, &family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (MetricType::Counter, SampleValue::Scalar { value }) => {
                        sample.encode_counter::<NoLabelSet, f64, f64>(value, None)?
                    }
                    (_, SampleValue::Scalar { value }) => sample.encode_gauge(value)?,
                    (
                        _,
                        SampleValue::Histogram {
                            buckets,
                            sum,
                            count,
                        },
                    ) => sample.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
