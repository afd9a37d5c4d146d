//! `attenuates`: the one rule by which a delegated child is judged against its parent, and
//! shared rate buckets enforced by `authorize` (issue 13, findings 6 and 9).

use std::time::Duration;
use strata_cap::{
    attenuates, authorize, AuthContext, CapId, Claims, Constraints, DenialKind, ManualClock,
    RateLimiter, RevocationSet, Timestamp,
};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn parent() -> Claims {
    Claims {
        jti: CapId::from_bytes([1; 16]),
        sub: "uid:1000".into(),
        iss: "identity@node-1".into(),
        aud: "strata".into(),
        iat: Timestamp::from_unix_seconds(T0),
        exp: Timestamp::from_unix_seconds(T0 + 3600),
        nbf: None,
        service: "fs".into(),
        actions: vec!["stat".into()],
        rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
        constraints: Constraints {
            path_prefix: Some("/srv/data".parse().unwrap()),
            rate_limit: Some("1rps".parse().unwrap()),
            shared_rate_limits: vec![],
        },
        parents: vec![],
    }
}

/// The child identity mints when every field is inherited.
fn child_of(p: &Claims, n: u8) -> Claims {
    let mut c = p.clone();
    c.jti = CapId::from_bytes([n; 16]);
    c.iat = Timestamp::from_unix_seconds(T0 + 10);
    c.parents = p.parents.iter().copied().chain([p.jti]).collect();
    c.constraints.shared_rate_limits = p.shared_rate_limits_for_child();
    c
}

fn widened(p: &Claims, c: &Claims) -> &'static str {
    attenuates(p, c).expect_err("expected a widening").what()
}

#[test]
fn an_inherited_child_attenuates_and_every_widening_is_named() {
    let p = parent();
    let c = child_of(&p, 2);
    attenuates(&p, &c).unwrap();

    let mut w = c.clone();
    w.rights.push("fs.list".parse().unwrap());
    assert_eq!(widened(&p, &w), "rights");
    let mut w = c.clone();
    w.actions.push("list".into());
    assert_eq!(widened(&p, &w), "rights");
    // Legacy actions count as the rights they name.
    let mut ok = c.clone();
    ok.actions.clear();
    ok.rights = vec!["fs.stat".parse().unwrap()];
    attenuates(&p, &ok).unwrap();

    let mut w = c.clone();
    w.exp = Timestamp::from_unix_seconds(T0 + 3601);
    assert_eq!(widened(&p, &w), "exp");
    let mut w = c.clone();
    w.service = "registry".into();
    assert_eq!(widened(&p, &w), "service");
    let mut w = c.clone();
    w.sub = "uid:0".into();
    assert_eq!(widened(&p, &w), "sub");
    let mut w = c.clone();
    w.parents.clear();
    assert_eq!(widened(&p, &w), "parents");

    for (prefix, ok) in [
        (Some("/srv/data"), true),
        (Some("/srv/data/a"), true),
        (Some("/srv"), false),
        (Some("/srv/database"), false),
        (Some("/"), false),
        (None, false),
    ] {
        let mut x = c.clone();
        x.constraints.path_prefix = prefix.map(|s| s.parse().unwrap());
        assert_eq!(attenuates(&p, &x).is_ok(), ok, "{prefix:?}");
    }
}

#[test]
fn no_prefix_is_a_denial_never_a_wildcard() {
    let mut p = parent();
    p.constraints.path_prefix = None;
    let c = child_of(&p, 2);
    attenuates(&p, &c).unwrap();
    for prefix in ["/", "/srv/data"] {
        let mut x = c.clone();
        x.constraints.path_prefix = Some(prefix.parse().unwrap());
        assert_eq!(widened(&p, &x), "path_prefix", "{prefix}");
    }
}

#[test]
fn rate_limits_compare_burst_and_rate_and_shared_buckets_are_kept() {
    let p = parent();
    let c = child_of(&p, 2);
    for (limit, ok) in [
        ("1rps", true),
        ("1rpm", true),
        ("3600rph", false),
        ("60rpm", false),
        ("2rps", false),
    ] {
        let mut x = c.clone();
        x.constraints.rate_limit = Some(limit.parse().unwrap());
        assert_eq!(attenuates(&p, &x).is_ok(), ok, "{limit}");
    }
    let mut w = c.clone();
    w.constraints.rate_limit = None;
    assert_eq!(widened(&p, &w), "rate_limit");
    let mut w = c.clone();
    w.constraints.shared_rate_limits.clear();
    assert_eq!(widened(&p, &w), "shared_rate_limits");
    // A parent without a limit may have a limited child.
    let mut free = parent();
    free.constraints.rate_limit = None;
    let mut x = child_of(&free, 3);
    x.constraints.rate_limit = Some("5rps".parse().unwrap());
    attenuates(&free, &x).unwrap();
}

#[test]
fn delegation_depth_is_bounded() {
    let mut p = parent();
    let mut depth = 0;
    loop {
        let c = child_of(&p, 2);
        match attenuates(&p, &c) {
            Ok(()) => {
                depth += 1;
                let mut next = c;
                next.jti = CapId::from_bytes([depth as u8 + 10; 16]);
                p = next;
            }
            Err(e) => {
                assert_eq!(e.what(), "parents");
                break;
            }
        }
    }
    assert_eq!(depth, Claims::MAX_PARENTS);
}

#[test]
fn a_lineage_shares_its_roots_budget() {
    let clock = ManualClock::new(Timestamp::from_unix_seconds(T0 + 60));
    let (revoked, limiter) = (RevocationSet::new(), RateLimiter::new(1024));
    let ctx = || AuthContext::new(&clock, &revoked, &limiter);
    let p = parent();
    let children: Vec<Claims> = (2..=201).map(|n| child_of(&p, n)).collect();
    let allowed = children
        .iter()
        .filter(|c| authorize(c, "fs.read", &ctx()).is_ok())
        .count();
    assert_eq!(allowed, 1, "200 children of a 1rps capability");
    let denial = authorize(&p, "fs.read", &ctx()).unwrap_err();
    assert!(matches!(denial.kind(), DenialKind::RateLimited { .. }));
    // A second later the lineage has one more request, whoever makes it.
    clock.advance(Duration::from_secs(1));
    assert!(authorize(&children[7], "fs.read", &ctx()).is_ok());
    assert!(authorize(&children[8], "fs.read", &ctx()).is_err());

    // A grandchild with a smaller limit is bounded by its own bucket as well.
    let mut narrow = child_of(&children[0], 250);
    narrow.constraints.rate_limit = Some("1rph".parse().unwrap());
    attenuates(&children[0], &narrow).unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(authorize(&narrow, "fs.read", &ctx()).is_ok());
    clock.advance(Duration::from_secs(1));
    let denial = authorize(&narrow, "fs.read", &ctx()).unwrap_err();
    assert!(denial.reason().contains("1rph"), "{denial}");
    // ...and its refusal took nothing from the lineage's bucket.
    assert!(authorize(&p, "fs.read", &ctx()).is_ok());
}
