//! [`BlockingPool`]: where fs's file work runs. Every `open`, `read`, `list`, `stat` and
//! `close` can block in the kernel for as long as the file system likes (a hung FUSE or
//! NFS mount blocks `open(2)` and `read(2)` indefinitely; `close(2)` flushes on NFS), so
//! none of it runs on the async workers, of which fs has two: it runs on Tokio's blocking
//! threads, and this pool bounds how many of those a caller, and everyone, may hold.
//!
//! One exception keeps the common case cheap: a read of at most 64 KiB, or a close, of a
//! handle whose file is on a local disk or memory file system ([`is_local_fs`], decided
//! once at open) runs inline: it cannot hang on a server, and the thread hop would cost
//! more than the read. Listings of small directories beneath a local export root with
//! nothing mounted beneath it run inline as well ([`crate::FsService::list_json_inline`]).
//!
//! A call that would take a caller past [`BlockingLimits::per_caller`] is refused at once
//! (RESOURCE_EXHAUSTED): a caller whose calls are stuck cannot queue more behind them. Past
//! [`BlockingLimits::total`] a call waits up to [`BlockingLimits::queue_wait`] for a slot,
//! then is refused the same way. A slot is held until the file work itself returns, not
//! until the request is answered or abandoned, so stuck threads stay counted.

use crate::error::FsError;
use crate::handles::Holder;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How much file work may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockingLimits {
    /// Calls in flight for the whole process.
    pub total: usize,
    /// Calls in flight for one caller ([`Holder`]).
    pub per_caller: usize,
    /// How long a call waits for a slot when `total` are in flight.
    pub queue_wait: Duration,
}

impl BlockingLimits {
    /// Default for `total`.
    pub const DEFAULT_TOTAL: usize = 128;
    /// Default for `per_caller`.
    pub const DEFAULT_PER_CALLER: usize = 16;
    /// Default for `queue_wait`.
    pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(1);
}

impl Default for BlockingLimits {
    fn default() -> BlockingLimits {
        BlockingLimits {
            total: BlockingLimits::DEFAULT_TOTAL,
            per_caller: BlockingLimits::DEFAULT_PER_CALLER,
            queue_wait: BlockingLimits::DEFAULT_QUEUE_WAIT,
        }
    }
}

/// Runs file work on blocking threads, within [`BlockingLimits`].
pub struct BlockingPool {
    limits: BlockingLimits,
    slots: Arc<Semaphore>,
    /// Calls in flight per caller; a caller with none has no entry, so the map holds at
    /// most `total` entries.
    per_caller: Arc<Mutex<HashMap<Holder, usize>>>,
}

