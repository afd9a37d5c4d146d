//! Starting one service process with everything set between fork and exec, and the
//! small facts about processes the rest of the supervisor needs (exit status, signals,
//! users, where a program is).
//!
//! Order in the child, and why:
//! 1. join the service's cgroup (while still privileged; where the kernel has
//!    `CLONE_INTO_CGROUP` the child is created in it instead, see [`spawn`]),
//! 2. rlimits (only lowered, so any order works, but before the drop is simplest),
//! 3. new namespaces (need CAP_SYS_ADMIN, so before the drop),
//! 4. drop supplementary groups, gid, uid (done here rather than with `CommandExt::uid`
//!    because std runs `pre_exec` closures *after* its own uid change, when steps 1–3
//!    would no longer be permitted, and std cannot set supplementary groups),
//! 5. `PR_SET_PDEATHSIG` = SIGKILL (after the uid change, which would clear it), then a
//!    check that the supervisor did not die in between,
//! 6. `PR_SET_NO_NEW_PRIVS`, 7. Landlock (which needs 6).
//!
//! Each step is a plain system call: nothing allocates or locks between fork and exec.

// Unsafe: what runs between fork and exec (`pre_exec`: setrlimit, unshare, setgroups,
// setresuid/gid, prctl), the passwd/group database lookups (getpw*_r, getgrouplist) and
// kill(2) on a process group; std wraps none of these.
#![allow(unsafe_code)]

use crate::landlock::{self, LandlockError, Ruleset};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod clone;

// The ids are set by raw system calls (see `ChildSteps::run`); on 32-bit x86 and ARM those
// numbers are the legacy 16-bit calls, which would truncate a uid above 65535.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("the supervisor's raw setresuid/setresgid/setgroups calls assume a 64-bit target");

/// Why a service process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No executable file for `exec`.
    #[error("cannot find `{exec}`{hint}")]
    ProgramNotFound {
        /// The manifest's `exec`.
        exec: String,
        /// Where it was looked for, or what to set.
        hint: String,
    },
    /// No such user.
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    /// No such group.
    #[error("unknown group `{0}`")]
    UnknownGroup(String),
    /// The user or group database failed.
    #[error("cannot look up `{name}`: {source}")]
    Lookup {
        /// The user or group.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The Landlock ruleset could not be built (fails closed).
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// The run's cgroup could not be made or joined.
    #[error("cannot prepare the service's cgroup: {0}")]
    Cgroup(io::Error),
    /// Something else the run needs (its notify socket, say) could not be made.
    #[error("cannot prepare {what}: {source}")]
    Prepare {
        /// What.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// fork or exec failed, or a step between them did.
    #[error("cannot start {program}: {source}")]
    Exec {
        /// The program.
        program: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// How a process ended, from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// From waitpid(2)'s status.
    pub fn from_wait_status(status: libc::c_int) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }

    /// Whether it is `exit code 0`.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// `{"code": 1}` or `{"signal": 9, "signal_name": "SIGKILL"}`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            ExitStatus::Code(c) => serde_json::json!({ "code": c }),
            ExitStatus::Signal(s) => {
                serde_json::json!({ "signal": s, "signal_name": crate::units::signal_name(s) })
            }
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {}", crate::units::signal_name(*s)),
        }
    }
}

/// The identity a service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
}

/// Resolve `user` / `group` (names or numbers). `None` when neither is set.
pub fn resolve_credentials(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Credentials>, SpawnError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let mut creds = match user {
        Some(u) => lookup_user(u)?,
        None => {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            Credentials {
                uid,
                gid: 0,
                groups: Vec::new(),
            }
        }
    };
    if let Some(g) = group {
        creds.gid = lookup_group(g)?;
        if user.is_none() {
            creds.groups = vec![creds.gid];
        }
    }
    Ok(Some(creds))
}

