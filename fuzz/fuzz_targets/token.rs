//! Token parsing and verification (`strata_cap::Verifier`, PASETO `v2.public`/`v4.public`).
//!
//! The first byte picks what the rest is:
//! - 0: token text. It was never signed by the trusted key, so it must be refused: a token
//!   the fuzzer makes up that verifies would be a forgery.
//! - 1, 2: a payload (v2 or v4) that the trusted key signs, with the right `kid` footer; the
//!   verifier must parse it into claims or refuse it cleanly, and claims it accepts must
//!   round-trip and go through `authorize` for every fs method without panicking.
//! - 3: a footer for a well-formed payload; only `{"kid": <the key's id>}` may verify.
//! - 4: an XOR mask over a valid token; whatever still verifies must carry the original
//!   claims (a changed token never yields changed claims).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use strata_cap::paseto::sign_public;
use strata_cap::{
    authorize, AuthContext, Claims, RateLimiter, RevocationSet, SigningKey, SystemClock, Timestamp,
    TokenVersion, TrustedKey, TrustedKeys, Verifier,
};

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
    token: String,
    claims: Claims,
    payload: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::generate().expect("a key");
        let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
        // A tiny cache, so the fuzzer exercises eviction too.
        let verifier = Verifier::new(keys, 8);
        let now = Timestamp::now().unix_seconds();
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "jti": "00112233445566778899aabbccddeeff", "sub": "uid:0",
            "iss": "identity@local-0", "aud": "strata",
            "iat": rfc3339(now - 10), "exp": rfc3339(now + 3600),
            "service": "fs", "actions": ["open"], "rights": ["fs.read", "fs.list"],
            "constraints": {"path_prefix": "/srv/data", "rate_limit": "1000rps"},
            "parents": ["ffeeddccbbaa99887766554433221100"]
        }))
        .expect("fixture claims");
        let token = key.sign(&claims).expect("sign");
        let payload = serde_json::to_vec(&claims).unwrap();
        Fixture {
            key,
            verifier,
            token,
            claims,
            payload,
        }
    })
}

fn rfc3339(unix: i64) -> String {
    // Timestamp serialises as RFC 3339.
    serde_json::to_value(Timestamp::from_unix_seconds(unix))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn footer(key: &SigningKey, version: TokenVersion) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"kid": key.kid(version).as_str()})).unwrap()
}

/// Accepted claims must survive a round trip and never make `authorize` panic.
fn exercise(claims: &Claims) {
    let text = serde_json::to_string(claims).expect("claims serialise");
    let back: Claims = serde_json::from_str(&text).expect("serialised claims parse");
    assert_eq!(&back, claims);
    let (revoked, limiter, clock) = (
        RevocationSet::new(),
        RateLimiter::default(),
        SystemClock::new(),
    );
    revoked.insert(claims.jti, None);
    for method in [
        "fs.open",
        "fs.read",
        "fs.list",
        "fs.stat",
        "fs.close",
        "identity.issue",
        "x",
        "",
    ] {
        let ctx = AuthContext::new(&clock, &revoked, &limiter);
        // Revoked: whatever else, it must be refused.
        assert!(
            authorize(claims, method, &ctx).is_err(),
            "revoked cap allowed {method}"
        );
        let empty = RevocationSet::new();
        let ctx = AuthContext::new(&clock, &empty, &limiter);
        let _ = authorize(claims, method, &ctx);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let now = Timestamp::now();
    match mode % 5 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if text == f.token {
                return;
            }
            assert!(
                f.verifier.verify(text, now).is_err(),
                "an unsigned token verified: {text:?}"
            );
            assert!(f.verifier.verify_uncached(text, now).is_err());
        }
        1 | 2 => {
            if rest.is_empty() {
                return;
            }
            let version = if mode % 5 == 1 {
                TokenVersion::V2
            } else {
                TokenVersion::V4
            };
            let token = sign_public(&f.key, version, rest, &footer(&f.key, version), &[])
                .expect("signing a non-empty payload");
            let cached = f.verifier.verify(&token, now);
            let uncached = f.verifier.verify_uncached(&token, now);
            match (cached, uncached) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(*a, b);
                    exercise(&b);
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("cached and uncached verification disagree: {a:?} / {b:?}"),
            }
        }
        3 => {
            let token = sign_public(&f.key, TokenVersion::V2, &f.payload, rest, &[]).expect("sign");
            if let Ok(claims) = f.verifier.verify(&token, now) {
                let kid: serde_json::Value =
                    serde_json::from_slice(rest).expect("an accepted footer is JSON");
                assert_eq!(kid["kid"], f.key.kid(TokenVersion::V2).as_str());
                assert_eq!(*claims, f.claims);
            }
        }
        _ => {
            let mut bytes = f.token.clone().into_bytes();
            for (b, m) in bytes.iter_mut().zip(rest) {
                *b ^= m;
            }
            let Ok(text) = String::from_utf8(bytes) else {
                return;
            };
            if let Ok(claims) = f.verifier.verify(&text, now) {
                assert_eq!(
                    *claims, f.claims,
                    "a changed token verified with changed claims"
                );
            }
        }
    }
});
