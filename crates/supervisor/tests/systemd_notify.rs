//! The supervisor under a service manager: the test plays systemd, binding the datagram
//! socket it hands over as `NOTIFY_SOCKET`, and checks `READY=1` (only once boot has
//! settled, then `STATUS=` as services change), `WATCHDOG=1` (repeatedly, when
//! `WATCHDOG_USEC` is set) and `STOPPING=1` (on SIGTERM), and that systemd's variables
//! never reach the services.

mod common;

use common::{lines, supervisor_command, Sup};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_testkit::{wait_until, Proc, Sandbox, DEADLINE};

/// The service manager's end of `NOTIFY_SOCKET`: every datagram received, in order.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
    received: Vec<String>,
}

impl Systemd {
    fn bind(sandbox: &Sandbox) -> Systemd {
        let path = sandbox.root().join("systemd-notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Systemd {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// The next datagram, if one arrives before `until`.
    fn next(&mut self, until: Instant) -> Option<String> {
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
                    self.received.push(msg.clone());
                    return Some(msg);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv on the notify socket: {e}"),
            }
        }
        None
    }

    /// Wait for a datagram with the line `line`; returns the whole datagram.
    fn expect(&mut self, line: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            match self.next(until) {
                Some(msg) if has_line(&msg, line) => return msg,
                Some(_) => {}
                None => panic!(
                    "no {line} within {DEADLINE:?}; received: {:?}",
                    self.received
                ),
            }
        }
    }

    /// Everything already queued, without waiting.
    fn drain(&mut self) -> Vec<String> {
        let first = self.received.len();
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => self
                    .received
                    .push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv on the notify socket: {e}"),
            }
        }
        self.socket.set_nonblocking(false).unwrap();
        self.received[first..].to_vec()
    }

    fn count(&self, line: &str) -> usize {
        self.received.iter().filter(|m| has_line(m, line)).count()
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

/// Start a supervisor on `manifest` under `systemd`, with `env` added.
fn start(sandbox: Sandbox, systemd: &Systemd, manifest: &str, env: &[(&str, &str)]) -> Sup {
    let path = sandbox.root().join("manifest.toml");
    std::fs::write(&path, common::expand(manifest, &sandbox)).unwrap();
    let mut cmd = supervisor_command(&sandbox);
    cmd.arg("--config")
        .arg(&path)
        .env("NOTIFY_SOCKET", &systemd.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    for (k, v) in env {
        cmd.env(k, v);
    }
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

/// A `notify` service that records its `NOTIFY_SOCKET`, waits until the test creates
/// `{root}/open`, then says `READY=1` and keeps running.
fn write_gated_service(root: &Path) {
    let path = root.join("gated");
    let root = root.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             printf '%s' \"$NOTIFY_SOCKET\" > {root}/gated.notify-socket.tmp\n\
             mv {root}/gated.notify-socket.tmp {root}/gated.notify-socket\n\
             while [ ! -e {root}/open ]; do sleep 0.01; done\n\
             perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_DGRAM, 0) or die \"socket: $!\"; \
             send($s, \"READY=1\", 0, pack_sockaddr_un($ENV{{NOTIFY_SOCKET}})) or die \"send: $!\"'\n\
             exec sleep 1000\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const GATED: &str = r#"
[[service]]
name = "first"
exec = "/bin/sh"
args = ["-c", "env > {root}/first.env.tmp && mv {root}/first.env.tmp {root}/first.env; exec sleep 1000"]
readiness = "started"

[[service]]
name = "gated"
exec = "{root}/gated"
readiness = "notify"
ready_timeout = "60s"
depends_on = ["first"]

[[service]]
name = "last"
exec = "/bin/sh"
args = ["-c", "exec sleep 1000"]
readiness = "started"
depends_on = ["gated"]
"#;

#[test]
fn ready_after_healthy_watchdog_while_running_stopping_on_sigterm() {
    let sandbox = Sandbox::new();
    write_gated_service(sandbox.root());
    let mut systemd = Systemd::bind(&sandbox);
    // 100 ms: a WATCHDOG=1 every 50 ms.
    let mut sup = start(sandbox, &systemd, GATED, &[("WATCHDOG_USEC", "100000")]);

    // `first` is Healthy and `gated` waits for the test: not ready yet, however long the
    // supervisor keeps running (three watchdog periods here).
    sup.wait_state("first", "Healthy");
    sup.wait_state("gated", "Starting");
    assert_eq!(sup.state("last"), "Declared");
    systemd.drain();
    for _ in 0..3 {
        systemd.expect("WATCHDOG=1");
    }
    assert_eq!(
        systemd.count("READY=1"),
        0,
        "READY=1 before the graph was Healthy: {:?}",
        systemd.received
    );

    // Open the gate: READY=1 once all three are Healthy, and not before `last` is.
    std::fs::write(sup.root().join("open"), "").unwrap();
    let ready = systemd.expect("READY=1");
    for service in sup.list() {
        assert_eq!(service["state"], "Healthy", "READY=1 too early: {service}");
    }
    assert!(
        has_line(&ready, "STATUS=all 3 services Healthy"),
        "{ready:?}"
    );

    // STATUS= follows the services after READY=1.
    sup.ok("supervisor.svc.stop", json!({"name": "last"}));
    systemd.expect("STATUS=2 of 3 services Healthy; not Healthy: last Stopped");
    sup.ok("supervisor.svc.start", json!({"name": "last"}));
    systemd.expect("STATUS=all 3 services Healthy");

    // The watchdog keeps coming after READY=1, and READY=1 is said once.
    let before = systemd.count("WATCHDOG=1");
    systemd.expect("WATCHDOG=1");
    systemd.expect("WATCHDOG=1");
    assert!(systemd.count("WATCHDOG=1") >= before + 2);
    assert_eq!(systemd.count("READY=1"), 1, "{:?}", systemd.received);

    // systemd's variables reach no service: `first` has none of them, and `gated` has the
    // NOTIFY_SOCKET the supervisor made for it.
    let first_env = sup.root().join("first.env");
    wait_until("first's environment dump", DEADLINE, || first_env.exists());
    let env = lines(&first_env);
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !env.iter().any(|l| l.starts_with(&format!("{var}="))),
            "{var} leaked to a service: {env:?}"
        );
    }
    assert!(
        env.iter().any(|l| l == "STRATA_SERVICE=first"),
        "not the service's environment: {env:?}"
    );
    let gated_socket =
        std::fs::read_to_string(sup.root().join("gated.notify-socket")).expect("gated ran");
    assert_eq!(
        Path::new(&gated_socket),
        sup.sandbox.runtime_dir().join("notify/gated.sock")
    );
    assert_ne!(Path::new(&gated_socket), systemd.path);

    // SIGTERM: STOPPING=1, then a clean exit.
    sup.proc.signal(libc::SIGTERM);
    let stopping = systemd.expect("STOPPING=1");
    assert!(!has_line(&stopping, "READY=1"), "{stopping:?}");
    let status = sup
        .proc
        .wait_timeout(DEADLINE)
        .expect("the supervisor exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn ready_when_boot_settles_with_a_service_that_failed_for_good() {
    let sandbox = Sandbox::new();
    let mut systemd = Systemd::bind(&sandbox);
    // `broken` exits before it is ready and is never restarted; `after` can never start.
    let manifest = r#"
[[service]]
name = "ok"
exec = "/bin/sh"
args = ["-c", "exec sleep 1000"]
readiness = "started"

[[service]]
name = "broken"
exec = "/bin/sh"
args = ["-c", "exit 3"]
readiness = "notify"
restart = "never"

[[service]]
name = "after"
exec = "/bin/sh"
args = ["-c", "exec sleep 1000"]
readiness = "started"
depends_on = ["broken"]
"#;
    let mut sup = start(sandbox, &systemd, manifest, &[]);
    let ready = systemd.expect("READY=1");
    assert!(
        has_line(
            &ready,
            "STATUS=1 of 3 services Healthy; not Healthy: after Declared, broken Crashed"
        ),
        "{ready:?}"
    );
    assert_eq!(sup.state("ok"), "Healthy");
    assert_eq!(sup.state("broken"), "Crashed");
    assert_eq!(sup.state("after"), "Declared");

    sup.proc.signal(libc::SIGTERM);
    systemd.expect("STOPPING=1");
    let status = sup
        .proc
        .wait_timeout(DEADLINE)
        .expect("the supervisor exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        systemd.count("WATCHDOG=1"),
        0,
        "no WATCHDOG_USEC, no watchdog: {:?}",
        systemd.received
    );
}
