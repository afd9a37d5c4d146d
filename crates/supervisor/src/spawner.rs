//! How a run starts its process and signals it: through [`Spawner`], so the lifecycle in
//! `service.rs` runs the same against real processes (the [`Reaper`]) and, in its unit
//! tests, against scripted exits.

use crate::process::{self, ExitStatus, SpawnError, SpawnPlan, Spawned};
use crate::reaper::Reaper;
use tokio::sync::oneshot;

/// Starts service processes and signals their process groups.
pub(crate) trait Spawner: Send + Sync {
    /// Start the process `plan` describes; the receiver gets its exit status.
    fn spawn(
        &self,
        plan: SpawnPlan,
    ) -> Result<(Spawned, oneshot::Receiver<ExitStatus>), SpawnError>;

    /// Send `sig` to the process group `pgid`; false if there is no such group.
    fn signal_group(&self, pgid: i32, sig: i32) -> bool;

    /// Whether the process group `pgid` still has members.
    fn group_exists(&self, pgid: i32) -> bool {
        self.signal_group(pgid, 0)
    }
}

impl Spawner for Reaper {
    fn spawn(
        &self,
        plan: SpawnPlan,
    ) -> Result<(Spawned, oneshot::Receiver<ExitStatus>), SpawnError> {
        Reaper::spawn(self, plan)
    }

    fn signal_group(&self, pgid: i32, sig: i32) -> bool {
        process::signal_group(pgid, sig)
    }
}
