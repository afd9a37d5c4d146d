//! Issuing and verifying Strata tokens end to end: tampering, wrong keys, expiry, foreign
//! token kinds, oversized input, the verified-token cache and key changes at runtime.

use std::sync::Arc;
use std::time::Duration;
use strata_cap::paseto::{self, TokenVersion};
use strata_cap::{
    authorize, AuthContext, CapId, Claims, Constraints, DenialKind, Error, ManualClock,
    RateLimiter, RevocationSet, SigningKey, Timestamp, TrustedKey, TrustedKeys, Verifier,
    MAX_TOKEN_LEN,
};
use strata_proto::ErrorCode;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(T0 + 60)
}

fn claims() -> Claims {
    Claims {
        jti: CapId::random().unwrap(),
        sub: "uid:1000".into(),
        iss: "identity@node-1".into(),
        aud: "strata".into(),
        iat: Timestamp::from_unix_seconds(T0),
        exp: Timestamp::from_unix_seconds(T0 + 3600),
        nbf: None,
        service: "fs".into(),
        actions: vec!["read".into()],
        rights: vec!["fs.open".parse().unwrap(), "fs.read".parse().unwrap()],
        constraints: Constraints {
            path_prefix: Some("/srv/data".parse().unwrap()),
            rate_limit: Some("50rps".parse().unwrap()),
            shared_rate_limits: vec![],
        },
        parents: vec![CapId::random().unwrap()],
    }
}

fn verifier_for(key: &SigningKey) -> Verifier {
    let keys = TrustedKeys::new([TrustedKey::new(key.public_key())]);
    Verifier::new(Arc::new(keys), 64)
}

fn assert_unauthenticated(result: Result<impl std::fmt::Debug, Error>, what: &str) -> Error {
    let err = result.expect_err(what);
    assert_eq!(err.code(), ErrorCode::Unauthenticated, "{what}: {err}");
    err
}

#[test]
fn issued_token_verifies_to_the_same_claims_with_a_kid_footer() {
    let key = SigningKey::generate().unwrap();
    let c = claims();
    let token = key.sign(&c).unwrap();
    assert!(token.starts_with("v2.public."));

    let verifier = verifier_for(&key);
    assert_eq!(*verifier.verify(&token, now()).unwrap(), c);
    assert_eq!(verifier.verify_uncached(&token, now()).unwrap(), c);

    let raw = paseto::verify_public(&token, &key.public_key(), &[]).unwrap();
    let footer: serde_json::Value = serde_json::from_slice(&raw.footer).unwrap();
    assert_eq!(
        footer,
        serde_json::json!({"kid": key.kid(TokenVersion::V2).as_str()})
    );
}

#[test]
fn v4_tokens_can_be_issued_and_are_accepted() {
    let key = SigningKey::generate().unwrap();
    let c = claims();
    let token = key.sign_as(&c, TokenVersion::V4).unwrap();
    assert!(token.starts_with("v4.public."));
    assert_eq!(*verifier_for(&key).verify(&token, now()).unwrap(), c);
}

/// Byte values a substitution at any position tries: one other character of the token
/// alphabet (so the base64 stays decodable and the signature check is reached), a bit flip,
/// and a few structural characters.
fn substitutes(original: u8) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = vec![original ^ 0x01, b'.', b'=', b' '];
    if let Some(i) = ALPHABET.iter().position(|&c| c == original) {
        out.push(ALPHABET[(i + 1) % ALPHABET.len()]);
        out.push(ALPHABET[(i + 32) % ALPHABET.len()]);
    } else {
        out.push(b'A');
    }
    out.retain(|&c| c != original);
    out
}

#[test]
fn every_single_byte_change_is_rejected() {
    for version in [TokenVersion::V2, TokenVersion::V4] {
        let key = SigningKey::generate().unwrap();
        let token = key.sign_as(&claims(), version).unwrap();
        let verifier = verifier_for(&key);
        // Warm the cache so that the cached path is tested too.
        verifier.verify(&token, now()).unwrap();

        let mut tried = 0;
        for i in 0..token.len() {
            for b in substitutes(token.as_bytes()[i]) {
                let mut bytes = token.clone().into_bytes();
                bytes[i] = b;
                let changed = String::from_utf8(bytes).expect("ASCII stays UTF-8");
                let what = format!("{version:?} byte {i} -> {:?}", b as char);
                assert_unauthenticated(verifier.verify(&changed, now()), &what);
                assert_unauthenticated(verifier.verify_uncached(&changed, now()), &what);
                tried += 1;
            }
        }
        assert!(tried > token.len() * 4, "only {tried} changes tried");
        // Dropping or adding a byte at either end is refused too.
        assert_unauthenticated(verifier.verify(&token[..token.len() - 1], now()), "cut");
        assert_unauthenticated(verifier.verify(&format!("{token}A"), now()), "extended");
        // And the original still verifies, from the cache.
        assert!(verifier.verify(&token, now()).is_ok());
    }
}

