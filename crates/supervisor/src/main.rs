//! `strata-supervisor`: run the built-in graph, or the services of a manifest.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use strata_ipc::paths;
use strata_supervisor::process::ProgramLookup;
use strata_supervisor::{units, Manifest, OrphanGuard, ServiceManager, SupervisorConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Strata supervisor: starts and watches a graph of services",
    after_help = "Without --config (or $STRATA_CONFIG) it runs the built-in graph: registry, identity, \
                  and fs after identity. Binaries are found through STRATA_REGISTRY_BIN, \
                  STRATA_IDENTITY_BIN, STRATA_FS_BIN, beside this executable, then PATH.\n\
                  SIGTERM/SIGINT stop every service in reverse dependency order; SIGHUP reloads the manifest."
)]
struct Args {
    /// TOML manifest of the services to run.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate a manifest, print the start order, and exit (0 valid, 1 invalid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Runtime directory for sockets (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// State directory for logs and the audit log (default: $STRATA_STATE_DIR,
    /// /var/lib/strata for root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// This node's id, passed to services as STRATA_NODE_ID.
    #[arg(long, env = "STRATA_NODE_ID", default_value = "local-0")]
    node_id: String,
    /// Cluster mode: etcd client URLs, comma-separated (e.g. https://10.0.0.1:2379), all
    /// https:// or all http:// (plain: anyone on the network can read and forge the
    /// cluster's state). Without them the node runs alone and nothing leaves the machine.
    #[arg(long, env = "STRATA_ETCD_ENDPOINTS", value_name = "URLS")]
    etcd: Option<String>,
    /// The CA certificate (PEM) that signed etcd's server certificate (may be the cluster
    /// CA); needed for https:// endpoints, and the only root trusted for them.
    #[arg(long, env = "STRATA_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// This node's TLS client certificate for etcd (PEM), for etcd's --client-cert-auth.
    #[arg(long, env = "STRATA_ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM, mode 0600).
    #[arg(long, env = "STRATA_ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,
    /// The etcd user this node authenticates as (with --etcd-password-file).
    #[arg(long, env = "STRATA_ETCD_USER", value_name = "USER")]
    etcd_user: Option<String>,
    /// A file (mode 0600 or stricter, at most 4 KiB) holding the etcd user's password;
    /// a trailing newline is not part of it.
    #[arg(long, env = "STRATA_ETCD_PASSWORD_FILE", value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
    /// Cluster mode: how long the node may go without confirming it is current with
    /// etcd before its verifiers refuse protected requests (`off`, or 1s..1h; default 30s).
    #[arg(long, env = "STRATA_CLUSTER_MAX_STALENESS", value_name = "DURATION")]
    max_staleness: Option<String>,
    /// Cluster mode: the most two nodes' clocks may differ; verifiers count a token as
    /// expired that long before its `exp` (1ms..5m; default 5s).
    #[arg(long, env = "STRATA_CLUSTER_MAX_CLOCK_SKEW", value_name = "DURATION")]
    max_clock_skew: Option<String>,
    /// Cluster mode: the etcd key prefix shared by the cluster's nodes.
    #[arg(long, env = "STRATA_CLUSTER_PREFIX", value_name = "PREFIX")]
    cluster_prefix: Option<String>,
    /// Cluster mode: seconds a dead node's registrations outlive it at most.
    #[arg(long, env = "STRATA_LEASE_TTL_SECS", value_name = "SECS")]
    lease_ttl: Option<String>,
    /// Cluster CA certificate (PEM), for mutual TLS between nodes.
    #[arg(long, env = "STRATA_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), from `strata-ctl cluster add-node`.
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM, mode 0600).
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Permission bits of supervisor.sock in octal (default: the manifest's
    /// control_socket_mode, else 660).
    #[arg(long, value_name = "MODE", value_parser = units::parse_mode)]
    socket_mode: Option<u32>,
    /// Serve Prometheus metrics for the whole node at this address (e.g.
    /// 127.0.0.1:9469); off unless set here, in $STRATA_METRICS_LISTEN or in the
    /// manifest's `[supervisor] metrics_listen`.
    #[arg(long, env = "STRATA_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// A file (mode 0600 or stricter) holding the bearer token every metrics request must
    /// carry (`Authorization: Bearer <token>`); else `[supervisor] metrics_token_file`.
    #[arg(long, env = "STRATA_METRICS_TOKEN_FILE", value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// The group that owns every socket and the runtime directory (0660/0750), so its
    /// members may connect (default: the manifest's `socket_group`, else root's group).
    #[arg(long, env = "STRATA_SOCKET_GROUP", value_name = "GROUP")]
    socket_group: Option<String>,
}

