//! The supervisor's own readiness, told to *its* service manager (systemd's `sd_notify`
//! protocol), as opposed to [`crate::readiness`], where the supervisor plays the service
//! manager for its services.
//!
//! When started with `NOTIFY_SOCKET` (a unit with `Type=notify`), the supervisor sends:
//! - `READY=1` once boot has *settled* (see [`boot_progress`]), with a `STATUS=` line
//!   saying how many services are Healthy and naming the others, then a new `STATUS=`
//!   whenever that changes;
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2` when `WATCHDOG_USEC` is set (and
//!   `WATCHDOG_PID`, if set, is our pid), from the same event loop that runs everything
//!   else, so a wedged supervisor stops petting the watchdog;
//! - `STOPPING=1` when SIGTERM or SIGINT begins the shutdown.
//!
//! [`ServiceManager::take_from_env`] removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` from the process environment, so nothing the supervisor starts could
//! speak for it (services get a clean environment anyway, with a `NOTIFY_SOCKET` of their
//! own for `notify` readiness). Sending is best effort: a failure is logged, never fatal.

use crate::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::methods::supervisor::SvcState;

/// The variables systemd sets for a notify service, removed once read.
const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The socket of the service manager that started us.
#[derive(Debug)]
pub struct ServiceManager {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for log messages.
    shown: String,
    watchdog: Option<Duration>,
}

impl ServiceManager {
    /// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then remove all three from
    /// the environment. `None` when there is no usable `NOTIFY_SOCKET` (not started by a
    /// service manager, or an address kind other than a path or an abstract name).
    ///
    /// Changes the process environment: call it while the process has a single thread.
    pub fn take_from_env() -> Option<ServiceManager> {
        let [socket, usec, pid] = VARIABLES.map(std::env::var_os);
        for var in VARIABLES {
            std::env::remove_var(var);
        }
        let socket = socket.filter(|s| !s.is_empty())?;
        let watchdog = watchdog_interval(
            usec.as_deref().and_then(OsStr::to_str),
            pid.as_deref().and_then(OsStr::to_str),
            std::process::id(),
        );
        match ServiceManager::connect(&socket, watchdog) {
            Ok(manager) => Some(manager),
            Err(e) => {
                // Logging is not set up yet when this runs; stderr reaches the journal.
                eprintln!(
                    "strata-supervisor: ignoring NOTIFY_SOCKET={}: {e}",
                    socket.to_string_lossy()
                );
                None
            }
        }
    }

    /// A manager reached at `notify_socket`: an absolute path, or `@name` for an abstract
    /// socket.
    pub fn connect(notify_socket: &OsStr, watchdog: Option<Duration>) -> io::Result<Self> {
        let bytes = notify_socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(notify_socket)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must not stall the event loop; such a message is dropped.
        socket.set_nonblocking(true)?;
        Ok(ServiceManager {
            socket,
            addr,
            shown: notify_socket.to_string_lossy().into_owned(),
            watchdog,
        })
    }

    /// How often to send `WATCHDOG=1`, if the manager asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send one notification: newline-separated `KEY=value` assignments.
    pub fn notify(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }

    /// [`ServiceManager::notify`], logging a failure instead of returning it.
    fn tell(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            tracing::warn!(socket = %self.shown, error = %e, notification = message, "cannot notify the service manager");
        }
    }
}

/// Half of `WATCHDOG_USEC` (systemd's advice: ping at half the timeout), or `None` when
/// the watchdog is off: no or an unparsable or zero `WATCHDOG_USEC`, or a `WATCHDOG_PID`
/// that is not `own_pid` (the watchdog is meant for another process of the unit).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_micros(1)))
}

/// What [`boot_progress`] needs to know about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Its state.
    pub state: SvcState,
    /// What it depends on.
    pub depends_on: Vec<String>,
}

/// Where boot stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootProgress {
    /// Some service's first start is still undecided: it is starting, or declared and
    /// about to start, or waiting for dependencies that are.
    Underway,
    /// Boot is over (see [`boot_progress`]); the text is [`summary`]'s.
    Settled(String),
}