#[test]
fn every_ascii_substitution_of_a_v2_token_is_rejected() {
    // Exhaustive over every position and every other ASCII byte (a non-ASCII byte would
    // not be a &str, which the protocol layer guarantees), through the cached path.
    // A short token keeps the ~100 signature checks per position affordable in debug builds.
    let mut small = claims();
    small.parents.clear();
    small.constraints = Constraints::default();
    small.actions.clear();
    small.rights.truncate(1);
    let key = SigningKey::generate().unwrap();
    let token = key.sign(&small).unwrap();
    let verifier = verifier_for(&key);
    verifier.verify(&token, now()).unwrap();
    let mut bytes = token.clone().into_bytes();
    for i in 0..bytes.len() {
        let original = bytes[i];
        for b in (0u8..0x80).filter(|&b| b != original) {
            bytes[i] = b;
            let changed = std::str::from_utf8(&bytes).expect("ASCII");
            let err = verifier
                .verify(changed, now())
                .expect_err("a changed token was accepted");
            assert_eq!(
                err.code(),
                ErrorCode::Unauthenticated,
                "byte {i} -> {b:#04x}"
            );
        }
        bytes[i] = original;
    }
    assert_eq!(verifier.cached_tokens(), 1, "no changed token was cached");
}

#[test]
fn a_token_from_an_untrusted_key_is_refused() {
    let trusted = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let verifier = verifier_for(&trusted);

    let token = other.sign(&claims()).unwrap();
    let err = assert_unauthenticated(verifier.verify(&token, now()), "untrusted key");
    assert!(matches!(err, Error::UnknownKey { .. }), "{err}");

    // Signed by the other key but claiming the trusted key's id.
    let payload = serde_json::to_vec(&claims()).unwrap();
    let footer = format!(r#"{{"kid":"{}"}}"#, trusted.kid(TokenVersion::V2));
    let forged =
        paseto::sign_public(&other, TokenVersion::V2, &payload, footer.as_bytes(), &[]).unwrap();
    let err = assert_unauthenticated(verifier.verify(&forged, now()), "forged kid");
    assert!(matches!(err, Error::BadSignature), "{err}");
}

#[test]
fn tokens_without_a_usable_kid_are_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let payload = serde_json::to_vec(&claims()).unwrap();
    let kid4 = format!(r#"{{"kid":"{}"}}"#, key.kid(TokenVersion::V4));
    for footer in [
        "",
        "not json",
        r#"{"kid":"zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN"}"#,
        r#"{"key":"x"}"#,
        kid4.as_str(), // a v4 id on a v2 token
    ] {
        let token =
            paseto::sign_public(&key, TokenVersion::V2, &payload, footer.as_bytes(), &[]).unwrap();
        assert_unauthenticated(verifier.verify(&token, now()), footer);
    }
}

#[test]
fn a_signed_payload_that_is_not_claims_is_refused() {
    let key = SigningKey::generate().unwrap();
    let footer = format!(r#"{{"kid":"{}"}}"#, key.kid(TokenVersion::V2));
    let mut bad_rate = serde_json::to_value(claims()).unwrap();
    bad_rate["constraints"]["rate_limit"] = "fast".into();
    let bad_rate = bad_rate.to_string();
    for payload in [r#"{"data":"hello"}"#, "[]", bad_rate.as_str()] {
        let token = paseto::sign_public(
            &key,
            TokenVersion::V2,
            payload.as_bytes(),
            footer.as_bytes(),
            &[],
        )
        .unwrap();
        let err = assert_unauthenticated(verifier_for(&key).verify(&token, now()), payload);
        assert!(matches!(err, Error::InvalidClaims(_)), "{err}");
        assert!(!err.to_string().contains(&token), "message leaks the token");
    }
}

#[test]
fn expired_and_not_yet_valid_tokens_are_unauthenticated() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let (revocations, limiter) = (RevocationSet::new(), RateLimiter::new(64));
    let clock = ManualClock::new(now());

    let mut c = claims();
    c.nbf = Some(Timestamp::from_unix_seconds(T0 + 600));
    let token = key.sign(&c).unwrap();

    let ctx = AuthContext::new(&clock, &revocations, &limiter);
    let err = verifier
        .authorize_request(&token, "fs.read", &ctx)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    assert!(matches!(&err, Error::Denied(d) if d.kind() == DenialKind::NotYetValid));

    clock.advance(Duration::from_secs(600));
    let ctx = AuthContext::new(&clock, &revocations, &limiter);
    assert!(verifier.authorize_request(&token, "fs.read", &ctx).is_ok());

    clock.set_wall(Timestamp::from_unix_seconds(T0 + 3600));
    let ctx = AuthContext::new(&clock, &revocations, &limiter);
    let err = verifier
        .authorize_request(&token, "fs.read", &ctx)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    assert!(matches!(&err, Error::Denied(d) if d.kind() == DenialKind::Expired));
}

#[test]
fn local_tokens_garbage_and_huge_tokens_are_unauthenticated() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let valid = key.sign(&claims()).unwrap();
    let body = valid.strip_prefix("v2.public.").unwrap();
    let huge = format!("v2.public.{}", "A".repeat(1024 * 1024));
    let garbage = [
        "",
        ".",
        "v2.public.",
        "v2.public..",
        "v2.public.!!!!",
        "v2.public.AAAA",
        "Bearer abc",
        "\u{0}\u{1}\u{2}",
        "v2.local.97TTOvgwIxNGvV80XKiGZg_kD3tsXM_-qB4dZGHOeN1cTkgQ4PnW8888l802W8d9AvEGnoNBY3BnqHORy8a5cC8aKpbA0En8XELw2yDk2f1sVODyfnDbi6rEGMY3pSfCbLWMM2oHJxvlEl2XbQ",
        "v1.public.AAAA",
        "v3.public.AAAA",
        "V2.PUBLIC.AAAA",
        &format!("v2.local.{body}"),
        &format!("v4.public.{body}"),
        &format!("{valid}.extra"),
        &format!(" {valid}"),
        &huge,
    ];
    for token in garbage {
        let label: String = token.chars().take(40).collect();
        let err = assert_unauthenticated(verifier.verify(token, now()), &label);
        assert!(
            token.len() < 20 || !err.to_string().contains(token),
            "{label}: message echoes the token"
        );
        assert_unauthenticated(verifier.verify_uncached(token, now()), &label);
        assert_unauthenticated(paseto::verify_public(token, &key.public_key(), &[]), &label);
    }
    let err = verifier.verify(&huge, now()).unwrap_err();
    assert!(
        matches!(err, Error::TokenTooLong { len, max } if len == huge.len() && max == MAX_TOKEN_LEN)
    );
    assert_eq!(verifier.cached_tokens(), 0, "nothing invalid was cached");
}

