//! `supervisor.svc.status`: one service in detail, for `strata-ctl svc status NAME`;
//! `supervisor.svc.caps`: the capabilities routed to its current run.
//!
//! Open like `svc.list`, except the manifest's `exec` and `args`: arguments can carry
//! secrets (`--db-password=...`) and `svc.list` never shows them, so the control socket
//! (`control.rs`) keeps them only for a caller who passes the control check. The
//! service's log lines are not here: they stay behind the control check of `svc.logs`,
//! which the client calls separately.

use crate::error::ControlError;
use crate::shared::{unix_secs, LastExit};
use crate::supervisor::Supervisor;
use serde_json::Value;
use std::time::SystemTime;
use strata_proto::methods::supervisor::{SvcCapsResult, SvcStatusResult};

impl Supervisor {
    /// `supervisor.svc.status`: the service's record, its definition's main lines
    /// (`exec`/`args` included: the caller strips them for one who may not control), and
    /// who depends on it. NOT_FOUND when the table has no such service.
    pub fn svc_status(&self, name: &str) -> Result<SvcStatusResult, ControlError> {
        let table = self.shared.table();
        let rec = table
            .services
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        let dependents = table
            .order
            .iter()
            .filter(|other| {
                table
                    .services
                    .get(other.as_str())
                    .is_some_and(|r| r.spec.depends_on.iter().any(|d| d == name))
            })
            .cloned()
            .collect();
        let spec = &rec.spec;
        Ok(SvcStatusResult {
            name: name.to_owned(),
            state: rec.state,
            pid: rec.pid.map(|p| p as u32),
            since: unix_secs(rec.since),
            since_ms: unix_millis(rec.since),
            restarts: rec.restarts,
            crashes_in_window: rec.crashes.recent() as u64,
            last_exit: rec.last_exit.as_ref().map(LastExit::to_json),
            applied: rec.applied.clone(),
            exec: Some(spec.exec.clone()),
            args: Some(spec.args.clone()),
            readiness: wire_name(&spec.readiness),
            restart: wire_name(&spec.restart),
            depends_on: spec.depends_on.clone(),
            dependents,
            socket: spec
                .socket_path(&self.shared.runtime_dir)
                .map(|p| p.display().to_string()),
            log_file: self
                .shared
                .logs_dir()
                .join(format!("{name}.log"))
                .display()
                .to_string(),
            waiting: rec.waiting.clone(),
            capabilities: (!spec.capabilities.is_empty()).then_some(rec.caps.len() as u32),
        })
    }

    /// `supervisor.svc.caps`: what is routed to the service's current run, in manifest
    /// order (cap_ids, rights, constraints, times; never a token). Empty when no run
    /// holds any. NOT_FOUND when the table has no such service.
    pub fn svc_caps(&self, name: &str) -> Result<SvcCapsResult, ControlError> {
        let table = self.shared.table();
        let rec = table
            .services
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        Ok(SvcCapsResult {
            name: name.to_owned(),
            capabilities: rec.caps.clone(),
        })
    }
}

/// A manifest enum as the manifest (and `svc.list`) spells it.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
