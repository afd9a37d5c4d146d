//! A run's routed capabilities in its lifecycle: obtained in `Starting` before anything
//! else is prepared, waiting there (with `waiting` saying why, and answering commands)
//! while identity cannot hand them out yet ([`ObtainError::Retry`]), and handed to the
//! child as `CREDENTIALS_DIRECTORY`. A permanent refusal ([`ObtainError::Refused`]:
//! identity answered INVALID_ARGUMENT or PERMISSION_DENIED) is a start failure like a
//! spawn that failed: the restart policy, backoff and quarantine decide what follows, so a
//! bad entry is not asked for (and its siblings issued and revoked) forever. They are
//! revoked when the run's handles are cleaned up (`ending.rs`), whichever way the run ends.

use super::ending::RunEnd;
use super::{Next, ServiceRunner};
use crate::command::{Command, Reply};
use crate::error::ControlError;
use crate::manifest::capability::IDENTITY;
use crate::manifest::ServiceSpec;
use crate::process::{self, SpawnPlan};
use crate::routing::credentials::Owner;
use crate::routing::{ObtainError, Routes};
use std::time::Duration;
use strata_proto::methods::supervisor::SvcState;

/// The first wait before asking identity again; it doubles up to [`WAIT_MAX`], and a
/// change of identity's state asks at once.
const WAIT_MIN: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
const WAIT_MAX: Duration = Duration::from_secs(5);

impl ServiceRunner {
    /// The capabilities `spec` declares, obtained and written (`None` when it declares
    /// none). While identity does not give them, the run waits in Starting, `waiting`
    /// saying why, and answers commands: `Err` is the phase a stop or retire leads to (or
    /// the restart policy, when the service's user cannot be resolved).
    pub(super) async fn obtain_routes(
        &mut self,
        spec: &ServiceSpec,
        reply: &mut Option<Reply>,
    ) -> Result<Option<Routes>, Next> {
        if spec.capabilities.is_empty() {
            return Ok(None);
        }
        let owner = match process::resolve_credentials(spec.user.as_deref(), spec.group.as_deref())
        {
            Ok(Some(c)) => Owner {
                uid: c.uid,
                gid: c.gid,
            },
            Ok(None) => Owner::current(),
            Err(e) => {
                let end = RunEnd::spawn_failed(e.to_string(), reply.take());
                return Err(self.after_exit(spec, end).await);
            }
        };
        let mut changed = self.shared.changed.subscribe();
        let mut delay = WAIT_MIN;
        let mut told: Option<String> = None;
        // Shown while the first attempt is under way (it may take up to identity's call
        // timeout per capability), so `svc status` never shows a silent Starting.
        self.set_waiting(Some(OBTAINING.to_owned()));
        loop {
            match Routes::obtain(&self.shared, spec, owner).await {
                Ok(routes) => {
                    self.set_waiting(None);
                    if told.is_some() {
                        self.note("identity answered: capabilities obtained".to_owned());
                    }
                    return Ok(Some(routes));
                }
                Err(ObtainError::Refused(why)) => {
                    // Asking again gets the same answer: a start failure, which the
                    // restart policy (backoff, quarantine) handles like a failed spawn.
                    self.set_waiting(None);
                    let why = format!("capabilities refused: {why}");
                    tracing::warn!(service = %self.name, reason = %why, "capabilities refused; the start failed");
                    let end = RunEnd::spawn_failed(why, reply.take());
                    return Err(self.after_exit(spec, end).await);
                }
                Err(ObtainError::Retry(why)) => {
                    let reason = waiting_reason(&why);
                    if told.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(service = %self.name, reason = %reason, "capabilities not obtained; retrying");
                        self.note(reason.clone());
                    }
                    self.set_waiting(Some(reason.clone()));
                    told = Some(reason);
                }
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    r = changed.changed() => {
                        if r.is_ok() && self.shared.state_of(IDENTITY) == Some(SvcState::Healthy) {
                            break;
                        }
                    }
                    cmd = self.rx.recv() => {
                        if let Some(Command::Start { reply: r, .. }) = cmd {
                            let _ = r.send(Err(ControlError::AlreadyRunning {
                                name: self.name.clone(),
                                state: SvcState::Starting,
                            }));
                            continue;
                        }
                        // Stop, retire, or the service forgotten: no run to end.
                        if let Some(r) = reply.take() {
                            let _ = r.send(Err(ControlError::StartFailed {
                                name: self.name.clone(),
                                reason: "stopped while waiting for identity".to_owned(),
                            }));
                        }
                        self.set_waiting(None);
                        if let Some(next) = self.on_command_idle(cmd).await {
                            return Err(next);
                        }
                    }
                }
            }
            delay = (delay * 2).min(WAIT_MAX);
        }
    }

    /// Show (or clear) why the run waits.
    fn set_waiting(&self, why: Option<String>) {
        let changed = {
            let mut table = self.shared.table();
            match table.services.get_mut(&self.name) {
                Some(rec) if rec.waiting != why => {
                    rec.waiting = why;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.shared.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// `waiting` while the first attempt to obtain a run's capabilities is under way.
const OBTAINING: &str = "waiting for identity: obtaining capabilities";

/// What `waiting` says for a failure worth retrying: "waiting for identity: ..." when it
/// is identity that does not answer, "waiting: ..." when it is the supervisor's own work
/// (its credentials directory or files: "cannot ...") that failed.
fn waiting_reason(why: &str) -> String {
    if why.starts_with("cannot ") {
        format!("waiting: {why}")
    } else {
        format!("waiting for identity: {why}")
    }
}

/// Tell the child where its credentials are, as systemd does (`CREDENTIALS_DIRECTORY`),
/// over anything the manifest's `env` said.
pub(super) fn hand_over(plan: &mut SpawnPlan, routes: &Routes) {
    if let Some(dir) = routes.dir() {
        plan.env.retain(|(k, _)| k != "CREDENTIALS_DIRECTORY");
        plan.env
            .push(("CREDENTIALS_DIRECTORY".into(), dir.display().to_string()));
    }
}

/// The spec a run is prepared from: a service confined by Landlock may also read its
/// credentials directory (a rule on the directory, so the files that replace its
/// tokens at a rotation are covered too). Nothing else is widened.
pub(super) fn readable_credentials<'a>(
    spec: &'a ServiceSpec,
    routes: Option<&Routes>,
) -> std::borrow::Cow<'a, ServiceSpec> {
    match (
        routes.and_then(Routes::dir),
        spec.sandbox.landlock.is_some(),
    ) {
        (Some(dir), true) => {
            let mut spec = spec.clone();
            if let Some(rules) = spec.sandbox.landlock.as_mut() {
                rules.read.push(dir);
            }
            std::borrow::Cow::Owned(spec)
        }
        _ => std::borrow::Cow::Borrowed(spec),
    }
}
