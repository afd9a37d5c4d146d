//! The state shared by the control handlers and every service task: the table of
//! services, and the one function that changes a service's state
//! ([`Shared::set_state`], which enforces the legal transitions and keeps the registry in
//! step).

use crate::audit::AuditLog;
use crate::backoff::CrashHistory;
use crate::cgroup::{CgroupRoot, Unavailable};
use crate::command::{Command, StopReason};
use crate::error::ControlError;
use crate::logs::LogSink;
use crate::manifest::ServiceSpec;
use crate::orphans::OrphanGuard;
use crate::process::{ExitStatus, ProgramLookup};
use crate::registry_sync::{Registration, RegistrySync};
use crate::routing::Routing;
use crate::spawner::Spawner;
use crate::state::check_transition;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use strata_ipc::Endpoint;
use strata_proto::methods::supervisor::{RoutedCap, SvcState};
use tokio::sync::{mpsc, oneshot, watch};

/// How a run ended, as `svc.list` reports it.
#[derive(Debug, Clone)]
pub(crate) struct LastExit {
    pub status: Option<ExitStatus>,
    pub reason: String,
    pub at: SystemTime,
}

impl LastExit {
    pub fn to_json(&self) -> Value {
        let mut v = self
            .status
            .map(ExitStatus::to_json)
            .unwrap_or_else(|| json!({}));
        v["reason"] = Value::String(self.reason.clone());
        v["at"] = json!(unix_secs(self.at));
        v
    }
}

/// One service's row in the table.
pub(crate) struct Record {
    pub spec: Arc<ServiceSpec>,
    pub state: SvcState,
    pub since: SystemTime,
    pub pid: Option<i32>,
    pub restarts: u64,
    pub last_exit: Option<LastExit>,
    /// What limits and sandboxing the current (or last) run actually got.
    pub applied: Option<Value>,
    pub crashes: CrashHistory,
    /// While the run waits in Starting for its routed capabilities, why.
    pub waiting: Option<String>,
    /// The capabilities routed to the current run (`svc.caps`).
    pub caps: Vec<RoutedCap>,
    pub logs: Arc<LogSink>,
    pub cmd: mpsc::UnboundedSender<Command>,
}

pub(crate) struct Table {
    pub services: BTreeMap<String, Record>,
    /// The current manifest's services, in declaration order.
    pub specs: Vec<ServiceSpec>,
    /// Start order (dependencies first).
    pub order: Vec<String>,
}

/// State shared by the control handlers and every service task.
pub(crate) struct Shared {
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    pub node_id: String,
    pub cluster_env: Vec<(String, String)>,
    /// The socket group's gid, handed to every service as `STRATA_SOCKET_GROUP`.
    pub socket_gid: Option<u32>,
    pub owner_uid: u32,
    pub started_at: Instant,
    pub manifest_path: Option<PathBuf>,
    pub programs: ProgramLookup,
    pub cgroups: Result<CgroupRoot, Unavailable>,
    pub orphans: Option<OrphanGuard>,
    /// Starts and signals service processes (the reaper, or a fake in unit tests).
    pub spawner: Arc<dyn Spawner>,
    pub audit: AuditLog,
    pub registry: RegistrySync,
    pub registry_socket: PathBuf,
    /// Capability routing: how identity is asked, and the revocations owed to it.
    pub routing: Routing,
    pub table: Mutex<Table>,
    /// Bumped on every state change; tasks waiting for dependencies watch it.
    pub changed: watch::Sender<u64>,
    pub shutting_down: AtomicBool,
    /// Serialises the operations that span services (stop with dependents, restart,
    /// reload, shutdown).
    pub ops: tokio::sync::Mutex<()>,
    /// Every state change, in order (unit tests assert on the sequence).
    #[cfg(test)]
    pub transitions: Mutex<Vec<(String, SvcState)>>,
}

