//! Cluster configuration, from the environment the supervisor passes to its services.

use std::time::Duration;

mod access;
#[cfg(test)]
mod tests;

pub use access::{
    ClientCert, EtcdAccess, EtcdAuth, EtcdTls, ENV_ETCD_CA, ENV_ETCD_CERT, ENV_ETCD_KEY,
    ENV_ETCD_PASSWORD_FILE, ENV_ETCD_USER,
};

/// Where the cluster's etcd is and who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id: `[a-z][a-z0-9-]{0,62}`; tokens it issues carry `iss = identity@<node>`.
    pub node: String,
    /// etcd client URLs, e.g. `https://10.0.0.1:2379`: all `https://` or all `http://`.
    pub etcd: Vec<String>,
    /// TLS and authentication to etcd (none for plain `http://`).
    pub access: EtcdAccess,
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
    /// An endpoint that is not an `http://` or `https://` URL.
    #[error("{ENV_ETCD}: {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    /// Some endpoints `http://`, some `https://`.
    #[error("{ENV_ETCD}: the endpoints mix http:// and https://; use https:// for every one")]
    MixedSchemes,
    /// An `https://` endpoint without the CA to check etcd's certificate with.
    #[error("{ENV_ETCD}: {0:?} is https://, so {ENV_ETCD_CA} (--etcd-ca) must name the CA certificate that signed etcd's server certificate (it may be the cluster CA)")]
    HttpsWithoutCa(String),
    /// TLS settings with `http://` endpoints, where they would go unused.
    #[error("{ENV_ETCD_CA}/{ENV_ETCD_CERT}/{ENV_ETCD_KEY} are set but the etcd endpoints are http://; use https:// endpoints, or drop the TLS settings")]
    TlsOnHttp,
    /// A client certificate or key without the CA.
    #[error("{ENV_ETCD_CERT}/{ENV_ETCD_KEY} (--etcd-cert/--etcd-key) need {ENV_ETCD_CA} (--etcd-ca) and https:// endpoints")]
    ClientCertWithoutCa,
    /// A client certificate without its key, or a key without its certificate.
    #[error("{ENV_ETCD_CERT} and {ENV_ETCD_KEY} (--etcd-cert, --etcd-key) go together: set both or neither")]
    HalfClientCert,
    /// A user without a password file, or a password file without a user.
    #[error("{ENV_ETCD_USER} and {ENV_ETCD_PASSWORD_FILE} (--etcd-user, --etcd-password-file) go together: set both or neither")]
    HalfAuth,
    /// An etcd user name that is empty, too long or holds whitespace.
    #[error(
        "{ENV_ETCD_USER}: an etcd user name is 1 to 128 characters without whitespace, got {0:?}"
    )]
    BadUser(String),
    /// A certificate, key or password file that cannot be used.
    #[error("{var}: {path}: {why}")]
    File {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it (never its contents).
        why: String,
    },
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
            access: EtcdAccess::default(),
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
        let access = EtcdAccess::from_lookup(&var, &etcd)?;
        let config = ClusterConfig {
            node,
            etcd,
            access,
            prefix,
            lease_ttl,
            max_staleness,
        };
        config.check()?;
        Ok(Some(config))
    }

    /// This configuration with `access` (TLS and auth to etcd), checked against the
    /// endpoints.
    pub fn with_access(mut self, access: EtcdAccess) -> Result<ClusterConfig, ConfigError> {
        self.access = access;
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !strata_proto::is_service_name(&self.node) {
            return Err(ConfigError::BadNode(self.node.clone()));
        }
        self.access.check(&self.etcd)?;
        let p = &self.prefix;
        if !p.starts_with('/') || p.ends_with('/') || p.contains(char::is_whitespace) {
            return Err(ConfigError::BadPrefix(p.clone()));
        }
        Ok(())
    }
}
