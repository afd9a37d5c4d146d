//! `identity.*`: capability tokens.

use super::{method, StatusResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueParams {
    pub service: String,
    /// Fully-qualified rights, e.g. `["fs.open"]`. Preferred over `actions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<String>>,
    /// Legacy short actions, e.g. `["open"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Lifetime in seconds (3600 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// For example `"50rps"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueResult {
    pub token: String,
    pub cap_id: String,
    /// Unix seconds.
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeParams {
    pub cap_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectParams {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectResult {
    pub claims: serde_json::Value,
    pub valid: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

method!(
    /// Mint a capability token.
    Issue,
    "identity.issue",
    IssueParams,
    IssueResult
);
method!(
    /// Revoke a capability (and its descendants).
    Revoke,
    "identity.revoke",
    RevokeParams,
    StatusResult
);
method!(
    /// Decode and check a token.
    Introspect,
    "identity.introspect",
    IntrospectParams,
    IntrospectResult
);
