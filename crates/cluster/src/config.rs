//! Cluster configuration, from the environment the supervisor passes to its services.

use std::time::Duration;

/// Where the cluster's etcd is and who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id: `[a-z][a-z0-9-]{0,62}`; tokens it issues carry `iss = identity@<node>`.
    pub node: String,
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    pub etcd: Vec<String>,
    /// Key prefix every Strata key lives under (no trailing slash).
    pub prefix: String,
    /// TTL of the node lease: how long a dead node's registrations outlive it at most.
    pub lease_ttl: Duration,
    /// How long this node may go without confirming it is current with etcd before its
    /// verifiers refuse protected requests (fail closed); `None` (`off`) never refuses.
    pub max_staleness: Option<Duration>,
}

/// Why the cluster settings in the environment were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// etcd endpoints without a node id.
    #[error("{ENV_ETCD} is set, so cluster mode needs {ENV_NODE} (this node's id)")]
    MissingNode,
    /// A node id that breaks the name rule.
    #[error("{ENV_NODE}: node ids must match [a-z][a-z0-9-]{{0,62}}, got {0:?}")]
    BadNode(String),
    /// An endpoint that is not an `http://` URL.
    #[error("{ENV_ETCD}: {0:?} is not an http:// URL")]
    BadEndpoint(String),
    /// An `https://` endpoint (not supported by this build).
    #[error("{ENV_ETCD}: {0:?}: https:// etcd endpoints are not supported by this build; reach etcd over a trusted network with http://")]
    TlsEndpoint(String),
    /// A malformed key prefix.
    #[error("{ENV_PREFIX}: the prefix must start with `/`, not end with one, and hold no spaces; got {0:?}")]
    BadPrefix(String),
    /// A lease TTL outside 2..=300 seconds.
    #[error("{ENV_TTL}: the lease TTL must be a whole number of seconds from 2 to 300, got {0:?}")]
    BadTtl(String),
    /// A staleness bound that is not `off` or a duration from 1 s to 1 h.
    #[error("{ENV_MAX_STALENESS}: write `off` or a whole duration from 1s to 1h (e.g. `500ms` is too short, `5s`, `30s`, `2m`), got {0:?}")]
    BadStaleness(String),
}

/// This node's id.
pub const ENV_NODE: &str = "STRATA_NODE_ID";
/// Comma-separated etcd client URLs; setting it switches cluster mode on.
pub const ENV_ETCD: &str = "STRATA_ETCD_ENDPOINTS";
/// The etcd key prefix (default [`ClusterConfig::DEFAULT_PREFIX`]).
pub const ENV_PREFIX: &str = "STRATA_CLUSTER_PREFIX";
/// The node lease TTL in seconds.
pub const ENV_TTL: &str = "STRATA_LEASE_TTL_SECS";
/// The staleness bound: `off`, or a duration such as `30s` (default
/// [`ClusterConfig::DEFAULT_MAX_STALENESS`]).
pub const ENV_MAX_STALENESS: &str = "STRATA_CLUSTER_MAX_STALENESS";

/// Parses a staleness bound: `off` (`None`) or a whole number with a unit `ms`, `s`, `m`
/// or `h`, from 1 s to 1 h.
pub fn parse_max_staleness(text: &str) -> Result<Option<Duration>, ConfigError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || ConfigError::BadStaleness(text.chars().take(64).collect());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.len() > 9 {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(bad());
    }
    Ok(Some(d))
}

