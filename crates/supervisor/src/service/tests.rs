//! The lifecycle against a fake spawner: scripted exits, no real processes, on Tokio's
//! paused clock, so backoff delays are exact and "nothing happens for ten minutes" is a
//! fact about virtual time rather than a guess about a race.

use crate::cgroup::Unavailable;
use crate::error::ControlError;
use crate::manifest::{Manifest, Readiness, RestartPolicy, ServiceSpec};
use crate::process::{ExitStatus, ProgramLookup, SpawnError, SpawnPlan, Spawned};
use crate::spawner::Spawner;
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::units::HumanDuration;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::methods::supervisor::SvcState::{self, *};
use tokio::sync::oneshot;
use tokio::time::Instant;

mod refused;
mod routing;
mod routing_ends;

/// What one scripted run does.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Exits with `status` this long after it started.
    Exit { after: Duration, status: ExitStatus },
    /// Runs until signalled, then ends by that signal.
    Run,
}

/// A run's script for "exits with `code` 1 ms after it started" (so a `started` service is
/// seen Healthy first, as a real process that exits a moment later would be).
fn exits(code: i32) -> Script {
    Script::Exit {
        after: Duration::from_millis(1),
        status: ExitStatus::Code(code),
    }
}

#[derive(Default)]
struct FakeState {
    /// Per service, the scripts of its next runs; with none left, a run runs.
    scripts: HashMap<String, VecDeque<Script>>,
    /// Running fake processes by pid.
    live: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Every spawn: service and (virtual) time.
    spawns: Vec<(String, Instant)>,
    /// Every signal sent to a live process group.
    signals: Vec<(i32, i32)>,
    next_pid: i32,
}

#[derive(Default)]
struct FakeSpawner {
    state: Mutex<FakeState>,
}

impl FakeSpawner {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn script(&self, service: &str, runs: impl IntoIterator<Item = Script>) {
        self.lock()
            .scripts
            .entry(service.to_owned())
            .or_default()
            .extend(runs);
    }

    fn spawn_times(&self, service: &str) -> Vec<Instant> {
        let state = self.lock();
        state
            .spawns
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Spawner for FakeSpawner {
    fn spawn(
        &self,
        plan: SpawnPlan,
    ) -> Result<(Spawned, oneshot::Receiver<ExitStatus>), SpawnError> {
        let service = plan
            .env
            .iter()
            .find(|(k, _)| k == "STRATA_SERVICE")
            .map(|(_, v)| v.clone())
            .expect("every plan names its service");
        let pipe = |what: &str| {
            // The write end drops at once: the service's output is empty.
            std::io::pipe()
                .map(|(read, _write)| read.into())
                .map_err(|source| SpawnError::Prepare {
                    what: what.to_owned(),
                    source,
                })
        };
        let (stdout, stderr) = (pipe("stdout")?, pipe("stderr")?);
        let mut state = self.lock();
        state.next_pid += 1;
        // Far above any real pid, and never signalled for real: signals come back here.
        let pid = 10_000_000 + state.next_pid;
        state.spawns.push((service.clone(), Instant::now()));
        let (tx, rx) = oneshot::channel();
        let script = state
            .scripts
            .get_mut(&service)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Script::Run);
        match script {
            Script::Exit { after, status } => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(status);
                });
            }
            Script::Run => {
                state.live.insert(pid, tx);
            }
        }
        Ok((
            Spawned {
                pid,
                stdout,
                stderr,
            },
            rx,
        ))
    }

    fn signal_group(&self, pgid: i32, sig: i32) -> bool {
        let mut state = self.lock();
        if !state.live.contains_key(&pgid) {
            return false;
        }
        state.signals.push((pgid, sig));
        if sig != 0 && sig != libc::SIGCONT {
            let tx = state.live.remove(&pgid).expect("checked above");
            let _ = tx.send(ExitStatus::Signal(sig));
        }
        true
    }
}

/// A supervisor over the fake spawner, its directories in a temporary one.
struct Harness {
    sup: Supervisor,
    fake: Arc<FakeSpawner>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Boot `services` after scripting their runs with `script`.
    fn boot(services: Vec<ServiceSpec>, script: impl FnOnce(&FakeSpawner)) -> Harness {
        Harness::boot_with(services, script, |_| {})
    }

