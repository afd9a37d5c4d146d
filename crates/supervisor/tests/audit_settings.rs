//! The manifest's audit-log rotation settings reach every service the supervisor starts
//! (`STRATA_AUDIT_MAX_BYTES` / `STRATA_AUDIT_KEEP`, which `strata_audit::Audit::open`
//! reads), so all writers of `audit.log` rotate it alike.

mod common;

use common::Sup;
use strata_testkit::{wait_until, DEADLINE};

const MANIFEST: &str = r#"
[supervisor]
audit_max_bytes = "64K"
audit_keep = 7

[[service]]
name = "envdump"
exec = "/bin/sh"
args = ["-c", "env > {root}/env.tmp && mv {root}/env.tmp {root}/env; exec sleep 1000"]
readiness = "started"
"#;

#[test]
fn services_are_handed_the_audit_rotation_settings() {
    let sup = Sup::start(MANIFEST);
    let path = sup.root().join("env");
    wait_until("the service wrote its environment", DEADLINE, || {
        path.exists()
    });
    let env = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&"STRATA_AUDIT_MAX_BYTES=65536"), "{env}");
    assert!(lines.contains(&"STRATA_AUDIT_KEEP=7"), "{env}");
}
