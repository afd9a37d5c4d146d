//! Lifecycle with real processes: order, readiness, crashes, backoff, quarantine,
//! stopping, dependents, logs, liveness, and shutdown.

// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]

mod common;

use common::{alive, group_alive, holds_for, lines, write_notify_script, Sup};
use serde_json::json;
use std::time::{Duration, Instant};
use strata_testkit::{wait_until, Sandbox, DEADLINE};

#[test]
fn services_start_in_dependency_order() {
    let sandbox = Sandbox::new();
    write_notify_script(&sandbox);
    // `a` takes 300 ms to become ready; `b` and `c` are instant. If either started before
    // its dependency was Healthy, it would write its line first.
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "c"
        exec = "/bin/sh"
        args = ["-c", "echo c >> {root}/order; exec sleep 1000"]
        readiness = "started"
        depends_on = ["b"]

        [[service]]
        name = "b"
        exec = "/bin/sh"
        args = ["-c", "echo b >> {root}/order; {root}/notify; exec sleep 1000"]
        readiness = "notify"
        depends_on = ["a"]

        [[service]]
        name = "a"
        exec = "/bin/sh"
        args = ["-c", "sleep 0.3; echo a >> {root}/order; {root}/notify; exec sleep 1000"]
        readiness = "notify"
        "#,
        &[],
    );
    sup.wait_state("c", "Healthy");
    // `started` means the process runs, not that its first line has executed.
    let order = sup.root().join("order");
    wait_until("c's line", DEADLINE, || lines(&order).len() == 3);
    assert_eq!(lines(&order), ["a", "b", "c"]);
    let names: Vec<String> = sup
        .list()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "svc.list is in start order");
    for s in sup.list() {
        assert!(s["pid"].as_i64().is_some_and(|p| alive(p as i32)), "{s}");
        assert!(s["since"].as_u64().unwrap() > 0);
    }
}

#[test]
fn a_crashing_service_restarts_with_exponential_backoff() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "crashy"
        exec = "/bin/sh"
        args = ["-c", "date +%s%N >> {root}/starts; exit 3"]
        readiness = "started"
        backoff = { base = "100ms", factor = 2, max = "1s" }
        quarantine = { crashes = 0 }
        "#,
    );
    let starts_file = sup.root().join("starts");
    wait_until("five starts", DEADLINE, || lines(&starts_file).len() >= 5);
    let starts: Vec<u128> = lines(&starts_file)
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let gaps_ms: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    for (i, expected) in [100u128, 200, 400, 800].iter().enumerate() {
        assert!(
            gaps_ms[i] >= expected - 5 && gaps_ms[i] < expected + 700,
            "gap {i} was {} ms, expected about {expected} ms (all: {gaps_ms:?})",
            gaps_ms[i]
        );
    }
    let s = sup.service("crashy");
    assert!(s["restarts"].as_u64().unwrap() >= 4, "{s}");
    assert_eq!(s["last_exit"]["code"], 3, "{s}");
    assert!(sup.audit_of("svc.crash", "crashy").len() >= 4);
}