#[test]
fn the_cache_returns_the_same_claims_without_reverifying() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let token = key.sign(&claims()).unwrap();
    let first = verifier.verify(&token, now()).unwrap();
    let second = verifier.verify(&token, now()).unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "second verify did not come from the cache"
    );
    assert_eq!(verifier.cached_tokens(), 1);
    verifier.clear_cache();
    let third = verifier.verify(&token, now()).unwrap();
    assert!(!Arc::ptr_eq(&first, &third));
}

#[test]
fn the_cache_stays_bounded() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    assert_eq!(verifier.cache_capacity(), 64);
    for _ in 0..200 {
        let token = key.sign(&claims()).unwrap();
        verifier.verify(&token, now()).unwrap();
    }
    assert!(verifier.cached_tokens() <= 64);
}

#[test]
fn a_cached_token_is_refused_once_its_key_is_no_longer_trusted() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let token = key.sign(&claims()).unwrap();
    verifier.verify(&token, now()).unwrap();

    assert!(verifier.keys().remove(&key.public_key()));
    let err = assert_unauthenticated(verifier.verify(&token, now()), "removed key");
    assert!(matches!(err, Error::UnknownKey { .. }), "{err}");

    // Trusted again, but only until a moment that has passed.
    verifier
        .keys()
        .insert(TrustedKey::new(key.public_key()).not_after(now()));
    let err = assert_unauthenticated(verifier.verify(&token, now()), "expired key window");
    assert!(matches!(err, Error::KeyNotValid { .. }), "{err}");

    verifier.keys().insert(TrustedKey::new(key.public_key()));
    assert!(verifier.verify(&token, now()).is_ok());

    // A window change with the cache warm is seen too.
    verifier.keys().insert(
        TrustedKey::new(key.public_key()).not_before(now().saturating_add(Duration::from_secs(1))),
    );
    assert_unauthenticated(verifier.verify(&token, now()), "key not yet valid");
}

