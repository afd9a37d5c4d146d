//! A real, single-member etcd for tests: own data directory, own loopback ports, killed
//! on drop.
//!
//! ```no_run
//! let Some(mut etcd) = strata_testkit::etcd::Etcd::start_or_skip("my_test") else { return };
//! let endpoint = etcd.endpoint(); // "http://127.0.0.1:PORT"
//! etcd.stop();                    // SIGTERM, then SIGKILL after a deadline
//! etcd.restart().unwrap();        // same data and ports, healthy again
//! ```
//!
//! The binary is `$STRATA_ETCD_BIN` if set, else `etcd` on `PATH`
//! (`scripts/install-test-deps.sh` installs Debian's). Readiness is etcd's own `/health`
//! answering `"health":"true"`, asked over a plain TCP connection, so waiting spawns
//! nothing. etcd's output goes to `etcd.log` in the temporary directory; errors and
//! [`Etcd::log_tail`] quote it.
//!
//! [`Etcd::start_secure`] starts one as production should run it: TLS only, client
//! certificates required, authentication on (see [`secure`]).

use crate::{Proc, DEADLINE};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod secure;
pub use secure::SecureFiles;

/// How long [`Etcd::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How many log lines an error message quotes.
const TAIL_LINES: usize = 30;

/// Why an etcd could not be had.
#[derive(Debug)]
pub enum EtcdError {
    /// No etcd binary: tests should print that they were skipped, and why.
    NotInstalled(String),
    /// It is installed but did not start or become healthy; the message quotes its log.
    Failed(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::NotInstalled(m) | EtcdError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One etcd member serving on 127.0.0.1. Fields drop in order: the process is killed
/// before its directory is removed.
pub struct Etcd {
    proc: Option<Proc>,
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// `--name`; `test` for a single member.
    name: String,
    /// `--initial-cluster`: every member's `name=peer URL`.
    initial_cluster: String,
    /// `--initial-cluster-token`, so members of different test clusters never talk.
    token: String,
    /// TLS and auth ([`Etcd::start_secure`]): the files, and the plain port `/health` is
    /// asked on. `None` for a plain member.
    secure: Option<(SecureFiles, u16)>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Find the binary, pick two free loopback ports, start etcd on a fresh data directory
    /// and wait (up to [`DEADLINE`]) until it reports healthy.
    pub fn start() -> Result<Etcd, EtcdError> {
        let binary = find_binary()?;
        // Ports are free when picked but could be taken before etcd binds them; a start
        // that fails for that reason is retried on new ports.
        let mut attempts = 3;
        loop {
            let ports = free_ports(2)?;
            let (client_port, peer_port) = (ports[0], ports[1]);
            let initial_cluster = format!("test=http://127.0.0.1:{peer_port}");
            let token = format!("strata-test-{peer_port}");
            let mut etcd = Etcd::member(
                &binary,
                "test",
                client_port,
                peer_port,
                initial_cluster,
                token,
            )?;
            match etcd.launch() {
                Ok(()) => return Ok(etcd),
                Err(e) => {
                    attempts -= 1;
                    if attempts == 0 || !etcd.log_tail().contains("address already in use") {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// A member not started yet: its own temporary directory, the given ports, one of the
    /// members `initial_cluster` lists.
    pub(crate) fn member(
        binary: &Path,
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
        token: String,
    ) -> Result<Etcd, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("strata-etcd-")
            .tempdir()
            .map_err(|e| EtcdError::Failed(format!("cannot make a temporary directory: {e}")))?;
        Ok(Etcd {
            proc: None,
            binary: binary.to_owned(),
            client_port,
            peer_port,
            name: name.to_owned(),
            initial_cluster,
            token,
            secure: None,
            dir,
        })
    }

    /// Like [`Etcd::start`], but as production should run etcd: clients only over TLS
    /// (`https://127.0.0.1:PORT`) with a certificate the member's test CA signed
    /// (`--client-cert-auth`, `--trusted-ca-file`), and authentication on, with the user
    /// [`secure::USER`] whose role may read and write [`secure::PREFIX`] only.
    /// [`Etcd::secure`] has the files a client needs; [`Etcd::client_env`] the variables.
    pub fn start_secure() -> Result<Etcd, EtcdError> {
        let mut attempts = 3;
        loop {
            match Etcd::try_start_secure() {
                Ok(etcd) => return Ok(etcd),
                Err((e, log)) => {
                    attempts -= 1;
                    if attempts == 0 || !log.contains("address already in use") {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One attempt of [`Etcd::start_secure`]; on failure also the member's log.
    fn try_start_secure() -> Result<Etcd, (EtcdError, String)> {
        let binary = find_binary().map_err(|e| (e, String::new()))?;
        let ports = free_ports(3).map_err(|e| (e, String::new()))?;
        let (client_port, peer_port, health_port) = (ports[0], ports[1], ports[2]);
        let mut etcd = Etcd::member(
            &binary,
            "test",
            client_port,
            peer_port,
            format!("test=http://127.0.0.1:{peer_port}"),
            format!("strata-test-{peer_port}"),
        )
        .map_err(|e| (e, String::new()))?;
        let fail = |etcd: &Etcd, e: EtcdError| (e, etcd.log_tail());
        let files =
            SecureFiles::create(&etcd.dir.path().join("tls")).map_err(|e| fail(&etcd, e))?;
        // First plain, to make the users and role through the JSON gateway; then TLS only.
        etcd.launch().map_err(|e| fail(&etcd, e))?;
        secure::set_up_auth(client_port, &files).map_err(|e| fail(&etcd, e))?;
        etcd.stop();
        etcd.secure = Some((files, health_port));
        etcd.launch().map_err(|e| fail(&etcd, e))?;
        Ok(etcd)
    }

    /// [`Etcd::start_secure`], or `None` after printing `SKIPPED <test>: <why>` when etcd
    /// is not installed. Panics (with etcd's log) if it is installed but does not start.
    pub fn start_secure_or_skip(test: &str) -> Option<Etcd> {
        match Etcd::start_secure() {
            Ok(etcd) => Some(etcd),
            Err(EtcdError::NotInstalled(why)) => {
                crate::skip(test, &why.to_string());
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// The TLS and auth files of a member from [`Etcd::start_secure`].
    pub fn secure(&self) -> Option<&SecureFiles> {
        self.secure.as_ref().map(|(files, _)| files)
    }

    /// The variables that point a Strata node (or `strata-ctl`) at this etcd:
    /// `STRATA_ETCD_ENDPOINTS`, and for a secure member its CA, client certificate and
    /// key, user and password file (`STRATA_ETCD_CA`, `_CERT`, `_KEY`, `_USER`,
    /// `_PASSWORD_FILE`).
    pub fn client_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("STRATA_ETCD_ENDPOINTS".to_owned(), self.endpoint())];
        if let Some(files) = self.secure() {
            let path = |p: &PathBuf| p.display().to_string();
            env.extend([
                ("STRATA_ETCD_CA".to_owned(), path(&files.ca)),
                ("STRATA_ETCD_CERT".to_owned(), path(&files.cert)),
                ("STRATA_ETCD_KEY".to_owned(), path(&files.key)),
                ("STRATA_ETCD_USER".to_owned(), files.user.clone()),
                (
                    "STRATA_ETCD_PASSWORD_FILE".to_owned(),
                    path(&files.password_file),
                ),
            ]);
        }
        env
    }

    /// [`Etcd::start`], or `None` after printing `SKIPPED <test>: <why>` when etcd is not
    /// installed. Panics (with etcd's log) if it is installed but does not start.
    pub fn start_or_skip(test: &str) -> Option<Etcd> {
        match Etcd::start() {
            Ok(etcd) => Some(etcd),
            Err(EtcdError::NotInstalled(why)) => {
                crate::skip(test, &why.to_string());
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// The client URL, `http://127.0.0.1:PORT` (`https://` for [`Etcd::start_secure`]).
    pub fn endpoint(&self) -> String {
        let scheme = if self.secure.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The peer port on 127.0.0.1.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The member's data directory (kept across [`Etcd::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where etcd's stdout and stderr go (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The running process's pid, if it is running.
    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether `/health` answers `"health":"true"` right now.
    pub fn healthy(&self) -> bool {
        health(self.health_port())
    }

    /// The plain-HTTP port `/health` answers on: the client port, or for a secure member
    /// its metrics port.
    fn health_port(&self) -> u16 {
        self.secure
            .as_ref()
            .map_or(self.client_port, |(_, port)| *port)
    }

    /// Graceful stop: SIGTERM, wait up to 10 s, then SIGKILL. Returns once the process
    /// has exited and been reaped. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(libc::SIGTERM);
            if proc.wait_timeout(STOP_GRACE).is_none() {
                eprintln!("etcd ignored SIGTERM for {STOP_GRACE:?}; killing it");
            }
            reap(proc);
        }
    }

    /// Freezes the process (SIGSTOP) until the returned guard is dropped (SIGCONT): it
    /// keeps its sockets open and answers nothing, as a blackholed member looks to its
    /// clients. Panics if it is not running.
    pub fn pause(&self) -> Paused {
        let pid = self.pid().expect("etcd is running");
        send_signal(pid, libc::SIGSTOP);
        Paused { pid }
    }

    /// Crash: SIGKILL (the whole process group), then reap. Does nothing if it is not
    /// running.
    pub fn kill(&mut self) {
        if let Some(proc) = self.proc.take() {
            reap(proc);
        }
    }

    /// Stop (if running) and start again on the same data directory and ports, waiting
    /// until it is healthy.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.launch()
    }

    /// The last lines etcd wrote, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Spawn etcd on this member's ports and data directory and wait until it is healthy.
    fn launch(&mut self) -> Result<(), EtcdError> {
        self.spawn()?;
        self.wait_healthy(Instant::now() + DEADLINE)
    }

    /// Whether the process is running (it may not be healthy yet).
    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// Spawn etcd on this member's ports and data directory; does not wait.
    pub(crate) fn spawn(&mut self) -> Result<(), EtcdError> {
        assert!(self.proc.is_none(), "etcd is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| self.failed(format!("cannot open etcd's log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| self.failed(format!("cannot open etcd's log: {e}")))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            // 2.5x etcd's defaults (100 ms, 1 s): a loaded 2-core CI machine must not
            // call an election because a member was descheduled for a second.
            .args(["--heartbeat-interval", "250", "--election-timeout", "2500"])
            .args(self.secure.iter().flat_map(|(files, health_port)| {
                let mut flags = files.server_flags();
                flags.push("--listen-metrics-urls".into());
                flags.push(format!("http://127.0.0.1:{health_port}"));
                flags
            }))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // The flags above are the whole configuration: no ETCD_* setting from the
        // environment leaks in, except the one that lets etcd 3.4 run on arm64 at all.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("ETCD_") && key_text != "ETCD_UNSUPPORTED_ARCH" {
                cmd.env_remove(&key);
            }
        }
        if cfg!(target_arch = "aarch64") && std::env::var_os("ETCD_UNSUPPORTED_ARCH").is_none() {
            cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        self.proc = Some(Proc::spawn(&format!("etcd {}", self.name), &mut cmd));
        Ok(())
    }

    /// Waits until `/health` answers healthy, or the process exits, or `until` passes
    /// (the process is killed then).
    pub(crate) fn wait_healthy(&mut self, until: Instant) -> Result<(), EtcdError> {
        loop {
            if health(self.health_port()) {
                return Ok(());
            }
            let Some(proc) = self.proc.as_mut() else {
                return Err(self.failed("etcd is not running".into()));
            };
            if let Some(status) = proc.wait_timeout(Duration::ZERO) {
                self.proc = None;
                return Err(self.failed(format!("etcd exited before it was healthy: {status}")));
            }
            if Instant::now() >= until {
                self.proc = None;
                return Err(self.failed(format!("etcd was not healthy within {DEADLINE:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An error quoting the end of this member's log.
    fn failed(&self, what: String) -> EtcdError {
        EtcdError::Failed(format!(
            "{what}\n--- last lines of {} ---\n{}",
            self.log_path().display(),
            self.log_tail()
        ))
    }
}

/// SIGKILL the process group (through `Proc`'s drop, which also waits for the child).
fn reap(proc: Proc) {
    drop(proc);
}

/// `$STRATA_ETCD_BIN`, else `etcd` on `PATH`.
pub fn find_binary() -> Result<PathBuf, EtcdError> {
    find_binary_in(
        std::env::var_os("STRATA_ETCD_BIN"),
        std::env::var_os("PATH"),
    )
}

fn find_binary_in(
    etcd_bin: Option<OsString>,
    path: Option<OsString>,
) -> Result<PathBuf, EtcdError> {
    if let Some(bin) = etcd_bin.filter(|p| !p.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(EtcdError::NotInstalled(format!(
                "$STRATA_ETCD_BIN={} is not an executable file; run scripts/install-test-deps.sh \
                 (as root) to install etcd, or point $STRATA_ETCD_BIN at an etcd binary",
                bin.display()
            )))
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            EtcdError::NotInstalled(
                "no etcd binary on PATH and $STRATA_ETCD_BIN is not set; run \
                 scripts/install-test-deps.sh (as root) to install it"
                    .into(),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, EtcdError> {
    let failed = |e: std::io::Error| EtcdError::Failed(format!("cannot find a free port: {e}"));
    // All held at once, so they differ.
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(failed))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(failed))
        .collect()
}

/// `GET /health` on the client port: true if etcd answers `"health":"true"`.
pub fn health(client_port: u16) -> bool {
    http(client_port, "GET", "/health", "").is_some_and(|body| body.contains(r#""health":"true""#))
}

/// One HTTP/1.0 request to etcd's client port on 127.0.0.1; the body of a 200 answer.
pub(crate) fn http(client_port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{client_port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    // HTTP/1.0 with Connection: close: the server closes after the body.
    let _ = stream.take(64 * 1024).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.") && head.lines().next()?.contains(" 200 ")).then(|| body.to_owned())
}

/// A frozen etcd member ([`Etcd::pause`]); dropping it lets the member run again.
#[must_use = "dropping the guard resumes the member at once"]
pub struct Paused {
    pid: i32,
}

impl Drop for Paused {
    fn drop(&mut self) {
        send_signal(self.pid, libc::SIGCONT);
    }
}

/// kill(2) with `sig` on `pid` (a child of this process).
// Unsafe: std sends no signal but SIGKILL, and SIGSTOP/SIGCONT are what a pause is.
#[allow(unsafe_code)]
fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned; a stale pid at worst returns ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_binary_in(None, Some(empty.path().into())).unwrap_err();
        assert!(matches!(err, EtcdError::NotInstalled(_)), "{err:?}");
        assert!(
            err.to_string().contains("scripts/install-test-deps.sh"),
            "{err}"
        );
        let err = find_binary_in(
            Some(empty.path().join("etcd").into()),
            Some("/usr/bin:/bin".into()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("$STRATA_ETCD_BIN="), "{err}");
        assert!(
            err.to_string().contains("scripts/install-test-deps.sh"),
            "{err}"
        );
    }

    #[test]
    fn the_binary_is_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("etcd");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_binary_in(None, Some(path)).unwrap(), fake);
        assert_eq!(
            find_binary_in(Some(fake.clone().into()), None).unwrap(),
            fake
        );
    }
}