fn main() -> ExitCode {
    strata_supervisor::process::fill_standard_descriptors();
    let args = Args::parse();
    if let Some(file) = &args.check_config {
        return check_config(file);
    }
    // Before any thread exists: NOTIFY_SOCKET and WATCHDOG_* leave the environment (which
    // is only safe to change single-threaded), and the orphan guard is forked from a
    // single-threaded process.
    let manager = ServiceManager::take_from_env();
    let orphans = OrphanGuard::spawn();
    strata_ipc::logging::init();
    let orphans = match orphans {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(error = %e, "no orphan guard: descendants of services may outlive a killed supervisor");
            None
        }
    };
    match serve(args, orphans, manager) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("strata-supervisor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Manifest::load(file) {
        Ok(m) => {
            let order = strata_supervisor::graph::start_order(&m.services).unwrap_or_default();
            println!(
                "{}: valid; {} service(s), start order: {}",
                file.display(),
                m.services.len(),
                order.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strata-supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    args: Args,
    orphans: Option<OrphanGuard>,
    manager: Option<ServiceManager>,
) -> anyhow::Result<()> {
    let (manifest, manifest_path) = match &args.config {
        Some(path) => (Manifest::load(path)?, Some(std::path::absolute(path)?)),
        None => (Manifest::builtin(), None),
    };
    let control_socket_mode = args
        .socket_mode
        .or(manifest.supervisor.control_socket_mode.map(|m| m.0))
        .unwrap_or(0o660);
    let cluster_env = cluster_env(&args)?;
    let manifest_settings = manifest.supervisor.clone();
    let config = SupervisorConfig {
        runtime_dir: paths::resolve_runtime_dir(args.runtime_dir)?,
        state_dir: paths::resolve_state_dir(args.state_dir)?,
        node_id: args.node_id,
        cluster_env,
        manifest,
        manifest_path,
        control_socket_mode,
        metrics_listen: args.metrics_listen.or(manifest_settings.metrics_listen),
        metrics_token_file: args
            .metrics_token_file
            .clone()
            .or(manifest_settings.metrics_token_file.clone()),
        socket_group: args
            .socket_group
            .clone()
            .or(manifest_settings.socket_group.clone()),
        programs: ProgramLookup::from_env(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(strata_supervisor::run(config, orphans, manager))?;
    Ok(())
}

/// The cluster settings every service gets, checked here so a bad setting stops the
/// supervisor with one clear message instead of every service failing on its own.
fn cluster_env(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            vars.push((k.to_owned(), v));
        }
    };
    put("STRATA_ETCD_ENDPOINTS", args.etcd.clone());
    put("STRATA_CLUSTER_PREFIX", args.cluster_prefix.clone());
    put("STRATA_LEASE_TTL_SECS", args.lease_ttl.clone());
    put("STRATA_CLUSTER_MAX_STALENESS", args.max_staleness.clone());
    put(strata_cap::ENV_MAX_CLOCK_SKEW, args.max_clock_skew.clone());
    put("STRATA_ETCD_USER", args.etcd_user.clone());
    let path = |p: &Option<PathBuf>| {
        p.as_ref().map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        })
    };
    put("STRATA_TLS_CA", path(&args.tls_ca));
    put("STRATA_TLS_CERT", path(&args.tls_cert));
    put("STRATA_TLS_KEY", path(&args.tls_key));
    put("STRATA_ETCD_CA", path(&args.etcd_ca));
    put("STRATA_ETCD_CERT", path(&args.etcd_cert));
    put("STRATA_ETCD_KEY", path(&args.etcd_key));
    put("STRATA_ETCD_PASSWORD_FILE", path(&args.etcd_password_file));
    put("STRATA_NODE_ID", Some(args.node_id.clone()));
    let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cluster = strata_cluster::ClusterConfig::from_lookup(lookup)?;
    if let Some(skew) = lookup(strata_cap::ENV_MAX_CLOCK_SKEW) {
        strata_cap::parse_max_clock_skew(&skew).map_err(|e| {
            anyhow::anyhow!("--max-clock-skew ({}): {e}", strata_cap::ENV_MAX_CLOCK_SKEW)
        })?;
    }
    let tls = vars
        .iter()
        .filter(|(k, _)| k.starts_with("STRATA_TLS_"))
        .count();
    anyhow::ensure!(
        tls == 0 || tls == 3,
        "--tls-ca, --tls-cert and --tls-key (STRATA_TLS_CA/CERT/KEY) go together: set all three or none"
    );
    if let Some(cluster) = cluster {
        anyhow::ensure!(
            tls == 3,
            "cluster mode (--etcd) needs this node's certificate: --tls-ca, --tls-cert and \
             --tls-key (from `strata-ctl cluster add-node {}`)",
            cluster.node
        );
        // Never the password or the key: only whether they are used.
        tracing::info!(
            node = %cluster.node,
            etcd = ?cluster.etcd,
            etcd_tls = cluster.access.tls.is_some(),
            etcd_client_cert = cluster.access.tls.as_ref().is_some_and(|t| t.client.is_some()),
            etcd_user = cluster.access.auth.as_ref().map(|a| a.user.as_str()),
            "cluster mode"
        );
        if cluster.access.tls.is_none() {
            tracing::warn!("etcd is reached over plain http://: anyone on that network can read and change the cluster's state; see OPERATIONS.md, \"Running a cluster\"");
        }
    }
    vars.retain(|(k, _)| k != "STRATA_NODE_ID");
    Ok(vars)
}
