//! The `aud` claim: a token signed by a trusted key is accepted only for the audience
//! `strata` (SPEC §4); any other audience, or none, is UNAUTHENTICATED.

use std::sync::Arc;
use strata_cap::{
    AuthContext, CapId, Claims, Constraints, ManualClock, RateLimiter, RevocationSet, SigningKey,
    Timestamp, TrustedKey, TrustedKeys, Verifier,
};
use strata_proto::ErrorCode;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn claims(aud: &str) -> Claims {
    Claims {
        jti: CapId::random().unwrap(),
        sub: "uid:1000".into(),
        iss: "identity@node-1".into(),
        aud: aud.into(),
        iat: Timestamp::from_unix_seconds(T0),
        exp: Timestamp::from_unix_seconds(T0 + 3600),
        nbf: None,
        service: "fs".into(),
        actions: vec![],
        rights: vec!["fs.read".parse().unwrap()],
        constraints: Constraints::default(),
        parents: vec![],
    }
}

#[test]
fn only_the_strata_audience_is_accepted() {
    let key = SigningKey::generate().unwrap();
    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
    let verifier = Verifier::new(keys, 64);
    let now = Timestamp::from_unix_seconds(T0 + 60);
    let clock = ManualClock::new(now);
    let (revoked, limiter) = (RevocationSet::new(), RateLimiter::default());
    let ctx = AuthContext::new(&clock, &revoked, &limiter);

    let good = key.sign(&claims("strata")).unwrap();
    verifier
        .verify(&good, now)
        .expect("aud = strata is accepted");
    verifier
        .authorize_request(&good, "fs.read", &ctx)
        .expect("aud = strata is authorized");

    for aud in ["other", "", "Strata", "strata ", "strata\0"] {
        let token = key.sign(&claims(aud)).unwrap();
        for result in [
            verifier.verify(&token, now).map(|_| ()),
            verifier.verify_uncached(&token, now).map(|_| ()),
            verifier
                .authorize_request(&token, "fs.read", &ctx)
                .map(|_| ()),
        ] {
            let err = result.expect_err(&format!("aud {aud:?} was accepted"));
            assert_eq!(err.code(), ErrorCode::Unauthenticated, "{aud:?}: {err}");
            assert!(err.to_string().contains("aud"), "{err}");
        }
    }
    // A cached good token stays good; the refusals did not poison the cache.
    verifier.verify(&good, now).unwrap();
}
