//! Support for tests that run real Strata binaries.
//!
//! - [`binary`] finds (building if needed) a workspace binary in the same profile as the
//!   running test, so `cargo test -p any-crate` works without a prior build.
//! - [`Proc`] owns a child process and kills it (and its process group) on drop, so a
//!   failing test never leaves a server behind.
//! - [`Sandbox`] is a temporary runtime + state directory pair.
//! - [`wait_until`] polls with a deadline instead of sleeping.
//! - [`call`] speaks the wire protocol with a deliberately independent, blocking
//!   implementation, so tests check the servers against the spec rather than against the
//!   project's own client.
//! - [`etcd::Etcd`] runs a real single-member etcd on loopback ports for cluster tests,
//!   [`etcd_cluster::EtcdCluster`] a multi-member one for fault tests, and
//!   [`proxy::TcpProxy`] a loopback TCP proxy a test can blackhole (a partition).
//!
//! Not for production code.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod etcd;
pub mod etcd_cluster;
pub mod proxy;

/// Generous deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The target directory of the running test binary (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path to the workspace binary `name`, built in the running test's profile if it is
/// missing or older than this test binary.
pub fn binary(name: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(name);
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let test_exe_time = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok();
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .zip(test_exe_time)
        .is_some_and(|(bin, test)| bin >= test);
    if !fresh {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bin", name]);
        // `cargo test` gives the test process the package's CARGO_MANIFEST_DIR,
        // CARGO_PKG_* and the like. Build scripts that watch them (ring's does) would see a
        // different environment from the outer build and rebuild the whole TLS stack, and
        // the outer build would then rebuild it back.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_by_cargo_test = key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || key.starts_with("CARGO_MANIFEST_")
                || matches!(
                    &*key,
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "CARGO_BIN_NAME"
                );
            if set_by_cargo_test {
                cmd.env_remove(&*key);
            }
        }
        if profile != "debug" {
            cmd.args([
                "--profile",
                if profile == "release" {
                    "release"
                } else {
                    profile
                },
            ]);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A child process that is killed, with its whole process group, when dropped.
pub struct Proc {
    child: Option<Child>,
    /// The binary's name, for messages.
    pub name: String,
}

impl Proc {
    /// Start `cmd` in a new process group; its stdout/stderr go to the test's stderr
    /// unless the caller redirected them.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Send a signal to the process (not the group).
    // Unsafe: kill(2) with any signal; std only sends SIGKILL.
    #[allow(unsafe_code)]
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a pid we own; a stale pid at worst returns ESRCH.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("try_wait")
            .is_some()
    }

    /// The child, no longer killed on drop (the caller owns it now).
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("running")
    }
}

