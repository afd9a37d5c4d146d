//! [`FsService`]: the state fs serves from (export roots, open handles, audit log) and the
//! bookkeeping that keeps handles honest: closing them when their capability is revoked or
//! expires, and auditing each one's reads as a summary when it goes.
//!
//! The methods themselves live one per file (`open.rs`, `read.rs`, `list.rs`, `stat.rs`).
//! Each takes a [`Caller`] whose claims were already verified and authorized for that
//! method by the guard; this crate never checks a token itself.

use crate::blocking::{BlockingLimits, BlockingPool};
use crate::error::FsError;
use crate::handles::{HandleLimits, HandleTable, Holder, OpenHandle};
use crate::roots::ExportRoots;
use rustix::fd::OwnedFd;
use serde_json::json;
use std::sync::Arc;
use strata_audit::Audit;
use strata_cap::{CapId, Claims, Clock, SystemClock};
use strata_ipc::PeerCred;

/// Reads up to this size of a handle on a local file system run inline.
pub(crate) const INLINE_READ_MAX: u64 = 64 * 1024;

/// Whether a capability has been revoked (it or any ancestor). Implemented by the guard in
/// production and by a plain set in tests.
pub trait RevocationCheck: Send + Sync {
    /// Whether `claims` (or an ancestor) is revoked.
    fn is_revoked(&self, claims: &Claims) -> bool;
}

/// Who is asking: verified, authorized claims and the kernel's word on the process.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The verified claims of the caller's token.
    pub claims: Arc<Claims>,
    /// Kernel credentials of a local caller; `None` over TCP (and in tests).
    pub peer: Option<PeerCred>,
    /// A caller over mutual TLS: its certificate name and address, for the audit log.
    pub remote: Option<String>,
    /// Who the per-caller quotas charge: the local uid, or the remote certificate name.
    pub holder: Holder,
}

impl Caller {
    /// A caller with `claims`, local (`peer`) or of unknown origin.
    pub fn new(claims: Arc<Claims>, peer: Option<PeerCred>) -> Caller {
        Caller {
            claims,
            peer,
            remote: None,
            holder: peer.map_or(Holder::Unknown, |p| Holder::Uid(p.uid)),
        }
    }

    /// The caller of `call`, as the kernel or its certificate tells.
    pub fn of(claims: Arc<Claims>, call: &strata_ipc::Call) -> Caller {
        let peer = call.local_peer().copied();
        let holder = match call.origin() {
            strata_ipc::Origin::Local(p) => Holder::Uid(p.uid),
            strata_ipc::Origin::Remote(r) => Holder::Remote(r.name.as_str().into()),
        };
        Caller {
            claims,
            peer,
            remote: call.remote_peer().map(|r| format!("{}@{}", r.name, r.addr)),
            holder,
        }
    }
}

/// Why a handle went away, as written in its audit summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `fs.close`.
    Closed,
    /// Its capability, or an ancestor, was revoked.
    Revoked,
    /// Its capability expired.
    Expired,
    /// fs is stopping.
    Shutdown,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::Revoked => "revoked",
            CloseReason::Expired => "expired",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// The fs service's state. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct FsService {
    pub(crate) roots: ExportRoots,
    pub(crate) handles: HandleTable,
    pub(crate) audit: Audit,
    pub(crate) revocations: Arc<dyn RevocationCheck>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where the file work of requests runs (off the async workers, bounded).
    pub(crate) blocking: BlockingPool,
    /// What `sys.metrics` reports of fs's own work.
    pub(crate) metrics: crate::metrics::FsMetrics,
}

impl FsService {
    /// An fs over `roots`, with the system clock.
    pub fn new(
        roots: ExportRoots,
        limits: HandleLimits,
        audit: Audit,
        revocations: Arc<dyn RevocationCheck>,
    ) -> FsService {
        FsService::with_clock(
            roots,
            limits,
            audit,
            revocations,
            Arc::new(SystemClock::new()),
        )
    }

