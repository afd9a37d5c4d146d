//! The operations the control socket offers, and those that span services: boot, stop
//! with dependents, restart, reload, and shutdown in reverse dependency order.
//!
//! Each service has one long-lived task (see `service.rs`) that owns its lifecycle; the
//! table those tasks report into, and the one function that changes a service's state,
//! are `shared.rs`.
//!
//! Dependents and crashes: when a dependency crashes, its dependents are left running
//! (like s6, unlike systemd's `BindsTo`). They are expected to ride out a dependency's
//! restart, and liveness checks catch one that cannot. What the dependency's state does
//! govern is *starting*: a dependent that crashes while a dependency is not Healthy waits
//! in Restarting until it is, and `svc.start` refuses with CONFLICT naming the dependency.
//! Stopping a service on purpose (`svc.stop`) stops its running dependents first.

use crate::audit::AuditLog;
use crate::cgroup::{CgroupRoot, Unavailable};
use crate::command::{Command, StopReason};
use crate::error::{ControlError, StartError};
use crate::graph;
use crate::logs::LogLine;
use crate::manifest::{Manifest, ServiceSpec};
use crate::orphans::OrphanGuard;
use crate::process::ProgramLookup;
use crate::reaper::Reaper;
use crate::registry_sync::RegistrySync;
use crate::routing::{self, Routing};
use crate::service::ServiceRunner;
use crate::shared::{unix_secs, LastExit, Shared, Table};
use crate::spawner::Spawner;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_ipc::paths::{self, DirKind};
use strata_proto::methods::supervisor::{NodeStatus, ReloadReport, SvcInfo, SvcState};
use tokio::sync::{mpsc, oneshot, watch};

/// Everything the supervisor needs to run.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Where sockets live (`STRATA_RUNTIME_DIR`).
    pub runtime_dir: PathBuf,
    /// Where the audit log and service logs live (`STRATA_STATE_DIR`).
    pub state_dir: PathBuf,
    /// This node's id, given to services as `STRATA_NODE_ID`.
    pub node_id: String,
    /// Cluster mode: the variables every service gets (etcd endpoints, prefix, lease TTL,
    /// TLS files); empty on a single node.
    pub cluster_env: Vec<(String, String)>,
    /// The services to run.
    pub manifest: Manifest,
    /// The file `supervisor.reload` re-reads; `None` runs (and reloads) the built-in graph.
    pub manifest_path: Option<PathBuf>,
    /// Permission bits of `supervisor.sock`.
    pub control_socket_mode: u32,
    /// Where the Prometheus endpoint listens; `None` serves no metrics.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The file holding the bearer token every metrics request must carry; `None`: none.
    pub metrics_token_file: Option<PathBuf>,
    /// The group that owns the sockets and the runtime directory; `None` leaves them
    /// root's group.
    pub socket_group: Option<String>,
    /// Where bare program names are found.
    pub programs: ProgramLookup,
}

/// Most bytes of log lines one `svc.logs` answer carries: the frame limit less room for
/// the envelope.
pub const MAX_LOGS_ANSWER_BYTES: usize = strata_proto::MAX_FRAME - 64 * 1024;

/// A running supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) shared: Arc<Shared>,
}

