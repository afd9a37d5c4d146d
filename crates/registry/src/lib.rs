//! The registry service: which service listens where.
//!
//! `registry.resolve` and `registry.list` are open to anyone who can reach the socket;
//! `registry.register` and `registry.deregister` only to root or the registry's own uid,
//! checked by kernel peer credentials. Input is validated here, at the boundary: names
//! match `[a-z][a-z0-9-]{0,62}`, endpoints parse, `api_v` is at least 1.
//!
//! Not here: health. The supervisor registers a service when it becomes Healthy and
//! removes it when it stops or crashes.

pub mod cluster;
pub mod metrics;
pub mod store;

pub use cluster::ClusterStore;
use std::sync::Arc;
pub use store::{MemoryStore, RegistryStore, StoreError};
use strata_ipc::{Endpoint, Origin, Router};
use strata_proto::methods::registry::{
    Deregister, Entry, List, ListResult, Register, RegisterParams, Resolve, ResolveResult,
    ServiceParams,
};
use strata_proto::methods::{NoParams, StatusResult};
use strata_proto::{ErrorBody, ErrorCode};

/// Everything that can go wrong in a registry request.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`endpoint`: {0}")]
    /// `endpoint` does not parse.
    BadEndpoint(#[from] strata_ipc::EndpointError),
    #[error("`remote_endpoint`: {0}")]
    /// `remote_endpoint` is not a usable `tcp://` endpoint.
    BadRemoteEndpoint(String),
    #[error("`api_v` must be an integer >= 1, got {0}")]
    /// `api_v` below 1.
    BadApiVersion(i64),
    #[error("only root or the registry's own user may {0}")]
    /// The caller may not write.
    NotAllowed(&'static str),
    #[error("no service named `{0}` is registered")]
    /// No such registration.
    NotFound(String),
    #[error(transparent)]
    /// The store failed.
    Store(#[from] StoreError),
}

impl From<RegistryError> for ErrorBody {
    fn from(e: RegistryError) -> ErrorBody {
        let code = match &e {
            RegistryError::BadEndpoint(_)
            | RegistryError::BadRemoteEndpoint(_)
            | RegistryError::BadApiVersion(_) => ErrorCode::InvalidArgument,
            RegistryError::NotAllowed(_) => ErrorCode::PermissionDenied,
            RegistryError::NotFound(_) => ErrorCode::NotFound,
            RegistryError::Store(_) => ErrorCode::Unavailable,
        };
        let field = match &e {
            RegistryError::BadEndpoint(_) => Some("endpoint"),
            RegistryError::BadApiVersion(_) => Some("api_v"),
            RegistryError::BadRemoteEndpoint(_) => Some("remote_endpoint"),
            _ => None,
        };
        let body = ErrorBody::new(code, e.to_string());
        match field {
            Some(f) => body.with_details(serde_json::json!({ "field": f })),
            None => body,
        }
    }
}

/// The registry's state and its write policy.
pub struct Registry<S> {
    store: S,
    /// The uid allowed to write besides root: the registry's own.
    owner_uid: u32,
}

impl<S: RegistryStore> Registry<S> {
    /// A registry over `store`, written by root and `owner_uid`.
    pub fn new(store: S, owner_uid: u32) -> Registry<S> {
        Registry { store, owner_uid }
    }

    fn may_write(&self, caller: &Origin, what: &'static str) -> Result<(), RegistryError> {
        if caller.is_admin(self.owner_uid) {
            Ok(())
        } else {
            tracing::warn!(?caller, action = what, "registry write denied");
            Err(RegistryError::NotAllowed(what))
        }
    }

    /// `registry.register`.
    pub async fn register(
        &self,
        caller: &Origin,
        p: RegisterParams,
    ) -> Result<StatusResult, RegistryError> {
        self.may_write(caller, "register services")?;
        let endpoint = Endpoint::parse(&p.endpoint)?;
        if p.api_v < 1 {
            return Err(RegistryError::BadApiVersion(p.api_v));
        }
        let remote_endpoint = match &p.remote_endpoint {
            None => None,
            Some(text) => match Endpoint::parse(text) {
                Ok(Endpoint::Tcp { host, .. })
                    if host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_unspecified()) =>
                {
                    return Err(RegistryError::BadRemoteEndpoint(format!(
                        "{text:?} names no particular address; give the address other nodes reach the service at"
                    )))
                }
                Ok(e @ Endpoint::Tcp { .. }) => Some(e.to_string()),
                Ok(_) => {
                    return Err(RegistryError::BadRemoteEndpoint(format!(
                        "{text:?} is not a tcp://host:port endpoint"
                    )))
                }
                Err(e) => return Err(RegistryError::BadRemoteEndpoint(e.to_string())),
            },
        };
        tracing::info!(service = %p.service, %endpoint, ?remote_endpoint, api_v = p.api_v, ?caller, "registered");
        self.store
            .put(Entry {
                service: p.service.into_string(),
                endpoint: endpoint.to_string(),
                api_v: p.api_v,
                node: None,
                remote_endpoint,
            })
            .await?;
        Ok(StatusResult::new("registered"))
    }

    /// `registry.deregister`.
    pub async fn deregister(
        &self,
        caller: &Origin,
        p: ServiceParams,
    ) -> Result<StatusResult, RegistryError> {
        self.may_write(caller, "deregister services")?;
        if self.store.remove(&p.service).await? {
            tracing::info!(service = %p.service, ?caller, "deregistered");
            Ok(StatusResult::new("deregistered"))
        } else {
            Err(RegistryError::NotFound(p.service.into_string()))
        }
    }

    /// This node's instance when it has one (and no other node was asked for), else a
    /// live remote instance with a `tcp://` endpoint.
    pub async fn resolve(&self, p: ServiceParams) -> Result<ResolveResult, RegistryError> {
        let here = self.store.node();
        let local_wanted = match (&p.node, here) {
            (None, _) => true,
            (Some(asked), Some(here)) => asked.as_str() == here,
            (Some(_), None) => false,
        };
        if local_wanted {
            if let Some(e) = self.store.get(&p.service).await? {
                return Ok(ResolveResult {
                    endpoint: e.endpoint,
                    api_v: e.api_v,
                    node: here.map(str::to_owned),
                });
            }
        }
        match self.store.remote(&p.service, p.node.as_deref()) {
            Some(e) => Ok(ResolveResult {
                endpoint: e.endpoint,
                api_v: e.api_v,
                node: e.node,
            }),
            None => Err(RegistryError::NotFound(match &p.node {
                Some(node) => format!("{} on node {node}", p.service),
                None => p.service.into_string(),
            })),
        }
    }

    /// `registry.list`.
    pub async fn list(&self) -> Result<ListResult, RegistryError> {
        Ok(ListResult {
            services: self.store.list().await?,
        })
    }
}

/// The registry's method table.
pub fn router<S: RegistryStore>(registry: Arc<Registry<S>>) -> Router {
    Router::new("registry", env!("CARGO_PKG_VERSION"))
        .with_state(registry)
        .metrics(|r, snap| r.store.report_metrics(snap))
        .method::<Register, _, _, _>(|r, call, p| async move { r.register(call.origin(), p).await })
        .method::<Deregister, _, _, _>(
            |r, call, p| async move { r.deregister(call.origin(), p).await },
        )
        .method::<Resolve, _, _, _>(|r, _call, p| async move { r.resolve(p).await })
        .method::<List, _, _, _>(|r, _call, _p: NoParams| async move { r.list().await })
        .into_router()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Origin {
        Origin::Local(strata_ipc::PeerCred {
            pid: Some(1),
            uid,
            gid: uid,
        })
    }

    fn name(service: &str) -> strata_proto::ServiceName {
        service.parse().unwrap()
    }

    fn reg(service: &str, endpoint: &str, api_v: i64) -> RegisterParams {
        RegisterParams {
            service: name(service),
            endpoint: endpoint.into(),
            api_v,
            remote_endpoint: None,
        }
    }

    fn code(e: RegistryError) -> ErrorCode {
        ErrorBody::from(e).code
    }

    #[tokio::test]
    async fn register_resolve_list_deregister() {
        let r = Registry::new(MemoryStore::default(), 1000);
        r.register(&peer(0), reg("fs", "unix:///run/strata/fs.sock", 1))
            .await
            .unwrap();
        r.register(&peer(1000), reg("billing", "unix:///run/b.sock", 2))
            .await
            .unwrap();
        let got = r.resolve(ServiceParams::new(name("fs"))).await.unwrap();
        assert_eq!(got.endpoint, "unix:///run/strata/fs.sock");
        let all = r.list().await.unwrap().services;
        assert_eq!(
            all.iter().map(|e| e.service.as_str()).collect::<Vec<_>>(),
            ["billing", "fs"]
        );
        // Re-registering replaces.
        r.register(&peer(0), reg("fs", "unix:///other/fs.sock", 3))
            .await
            .unwrap();
        let got = r.resolve(ServiceParams::new(name("fs"))).await.unwrap();
        assert_eq!(
            (got.endpoint.as_str(), got.api_v),
            ("unix:///other/fs.sock", 3)
        );
        r.deregister(&peer(0), ServiceParams::new(name("fs")))
            .await
            .unwrap();
        let e = r.resolve(ServiceParams::new(name("fs"))).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::NotFound);
        let e = r
            .deregister(&peer(0), ServiceParams::new(name("fs")))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::NotFound);
    }

    #[tokio::test]
    async fn only_root_or_owner_may_write() {
        let r = Registry::new(MemoryStore::default(), 1000);
        let e = r
            .register(&peer(1001), reg("fs", "unix:///x.sock", 1))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::PermissionDenied);
        r.register(&peer(0), reg("fs", "unix:///x.sock", 1))
            .await
            .unwrap();
        let e = r
            .deregister(&peer(1001), ServiceParams::new(name("fs")))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::PermissionDenied);
        assert!(r.resolve(ServiceParams::new(name("fs"))).await.is_ok());
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let r = Registry::new(MemoryStore::default(), 0);
        for (p, field) in [
            (reg("ok", "http://1.2.3.4:5", 1), "endpoint"),
            (reg("ok", "unix://rel.sock", 1), "endpoint"),
            (reg("ok", "unix:///x.sock", 0), "api_v"),
            (reg("ok", "unix:///x.sock", -3), "api_v"),
        ] {
            let body = ErrorBody::from(r.register(&peer(0), p).await.unwrap_err());
            assert_eq!(body.code, ErrorCode::InvalidArgument);
            assert_eq!(body.details["field"], field, "{}", body.message);
        }
        for remote in [
            "unix:///x.sock",
            "tcp://0.0.0.0:7101",
            "tcp://[::]:7101",
            "tcp://h:0",
        ] {
            let mut p = reg("ok", "unix:///x.sock", 1);
            p.remote_endpoint = Some(remote.into());
            let body = ErrorBody::from(r.register(&peer(0), p).await.unwrap_err());
            assert_eq!(body.code, ErrorCode::InvalidArgument, "{remote}");
            assert_eq!(body.details["field"], "remote_endpoint", "{}", body.message);
        }
        assert!(
            r.list().await.unwrap().services.is_empty(),
            "nothing half-written"
        );
    }

    /// A name breaking the rule is refused as the params are parsed, naming the field, for
    /// every method that takes one (and never echoed back).
    #[tokio::test]
    async fn bad_names_are_refused_at_the_boundary_naming_the_field() {
        let router = router(Arc::new(Registry::new(MemoryStore::default(), 0)));
        let me = strata_ipc::PeerCred {
            pid: Some(1),
            uid: 0,
            gid: 0,
        };
        let long = "X".repeat(4000);
        for (method, params, field) in [
            (
                "registry.register",
                r#"{"service":"Bad","endpoint":"unix:///x.sock"}"#.to_owned(),
                "service",
            ),
            (
                "registry.register",
                format!(r#"{{"service":"{long}","endpoint":"unix:///x.sock"}}"#),
                "service",
            ),
            (
                "registry.deregister",
                r#"{"service":"../fs"}"#.to_owned(),
                "service",
            ),
            (
                "registry.resolve",
                r#"{"service":""}"#.to_owned(),
                "service",
            ),
            (
                "registry.resolve",
                r#"{"service":"fs","node":"Node A"}"#.to_owned(),
                "node",
            ),
        ] {
            let frame = format!(r#"{{"v":1,"req_id":"r","method":"{method}","params":{params}}}"#);
            let answer = router.dispatch(me, frame.as_bytes()).await;
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(answer["error"]["code"], 1, "{method} {params}: {answer}");
            assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
            assert!(
                !answer.to_string().contains("XXXX"),
                "the name is not echoed: {answer}"
            );
        }
    }
}