#[test]
fn a_crash_loop_is_quarantined_until_an_operator_starts_it() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.root().join("broken"), "").unwrap();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "loop"
        exec = "/bin/sh"
        args = ["-c", "echo run >> {root}/runs; if [ -e {root}/broken ]; then exit 7; fi; exec sleep 1000"]
        readiness = "started"
        backoff = { base = "10ms", max = "10ms" }
        quarantine = { crashes = 3, window = "1m" }
        "#,
        &[],
    );
    let s = sup.wait_state("loop", "Quarantined");
    assert_eq!(
        s["restarts"], 2,
        "three crashes: two restarts, then quarantine: {s}"
    );
    assert!(s["pid"].is_null());
    assert_eq!(s["last_exit"]["code"], 7);
    assert_eq!(sup.audit_of("svc.quarantine", "loop").len(), 1);
    // It stays there: no further runs (thirty backoff periods).
    let runs = sup.root().join("runs");
    assert_eq!(lines(&runs).len(), 3);
    holds_for(
        "a quarantined service must not restart",
        Duration::from_millis(300),
        || lines(&runs).len() == 3 && sup.state("loop") == "Quarantined",
    );

    std::fs::remove_file(sup.root().join("broken")).unwrap();
    let r = sup.ok("supervisor.svc.start", json!({"name": "loop"}));
    assert_eq!(r["status"], "started");
    let s = sup.service("loop");
    assert_eq!(s["state"], "Healthy");
    assert_eq!(
        s["crashes_in_window"], 0,
        "an operator's start forgives the history"
    );
    let e = sup.err("supervisor.svc.start", json!({"name": "loop"}));
    assert_eq!(
        e["code"], 8,
        "starting a running service is a CONFLICT: {e}"
    );
    let e = sup.err("supervisor.svc.start", json!({"name": "nope"}));
    assert_eq!(e["code"], 4);
}

#[test]
fn a_service_that_never_answers_is_not_ready_and_is_killed() {
    // It even creates a file where its socket should be: existing is not answering.
    let sup = Sup::start(
        r#"
        [[service]]
        name = "mute"
        exec = "/bin/sh"
        args = ["-c", "touch $STRATA_RUNTIME_DIR/mute.sock; exec sleep 1000"]
        readiness = "health"
        ready_timeout = "300ms"
        restart = "never"
        drain_ms = 200
        "#,
    );
    let s = sup.wait_state("mute", "Crashed");
    let reason = s["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("no readiness within 300ms"), "{reason}");
    let start = &sup.audit_of("svc.start", "mute")[0];
    let pid = start["pid"].as_i64().unwrap() as i32;
    assert!(!alive(pid), "the unready process is killed");
    // An operator's start waits for readiness and reports the failure.
    let began = Instant::now();
    let e = sup.err("supervisor.svc.start", json!({"name": "mute"}));
    assert_eq!(e["code"], 6, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no readiness"),
        "{e}"
    );
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(sup.state("mute"), "Crashed");
}

#[test]
fn stop_signals_waits_the_drain_then_kills_the_group() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "hung"
        exec = "/bin/sh"
        args = ["-c", "trap \"\" TERM; echo armed > {root}/armed; while :; do sleep 0.05; done"]
        readiness = "started"

        [[service]]
        name = "polite"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        "#,
    );
    sup.wait_state("hung", "Healthy");
    sup.wait_state("polite", "Healthy");
    let hung = sup.pid("hung").unwrap();
    let armed = sup.root().join("armed");
    wait_until("the TERM trap", DEADLINE, || lines(&armed).len() == 1);
    assert!(group_alive(hung), "the group is seen while it runs");

    let began = Instant::now();
    let r = sup.ok(
        "supervisor.svc.stop",
        json!({"name": "hung", "drain_ms": 400}),
    );
    let took = began.elapsed();
    assert_eq!(r["status"], "stopped");
    assert!(
        took >= Duration::from_millis(400),
        "stopped after {took:?}, before the drain"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let s = sup.service("hung");
    assert_eq!(s["state"], "Stopped");
    assert_eq!(s["last_exit"]["signal"], 9, "{s}");
    assert!(!alive(hung));
    // Nothing of its process group is left either (its loop's `sleep` included).
    assert!(!group_alive(hung), "a member of group {hung} survived");

    let began = Instant::now();
    sup.ok(
        "supervisor.svc.stop",
        json!({"name": "polite", "drain_ms": 10000}),
    );
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "a polite service stops at once"
    );
    assert_eq!(sup.service("polite")["last_exit"]["signal"], 15);
    let e = sup.err("supervisor.svc.stop", json!({"name": "polite"}));
    assert_eq!(
        e["code"], 8,
        "stopping a stopped service is a CONFLICT: {e}"
    );
    let stops = sup.audit_of("svc.stop", "hung");
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0]["trigger"], "operator");
}

