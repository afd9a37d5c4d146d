//! Issuance-policy parsing (`strata_issuance_policy::Policy::parse`, identity's
//! `strata_identity::policy`) on arbitrary text, then the policy's decision for a few
//! callers and requests.
//!
//! Must hold: no panic; an accepted policy names a uid or gid and a positive TTL in every
//! grant; a caller no grant names is refused everything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_cap::{PathPrefix, RateLimit, Right};
use strata_ipc::PeerCred;
use strata_issuance_policy::{Policy, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text, "fuzz.toml") else {
        return;
    };
    for g in &policy.grants {
        assert!(!(g.uids.is_empty() && g.gids.is_empty()));
        assert!(g.max_ttl_seconds > 0);
    }
    let rights: Vec<Right> = ["fs.read", "fs.open"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let prefix: PathPrefix = "/srv/data/x".parse().unwrap();
    let rate: RateLimit = "10rps".parse().unwrap();
    let request = Request {
        service: "fs",
        rights: &rights,
        path_prefix: Some(&prefix),
        ttl_seconds: 60,
        rate_limit: Some(rate),
    };
    let named = |uid: u32, gid: u32| {
        policy
            .grants
            .iter()
            .any(|g| g.uids.contains(&uid) || g.gids.contains(&gid))
    };
    for (uid, gid) in [(0, 0), (1000, 100), (65534, 65534), (u32::MAX, u32::MAX)] {
        let peer = PeerCred {
            pid: None,
            uid,
            gid,
        };
        let decision = policy.check(&peer, &request);
        let _ = policy.max_ttl(&peer, "fs");
        if !named(uid, gid) {
            assert!(decision.is_err(), "uid {uid} has no grant but was allowed");
            assert!(policy.max_ttl(&peer, "fs").is_none());
        }
    }
});
