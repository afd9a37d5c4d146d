//! How a run ends: stopped on purpose (stop signal, drain, SIGKILL of the group and
//! cgroup, clean-up), or on its own, after which the restart policy and the crash history
//! decide: Stopped, Crashed, Restarting after a backoff, or Quarantined.

use super::{Next, Run, RunHandles, ServiceRunner};
use crate::backoff::CrashVerdict;
use crate::cgroup::ServiceCgroup;
use crate::command::{Reply, StopReason};
use crate::error::ControlError;
use crate::manifest::{RestartPolicy, ServiceSpec};
use crate::prepare;
use crate::process::ExitStatus;
use crate::shared::LastExit;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use strata_proto::methods::supervisor::SvcState;
use tokio::time::{timeout, Instant};

/// How a run ended.
pub(super) enum Ending {
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

/// A run that ended without anyone asking, as [`ServiceRunner::after_exit`] takes it.
pub(super) struct RunEnd {
    /// The run's process, if it got one: whatever is left of it is killed first.
    pub handles: Option<RunHandles>,
    pub status: Option<ExitStatus>,
    pub ending: Ending,
    /// How long the run had been Healthy (`None` if it never was).
    pub healthy_for: Option<Duration>,
    /// An operator's `svc.start` still waiting: told the start failed.
    pub reply: Option<Reply>,
}

impl RunEnd {
    /// The process could not be started at all.
    pub fn spawn_failed(why: String, reply: Option<Reply>) -> RunEnd {
        RunEnd {
            handles: None,
            status: None,
            ending: Ending::SpawnFailed(why),
            healthy_for: None,
            reply,
        }
    }

    /// The process exited on its own.
    pub fn exited(
        handles: RunHandles,
        status: Option<ExitStatus>,
        healthy_for: Option<Duration>,
        reply: Option<Reply>,
    ) -> RunEnd {
        RunEnd {
            handles: Some(handles),
            status,
            ending: Ending::Exited,
            healthy_for,
            reply,
        }
    }
}

impl ServiceRunner {
    /// Record a stop (with the exit status, if a process was stopped) and audit it.
    pub(super) fn mark_stopped(&self, reason: &StopReason, exit: Option<ExitStatus>) {
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

    /// Stop signal to the group, wait `drain`, then SIGKILL the group and cgroup.
    pub(super) async fn terminate(
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
        self.shared
            .spawner
            .signal_group(run.pid, spec.stop_signal.0);
        // A stopped (SIGSTOP) process only acts on the signal once continued.
        self.shared.spawner.signal_group(run.pid, libc::SIGCONT);
        if let Ok(status) = timeout(drain, &mut run.exit).await {
            return status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));
        }
        tracing::warn!(service = %self.name, pid = run.pid, ?drain, "did not stop within the drain; SIGKILL");
        self.kill_tree(run);
        match timeout(Duration::from_secs(5), &mut run.exit).await {
            Ok(status) => status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)),
            Err(_) => {
                tracing::error!(service = %self.name, pid = run.pid, "still alive 5 s after SIGKILL");
                ExitStatus::Signal(libc::SIGKILL)
            }
        }
    }

    /// Kill whatever is left of a run's process tree and release its cgroup.
    pub(super) async fn cleanup(&self, mut run: RunHandles) {
        // No `on_rotate` may reach the group once its process is gone (the pid can be
        // reused).
        if let Some(routes) = &mut run.routes {
            routes.stop_rotation().await;
        }
        self.kill_tree(&run);
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let busy = self.shared.spawner.group_exists(run.pid)
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
        // Nothing of the run is left to use its capabilities: they go now.
        if let Some(routes) = run.routes.take() {
            routes.end().await;
        }
        if let Some(g) = &self.shared.orphans {
            g.forget_group(run.pid);
        }
        if let Some(cg) = &run.cgroup {
            prepare::forget_cgroup(&self.shared, cg);
            if let Err(e) = cg.remove() {
                tracing::debug!(service = %self.name, error = %e, "cgroup not removed");
            }
        }
        if let Some(socket) = self
            .spec()
            .and_then(|s| s.socket_path(&self.shared.runtime_dir))
        {
            prepare::remove_stale_socket(&socket);
        }
    }

    /// Stop a run on purpose (stop signal, drain, SIGKILL) and record it Stopped.
    pub(super) async fn stop_run(&self, mut run: Run, drain: Duration, reason: &StopReason) {
        let status = self.terminate(&mut run.handles, &run.spec, drain).await;
        self.cleanup(run.handles).await;
        self.note(format!("stopped: {status}"));
        self.mark_stopped(reason, Some(status));
    }

    /// The run is over without anyone asking: record it, then apply the restart policy
    /// and the crash history.
    pub(super) async fn after_exit(&mut self, spec: &ServiceSpec, end: RunEnd) -> Next {
        let RunEnd {
            handles,
            status,
            ending,
            healthy_for,
            reply,
        } = end;
        if let Some(handles) = handles {
            self.cleanup(handles).await;
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

    /// SIGKILL the run's process group and cgroup.
    fn kill_tree(&self, run: &RunHandles) {
        self.shared.spawner.signal_group(run.pid, libc::SIGKILL);
        if let Some(cg) = &run.cgroup {
            cg.kill_all();
        }
    }
}