#[test]
fn dependents_keep_running_when_a_dependency_crashes_but_cannot_start_without_it() {
    let sandbox = Sandbox::new();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "base"
        exec = "/bin/sh"
        args = ["-c", "if [ -e {root}/broken ]; then exit 1; fi; exec sleep 1000"]
        readiness = "started"
        backoff = { base = "10ms", max = "10ms" }
        quarantine = { crashes = 2, window = "1m" }

        [[service]]
        name = "app"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        depends_on = ["base"]
        "#,
        &[],
    );
    sup.wait_state("app", "Healthy");
    let app = sup.pid("app").unwrap();
    std::fs::write(sup.root().join("broken"), "").unwrap();
    let base = sup.pid("base").unwrap();
    // SAFETY: signalling the test service's pid.
    unsafe { libc::kill(base, libc::SIGKILL) };
    sup.wait_state("base", "Quarantined");
    let s = sup.service("app");
    assert_eq!(
        s["state"], "Healthy",
        "dependents ride out a dependency's crash"
    );
    assert_eq!(s["pid"], app);

    sup.ok(
        "supervisor.svc.stop",
        json!({"name": "app", "drain_ms": 1000}),
    );
    let e = sup.err("supervisor.svc.start", json!({"name": "app"}));
    assert_eq!(e["code"], 8, "{e}");
    assert_eq!(e["details"]["dependency"], "base", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("`base` is Quarantined"),
        "{e}"
    );

    std::fs::remove_file(sup.root().join("broken")).unwrap();
    sup.ok("supervisor.svc.start", json!({"name": "base"}));
    sup.ok("supervisor.svc.start", json!({"name": "app"}));
    // Stopping a dependency stops its dependents first.
    let r = sup.ok(
        "supervisor.svc.stop",
        json!({"name": "base", "drain_ms": 1000}),
    );
    assert_eq!(r["also_stopped"], json!(["app"]));
    assert_eq!(sup.state("app"), "Stopped");
    assert_eq!(sup.state("base"), "Stopped");
    let stop = &sup.audit_of("svc.stop", "app")[1];
    assert_eq!(stop["trigger"], "dependency-stopped");
}

#[test]
fn a_dependent_that_crashes_while_its_dependency_is_down_waits_in_restarting() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "base"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        restart = "never"

        [[service]]
        name = "app"
        exec = "/bin/sh"
        args = ["-c", "echo run >> {root}/app-runs; exec sleep 1000"]
        readiness = "started"
        depends_on = ["base"]
        backoff = { base = "10ms", max = "10ms" }
        "#,
    );
    sup.wait_state("app", "Healthy");
    let runs = sup.root().join("app-runs");
    wait_until("app's first run", DEADLINE, || lines(&runs).len() == 1);
    // SAFETY: signalling the test services' pids.
    unsafe { libc::kill(sup.pid("base").unwrap(), libc::SIGKILL) };
    sup.wait_state("base", "Crashed");
    // SAFETY: as above.
    unsafe { libc::kill(sup.pid("app").unwrap(), libc::SIGKILL) };
    sup.wait_state("app", "Restarting");
    // Twenty backoff periods.
    holds_for(
        "no start while base is not Healthy",
        Duration::from_millis(200),
        || sup.state("app") == "Restarting" && lines(&runs).len() == 1,
    );
    sup.ok("supervisor.svc.start", json!({"name": "base"}));
    sup.wait_state("app", "Healthy");
    wait_until("app's second run", DEADLINE, || lines(&runs).len() == 2);
}

