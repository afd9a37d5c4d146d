//! Issue 13, finding 7: handle quotas per lineage and per caller as well as per capability
//! and in total, so delegating children (or asking identity for many tokens) does not let
//! one caller take every handle fs allows.

mod common;

use common::{claims, Fixture};
use std::sync::Arc;
use strata_cap::CapId;
use strata_fs::{Caller, HandleLimits};
use strata_ipc::PeerCred;
use strata_proto::ErrorCode;

const LIMITS: HandleLimits = HandleLimits {
    per_capability: 4,
    per_lineage: 10,
    per_caller: 25,
    total: 40,
};

fn uid(uid: u32) -> Option<PeerCred> {
    Some(PeerCred {
        pid: None,
        uid,
        gid: uid,
    })
}

/// A caller with `peer`'s credentials presenting a capability delegated from `root`.
fn child(f: &Fixture, root: &CapId, peer: Option<PeerCred>) -> Caller {
    Caller::new(
        Arc::new(claims(Some(&f.prefix()), &f.clock, &[*root])),
        peer,
    )
}

#[test]
fn a_lineage_of_many_children_stays_within_the_lineage_quota() {
    let f = Fixture::with_limits(LIMITS);
    f.write("f", b"x");
    let root = Caller::new(
        Arc::new(claims(Some(&f.prefix()), &f.clock, &[])),
        uid(1000),
    );
    let root_id = root.claims.jti;
    for _ in 0..LIMITS.per_capability {
        f.open(&root, "f").unwrap();
    }
    // Children each under their own per-capability limit, until the lineage is full.
    let mut opened = LIMITS.per_capability;
    let mut refused = None;
    for _ in 0..20 {
        let c = child(&f, &root_id, uid(1000));
        for _ in 0..LIMITS.per_capability {
            match f.open(&c, "f") {
                Ok(_) => opened += 1,
                Err(code) => {
                    refused = Some(code);
                    break;
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    assert_eq!(
        refused,
        Some(ErrorCode::ResourceExhausted),
        "{opened} handles opened by one lineage"
    );
    assert_eq!(opened, LIMITS.per_lineage);
    // Grandchildren count against the same root.
    let grandchild = Caller::new(
        Arc::new(claims(
            Some(&f.prefix()),
            &f.clock,
            &[root_id, CapId::from_bytes([7; 16])],
        )),
        uid(1000),
    );
    assert_eq!(f.open(&grandchild, "f"), Err(ErrorCode::ResourceExhausted));
    // Another lineage, and another uid, still open.
    f.open(&f.caller(), "f").unwrap();
    let other = Caller::new(
        Arc::new(claims(Some(&f.prefix()), &f.clock, &[])),
        uid(1001),
    );
    f.open(&other, "f").unwrap();
    // Closing one handle of the lineage makes room for exactly one.
    let held = f.fs.handles().all();
    let one = held.iter().find(|h| h.lineage_root() == &root_id).unwrap();
    f.fs.handles().remove(&one.id()).unwrap();
    f.open(&grandchild, "f").unwrap();
    assert_eq!(f.open(&grandchild, "f"), Err(ErrorCode::ResourceExhausted));
}

#[test]
fn one_uid_cannot_take_every_handle() {
    let f = Fixture::with_limits(LIMITS);
    f.write("f", b"x");
    // uid 1000 asks for as many separate capabilities (separate lineages) as it likes.
    let mut opened = 0;
    let mut refused = None;
    'outer: for _ in 0..20 {
        let c = Caller::new(
            Arc::new(claims(Some(&f.prefix()), &f.clock, &[])),
            uid(1000),
        );
        for _ in 0..LIMITS.per_capability {
            match f.open(&c, "f") {
                Ok(_) => opened += 1,
                Err(code) => {
                    refused = Some(code);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(
        refused,
        Some(ErrorCode::ResourceExhausted),
        "{opened} handles opened by one uid"
    );
    assert_eq!(opened, LIMITS.per_caller);
    // Everyone else is still served, up to the global limit.
    for other in [1001, 1002] {
        let c = Caller::new(
            Arc::new(claims(Some(&f.prefix()), &f.clock, &[])),
            uid(other),
        );
        f.open(&c, "f").unwrap();
    }
    // Closing frees the uid's quota again.
    let held: Vec<_> = f.fs.handles().all();
    let one = held
        .iter()
        .find(|h| h.holder() == strata_fs::Holder::Uid(1000))
        .unwrap();
    f.fs.handles().remove(&one.id()).unwrap();
    let c = Caller::new(
        Arc::new(claims(Some(&f.prefix()), &f.clock, &[])),
        uid(1000),
    );
    f.open(&c, "f").unwrap();
    assert_eq!(f.open(&c, "f"), Err(ErrorCode::ResourceExhausted));
}
