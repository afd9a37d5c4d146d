//! [`HandleTable`]: the open files, each bound to the capability that opened it.
//!
//! A handle id is 128 random bits (32 hex digits), so ids cannot be guessed; but an id is
//! not a credential: every use must also present the capability it is bound to. The table
//! enforces two limits, per capability and overall, and hands back removed handles so the
//! caller can audit them; a file descriptor closes when the last reference to its handle
//! drops, which is at once unless a read is in flight on it.

use crate::error::FsError;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use strata_cap::{CapId, Claims, Timestamp};
use strata_ipc::PeerCred;

/// An open handle's id: 16 random bytes, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId([u8; 16]);

impl HandleId {
    fn random() -> Result<HandleId, FsError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| FsError::Internal(std::io::Error::other(e.to_string())))?;
        Ok(HandleId(bytes))
    }

    /// The id in `text`, if it is one this table could have issued.
    pub fn parse(text: &str) -> Option<HandleId> {
        let cap: CapId = text.parse().ok()?;
        Some(HandleId(*cap.as_bytes()))
    }

    /// The first 8 hex digits, enough to correlate audit lines without writing out ids.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }
}

impl fmt::Display for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Same 32-hex-digit form as a cap id.
        fmt::Display::fmt(&CapId::from_bytes(self.0), f)
    }
}

impl fmt::Debug for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleId({})", self.short())
    }
}

/// An open regular file and what it is bound to.
#[derive(Debug)]
pub struct OpenHandle {
    pub(crate) id: HandleId,
    pub(crate) file: File,
    /// The capability that opened it: its `jti`, `sub`, `exp` and `parents` decide who may
    /// use it and when it dies.
    pub(crate) claims: Arc<Claims>,
    /// Who opened it, for the audit summary.
    pub(crate) opener: Option<PeerCred>,
    /// The path as requested (relative to the prefix), for the audit summary.
    pub(crate) path: String,
    reads: AtomicU64,
    bytes: AtomicU64,
}