/// `all 3 services Healthy`, or `1 of 3 services Healthy; not Healthy: broken Crashed,
/// web Declared` (names in order). The `STATUS=` text.
pub fn summary(services: &BTreeMap<String, ServiceView>) -> String {
    let others: Vec<String> = services
        .iter()
        .filter(|(_, s)| s.state != SvcState::Healthy)
        .map(|(name, s)| format!("{name} {:?}", s.state))
        .collect();
    let total = services.len();
    if others.is_empty() {
        format!("all {total} services Healthy")
    } else {
        format!(
            "{} of {total} services Healthy; not Healthy: {}",
            total - others.len(),
            others.join(", ")
        )
    }
}

/// Whether boot has settled: whether every service's first start has been decided. It
/// has for a service that is
/// - Healthy, or
/// - failed or stopped: Crashed, Restarting (in backoff after a crash), Quarantined,
///   Stopped, or
/// - Declared while one of its dependencies is decided without being Healthy, so it
///   cannot start until that one recovers.
///
/// So `READY=1` means "all Healthy" for a graph that comes up, and comes as soon as every
/// service has had its chance otherwise, rather than holding the unit in "activating"
/// until a crash loop ends (or, with `quarantine.crashes = 0`, forever, until systemd's
/// start timeout restarts the whole node): crash loops are the supervisor's to handle,
/// and `STATUS=` names what is not Healthy.
pub fn boot_progress(services: &BTreeMap<String, ServiceView>) -> BootProgress {
    fn decided(
        name: &str,
        services: &BTreeMap<String, ServiceView>,
        memo: &mut BTreeMap<String, bool>,
    ) -> bool {
        if let Some(known) = memo.get(name) {
            return *known;
        }
        // A cycle (impossible in a validated manifest) reads as undecided.
        memo.insert(name.to_owned(), false);
        let verdict = match services.get(name) {
            // A dependency that is not declared never starts: its dependents are stuck.
            None => true,
            Some(s) => match s.state {
                SvcState::Starting => false,
                SvcState::Declared => s.depends_on.iter().any(|dep| {
                    decided(dep, services, memo)
                        && services.get(dep).map(|d| d.state) != Some(SvcState::Healthy)
                }),
                SvcState::Healthy
                | SvcState::Crashed
                | SvcState::Restarting
                | SvcState::Quarantined
                | SvcState::Stopped => true,
            },
        };
        memo.insert(name.to_owned(), verdict);
        verdict
    }

    let mut memo = BTreeMap::new();
    if services
        .keys()
        .all(|name| decided(name, services, &mut memo))
    {
        BootProgress::Settled(summary(services))
    } else {
        BootProgress::Underway
    }
}

fn views(supervisor: &Supervisor) -> BTreeMap<String, ServiceView> {
    supervisor
        .shared
        .table()
        .services
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                ServiceView {
                    state: r.state,
                    depends_on: r.spec.depends_on.clone(),
                },
            )
        })
        .collect()
}

