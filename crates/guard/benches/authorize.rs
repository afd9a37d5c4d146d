//! `Guard::authorize` (the check every protected request makes) and the guard's memory,
//! with 1k, 100k and 1M revocations held.
//!
//! Run: `cargo bench -p strata-guard --bench authorize` (`-- --quick` for fewer samples).
//! A plain `harness = false` binary like the other Strata benches (no criterion, to keep
//! CI light).
//!
//! - latency: an offline guard (fixed key, synced; the same `authorize` a service calls
//!   with the request's `Call`) holding N unrelated revocations, then `authorize` timed
//!   call by call (so the figure includes ~20-30 ns of `Instant::now`). Two token mixes:
//!   one token over and over (its revocation buckets stay in the CPU cache), and 1,024
//!   distinct tokens in turn (all in the verifier cache; their 2,048 revocation lookups -
//!   `jti` and one parent each - land across the whole set, so a big set misses the cache).
//! - memory: for each N a fresh child process (this binary re-run with `--child-memory N`)
//!   reads its VmRSS, fills a new guard with N revocations through the feed's path
//!   ([`strata_guard::GuardHandle::revoke`]), and reads VmRSS again; the difference is the
//!   set's resident cost, VmHWM its peak (growth doubles a shard's table while the old one
//!   is still held).

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_cap::{CapId, Claims, Constraints, SigningKey, Timestamp, TrustedKey, TrustedKeys};
use strata_guard::{Guard, GuardHandle};
use strata_ipc::{Call, PeerCred};

const COUNTS: [usize; 3] = [1_000, 100_000, 1_000_000];
const DISTINCT_TOKENS: usize = 1024;

fn claims(now: Timestamp) -> Claims {
    Claims {
        jti: CapId::random().unwrap(),
        sub: "uid:1000".into(),
        iss: "identity@bench".into(),
        aud: "strata".into(),
        iat: now,
        exp: now.saturating_add(Duration::from_secs(3600)),
        nbf: None,
        service: "fs".into(),
        actions: vec!["open".into(), "read".into()],
        rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
        constraints: Constraints {
            path_prefix: Some("/srv/data".parse().unwrap()),
            rate_limit: None,
            shared_rate_limits: vec![],
        },
        parents: vec![CapId::random().unwrap()],
    }
}

/// `n` revocations of ids no token here carries, as the feed would deliver them.
fn fill(handle: &GuardHandle, n: usize) {
    for i in 0..n {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        bytes[8..].copy_from_slice(&0x5eed_u64.to_le_bytes());
        handle.revoke(CapId::from_bytes(bytes));
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: fill a fresh guard with `n` revocations; print "before after peak" (KiB).
fn child_memory(n: usize) {
    let (guard, handle) = Guard::offline(Arc::new(TrustedKeys::new([])));
    let before = status_kib("VmRSS:");
    fill(&handle, n);
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    assert_eq!(guard.status()["revocations"], n);
    println!("{before} {after} {peak}");
}

fn memory(n: usize) -> (u64, u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child-memory", &n.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

/// Per-call latencies (ns) of `samples` authorizes, cycling through `calls`.
fn latencies(
    rt: &tokio::runtime::Runtime,
    guard: &Guard,
    calls: &[Call],
    samples: usize,
) -> Vec<u64> {
    rt.block_on(async {
        // Warm up: every token verified once (into the cache), the path in the caches.
        for call in calls.iter().chain(calls.iter().take(10_000)) {
            guard.authorize(call, "fs.read").await.unwrap();
        }
        let mut out = Vec::with_capacity(samples);
        for call in calls.iter().cycle().take(samples) {
            let t = Instant::now();
            let claims = guard.authorize(call, "fs.read").await;
            out.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(claims.unwrap());
        }
        out.sort_unstable();
        out
    })
}

fn pick(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-memory") {
        child_memory(args[i + 1].parse().unwrap());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let samples = if quick { 100_000 } else { 500_000 };

    let key = SigningKey::generate().unwrap();
    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
    let now = Timestamp::now();
    let peer = PeerCred {
        pid: Some(1),
        uid: 1000,
        gid: 1000,
    };
    let calls: Vec<Call> = (0..DISTINCT_TOKENS)
        .map(|_| {
            let token = key.sign(&claims(now)).unwrap();
            Call::new(peer, "fs.read", Some(token))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!("Guard::authorize (cached token) and guard memory by revocations held; {samples} calls per row");
    println!(
        "{:>10} | {:>9} {:>9} | {:>9} {:>9} | {:>11} {:>11} {:>9}",
        "revoked", "1 tok p50", "p99", "1k toks p50", "p99", "set RSS KiB", "B/revoked", "peak KiB"
    );
    for n in COUNTS {
        let (guard, handle) = Guard::offline(Arc::clone(&keys));
        fill(&handle, n);
        let one = latencies(&rt, &guard, &calls[..1], samples);
        let many = latencies(&rt, &guard, &calls, samples);
        drop(guard);
        let (before, after, peak) = memory(n);
        let grown = after.saturating_sub(before);
        println!(
            "{:>10} | {:>6} ns {:>6} ns | {:>8} ns {:>6} ns | {:>11} {:>11.1} {:>9}",
            n,
            pick(&one, 0.5),
            pick(&one, 0.99),
            pick(&many, 0.5),
            pick(&many, 0.99),
            grown,
            grown as f64 * 1024.0 / n as f64,
            peak
        );
    }
}