impl Supervisor {
    /// Prepare directories, probe cgroups and start the reaper. Must be called inside a
    /// Tokio runtime; nothing is started until [`Supervisor::boot`].
    pub fn new(
        mut config: SupervisorConfig,
        orphans: Option<OrphanGuard>,
    ) -> Result<Supervisor, StartError> {
        config.manifest.validate()?;
        // The socket group is resolved once, here: an unknown one stops the start, and
        // from now on it is its gid (what services are handed), whatever the group
        // database says later.
        let socket_gid = match config.socket_group.as_deref() {
            Some(group) => Some(resolve_socket_group(group)?),
            None => None,
        };
        config.socket_group = socket_gid.map(|gid| gid.to_string());
        let logs_dir = config.state_dir.join("logs");
        let notify_dir = config.runtime_dir.join("notify");
        // Sockets are reached by the owner and the socket group only (0750); the state
        // (keys, revocations, audit, service logs) by the owner alone (0700). The notify
        // dir is traversable so a service running as another user can reach its own
        // notify socket (each socket is made for that service alone).
        for (kind, dir, mode) in [
            (DirKind::Runtime, &config.runtime_dir, 0o750),
            (DirKind::State, &config.state_dir, 0o700),
            (DirKind::State, &logs_dir, 0o700),
            (DirKind::Runtime, &notify_dir, 0o711),
        ] {
            paths::create_dir(kind, dir, mode)?;
            paths::set_mode_if_owned(dir, mode).map_err(|source| StartError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        // `0750 root:<group>`: the group's members may reach the sockets in it (each
        // `0660 root:<group>` too), and change nothing. The notify dir stays root's.
        if let Some(gid) = socket_gid {
            // The owner is left as it is (root's), so the kernel allows it without
            // CAP_CHOWN when this process is a member of the group (its unit's
            // SupplementaryGroups); the unit's bounding set has no CAP_CHOWN.
            std::os::unix::fs::chown(&config.runtime_dir, None, Some(gid)).map_err(|source| {
                StartError::SocketGroupChown {
                    path: config.runtime_dir.clone(),
                    gid,
                    source,
                }
            })?;
        }
        let guard_pid: Vec<i32> = orphans.iter().map(OrphanGuard::pid).collect();
        let cgroups = CgroupRoot::probe(&guard_pid);
        match &cgroups {
            Ok(root) => {
                tracing::info!(cgroup = %root.dir().display(), controllers = ?root.controllers(), "cgroup v2 in use");
                if let Some(g) = &orphans {
                    g.set_root_cgroup(root.dir());
                }
            }
            Err(Unavailable(why)) => {
                tracing::warn!(reason = %why, "no cgroup; limits fall back to rlimits where they can")
            }
        }
        let reaper = Reaper::start().map_err(StartError::Reaper)?;
        Ok(Supervisor::assemble(config, orphans, cgroups, reaper))
    }

    /// The supervisor over prepared parts: directories made, cgroups probed, and the
    /// spawner (the reaper, or a fake in unit tests) started.
    pub(crate) fn assemble(
        config: SupervisorConfig,
        orphans: Option<OrphanGuard>,
        cgroups: Result<CgroupRoot, Unavailable>,
        spawner: Arc<dyn Spawner>,
    ) -> Supervisor {
        let registry_socket = strata_ipc::paths::socket_path(&config.runtime_dir, "registry");
        let registry = RegistrySync::start(registry_socket.clone());
        let order = graph::start_order(&config.manifest.services)
            .expect("a validated manifest has no cycle");
        let (changed, _) = watch::channel(0);
        let routing = Routing::new(&config.state_dir);
        let shared = Arc::new(Shared {
            audit: AuditLog::new(
                &config.state_dir,
                &config.node_id,
                // Validated with the manifest.
                config
                    .manifest
                    .supervisor
                    .audit_rotation()
                    .unwrap_or_default(),
            ),
            runtime_dir: config.runtime_dir,
            state_dir: config.state_dir,
            node_id: config.node_id,
            cluster_env: config.cluster_env,
            // `new` left the resolved gid here; a name (unit tests) is no group.
            socket_gid: config.socket_group.as_deref().and_then(|g| g.parse().ok()),
            owner_uid: strata_ipc::PeerCred::current_process().uid,
            started_at: Instant::now(),
            manifest_path: config.manifest_path,
            programs: config.programs,
            cgroups,
            orphans,
            spawner,
            registry,
            registry_socket,
            routing,
            table: Mutex::new(Table {
                services: BTreeMap::new(),
                specs: config.manifest.services.clone(),
                order,
            }),
            changed,
            shutting_down: AtomicBool::new(false),
            ops: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            transitions: Mutex::new(Vec::new()),
        });
        {
            let mut table = shared.table();
            for spec in &config.manifest.services {
                let rec = shared.new_record(spec.clone());
                table.services.insert(spec.name.clone(), rec);
            }
        }
        Supervisor { shared }
    }

    /// Start the task of a service already in the table.
    fn spawn_task(&self, name: &str, autostart: bool) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(rec) = self.shared.table().services.get_mut(name) {
            rec.cmd = tx;
        }
        let runner = ServiceRunner::new(Arc::clone(&self.shared), name.to_owned(), rx);
        tokio::spawn(runner.run(autostart));
    }

    /// Start every service as soon as its dependencies are Healthy.
    pub fn boot(&self) {
        routing::spawn_retrier(Arc::clone(&self.shared));
        let order = self.shared.table().order.clone();
        for name in order {
            self.spawn_task(&name, true);
        }
    }

    /// The socket group's gid (`--socket-group`, resolved at start), if there is one.
    pub fn socket_gid(&self) -> Option<u32> {
        self.shared.socket_gid
    }

    /// The uid that may control services besides root: the supervisor's own.
    pub fn owner_uid(&self) -> u32 {
        self.shared.owner_uid
    }

    pub(crate) fn audit(&self) -> &AuditLog {
        &self.shared.audit
    }

    /// `supervisor.status`.
    pub fn status(&self) -> NodeStatus {
        let table = self.shared.table();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for rec in table.services.values() {
            *counts.entry(format!("{:?}", rec.state)).or_default() += 1;
        }
        let cgroup = match &self.shared.cgroups {
            Ok(root) => json!({
                "available": true,
                "path": root.dir().display().to_string(),
                "controllers": root.controllers(),
            }),
            Err(Unavailable(why)) => json!({"available": false, "reason": why}),
        };
        let mut extra = serde_json::Map::new();
        extra.insert("pid".into(), json!(std::process::id()));
        extra.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        extra.insert("services".into(), json!(table.services.len()));
        extra.insert("states".into(), json!(counts));
        extra.insert(
            "manifest".into(),
            json!(self
                .shared
                .manifest_path
                .as_ref()
                .map(|p| p.display().to_string())),
        );
        extra.insert("cgroup".into(), cgroup);
        extra.insert(
            "orphan_guard".into(),
            json!(self.shared.orphans.as_ref().map(|g| g.pid())),
        );
        extra.insert(
            "shutting_down".into(),
            json!(self.shared.is_shutting_down()),
        );
        NodeStatus {
            node_id: self.shared.node_id.clone(),
            uptime_sec: self.shared.started_at.elapsed().as_secs(),
            extra,
        }
    }

    /// `supervisor.svc.list`, in start order.
    pub fn list(&self) -> Vec<SvcInfo> {
        let table = self.shared.table();
        table
            .order
            .iter()
            .filter_map(|name| table.services.get(name).map(|r| (name, r)))
            .map(|(name, r)| {
                let mut extra = serde_json::Map::new();
                extra.insert("restarts".into(), json!(r.restarts));
                extra.insert(
                    "last_exit".into(),
                    r.last_exit.as_ref().map_or(Value::Null, LastExit::to_json),
                );
                extra.insert("since".into(), json!(unix_secs(r.since)));
                extra.insert("readiness".into(), json!(r.spec.readiness));
                extra.insert("restart".into(), json!(r.spec.restart));
                extra.insert("depends_on".into(), json!(r.spec.depends_on));
                extra.insert("crashes_in_window".into(), json!(r.crashes.recent()));
                extra.insert(
                    "socket".into(),
                    json!(r
                        .spec
                        .socket_path(&self.shared.runtime_dir)
                        .map(|p| p.display().to_string())),
                );
                extra.insert("applied".into(), r.applied.clone().unwrap_or(Value::Null));
                extra.insert("capabilities".into(), json!(r.caps.len()));
                extra.insert("waiting".into(), json!(r.waiting));
                SvcInfo {
                    name: name.clone(),
                    state: r.state,
                    pid: r.pid.map(|p| p as u32),
                    extra,
                }
            })
            .collect()
    }

    /// `supervisor.svc.logs`: the last `lines` lines of a service's output.
    pub fn logs(&self, name: &str, lines: usize) -> Result<Vec<LogLine>, ControlError> {
        let table = self.shared.table();
        let rec = table
            .services
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        Ok(rec.logs.tail(lines, MAX_LOGS_ANSWER_BYTES))
    }

    /// `supervisor.svc.start`: start now (dependencies must be Healthy); answers once the
    /// service is Healthy or its start failed.
    pub async fn start(&self, name: &str, by: Option<u32>) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        self.shared.send(name, Command::Start { reply, by })?;
        rx.await
            .map_err(|_| ControlError::Superseded(name.to_owned()))?
    }

