//! Starting a service process directly inside its cgroup: `clone3(CLONE_INTO_CGROUP)`,
//! then the same steps as the std path, then `execve`.
//!
//! Everything the child needs (program, argv, envp, working directory, pipes) is built
//! before the clone; the child only makes system calls on it. An exec failure, or a failed
//! step before it, reaches the parent as the errno on a close-on-exec pipe, as in std; a
//! successful exec closes that pipe, so the parent returns once the service program runs.

use super::{ChildSteps, SpawnError, SpawnPlan, Spawned};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// `CLONE_INTO_CGROUP` (linux/sched.h), as the 64-bit flag `clone3` takes.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_CLEAR_SIGHAND` (5.5+): the child starts with the supervisor's signal handlers
/// reset to their defaults (ignored signals stay ignored), as they would be after exec.
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// How long the supervisor waits for a child to exec. Between its uid change and exec a
/// child can be stopped (SIGSTOP) by any process of the service's uid; without a bound
/// that would hold the supervisor's spawning thread for good.
const EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Set once the kernel has refused `clone3` or `CLONE_INTO_CGROUP`: every later spawn goes
/// the std way without trying again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `struct clone_args` (linux/sched.h), up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Start `plan` inside the cgroup whose directory is `cgroup_dir`. `Ok(None)` when this
/// kernel cannot (no `clone3`, or no `CLONE_INTO_CGROUP`): the caller then takes the std
/// path.
pub(super) fn spawn_into_cgroup(
    plan: &SpawnPlan,
    cgroup_dir: RawFd,
    steps: &ChildSteps,
) -> Result<Option<Spawned>, SpawnError> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let exec_err = |source: io::Error| SpawnError::Exec {
        program: plan.program.clone(),
        source,
    };
    let c_string = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            exec_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an argument, variable or path contains a NUL byte",
            ))
        })
    };
    let program = c_string(plan.program.as_os_str().as_bytes())?;
    let cwd = c_string(plan.cwd.as_os_str().as_bytes())?;
    let mut args = vec![program.clone()];
    for a in &plan.args {
        args.push(c_string(a.as_bytes())?);
    }
    let mut env = Vec::with_capacity(plan.env.len());
    for (k, v) in &plan.env {
        env.push(c_string(format!("{k}={v}").as_bytes())?);
    }
    let argv = null_terminated(&args);
    let envp = null_terminated(&env);

    let null = std::fs::File::open("/dev/null").map_err(exec_err)?;
    let null = above_stdio(null.into()).map_err(exec_err)?;
    let (out_r, out_w) = pipe().map_err(exec_err)?;
    let (err_r, err_w) = pipe().map_err(exec_err)?;
    let (status_r, status_w) = pipe().map_err(exec_err)?;
    let child_fds = [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    let status_fd = status_w.as_raw_fd();

    let mut clone_args = CloneArgs {
        flags: CLONE_INTO_CGROUP | CLONE_CLEAR_SIGHAND,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this address
    // space and runs only `child`, which makes system calls on the values built above and
    // never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut clone_args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child; see `child`.
        unsafe { child(&child_fds, status_fd, &cwd, &program, &argv, &envp, steps) }
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No clone3 (before 5.3), a smaller clone_args (before 5.7), or a flag it
            // does not know: this kernel cannot, and will not later.
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                tracing::debug!(error = %e, "clone3(CLONE_INTO_CGROUP) unavailable; services join their cgroup after fork");
                Ok(None)
            }
            // A seccomp filter that refuses syscalls it does not know (as container
            // runtimes' defaults did for clone3) says EPERM: the std path may still work,
            // and reports a real refusal itself.
            Some(libc::EPERM) => Ok(None),
            _ => Err(exec_err(e)),
        };
    }
    let pid = pid as libc::pid_t;
    drop((null, out_w, err_w, status_w));
    match read_status(&status_r, EXEC_WAIT) {
        Ok(None) => Ok(Some(Spawned {
            pid,
            stdout: out_r,
            stderr: err_r,
        })),
        Ok(Some(errno)) => {
            reap(pid);
            Err(exec_err(io::Error::from_raw_os_error(errno)))
        }
        Err(e) => {
            // Cannot tell whether it ran: stop it rather than lose track of it.
            // SAFETY: kill and wait on the child just created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            Err(exec_err(e))
        }
    }
}