impl Shared {
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn notify_dir(&self) -> PathBuf {
        self.runtime_dir.join("notify")
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The endpoint a service is registered under, if it is registered at all.
    pub fn registration(&self, spec: &ServiceSpec) -> Option<Registration> {
        if !spec.register {
            return None;
        }
        let socket = spec.socket_path(&self.runtime_dir)?;
        match Endpoint::unix(&socket) {
            Ok(e) => Some(Registration {
                endpoint: e.to_string(),
                remote_endpoint: spec.tcp.map(|addr| format!("tcp://{addr}")),
            }),
            Err(e) => {
                tracing::warn!(service = %spec.name, error = %e, "not registered");
                None
            }
        }
    }

    /// Change a service's state, if the transition is legal, applying `update` to its
    /// record under the same lock. Keeps the registry in step: registered on Healthy,
    /// deregistered on leaving Healthy; when the registry itself becomes Healthy, every
    /// Healthy service is registered again.
    pub fn set_state(&self, name: &str, to: SvcState, update: impl FnOnce(&mut Record)) -> bool {
        let (from, registration, is_registry) = {
            let mut table = self.table();
            let Some(rec) = table.services.get_mut(name) else {
                return false;
            };
            let from = rec.state;
            if let Err(e) = check_transition(from, to) {
                tracing::error!(service = name, error = %e, "refused an illegal state transition");
                debug_assert!(false, "{name}: {e}");
                return false;
            }
            rec.state = to;
            rec.since = SystemTime::now();
            update(rec);
            #[cfg(test)]
            self.transitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name.to_owned(), to));
            let is_registry = rec.spec.socket_path(&self.runtime_dir).as_deref()
                == Some(self.registry_socket.as_path());
            (from, self.registration(&rec.spec), is_registry)
        };
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        tracing::info!(service = name, from = ?from, to = ?to, "state changed");
        if let Some(endpoint) = registration {
            if to == SvcState::Healthy {
                if is_registry {
                    self.resync_registry();
                } else {
                    self.registry.register(name, endpoint);
                }
            } else if from == SvcState::Healthy {
                self.registry.deregister(name);
            }
        }
        true
    }

    /// Register every Healthy service (after the registry came back).
    fn resync_registry(&self) {
        let healthy: Vec<(String, Registration)> = {
            let table = self.table();
            table
                .services
                .iter()
                .filter(|(_, r)| r.state == SvcState::Healthy)
                .filter_map(|(n, r)| self.registration(&r.spec).map(|e| (n.clone(), e)))
                .collect()
        };
        tracing::info!(
            count = healthy.len(),
            "registry is up: registering Healthy services"
        );
        for (name, endpoint) in healthy {
            self.registry.register(&name, endpoint);
        }
    }

    /// The first dependency of `spec` that is not Healthy, with its state.
    pub fn unhealthy_dependency(&self, spec: &ServiceSpec) -> Option<(String, SvcState)> {
        let table = self.table();
        spec.depends_on
            .iter()
            .find_map(|dep| match table.services.get(dep) {
                Some(r) if r.state == SvcState::Healthy => None,
                Some(r) => Some((dep.clone(), r.state)),
                None => Some((dep.clone(), SvcState::Declared)),
            })
    }

    /// The dependency that keeps an operator's start of `spec` from going ahead: as
    /// [`Shared::unhealthy_dependency`], except that a service with routed capabilities
    /// does not wait for identity here: it enters Starting and waits there, saying so
    /// (`service/routed.rs`).
    pub fn blocking_dependency(&self, spec: &ServiceSpec) -> Option<(String, SvcState)> {
        let table = self.table();
        spec.depends_on
            .iter()
            .filter(|dep| {
                spec.capabilities.is_empty()
                    || dep.as_str() != crate::manifest::capability::IDENTITY
            })
            .find_map(|dep| match table.services.get(dep) {
                Some(r) if r.state == SvcState::Healthy => None,
                Some(r) => Some((dep.clone(), r.state)),
                None => Some((dep.clone(), SvcState::Declared)),
            })
    }

    pub fn state_of(&self, name: &str) -> Option<SvcState> {
        self.table().services.get(name).map(|r| r.state)
    }

    pub fn new_record(&self, spec: ServiceSpec) -> Record {
        let logs = Arc::new(LogSink::new(&self.logs_dir(), &spec.name, &spec.logs));
        // Replaced by `Supervisor::spawn_task` before anything is sent.
        let (cmd, _) = mpsc::unbounded_channel();
        Record {
            spec: Arc::new(spec),
            state: SvcState::Declared,
            since: SystemTime::now(),
            pid: None,
            restarts: 0,
            last_exit: None,
            applied: None,
            crashes: CrashHistory::default(),
            waiting: None,
            caps: Vec::new(),
            logs,
            cmd,
        }
    }

    pub fn send(&self, name: &str, cmd: Command) -> Result<(), ControlError> {
        let table = self.table();
        let rec = table
            .services
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        rec.cmd
            .send(cmd)
            .map_err(|_| ControlError::Superseded(name.to_owned()))
    }

    /// Ask a service to stop and wait for it.
    pub async fn stop_one(
        &self,
        name: &str,
        drain: Duration,
        reason: StopReason,
    ) -> Result<(), ControlError> {
        let (reply, rx) = oneshot::channel();
        self.send(
            name,
            Command::Stop {
                drain,
                reason,
                reply,
            },
        )?;
        rx.await
            .map_err(|_| ControlError::Superseded(name.to_owned()))?
    }

    /// Stop a service's process for good and end its task.
    pub async fn retire(&self, name: &str, drain: Duration, reason: StopReason) {
        let (reply, rx) = oneshot::channel();
        if self
            .send(
                name,
                Command::Retire {
                    drain,
                    reason,
                    reply,
                },
            )
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The path of a service's per-run notify socket.
pub(crate) fn notify_socket_path(notify_dir: &Path, name: &str) -> PathBuf {
    notify_dir.join(format!("{name}.sock"))
}
