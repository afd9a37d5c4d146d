//! Crash consistency.
//!
//! - identity SIGKILLed in the middle of a burst of revocations: after the supervisor has
//!   restarted it, every revocation it had answered ok is in force, at identity
//!   (`identity.introspect`) and at fs.
//! - A torn last line in the audit log (a crash or a lost disk tail) is tolerated and
//!   reported: identity and fs start on it, say so in their logs, and append whole lines
//!   after it.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use strata_e2e::Stack;
use strata_testkit::{call, healthy, wait_until, Proc, Sandbox, DEADLINE};

/// Capabilities revoked per round, by this many threads at once.
const PER_ROUND: usize = 240;
const REVOKERS: usize = 4;
const ROUNDS: usize = 3;

/// A blocking request on a persistent connection; `None` when the connection fails.
fn exchange(stream: &mut UnixStream, method: &str, params: Value) -> Option<Value> {
    let req =
        serde_json::to_vec(&json!({"v": 1, "req_id": "c", "method": method, "params": params}))
            .unwrap();
    stream
        .write_all(&[(req.len() as u32).to_be_bytes().as_slice(), &req].concat())
        .ok()?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

#[test]
fn revocations_answered_before_sigkill_survive_the_restart() {
    let stack = Stack::start();
    let id_sock = stack.sb.socket("identity");
    let (mut acked_total, mut interrupted_total) = (0usize, 0usize);
    for round in 0..ROUNDS {
        // Tokens to revoke, issued up front.
        let mut conn = connect(&id_sock);
        let caps: Vec<(String, String)> = (0..PER_ROUND)
            .map(|_| {
                let r = exchange(
                    &mut conn,
                    "identity.issue",
                    json!({"service": "fs", "rights": ["fs.list"], "path_prefix": stack.export, "ttl_seconds": 600}),
                )
                .expect("identity answers");
                assert_eq!(r["ok"], true, "{r}");
                (
                    r["result"]["token"].as_str().unwrap().to_owned(),
                    r["result"]["cap_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        drop(conn);

        let acked = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let interrupted = Arc::new(AtomicUsize::new(0));
        let burst_start = Instant::now();
        let revokers: Vec<_> = caps
            .chunks(PER_ROUND / REVOKERS)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                let (acked, done, interrupted) = (
                    Arc::clone(&acked),
                    Arc::clone(&done),
                    Arc::clone(&interrupted),
                );
                let socket = id_sock.clone();
                std::thread::spawn(move || {
                    let mut conn = connect(&socket);
                    for (token, cap) in chunk {
                        match exchange(&mut conn, "identity.revoke", json!({"cap_id": cap})) {
                            Some(r) if r["ok"] == true => {
                                acked.lock().unwrap().push((token, cap));
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            Some(r) => panic!("revoke refused: {r}"),
                            // identity died under us: the rest of this burst is unanswered.
                            None => {
                                interrupted.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        // Kill once a share of the burst has been answered, while the rest is in flight.
        let threshold = PER_ROUND / 4 + round * PER_ROUND / 8;
        wait_until("revocations answered", DEADLINE, || {
            done.load(Ordering::SeqCst) >= threshold
        });
        let killed_after = burst_start.elapsed();
        stack.kill_and_wait_restart("identity");
        for r in revokers {
            r.join().expect("a revoker panicked");
        }
        let acked = acked.lock().unwrap().clone();
        let interrupted = interrupted.load(Ordering::SeqCst);
        assert!(
            interrupted > 0,
            "round {round}: the burst finished before the kill; nothing was tested"
        );

        // Every answered revocation is in force after the restart: identity knows it...
        for (token, cap) in &acked {
            let r = call(
                &id_sock,
                "identity.introspect",
                json!({"token": token}),
                None,
            )
            .unwrap();
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(
                r["result"]["revoked"], true,
                "revocation of {cap}, answered ok before the SIGKILL, was lost: {r}"
            );
        }
        // ...and fs refuses every one of them (fs did not restart; it must learn them
        // from the new identity before serving).
        let fs_sock = stack.sb.socket("fs");
        for (token, cap) in &acked {
            let r = call(&fs_sock, "fs.list", json!({"path": "."}), Some(token)).unwrap();
            assert_eq!(r["ok"], false, "fs served revoked cap {cap}: {r}");
            assert_eq!(r["error"]["code"], 2, "{r}");
        }
        eprintln!(
            "round {round}: {} revocations answered before the SIGKILL ({} ms into the burst), \
             {interrupted} revokers interrupted, all {} in force after the restart, lost: 0",
            acked.len(),
            killed_after.as_millis(),
            acked.len()
        );
        acked_total += acked.len();
        interrupted_total += interrupted;
    }
    eprintln!(
        "crash consistency: {ROUNDS} SIGKILLs of identity mid-burst, {acked_total} answered \
         revocations checked at identity and fs after restart, {interrupted_total} bursts cut, lost: 0"
    );
}

/// Start a service binary directly (no supervisor, so nothing else writes the audit log),
/// its stderr captured to `<root>/<name>.stderr`.
fn start(sb: &Sandbox, name: &str, export: &Path, run: usize) -> Proc {
    let log = std::fs::File::create(sb.root().join(format!("{name}.{run}.stderr"))).unwrap();
    let mut cmd = sb.command(&format!("strata-{name}"));
    cmd.env("STRATA_FS_EXPORT_ROOTS", export)
        .stdout(Stdio::null())
        .stderr(log);
    let p = Proc::spawn(name, &mut cmd);
    let sock = sb.socket(name);
    wait_until(&format!("{name} to answer"), DEADLINE, || healthy(&sock));
    p
}

fn ok(sb: &Sandbox, service: &str, method: &str, params: Value, token: Option<&str>) -> Value {
    let r = call(&sb.socket(service), method, params, token).unwrap();
    assert_eq!(r["ok"], true, "{method}: {r}");
    r["result"].clone()
}

#[test]
fn a_torn_audit_line_is_reported_and_new_lines_start_after_it() {
    let sb = Sandbox::new();
    let export = sb.root().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("a.txt"), b"a\n").unwrap();
    let audit = sb.state_dir().join("audit.log");
    let torn = r#"{"time":"2026-01-01T00:00:00Z","source":"identity","event":"cap.rev"#;

    for (run, victim) in ["identity", "fs"].into_iter().enumerate() {
        let identity = start(&sb, "identity", &export, run);
        let fs = start(&sb, "fs", &export, run);
        let issued = ok(
            &sb,
            "identity",
            "identity.issue",
            json!({"service": "fs", "rights": ["fs.open"], "path_prefix": export, "ttl_seconds": 60}),
            None,
        );
        let token = issued["token"].as_str().unwrap().to_owned();
        ok(&sb, "fs", "fs.open", json!({"path": "a.txt"}), Some(&token));
        // Both die by SIGKILL; then the log loses its tail mid-line.
        drop(fs);
        drop(identity);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&audit)
            .unwrap();
        f.write_all(torn.as_bytes()).unwrap();
        drop(f);
        let lines_before = std::fs::read_to_string(&audit).unwrap().lines().count();

        // The victim opens the log first and must end the torn line; then both append.
        let first = start(&sb, victim, &export, run + 10);
        let other = if victim == "identity" {
            "fs"
        } else {
            "identity"
        };
        let second = start(&sb, other, &export, run + 10);
        let issued = ok(
            &sb,
            "identity",
            "identity.issue",
            json!({"service": "fs", "rights": ["fs.open"], "path_prefix": export, "ttl_seconds": 60}),
            None,
        );
        let token = issued["token"].as_str().unwrap().to_owned();
        ok(&sb, "fs", "fs.open", json!({"path": "a.txt"}), Some(&token));
        let cap = issued["cap_id"].as_str().unwrap();
        ok(
            &sb,
            "identity",
            "identity.revoke",
            json!({"cap_id": cap}),
            None,
        );

        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[lines_before - 1],
            torn,
            "the torn line must stay as it was, on a line of its own"
        );
        let after: Vec<Value> = lines[lines_before..]
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a line after the torn one is not JSON ({e}): {l}"))
            })
            .collect();
        for (source, event) in [
            ("identity", "cap.issued"),
            ("fs", "fs.open"),
            ("identity", "cap.revoked"),
        ] {
            assert!(
                after
                    .iter()
                    .any(|l| l["source"] == source && l["event"] == event),
                "no {event} from {source} after the torn line: {after:?}"
            );
        }
        // Every line but the torn ones is whole JSON.
        let broken: Vec<&&str> = lines
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_err())
            .collect();
        assert_eq!(broken.len(), run + 1, "{broken:?}");
        // The victim said what it found.
        drop(second);
        drop(first);
        let stderr =
            std::fs::read_to_string(sb.root().join(format!("{victim}.{}.stderr", run + 10)))
                .unwrap();
        assert!(
            stderr.contains("torn line"),
            "{victim} did not report the torn line: {stderr}"
        );
        eprintln!(
            "{victim} started on a torn audit line, reported it, and appended whole lines after it"
        );
    }
}
