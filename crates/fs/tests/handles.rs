//! Handles: bound to their capability, limited, closed at once on revocation, dead at
//! expiry, and audited as one summary each.

mod common;

use common::{claims, fds_open_on, read_params, Fixture};
use std::sync::Arc;
use std::time::Duration;
use strata_fs::{Caller, HandleLimits};
use strata_proto::methods::fs::CloseParams;
use strata_proto::ErrorCode;

fn room() -> usize {
    strata_fs::reply_room("t")
}

#[test]
fn a_handle_is_usable_only_by_its_own_capability() {
    let f = Fixture::new();
    f.write("f", b"hello");
    let owner = f.caller();
    let other = f.caller();
    let handle = f.open(&owner, "f").unwrap();
    assert_eq!(handle.len(), 32);
    let read = f.fs.read(&other, &read_params(&handle, 0, 10), room());
    assert_eq!(read.unwrap_err().code(), ErrorCode::PermissionDenied);
    let close = f.fs.close(
        &other,
        &CloseParams {
            handle: handle.clone(),
        },
    );
    assert_eq!(close.unwrap_err().code(), ErrorCode::PermissionDenied);
    // Same cap id, different subject: still not the owner.
    let mut imposter = (*owner.claims).clone();
    imposter.sub = "uid:0".into();
    let imposter = Caller::new(Arc::new(imposter), None);
    let read = f.fs.read(&imposter, &read_params(&handle, 0, 10), room());
    assert_eq!(read.unwrap_err().code(), ErrorCode::PermissionDenied);
    // The owner still can, and unknown handles are NOT_FOUND.
    let r =
        f.fs.read(&owner, &read_params(&handle, 0, 10), room())
            .unwrap();
    assert_eq!(r.data.as_deref(), Some("hello"));
    for unknown in [
        "h1",
        "",
        "00000000000000000000000000000000",
        &"x".repeat(10_000),
    ] {
        let e =
            f.fs.read(&owner, &read_params(unknown, 0, 1), room())
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.to_string().len() < 200);
    }
}

#[test]
fn close_releases_the_descriptor_and_the_handle_id() {
    let f = Fixture::new();
    let file = f.write("f", b"hello");
    let c = f.caller();
    let handle = f.open(&c, "f").unwrap();
    assert_eq!(fds_open_on(&file), 1);
    let closed =
        f.fs.close(
            &c,
            &CloseParams {
                handle: handle.clone(),
            },
        )
        .unwrap();
    assert_eq!(closed.status, "closed");
    assert_eq!(fds_open_on(&file), 0);
    let again = f.fs.close(
        &c,
        &CloseParams {
            handle: handle.clone(),
        },
    );
    assert_eq!(again.unwrap_err().code(), ErrorCode::NotFound);
    let read = f.fs.read(&c, &read_params(&handle, 0, 1), room());
    assert_eq!(read.unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn revocation_closes_the_capability_handles_at_once() {
    let f = Fixture::new();
    let file = f.write("revoked.txt", b"data");
    let victim = f.caller();
    let bystander = f.caller();
    let handles: Vec<String> = (0..5)
        .map(|_| f.open(&victim, "revoked.txt").unwrap())
        .collect();
    let kept = f.open(&bystander, "revoked.txt").unwrap();
    f.fs.read(&victim, &read_params(&handles[0], 0, 4), room())
        .unwrap();
    assert_eq!(fds_open_on(&file), 6);

    f.revoked.add(victim.claims.jti);
    assert_eq!(f.fs.revoke(&victim.claims.jti), 5);
    assert_eq!(fds_open_on(&file), 1);
    for h in &handles {
        let e =
            f.fs.read(&victim, &read_params(h, 0, 4), room())
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
    }
    f.fs.read(&bystander, &read_params(&kept, 0, 4), room())
        .unwrap();
    // A revoked capability cannot open new handles either (the guard refuses it first;
    // fs re-checks after registering the handle to close the race).
    assert_eq!(
        f.open(&victim, "revoked.txt"),
        Err(ErrorCode::Unauthenticated)
    );
    assert_eq!(fds_open_on(&file), 1);

    // Each handle left one summary line: reads and bytes, and why it closed.
    let summaries: Vec<_> = f
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "fs.read" && l["closed_by"] == "revoked")
        .collect();
    assert_eq!(summaries.len(), 5);
    assert!(summaries.iter().any(|s| s["reads"] == 1
        && s["bytes"] == 4
        && s["cap_id"] == victim.claims.jti.to_string()));
}

#[test]
fn revoking_an_ancestor_closes_delegated_handles() {
    let f = Fixture::new();
    let file = f.write("f", b"x");
    let parent = f.caller();
    let child = Caller::new(
        Arc::new(claims(Some(&f.prefix()), &f.clock, &[parent.claims.jti])),
        None,
    );
    f.open(&child, "f").unwrap();
    f.open(&parent, "f").unwrap();
    assert_eq!(f.fs.revoke(&parent.claims.jti), 2);
    assert_eq!(fds_open_on(&file), 0);
}

#[test]
fn a_missed_revocation_is_caught_by_the_recheck() {
    let f = Fixture::new();
    let file = f.write("f", b"x");
    let c = f.caller();
    f.open(&c, "f").unwrap();
    f.revoked.add(c.claims.jti);
    assert_eq!(f.fs.recheck_revocations(), 1);
    assert_eq!(fds_open_on(&file), 0);
}

#[test]
fn handles_die_with_their_token() {
    let f = Fixture::new();
    let file = f.write("f", b"x");
    let c = f.caller();
    let swept = f.open(&c, "f").unwrap();
    let used = f.open(&c, "f").unwrap();
    f.clock.advance(Duration::from_secs(3600));
    // Used after expiry: refused, and closed on the spot.
    let e =
        f.fs.read(&c, &read_params(&used, 0, 1), room())
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert_eq!(fds_open_on(&file), 1);
    // Never used again: the sweep closes it.
    assert_eq!(f.fs.sweep_expired(), 1);
    assert_eq!(fds_open_on(&file), 0);
    let e =
        f.fs.read(&c, &read_params(&swept, 0, 1), room())
            .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let expired = f
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "fs.read" && l["closed_by"] == "expired")
        .count();
    assert_eq!(expired, 2);
}

