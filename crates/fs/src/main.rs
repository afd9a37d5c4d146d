//! `strata-fs`: serves fs on `<runtime dir>/fs.sock`.
//!
//! Start-up order matters: everything that needs a path outside the export roots (the
//! runtime and state directories, the roots' own handles) is opened first, then Landlock
//! locks the process down, and only then do threads start.

use anyhow::{bail, Context};
use clap::Parser;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_audit::Audit;
use strata_fs::{sandbox, BlockingLimits, ExportRoots, FsService, HandleLimits, LandlockState};
use strata_guard::{Guard, GuardConfig};
use strata_ipc::{paths, Server, ServerConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Strata fs service: capability-gated, read-only file access"
)]
struct Args {
    /// A directory fs may serve from (repeat for several). Token prefixes must lie beneath
    /// one of them. With none, fs exports `<state dir>/export` (created, mode 0750).
    #[arg(
        long = "export-root",
        value_name = "DIR",
        env = "STRATA_FS_EXPORT_ROOTS",
        value_delimiter = ':'
    )]
    export_roots: Vec<PathBuf>,
    /// Runtime directory for the socket (default: $STRATA_RUNTIME_DIR, /run/strata for root).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// State directory for the audit log (default: $STRATA_STATE_DIR, /var/lib/strata for root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Open handles allowed per capability.
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_HANDLES_PER_CAP", default_value_t = HandleLimits::DEFAULT_PER_CAPABILITY)]
    max_handles_per_cap: usize,
    /// Open handles allowed per lineage (a capability and all delegated from its root).
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_HANDLES_PER_LINEAGE", default_value_t = HandleLimits::DEFAULT_PER_LINEAGE)]
    max_handles_per_lineage: usize,
    /// Open handles allowed per caller (local uid, or remote node by certificate name).
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_HANDLES_PER_CALLER", default_value_t = HandleLimits::DEFAULT_PER_CALLER)]
    max_handles_per_caller: usize,
    /// Open handles allowed in total (also bounded by the open-files limit).
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_HANDLES", default_value_t = HandleLimits::DEFAULT_TOTAL)]
    max_handles: usize,
    /// File operations (open, read, list, stat, close) in flight at once, in total.
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_BLOCKING", default_value_t = BlockingLimits::DEFAULT_TOTAL)]
    max_blocking: usize,
    /// File operations in flight at once per caller; past it, RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", env = "STRATA_FS_MAX_BLOCKING_PER_CALLER", default_value_t = BlockingLimits::DEFAULT_PER_CALLER)]
    max_blocking_per_caller: usize,
    /// Do not confine the process with Landlock (for debugging only).
    #[arg(long)]
    no_landlock: bool,
    /// Permission bits of the socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = strata_ipc::parse_socket_mode)]
    socket_mode: u32,
    /// Also serve the fs methods on this address with mutual TLS (cluster mode), e.g.
    /// `10.0.0.5:7101`. Needs STRATA_TLS_CA, STRATA_TLS_CERT and STRATA_TLS_KEY.
    #[arg(long, value_name = "IP:PORT", env = "STRATA_TCP_LISTEN")]
    listen_tcp: Option<std::net::SocketAddr>,
}

/// The methods fs serves to other nodes over mutual TLS: all of them (each needs a
/// capability); nothing else of the process is reachable that way.
const REMOTE_METHODS: [&str; 5] = {
    use strata_proto::methods::{fs, Method};
    [
        fs::Open::NAME,
        fs::Read::NAME,
        fs::List::NAME,
        fs::Close::NAME,
        fs::Stat::NAME,
    ]
};

/// Descriptors kept free for sockets, the audit log and directory lookups.
const SPARE_FDS: u64 = 256;