    /// `supervisor.svc.stop`: stop the service's running dependents (dependents of
    /// dependents first), then the service. Returns the dependents it stopped.
    pub async fn stop(
        &self,
        name: &str,
        drain: Duration,
        by: Option<u32>,
    ) -> Result<Vec<String>, ControlError> {
        let _ops = self.shared.ops.lock().await;
        self.stop_locked(name, drain, by).await
    }

    async fn stop_locked(
        &self,
        name: &str,
        drain: Duration,
        by: Option<u32>,
    ) -> Result<Vec<String>, ControlError> {
        let dependents = {
            let table = self.shared.table();
            let rec = table
                .services
                .get(name)
                .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
            if rec.state == SvcState::Stopped {
                return Err(ControlError::NotRunning {
                    name: name.to_owned(),
                    state: rec.state,
                });
            }
            graph::dependents_closure(&table.specs, name)
                .into_iter()
                .filter(|d| {
                    table
                        .services
                        .get(d)
                        .is_some_and(|r| r.state != SvcState::Stopped)
                })
                .collect::<Vec<_>>()
        };
        let mut also = Vec::new();
        for dep in dependents {
            let reason = StopReason::Dependency {
                of: name.to_owned(),
                by,
            };
            if self.shared.stop_one(&dep, drain, reason).await.is_ok() {
                also.push(dep);
            }
        }
        self.shared
            .stop_one(name, drain, StopReason::Operator { by })
            .await?;
        Ok(also)
    }

