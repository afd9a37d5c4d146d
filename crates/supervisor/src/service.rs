//! One service's lifecycle, driven by one task.
//!
//! The task moves through phases — idle, waiting for dependencies, backing off, running —
//! and in every phase it also answers commands (start, stop, retire) from the control
//! socket and the supervisor. Running is: prepare (program, user, cgroup and limits,
//! notify socket, Landlock), spawn, wait for readiness within `ready_timeout`, then watch
//! for exit and, for `health` services, probe liveness. Every state change goes through
//! `Shared::set_state`.

use crate::backoff::CrashVerdict;
use crate::cgroup::ServiceCgroup;
use crate::error::ControlError;
use crate::landlock::Ruleset;
use crate::logs::{self, Stream};
use crate::manifest::{Readiness, RestartPolicy, ServiceSpec};
use crate::process::{self, ExitStatus, Rlimit, SpawnError, SpawnPlan};
use crate::readiness::{self, NotifySocket};
use crate::supervisor::{notify_socket_path, LastExit, Shared};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strata_proto::methods::supervisor::SvcState;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

pub(crate) type Reply = oneshot::Sender<Result<(), ControlError>>;

/// What the control socket and the supervisor ask of a service task.
pub(crate) enum Command {
    /// Start now (operator); answered when Healthy or when the start failed.
    Start { reply: Reply, by: Option<u32> },
    /// Stop the process (stop signal, drain, SIGKILL) and stay Stopped.
    Stop {
        drain: Duration,
        reason: StopReason,
        reply: Reply,
    },
    /// Stop if running and end the task (reload, shutdown).
    Retire {
        drain: Duration,
        reason: StopReason,
        reply: oneshot::Sender<()>,
    },
}

/// Why a service is being stopped, for the audit log.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    Operator { by: Option<u32> },
    Dependency { of: String, by: Option<u32> },
    Reload,
    Shutdown,
}

impl StopReason {
    fn audit_fields(&self) -> Value {
        match self {
            StopReason::Operator { by } => json!({"trigger": "operator", "by_uid": by}),
            StopReason::Dependency { of, by } => {
                json!({"trigger": "dependency-stopped", "dependency": of, "by_uid": by})
            }
            StopReason::Reload => json!({"trigger": "reload"}),
            StopReason::Shutdown => json!({"trigger": "shutdown"}),
        }
    }
}

/// Why a run is starting, for the audit log.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Boot,
    Restart,
    Operator(Option<u32>),
}

impl Trigger {
    fn audit_fields(self) -> Value {
        match self {
            Trigger::Boot => json!({"trigger": "boot"}),
            Trigger::Restart => json!({"trigger": "restart"}),
            Trigger::Operator(by) => json!({"trigger": "operator", "by_uid": by}),
        }
    }
}

enum Next {
    Idle,
    WaitDeps(Trigger),
    Backoff(Duration),
    Run(Option<Reply>, Trigger),
    Exit,
}

/// How a run ended.
enum Ending {
    /// The process exited on its own.
    Exited,
    NotReady(String),
    Unresponsive(String),
    SpawnFailed(String),
}

impl Ending {
    fn describe(&self, status: Option<ExitStatus>) -> String {
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        match self {
            Ending::Exited => format!("exited ({status})"),
            Ending::NotReady(why) => format!("not ready in time: {why}"),
            Ending::Unresponsive(why) => format!("stopped answering sys.health: {why}"),
            Ending::SpawnFailed(why) => format!("could not start: {why}"),
        }
    }
}

/// The live parts of one run.
struct RunHandles {
    pid: i32,
    cgroup: Option<ServiceCgroup>,
    exit: oneshot::Receiver<ExitStatus>,
}

struct Prepared {
    plan: SpawnPlan,
    cgroup: Option<ServiceCgroup>,
    notify: Option<NotifySocket>,
    applied: Value,
}