#[test]
fn output_is_captured_per_service() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "talker"
        exec = "/bin/sh"
        args = ["-c", "echo to-stdout; echo to-stderr >&2; exec sleep 1000"]
        readiness = "started"
        "#,
    );
    sup.wait_state("talker", "Healthy");
    wait_until("both lines", DEADLINE, || {
        let r = sup.ok(
            "supervisor.svc.logs",
            json!({"name": "talker", "lines": 50}),
        );
        r["lines"].as_array().unwrap().len() >= 3
    });
    let r = sup.ok(
        "supervisor.svc.logs",
        json!({"name": "talker", "lines": 50}),
    );
    let got: Vec<(String, String)> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        got.contains(&("stdout".into(), "to-stdout".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("stderr".into(), "to-stderr".into())),
        "{got:?}"
    );
    assert_eq!(got[0].0, "supervisor");
    let last = sup.ok("supervisor.svc.logs", json!({"name": "talker", "lines": 1}));
    assert_eq!(last["lines"].as_array().unwrap().len(), 1);
    let file = std::fs::read_to_string(sup.sandbox.state_dir().join("logs/talker.log")).unwrap();
    assert!(file.contains(" stdout to-stdout"), "{file}");
    assert!(file.contains(" stderr to-stderr"), "{file}");
    let e = sup.err("supervisor.svc.logs", json!({"name": "talker", "lines": 0}));
    assert_eq!(e["code"], 1);
}

#[test]
fn a_healthy_service_that_stops_answering_is_restarted() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "registry"
        exec = "{registry}"
        health_interval = "100ms"
        health_timeout = "100ms"
        health_failures = 2
        drain_ms = 100
        backoff = { base = "0", max = "0" }
        "#,
    );
    let first = sup.wait_state("registry", "Healthy")["pid"]
        .as_i64()
        .unwrap() as i32;
    // A stopped process keeps its socket but answers nothing.
    // SAFETY: signalling the test service's pid.
    unsafe { libc::kill(first, libc::SIGSTOP) };
    wait_until("a new, Healthy registry", DEADLINE, || {
        let s = sup.service("registry");
        s["state"] == "Healthy" && s["pid"].as_i64().is_some_and(|p| p as i32 != first)
    });
    let s = sup.service("registry");
    let reason = s["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("stopped answering sys.health"), "{reason}");
    assert_eq!(s["restarts"], 1);
    assert!(!alive(first));
    assert!(strata_testkit::healthy(&sup.sandbox.socket("registry")));
}

#[test]
fn sigterm_stops_services_in_reverse_dependency_order_and_exits_zero() {
    let mut sup = Sup::start(
        r#"
        [[service]]
        name = "a"
        exec = "/bin/sh"
        args = ["-c", 'trap "echo a >> {root}/stops; exit 0" TERM; echo a >> {root}/armed; while :; do sleep 0.05; done']
        readiness = "started"

        [[service]]
        name = "b"
        exec = "/bin/sh"
        args = ["-c", 'trap "echo b >> {root}/stops; exit 0" TERM; echo b >> {root}/armed; while :; do sleep 0.05; done']
        readiness = "started"
        depends_on = ["a"]

        [[service]]
        name = "c"
        exec = "/bin/sh"
        args = ["-c", 'trap "echo c >> {root}/stops; exit 0" TERM; echo c >> {root}/armed; while :; do sleep 0.05; done']
        readiness = "started"
        depends_on = ["b"]
        "#,
    );
    sup.wait_state("c", "Healthy");
    let armed = sup.root().join("armed");
    wait_until("every TERM trap", DEADLINE, || lines(&armed).len() == 3);
    let pids: Vec<i32> = ["a", "b", "c"]
        .iter()
        .map(|n| sup.pid(n).unwrap())
        .collect();
    sup.proc.signal(libc::SIGTERM);
    let status = sup
        .proc
        .wait_timeout(DEADLINE)
        .expect("the supervisor exits");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(lines(&sup.root().join("stops")), ["c", "b", "a"]);
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(!sup.socket().exists(), "the control socket is removed");
    let stops: Vec<String> = sup
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "svc.stop")
        .map(|e| e["service"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stops, ["c", "b", "a"]);
}