impl OpenHandle {
    pub(crate) fn new(
        file: File,
        claims: Arc<Claims>,
        opener: Option<PeerCred>,
        path: String,
    ) -> Result<OpenHandle, FsError> {
        Ok(OpenHandle {
            id: HandleId::random()?,
            file,
            claims,
            opener,
            path,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn id(&self) -> HandleId {
        self.id
    }

    /// Count one read of `bytes` bytes.
    pub(crate) fn note_read(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// (reads, bytes) so far.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Whether the capability `claims` may use this handle: same `cap_id`, same subject.
    pub(crate) fn is_owned_by(&self, claims: &Claims) -> bool {
        self.claims.jti == claims.jti && self.claims.sub == claims.sub
    }

    /// Whether revoking `cap` kills this handle: it is the handle's capability or one of
    /// its ancestors.
    pub(crate) fn dies_with(&self, cap: &CapId) -> bool {
        self.claims.jti == *cap || self.claims.parents.contains(cap)
    }

    pub(crate) fn expired_at(&self, now: Timestamp) -> bool {
        now >= self.claims.exp
    }
}

/// How many handles may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleLimits {
    /// Per capability (`cap_id`).
    pub per_capability: usize,
    /// For the whole fs process.
    pub total: usize,
}

impl HandleLimits {
    pub const DEFAULT_PER_CAPABILITY: usize = 64;
    pub const DEFAULT_TOTAL: usize = 65_536;
}

impl Default for HandleLimits {
    fn default() -> HandleLimits {
        HandleLimits {
            per_capability: HandleLimits::DEFAULT_PER_CAPABILITY,
            total: HandleLimits::DEFAULT_TOTAL,
        }
    }
}

#[derive(Default)]
struct Table {
    by_id: HashMap<HandleId, Arc<OpenHandle>>,
    per_cap: HashMap<CapId, usize>,
}

impl Table {
    fn take(&mut self, id: &HandleId) -> Option<Arc<OpenHandle>> {
        let handle = self.by_id.remove(id)?;
        if let Some(n) = self.per_cap.get_mut(&handle.claims.jti) {
            *n -= 1;
            if *n == 0 {
                self.per_cap.remove(&handle.claims.jti);
            }
        }
        Some(handle)
    }
}

/// The open handles of one fs process.
pub struct HandleTable {
    limits: HandleLimits,
    table: Mutex<Table>,
}

impl HandleTable {
    pub fn new(limits: HandleLimits) -> HandleTable {
        HandleTable {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every critical section leaves the maps consistent before it can panic.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limits(&self) -> HandleLimits {
        self.limits
    }

    /// Add `handle`, unless its capability or the process is at its limit.
    pub fn insert(&self, handle: OpenHandle) -> Result<Arc<OpenHandle>, FsError> {
        let mut table = self.lock();
        if table.by_id.len() >= self.limits.total {
            return Err(FsError::TooManyOpen {
                limit: self.limits.total,
            });
        }
        let cap = handle.claims.jti;
        let held = table.per_cap.get(&cap).copied().unwrap_or(0);
        if held >= self.limits.per_capability {
            return Err(FsError::TooManyForCapability {
                limit: self.limits.per_capability,
            });
        }
        let handle = Arc::new(handle);
        table.per_cap.insert(cap, held + 1);
        table.by_id.insert(handle.id, Arc::clone(&handle));
        Ok(handle)
    }

    /// The handle with this id, if open.
    pub fn get(&self, id: &HandleId) -> Option<Arc<OpenHandle>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Remove the handle with this id.
    pub fn remove(&self, id: &HandleId) -> Option<Arc<OpenHandle>> {
        self.lock().take(id)
    }

    /// Remove every handle for which `dead` holds.
    pub fn remove_where(&self, dead: impl Fn(&OpenHandle) -> bool) -> Vec<Arc<OpenHandle>> {
        let mut table = self.lock();
        let ids: Vec<HandleId> = table
            .by_id
            .values()
            .filter(|h| dead(h))
            .map(|h| h.id)
            .collect();
        ids.iter().filter_map(|id| table.take(id)).collect()
    }

    /// Every open handle (for a full re-check after missed revocations).
    pub fn all(&self) -> Vec<Arc<OpenHandle>> {
        self.lock().by_id.values().cloned().collect()
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles open now for `cap`.
    pub fn count_for(&self, cap: &CapId) -> usize {
        self.lock().per_cap.get(cap).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: u8, parents: &[u8]) -> Arc<Claims> {
        Arc::new(Claims {
            jti: CapId::from_bytes([jti; 16]),
            sub: "uid:1".into(),
            iss: "identity@test".into(),
            aud: "strata".into(),
            iat: Timestamp::from_unix_seconds(0),
            exp: Timestamp::from_unix_seconds(100),
            nbf: None,
            service: "fs".into(),
            actions: vec![],
            rights: vec![],
            constraints: Default::default(),
            parents: parents
                .iter()
                .map(|p| CapId::from_bytes([*p; 16]))
                .collect(),
        })
    }

    fn handle(c: &Arc<Claims>) -> OpenHandle {
        let file = tempfile::tempfile().unwrap();
        OpenHandle::new(file, Arc::clone(c), None, "f".into()).unwrap()
    }

    #[test]
    fn ids_are_random_hex_and_parse_back() {
        let c = claims(1, &[]);
        let a = handle(&c);
        let b = handle(&c);
        assert_ne!(a.id, b.id);
        let text = a.id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(HandleId::parse(&text), Some(a.id));
        assert_eq!(HandleId::parse("h1"), None);
        assert_eq!(a.id.short().len(), 8);
    }

    #[test]
    fn limits_per_capability_and_in_total() {
        let table = HandleTable::new(HandleLimits {
            per_capability: 2,
            total: 3,
        });
        let (a, b) = (claims(1, &[]), claims(2, &[]));
        table.insert(handle(&a)).unwrap();
        let second = table.insert(handle(&a)).unwrap();
        assert!(matches!(
            table.insert(handle(&a)),
            Err(FsError::TooManyForCapability { limit: 2 })
        ));
        table.insert(handle(&b)).unwrap();
        assert!(matches!(
            table.insert(handle(&b)),
            Err(FsError::TooManyOpen { limit: 3 })
        ));
        assert_eq!(table.count_for(&a.jti), 2);
        table.remove(&second.id).unwrap();
        assert_eq!(table.count_for(&a.jti), 1);
        table.insert(handle(&a)).unwrap();
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn revoking_an_ancestor_removes_descendants_handles() {
        let table = HandleTable::new(HandleLimits::default());
        let root = claims(1, &[]);
        let child = claims(2, &[1]);
        let other = claims(3, &[]);
        for c in [&root, &child, &other] {
            table.insert(handle(c)).unwrap();
        }
        let gone = table.remove_where(|h| h.dies_with(&root.jti));
        assert_eq!(gone.len(), 2);
        assert_eq!(table.len(), 1);
        assert_eq!(table.count_for(&root.jti), 0);
        assert_eq!(table.count_for(&child.jti), 0);
        assert_eq!(table.count_for(&other.jti), 1);
    }
}
