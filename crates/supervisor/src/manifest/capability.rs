//! `[[service.capability]]`: the capabilities the supervisor obtains from identity for a
//! service, delivers into its credentials directory, rotates and revokes with the run.
//!
//! The types only; [`CapabilitySpec::validate`] checks one entry (the rules are in the
//! supervisor README and `docs/OPERATIONS.md`).

use crate::units::{HumanDuration, Signal};
use serde::{Deserialize, Serialize};

/// Default lifetime of a routed capability: one hour.
pub const DEFAULT_TTL: HumanDuration = HumanDuration::secs(3600);

/// One routed capability of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    /// The file name in the service's credentials directory (unique per service).
    pub name: String,
    /// The service the token is for (`fs`, `notes`, ...).
    pub service: String,
    /// Full method names of that service, e.g. `fs.read`.
    pub rights: Vec<String>,
    /// The token's `path_prefix` constraint (absolute, normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The token's `rate_limit` constraint, e.g. `200rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// The token's lifetime; a fresh one replaces it at about two thirds of it.
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// How long a replaced token stays valid after its rotation before it is revoked
    /// (default: a sixth of `ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<HumanDuration>,
    /// A signal sent to the service after its file was replaced (e.g. `SIGHUP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rotate: Option<Signal>,
}

fn default_ttl() -> HumanDuration {
    DEFAULT_TTL
}

impl CapabilitySpec {
    /// The grace after a rotation: `grace`, or a sixth of `ttl`.
    pub fn grace_period(&self) -> std::time::Duration {
        self.grace.map(|g| g.0).unwrap_or(self.ttl.0 / 6)
    }

    /// When, after a token was obtained, the next one is: two thirds of `ttl`.
    pub fn rotate_after(&self) -> std::time::Duration {
        self.ttl.0 * 2 / 3
    }
}
