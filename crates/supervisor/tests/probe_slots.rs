//! A service whose connection slots another uid holds is not taken for dead (issue 13,
//! finding 5): the flooding uid gets only its quota, the supervisor's liveness probe (as
//! root) still gets through, and the service is neither restarted nor quarantined.
//!
//! Needs root: a dedicated thread of this test changes only its own uid (the raw
//! `setresuid` system call) and connects as that uid.

// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]

mod common;

use common::Sup;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_testkit::{skip_unless_root, Sandbox, DEADLINE};

/// More than the server's global limit (1,024), as an attacker would try.
const FLOOD: usize = 1_100;

/// Raise this process's soft descriptor limit (the supervisor and its services inherit
/// it), so that the flood is limited by the server, not by descriptors.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Whether one `sys.health` on `stream` was answered ok (a refusal or a close is not).
fn served(stream: &mut UnixStream) -> bool {
    let req = br#"{"v":1,"req_id":"h","method":"sys.health"}"#;
    let mut frame = (req.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(req);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(1 << 16)];
    stream.read_exact(&mut body).is_ok()
        && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["ok"] == true)
}

/// As `uid`, open up to `count` connections to `socket` and hold those that were served,
/// until the returned sender is dropped. Returns how many were served.
fn hold_as(uid: u32, socket: &Path, count: usize) -> (usize, mpsc::Sender<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (report, got) = mpsc::channel();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: the raw system call changes this thread's credentials only; the saved
        // uid stays 0, and the thread ends after releasing its connections.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        let mut held = Vec::new();
        for _ in 0..count {
            let Ok(mut s) = UnixStream::connect(&socket) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            if served(&mut s) {
                held.push(s);
            }
        }
        report.send(held.len()).unwrap();
        let _ = wait.recv();
    });
    (got.recv_timeout(DEADLINE * 3).unwrap(), release)
}

#[test]
fn a_service_whose_slots_another_uid_holds_is_not_restarted() {
    if skip_unless_root("a_service_whose_slots_another_uid_holds_is_not_restarted") {
        return;
    }
    raise_fd_limit(FLOOD as u64 + 1024);
    let sandbox = Sandbox::new();
    // The flooding uid reaches the socket as a member of its group (gid 0 here).
    sandbox.open_to_all();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "registry"
        exec = "{registry}"
        health_interval = "100ms"
        health_timeout = "200ms"
        health_failures = 2
        drain_ms = 100
        backoff = { base = "0", max = "0" }
        "#,
        &[],
    );
    let before = sup.wait_state("registry", "Healthy");
    let pid = before["pid"].as_i64().unwrap();
    let socket = sup.sandbox.socket("registry");

    let (held, _release) = hold_as(65534, &socket, FLOOD);
    // Thirty probe intervals with the slots held: the service must stay as it was.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = sup.service("registry");
        assert_eq!(s["state"], "Healthy", "{s}");
        assert_eq!(s["pid"].as_i64(), Some(pid), "restarted: {s}");
        assert_eq!(s["restarts"], before["restarts"], "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(strata_testkit::healthy(&socket), "root is still served");
    assert_eq!(held, 128, "the flooding uid holds exactly its quota");
}
