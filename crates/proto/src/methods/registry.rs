//! `registry.*`: service name → endpoint.

use super::{method, NoParams, StatusResult};
use crate::{NodeId, ServiceName};
use serde::{Deserialize, Serialize};

fn default_api_v() -> i64 {
    1
}

/// `registry.register`'s params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterParams {
    /// The service's name.
    pub service: ServiceName,
    /// Where it listens on this node, e.g. `unix:///run/strata/fs.sock`.
    pub endpoint: String,
    /// API version of the service's protocol; an integer ≥ 1 (1 when absent).
    #[serde(default = "default_api_v")]
    pub api_v: i64,
    /// Cluster mode: a `tcp://host:port` (mutual TLS) endpoint other nodes use to reach
    /// the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<String>,
}

/// Params naming one service (`registry.resolve`, `registry.deregister`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceParams {
    /// The service's name.
    pub service: ServiceName,
    /// Cluster mode, `registry.resolve` only: the node whose instance is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}

impl ServiceParams {
    /// Params naming `service` on no particular node.
    pub fn new(service: ServiceName) -> ServiceParams {
        ServiceParams {
            service,
            node: None,
        }
    }
}

/// `registry.resolve`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveResult {
    /// Where to connect.
    pub endpoint: String,
    /// The service's protocol API version.
    pub api_v: i64,
    /// Cluster mode: the node the endpoint belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One registration, as `registry.list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The service's name.
    pub service: String,
    /// How this node reaches the service: the local socket for services on this node,
    /// the `tcp://` endpoint for services on other nodes.
    pub endpoint: String,
    /// The service's protocol API version.
    pub api_v: i64,
    /// Cluster mode: the node the service runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Cluster mode: the service's `tcp://` endpoint, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<String>,
}

/// `registry.list`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// Every registration this node knows, local and remote.
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
