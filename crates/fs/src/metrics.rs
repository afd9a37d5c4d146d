//! fs's own metrics for `sys.metrics`: open handles, bytes read, denials. The counters
//! are bumped where the event happens (`FsService::read` for bytes, `FsService::audit_denial`
//! for denials, the one place every refusal is audited); handles are counted at snapshot
//! time from the handle table.

use crate::service::FsService;
use strata_ipc::metrics::{Counter, Snapshot};

/// What fs counts as it serves.
#[derive(Debug, Default)]
pub(crate) struct FsMetrics {
    /// Bytes answered by `fs.read`.
    pub bytes_read: Counter,
    /// Requests refused and audited as `auth.denied`.
    pub denied: Counter,
}

/// fs's families, appended to the router's request families.
pub(crate) fn report(fs: &FsService, snap: &mut Snapshot) {
    snap.gauge(
        "strata_fs_open_handles",
        "Open file handles (fs.open minus closes, revocations and expiries).",
        fs.handles().len() as f64,
    )
    .counter(
        "strata_fs_read_bytes_total",
        "Bytes of file data answered by fs.read.",
        fs.metrics.bytes_read.get(),
    )
    .counter(
        "strata_fs_denied_total",
        "Requests fs refused and audited as auth.denied (bad token, missing right, outside the prefix, quota).",
        fs.metrics.denied.get(),
    )
    .gauge(
        "strata_fs_file_ops_in_flight",
        "File operations running on the bounded blocking pool.",
        fs.blocking().in_flight() as f64,
    );
}