#[test]
fn the_per_capability_limit_holds() {
    let f = Fixture::new();
    f.write("f", b"x");
    let c = f.caller();
    let handles: Vec<String> = (0..HandleLimits::DEFAULT_PER_CAPABILITY)
        .map(|_| f.open(&c, "f").unwrap())
        .collect();
    assert_eq!(f.open(&c, "f"), Err(ErrorCode::ResourceExhausted));
    // Another capability is not affected.
    f.open(&f.caller(), "f").unwrap();
    f.fs.close(
        &c,
        &CloseParams {
            handle: handles[0].clone(),
        },
    )
    .unwrap();
    f.open(&c, "f").unwrap();
}

#[test]
fn the_global_limit_holds() {
    let f = Fixture::with_limits(HandleLimits {
        per_capability: 64,
        total: 10,
        ..HandleLimits::default()
    });
    f.write("f", b"x");
    for _ in 0..5 {
        let c = f.caller();
        f.open(&c, "f").unwrap();
        f.open(&c, "f").unwrap();
    }
    assert_eq!(f.open(&f.caller(), "f"), Err(ErrorCode::ResourceExhausted));
    assert_eq!(f.fs.handles().len(), 10);
}

#[test]
fn one_handle_read_concurrently_gives_each_reader_its_own_bytes() {
    let f = Fixture::new();
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    f.write("big", &bytes);
    let c = f.caller();
    let handle = f.open(&c, "big").unwrap();
    let bytes = Arc::new(bytes);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (fs, c, handle, bytes) = (f.fs.clone(), c.clone(), handle.clone(), bytes.clone());
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let offset = (t * 100_003 + i * 4_099) % 990_000;
                    let r = fs
                        .read(&c, &read_params(&handle, offset, 4096), room())
                        .unwrap();
                    let got = common::decode_b64(&r.data_b64);
                    let o = offset as usize;
                    assert_eq!(got, bytes[o..o + 4096], "offset {offset}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn close_all_audits_every_handle() {
    let f = Fixture::new();
    f.write("f", b"x");
    let c = f.caller();
    f.open(&c, "f").unwrap();
    f.open(&c, "f").unwrap();
    assert_eq!(f.fs.close_all(), 2);
    let shut = f
        .audit_lines()
        .into_iter()
        .filter(|l| l["closed_by"] == "shutdown")
        .count();
    assert_eq!(shut, 2);
}
