//! `strata-identity`: serves `identity.sock`, the only signer of capabilities.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use strata_identity::{router, Identity, IdentityConfig};
use strata_ipc::{paths, Server, ServerConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Strata identity service: mints and revokes capability tokens"
)]
struct Args {
    /// Runtime directory (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// State directory for the signing key, revocations and audit log
    /// (default: $STRATA_STATE_DIR, /var/lib/strata for root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Issuance policy (TOML). Default: <state dir>/issuance.toml when it exists;
    /// without one only root and identity's own user may issue.
    #[arg(long, value_name = "FILE", env = "STRATA_ISSUANCE_POLICY")]
    policy: Option<PathBuf>,
    /// Seconds a revocation (and the record of an issued capability) is kept after the
    /// capability expired, then pruned. In a cluster, more than the nodes' clocks may
    /// differ.
    #[arg(long, value_name = "SECS", env = "STRATA_REVOCATION_RETENTION",
          default_value_t = strata_cap::DEFAULT_REVOCATION_RETENTION.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    revocation_retention: u64,
    /// Uids whose revocation-feed subscribers `identity.revoke` waits for, besides root and
    /// identity's own uid: comma-separated, e.g. the uids services run as. Subscribers of
    /// other uids are fed but not waited for (they cannot delay revocations).
    #[arg(
        long,
        value_name = "UIDS",
        env = "STRATA_VERIFIER_UIDS",
        value_delimiter = ','
    )]
    verifier_uids: Vec<u32>,
    /// Permission bits of the socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = strata_ipc::parse_socket_mode)]
    socket_mode: u32,
}

fn main() -> anyhow::Result<()> {
    strata_ipc::logging::init();
    let args = Args::parse();
    let runtime_dir = paths::resolve_runtime_dir(args.runtime_dir)?;
    let state_dir = paths::resolve_state_dir(args.state_dir)?;
    let config = IdentityConfig {
        policy: Some(
            args.policy
                .unwrap_or_else(|| state_dir.join("issuance.toml")),
        ),
        runtime_dir: runtime_dir.clone(),
        state_dir,
        node_id: std::env::var("STRATA_NODE_ID").unwrap_or_else(|_| "local-0".to_owned()),
        revocation_retention: std::time::Duration::from_secs(args.revocation_retention),
        mint_limits: strata_identity::mint_quota::MintLimits::default(),
        verifier_uids: args.verifier_uids,
    };
    // Cluster mode when STRATA_ETCD_ENDPOINTS is set (the supervisor passes it on).
    let cluster = strata_cluster::ClusterConfig::from_env()?;
    let max_clock_skew = strata_cap::max_clock_skew_from_env()?;
    let mut server_config = ServerConfig::new(paths::socket_path(&runtime_dir, "identity"));
    server_config.socket_mode = args.socket_mode;
    server_config.socket_group = paths::socket_group_from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        paths::create_dir(paths::DirKind::Runtime, &runtime_dir, 0o750)?;
        // In cluster mode the clock carries the cluster's max clock skew, which every
        // check of a token's time window allows for.
        let clock = strata_cap::SystemClock::new().with_max_skew(max_clock_skew);
        let identity = Arc::new(Identity::open(&config, Arc::new(clock))?);
        if let Some(cluster) = &cluster {
            tracing::info!(node = %cluster.node, etcd = ?cluster.etcd, "cluster mode");
            identity.join_cluster(cluster).await?;
        }
        let _pruner = identity.spawn_pruner();
        let server = Server::bind(server_config, router(identity))?;
        server.serve_until_signal().await?;
        Ok(())
    })
}
