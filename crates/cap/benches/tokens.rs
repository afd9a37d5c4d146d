//! Token throughput: signs/s, uncached verifies/s, and cached verify+authorize/s.
//!
//! Run with `cargo bench -p strata-cap`. A plain `harness = false` binary (no criterion, to
//! keep CI light): each measurement runs for about a second on one thread and prints a rate.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_cap::{
    authorize, AuthContext, CapId, Claims, Constraints, RateLimiter, RevocationSet, SigningKey,
    SystemClock, Timestamp, TrustedKey, TrustedKeys, Verifier,
};

const RUN_FOR: Duration = Duration::from_secs(1);

/// Calls `f` in batches until `RUN_FOR` has passed; returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    const BATCH: u64 = 256;
    // Warm up.
    for _ in 0..BATCH {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < RUN_FOR {
        for _ in 0..BATCH {
            f();
        }
        calls += BATCH;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn claims(now: Timestamp) -> Claims {
    Claims {
        jti: CapId::random().unwrap(),
        sub: "uid:1000".into(),
        iss: "identity@node-1".into(),
        aud: "strata".into(),
        iat: now,
        exp: now.saturating_add(Duration::from_secs(3600)),
        nbf: None,
        service: "fs".into(),
        actions: vec!["open".into(), "read".into()],
        rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
        constraints: Constraints {
            path_prefix: Some("/srv/data".parse().unwrap()),
            // High enough never to refuse during the run, so the bucket is still updated.
            rate_limit: Some("1000000000rps".parse().unwrap()),
            shared_rate_limits: vec![],
        },
        parents: vec![CapId::random().unwrap()],
    }
}

fn print(name: &str, per_sec: f64) {
    println!(
        "{name:<44} {per_sec:>14.0} /s   ({:>8.1} ns each)",
        1e9 / per_sec
    );
}

fn main() {
    let key = SigningKey::generate().unwrap();
    let clock = SystemClock::new();
    let claims = claims(Timestamp::now());
    let token = key.sign(&claims).unwrap();
    println!("token length: {} bytes", token.len());

    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
    let verifier = Verifier::new(keys, Verifier::DEFAULT_CACHE_CAPACITY);
    let revocations = RevocationSet::new();
    // Unrelated revocations, so the lookups are real rather than the empty-set shortcut.
    revocations.extend((0..1000).map(|_| (CapId::random().unwrap(), None)));
    let limiter = RateLimiter::default();

    print(
        "sign (v2.public)",
        rate(|| {
            black_box(key.sign(black_box(&claims)).unwrap());
        }),
    );

    let now = Timestamp::now();
    print(
        "verify, uncached (signature + parse)",
        rate(|| {
            black_box(verifier.verify_uncached(black_box(&token), now).unwrap());
        }),
    );

    let cached = |verifier: &Verifier| {
        let ctx = AuthContext::new(&clock, &revocations, &limiter);
        let claims = verifier.verify(black_box(&token), ctx.now).unwrap();
        authorize(&claims, black_box("fs.read"), &ctx).unwrap();
    };
    print(
        "verify (cached) + authorize, 1 thread",
        rate(|| cached(&verifier)),
    );

    // Two threads on the same token: the worst case for lock contention (same cache set,
    // same rate bucket).
    let total: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| rate(|| cached(&verifier))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    print("verify (cached) + authorize, 2 threads, total", total);
}
