//! The one place that waits for child processes.
//!
//! The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): descendants that a
//! service leaves behind are re-parented to it rather than to init, and reaped here. On
//! every SIGCHLD (and once a second, in case a signal was coalesced away) the reaper calls
//! `waitpid(-1, WNOHANG)` until nothing is left; a pid that belongs to a service run is
//! reported to that run, any other is simply reaped so no zombie remains.
//!
//! Spawning goes through [`Reaper::spawn`], which holds the table while forking, so a
//! child that exits at once cannot be reaped before its run is listening for it.

// Unsafe: waitpid(-1, WNOHANG) and prctl(PR_SET_CHILD_SUBREAPER), which std does not
// offer (std::process only waits for children it spawned itself).
#![allow(unsafe_code)]

use crate::process::{self, ExitStatus, SpawnError, SpawnPlan, Spawned};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Reaps every child and reports the exits of service runs.
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Become a subreaper and start reaping. Must be called inside the Tokio runtime,
    /// before the first spawn.
    pub fn start() -> io::Result<Arc<Reaper>> {
        // SAFETY: prctl with an integer flag; no pointers involved.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_CHILD_SUBREAPER,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot become a child subreaper");
        }
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
        });
        let r = Arc::clone(&reaper);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                r.reap();
            }
        });
        Ok(reaper)
    }

    /// Spawn `plan`; the receiver gets the exit status when the process ends.
    pub fn spawn(
        &self,
        plan: SpawnPlan,
    ) -> Result<(Spawned, oneshot::Receiver<ExitStatus>), SpawnError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let spawned = process::spawn(plan)?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(spawned.pid, tx);
        Ok((spawned, rx))
    }

    /// Reap every child that has exited.
    pub fn reap(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let exit = ExitStatus::from_wait_status(status);
            match waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid, %exit, "reaped a descendant"),
            }
        }
    }
}
