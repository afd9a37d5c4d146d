//! A verifier's complete revocation load after a restart, with 1k, 100k and 1M
//! revocations in identity's store: how long until a fresh `strata_guard::Guard` is ready
//! (every page of `identity.revocations` applied) and its peak memory.
//!
//! Run: `cargo bench -p strata-identity --bench revocation_load` (`-- --quick` stops at
//! 100k).
//!
//! One store grows through the rows: the revocations are written with the store's own
//! batch path ([`strata_identity::store::Store::learn`], the one cluster revocations take:
//! one durable transaction per 20,000), expiring in 30 days so none is pruned. For each
//! row the real `strata-identity` binary is (re)started on that store (the "identity
//! start" column: exec to `sys.health` ok, which includes identity loading the list
//! itself), then a fresh child process (this binary with `--child-load RUNTIME_DIR`)
//! starts a guard exactly as a service does ([`strata_guard::Guard::start`], on a
//! current-thread runtime) and times it from start to [`strata_guard::Guard::ready`]. The
//! child reports its VmRSS before the guard starts, its VmHWM (peak) once loaded, and its
//! CPU time; "identity CPU" is what identity's threads ran meanwhile (serving the pages).
//! The CPU columns hold up on a busy machine better than the wall time does.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_cap::CapId;
use strata_identity::store::{private_dir, Store};
use strata_testkit::{call, Proc, Sandbox};

const IDENTITY: &str = env!("CARGO_BIN_EXE_strata-identity");
const BATCH: usize = 20_000;

fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (ns) the process's live threads have run, from /proc/PID/task/*/schedstat.
fn cpu_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Child mode: a guard as a service starts it; prints "millis revocations before_kib
/// peak_kib cpu_ns" (cpu: the child's own, from before the guard started).
fn child_load(runtime_dir: PathBuf) {
    let before = status_kib("self", "VmRSS:");
    let cpu_before = cpu_ns("self");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let started = Instant::now();
        let guard = strata_guard::Guard::start(strata_guard::GuardConfig {
            runtime_dir,
            subscriber: "bench".into(),
        });
        let deadline = started + Duration::from_secs(300);
        while guard.ready().is_err() {
            assert!(Instant::now() < deadline, "guard never loaded the list");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        let held = guard.status()["revocations"].as_u64().unwrap_or(0);
        let peak = status_kib("self", "VmHWM:");
        let cpu = cpu_ns("self").saturating_sub(cpu_before);
        println!(
            "{:.1} {held} {before} {peak} {cpu}",
            took.as_secs_f64() * 1000.0
        );
    });
}

/// Adds revocations `from..to` (ids no token carries) in batches; returns the seconds taken.
fn fill(store: &Store, from: usize, to: usize) -> f64 {
    let started = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires = Some(now + 30 * 86_400);
    let mut at = from;
    while at < to {
        let end = (at + BATCH).min(to);
        let batch: Vec<(CapId, Option<i64>, i64)> = (at..end)
            .map(|i| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
                bytes[8..].copy_from_slice(&0xbe0c_u64.to_le_bytes());
                (CapId::from_bytes(bytes), expires, now)
            })
            .collect();
        let added = store.learn(&batch).unwrap();
        assert_eq!(added.len(), end - at);
        at = end;
    }
    started.elapsed().as_secs_f64()
}

fn start_identity(sandbox: &Sandbox) -> (Proc, f64) {
    let mut cmd = Command::new(IDENTITY);
    cmd.env("STRATA_RUNTIME_DIR", sandbox.runtime_dir())
        .env("STRATA_STATE_DIR", sandbox.state_dir())
        .env("STRATA_LOG", "error")
        .env_remove("STRATA_ETCD_ENDPOINTS")
        .stdin(Stdio::null());
    let started = Instant::now();
    let proc = Proc::spawn("strata-identity", &mut cmd);
    let socket = sandbox.socket("identity");
    let deadline = started + Duration::from_secs(300);
    loop {
        if call(&socket, "sys.health", json!({}), None).is_ok_and(|r| r["ok"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "identity never became healthy");
        std::thread::sleep(Duration::from_millis(1));
    }
    (proc, started.elapsed().as_secs_f64() * 1000.0)
}

fn stop(mut proc: Proc) {
    proc.signal(libc::SIGTERM);
    proc.wait_timeout(Duration::from_secs(30))
        .expect("identity exits");
}

fn guard_load(runtime_dir: &Path) -> (f64, u64, u64, u64, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--child-load")
        .arg(runtime_dir)
        .env("STRATA_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<&str> = text.split_whitespace().collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
        v[3].parse().unwrap(),
        v[4].parse().unwrap(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-load") {
        child_load(PathBuf::from(&args[i + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let counts: &[usize] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };

    let sandbox = Sandbox::new();
    let dir = sandbox.state_dir().join("identity");
    private_dir(&dir).unwrap();
    let store_path = dir.join("identity.redb");

    println!("verifier's full revocation load after an identity restart (real strata-identity, paged identity.revocations)");
    println!(
        "{:>10} | {:>8} | {:>14} {:>12} | {:>10} {:>10} {:>12} {:>13} {:>13}",
        "revoked",
        "fill s",
        "identity start",
        "identity RSS",
        "guard load",
        "guard CPU",
        "identity CPU",
        "guard base",
        "guard peak"
    );
    let mut held = 0;
    for &n in counts {
        let filled = {
            let store = Store::open(&store_path).unwrap();
            fill(&store, held, n)
        };
        held = n;
        let (identity, start_ms) = start_identity(&sandbox);
        let identity_rss = status_kib(&identity.pid().to_string(), "VmRSS:");
        let identity_pid = identity.pid().to_string();
        let identity_cpu = cpu_ns(&identity_pid);
        let (load_ms, loaded, base, peak, guard_cpu) = guard_load(&sandbox.runtime_dir());
        let identity_cpu = cpu_ns(&identity_pid).saturating_sub(identity_cpu);
        assert_eq!(loaded as usize, n, "the guard holds every revocation");
        stop(identity);
        println!(
            "{:>10} | {:>8.1} | {:>11.1} ms {:>8} KiB | {:>7.1} ms {:>7.1} ms {:>9.1} ms {:>9} KiB {:>9} KiB",
            n,
            filled,
            start_ms,
            identity_rss,
            load_ms,
            guard_cpu as f64 / 1e6,
            identity_cpu as f64 / 1e6,
            base,
            peak
        );
    }
}
