//! One service's lifecycle, driven by one task.
//!
//! The task moves through phases — idle, waiting for dependencies, backing off, running —
//! and in every phase answers commands (start, stop, retire) from the control socket and
//! the supervisor, all in one handler ([`ServiceRunner::on_command`]). A run is three
//! steps: [`spawn`](ServiceRunner::spawn) (prepare, see `prepare.rs`, then start the
//! process through the [`Spawner`](crate::spawner::Spawner)),
//! [`await_ready`](ServiceRunner::await_ready) within `ready_timeout`, and
//! [`run_while_healthy`](ServiceRunner::run_while_healthy): watch for exit and, for
//! `health` services, probe liveness. How a run ends (stopped on purpose, or on its own
//! and then restarted, left, or quarantined) is `service/ending.rs`. Every state change
//! goes through `Shared::set_state`.

use crate::cgroup::ServiceCgroup;
use crate::command::{Command, Reply, StopReason};
use crate::error::ControlError;
use crate::logs::{self, Stream};
use crate::manifest::{Readiness, ServiceSpec};
use crate::prepare::{self, Prepared};
use crate::process::ExitStatus;
use crate::readiness::{self, NotifySocket};
use crate::routing::Routes;
use crate::shared::Shared;
use ending::{Ending, RunEnd};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strata_proto::methods::supervisor::SvcState;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod ending;
mod routed;
#[cfg(test)]
mod tests;

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

/// The live parts of one run.
struct RunHandles {
    pid: i32,
    cgroup: Option<ServiceCgroup>,
    exit: oneshot::Receiver<ExitStatus>,
    /// The capabilities routed to the run, revoked when it is cleaned up.
    routes: Option<Routes>,
}

/// A run in progress.
struct Run {
    /// The definition it was started with.
    spec: Arc<ServiceSpec>,
    handles: RunHandles,
    /// The per-run `NOTIFY_SOCKET`, until readiness is decided.
    notify: Option<NotifySocket>,
    /// An operator's `svc.start` waiting for this run to be Healthy (or to fail).
    waiting: Option<Reply>,
    /// `Starting` until readiness is seen, then `Healthy`.
    state: SvcState,
}

impl Run {
    fn drain(&self) -> Duration {
        Duration::from_millis(self.spec.drain_ms)
    }
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

    /// The one command handler, for every phase. `cmd` is `None` once every sender is
    /// gone (the supervisor forgot the service); `run` is the run in progress, if any.
    /// `Continue` keeps the current phase (handing the run back), `Break` ends it.
    async fn on_command(
        &mut self,
        cmd: Option<Command>,
        run: Option<Run>,
    ) -> ControlFlow<Next, Option<Run>> {
        use ControlFlow::{Break, Continue};
        let Some(cmd) = cmd else {
            if let Some(run) = run {
                let drain = run.drain();
                self.stop_run(run, drain, &StopReason::Shutdown).await;
            }
            return Break(Next::Exit);
        };
        match (cmd, run) {
            (Command::Start { reply, .. }, Some(run)) => {
                let _ = reply.send(Err(ControlError::AlreadyRunning {
                    name: self.name.clone(),
                    state: run.state,
                }));
                Continue(Some(run))
            }
            (Command::Start { reply, by }, None) => {
                if self.shared.is_shutting_down() {
                    let _ = reply.send(Err(ControlError::ShuttingDown));
                    return Continue(None);
                }
                let Some(spec) = self.spec() else {
                    return Continue(None);
                };
                if let Some((dependency, state)) = self.shared.blocking_dependency(&spec) {
                    let _ = reply.send(Err(ControlError::DependencyNotHealthy {
                        name: self.name.clone(),
                        dependency,
                        state,
                    }));
                    return Continue(None);
                }
                // An operator's start is a fresh start: the crash history is forgiven
                // (this is the only way out of quarantine).
                if let Some(rec) = self.shared.table().services.get_mut(&self.name) {
                    rec.crashes.reset();
                }
                Break(Next::Run(Some(reply), Trigger::Operator(by)))
            }
            (
                Command::Stop {
                    drain,
                    reason,
                    reply,
                },
                Some(mut run),
            ) => {
                if let Some(waiting) = run.waiting.take() {
                    let _ = waiting.send(Err(ControlError::StartFailed {
                        name: self.name.clone(),
                        reason: "stopped while starting".to_owned(),
                    }));
                }
                self.stop_run(run, drain, &reason).await;
                let _ = reply.send(Ok(()));
                Break(Next::Idle)
            }
            (Command::Stop { reason, reply, .. }, None) => match self.shared.state_of(&self.name) {
                Some(SvcState::Stopped) | None => {
                    let _ = reply.send(Err(ControlError::NotRunning {
                        name: self.name.clone(),
                        state: SvcState::Stopped,
                    }));
                    Continue(None)
                }
                Some(_) => {
                    self.mark_stopped(&reason, None);
                    let _ = reply.send(Ok(()));
                    Break(Next::Idle)
                }
            },
            (
                Command::Retire {
                    drain,
                    reason,
                    reply,
                },
                Some(mut run),
            ) => {
                if let Some(waiting) = run.waiting.take() {
                    let _ = waiting.send(Err(ControlError::Superseded(self.name.clone())));
                }
                self.stop_run(run, drain, &reason).await;
                let _ = reply.send(());
                Break(Next::Exit)
            }
            (Command::Retire { reason, reply, .. }, None) => {
                if self.shared.state_of(&self.name) != Some(SvcState::Stopped) {
                    self.mark_stopped(&reason, None);
                }
                let _ = reply.send(());
                Break(Next::Exit)
            }
        }
    }

