//! Keeps the registry in step with health (SPEC §5.6): a service is registered when it
//! becomes Healthy and deregistered when it crashes, stops or is quarantined. When the
//! registry itself becomes Healthy again (after a restart it remembers nothing), every
//! Healthy service is registered anew.
//!
//! Operations go through one queue, handled in order by one task, so a deregistration can
//! never overtake the registration it undoes. The registry is reached at its
//! conventional socket; when it is down, operations are dropped (logged at debug) and the
//! resync on its return repairs the difference.

use std::path::PathBuf;
use std::time::Duration;
use strata_ipc::{Client, ClientError, Endpoint};
use strata_proto::methods::registry::{Deregister, Register, RegisterParams, ServiceParams};
use strata_proto::{ErrorCode, ServiceName};
use tokio::sync::mpsc;

/// What the registry is told about a Healthy service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `unix://<socket>` on this node.
    pub endpoint: String,
    /// Cluster mode: `tcp://ip:port` for other nodes, when the service listens on one.
    pub remote_endpoint: Option<String>,
}

#[derive(Debug)]
enum Op {
    Register {
        service: ServiceName,
        registration: Registration,
    },
    Deregister {
        service: ServiceName,
    },
}

/// Handle to the registry synchroniser.
#[derive(Clone)]
pub struct RegistrySync {
    tx: mpsc::UnboundedSender<Op>,
}

impl RegistrySync {
    /// Start the synchroniser for the registry at `registry_socket`. Must be called inside
    /// the Tokio runtime.
    pub fn start(registry_socket: PathBuf) -> RegistrySync {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(registry_socket, rx));
        RegistrySync { tx }
    }

    /// Register `service` (now Healthy) at `registration`.
    pub fn register(&self, service: &str, registration: Registration) {
        // Manifest names follow the rule already (checked when the manifest is read).
        let Ok(service) = ServiceName::parse(service) else {
            tracing::error!(%service, "not a service name; not registered");
            return;
        };
        let _ = self.tx.send(Op::Register {
            service,
            registration,
        });
    }

    /// Deregister `service` (no longer Healthy).
    pub fn deregister(&self, service: &str) {
        let Ok(service) = ServiceName::parse(service) else {
            return;
        };
        let _ = self.tx.send(Op::Deregister { service });
    }
}

async fn run(socket: PathBuf, mut rx: mpsc::UnboundedReceiver<Op>) {
    let endpoint = match Endpoint::unix(&socket) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "registry socket path unusable; registrations disabled");
            while rx.recv().await.is_some() {}
            return;
        }
    };
    let mut client = Client::new(endpoint);
    client.set_timeout(Duration::from_secs(2));
    while let Some(op) = rx.recv().await {
        let outcome = match &op {
            Op::Register {
                service,
                registration,
            } => client
                .call::<Register>(&RegisterParams {
                    service: service.clone(),
                    endpoint: registration.endpoint.clone(),
                    api_v: 1,
                    remote_endpoint: registration.remote_endpoint.clone(),
                })
                .await
                .map(|_| ()),
            Op::Deregister { service } => match client
                .call::<Deregister>(&ServiceParams::new(service.clone()))
                .await
            {
                Err(ClientError::Server(e)) if e.code == ErrorCode::NotFound => Ok(()),
                other => other.map(|_| ()),
            },
        };
        match outcome {
            Ok(()) => tracing::debug!(?op, "registry updated"),
            Err(ClientError::Server(e)) => {
                tracing::warn!(?op, error = %e, "registry refused an update")
            }
            Err(e) => {
                tracing::debug!(?op, error = %e, "registry unreachable; it is resynced when it returns")
            }
        }
    }
}