impl ClusterConfig {
    /// The key prefix when none is set.
    pub const DEFAULT_PREFIX: &'static str = "/strata";
    /// The lease TTL when none is set.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    /// The staleness bound when none is set.
    pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);

    /// A configuration with the default prefix and lease TTL.
    pub fn new(node: &str, etcd: Vec<String>) -> Result<ClusterConfig, ConfigError> {
        let config = ClusterConfig {
            node: node.to_owned(),
            etcd,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            lease_ttl: Self::DEFAULT_LEASE_TTL,
            max_staleness: Some(Self::DEFAULT_MAX_STALENESS),
        };
        config.check()?;
        Ok(config)
    }

    /// Cluster mode is on when `STRATA_ETCD_ENDPOINTS` names at least one endpoint;
    /// otherwise `Ok(None)`: single node, nothing leaves the machine.
    pub fn from_env() -> Result<Option<ClusterConfig>, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClusterConfig::from_env`] over any variable lookup (tests).
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let etcd: Vec<String> = var(ENV_ETCD)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if etcd.is_empty() {
            return Ok(None);
        }
        let node = var(ENV_NODE).ok_or(ConfigError::MissingNode)?;
        let prefix = var(ENV_PREFIX).unwrap_or_else(|| Self::DEFAULT_PREFIX.to_owned());
        let lease_ttl = match var(ENV_TTL) {
            None => Self::DEFAULT_LEASE_TTL,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(secs @ 2..=300) => Duration::from_secs(secs),
                _ => return Err(ConfigError::BadTtl(text)),
            },
        };
        let max_staleness = match var(ENV_MAX_STALENESS) {
            None => Some(Self::DEFAULT_MAX_STALENESS),
            Some(text) => parse_max_staleness(&text)?,
        };
        let config = ClusterConfig {
            node,
            etcd,
            prefix,
            lease_ttl,
            max_staleness,
        };
        config.check()?;
        Ok(Some(config))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !strata_proto::is_service_name(&self.node) {
            return Err(ConfigError::BadNode(self.node.clone()));
        }
        for e in &self.etcd {
            if e.starts_with("https://") {
                return Err(ConfigError::TlsEndpoint(e.clone()));
            }
            if !e.starts_with("http://") {
                return Err(ConfigError::BadEndpoint(e.clone()));
            }
        }
        let p = &self.prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.contains(char::is_whitespace) {
            return Err(ConfigError::BadPrefix(p.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<ClusterConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClusterConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn off_without_endpoints() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[(ENV_NODE, "a"), (ENV_ETCD, " , ")]), Ok(None));
    }

    #[test]
    fn parses_every_setting() {
        let c = parse(&[
            (ENV_NODE, "node-a"),
            (ENV_ETCD, "http://127.0.0.1:2379, http://127.0.0.1:2380"),
            (ENV_TTL, "4"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.node, "node-a");
        assert_eq!(c.etcd.len(), 2);
        assert_eq!(c.prefix, "/strata");
        assert_eq!(c.lease_ttl, Duration::from_secs(4));
        assert_eq!(c.max_staleness, Some(ClusterConfig::DEFAULT_MAX_STALENESS));
    }

    #[test]
    fn parses_the_staleness_bound() {
        let etcd = (ENV_ETCD, "http://127.0.0.1:2379");
        let at = |v: &str| parse(&[etcd, (ENV_NODE, "a"), (ENV_MAX_STALENESS, v)]);
        assert_eq!(at("off").unwrap().unwrap().max_staleness, None);
        assert_eq!(
            at("5s").unwrap().unwrap().max_staleness,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            at(" 2m ").unwrap().unwrap().max_staleness,
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            at("1500ms").unwrap().unwrap().max_staleness,
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "",
            "0s",
            "999ms",
            "2h",
            "5",
            "5 s",
            "1.5s",
            "-5s",
            "5d",
            "9999999999s",
        ] {
            assert!(
                matches!(at(bad), Err(ConfigError::BadStaleness(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn refuses_bad_values() {
        let etcd = (ENV_ETCD, "http://127.0.0.1:2379");
        assert_eq!(parse(&[etcd]), Err(ConfigError::MissingNode));
        assert!(matches!(
            parse(&[etcd, (ENV_NODE, "Node A")]),
            Err(ConfigError::BadNode(_))
        ));
        assert!(matches!(
            parse(&[(ENV_ETCD, "127.0.0.1:2379"), (ENV_NODE, "a")]),
            Err(ConfigError::BadEndpoint(_))
        ));
        assert!(matches!(
            parse(&[(ENV_ETCD, "https://127.0.0.1:2379"), (ENV_NODE, "a")]),
            Err(ConfigError::TlsEndpoint(_))
        ));
        for prefix in ["strata", "/strata/", "/a b"] {
            assert!(matches!(
                parse(&[etcd, (ENV_NODE, "a"), (ENV_PREFIX, prefix)]),
                Err(ConfigError::BadPrefix(_))
            ));
        }
        for ttl in ["0", "1", "301", "ten", "-5"] {
            assert!(matches!(
                parse(&[etcd, (ENV_NODE, "a"), (ENV_TTL, ttl)]),
                Err(ConfigError::BadTtl(_))
            ));
        }
    }
}
