//! The registry follows health: registered when Healthy, deregistered on crash, stop and
//! quarantine, and everything re-registered after the registry itself restarts.

// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]

mod common;

use common::Sup;
use serde_json::{json, Value};
use std::time::Duration;
use strata_testkit::{call, wait_until, DEADLINE};

fn resolve(sup: &Sup, service: &str) -> Value {
    call(
        &sup.sandbox.socket("registry"),
        "registry.resolve",
        json!({"service": service}),
        None,
    )
    .unwrap_or_else(|e| json!({"ok": false, "io_error": e.to_string()}))
}

fn registered(sup: &Sup, service: &str) -> bool {
    resolve(sup, service)["ok"] == true
}

fn not_found(sup: &Sup, service: &str) -> bool {
    let r = resolve(sup, service);
    r["ok"] == false && r["error"]["code"] == 4
}

#[test]
fn registrations_follow_health() {
    // `worker` is a second registry binary on its own socket: a real service that answers
    // sys.health.
    let sup = Sup::start(
        r#"
        [[service]]
        name = "registry"
        exec = "{registry}"
        backoff = { base = "0", max = "0" }

        [[service]]
        name = "worker"
        exec = "{registry}"
        env = { STRATA_RUNTIME_DIR = "{root}/worker" }
        socket = "{root}/worker/registry.sock"
        depends_on = ["registry"]
        backoff = { base = "1s", max = "1s" }
        "#,
    );
    sup.wait_state("worker", "Healthy");
    wait_until("worker registered", DEADLINE, || registered(&sup, "worker"));
    let endpoint = resolve(&sup, "worker")["result"]["endpoint"].clone();
    assert_eq!(
        endpoint,
        format!("unix://{}/worker/registry.sock", sup.root().display())
    );

    // Crash: deregistered during the backoff, registered again once Healthy.
    let pid = sup.pid("worker").unwrap();
    // SAFETY: signalling the test service's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until("worker deregistered after its crash", DEADLINE, || {
        not_found(&sup, "worker")
    });
    let s = sup.service("worker");
    assert!(
        ["Crashed", "Restarting"].contains(&s["state"].as_str().unwrap()),
        "{s}"
    );
    wait_until("worker back and registered", DEADLINE, || {
        sup.state("worker") == "Healthy" && registered(&sup, "worker")
    });

    // The registry restarts empty; the supervisor registers every Healthy service again.
    let old = sup.pid("registry").unwrap();
    // SAFETY: signalling the test service's pid.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_until("a new registry", DEADLINE, || {
        sup.service("registry")["pid"]
            .as_i64()
            .is_some_and(|p| p as i32 != old)
            && sup.state("registry") == "Healthy"
    });
    wait_until("worker re-registered in the new registry", DEADLINE, || {
        registered(&sup, "worker")
    });
    assert!(registered(&sup, "registry"));

    // Stop: deregistered.
    sup.ok(
        "supervisor.svc.stop",
        json!({"name": "worker", "drain_ms": 1000}),
    );
    wait_until("worker deregistered after stop", DEADLINE, || {
        not_found(&sup, "worker")
    });
    common::holds_for(
        "and it stays deregistered",
        Duration::from_millis(100),
        || not_found(&sup, "worker"),
    );
}

#[test]
fn quarantined_services_are_deregistered() {
    let sup = Sup::start(
        r#"
        [[service]]
        name = "registry"
        exec = "{registry}"

        [[service]]
        name = "flaky"
        exec = "{registry}"
        env = { STRATA_RUNTIME_DIR = "{root}/flaky" }
        socket = "{root}/flaky/registry.sock"
        backoff = { base = "10ms", max = "10ms" }
        quarantine = { crashes = 1, window = "1m" }
        "#,
    );
    sup.wait_state("registry", "Healthy");
    sup.wait_state("flaky", "Healthy");
    wait_until("flaky registered", DEADLINE, || registered(&sup, "flaky"));
    // SAFETY: signalling the test service's pid.
    unsafe { libc::kill(sup.pid("flaky").unwrap(), libc::SIGKILL) };
    sup.wait_state("flaky", "Quarantined");
    wait_until("flaky deregistered", DEADLINE, || not_found(&sup, "flaky"));
}