    /// `supervisor.svc.restart`: stop (with dependents) if running, then start.
    pub async fn restart(
        &self,
        name: &str,
        drain: Duration,
        by: Option<u32>,
    ) -> Result<(), ControlError> {
        {
            let _ops = self.shared.ops.lock().await;
            match self.shared.state_of(name) {
                None => return Err(ControlError::NotFound(name.to_owned())),
                Some(SvcState::Stopped) => {}
                Some(_) => {
                    self.stop_locked(name, drain, by).await?;
                }
            }
        }
        self.start(name, by).await
    }

    /// `supervisor.reload`: re-read the manifest and apply the difference. Removed
    /// services are stopped and forgotten; changed ones are stopped and started with
    /// their new definition (unless an operator had stopped them); added ones start when
    /// their dependencies are Healthy; unchanged ones are not touched. An invalid manifest
    /// changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let manifest = match &self.shared.manifest_path {
            Some(path) => Manifest::load(path)?,
            None => Manifest::builtin(),
        };
        self.apply(manifest).await
    }

    async fn apply(&self, manifest: Manifest) -> Result<ReloadReport, ControlError> {
        let _ops = self.shared.ops.lock().await;
        if self.shared.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let new_order = graph::start_order(&manifest.services).map_err(ControlError::Reload)?;
        let mut report = ReloadReport::default();
        let (old_order, old_specs) = {
            let table = self.shared.table();
            let specs: BTreeMap<String, Arc<ServiceSpec>> = table
                .services
                .iter()
                .map(|(n, r)| (n.clone(), Arc::clone(&r.spec)))
                .collect();
            (table.order.clone(), specs)
        };
        for name in &old_order {
            match manifest.service(name) {
                None => report.removed.push(name.clone()),
                Some(new) if **old_specs.get(name).expect("in table") != *new => {
                    report.changed.push(name.clone())
                }
                Some(_) => report.unchanged.push(name.clone()),
            }
        }
        report.added = new_order
            .iter()
            .filter(|n| !old_specs.contains_key(*n))
            .cloned()
            .collect();

        // Stop removed and changed services, dependents first.
        let mut resume: BTreeMap<String, bool> = BTreeMap::new();
        for name in old_order.iter().rev() {
            let removed = report.removed.contains(name);
            if !removed && !report.changed.contains(name) {
                continue;
            }
            let was_stopped = self.shared.state_of(name) == Some(SvcState::Stopped);
            let drain = Duration::from_millis(old_specs[name].drain_ms);
            self.shared.retire(name, drain, StopReason::Reload).await;
            if !removed {
                resume.insert(name.clone(), !was_stopped);
            }
        }
        {
            let mut table = self.shared.table();
            for name in &report.removed {
                table.services.remove(name);
            }
            for name in &report.changed {
                let spec = manifest
                    .service(name)
                    .expect("changed is in the new manifest")
                    .clone();
                if let Some(rec) = table.services.get_mut(name) {
                    rec.logs.configure(&spec.logs);
                    rec.spec = Arc::new(spec);
                    rec.crashes.reset();
                }
            }
            for name in &report.added {
                let spec = manifest
                    .service(name)
                    .expect("added is in the new manifest")
                    .clone();
                let rec = self.shared.new_record(spec);
                table.services.insert(name.clone(), rec);
            }
            table.specs = manifest.services.clone();
            table.order = new_order.clone();
        }
        for name in &new_order {
            if let Some(autostart) = resume.get(name) {
                self.spawn_task(name, *autostart);
            } else if report.added.contains(name) {
                self.spawn_task(name, true);
            }
        }
        for name in &report.removed {
            let _ = std::fs::remove_file(self.shared.notify_dir().join(format!("{name}.sock")));
        }
        tracing::info!(?report, "manifest reloaded");
        Ok(report)
    }

    /// Stop every service in reverse dependency order, each with its own drain, and end
    /// all service tasks.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let _ops = self.shared.ops.lock().await;
        let order = self.shared.table().order.clone();
        for name in order.iter().rev() {
            let drain = self
                .shared
                .table()
                .services
                .get(name)
                .map(|r| Duration::from_millis(r.spec.drain_ms));
            if let Some(drain) = drain {
                self.shared.retire(name, drain, StopReason::Shutdown).await;
            }
        }
        if let Ok(root) = &self.shared.cgroups {
            root.remove();
        }
        tracing::info!("all services stopped");
    }
}

/// The gid of the socket group `group` (a name, or a number as it is). `(gid_t)-1` is
/// refused: chown(2) reads it as "leave the group".
fn resolve_socket_group(group: &str) -> Result<u32, StartError> {
    match crate::process::lookup_group(group) {
        Ok(u32::MAX) => Err(StartError::SocketGroup(
            crate::process::SpawnError::UnknownGroup(group.to_owned()),
        )),
        Ok(gid) => Ok(gid),
        Err(e) => Err(StartError::SocketGroup(e)),
    }
}

#[cfg(test)]
mod socket_group_tests {
    use super::resolve_socket_group;

    #[test]
    fn a_socket_group_is_a_name_in_the_group_database_or_a_gid() {
        assert_eq!(resolve_socket_group("root").unwrap(), 0);
        assert_eq!(resolve_socket_group("4242").unwrap(), 4242);
        for unknown in ["strata-no-such-group-17", "4294967295", "bad\0name"] {
            let err = resolve_socket_group(unknown).unwrap_err().to_string();
            assert!(
                err.contains("socket group") && err.contains("unknown group"),
                "{unknown:?}: {err}"
            );
        }
    }
}