    /// [`Harness::boot`], with `before` run on the supervisor before it boots.
    fn boot_with(
        services: Vec<ServiceSpec>,
        script: impl FnOnce(&FakeSpawner),
        before: impl FnOnce(&Supervisor),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let runtime_dir = dir.path().join("run");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(runtime_dir.join("notify")).unwrap();
        std::fs::create_dir_all(state_dir.join("logs")).unwrap();
        let manifest = Manifest {
            services,
            ..Manifest::default()
        };
        manifest.validate().unwrap();
        let config = SupervisorConfig {
            runtime_dir,
            state_dir,
            node_id: "unit".to_owned(),
            cluster_env: Vec::new(),
            manifest,
            manifest_path: None,
            control_socket_mode: 0o660,
            metrics_listen: None,
            metrics_token_file: None,
            socket_group: None,
            programs: ProgramLookup::default(),
        };
        let fake = Arc::new(FakeSpawner::default());
        script(&fake);
        let spawner: Arc<dyn Spawner> = Arc::clone(&fake) as Arc<dyn Spawner>;
        let sup = Supervisor::assemble(
            config,
            None,
            Err(Unavailable("unit test".to_owned())),
            spawner,
        );
        before(&sup);
        sup.boot();
        Harness {
            sup,
            fake,
            _dir: dir,
        }
    }

    fn state(&self, name: &str) -> Option<SvcState> {
        self.sup.shared.state_of(name)
    }

    /// Wait (in virtual time, so effectively without limit) until `name` is in `state`.
    async fn wait_state(&self, name: &str, state: SvcState) {
        let mut changed = self.sup.shared.changed.subscribe();
        let until = Instant::now() + Duration::from_secs(3600);
        while self.state(name) != Some(state) {
            let left = until.saturating_duration_since(Instant::now());
            let woke = tokio::time::timeout(left, changed.changed()).await;
            assert!(
                woke.is_ok(),
                "{name} never became {state:?}; it is {:?}",
                self.state(name)
            );
        }
    }

    /// The states `name` went through, in order.
    fn journal(&self, name: &str) -> Vec<SvcState> {
        let transitions = self.sup.shared.transitions.lock().unwrap();
        transitions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .collect()
    }

    fn restarts(&self, name: &str) -> u64 {
        self.sup.shared.table().services[name].restarts
    }
}

/// A service that is ready once its process runs, as the fake's services are.
fn started(name: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "/bin/true");
    spec.readiness = Readiness::Started;
    spec
}

