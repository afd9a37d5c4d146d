//! Memory stays bounded under a flood of `identity.revocations` polls with huge and ever
//! new subscriber names (issue 13, finding 4): for 10 s at full speed, identity's resident
//! set stays under 200 MiB and it keeps answering `sys.health`.

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_testkit::{call, healthy, read_frame, wait_until, write_frame, Proc, Sandbox, DEADLINE};

const FLOOD_FOR: Duration = Duration::from_secs(10);
const RSS_LIMIT_KIB: u64 = 200 * 1024;
const CONNECTIONS: usize = 4;

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
fn a_flood_of_subscriber_names_keeps_memory_bounded() {
    let sb = Sandbox::new();
    let mut cmd = sb.command("strata-identity");
    let id = Proc::spawn("strata-identity", &mut cmd);
    let sock = sb.socket("identity");
    wait_until("identity to answer", DEADLINE, || healthy(&sock));
    let pid = id.pid();
    let before = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            let (stop, sent, refused) =
                (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&refused));
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut stream = UnixStream::connect(&sock).unwrap();
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Half the connections send names as long as a frame allows, the other
                    // half a new short name each time (to fill the subscriber table).
                    let name = if w % 2 == 0 {
                        format!("{w}-{i}-{}", "x".repeat((1 << 20) - 256))
                    } else {
                        format!("{w}-{i}")
                    };
                    let req = json!({"v": 1, "req_id": "f", "method": "identity.revocations",
                                     "params": {"subscriber": name, "wait_ms": 0}});
                    write_frame(&mut stream, &serde_json::to_vec(&req).unwrap()).unwrap();
                    let reply: Value =
                        serde_json::from_slice(&read_frame(&mut stream).unwrap()).unwrap();
                    assert!(reply.get("ok").is_some(), "not an answer");
                    if reply["error"]["code"] == 7 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut peak = before;
    let mut health_checks = 0;
    while started.elapsed() < FLOOD_FOR {
        peak = peak.max(rss_kib(pid));
        assert!(
            peak < RSS_LIMIT_KIB,
            "identity grew to {} MiB after {:?} ({} polls)",
            peak / 1024,
            started.elapsed(),
            sent.load(Ordering::Relaxed)
        );
        if health_checks < started.elapsed().as_secs() {
            health_checks += 1;
            let h =
                call(&sock, "sys.health", json!({}), None).expect("sys.health during the flood");
            assert_eq!(h["result"]["status"], "ok", "{h}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let h = call(&sock, "sys.health", json!({}), None).expect("sys.health after the flood");
    assert_eq!(h["result"]["status"], "ok", "{h}");
    eprintln!(
        "{} polls ({} refused RESOURCE_EXHAUSTED) in {:?}; RSS {} KiB before, peak {} KiB",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        FLOOD_FOR,
        before,
        peak
    );
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "the flood never got going"
    );
    // The short names filled the subscriber table and were refused past it.
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the subscriber table was never full"
    );
}
