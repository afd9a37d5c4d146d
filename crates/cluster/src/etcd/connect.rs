//! Connecting: one etcd-client per endpoint, with the keep-alive, TLS and auth settings.

use super::{Etcd, Members, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, OP_TIMEOUT};
use crate::{ClusterConfig, ClusterError};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

impl Etcd {
    /// Prepares a connection to `config.etcd`, with TLS and etcd authentication when
    /// `config.access` sets them. Does not wait for etcd to be up: the first request does
    /// (and fails after its deadline if it is not).
    ///
    /// With a user, each endpoint's client logs in (etcd `Authenticate`) before its first
    /// request rather than here (etcd-client would do it here, and so fail while etcd is
    /// down); an expired token is renewed by etcd-client when etcd refuses it.
    pub async fn connect(config: &ClusterConfig) -> Result<Etcd, ClusterError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(OP_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            // No pings on a connection with nothing open: etcd counts those against the
            // client whatever their interval (it does not permit pings without a stream),
            // and a unary request has its own deadline.
            .with_keep_alive_while_idle(false)
            // A watch on a member that lost its quorum is cancelled (and reopened on the
            // next member) rather than left open and silently stale; requests there are
            // refused as having no leader.
            .with_require_leader(true)
            .with_auto_token_refresh(config.access.auth.is_some());
        if let Some(tls) = &config.access.tls {
            // Only the given CA is trusted (no system or bundled roots are compiled in).
            let mut tls_options =
                TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(client) = &tls.client {
                tls_options =
                    tls_options.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
            }
            options = options.with_tls(tls_options);
        }
        let mut clients = Vec::with_capacity(config.etcd.len());
        for endpoint in &config.etcd {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(|e| ClusterError::Invalid(format!("etcd endpoint {endpoint}: {e}")))?;
            clients.push((endpoint.clone(), client));
        }
        if clients.is_empty() {
            return Err(ClusterError::Invalid("no etcd endpoints".into()));
        }
        let logged_in = clients
            .iter()
            .map(|_| tokio::sync::Mutex::new(false))
            .collect();
        Ok(Etcd {
            members: Arc::new(Members {
                clients,
                current: AtomicUsize::new(0),
                auth: config.access.auth.clone(),
                logged_in,
                tls_without_client_cert: config
                    .access
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.client.is_none()),
            }),
            prefix: config.prefix.clone(),
        })
    }
}