pub(crate) struct ServiceRunner {
    shared: Arc<Shared>,
    name: String,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl ServiceRunner {
    pub fn new(
        shared: Arc<Shared>,
        name: String,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> ServiceRunner {
        ServiceRunner { shared, name, rx }
    }

    pub async fn run(mut self, autostart: bool) {
        let mut next = if autostart {
            Next::WaitDeps(Trigger::Boot)
        } else {
            Next::Idle
        };
        loop {
            next = match next {
                Next::Idle => self.idle().await,
                Next::WaitDeps(trigger) => self.wait_deps(trigger).await,
                Next::Backoff(delay) => self.backoff(delay).await,
                Next::Run(reply, trigger) => self.run_once(reply, trigger).await,
                Next::Exit => break,
            };
        }
        tracing::debug!(service = %self.name, "service task ended");
    }

    fn spec(&self) -> Option<Arc<ServiceSpec>> {
        self.shared
            .table()
            .services
            .get(&self.name)
            .map(|r| Arc::clone(&r.spec))
    }

    fn audit(&self, event: &str, fields: Value) {
        let mut v = json!({"service": self.name});
        if let (Value::Object(base), Value::Object(extra)) = (&mut v, fields) {
            base.extend(extra);
        }
        self.shared.audit.record(event, v);
    }

    fn note(&self, text: String) {
        if let Some(rec) = self.shared.table().services.get(&self.name) {
            rec.logs.push(Stream::Supervisor, text);
        }
    }

    /// Handle a command while no process runs; `None` keeps the current phase.
    fn on_command_idle(&mut self, cmd: Command) -> Option<Next> {
        match cmd {
            Command::Start { reply, by } => {
                if self.shared.is_shutting_down() {
                    let _ = reply.send(Err(ControlError::ShuttingDown));
                    return None;
                }
                let spec = self.spec()?;
                if let Some((dependency, state)) = self.shared.unhealthy_dependency(&spec) {
                    let _ = reply.send(Err(ControlError::DependencyNotHealthy {
                        name: self.name.clone(),
                        dependency,
                        state,
                    }));
                    return None;
                }
                // An operator's start is a fresh start: the crash history is forgiven
                // (this is the only way out of quarantine).
                if let Some(rec) = self.shared.table().services.get_mut(&self.name) {
                    rec.crashes.reset();
                }
                Some(Next::Run(Some(reply), Trigger::Operator(by)))
            }
            Command::Stop { reason, reply, .. } => match self.shared.state_of(&self.name) {
                Some(SvcState::Stopped) | None => {
                    let _ = reply.send(Err(ControlError::NotRunning {
                        name: self.name.clone(),
                        state: SvcState::Stopped,
                    }));
                    None
                }
                Some(_) => {
                    self.mark_stopped(&reason, None);
                    let _ = reply.send(Ok(()));
                    Some(Next::Idle)
                }
            },
            Command::Retire { reason, reply, .. } => {
                if self.shared.state_of(&self.name) != Some(SvcState::Stopped) {
                    self.mark_stopped(&reason, None);
                }
                let _ = reply.send(());
                Some(Next::Exit)
            }
        }
    }

    fn mark_stopped(&self, reason: &StopReason, exit: Option<ExitStatus>) {
        let last = exit.map(|status| LastExit {
            status: Some(status),
            reason: "stopped".to_owned(),
            at: SystemTime::now(),
        });
        self.shared.set_state(&self.name, SvcState::Stopped, |r| {
            r.pid = None;
            if last.is_some() {
                r.last_exit = last;
            }
        });
        let mut fields = reason.audit_fields();
        fields["exit"] = exit.map_or(Value::Null, ExitStatus::to_json);
        self.audit("svc.stop", fields);
    }

    async fn idle(&mut self) -> Next {
        loop {
            match self.rx.recv().await {
                None => return Next::Exit,
                Some(cmd) => {
                    if let Some(next) = self.on_command_idle(cmd) {
                        return next;
                    }
                }
            }
        }
    }

    async fn wait_deps(&mut self, trigger: Trigger) -> Next {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let ready = !self.shared.is_shutting_down()
                && self
                    .spec()
                    .is_some_and(|s| self.shared.unhealthy_dependency(&s).is_none());
            if ready {
                return Next::Run(None, trigger);
            }
            tokio::select! {
                r = changed.changed() => {
                    if r.is_err() {
                        return Next::Exit;
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    None => return Next::Exit,
                    Some(cmd) => {
                        if let Some(next) = self.on_command_idle(cmd) {
                            return next;
                        }
                    }
                },
            }
        }
    }

    async fn backoff(&mut self, delay: Duration) -> Next {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Next::WaitDeps(Trigger::Restart),
                cmd = self.rx.recv() => match cmd {
                    None => return Next::Exit,
                    Some(cmd) => {
                        if let Some(next) = self.on_command_idle(cmd) {
                            return next;
                        }
                    }
                },
            }
        }
    }

