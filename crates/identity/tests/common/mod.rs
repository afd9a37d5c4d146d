//! What the identity integration tests share: a real `strata-identity` in a sandbox,
//! started and waited for, and one request to it with the wire format written out by
//! testkit. Each test file uses part of it.
#![allow(dead_code)]

use serde_json::Value;
use strata_testkit::{call, healthy, wait_until, Proc, Sandbox, DEADLINE};

/// Start `strata-identity` in `sb` with `extra` arguments; returns once it answers
/// `sys.health`. Killed when the returned `Proc` drops.
pub fn start_identity(sb: &Sandbox, extra: &[&str]) -> Proc {
    let mut cmd = sb.command("strata-identity");
    cmd.args(extra);
    let p = Proc::spawn("strata-identity", &mut cmd);
    let sock = sb.socket("identity");
    wait_until("identity to answer", DEADLINE, || healthy(&sock));
    p
}

/// One request to identity on a fresh connection; the whole response envelope.
pub fn ask(sb: &Sandbox, method: &str, params: Value, token: Option<&str>) -> Value {
    call(&sb.socket("identity"), method, params, token).expect("identity reachable")
}
