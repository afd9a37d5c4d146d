//! cgroup v2: one cgroup per service run, for grouping, whole-tree kill and limits.
//!
//! At start-up [`CgroupRoot::probe`] looks for a writable cgroup v2 hierarchy (a pure v2
//! system, or the `unified` mount of a hybrid one) and creates `strata-<pid>` beneath the
//! supervisor's own cgroup. It then enables the `memory`, `pids` and `cpu` controllers
//! that the parent offers. On a hybrid system those controllers belong to v1 and the v2
//! tree offers none: services still get their own cgroup (so stop and orphan clean-up can
//! kill a whole tree), and limits fall back to rlimits. On a pure v2 system with a
//! delegated cgroup, the supervisor moves itself into `strata-<pid>/supervisor` when
//! that is what it takes to enable controllers (the "no internal processes" rule), and
//! takes its companions along (the orphan guard, forked before this runs): under a
//! systemd unit with `Delegate=yes` they are the only processes of the unit's cgroup, and
//! one left behind would keep the controllers off (docs/NIXOS.md, "cgroups under
//! systemd"). No other process is ever moved.
//!
//! Nothing here decides policy; the supervisor asks what is available and reports it.

// Unsafe: kill(2) of each pid listed in a service's cgroup where the kernel has no
// `cgroup.kill`; std can only kill a child it spawned itself.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WANTED: [&str; 3] = ["memory", "pids", "cpu"];

/// The cgroup under which every service of this supervisor runs.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    dir: PathBuf,
    controllers: Vec<String>,
}

/// Why no cgroup is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl CgroupRoot {
    /// Find and prepare this supervisor's cgroup, or say why there is none. `companions`
    /// are processes of the supervisor's own (the orphan guard) that move with it if it
    /// has to leave its cgroup.
    pub fn probe(companions: &[i32]) -> Result<CgroupRoot, Unavailable> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Unavailable(format!("cannot read /proc/self/mountinfo: {e}")))?;
        let (mount_root, mount_point) = find_cgroup2_mount(&mountinfo)
            .ok_or_else(|| Unavailable("no cgroup2 file system is mounted".to_owned()))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Unavailable(format!("cannot read /proc/self/cgroup: {e}")))?;
        let own_path = own_v2_path(&own)
            .ok_or_else(|| Unavailable("this process has no cgroup v2 membership".to_owned()))?;
        let relative = own_path
            .strip_prefix(&mount_root)
            .or_else(|| own_path.strip_prefix('/'))
            .unwrap_or(&own_path)
            .trim_start_matches('/')
            .to_owned();
        let parent = mount_point.join(relative);
        let dir = parent.join(format!("strata-{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Unavailable(format!("cannot create {}: {e}", dir.display()))),
        }
        let is_root_cgroup = parent == mount_point;
        let mut root = CgroupRoot {
            dir,
            controllers: Vec::new(),
        };
        root.enable_controllers(&parent, is_root_cgroup, companions);
        Ok(root)
    }

    fn enable_controllers(&mut self, parent: &Path, parent_is_root: bool, companions: &[i32]) {
        let offered = read_words(&parent.join("cgroup.controllers"));
        let wanted: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|c| offered.iter().any(|o| o == c))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let parent_control = parent.join("cgroup.subtree_control");
        let mut busy = false;
        for c in &wanted {
            if let Err(e) = write_file(&parent_control, &format!("+{c}")) {
                busy |= e.raw_os_error() == Some(libc::EBUSY);
            }
        }
        if busy && !parent_is_root {
            // Our own cgroup holds processes (us, and the orphan guard), so it may not
            // delegate controllers. Move into a leaf of our own, with the guard, and try
            // again; this succeeds when we were the only processes there, as under a
            // systemd unit with Delegate=yes.
            let leaf = self.dir.join("supervisor");
            let procs = leaf.join("cgroup.procs");
            let moved = std::fs::create_dir(&leaf)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .and_then(|()| write_file(&procs, "0"))
                .and_then(|()| {
                    companions
                        .iter()
                        .try_for_each(|pid| write_file(&procs, &pid.to_string()))
                });
            match moved {
                Ok(()) => {
                    tracing::info!(cgroup = %leaf.display(), "moved the supervisor into a leaf cgroup");
                    for c in &wanted {
                        let _ = write_file(&parent_control, &format!("+{c}"));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot move into a leaf cgroup"),
            }
        }
        let available = read_words(&self.dir.join("cgroup.controllers"));
        let own_control = self.dir.join("cgroup.subtree_control");
        for c in &wanted {
            if available.iter().any(|a| a == c) {
                if let Err(e) = write_file(&own_control, &format!("+{c}")) {
                    tracing::debug!(controller = c, error = %e, "cannot enable controller");
                }
            }
        }
        self.controllers = read_words(&own_control);
    }

    /// The directory of the supervisor's cgroup.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Controllers enabled for services (a subset of memory, pids, cpu).
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Whether `controller` (e.g. `memory`) is enabled for the services' cgroups.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// A fresh, empty cgroup for one run of `service`. A leftover one from an earlier run
    /// is emptied and replaced.
    pub fn create(&self, service: &str) -> io::Result<ServiceCgroup> {
        let cg = ServiceCgroup {
            dir: self.dir.join(service),
        };
        if cg.dir.exists() {
            cg.kill_all();
            cg.wait_empty(Duration::from_secs(2));
            cg.remove()?;
        }
        std::fs::create_dir(&cg.dir)?;
        Ok(cg)
    }

    /// Remove this supervisor's cgroup (services must be gone). Best effort.
    pub fn remove(&self) {
        // The leaf the supervisor may have moved itself into.
        let _ = std::fs::remove_dir(self.dir.join("supervisor"));
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::debug!(cgroup = %self.dir.display(), error = %e, "cgroup not removed");
        }
    }
}

