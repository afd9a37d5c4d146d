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