fn lookup_user(user: &str) -> Result<Credentials, SpawnError> {
    let lookup_err = |source| SpawnError::Lookup {
        name: user.to_owned(),
        source,
    };
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpw*_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let numeric = user.parse::<u32>().ok();
    let rc = match numeric {
        // SAFETY: valid out-pointers and a buffer of the stated length.
        Some(uid) => unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        },
        None => {
            let name = CString::new(user).map_err(|_| SpawnError::UnknownUser(user.to_owned()))?;
            // SAFETY: as above, with a NUL-terminated name.
            unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                )
            }
        }
    };
    if rc != 0 {
        return Err(lookup_err(io::Error::from_raw_os_error(rc)));
    }
    if result.is_null() {
        // A bare uid without a passwd entry is allowed: it runs with gid = uid.
        return match numeric {
            Some(uid) => Ok(Credentials {
                uid,
                gid: uid,
                groups: Vec::new(),
            }),
            None => Err(SpawnError::UnknownUser(user.to_owned())),
        };
    }
    // SAFETY: getpw*_r filled pwd, whose pw_name points into buf, still alive.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }.to_owned();
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: a NUL-terminated name and a buffer of n gids.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            break;
        }
        if groups.len() >= 65536 {
            return Err(lookup_err(io::Error::other("too many groups")));
        }
        groups.resize((n.max(0) as usize).max(groups.len() * 2), 0);
    }
    Ok(Credentials { uid, gid, groups })
}

/// A group's gid: a number as it is, a name through the group database (`getgrnam_r`,
/// so NSS sources count as well as /etc/group).
pub(crate) fn lookup_group(group: &str) -> Result<u32, SpawnError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| SpawnError::UnknownGroup(group.to_owned()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero group is a valid out-parameter for getgrnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers and a buffer of the stated length.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(SpawnError::Lookup {
            name: group.to_owned(),
            source: io::Error::from_raw_os_error(rc),
        });
    }
    if result.is_null() {
        return Err(SpawnError::UnknownGroup(group.to_owned()));
    }
    Ok(grp.gr_gid)
}

/// Where bare program names are looked for (SPEC §2): a `STRATA_*_BIN` override for the
/// built-in binaries, beside the supervisor's own executable, then `PATH`.
#[derive(Debug, Clone, Default)]
pub struct ProgramLookup {
    /// `STRATA_*_BIN` overrides, by built-in binary name.
    pub overrides: BTreeMap<String, PathBuf>,
    /// The directory of the supervisor's own executable.
    pub own_dir: Option<PathBuf>,
    /// `PATH` (only its absolute entries are used).
    pub path: Option<OsString>,
}

/// The overridable built-in binaries and their variables.
pub const BIN_OVERRIDES: [(&str, &str); 3] = [
    ("strata-registry", "STRATA_REGISTRY_BIN"),
    ("strata-identity", "STRATA_IDENTITY_BIN"),
    ("strata-fs", "STRATA_FS_BIN"),
];

impl ProgramLookup {
    /// From this process's environment and executable.
    pub fn from_env() -> ProgramLookup {
        let overrides = BIN_OVERRIDES
            .iter()
            .filter_map(|(bin, var)| {
                std::env::var_os(var)
                    .filter(|v| !v.is_empty())
                    .map(|v| ((*bin).to_owned(), PathBuf::from(v)))
            })
            .collect();
        ProgramLookup {
            overrides,
            own_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            path: std::env::var_os("PATH"),
        }
    }