/// One service run's cgroup.
#[derive(Debug, Clone)]
pub struct ServiceCgroup {
    dir: PathBuf,
}

impl ServiceCgroup {
    /// The cgroup at `dir` (which must be one this supervisor created).
    pub fn at(dir: PathBuf) -> ServiceCgroup {
        ServiceCgroup { dir }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write a limit file such as `memory.max`.
    pub fn set(&self, file: &str, value: &str) -> io::Result<()> {
        write_file(&self.dir.join(file), value)
    }

    /// `cgroup.procs`, opened for writing by the supervisor. The child writes `0` to it
    /// between fork and exec to join, before any privilege drop; the kernel checks the
    /// opener's credentials, so this works for services that run as another user.
    pub fn procs_for_join(&self) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// The cgroup's directory, opened to create a child inside it (`CLONE_INTO_CGROUP`;
    /// the kernel checks the opener's right to write its `cgroup.procs`).
    pub fn dir_for_clone(&self) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)
    }

    /// SIGKILL every process in the cgroup: `cgroup.kill` where the kernel has it (5.14+),
    /// else each listed pid.
    pub fn kill_all(&self) {
        if write_file(&self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in read_words(&self.dir.join("cgroup.procs")) {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) with a pid read from our own service's cgroup.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// Whether any process is still in the cgroup.
    pub fn populated(&self) -> bool {
        match std::fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(events) => events.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => !read_words(&self.dir.join("cgroup.procs")).is_empty(),
        }
    }

    /// Poll until empty or `timeout`; true when empty.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if !self.populated() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Remove the (empty) cgroup.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The (root within the file system, mount point) of the first cgroup2 mount.
pub(crate) fn find_cgroup2_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        Some((unescape(root), PathBuf::from(unescape(mount_point))))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = i + 3 < bytes.len()
            && bytes[i] == b'\\'
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b));
        if octal {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `0::/path` entry of /proc/self/cgroup.
fn own_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
33 31 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_unified_mount_of_a_hybrid_system() {
        assert_eq!(
            find_cgroup2_mount(HYBRID),
            Some(("/".to_owned(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        let pure = "28 22 0:25 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            find_cgroup2_mount(pure),
            Some(("/".to_owned(), PathBuf::from("/sys/fs/cgroup")))
        );
        assert_eq!(
            find_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        let line = "32 31 0:27 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(line).unwrap().1,
            PathBuf::from("/mnt/cg two")
        );
    }

    #[test]
    fn own_path_comes_from_the_zero_entry() {
        let text = "4:memory:/x\n0::/system.slice/strata.service\n";
        assert_eq!(
            own_v2_path(text).as_deref(),
            Some("/system.slice/strata.service")
        );
        assert_eq!(own_v2_path("4:memory:/x\n"), None);
    }
}
