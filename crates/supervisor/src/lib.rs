//! The Strata supervisor: starts a graph of services in dependency order, decides when
//! each is ready (it *answers*, not merely exists), restarts crashes with exponential
//! backoff, quarantines crash loops, keeps the registry in step with health, confines
//! each service (process group, cgroup, limits, user, `no_new_privs`, Landlock,
//! namespaces), captures its output, and offers a control socket with peer-credential
//! authorization.
//!
//! What it is for: running Strata's own services (the built-in graph: registry, identity,
//! fs) and an operator's services declared in a TOML manifest, with the guarantees one
//! expects of systemd or s6.
//!
//! What it is not: a container runtime (no images, no filesystem isolation beyond
//! Landlock rules), an init system (it does not mount, set up the network, or run as
//! PID 1 by design, though it reaps orphans), or a policy engine: who may control it is
//! decided in [`control::Control::authorize_control`] and nowhere else.
//!
//! Codemap:
//! - [`manifest`], [`units`], [`graph`]: the declared services, parsed and validated once.
//! - [`state`]: the seven states and the legal transitions. [`backoff`]: crash bookkeeping.
//! - [`supervisor`]: the cross-service operations (boot, stop with dependents, restart,
//!   reload, shutdown). `shared.rs`: the table every task reports into, and the one
//!   function that changes a state.
//! - `service.rs`: one task per service lifecycle (spawn, await ready, run while healthy,
//!   one command handler); `service/ending.rs`: how a run ends (stop, or exit and the
//!   restart policy); `prepare.rs`: everything decided before fork; `spawner.rs`: how a
//!   run starts and signals its process (real, or a fake in the unit tests).
//! - `routing.rs` (+ `routing/`): capability routing: the manifest's capabilities
//!   obtained from identity before each start, delivered into the service's credentials
//!   directory, rotated, and revoked when the run ends (`service/routed.rs` wires it into
//!   a run).
//! - [`process`], [`reaper`], [`cgroup`], [`landlock`], [`orphans`]: processes and confinement.
//! - [`readiness`], [`logs`] (and [`journal`]), [`audit`], [`registry_sync`]: what a run reports.
//! - [`control`]: the control socket. [`error`]: its errors and their protocol codes.
//! - [`sd_notify`]: the supervisor's own readiness, watchdog and stopping, told to systemd.
//! - [`metrics`]: the Prometheus endpoint (`--metrics-listen`): node facts and every
//!   service's `sys.metrics`, merged and bounded.

pub mod audit;
pub mod backoff;
pub mod cgroup;
mod command;
pub mod control;
pub mod error;
pub mod journal;
pub mod landlock;
pub mod logs;
pub mod metrics;
pub mod orphans;
mod prepare;
pub mod process;
pub mod readiness;
pub mod reaper;
pub mod registry_sync;
mod routing;
pub mod sd_notify;
mod service;
mod shared;
mod spawner;
pub mod state;
mod status;
pub mod supervisor;

// The manifest, its units and its dependency graph live in `strata-manifest` (which
// builds without the supervisor's runtime); re-exported here under their old paths.
pub use control::Control;
pub use error::{ControlError, StartError};
pub use manifest::{Manifest, ManifestError, ServiceSpec};
pub use orphans::OrphanGuard;
pub use sd_notify::ServiceManager;
pub use strata_manifest as manifest;
pub use strata_manifest::{graph, units};
pub use strata_proto::methods::supervisor::ReloadReport;
pub use supervisor::{Supervisor, SupervisorConfig};

use std::sync::Arc;
use std::time::Duration;
use strata_ipc::{Server, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

/// Run the supervisor until SIGTERM or SIGINT, then stop every service in reverse
/// dependency order. SIGHUP reloads the manifest. Must run inside a Tokio runtime; the
/// binary uses a current-thread runtime, which keeps the supervisor small and makes the
/// thread that forks services (and so owns their `PR_SET_PDEATHSIG`) live as long as the
/// supervisor does.
///
/// With a `manager` (systemd's `NOTIFY_SOCKET`), it is told `READY=1` when boot has
/// settled, `STATUS=` as services come and go, `WATCHDOG=1` on the interval it asked
/// for, and `STOPPING=1` when shutdown begins (see [`sd_notify`]).
pub async fn run(
    config: SupervisorConfig,
    orphans: Option<OrphanGuard>,
    manager: Option<ServiceManager>,
) -> Result<(), StartError> {
    let socket = strata_ipc::paths::socket_path(&config.runtime_dir, "supervisor");
    let runtime_dir = config.runtime_dir.clone();
    let mode = config.control_socket_mode;
    let metrics_listen = config.metrics_listen;
    let metrics_token = config.metrics_token_file.clone();
    let supervisor = Supervisor::new(config, orphans)?;
    let mut server_config = ServerConfig::new(socket);
    server_config.socket_mode = mode;
    server_config.socket_group = supervisor.socket_gid();
    server_config.shutdown_grace = Duration::from_secs(1);
    let guard = strata_guard::Guard::start(strata_guard::GuardConfig {
        runtime_dir: runtime_dir.clone(),
        subscriber: "supervisor".to_owned(),
    });
    let control = Arc::new(Control::with_tokens(supervisor.clone(), guard));
    let server = match Server::bind(server_config, control::router(control)) {
        Ok(s) => s,
        Err(e) => {
            supervisor.shutdown().await;
            return Err(e.into());
        }
    };
    let _metrics = match metrics_listen
        .map(|a| metrics::MetricsEndpoint::start(a, metrics_token.as_deref(), supervisor.clone()))
    {
        Some(Err(e)) => {
            supervisor.shutdown().await;
            return Err(e);
        }
        started => started.and_then(Result::ok),
    };
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    let manager = manager.map(Arc::new);
    if let Some(manager) = &manager {
        if let Some(interval) = manager.watchdog_interval() {
            tokio::spawn(sd_notify::keep_watchdog(Arc::clone(manager), interval));
        }
    }
    supervisor.boot();
    if let Some(manager) = &manager {
        tokio::spawn(sd_notify::report_status(
            supervisor.clone(),
            Arc::clone(manager),
        ));
    }
    let reloader = supervisor.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(report) => tracing::info!(?report, "SIGHUP: manifest reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: manifest not reloaded"),
            }
        }
    });
    server
        .serve(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping services"),
                _ = int.recv() => tracing::info!("SIGINT: stopping services"),
            }
        })
        .await;
    if let Some(manager) = &manager {
        sd_notify::report_stopping(manager);
    }
    supervisor.shutdown().await;
    supervisor.audit().flush();
    Ok(())
}