/// Send `READY=1` with `STATUS=` once boot has settled, then a new `STATUS=` whenever the
/// summary changes, until shutdown begins. Runs as a task from boot on.
pub(crate) async fn report_status(supervisor: Supervisor, manager: Arc<ServiceManager>) {
    let mut changed = supervisor.shared.changed.subscribe();
    let mut told: Option<String> = None;
    loop {
        if supervisor.shared.is_shutting_down() {
            return;
        }
        let services = views(&supervisor);
        match (&told, boot_progress(&services)) {
            (None, BootProgress::Underway) => {}
            (None, BootProgress::Settled(status)) => {
                tracing::info!(%status, "boot settled: READY=1 to the service manager");
                manager.tell(&format!("READY=1\nSTATUS={status}"));
                told = Some(status);
            }
            (Some(previous), _) => {
                let status = summary(&services);
                if *previous != status {
                    manager.tell(&format!("STATUS={status}"));
                    told = Some(status);
                }
            }
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Send `WATCHDOG=1` every `interval`, for as long as the runtime runs.
pub(crate) async fn keep_watchdog(manager: Arc<ServiceManager>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        manager.tell("WATCHDOG=1");
    }
}

/// Send `STOPPING=1`: shutdown has begun.
pub(crate) fn report_stopping(manager: &ServiceManager) {
    manager.tell("STOPPING=1\nSTATUS=stopping services");
}

#[cfg(test)]
mod tests {
    use super::*;
    use SvcState::*;

    fn view(state: SvcState, deps: &[&str]) -> ServiceView {
        ServiceView {
            state,
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn graph(services: &[(&str, ServiceView)]) -> BTreeMap<String, ServiceView> {
        services
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }

    fn settled(status: &str) -> BootProgress {
        BootProgress::Settled(status.to_owned())
    }

    #[test]
    fn the_watchdog_runs_at_half_the_timeout_and_only_for_us() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_interval(Some("1000000"), None, 42), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("42"), 42), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("41"), 42), None);
        assert_eq!(watchdog_interval(Some("1000000"), Some("x"), 42), None);
        assert_eq!(watchdog_interval(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(
            watchdog_interval(Some("1"), None, 42),
            Some(Duration::from_micros(1))
        );
    }

    #[test]
    fn boot_settles_when_all_are_healthy() {
        let mut g = graph(&[("a", view(Healthy, &[])), ("b", view(Starting, &["a"]))]);
        assert_eq!(boot_progress(&g), BootProgress::Underway);
        g.get_mut("b").unwrap().state = Healthy;
        assert_eq!(boot_progress(&g), settled("all 2 services Healthy"));
        assert_eq!(
            boot_progress(&BTreeMap::new()),
            settled("all 0 services Healthy")
        );
    }

    #[test]
    fn services_yet_to_start_keep_boot_underway() {
        let g = graph(&[("a", view(Starting, &[]))]);
        assert_eq!(boot_progress(&g), BootProgress::Underway);
        // Declared with no dependencies, or with Healthy ones: about to start.
        let g = graph(&[("a", view(Declared, &[]))]);
        assert_eq!(boot_progress(&g), BootProgress::Underway);
        // Waiting for a dependency that is Healthy (about to start) or still starting.
        for dep in [Healthy, Starting, Declared] {
            let g = graph(&[("a", view(dep, &[])), ("b", view(Declared, &["a"]))]);
            assert_eq!(boot_progress(&g), BootProgress::Underway, "{dep:?}");
        }
    }

    #[test]
    fn failed_services_and_their_blocked_dependents_settle_boot() {
        for state in [Crashed, Restarting, Quarantined, Stopped] {
            let g = graph(&[
                ("a", view(state, &[])),
                ("b", view(Declared, &["a"])),
                ("c", view(Declared, &["b"])),
                ("d", view(Healthy, &[])),
            ]);
            assert_eq!(
                boot_progress(&g),
                settled(&format!(
                    "1 of 4 services Healthy; not Healthy: a {state:?}, b Declared, c Declared"
                )),
                "{state:?}"
            );
        }
        // One blocked dependency is enough, but not while another is still starting.
        let mut g = graph(&[
            ("a", view(Quarantined, &[])),
            ("b", view(Starting, &[])),
            ("c", view(Declared, &["a", "b"])),
        ]);
        assert_eq!(boot_progress(&g), BootProgress::Underway, "b is starting");
        g.get_mut("b").unwrap().state = Healthy;
        assert!(matches!(boot_progress(&g), BootProgress::Settled(_)));
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let manager = ServiceManager::connect(path.as_os_str(), None).unwrap();
        manager.notify("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        let name = format!("strata-test-notify-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let manager = ServiceManager::connect(OsStr::new(&format!("@{name}")), None).unwrap();
        manager.notify("WATCHDOG=1").unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn unusable_notify_sockets_are_refused() {
        for bad in ["", "relative/notify", "vsock:2:1234"] {
            assert!(
                ServiceManager::connect(OsStr::new(bad), None).is_err(),
                "{bad:?}"
            );
        }
    }
}
