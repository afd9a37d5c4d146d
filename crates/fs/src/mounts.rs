//! [`MountWatch`]: whether the mount table still is what fs saw at start-up, so a listing
//! of a local export root may run inline ([`crate::roots::ExportRoots::lists_inline`]).
//!
//! A directory on a local file system lists promptly, unless one of its entries is a
//! mount point of a network file system: `fstatat` of that entry crosses into the mount
//! and may wait on its server. So a root lists inline only if nothing was mounted
//! anywhere beneath it when fs started ([`mount_points`], read before Landlock closes
//! `/proc`), and only while the mount table has not changed since: the kernel flags every
//! change on an open `/proc/self/mountinfo` (`POLLPRI`), which fs polls, without waiting,
//! before each inline listing. The first change seen turns inline listing off for good
//! (until fs restarts); everything then runs on the blocking pool as before.

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// An open `/proc/self/mountinfo`, polled for changes.
#[derive(Debug)]
pub(crate) struct MountWatch {
    /// `None` when it could not be opened: nothing is ever listed inline then.
    fd: Option<OwnedFd>,
    /// Sticky: once a change is seen, it stays seen.
    changed: AtomicBool,
    /// Held across a poll and the store of what it saw: the poll that sees a change
    /// consumes the kernel's flag, so another thread polling in between would see none.
    polling: Mutex<()>,
}

impl Default for MountWatch {
    fn default() -> MountWatch {
        MountWatch {
            fd: None,
            changed: AtomicBool::new(true),
            polling: Mutex::new(()),
        }
    }
}

impl MountWatch {
    /// Start watching. Open it before reading the mount points, so a mount made between
    /// the two is seen as a change.
    pub(crate) fn open() -> MountWatch {
        match rustix::fs::open(MOUNTINFO, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => MountWatch {
                fd: Some(fd),
                changed: AtomicBool::new(false),
                polling: Mutex::new(()),
            },
            Err(_) => MountWatch::default(),
        }
    }

    /// Whether the mount table is unchanged since [`MountWatch::open`] (one `poll` with a
    /// zero timeout). False for good after the first change.
    pub(crate) fn unchanged(&self) -> bool {
        let Some(fd) = &self.fd else {
            return false;
        };
        if self.changed.load(Ordering::Acquire) {
            return false;
        }
        let _polling = self.polling.lock().unwrap_or_else(PoisonError::into_inner);
        if self.changed.load(Ordering::Acquire) {
            return false;
        }
        let mut fds = [PollFd::new(fd, PollFlags::PRI)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let quiet = matches!(poll(&mut fds, Some(&zero)), Ok(0));
        if !quiet {
            // Changed, or cannot tell: the poll consumed the event, so remember it.
            self.changed.store(true, Ordering::Release);
        }
        quiet
    }
}

/// Every mount point in this mount namespace, as `/proc/self/mountinfo` names them (its
/// fifth field, octal escapes decoded). `None` if it cannot be read.
pub(crate) fn mount_points() -> Option<Vec<PathBuf>> {
    let text = std::fs::read(MOUNTINFO).ok()?;
    Some(
        text.split(|&b| b == b'\n')
            .filter_map(|line| line.split(|&b| b == b' ').nth(4))
            .map(unescape)
            .collect(),
    )
}

/// Whether some mount point lies strictly beneath `dir` (a canonical path).
pub(crate) fn any_beneath(mounts: &[PathBuf], dir: &Path) -> bool {
    mounts.iter().any(|m| m != dir && m.starts_with(dir))
}

/// Undo mountinfo's `\ooo` escapes (space, tab, newline and backslash are written so).
fn unescape(field: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(br"/a\040b\134c\011"), Path::new("/a b\\c\t"));
        assert_eq!(unescape(br"/plain\9"), Path::new("/plain\\9"));
    }

    #[test]
    fn beneath_means_strictly_beneath_by_component() {
        let mounts = [PathBuf::from("/srv/x"), PathBuf::from("/srv/ab/c")];
        assert!(!any_beneath(&mounts, Path::new("/srv/x")));
        assert!(any_beneath(&mounts, Path::new("/srv")));
        assert!(!any_beneath(&mounts, Path::new("/srv/a")));
        assert!(any_beneath(&mounts, Path::new("/srv/ab")));
    }

    #[test]
    fn this_process_sees_its_mounts_and_a_quiet_table() {
        let mounts = mount_points().unwrap();
        assert!(mounts.iter().any(|m| m == Path::new("/")), "{mounts:?}");
        assert!(any_beneath(&mounts, Path::new("/")));
        let watch = MountWatch::open();
        assert!(watch.unchanged());
        // A change seen once stays seen.
        watch.changed.store(true, Ordering::Release);
        assert!(!watch.unchanged());
        assert!(!MountWatch::default().unchanged());
    }
}
