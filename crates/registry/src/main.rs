//! `strata-registry`: serves the registry on `<runtime dir>/registry.sock`.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use strata_cluster::{ClusterConfig, Etcd};
use strata_ipc::{paths, Server, ServerConfig};
use strata_registry::{router, ClusterStore, MemoryStore, Registry};

#[derive(Parser)]
#[command(version, about = "Strata service registry")]
struct Args {
    /// Runtime directory for the socket (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Permission bits of the socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = strata_ipc::parse_socket_mode)]
    socket_mode: u32,
}

fn main() -> anyhow::Result<()> {
    strata_ipc::logging::init();
    let args = Args::parse();
    let runtime_dir = paths::resolve_runtime_dir(args.runtime_dir)?;
    let mut config = ServerConfig::new(paths::socket_path(&runtime_dir, "registry"));
    config.socket_mode = args.socket_mode;
    config.socket_group = paths::socket_group_from_env()?;
    let own_uid = strata_ipc::PeerCred::current_process().uid;
    // Cluster mode when STRATA_ETCD_ENDPOINTS is set (the supervisor passes it on).
    let cluster = ClusterConfig::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = match cluster {
            None => {
                let registry = Arc::new(Registry::new(MemoryStore::default(), own_uid));
                Server::bind(config, router(registry))?
            }
            Some(cluster) => {
                tracing::info!(node = %cluster.node, etcd = ?cluster.etcd, "cluster mode");
                let etcd = Etcd::connect(&cluster).await?;
                let store = ClusterStore::start(etcd, cluster.node, cluster.lease_ttl);
                Server::bind(config, router(Arc::new(Registry::new(store, own_uid))))?
            }
        };
        server.serve_until_signal().await?;
        Ok(())
    })
}