    /// The program `exec` names.
    pub fn find(&self, exec: &str) -> Result<PathBuf, SpawnError> {
        if exec.contains('/') {
            let path = PathBuf::from(exec);
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(SpawnError::ProgramNotFound {
                    exec: exec.to_owned(),
                    hint: " (no executable file at that path)".to_owned(),
                })
            };
        }
        if let Some(path) = self.overrides.get(exec) {
            return if is_executable(path) {
                Ok(path.clone())
            } else {
                let var = BIN_OVERRIDES
                    .iter()
                    .find(|(b, _)| *b == exec)
                    .map_or("its override", |(_, v)| *v);
                Err(SpawnError::ProgramNotFound {
                    exec: exec.to_owned(),
                    hint: format!(": {var}={} is not an executable file", path.display()),
                })
            };
        }
        let beside = self.own_dir.iter().map(|d| d.join(exec));
        let on_path = self
            .path
            .iter()
            .flat_map(std::env::split_paths)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(exec));
        if let Some(found) = beside.chain(on_path).find(|p| is_executable(p)) {
            return Ok(found);
        }
        let var = BIN_OVERRIDES
            .iter()
            .find(|(b, _)| *b == exec)
            .map(|(_, v)| format!("set {v}, "))
            .unwrap_or_default();
        Err(SpawnError::ProgramNotFound {
            exec: exec.to_owned(),
            hint: format!(" ({var}put it beside strata-supervisor, or on PATH)"),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A resource limit applied with setrlimit (the fallback when a cgroup controller is
/// missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    /// Address space, for `memory_max`.
    AddressSpace(u64),
    /// Processes of the user, for `pids_max`.
    Processes(u64),
}

/// Everything needed to start one service process.
#[derive(Debug)]
pub struct SpawnPlan {
    /// The program, found.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// The user and groups to become, if not the supervisor's.
    pub credentials: Option<Credentials>,
    /// The rlimits standing in for missing cgroup controllers.
    pub rlimits: Vec<Rlimit>,
    /// The service cgroup's `cgroup.procs`, opened by the supervisor (for kernels without
    /// `CLONE_INTO_CGROUP`).
    pub cgroup_procs: Option<File>,
    /// The service cgroup's directory, opened by the supervisor, to create the child in.
    pub cgroup_dir: Option<File>,
    /// `CLONE_NEW*` flags for unshare(2).
    pub namespaces: libc::c_int,
    /// Whether to set `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// The Landlock ruleset to restrict itself with, built before fork.
    pub landlock: Option<Ruleset>,
}

/// A started process: its pid (also its process group id) and its output pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The process, also its process group id.
    pub pid: i32,
    /// The read end of its standard output.
    pub stdout: OwnedFd,
    /// The read end of its standard error.
    pub stderr: OwnedFd,
}

/// Start the process. The caller reaps it (by pid); the returned pipes carry its output.
///
/// With a cgroup, the child is created inside it by `clone3(CLONE_INTO_CGROUP)` (Linux
/// 5.7+, see the `clone` module): moving a running process into a cgroup by writing
/// `cgroup.procs` waits for an RCU grace period (7–18 ms measured on the 2-core machine,
/// against 0.2–0.4 ms for the clone), and the supervisor waits for each exec in turn.
/// Kernels without it get fork and exec through std, the child joining by `cgroup.procs`.
pub fn spawn(plan: SpawnPlan) -> Result<Spawned, SpawnError> {
    let steps = ChildSteps::new(&plan);
    if let Some(dir) = &plan.cgroup_dir {
        if let Some(spawned) = clone::spawn_into_cgroup(&plan, dir.as_raw_fd(), &steps)? {
            return Ok(spawned);
        }
    }
    let mut cmd = Command::new(&plan.program);
    cmd.args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let join = plan.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: `ChildSteps::run` only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || steps.run(join));
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: plan.program.clone(),
        source,
    })?;
    // The plan's descriptors (cgroup, Landlock ruleset) close when it drops here.
    drop(plan);
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    Ok(Spawned {
        pid: child.id() as i32,
        stdout: stdout.into(),
        stderr: stderr.into(),
    })
}

/// Steps 2–7 of the module's list (and step 1 on the std path), as plain values captured
/// before fork.
struct ChildSteps {
    supervisor_pid: libc::pid_t,
    rlimits: Vec<Rlimit>,
    namespaces: libc::c_int,
    creds: Option<Credentials>,
    no_new_privs: bool,
    landlock_fd: Option<std::os::fd::RawFd>,
}

impl ChildSteps {
    fn new(plan: &SpawnPlan) -> ChildSteps {
        ChildSteps {
            // SAFETY: getpid has no preconditions.
            supervisor_pid: unsafe { libc::getpid() },
            rlimits: plan.rlimits.clone(),
            namespaces: plan.namespaces,
            creds: plan.credentials.clone(),
            no_new_privs: plan.no_new_privs,
            landlock_fd: plan.landlock.as_ref().map(|r| r.raw_fd()),
        }
    }

