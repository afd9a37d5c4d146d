//! `registry.*`: service name → endpoint.

use super::{method, NoParams, StatusResult};
use serde::{Deserialize, Serialize};

fn default_api_v() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterParams {
    pub service: String,
    pub endpoint: String,
    /// API version of the service's protocol; an integer ≥ 1 (1 when absent).
    #[serde(default = "default_api_v")]
    pub api_v: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceParams {
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveResult {
    pub endpoint: String,
    pub api_v: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub service: String,
    pub endpoint: String,
    pub api_v: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    pub services: Vec<Entry>,
}

method!(
    /// Add or replace a registration. Root or the registry's own uid only.
    Register,
    "registry.register",
    RegisterParams,
    StatusResult
);
method!(
    /// Remove a registration. Root or the registry's own uid only.
    Deregister,
    "registry.deregister",
    ServiceParams,
    StatusResult
);
method!(
    /// Look up one service's endpoint.
    Resolve,
    "registry.resolve",
    ServiceParams,
    ResolveResult
);
method!(
    /// Every registration, sorted by service name.
    List,
    "registry.list",
    NoParams,
    ListResult
);
