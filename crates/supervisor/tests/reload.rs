//! `supervisor.reload` (and SIGHUP): added, removed and changed services are applied;
//! unchanged ones keep running; an invalid manifest changes nothing.

mod common;

use common::{alive, expand, Sup};
use serde_json::json;
use strata_testkit::{wait_until, DEADLINE};

const SERVICE: &str = r#"
[[service]]
name = "NAME"
exec = "/bin/sh"
args = ["-c", "exec sleep ARG"]
readiness = "started"
"#;

fn service(name: &str, arg: u32) -> String {
    SERVICE
        .replace("NAME", name)
        .replace("ARG", &arg.to_string())
}

#[test]
fn reload_applies_the_difference() {
    let first = [
        service("keep", 1000),
        service("change", 1000),
        service("gone", 1000),
    ]
    .concat();
    let sup = Sup::start(&first);
    for n in ["keep", "change", "gone"] {
        sup.wait_state(n, "Healthy");
    }
    let keep = sup.pid("keep").unwrap();
    let change = sup.pid("change").unwrap();
    let gone = sup.pid("gone").unwrap();

    // An invalid manifest is refused and nothing changes.
    std::fs::write(
        &sup.manifest,
        "[[service]]\nname = \"keep\"\nexec = \"/bin/sh\"\nbogus = 1\n",
    )
    .unwrap();
    let e = sup.err("supervisor.reload", json!({}));
    assert_eq!(e["code"], 1, "{e}");
    assert!(e["message"].as_str().unwrap().contains("bogus"), "{e}");
    assert_eq!(sup.list().len(), 3);

    let second = [
        service("keep", 1000),
        service("change", 1001),
        service("added", 1000),
    ]
    .concat();
    std::fs::write(&sup.manifest, expand(&second, &sup.sandbox)).unwrap();
    let r = sup.ok("supervisor.reload", json!({}));
    assert_eq!(r["status"], "reloaded");
    assert_eq!(r["added"], json!(["added"]));
    assert_eq!(r["removed"], json!(["gone"]));
    assert_eq!(r["changed"], json!(["change"]));
    assert_eq!(r["unchanged"], json!(["keep"]));

    assert_eq!(
        sup.pid("keep"),
        Some(keep),
        "unchanged services keep running"
    );
    let s = sup.wait_state("change", "Healthy");
    assert_ne!(s["pid"].as_i64().unwrap() as i32, change);
    assert!(!alive(change));
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", s["pid"])).unwrap();
    assert!(
        cmdline.contains("1001"),
        "the new definition runs: {cmdline:?}"
    );
    sup.wait_state("added", "Healthy");
    assert!(sup.list().iter().all(|s| s["name"] != "gone"));
    assert!(!alive(gone));
    assert_eq!(sup.audit_of("svc.stop", "gone")[0]["trigger"], "reload");

    // SIGHUP reloads too.
    std::fs::write(&sup.manifest, expand(&service("keep", 1000), &sup.sandbox)).unwrap();
    sup.proc.signal(libc::SIGHUP);
    wait_until("the SIGHUP reload", DEADLINE, || sup.list().len() == 1);
    assert_eq!(sup.pid("keep"), Some(keep));
}

#[test]
fn a_service_stopped_by_an_operator_stays_stopped_across_a_change() {
    let sup = Sup::start(&service("idle", 1000));
    sup.wait_state("idle", "Healthy");
    sup.ok(
        "supervisor.svc.stop",
        json!({"name": "idle", "drain_ms": 500}),
    );
    std::fs::write(&sup.manifest, expand(&service("idle", 1002), &sup.sandbox)).unwrap();
    let r = sup.ok("supervisor.reload", json!({}));
    assert_eq!(r["changed"], json!(["idle"]));
    assert_eq!(sup.state("idle"), "Stopped");
    sup.ok("supervisor.svc.start", json!({"name": "idle"}));
    let pid = sup.pid("idle").unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("1002"), "{cmdline:?}");
}