#[test]
fn unrelated_key_changes_keep_cached_tokens_valid() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let token = key.sign(&claims()).unwrap();
    let first = verifier.verify(&token, now()).unwrap();

    // Rotation: identity starts signing with a new key; the old one stays trusted.
    let next = SigningKey::generate().unwrap();
    verifier.keys().insert(TrustedKey::new(next.public_key()));
    let again = verifier.verify(&token, now()).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "entry should survive an unrelated change"
    );
    let new_token = next.sign(&claims()).unwrap();
    assert!(verifier.verify(&new_token, now()).is_ok());
}

#[test]
fn revocation_is_checked_on_cached_tokens() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&key);
    let (revocations, limiter) = (RevocationSet::new(), RateLimiter::new(64));
    let clock = ManualClock::new(now());
    let c = claims();
    let token = key.sign(&c).unwrap();
    let ctx = AuthContext::new(&clock, &revocations, &limiter);
    assert!(verifier.authorize_request(&token, "fs.read", &ctx).is_ok());

    revocations.insert(c.parents[0], Some(c.exp));
    let err = verifier
        .authorize_request(&token, "fs.read", &ctx)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    assert!(matches!(&err, Error::Denied(d) if d.kind() == DenialKind::Revoked));
}

#[test]
fn concurrent_verify_and_authorize_agree() {
    let key = SigningKey::generate().unwrap();
    let verifier = Arc::new(verifier_for(&key));
    let revocations = Arc::new(RevocationSet::new());
    let limiter = Arc::new(RateLimiter::new(64));
    let clock = Arc::new(ManualClock::new(now()));
    let mut c = claims();
    c.constraints.rate_limit = Some("1000rph".parse().unwrap());
    let token = Arc::new(key.sign(&c).unwrap());

    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (verifier, revocations, limiter, clock, token) = (
                Arc::clone(&verifier),
                Arc::clone(&revocations),
                Arc::clone(&limiter),
                Arc::clone(&clock),
                Arc::clone(&token),
            );
            std::thread::spawn(move || {
                let mut allowed = 0;
                for _ in 0..500 {
                    let ctx = AuthContext::new(&*clock, &revocations, &limiter);
                    let claims = verifier.verify(&token, ctx.now).unwrap();
                    if authorize(&claims, "fs.read", &ctx).is_ok() {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // The clock never moves, so exactly the burst is allowed across all threads.
    assert_eq!(allowed, 1000);
}

#[test]
fn a_key_bound_to_a_node_accepts_only_that_nodes_issuer() {
    let key = SigningKey::generate().unwrap();
    let token = key.sign(&claims()).unwrap(); // iss = identity@node-1
    let bound = |node: &str| {
        let trusted = TrustedKey::new(key.public_key()).issuer(format!("identity@{node}"));
        Verifier::new(Arc::new(TrustedKeys::new([trusted])), 64)
    };
    assert!(bound("node-1").verify(&token, now()).is_ok());
    let err = assert_unauthenticated(bound("node-2").verify(&token, now()), "other node");
    assert!(matches!(err, Error::WrongIssuer { .. }), "{err}");

    // A cached token is checked again when the key's binding changes.
    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
    let verifier = Verifier::new(Arc::clone(&keys), 64);
    verifier.verify(&token, now()).unwrap();
    keys.replace([TrustedKey::new(key.public_key()).issuer("identity@node-2".into())]);
    assert_unauthenticated(verifier.verify(&token, now()), "rebound key, cached token");
}