    /// A command while no process runs: `Some` ends the phase.
    async fn on_command_idle(&mut self, cmd: Option<Command>) -> Option<Next> {
        match self.on_command(cmd, None).await {
            ControlFlow::Continue(_) => None,
            ControlFlow::Break(next) => Some(next),
        }
    }

    async fn idle(&mut self) -> Next {
        loop {
            let cmd = self.rx.recv().await;
            if let Some(next) = self.on_command_idle(cmd).await {
                return next;
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
                cmd = self.rx.recv() => {
                    if let Some(next) = self.on_command_idle(cmd).await {
                        return next;
                    }
                }
            }
        }
    }

    async fn backoff(&mut self, delay: Duration) -> Next {
        let until = tokio::time::sleep(delay);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Next::WaitDeps(Trigger::Restart),
                cmd = self.rx.recv() => {
                    if let Some(next) = self.on_command_idle(cmd).await {
                        return next;
                    }
                }
            }
        }
    }

    /// One run: spawn, await readiness, run while Healthy.
    async fn run_once(&mut self, reply: Option<Reply>, trigger: Trigger) -> Next {
        let run = match self.spawn(reply, trigger).await {
            Ok(run) => run,
            Err(next) => return next,
        };
        let run = match self.await_ready(run).await {
            Ok(run) => run,
            Err(next) => return next,
        };
        self.run_while_healthy(run).await
    }

    /// Enter Starting, prepare, and start the process with its output captured.
    async fn spawn(&mut self, mut reply: Option<Reply>, trigger: Trigger) -> Result<Run, Next> {
        let Some(spec) = self.spec() else {
            return Err(Next::Exit);
        };
        if !self
            .shared
            .set_state(&self.name, SvcState::Starting, |r| r.pid = None)
        {
            if let Some(r) = reply {
                let _ = r.send(Err(ControlError::Superseded(self.name.clone())));
            }
            return Err(Next::Idle);
        }
        let mut routes = self.obtain_routes(&spec, &mut reply).await?;
        let Prepared {
            mut plan,
            cgroup,
            notify,
            applied,
        } = match prepare::prepare(
            &self.shared,
            &routed::readable_credentials(&spec, routes.as_ref()),
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(service = %self.name, error = %e, "cannot start");
                if let Some(routes) = routes {
                    routes.end().await;
                }
                let end = RunEnd::spawn_failed(e.to_string(), reply);
                return Err(self.after_exit(&spec, end).await);
            }
        };
        if let Some(routes) = &routes {
            routed::hand_over(&mut plan, routes);
        }
        let program = plan.program.display().to_string();
        let (spawned, exit) = match self.shared.spawner.spawn(plan) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %self.name, error = %e, "cannot start");
                if let Some(cg) = &cgroup {
                    prepare::forget_cgroup(&self.shared, cg);
                    let _ = cg.remove();
                }
                if let Some(routes) = routes {
                    routes.end().await;
                }
                let end = RunEnd::spawn_failed(e.to_string(), reply);
                return Err(self.after_exit(&spec, end).await);
            }
        };
        let pid = spawned.pid;
        if let Some(routes) = &mut routes {
            routes.start_rotation(&self.shared, pid);
        }
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
            (spawned.stdout, Stream::Stdout),
            (spawned.stderr, Stream::Stderr),
        ] {
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(pipe) => {
                    tokio::spawn(logs::capture(pipe, stream, Arc::clone(&sink)));
                }
                Err(e) => tracing::warn!(service = %self.name, error = %e, "cannot capture output"),
            }
        }
        Ok(Run {
            spec,
            handles: RunHandles {
                pid,
                cgroup,
                exit,
                routes,
            },
            notify,
            waiting: reply,
            state: SvcState::Starting,
        })
    }

    /// Wait for the readiness the spec asks for, within `ready_timeout`, answering
    /// commands meanwhile; then enter Healthy.
    async fn await_ready(&mut self, mut run: Run) -> Result<Run, Next> {
        let spec = Arc::clone(&run.spec);
        let socket = spec.socket_path(&self.shared.runtime_dir);
        let deadline = Instant::now() + spec.ready_timeout.get();
        let notify = run.notify.take();
        let ready_result = {
            let ready = check_ready(&spec, socket.as_deref(), notify.as_ref(), deadline);
            tokio::pin!(ready);
            loop {
                tokio::select! {
                    r = &mut ready => break r,
                    status = &mut run.handles.exit => {
                        let end = RunEnd::exited(run.handles, status.ok(), None, run.waiting);
                        return Err(self.after_exit(&spec, end).await);
                    }
                    cmd = self.rx.recv() => match self.on_command(cmd, Some(run)).await {
                        ControlFlow::Continue(Some(r)) => run = r,
                        ControlFlow::Continue(None) => unreachable!("a running command hands the run back"),
                        ControlFlow::Break(next) => return Err(next),
                    },
                }
            }
        };
        drop(notify);
        if let Err(why) = ready_result {
            let why = format!("no readiness within {}: {why}", spec.ready_timeout);
            tracing::warn!(service = %self.name, reason = %why, "not ready");
            let status = self
                .terminate(
                    &mut run.handles,
                    &spec,
                    Duration::from_millis(spec.drain_ms),
                )
                .await;
            let end = RunEnd {
                handles: Some(run.handles),
                status: Some(status),
                ending: Ending::NotReady(why),
                healthy_for: None,
                reply: run.waiting,
            };
            return Err(self.after_exit(&spec, end).await);
        }
        self.shared.set_state(&self.name, SvcState::Healthy, |_| {});
        run.state = SvcState::Healthy;
        if let Some(r) = run.waiting.take() {
            let _ = r.send(Ok(()));
        }
        Ok(run)
    }

    /// Healthy: watch for exit, probe liveness, answer commands.
    async fn run_while_healthy(&mut self, mut run: Run) -> Next {
        let spec = Arc::clone(&run.spec);
        let healthy_at = Instant::now();
        let interval = spec.health_interval.get();
        let probe_socket = spec
            .socket_path(&self.shared.runtime_dir)
            .filter(|_| spec.readiness == Readiness::Health && !interval.is_zero());
        let mut ticker = tokio::time::interval_at(
            Instant::now() + interval.max(Duration::from_millis(1)),
            interval.max(Duration::from_millis(1)),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                status = &mut run.handles.exit => {
                    let healthy_for = Some(healthy_at.elapsed());
                    let end = RunEnd::exited(run.handles, status.ok(), healthy_for, None);
                    return self.after_exit(&spec, end).await;
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
                                let status = self.terminate(&mut run.handles, &spec, Duration::from_millis(spec.drain_ms)).await;
                                let end = RunEnd {
                                    handles: Some(run.handles),
                                    status: Some(status),
                                    ending: Ending::Unresponsive(why),
                                    healthy_for: Some(healthy_at.elapsed()),
                                    reply: None,
                                };
                                return self.after_exit(&spec, end).await;
                            }
                        }
                    }
                }
                cmd = self.rx.recv() => match self.on_command(cmd, Some(run)).await {
                    ControlFlow::Continue(Some(r)) => run = r,
                    ControlFlow::Continue(None) => unreachable!("a running command hands the run back"),
                    ControlFlow::Break(next) => return next,
                },
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
