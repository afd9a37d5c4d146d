//! The official PASETO test vectors (copied from paseto-standard/test-vectors; licence in
//! `vectors/LICENSE`): every v2 and v4 public vector must verify and re-sign to the same
//! token, every expected failure must fail, and local tokens are never accepted.

use serde_json::Value;
use strata_cap::paseto::{self, TokenVersion};
use strata_cap::{PublicKey, SigningKey};
use strata_proto::ErrorCode;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn public_key(hex_text: &str) -> Option<PublicKey> {
    let bytes: [u8; 32] = hex(hex_text).try_into().ok()?;
    Some(PublicKey::from_bytes(bytes))
}

fn text<'a>(test: &'a Value, field: &str) -> &'a str {
    test[field].as_str().unwrap_or("")
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    public_ok: usize,
    expected_failures: usize,
    local_rejected: usize,
}

fn run(file: &str, version: TokenVersion) -> Counts {
    let suite: Value = serde_json::from_str(file).expect("vector file is JSON");
    let tests = suite["tests"].as_array().expect("tests array");
    // The suite's Ed25519 key, used for failure vectors that carry only a symmetric key.
    let suite_public = tests
        .iter()
        .find_map(|t| t["public-key"].as_str())
        .and_then(public_key)
        .expect("suite has a public key");
    let v4 = version == TokenVersion::V4;
    let mut counts = Counts::default();

    for test in tests {
        let name = text(test, "name");
        let token = text(test, "token");
        let expect_fail = test["expect-fail"].as_bool().expect("expect-fail");
        // v2 has no implicit assertions (2-S-3 says "discarded-anyway").
        let implicit = if v4 {
            text(test, "implicit-assertion").as_bytes()
        } else {
            &[][..]
        };

        if expect_fail {
            let mut keys = vec![suite_public];
            keys.extend(test["public-key"].as_str().and_then(public_key));
            keys.extend(test["key"].as_str().and_then(public_key));
            for key in &keys {
                let err = paseto::verify_public(token, key, implicit)
                    .expect_err(&format!("{name} must fail"));
                assert_eq!(err.code(), ErrorCode::Unauthenticated, "{name}: {err}");
            }
            counts.expected_failures += 1;
        } else if token.starts_with(version.header()) {
            let key = public_key(text(test, "public-key")).expect("public key");
            let verified = paseto::verify_public(token, &key, implicit)
                .unwrap_or_else(|e| panic!("{name} must verify: {e}"));
            assert_eq!(verified.version, version, "{name}");
            assert_eq!(verified.payload, text(test, "payload"), "{name}");
            assert_eq!(verified.footer, text(test, "footer").as_bytes(), "{name}");

            // Ed25519 is deterministic, so signing must reproduce the vector exactly.
            let secret: [u8; 64] = hex(text(test, "secret-key")).try_into().expect("64 bytes");
            let signer = SigningKey::from_keypair_bytes(&secret).expect("vector key");
            assert_eq!(signer.public_key(), key, "{name}");
            let signed = paseto::sign_public(
                &signer,
                version,
                text(test, "payload").as_bytes(),
                text(test, "footer").as_bytes(),
                implicit,
            )
            .unwrap_or_else(|e| panic!("{name} must sign: {e}"));
            assert_eq!(signed, token, "{name}: re-signed token differs");

            // The same token with a different implicit assertion must not verify (v4).
            if v4 {
                assert!(
                    paseto::verify_public(token, &key, b"other").is_err(),
                    "{name}: implicit assertion ignored"
                );
            }
            counts.public_ok += 1;
        } else {
            // A local (encrypted) token: never accepted by a public-key verifier.
            let err = paseto::verify_public(token, &suite_public, &[])
                .expect_err(&format!("{name} is a local token and must be refused"));
            assert_eq!(err.code(), ErrorCode::Unauthenticated, "{name}: {err}");
            counts.local_rejected += 1;
        }
    }
    counts
}

#[test]
fn v2_vectors() {
    let counts = run(include_str!("vectors/paseto-v2.json"), TokenVersion::V2);
    assert_eq!(
        counts,
        Counts {
            public_ok: 3,
            expected_failures: 3,
            local_rejected: 9
        }
    );
}

#[test]
fn v4_vectors() {
    let counts = run(include_str!("vectors/paseto-v4.json"), TokenVersion::V4);
    assert_eq!(
        counts,
        Counts {
            public_ok: 3,
            expected_failures: 5,
            local_rejected: 9
        }
    );
}

#[test]
fn v2_refuses_an_implicit_assertion_instead_of_ignoring_it() {
    let suite: Value = serde_json::from_str(include_str!("vectors/paseto-v2.json")).unwrap();
    let test = &suite["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "2-S-1")
        .unwrap();
    let key = public_key(text(test, "public-key")).unwrap();
    let err = paseto::verify_public(text(test, "token"), &key, b"x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}