fn main() -> anyhow::Result<()> {
    strata_ipc::logging::init();
    let args = Args::parse();
    if !strata_fs::roots::kernel_supports_beneath() {
        bail!("this kernel lacks openat2 with RESOLVE_BENEATH (Linux 5.6+); fs cannot confine paths without it");
    }
    let runtime_dir = paths::resolve_runtime_dir(args.runtime_dir)?;
    let state_dir = paths::resolve_state_dir(args.state_dir)?;
    paths::create_dir(paths::DirKind::Runtime, &runtime_dir, 0o750)?;
    paths::create_dir(paths::DirKind::State, &state_dir, 0o700)?;

    let mut export_roots: Vec<PathBuf> = args
        .export_roots
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    if export_roots.is_empty() {
        // With no configuration fs exports one directory of its own, so a fresh node is
        // usable without exposing anything that was there before.
        let default_root = state_dir.join("export");
        make_dir(&default_root, 0o750)?;
        tracing::info!(root = %default_root.display(), "no export roots configured; exporting the default");
        export_roots.push(default_root);
    }
    let roots = ExportRoots::open(&export_roots).context("bad export root")?;
    // TLS files are read before Landlock closes everything but the export roots.
    let tcp = match args.listen_tcp {
        None => None,
        Some(addr) => {
            let files = strata_ipc::tls::TlsFiles::from_env().context(
                "--listen-tcp needs STRATA_TLS_CA, STRATA_TLS_CERT and STRATA_TLS_KEY",
            )??;
            Some(strata_ipc::TcpListen {
                addr,
                tls: strata_ipc::tls::server_config(&files)?,
                methods: REMOTE_METHODS.map(str::to_owned).to_vec(),
            })
        }
    };
    let total = args
        .max_handles
        .min(raise_open_files_limit().saturating_sub(SPARE_FDS) as usize);
    let limits = HandleLimits {
        per_capability: args.max_handles_per_cap,
        per_lineage: args.max_handles_per_lineage,
        per_caller: args.max_handles_per_caller,
        total,
    };
    let blocking = BlockingLimits {
        total: args.max_blocking,
        per_caller: args.max_blocking_per_caller,
        ..BlockingLimits::default()
    };
    if limits.total < args.max_handles {
        tracing::info!(
            configured = args.max_handles,
            allowed = limits.total,
            "the open-files limit caps the number of handles"
        );
    }

    let landlock = if args.no_landlock {
        tracing::warn!("Landlock disabled by --no-landlock");
        LandlockState::Off
    } else {
        let read_only: Vec<&Path> = roots.paths().collect();
        // The audit log (and its lock file) is the only thing fs writes in the state dir;
        // create them now so the rule can name the files rather than the directory (which
        // holds other services' secrets, identity's key among them). Their inodes never
        // change (rotation copies and truncates), so the rule holds for good.
        let [audit_log, audit_lock] = strata_audit::prepare_files(&state_dir)
            .with_context(|| format!("cannot create the audit log in {}", state_dir.display()))?;
        sandbox::restrict_self(&read_only, &[&runtime_dir], &[&audit_log, &audit_lock])
            .context("cannot confine fs with Landlock")?
    };
    match landlock {
        LandlockState::Enforced | LandlockState::Partial => {
            tracing::info!(
                status = landlock.as_str(),
                "Landlock confines fs to reading beneath the export roots"
            )
        }
        LandlockState::Unsupported => {
            tracing::warn!("this kernel has no Landlock; fs runs without the sandbox")
        }
        LandlockState::Off => {}
    }

    let audit = Audit::open(&state_dir, "fs").context("cannot open the audit log")?;
    let mut config = ServerConfig::new(paths::socket_path(&runtime_dir, "fs"));
    config.socket_mode = args.socket_mode;
    config.socket_group = paths::socket_group_from_env()?;
    config.tcp = tcp;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let guard = Guard::start(GuardConfig {
            runtime_dir: runtime_dir.clone(),
            subscriber: "fs".to_owned(),
        });
        let fs = Arc::new(
            FsService::new(roots, limits, audit.clone(), guard.clone())
                .with_blocking_limits(blocking),
        );
        strata_fs::spawn_maintenance(Arc::clone(&fs), &guard);
        let server = Server::bind(config, strata_fs::router(Arc::clone(&fs), guard, landlock))?;
        server.serve_until_signal().await?;
        fs.close_all();
        audit.flush();
        Ok(())
    })
}

fn make_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Raise the soft open-files limit to the hard one; returns the limit in force.
fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
