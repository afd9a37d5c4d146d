//! [`HandleTable`]: the open files, each bound to the capability that opened it.
//!
//! A handle id is 128 random bits (32 hex digits), so ids cannot be guessed; but an id is
//! not a credential: every use must also present the capability it is bound to. The table
//! enforces four limits (per capability, per lineage, per caller and overall; see
//! [`HandleLimits`]) and hands back removed handles so the caller can audit them; a file descriptor closes when the last reference to its handle
//! drops, which is at once unless a read is in flight on it.

use crate::error::FsError;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
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
///
/// Kept small, since fs may hold 100,000 of them: with its `Arc` header it fits a 112-byte
/// allocation (a test checks), plus the path's own.
#[derive(Debug)]
pub struct OpenHandle {
    pub(crate) id: HandleId,
    pub(crate) file: File,
    /// The capability that opened it: its `jti`, `sub`, `exp` and `parents` decide who may
    /// use it and when it dies.
    pub(crate) claims: Arc<Claims>,
    /// Who opened it (for the audit summary) and whom the per-caller quota charges.
    owner: Owner,
    /// Whether the file is on a local file system, so reads and close may run inline
    /// ([`crate::blocking::is_local_fs`]).
    pub(crate) local: bool,
    /// The path as requested (relative to the prefix), for the audit summary.
    pub(crate) path: Box<str>,
    reads: AtomicU64,
    bytes: AtomicU64,
}