#[tokio::test(start_paused = true)]
async fn crash_restarts_back_off_exponentially_up_to_the_ceiling() {
    let mut spec = started("crashy");
    spec.backoff.base = HumanDuration::millis(100);
    spec.backoff.factor = 2.0;
    spec.backoff.max = HumanDuration::secs(1);
    spec.quarantine.crashes = 0;
    let h = Harness::boot(vec![spec], |f| f.script("crashy", [exits(3); 6]));
    // Six crashes, then the seventh run stays up.
    while h.fake.spawn_times("crashy").len() < 7 {
        h.wait_state("crashy", Restarting).await;
        h.wait_state("crashy", Healthy).await;
    }
    let starts = h.fake.spawn_times("crashy");
    // Each gap is the run's 1 ms, then the backoff.
    let delays_ms: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0] - Duration::from_millis(1)).as_millis())
        .collect();
    assert_eq!(delays_ms, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(h.restarts("crashy"), 6);
    assert_eq!(h.state("crashy"), Some(Healthy));
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_quarantined_until_an_operator_starts_it() {
    let mut spec = started("loop");
    spec.backoff.base = HumanDuration::millis(10);
    spec.backoff.max = HumanDuration::millis(10);
    spec.quarantine.crashes = 3;
    spec.quarantine.window = HumanDuration::secs(60);
    let h = Harness::boot(vec![spec], |f| f.script("loop", [exits(7); 3]));
    h.wait_state("loop", Quarantined).await;
    assert_eq!(h.restarts("loop"), 2, "three crashes: two restarts");
    let one_run = [Starting, Healthy, Crashed];
    let expected: Vec<SvcState> = [&one_run[..], &[Restarting], &one_run, &[Restarting]]
        .concat()
        .into_iter()
        .chain(one_run)
        .chain([Quarantined])
        .collect();
    assert_eq!(h.journal("loop"), expected);
    // Ten minutes of virtual time: every timer there was has fired, and no run started.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.fake.spawn_times("loop").len(), 3);
    assert_eq!(h.state("loop"), Some(Quarantined));

    h.sup.start("loop", Some(0)).await.unwrap();
    assert_eq!(h.state("loop"), Some(Healthy));
    assert_eq!(h.fake.spawn_times("loop").len(), 4);
    let table = h.sup.shared.table();
    assert_eq!(
        table.services["loop"].crashes.recent(),
        0,
        "an operator's start forgives the history"
    );
}

#[tokio::test(start_paused = true)]
async fn the_restart_policy_decides_what_an_exit_leads_to() {
    let mut never = started("never");
    never.restart = RestartPolicy::Never;
    let mut on_failure = started("on-failure");
    on_failure.restart = RestartPolicy::OnFailure;
    let mut always = started("always");
    always.restart = RestartPolicy::Always;
    always.backoff.base = HumanDuration::millis(10);
    let h = Harness::boot(vec![never, on_failure, always], |f| {
        f.script("never", [exits(1)]);
        f.script("on-failure", [exits(0)]);
        f.script("always", [exits(0)]);
    });
    h.wait_state("never", Crashed).await;
    h.wait_state("on-failure", Stopped).await;
    h.wait_state("always", Restarting).await;
    h.wait_state("always", Healthy).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(h.journal("never"), [Starting, Healthy, Crashed]);
    assert_eq!(h.journal("on-failure"), [Starting, Healthy, Stopped]);
    assert_eq!(
        h.journal("always"),
        [Starting, Healthy, Crashed, Restarting, Starting, Healthy]
    );
    assert_eq!(h.fake.spawn_times("never").len(), 1);
    assert_eq!(h.fake.spawn_times("on-failure").len(), 1);
    assert_eq!(h.fake.spawn_times("always").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stop_signals_the_group_and_a_start_of_a_running_service_conflicts() {
    let h = Harness::boot(vec![started("svc")], |_| {});
    h.wait_state("svc", Healthy).await;
    let e = h.sup.start("svc", Some(0)).await.unwrap_err();
    assert!(
        matches!(e, ControlError::AlreadyRunning { state: Healthy, .. }),
        "{e}"
    );
    let also = h
        .sup
        .stop("svc", Duration::from_secs(1), Some(0))
        .await
        .unwrap();
    assert!(also.is_empty());
    assert_eq!(h.journal("svc"), [Starting, Healthy, Stopped]);
    let pid = h.fake.lock().next_pid + 10_000_000;
    assert_eq!(h.fake.lock().signals, [(pid, libc::SIGTERM)]);
    let table = h.sup.shared.table();
    let last = table.services["svc"].last_exit.as_ref().unwrap();
    assert_eq!(last.status, Some(ExitStatus::Signal(libc::SIGTERM)));
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_starting_fails_the_start_that_waits() {
    // Notify readiness that never comes: the run stays Starting.
    let mut spec = ServiceSpec::new("slow", "/bin/true");
    spec.readiness = Readiness::Notify;
    spec.ready_timeout = HumanDuration::secs(3600);
    let h = Harness::boot(vec![spec], |_| {});
    h.wait_state("slow", Starting).await;
    h.sup
        .stop("slow", Duration::from_secs(1), None)
        .await
        .unwrap();
    let sup = h.sup.clone();
    let start = tokio::spawn(async move { sup.start("slow", Some(0)).await });
    h.wait_state("slow", Starting).await;
    let e = h.sup.start("slow", Some(0)).await.unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::AlreadyRunning {
                state: Starting,
                ..
            }
        ),
        "{e}"
    );
    h.sup
        .stop("slow", Duration::from_secs(1), None)
        .await
        .unwrap();
    let e = start.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, ControlError::StartFailed { reason, .. } if reason == "stopped while starting"),
        "{e}"
    );
    assert_eq!(h.journal("slow"), [Starting, Stopped, Starting, Stopped]);
}

#[tokio::test(start_paused = true)]
async fn a_program_that_cannot_start_is_a_crash_with_the_reason() {
    let mut spec = started("missing");
    spec.exec = "/nonexistent/strata-unit-test".to_owned();
    spec.restart = RestartPolicy::Never;
    let h = Harness::boot(vec![spec], |_| {});
    h.wait_state("missing", Crashed).await;
    assert_eq!(h.journal("missing"), [Starting, Crashed]);
    assert!(h.fake.spawn_times("missing").is_empty());
    let table = h.sup.shared.table();
    let last = table.services["missing"].last_exit.as_ref().unwrap();
    assert!(
        last.reason.starts_with("could not start: "),
        "{}",
        last.reason
    );
}
