//! Shared support for the supervisor's process tests: a supervisor running a manifest in
//! its own sandbox, and typed access to its control socket.
// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use strata_testkit::{call, wait_until, Proc, Sandbox, DEADLINE};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_strata-supervisor");

/// A supervisor under test.
pub struct Sup {
    pub sandbox: Sandbox,
    pub proc: Proc,
    pub manifest: PathBuf,
}

/// The command line of a supervisor for `sandbox` (not started).
pub fn supervisor_command(sandbox: &Sandbox) -> Command {
    let mut cmd = Command::new(SUPERVISOR);
    cmd.env("STRATA_RUNTIME_DIR", sandbox.runtime_dir())
        .env("STRATA_STATE_DIR", sandbox.state_dir())
        .env_remove("STRATA_CONFIG")
        .env_remove("STRATA_TOKEN")
        // A test run under systemd would otherwise send every service line to the
        // journal; the journal test sets it itself.
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null());
    if std::env::var_os("STRATA_LOG").is_none() {
        // The supervisor's own log; set STRATA_LOG=debug to see it all.
        cmd.env("STRATA_LOG", "warn");
    }
    cmd
}

/// A script that sends `READY=1` to `$NOTIFY_SOCKET` (perl is part of every Debian base
/// system), written into the sandbox as `{root}/notify`.
pub fn write_notify_script(sandbox: &Sandbox) {
    use std::os::unix::fs::PermissionsExt;
    let path = sandbox.root().join("notify");
    std::fs::write(
        &path,
        "#!/bin/sh\nexec perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die \"socket: $!\"; \
         send($s, \"READY=1\", 0, pack_sockaddr_un($ENV{NOTIFY_SOCKET})) or die \"send: $!\"'\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `{root}` in a manifest stands for the sandbox root, `{registry}` for the registry
/// binary.
pub fn expand(text: &str, sandbox: &Sandbox) -> String {
    let text = text.replace("{root}", &sandbox.root().display().to_string());
    if text.contains("{registry}") {
        text.replace("{registry}", &registry_bin().display().to_string())
    } else {
        text
    }
}

pub fn registry_bin() -> PathBuf {
    strata_testkit::binary("strata-registry")
}

impl Sup {
    /// Start a supervisor on `manifest` (see [`expand`]) and wait for its control socket.
    pub fn start(manifest: &str) -> Sup {
        Sup::start_in(Sandbox::new(), manifest, &[])
    }

    pub fn start_in(sandbox: Sandbox, manifest: &str, extra_args: &[&str]) -> Sup {
        let path = sandbox.root().join("manifest.toml");
        std::fs::write(&path, expand(manifest, &sandbox)).unwrap();
        let mut cmd = supervisor_command(&sandbox);
        cmd.arg("--config").arg(&path).args(extra_args);
        let proc = Proc::spawn("strata-supervisor", &mut cmd);
        let sup = Sup {
            sandbox,
            proc,
            manifest: path,
        };
        let socket = sup.socket();
        wait_until("the supervisor's control socket", DEADLINE, || {
            strata_testkit::healthy(&socket)
        });
        sup
    }

    pub fn root(&self) -> &Path {
        self.sandbox.root()
    }

    pub fn socket(&self) -> PathBuf {
        self.sandbox.socket("supervisor")
    }

    /// The whole response envelope.
    pub fn call(&self, method: &str, params: Value) -> Value {
        call(&self.socket(), method, params, None).expect("the control socket answers")
    }

    /// The result of a call that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert_eq!(r["ok"], true, "{method} failed: {r}");
        r["result"].clone()
    }

    /// The error of a call that must fail.
    pub fn err(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert_eq!(r["ok"], false, "{method} unexpectedly succeeded: {r}");
        r["error"].clone()
    }

    pub fn list(&self) -> Vec<Value> {
        self.ok("supervisor.svc.list", json!({}))["services"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn service(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in svc.list"))
    }

    pub fn state(&self, name: &str) -> String {
        self.service(name)["state"].as_str().unwrap().to_owned()
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        self.service(name)["pid"].as_i64().map(|p| p as i32)
    }

    /// Wait until `name` is in `state`; returns its svc.list entry.
    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait_state_within(name, state, DEADLINE)
    }

    pub fn wait_state_within(&self, name: &str, state: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if s["state"] == state {
                return s;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {name} to be {state}; last: {s}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn audit(&self) -> Vec<Value> {
        audit_events(&self.sandbox.state_dir())
    }

    pub fn audit_of(&self, event: &str, service: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == event && e["service"] == service)
            .collect()
    }
}

pub fn audit_events(state_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(state_dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

/// Assert that `holds` stays true for all of `window`, checked every few milliseconds: the
/// absence of something (a restart, a registration) polled for until a deadline, not
/// slept through and checked once.
pub fn holds_for(what: &str, window: Duration, mut holds: impl FnMut() -> bool) {
    let until = Instant::now() + window;
    loop {
        assert!(holds(), "{what}");
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether any process of the process group `pgid` is left.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Lines of a file the test services append to, empty if it does not exist yet.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
