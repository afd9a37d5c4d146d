//! The orphan guard: a tiny process that outlives the supervisor by exactly as long as it
//! takes to kill what the supervisor started.
//!
//! `PR_SET_PDEATHSIG` kills a service's main process when the supervisor dies, but not
//! the processes that service forked. So at start-up, while still single-threaded, the
//! supervisor forks this guard, in its own process group, connected by a pipe. The
//! supervisor tells it, line by line, which process groups and cgroups are live. When the
//! supervisor dies, however it dies (even `kill -9`), the pipe reaches end-of-file and the
//! guard SIGKILLs every group and cgroup it was told about, removes the cgroups, and
//! exits. After a normal shutdown there is nothing left, and it simply exits.

// Unsafe: fork(2) of the single-threaded process, pipe2(2), and the raw system calls
// the forked guard makes (setpgid, signal, prctl, dup2, _exit); std has no fork and no
// way to run code in a forked child.
#![allow(unsafe_code)]

use crate::cgroup::ServiceCgroup;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The supervisor's end of the guard's pipe.
pub struct OrphanGuard {
    writer: Mutex<File>,
    pid: i32,
}

impl OrphanGuard {
    /// Fork the guard. Must be called while the process has a single thread (before any
    /// runtime starts); refuses otherwise, since forking a threaded process and then
    /// running ordinary code in the child is unsound.
    pub fn spawn() -> io::Result<OrphanGuard> {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 {
            return Err(io::Error::other(format!(
                "the orphan guard must be started before any thread ({threads} running)"
            )));
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 with a valid two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two descriptors; we own them.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the process is single-threaded (checked above), so the child may run
        // ordinary Rust code; it never returns from `guard_main`.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(write_end);
                guard_main(read_end)
            }
            pid => {
                drop(read_end);
                Ok(OrphanGuard {
                    writer: Mutex::new(File::from(write_end)),
                    pid,
                })
            }
        }
    }

    /// The guard process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn send(&self, line: &str) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // One short write: atomic on a pipe. A failure means the guard is gone, which
        // only loses the clean-up it would have done.
        if let Err(e) = w.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "orphan guard unreachable");
        }
    }

    /// Kill process group `pgid` if the supervisor dies.
    pub fn watch_group(&self, pgid: i32) {
        self.send(&format!("+pg {pgid}\n"));
    }
    /// Process group `pgid` is gone: no longer kill it.
    pub fn forget_group(&self, pgid: i32) {
        self.send(&format!("-pg {pgid}\n"));
    }
    /// Kill and remove the cgroup at `dir` if the supervisor dies.
    pub fn watch_cgroup(&self, dir: &Path) {
        self.send(&format!("+cg {}\n", dir.display()));
    }
    /// The cgroup at `dir` is gone: no longer kill it.
    pub fn forget_cgroup(&self, dir: &Path) {
        self.send(&format!("-cg {}\n", dir.display()));
    }
    /// The supervisor's own cgroup, removed last.
    pub fn set_root_cgroup(&self, dir: &Path) {
        self.send(&format!("root {}\n", dir.display()));
    }
}

fn guard_main(read_end: OwnedFd) -> ! {
    // SAFETY (block): plain system calls in a single-threaded child.
    unsafe {
        libc::setpgid(0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::prctl(
            libc::PR_SET_NAME,
            c"strata-guard".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
    }
    let mut groups: BTreeSet<i32> = BTreeSet::new();
    let mut cgroups: BTreeSet<PathBuf> = BTreeSet::new();
    let mut root: Option<PathBuf> = None;
    let reader = BufReader::new(File::from(read_end));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Some((op, arg)) = line.split_once(' ') else {
            continue;
        };
        match op {
            "+pg" => {
                if let Ok(p) = arg.parse() {
                    groups.insert(p);
                }
            }
            "-pg" => {
                if let Ok(p) = arg.parse::<i32>() {
                    groups.remove(&p);
                }
            }
            "+cg" => {
                cgroups.insert(PathBuf::from(arg));
            }
            "-cg" => {
                cgroups.remove(Path::new(arg));
            }
            "root" => root = Some(PathBuf::from(arg)),
            _ => {}
        }
    }
    // The supervisor is gone: kill everything it left.
    for pgid in &groups {
        crate::process::signal_group(*pgid, libc::SIGKILL);
    }
    for dir in &cgroups {
        let cg = ServiceCgroup::at(dir.clone());
        cg.kill_all();
    }
    for dir in &cgroups {
        let cg = ServiceCgroup::at(dir.clone());
        cg.wait_empty(Duration::from_secs(5));
        let _ = cg.remove();
    }
    if let Some(root) = root {
        let _ = std::fs::remove_dir(root.join("supervisor"));
        let _ = std::fs::remove_dir(&root);
    }
    // SAFETY: _exit skips the parent's atexit handlers and destructors, which are not ours.
    unsafe { libc::_exit(0) }
}