/// The child's side. Never returns: it execs, or reports the errno and exits 127.
///
/// # Safety
/// Only in the child of a fork-like clone, before exec; every pointer comes from values
/// the parent built before the clone.
unsafe fn child(
    fds: &[RawFd; 3],
    status_fd: RawFd,
    cwd: &CString,
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    steps: &ChildSteps,
) -> ! {
    let result = (|| -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain system calls on descriptors and strings that are ours.
        unsafe {
            // A clean signal state, as std gives its children: nothing blocked, SIGPIPE
            // back to its default (handlers reset by themselves at exec).
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                &empty,
                std::ptr::null_mut(),
            ))?;
            if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            for (target, &fd) in fds.iter().enumerate() {
                check(libc::dup2(fd, target as libc::c_int))?;
            }
            check(libc::chdir(cwd.as_ptr()))?;
            check(libc::setpgid(0, 0))?;
        }
        steps.run(None)?;
        // SAFETY: null-terminated arrays of pointers into CStrings that outlive this call.
        unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Err(io::Error::last_os_error())
    })();
    let errno = result
        .err()
        .and_then(|e| e.raw_os_error())
        .unwrap_or(libc::EINVAL);
    let bytes = errno.to_ne_bytes();
    // SAFETY: write to our own pipe, then leave without running any destructor or
    // atexit handler of the parent's copy.
    unsafe {
        libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// The pointers of `strings`, then a null.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe (read end, write end), both above the standard descriptors.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two descriptors pipe2 just opened, owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd`, moved above 0–2 if it is one of them (a supervisor started with a standard
/// descriptor closed): the child's dup2 onto 0–2 must not overwrite another of its
/// descriptors.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own returns a new one we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened above.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// What the child reported: `None` once its exec closed the pipe, else its errno; an
/// error if it did neither within `within`.
fn read_status(pipe: &OwnedFd, within: std::time::Duration) -> io::Result<Option<i32>> {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll on one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, ms) } {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("it did not exec within {} s", within.as_secs()),
                ))
            }
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            _ => {}
        }
        // SAFETY: read into the rest of a local buffer.
        let n = unsafe {
            libc::read(
                pipe.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::Error::other("the child's status report was cut short")),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    Ok(Some(i32::from_ne_bytes(buf)))
}

/// Wait for a child that failed to start (the reaper is held off meanwhile: the caller
/// holds its table).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::ServiceCgroup;
    use std::io::Read;
    use std::path::PathBuf;

    /// A cgroup of its own under the cgroup2 mount, removed on drop (root only).
    struct TestCgroup(ServiceCgroup);

    impl TestCgroup {
        fn new(name: &str) -> Option<TestCgroup> {
            if strata_testkit::skip_unless_root(name) {
                return None;
            }
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let Some((_, mount)) = crate::cgroup::find_cgroup2_mount(&mountinfo) else {
                strata_testkit::skip(name, "no cgroup2 file system is mounted");
                return None;
            };
            let dir = mount.join(format!("strata-clone-test-{}-{name}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            Some(TestCgroup(ServiceCgroup::at(dir)))
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            self.0.kill_all();
            self.0.wait_empty(std::time::Duration::from_secs(5));
            let _ = self.0.remove();
        }
    }

    fn plan(program: &str, args: &[&str], cgroup: &ServiceCgroup) -> SpawnPlan {
        SpawnPlan {
            program: PathBuf::from(program),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![("STRATA_TEST".to_owned(), "clone3".to_owned())],
            cwd: PathBuf::from("/"),
            credentials: None,
            rlimits: Vec::new(),
            cgroup_procs: Some(cgroup.procs_for_join().unwrap()),
            cgroup_dir: Some(cgroup.dir_for_clone().unwrap()),
            namespaces: 0,
            no_new_privs: true,
            landlock: None,
        }
    }

    fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on a child of this test.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn a_service_is_created_inside_its_cgroup_with_its_environment_and_output() {
        let Some(cg) = TestCgroup::new("created_inside_its_cgroup") else {
            return;
        };
        // What the program sees first: its cgroup, its environment, its directory.
        let script = "cat /proc/self/cgroup; echo \"env=$STRATA_TEST\"; pwd; echo oops >&2";
        let spawned = super::super::spawn(plan("/bin/sh", &["-c", script], &cg.0)).unwrap();
        assert!(
            !UNSUPPORTED.load(Ordering::Relaxed),
            "this kernel has clone3(CLONE_INTO_CGROUP); the std path was taken"
        );
        let mut out = String::new();
        std::fs::File::from(spawned.stdout)
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(spawned.stderr)
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(wait(spawned.pid), 0);
        let name = cg.0.dir().file_name().unwrap().to_str().unwrap();
        assert!(
            out.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(name)),
            "not in {name}: {out}"
        );
        assert!(out.contains("env=clone3\n/\n"), "{out}");
        assert_eq!(err, "oops\n");
    }

    #[test]
    fn a_child_that_never_reports_is_given_up_on_at_the_bound() {
        let (r, w) = pipe().unwrap();
        let err = read_status(&r, std::time::Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // Closed without a report: the exec succeeded.
        drop(w);
        assert_eq!(
            read_status(&r, std::time::Duration::from_secs(5)).unwrap(),
            None
        );
    }

    #[test]
    fn an_exec_failure_is_reported_with_its_errno_and_the_child_is_gone() {
        let Some(cg) = TestCgroup::new("exec_failure_reported") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "not a program").unwrap();
        let err = super::super::spawn(plan(not_executable.to_str().unwrap(), &[], &cg.0))
            .expect_err("a file without x bits cannot be executed");
        match err {
            SpawnError::Exec { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::EACCES), "{source}")
            }
            other => panic!("{other}"),
        }
        // The failed child is gone (it was reaped before spawn returned).
        assert!(!cg.0.populated());
    }
}