    async fn run_once(&mut self, mut reply: Option<Reply>, trigger: Trigger) -> Next {
        let Some(spec) = self.spec() else {
            return Next::Exit;
        };
        if !self
            .shared
            .set_state(&self.name, SvcState::Starting, |r| r.pid = None)
        {
            if let Some(r) = reply {
                let _ = r.send(Err(ControlError::Superseded(self.name.clone())));
            }
            return Next::Idle;
        }
        let prepared = match self.prepare(&spec) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(service = %self.name, error = %e, "cannot start");
                return self
                    .after_exit(
                        None,
                        None,
                        Ending::SpawnFailed(e.to_string()),
                        None,
                        reply,
                        &spec,
                    )
                    .await;
            }
        };
        let Prepared {
            plan,
            cgroup,
            notify,
            applied,
        } = prepared;
        let program = plan.program.display().to_string();
        let (spawned, exit) = match self.shared.reaper.spawn(plan) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %self.name, error = %e, "cannot start");
                if let Some(cg) = &cgroup {
                    self.forget_cgroup(cg);
                    let _ = cg.remove();
                }
                return self
                    .after_exit(
                        None,
                        None,
                        Ending::SpawnFailed(e.to_string()),
                        None,
                        reply,
                        &spec,
                    )
                    .await;
            }
        };
        let pid = spawned.pid;
        if let Some(g) = &self.shared.orphans {
            g.watch_group(pid);
        }
        let sink = {
            let mut table = self.shared.table();
            let rec = table
                .services
                .get_mut(&self.name)
                .expect("a running service has a record");
            rec.pid = Some(pid);
            rec.applied = Some(applied);
            Arc::clone(&rec.logs)
        };
        self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
        let mut fields = trigger.audit_fields();
        fields["pid"] = json!(pid);
        fields["program"] = json!(program);
        self.audit("svc.start", fields);
        sink.push(
            Stream::Supervisor,
            format!("started {program} as pid {pid}"),
        );
        for (fd, stream) in [
            (std::os::fd::OwnedFd::from(spawned.stdout), Stream::Stdout),
            (std::os::fd::OwnedFd::from(spawned.stderr), Stream::Stderr),
        ] {
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(pipe) => {
                    tokio::spawn(logs::capture(pipe, stream, Arc::clone(&sink)));
                }
                Err(e) => tracing::warn!(service = %self.name, error = %e, "cannot capture output"),
            }
        }
        let mut run = RunHandles { pid, cgroup, exit };

        // Readiness.
        let socket = spec.socket_path(&self.shared.runtime_dir);
        let deadline = Instant::now() + spec.ready_timeout.get();
        let ready_result = {
            let ready = check_ready(&spec, socket.as_deref(), notify.as_ref(), deadline);
            tokio::pin!(ready);
            loop {
                tokio::select! {
                    r = &mut ready => break r,
                    status = &mut run.exit => {
                        let status = status.ok();
                        return self.after_exit(Some(run), status, Ending::Exited, None, reply, &spec).await;
                    }
                    cmd = self.rx.recv() => match cmd {
                        Some(Command::Start { reply: r, .. }) => {
                            let _ = r.send(Err(ControlError::AlreadyRunning {
                                name: self.name.clone(),
                                state: SvcState::Starting,
                            }));
                        }
                        Some(Command::Stop { drain, reason, reply: r }) => {
                            if let Some(waiting) = reply.take() {
                                let _ = waiting.send(Err(ControlError::StartFailed {
                                    name: self.name.clone(),
                                    reason: "stopped while starting".to_owned(),
                                }));
                            }
                            self.stop_run(run, &spec, drain, &reason).await;
                            let _ = r.send(Ok(()));
                            return Next::Idle;
                        }
                        Some(Command::Retire { drain, reason, reply: r }) => {
                            if let Some(waiting) = reply.take() {
                                let _ = waiting.send(Err(ControlError::Superseded(self.name.clone())));
                            }
                            self.stop_run(run, &spec, drain, &reason).await;
                            let _ = r.send(());
                            return Next::Exit;
                        }
                        None => {
                            self.stop_run(run, &spec, Duration::from_millis(spec.drain_ms), &StopReason::Shutdown).await;
                            return Next::Exit;
                        }
                    },
                }
            }
        };
        drop(notify);
        if let Err(why) = ready_result {
            let why = format!("no readiness within {}: {why}", spec.ready_timeout);
            tracing::warn!(service = %self.name, reason = %why, "not ready");
            let status = self
                .terminate(&mut run, &spec, Duration::from_millis(spec.drain_ms))
                .await;
            return self
                .after_exit(
                    Some(run),
                    Some(status),
                    Ending::NotReady(why),
                    None,
                    reply,
                    &spec,
                )
                .await;
        }
        self.shared.set_state(&self.name, SvcState::Healthy, |_| {});
        if let Some(r) = reply.take() {
            let _ = r.send(Ok(()));
        }

        // Healthy: watch for exit, probe liveness, answer commands.
        let healthy_at = Instant::now();
        let interval = spec.health_interval.get();
        let probe_socket =
            socket.filter(|_| spec.readiness == Readiness::Health && !interval.is_zero());
        let mut ticker = tokio::time::interval_at(
            Instant::now() + interval.max(Duration::from_millis(1)),
            interval.max(Duration::from_millis(1)),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                status = &mut run.exit => {
                    let status = status.ok();
                    let healthy_for = Some(healthy_at.elapsed());
                    return self.after_exit(Some(run), status, Ending::Exited, healthy_for, None, &spec).await;
                }
                _ = ticker.tick(), if probe_socket.is_some() => {
                    let socket = probe_socket.as_deref().expect("guarded by the branch condition");
                    match readiness::probe_health(socket, spec.health_timeout.get()).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(service = %self.name, failures, error = %e, "liveness probe failed");
                            if failures >= spec.health_failures {
                                let why = format!("{failures} probes failed, last: {e}");
                                let status = self.terminate(&mut run, &spec, Duration::from_millis(spec.drain_ms)).await;
                                let healthy_for = Some(healthy_at.elapsed());
                                return self
                                    .after_exit(Some(run), Some(status), Ending::Unresponsive(why), healthy_for, None, &spec)
                                    .await;
                            }
                        }
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Start { reply: r, .. }) => {
                        let _ = r.send(Err(ControlError::AlreadyRunning {
                            name: self.name.clone(),
                            state: SvcState::Healthy,
                        }));
                    }
                    Some(Command::Stop { drain, reason, reply: r }) => {
                        self.stop_run(run, &spec, drain, &reason).await;
                        let _ = r.send(Ok(()));
                        return Next::Idle;
                    }
                    Some(Command::Retire { drain, reason, reply: r }) => {
                        self.stop_run(run, &spec, drain, &reason).await;
                        let _ = r.send(());
                        return Next::Exit;
                    }
                    None => {
                        self.stop_run(run, &spec, Duration::from_millis(spec.drain_ms), &StopReason::Shutdown).await;
                        return Next::Exit;
                    }
                },
            }
        }
    }

    /// Everything decided before fork: program, user, cgroup and limits, notify socket,
    /// Landlock, environment. Also reports what was applied.
    fn prepare(&self, spec: &ServiceSpec) -> Result<Prepared, SpawnError> {
        let shared = &self.shared;
        let program = shared.programs.find(&spec.exec)?;
        let credentials =
            process::resolve_credentials(spec.user.as_deref(), spec.group.as_deref())?;
        if let Some(socket) = spec.socket_path(&shared.runtime_dir) {
            remove_stale_socket(&socket);
        }

        let mut limits = serde_json::Map::new();
        let mut rlimits = Vec::new();
        let cgroup = match &shared.cgroups {
            Ok(root) => Some(root.create(&spec.name).map_err(SpawnError::Cgroup)?),
            Err(_) => None,
        };
        if let (Some(cg), Some(g)) = (&cgroup, &shared.orphans) {
            g.watch_cgroup(cg.dir());
        }
        let result = (|| {
            let has =
                |c: &str| cgroup.is_some() && shared.cgroups.as_ref().is_ok_and(|root| root.has(c));
            if let Some(mem) = spec.limits.memory_max {
                let via = match &cgroup {
                    Some(cg)
                        if has("memory") && cg.set("memory.max", &mem.0.to_string()).is_ok() =>
                    {
                        json!({"value": mem.0, "via": "cgroup"})
                    }
                    _ => {
                        rlimits.push(Rlimit::AddressSpace(mem.0));
                        json!({"value": mem.0, "via": "rlimit", "rlimit": "RLIMIT_AS",
                               "note": "address space, not resident memory: no cgroup memory controller"})
                    }
                };
                limits.insert("memory_max".into(), via);
            }
            if let Some(pids) = spec.limits.pids_max {
                let via = match &cgroup {
                    Some(cg) if has("pids") && cg.set("pids.max", &pids.to_string()).is_ok() => {
                        json!({"value": pids, "via": "cgroup"})
                    }
                    _ => {
                        rlimits.push(Rlimit::Processes(pids));
                        json!({"value": pids, "via": "rlimit", "rlimit": "RLIMIT_NPROC",
                               "note": "counts every process of the service's user; not enforced for root"})
                    }
                };
                limits.insert("pids_max".into(), via);
            }
            if let Some(cpu) = spec.limits.cpu_max {
                let via = match &cgroup {
                    Some(cg) if has("cpu") && cg.set("cpu.max", &cpu.cgroup_value()).is_ok() => {
                        json!({"value": cpu.cgroup_value(), "via": "cgroup"})
                    }
                    _ => json!({"value": cpu.cgroup_value(), "via": "none",
                                "note": "no cgroup cpu controller and no rlimit equivalent: not enforced"}),
                };
                limits.insert("cpu_max".into(), via);
            }
            let cgroup_procs = match &cgroup {
                Some(cg) => Some(cg.procs_for_join().map_err(SpawnError::Cgroup)?),
                None => None,
            };
            let notify = if spec.readiness == Readiness::Notify {
                let path = notify_socket_path(&shared.notify_dir(), &spec.name);
                let owner = credentials.as_ref().map(|c| (c.uid, c.gid));
                Some(
                    NotifySocket::bind(&path, owner).map_err(|source| SpawnError::Prepare {
                        what: format!("the notify socket {}", path.display()),
                        source,
                    })?,
                )
            } else {
                None
            };
            let landlock = match &spec.sandbox.landlock {
                Some(rules) => Some(Ruleset::build(rules)?),
                None => None,
            };
            let namespaces = spec
                .sandbox
                .namespaces
                .iter()
                .fold(0, |flags, ns| flags | ns.clone_flag());
            let applied = json!({
                "limits": limits,
                "cgroup": cgroup.as_ref().map(|c| c.dir().display().to_string()),
                "user": credentials.as_ref().map(|c| json!({"uid": c.uid, "gid": c.gid, "groups": c.groups})),
                "no_new_privs": spec.sandbox.no_new_privs,
                "namespaces": spec.sandbox.namespaces.iter().map(|n| n.name()).collect::<Vec<_>>(),
                "landlock": landlock.as_ref().map(|r| json!({"abi": r.abi()})),
            });
            let env = self.environment(
                spec,
                notify.as_ref().map(|n| n.path()),
                credentials.is_some(),
            );
            let plan = SpawnPlan {
                program,
                args: spec.args.clone(),
                env,
                cwd: spec
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/")),
                credentials: credentials.clone(),
                rlimits: rlimits.clone(),
                cgroup_procs,
                namespaces,
                no_new_privs: spec.sandbox.no_new_privs,
                landlock,
            };
            Ok((plan, notify, applied))
        })();
        match result {
            Ok((plan, notify, applied)) => Ok(Prepared {
                plan,
                cgroup,
                notify,
                applied,
            }),
            Err(e) => {
                if let Some(cg) = &cgroup {
                    self.forget_cgroup(cg);
                    let _ = cg.remove();
                }
                Err(e)
            }
        }
    }

    /// A clean environment: the Strata variables, a few pass-throughs, then the
    /// service's own `env`.
    fn environment(
        &self,
        spec: &ServiceSpec,
        notify: Option<&Path>,
        other_user: bool,
    ) -> Vec<(String, String)> {
        let shared = &self.shared;
        let mut env: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        let path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
        env.insert("PATH".into(), path);
        let mut pass = vec!["STRATA_LOG", "STRATA_LOG_FORMAT", "LANG", "TZ"];
        if !other_user {
            pass.push("HOME");
        }
        for key in pass {
            if let Ok(v) = std::env::var(key) {
                env.insert(key.into(), v);
            }
        }
        env.insert(
            "STRATA_RUNTIME_DIR".into(),
            shared.runtime_dir.display().to_string(),
        );
        env.insert(
            "STRATA_STATE_DIR".into(),
            shared.state_dir.display().to_string(),
        );
        env.insert("STRATA_NODE_ID".into(), shared.node_id.clone());
        env.insert("STRATA_SERVICE".into(), spec.name.clone());
        for (k, v) in &shared.cluster_env {
            env.insert(k.clone(), v.clone());
        }
        if let Some(addr) = spec.tcp {
            env.insert("STRATA_TCP_LISTEN".into(), addr.to_string());
        }
        if let Some(n) = notify {
            env.insert("NOTIFY_SOCKET".into(), n.display().to_string());
        }
        for (k, v) in &spec.env {
            env.insert(k.clone(), v.clone());
        }
        env.into_iter().collect()
    }

    fn forget_cgroup(&self, cg: &ServiceCgroup) {
        if let Some(g) = &self.shared.orphans {
            g.forget_cgroup(cg.dir());
        }
    }

    /// Stop signal to the group, wait `drain`, then SIGKILL the group and cgroup.
    async fn terminate(
        &self,
        run: &mut RunHandles,
        spec: &ServiceSpec,
        drain: Duration,
    ) -> ExitStatus {
        if self.shared.registration(spec).is_some()
            && self.shared.state_of(&self.name) == Some(SvcState::Healthy)
        {
            // Stop new clients from finding it while it drains.
            self.shared.registry.deregister(&self.name);
        }
        process::signal_group(run.pid, spec.stop_signal.0);
        // A stopped (SIGSTOP) process only acts on the signal once continued.
        process::signal_group(run.pid, libc::SIGCONT);
        if let Ok(status) = timeout(drain, &mut run.exit).await {
            return status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));
        }
        tracing::warn!(service = %self.name, pid = run.pid, ?drain, "did not stop within the drain; SIGKILL");
        kill_tree(run);
        match timeout(Duration::from_secs(5), &mut run.exit).await {
            Ok(status) => status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
            Err(_) => {
                tracing::error!(service = %self.name, pid = run.pid, "still alive 5 s after SIGKILL");
                ExitStatus::Signal(libc::SIGKILL)
            }
        }
    }

    /// Kill whatever is left of a run's process tree and release its cgroup.
    async fn cleanup(&self, run: RunHandles) {
        kill_tree(&run);
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let busy = process::group_exists(run.pid)
                || run.cgroup.as_ref().is_some_and(ServiceCgroup::populated);
            if !busy {
                break;
            }
            if Instant::now() >= until {
                tracing::warn!(service = %self.name, pgid = run.pid, "processes remain after SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(g) = &self.shared.orphans {
            g.forget_group(run.pid);
        }
        if let Some(cg) = &run.cgroup {
            self.forget_cgroup(cg);
            if let Err(e) = cg.remove() {
                tracing::debug!(service = %self.name, error = %e, "cgroup not removed");
            }
        }
        if let Some(socket) = self
            .spec()
            .and_then(|s| s.socket_path(&self.shared.runtime_dir))
        {
            remove_stale_socket(&socket);
        }
    }

    async fn stop_run(
        &self,
        mut run: RunHandles,
        spec: &ServiceSpec,
        drain: Duration,
        reason: &StopReason,
    ) {
        let status = self.terminate(&mut run, spec, drain).await;
        self.cleanup(run).await;
        self.note(format!("stopped: {status}"));
        self.mark_stopped(reason, Some(status));
    }

    /// The run is over without anyone asking: record it, then apply the restart policy
    /// and the crash history.
    async fn after_exit(
        &mut self,
        run: Option<RunHandles>,
        status: Option<ExitStatus>,
        ending: Ending,
        healthy_for: Option<Duration>,
        reply: Option<Reply>,
        spec: &ServiceSpec,
    ) -> Next {
        if let Some(run) = run {
            self.cleanup(run).await;
        }
        let reason = ending.describe(status);
        self.note(reason.clone());
        if let Some(r) = reply {
            let _ = r.send(Err(ControlError::StartFailed {
                name: self.name.clone(),
                reason: reason.clone(),
            }));
        }
        let last = LastExit {
            status,
            reason: reason.clone(),
            at: SystemTime::now(),
        };
        let clean = matches!(ending, Ending::Exited) && status.is_some_and(ExitStatus::success);
        if clean && spec.restart != RestartPolicy::Always {
            self.shared.set_state(&self.name, SvcState::Stopped, |r| {
                r.pid = None;
                r.last_exit = Some(last);
            });
            self.audit(
                "svc.stop",
                json!({"trigger": "exited", "exit": status.map(ExitStatus::to_json)}),
            );
            return Next::Idle;
        }
        self.shared.set_state(&self.name, SvcState::Crashed, |r| {
            r.pid = None;
            r.last_exit = Some(last);
        });
        let restarts = self
            .shared
            .table()
            .services
            .get(&self.name)
            .map_or(0, |r| r.restarts);
        self.audit(
            "svc.crash",
            json!({"exit": status.map(ExitStatus::to_json), "reason": reason, "restarts": restarts}),
        );
        if spec.restart == RestartPolicy::Never || self.shared.is_shutting_down() {
            return Next::Idle;
        }
        let verdict = {
            let mut table = self.shared.table();
            match table.services.get_mut(&self.name) {
                Some(rec) => rec.crashes.record(
                    std::time::Instant::now(),
                    healthy_for,
                    &spec.backoff,
                    &spec.quarantine,
                ),
                None => return Next::Exit,
            }
        };
        match verdict {
            CrashVerdict::Quarantine => {
                self.shared
                    .set_state(&self.name, SvcState::Quarantined, |_| {});
                self.audit(
                    "svc.quarantine",
                    json!({"crashes": spec.quarantine.crashes, "window": spec.quarantine.window.to_string()}),
                );
                tracing::error!(service = %self.name, "quarantined after repeated crashes; start it with supervisor.svc.start");
                Next::Idle
            }
            CrashVerdict::RestartAfter(delay) => {
                self.shared
                    .set_state(&self.name, SvcState::Restarting, |r| r.restarts += 1);
                tracing::info!(service = %self.name, ?delay, "restarting after backoff");
                Next::Backoff(delay)
            }
        }
    }
}