impl BlockingPool {
    /// A pool with `limits` (each at least 1).
    pub fn new(limits: BlockingLimits) -> BlockingPool {
        let limits = BlockingLimits {
            total: limits.total.clamp(1, Semaphore::MAX_PERMITS),
            per_caller: limits.per_caller.max(1),
            queue_wait: limits.queue_wait,
        };
        BlockingPool {
            limits,
            slots: Arc::new(Semaphore::new(limits.total)),
            per_caller: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> BlockingLimits {
        self.limits
    }

    /// Calls in flight now (for `sys.health`).
    pub fn in_flight(&self) -> usize {
        self.limits.total - self.slots.available_permits()
    }

    /// Run `work` on a blocking thread for `holder`, once it has a slot.
    pub async fn run<R, W>(&self, holder: &Holder, work: W) -> Result<R, FsError>
    where
        R: Send + 'static,
        W: FnOnce() -> Result<R, FsError> + Send + 'static,
    {
        let busy = || FsError::TooBusy {
            per_caller: self.limits.per_caller,
        };
        let caller_slot =
            CallerSlot::take(&self.per_caller, holder, self.limits.per_caller).ok_or_else(busy)?;
        let slot = tokio::time::timeout(
            self.limits.queue_wait,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| FsError::Internal(std::io::Error::other("the blocking pool is closed")))?;
        tokio::task::spawn_blocking(move || {
            // Both slots are released when the work returns, however long that takes.
            let _held = (slot, caller_slot);
            work()
        })
        .await
        .map_err(|e| FsError::Internal(std::io::Error::other(e.to_string())))?
    }
}

/// Whether `fd` lives on a local disk or memory file system, whose reads and closes of an
/// open file return promptly (from the page cache, or after one disk access): ext2/3/4,
/// XFS, Btrfs, F2FS, tmpfs, ramfs, overlayfs. Everything else (NFS, CIFS, FUSE, 9p, Ceph,
/// unknown) may block indefinitely and is never worked on inline.
pub fn is_local_fs(fd: impl rustix::fd::AsFd) -> bool {
    const LOCAL: [u64; 8] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0xF2F5_2010, // F2FS
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
        0x794C_7630, // overlayfs
        0x2FC1_2FC1, // ZFS
    ];
    rustix::fs::fstatfs(fd).is_ok_and(|s| LOCAL.contains(&(s.f_type as u64)))
}

/// One call in flight for one caller; released on drop.
struct CallerSlot {
    map: Arc<Mutex<HashMap<Holder, usize>>>,
    holder: Holder,
}

fn lock(map: &Mutex<HashMap<Holder, usize>>) -> MutexGuard<'_, HashMap<Holder, usize>> {
    // Every critical section leaves the map consistent.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl CallerSlot {
    fn take(
        map: &Arc<Mutex<HashMap<Holder, usize>>>,
        holder: &Holder,
        max: usize,
    ) -> Option<CallerSlot> {
        let mut counts = lock(map);
        let n = counts.entry(holder.clone()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(CallerSlot {
            map: Arc::clone(map),
            holder: holder.clone(),
        })
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.map);
        if let Some(n) = counts.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(total: usize, per_caller: usize) -> Arc<BlockingPool> {
        Arc::new(BlockingPool::new(BlockingLimits {
            total,
            per_caller,
            queue_wait: Duration::from_millis(50),
        }))
    }

    /// Start a call for `holder` that blocks until the returned sender is dropped; wait
    /// until it holds its slot.
    async fn stuck(pool: &Arc<BlockingPool>, holder: Holder) -> mpsc::Sender<()> {
        let (release, wait) = mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let p = Arc::clone(pool);
        tokio::spawn(async move {
            let _ = p
                .run(&holder, move || {
                    let _ = started_tx.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await;
        });
        started.await.unwrap();
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_is_bounded_and_others_are_not_held_up() {
        let pool = pool(8, 2);
        let a = Holder::Uid(1000);
        let _s1 = stuck(&pool, a.clone()).await;
        let _s2 = stuck(&pool, a.clone()).await;
        let over = pool.run(&a, || Ok(())).await.unwrap_err();
        assert_eq!(over.code(), strata_proto::ErrorCode::ResourceExhausted);
        assert_eq!(pool.run(&Holder::Uid(1001), || Ok(7)).await.unwrap(), 7);
        assert_eq!(pool.in_flight(), 2);
        drop(_s1);
        // The slot comes back once the work itself has returned.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while pool.run(&a, || Ok(())).await.is_err() {
            assert!(std::time::Instant::now() < until, "slot never released");
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn only_local_file_systems_count_as_local() {
        let tmp = tempfile::tempfile().unwrap();
        let tmp_is_local = is_local_fs(&tmp);
        let kind = rustix::fs::fstatfs(&tmp).unwrap().f_type;
        // This machine's temp dir is ext4 or tmpfs (CI and dev), both local.
        assert!(tmp_is_local, "temp dir file system {kind:#x}");
        // procfs and sysfs are not on the list: whatever is not known local is not.
        for other in ["/proc/self/stat", "/sys/kernel"] {
            let f = std::fs::File::open(other).unwrap();
            assert!(!is_local_fs(&f), "{other}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_total_a_call_waits_then_is_refused() {
        let pool = pool(2, 2);
        let _s1 = stuck(&pool, Holder::Uid(1)).await;
        let _s2 = stuck(&pool, Holder::Uid(2)).await;
        let started = std::time::Instant::now();
        let e = pool.run(&Holder::Uid(3), || Ok(())).await.unwrap_err();
        assert_eq!(e.code(), strata_proto::ErrorCode::ResourceExhausted);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // The refused caller holds nothing.
        assert!(lock(&pool.per_caller).get(&Holder::Uid(3)).is_none());
    }
}