    /// An fs whose idea of "now" (for handle expiry) comes from `clock`.
    pub fn with_clock(
        roots: ExportRoots,
        limits: HandleLimits,
        audit: Audit,
        revocations: Arc<dyn RevocationCheck>,
        clock: Arc<dyn Clock>,
    ) -> FsService {
        FsService {
            roots,
            handles: HandleTable::new(limits),
            audit,
            revocations,
            clock,
            blocking: BlockingPool::new(BlockingLimits::default()),
            metrics: Default::default(),
        }
    }

    /// The same fs with other bounds on file work in flight.
    pub fn with_blocking_limits(mut self, limits: BlockingLimits) -> FsService {
        self.blocking = BlockingPool::new(limits);
        self
    }

    /// The pool file work runs on.
    pub fn blocking(&self) -> &BlockingPool {
        &self.blocking
    }

    /// Whether a read of `size` bytes (0 for a close) from the handle named `text` may run
    /// on the async worker: small, and on a local file system (see [`crate::blocking`]).
    /// Anything else, an unknown handle included, goes to the blocking pool.
    pub(crate) fn runs_inline(&self, text: &str, size: u64) -> bool {
        size <= INLINE_READ_MAX
            && crate::handles::HandleId::parse(text)
                .and_then(|id| self.handles.get(&id))
                .is_some_and(|h| h.local)
    }

    /// The export roots.
    pub fn roots(&self) -> &ExportRoots {
        &self.roots
    }

    /// The open handles.
    pub fn handles(&self) -> &HandleTable {
        &self.handles
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The directory handle for the caller's `path_prefix`; a token without one is refused.
    pub(crate) fn prefix_dir(&self, caller: &Caller) -> Result<OwnedFd, FsError> {
        let prefix = caller.claims.path_prefix().ok_or(FsError::NoPrefix)?;
        self.roots.open_prefix(prefix)
    }

    /// Close and audit every handle of `cap` and of capabilities delegated from it.
    /// Returns how many were closed.
    pub fn revoke(&self, cap: &CapId) -> usize {
        let gone = self.handles.remove_where(|h| h.dies_with(cap));
        self.summarise(&gone, CloseReason::Revoked)
    }

    /// Close every handle whose capability the revocation check now reports revoked (after
    /// revocation notices may have been missed).
    pub fn recheck_revocations(&self) -> usize {
        let revocations = &self.revocations;
        let gone = self
            .handles
            .remove_where(|h| revocations.is_revoked(&h.claims));
        self.summarise(&gone, CloseReason::Revoked)
    }

    /// Close every handle whose capability has expired. Returns how many.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let gone = self.handles.remove_where(|h| h.expired_at(now));
        self.summarise(&gone, CloseReason::Expired)
    }

    /// Close every handle (fs is stopping), auditing each.
    pub fn close_all(&self) -> usize {
        let gone = self.handles.remove_where(|_| true);
        self.summarise(&gone, CloseReason::Shutdown)
    }

    /// One `fs.read` audit line per handle that went away: how often and how much it was
    /// read, and why it closed.
    pub(crate) fn summarise(&self, gone: &[Arc<OpenHandle>], reason: CloseReason) -> usize {
        for handle in gone {
            let (reads, bytes) = handle.usage();
            self.audit.record(
                "fs.read",
                handle.opener(),
                json!({
                    "cap_id": handle.claims.jti.to_string(),
                    "sub": handle.claims.sub,
                    "handle": handle.id.short(),
                    "path": handle.path,
                    "reads": reads,
                    "bytes": bytes,
                    "closed_by": reason.as_str(),
                }),
            );
        }
        gone.len()
    }

    /// Audit a refused request. Every denial is recorded: refusals by the guard (bad,
    /// expired or revoked token, missing right, rate limit) and by fs (paths out of the
    /// prefix, foreign handles, limits).
    /// Records a refused request. A caller over TCP has no kernel credentials: it is
    /// recorded by its certificate name and address instead.
    pub fn audit_denial(
        &self,
        call: &strata_ipc::Call,
        claims: Option<&Claims>,
        error: &strata_proto::ErrorBody,
    ) {
        self.metrics.denied.inc();
        self.audit.record_denial(
            call,
            claims.map(|c| (c.jti.to_string(), c.sub.clone())),
            error,
        );
    }
}