/// The readiness check a spec asks for.
async fn check_ready(
    spec: &ServiceSpec,
    socket: Option<&Path>,
    notify: Option<&NotifySocket>,
    deadline: Instant,
) -> Result<(), String> {
    match spec.readiness {
        Readiness::Started => Ok(()),
        Readiness::Health => match socket {
            Some(socket) => {
                readiness::wait_healthy(socket, deadline, spec.health_timeout.get()).await
            }
            None => Err("no socket to probe".to_owned()),
        },
        Readiness::Notify => match notify {
            Some(n) => match tokio::time::timeout_at(deadline, n.ready()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("notify socket failed: {e}")),
                Err(_) => Err("no READY=1 on NOTIFY_SOCKET".to_owned()),
            },
            None => Err("no notify socket".to_owned()),
        },
    }
}

fn kill_tree(run: &RunHandles) {
    process::signal_group(run.pid, libc::SIGKILL);
    if let Some(cg) = &run.cgroup {
        cg.kill_all();
    }
}

/// Remove a socket file nobody answers on, so a new run cannot be mistaken for ready
/// and can bind.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.file_type().is_socket() {
        return;
    }
    if let Err(e) = std::os::unix::net::UnixStream::connect(path) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            tracing::debug!(socket = %path.display(), "removing stale socket");
            let _ = std::fs::remove_file(path);
        }
    }
}