impl OpenHandle {
    pub(crate) fn new(
        file: File,
        claims: Arc<Claims>,
        opener: Option<PeerCred>,
        holder: Holder,
        path: String,
    ) -> Result<OpenHandle, FsError> {
        let owner = match (opener, holder) {
            (Some(peer), Holder::Uid(uid)) if peer.uid == uid => Owner::Local(peer),
            (_, holder) => Owner::Other(holder),
        };
        Ok(OpenHandle {
            id: HandleId::random()?,
            local: crate::blocking::is_local_fs(&file),
            file,
            claims,
            owner,
            path: path.into_boxed_str(),
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// The handle's id.
    pub fn id(&self) -> HandleId {
        self.id
    }

    /// The caller the handle is charged to.
    pub fn holder(&self) -> Holder {
        match &self.owner {
            Owner::Local(peer) => Holder::Uid(peer.uid),
            Owner::Other(holder) => holder.clone(),
        }
    }

    /// The kernel's credentials of the local process that opened it, if it was one.
    pub(crate) fn opener(&self) -> Option<&PeerCred> {
        match &self.owner {
            Owner::Local(peer) => Some(peer),
            Owner::Other(_) => None,
        }
    }

    /// The root of the lineage of the capability that opened it.
    pub fn lineage_root(&self) -> &CapId {
        self.claims.lineage_root()
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

/// Who opened a handle, in one field: a local caller's credentials say both who it was and
/// whom the quota charges (its uid); anyone else has only a [`Holder`]. (A caller whose
/// peer credentials and holder disagree, which [`crate::Caller::of`] never builds, is
/// charged to its holder and audited without credentials.)
#[derive(Debug)]
enum Owner {
    Local(PeerCred),
    Other(Holder),
}

/// How many handles may be open. An open must fit every one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleLimits {
    /// Per capability (`cap_id`).
    pub per_capability: usize,
    /// Per lineage: a capability and everything delegated from it, keyed by the lineage's
    /// root ([`Claims::lineage_root`]), so delegating children does not multiply the
    /// per-capability limit.
    pub per_lineage: usize,
    /// Per caller ([`Holder`]): a local uid, or a remote node by certificate name, across
    /// all the capabilities it presents, so one caller cannot take every handle.
    pub per_caller: usize,
    /// For the whole fs process.
    pub total: usize,
}

impl HandleLimits {
    /// Default for `per_capability`.
    pub const DEFAULT_PER_CAPABILITY: usize = 64;
    /// Default for `per_lineage`.
    pub const DEFAULT_PER_LINEAGE: usize = 1024;
    /// Default for `per_caller`.
    pub const DEFAULT_PER_CALLER: usize = 4096;
    /// Default for `total`.
    pub const DEFAULT_TOTAL: usize = 65_536;
}

impl Default for HandleLimits {
    fn default() -> HandleLimits {
        HandleLimits {
            per_capability: HandleLimits::DEFAULT_PER_CAPABILITY,
            per_lineage: HandleLimits::DEFAULT_PER_LINEAGE,
            per_caller: HandleLimits::DEFAULT_PER_CALLER,
            total: HandleLimits::DEFAULT_TOTAL,
        }
    }
}

/// Who holds a handle, for the per-caller quota: what the transport proves about the
/// caller, never what its token says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A local caller, by the kernel's peer credentials.
    Uid(u32),
    /// A caller over mutual TLS, by its certificate name (an `Arc`, so a handle holds a
    /// pointer, not a `String`).
    Remote(Arc<str>),
    /// No credentials known (in-process use, tests): all such callers share one quota.
    Unknown,
}

/// A handle in the table's set, found by its id (which it holds, so the set does not keep
/// a second copy of every id).
struct ById(Arc<OpenHandle>);

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The same as HandleId's, as `Borrow` requires.
        self.0.id.hash(state)
    }
}

impl Borrow<HandleId> for ById {
    fn borrow(&self) -> &HandleId {
        &self.0.id
    }
}

/// Open handles, and how many each capability, lineage and caller holds. A key with no
/// handles has no entry, so every map is bounded by the number of open handles.
#[derive(Default)]
struct Table {
    by_id: HashSet<ById>,
    per_cap: HashMap<CapId, usize>,
    per_lineage: HashMap<CapId, usize>,
    per_caller: HashMap<Holder, usize>,
}

fn count<K: std::hash::Hash + Eq>(map: &HashMap<K, usize>, key: &K) -> usize {
    map.get(key).copied().unwrap_or(0)
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Table {
    fn take(&mut self, id: &HandleId) -> Option<Arc<OpenHandle>> {
        let ById(handle) = self.by_id.take(id)?;
        release(&mut self.per_cap, &handle.claims.jti);
        release(&mut self.per_lineage, handle.lineage_root());
        release(&mut self.per_caller, &handle.holder());
        Some(handle)
    }
}

/// The open handles of one fs process.
pub struct HandleTable {
    limits: HandleLimits,
    table: Mutex<Table>,
}

impl HandleTable {
    /// An empty table with `limits`.
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

    /// The limits in force.
    pub fn limits(&self) -> HandleLimits {
        self.limits
    }

    /// Add `handle`, unless its capability, its lineage, its caller or the process is at
    /// its limit.
    pub fn insert(&self, handle: OpenHandle) -> Result<Arc<OpenHandle>, FsError> {
        let limits = self.limits;
        let mut table = self.lock();
        let cap = handle.claims.jti;
        let lineage = *handle.lineage_root();
        if count(&table.per_cap, &cap) >= limits.per_capability {
            return Err(FsError::TooManyForCapability {
                limit: limits.per_capability,
            });
        }
        if count(&table.per_lineage, &lineage) >= limits.per_lineage {
            return Err(FsError::TooManyForLineage {
                limit: limits.per_lineage,
            });
        }
        let holder = handle.holder();
        if count(&table.per_caller, &holder) >= limits.per_caller {
            return Err(FsError::TooManyForCaller {
                limit: limits.per_caller,
            });
        }
        if table.by_id.len() >= limits.total {
            return Err(FsError::TooManyOpen {
                limit: limits.total,
            });
        }
        let handle = Arc::new(handle);
        // 128 random bits: a collision is a broken random source, never two handles
        // under one id (nothing is charged for a handle that was not added).
        if !table.by_id.insert(ById(Arc::clone(&handle))) {
            return Err(FsError::Internal(std::io::Error::other(
                "a new handle id is already in use",
            )));
        }
        *table.per_cap.entry(cap).or_insert(0) += 1;
        *table.per_lineage.entry(lineage).or_insert(0) += 1;
        *table.per_caller.entry(holder).or_insert(0) += 1;
        Ok(handle)
    }

    /// The handle with this id, if open.
    pub fn get(&self, id: &HandleId) -> Option<Arc<OpenHandle>> {
        self.lock().by_id.get(id).map(|h| Arc::clone(&h.0))
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
            .iter()
            .filter(|h| dead(&h.0))
            .map(|h| h.0.id)
            .collect();
        ids.iter().filter_map(|id| table.take(id)).collect()
    }

    /// Every open handle (for a full re-check after missed revocations).
    pub fn all(&self) -> Vec<Arc<OpenHandle>> {
        self.lock().by_id.iter().map(|h| Arc::clone(&h.0)).collect()
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles open now for `cap`.
    pub fn count_for(&self, cap: &CapId) -> usize {
        count(&self.lock().per_cap, cap)
    }

    /// Handles open now for the lineage rooted at `root`.
    pub fn count_for_lineage(&self, root: &CapId) -> usize {
        count(&self.lock().per_lineage, root)
    }

    /// Handles open now for `holder`.
    pub fn count_for_caller(&self, holder: &Holder) -> usize {
        count(&self.lock().per_caller, holder)
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
        OpenHandle::new(file, Arc::clone(c), None, Holder::Unknown, "f".into()).unwrap()
    }

    #[test]
    fn a_handle_fits_a_112_byte_allocation() {
        // glibc adds 8 bytes to a request and rounds to 16: 104 bytes is a 112-byte chunk.
        let with_counts = std::mem::size_of::<OpenHandle>() + 2 * std::mem::size_of::<usize>();
        assert!(with_counts <= 104, "{with_counts} bytes");
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
            ..HandleLimits::default()
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