// Unsafe: kill(2) of the whole process group; std signals only the child.
#[allow(unsafe_code)]
impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // SAFETY: signalling the process group we created for this child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Temporary runtime and state directories for one test.
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh temporary directory with `run/` and `state/` below it.
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(root.path().join("run")).unwrap();
        std::fs::create_dir(root.path().join("state")).unwrap();
        Sandbox { root }
    }

    /// The sandbox's top directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The runtime directory (sockets), `STRATA_RUNTIME_DIR` for a service started here.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }

    /// The state directory, `STRATA_STATE_DIR` for a service started here.
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    /// Where `service`'s socket is, by convention.
    pub fn socket(&self, service: &str) -> PathBuf {
        self.runtime_dir().join(format!("{service}.sock"))
    }

    /// A command for a workspace binary with this sandbox's directories in its
    /// environment.
    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(binary(bin));
        cmd.env("STRATA_RUNTIME_DIR", self.runtime_dir())
            .env("STRATA_STATE_DIR", self.state_dir())
            .env_remove("STRATA_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a workspace binary in this sandbox to completion, capturing its output.
    pub fn run(&self, bin: &str, args: &[&str]) -> std::process::Output {
        self.command(bin)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
    }

    /// Let other users traverse the sandbox (for tests that drop privileges).
    pub fn open_to_all(&self) {
        use std::os::unix::fs::PermissionsExt;
        for dir in [self.root(), &self.runtime_dir(), &self.state_dir()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Poll `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One request over a fresh connection, with the wire format written out by hand.
pub fn call(
    socket: &Path,
    method: &str,
    params: Value,
    token: Option<&str>,
) -> std::io::Result<Value> {
    let mut req = serde_json::json!({"v": 1, "req_id": "t1", "method": method, "params": params});
    if let Some(t) = token {
        req["auth"] = serde_json::json!({"token": t});
    }
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    write_frame(&mut stream, &serde_json::to_vec(&req).unwrap())?;
    let reply = read_frame(&mut stream)?;
    serde_json::from_slice(&reply)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Write one frame: a 4-byte big-endian length, then `payload`.
pub fn write_frame(stream: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(payload.len() as u32).to_be_bytes())?;
    stream.write_all(payload)
}

/// Read one frame's payload.
pub fn read_frame(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Whether `socket` answers `sys.health` with ok.
pub fn healthy(socket: &Path) -> bool {
    call(socket, "sys.health", serde_json::json!({}), None).is_ok_and(|r| r["ok"] == true)
}

/// Whether this test process runs as root (needed to drop privileges or use cgroups).
// Unsafe: geteuid(2), which std does not wrap.
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Print why a test is skipped; returns true when it should be.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        skip(test, "needs root (CI runs as root)");
        true
    }
}

/// The file naming the skips CI accepts, relative to the workspace root.
pub const ALLOWED_SKIPS: &str = ".ci/allowed-skips";

/// Report that `test` is skipped because of `why` (prints `SKIPPED <test>: <why>`). In CI
/// (`CI=true`) as root a skip is a failure, and this panics, unless [`ALLOWED_SKIPS`]
/// names the test: CI installs everything a test needs, so a skip there means a test
/// silently stopped running. Every test that skips itself calls this.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let allowed = std::fs::read_to_string(workspace_root().join(ALLOWED_SKIPS)).unwrap_or_default();
    if let Err(e) = skip_verdict(ci, is_root(), &allowed, test) {
        panic!("{e}");
    }
}

/// Whether a skip of `test` is acceptable: always outside CI or when not root (a
/// developer's machine), in CI as root only when `allowed` (the [`ALLOWED_SKIPS`] text:
/// one `test-name  reason` per line, `#` comments) lists it with a reason.
pub fn skip_verdict(ci: bool, root: bool, allowed: &str, test: &str) -> Result<(), String> {
    if !ci || !root {
        return Ok(());
    }
    for line in allowed.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if name == test {
            return if reason.trim().is_empty() {
                Err(format!("{ALLOWED_SKIPS} lists {test} without a reason"))
            } else {
                Ok(())
            };
        }
    }
    Err(format!(
        "{test} skipped in CI as root; install what it needs (scripts/install-test-deps.sh) \
         or, if this kernel cannot run it, list it with the reason in {ALLOWED_SKIPS}"
    ))
}

/// The workspace root (where `Cargo.lock` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# comment\n\n  nix_evaluates  the kernel has no nix\nbare_name\n";

    #[test]
    fn a_skip_outside_ci_or_without_root_is_accepted() {
        assert!(skip_verdict(false, true, "", "anything").is_ok());
        assert!(skip_verdict(true, false, "", "anything").is_ok());
    }

    #[test]
    fn in_ci_as_root_only_a_listed_skip_with_a_reason_passes() {
        assert!(skip_verdict(true, true, LIST, "nix_evaluates").is_ok());
        let e = skip_verdict(true, true, LIST, "other_test").unwrap_err();
        assert!(e.contains("other_test skipped in CI"), "{e}");
        let e = skip_verdict(true, true, LIST, "bare_name").unwrap_err();
        assert!(e.contains("without a reason"), "{e}");
        // A comment naming a test does not allow it.
        assert!(skip_verdict(true, true, "# nix_evaluates reason", "nix_evaluates").is_err());
    }

    #[test]
    fn the_allow_list_lists_only_tests_with_reasons() {
        let text = std::fs::read_to_string(workspace_root().join(ALLOWED_SKIPS))
            .expect("the allow-list exists at the workspace root");
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split_whitespace().next().unwrap();
            assert!(skip_verdict(true, true, &text, name).is_ok(), "{line}");
        }
    }
}