    /// Runs in the child between fork and exec: joins the cgroup by `join` (its
    /// `cgroup.procs`) if given, then the rest. Only async-signal-safe system calls on
    /// values captured before fork: no allocation, no locks. Groups and ids are set by
    /// raw system calls, which act on this thread alone: glibc's wrappers would try to
    /// signal the parent's other threads, which a `clone3` child does not have.
    fn run(&self, join: Option<std::os::fd::RawFd>) -> io::Result<()> {
        let check = |rc: libc::c_long| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY (whole block): plain system calls on values captured before fork, and
        // descriptors that are ours and still open.
        unsafe {
            if let Some(fd) = join {
                check(libc::write(fd, b"0".as_ptr().cast(), 1) as libc::c_long)?;
            }
            for limit in &self.rlimits {
                let (resource, value) = match *limit {
                    Rlimit::AddressSpace(v) => (libc::RLIMIT_AS, v),
                    Rlimit::Processes(v) => (libc::RLIMIT_NPROC, v),
                };
                let lim = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                check(libc::setrlimit(resource, &lim).into())?;
            }
            if self.namespaces != 0 {
                check(libc::unshare(self.namespaces).into())?;
            }
            if let Some(c) = &self.creds {
                check(libc::syscall(
                    libc::SYS_setgroups,
                    c.groups.len(),
                    c.groups.as_ptr(),
                ))?;
                check(libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid))?;
                check(libc::syscall(libc::SYS_setresuid, c.uid, c.uid, c.uid))?;
            }
            // prctl is variadic: pass every argument at the kernel's width.
            let zero: libc::c_ulong = 0;
            check(
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    zero,
                    zero,
                    zero,
                )
                .into(),
            )?;
            if libc::getppid() != self.supervisor_pid {
                // The supervisor died before the death signal was armed.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if self.no_new_privs {
                check(
                    libc::prctl(
                        libc::PR_SET_NO_NEW_PRIVS,
                        1 as libc::c_ulong,
                        zero,
                        zero,
                        zero,
                    )
                    .into(),
                )?;
            }
        }
        if let Some(fd) = self.landlock_fd {
            landlock::restrict_self(fd)?;
        }
        Ok(())
    }
}

/// Open `/dev/null` on any of descriptors 0–2 the supervisor was started without, so that
/// no descriptor it opens later (a cgroup's `cgroup.procs`, a Landlock ruleset) can be one
/// of them and be overwritten by a child's stdio set-up. Call first thing in `main`.
pub fn fill_standard_descriptors() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        // SAFETY: open with a NUL-terminated path; the lowest free descriptor, which is
        // `fd` (the lower ones are open), is kept open for the process's life.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    }
}

/// Send `sig` to a whole process group; false if there is no such group.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) on a process group the supervisor created.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Whether a process group still has members.
pub fn group_exists(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_describe_themselves() {
        assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(
            ExitStatus::Code(0).to_json(),
            serde_json::json!({"code": 0})
        );
        assert_eq!(
            ExitStatus::Signal(15).to_json(),
            serde_json::json!({"signal": 15, "signal_name": "SIGTERM"})
        );
        assert!(ExitStatus::Code(0).success());
        assert!(!ExitStatus::Signal(15).success());
        // Raw wait statuses: exit 2 is 0x0200, killed by 9 is 0x0009.
        assert_eq!(ExitStatus::from_wait_status(0x0200), ExitStatus::Code(2));
        assert_eq!(ExitStatus::from_wait_status(0x0009), ExitStatus::Signal(9));
    }

    #[test]
    fn programs_are_found_by_override_beside_us_then_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let beside = make("strata-registry");
        let other = make("other-registry");
        let bin_dir = tempfile::tempdir().unwrap();
        let on_path = bin_dir.path().join("tool");
        std::fs::write(&on_path, "").unwrap();
        std::fs::set_permissions(&on_path, std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut lookup = ProgramLookup {
            overrides: BTreeMap::new(),
            own_dir: Some(dir.path().to_path_buf()),
            path: Some(bin_dir.path().as_os_str().to_owned()),
        };
        assert_eq!(lookup.find("strata-registry").unwrap(), beside);
        assert_eq!(lookup.find("tool").unwrap(), on_path);
        lookup
            .overrides
            .insert("strata-registry".to_owned(), other.clone());
        assert_eq!(lookup.find("strata-registry").unwrap(), other);
        let e = lookup.find("strata-fs").unwrap_err().to_string();
        assert!(e.contains("STRATA_FS_BIN"), "{e}");
        let e = lookup.find("/no/such/file").unwrap_err().to_string();
        assert!(e.contains("/no/such/file"), "{e}");
        lookup
            .overrides
            .insert("strata-fs".to_owned(), PathBuf::from("/nonexistent"));
        let e = lookup.find("strata-fs").unwrap_err().to_string();
        assert!(e.contains("STRATA_FS_BIN=/nonexistent"), "{e}");
    }

    #[test]
    fn users_and_groups_resolve() {
        assert_eq!(resolve_credentials(None, None).unwrap(), None);
        let root = resolve_credentials(Some("root"), None).unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let numeric = resolve_credentials(Some("4242"), Some("4343"))
            .unwrap()
            .unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4343));
        assert!(matches!(
            resolve_credentials(Some("no-such-user-strata"), None),
            Err(SpawnError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve_credentials(None, Some("no-such-group-strata")),
            Err(SpawnError::UnknownGroup(_))
        ));
    }
}
