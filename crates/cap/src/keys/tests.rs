use super::*;
use std::os::unix::fs::PermissionsExt;

const VECTOR_PUBLIC: &str = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn kid_matches_the_paserk_test_vector() {
    // PASERK k2.pid-1 and k2.pid-2 test vectors.
    let zero = PublicKey::from_bytes([0; 32]);
    assert_eq!(
        zero.kid(TokenVersion::V2).as_str(),
        "k2.pid.gUztDB_2F1oxWaUa0RYxGYtLw_0TN-g5mw_M7HUMLh7D"
    );
    assert_eq!(
        zero.kid(TokenVersion::V4).as_str(),
        "k4.pid.S_XQmeEwHbbvRmiyfXfHYpLGjXGzjTRSDoT1YtTakWFE"
    );
    let seq = PublicKey::from_bytes(hex32(
        "707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f",
    ));
    assert_eq!(
        seq.kid(TokenVersion::V2).as_str(),
        "k2.pid.4zgEvkSaB64DlcV9ChYZPEqBATLwUsB5zCrlpEOk2wD9"
    );
    let key = PublicKey::from_bytes(hex32(VECTOR_PUBLIC));
    let kid = key.kid(TokenVersion::V2);
    assert_eq!(kid.as_str().len(), KeyId::LEN);
    assert_eq!(kid.as_str().parse::<KeyId>().unwrap(), kid);
    assert_eq!(kid.version(), TokenVersion::V2);
    let kid4 = key.kid(TokenVersion::V4);
    assert!(kid4.as_str().starts_with("k4.pid."));
    assert_eq!(kid4.version(), TokenVersion::V4);
    assert_ne!(kid.as_str()[7..], kid4.as_str()[7..]);
}

#[test]
fn key_id_parse_rejects_other_strings() {
    for bad in [
        "",
        "zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN",
        "k2.pid.short",
        "k2.lid.S_XQqJ2_3wSuXp6Q4nCgsRBP6i6LkxPBQxQYqwJYfpYo",
        "k3.pid.S_XQqJ2_3wSuXp6Q4nCgsRBP6i6LkxPBQxQYqwJYfpYo",
        "k2.pid.S_XQqJ2_3wSuXp6Q4nCgsRBP6i6LkxPBQxQYqwJYfp+o",
    ] {
        assert!(bad.parse::<KeyId>().is_err(), "{bad}");
    }
}

#[test]
fn identity_pub_is_standard_base64_of_raw_key() {
    let key = PublicKey::from_bytes(hex32(VECTOR_PUBLIC));
    let text = key.to_base64();
    assert_eq!(text, "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI=");
    assert_eq!(PublicKey::from_base64(&format!("{text}\n")).unwrap(), key);
    for bad in [
        "",
        "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI",
        "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsa==",
        "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4g",
        "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI=AAAA",
        "Hrnbu7wEfAP9cGBOAHHwmH4Wsot1ciXBHwBBXQ4gsaI_",
    ] {
        assert!(PublicKey::from_base64(bad).is_err(), "{bad}");
    }
}

#[test]
fn public_key_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.pub");
    let key = SigningKey::generate().unwrap().public_key();
    key.write_file(&path).unwrap();
    assert_eq!(PublicKey::read_file(&path).unwrap(), key);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o600, 0o600);
    assert_eq!(mode & 0o022, 0, "never group/world writable");
    fs::write(&path, "junk").unwrap();
    assert!(matches!(
        PublicKey::read_file(&path),
        Err(Error::KeyFileInvalid { .. })
    ));
}

#[test]
fn load_or_create_creates_0600_then_loads_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("identity.key");
    let (created, origin) = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(origin, KeyOrigin::Created);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let (loaded, origin) = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(origin, KeyOrigin::Loaded);
    assert_eq!(loaded.public_key(), created.public_key());
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("identity.key")]);
}

#[test]
fn refuses_a_key_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    SigningKey::create(&path).unwrap();
    for mode in [0o640, 0o604, 0o644] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = SigningKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, Error::KeyFileExposed { .. }),
            "{mode:o}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
    }
    // The exposed file was not replaced.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(SigningKey::load(&path).is_ok());
}

#[test]
fn refuses_a_corrupt_key_file_without_replacing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let bad_seed = format!("k2.secret.{}", "A".repeat(86));
    for contents in ["", "not a key\n", "k2.public.AAAA\n", bad_seed.as_str()] {
        write_atomic(&path, contents.as_bytes(), 0o600, Overwrite::Replace).unwrap();
        let err = SigningKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, Error::KeyFileInvalid { .. }),
            "{contents:?}: {err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), contents);
    }
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(SigningKey::load(&path).is_err());
}

#[test]
fn key_file_holds_a_k2_secret_paserk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let key = SigningKey::create(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("k2.secret."));
    assert!(text.ends_with('\n'));
    let secret = AsymmetricSecretKey::<V2>::try_from(text.trim()).unwrap();
    assert_eq!(&secret.as_bytes()[32..], key.public_key().as_bytes());
}

#[test]
fn debug_output_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let key = SigningKey::create(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let paserk_body = text.trim().strip_prefix("k2.secret.").unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains("k2.pid."), "{debug}");
    assert!(!debug.contains(&paserk_body[..20]), "{debug}");
}

#[test]
fn from_keypair_bytes_checks_the_halves() {
    let mut bytes = [0u8; 64];
    assert!(SigningKey::from_keypair_bytes(&bytes).is_err(), "zero seed");
    bytes[..32].copy_from_slice(&[7; 32]);
    assert!(
        SigningKey::from_keypair_bytes(&bytes).is_err(),
        "wrong public half"
    );
}

#[test]
fn trusted_keys_look_up_by_either_kid_and_follow_updates() {
    let a = SigningKey::generate().unwrap().public_key();
    let b = SigningKey::generate().unwrap().public_key();
    let keys = TrustedKeys::new([TrustedKey::new(a)]);
    assert!(keys.get(a.kid(TokenVersion::V2).as_str()).is_some());
    assert!(keys.get(a.kid(TokenVersion::V4).as_str()).is_some());
    assert!(keys.get(b.kid(TokenVersion::V2).as_str()).is_none());

    let before = keys.snapshot().generation;
    keys.insert(TrustedKey::new(b));
    assert!(keys.snapshot().generation > before);
    assert_eq!(keys.keys().len(), 2);

    let until = Timestamp::from_unix_seconds(1000);
    keys.insert(TrustedKey::new(a).not_after(until));
    assert_eq!(
        keys.keys().len(),
        2,
        "updating a window does not duplicate the key"
    );
    let a_now = keys.get(a.kid(TokenVersion::V2).as_str()).unwrap();
    assert_eq!(a_now.valid_until(), Some(until));

    assert!(keys.remove(&a));
    assert!(!keys.remove(&a));
    assert!(keys.get(a.kid(TokenVersion::V2).as_str()).is_none());
    keys.replace([]);
    assert!(keys.keys().is_empty());
}

#[test]
fn validity_window_is_half_open() {
    let key = SigningKey::generate().unwrap().public_key();
    let t = Timestamp::from_unix_seconds;
    let trusted = TrustedKey::new(key).not_before(t(10)).not_after(t(20));
    assert!(!trusted.is_valid_at(t(9)));
    assert!(trusted.is_valid_at(t(10)));
    assert!(trusted.is_valid_at(t(19)));
    assert!(!trusted.is_valid_at(t(20)));
    assert!(TrustedKey::new(key).is_valid_at(t(i64::MAX)));
}

#[test]
fn of_token_reads_the_footer_kid_and_nothing_too_long() {
    let key = SigningKey::generate().unwrap();
    let claims = crate::Terms {
        sub: "uid:1".into(),
        iss: "identity@n".into(),
        aud: "strata".into(),
        service: "fs".into(),
        rights: vec!["fs.read".parse().unwrap()],
        constraints: Default::default(),
        exp: Timestamp::from_unix_seconds(2_000_000_000),
        parents: vec![],
    }
    .into_claims(crate::CapId::from_bytes([7; 16]), Timestamp::UNIX_EPOCH);
    let token = key.sign(&claims).unwrap();
    assert_eq!(
        KeyId::of_token(&token).as_ref(),
        Some(key.kid(TokenVersion::V2))
    );
    let v4 = key.sign_as(&claims, TokenVersion::V4).unwrap();
    assert_eq!(
        KeyId::of_token(&v4).as_ref(),
        Some(key.kid(TokenVersion::V4))
    );
    // No footer, a footer that is not the kid JSON, or one too long to look at.
    let bare = token.rsplit_once('.').unwrap().0;
    assert_eq!(KeyId::of_token(bare), None);
    assert_eq!(KeyId::of_token(&format!("{bare}.e30")), None); // `{}`
    let (body, footer) = token.rsplit_once('.').unwrap();
    let huge = format!("{body}{}.{footer}", "A".repeat(crate::MAX_TOKEN_LEN));
    assert_eq!(KeyId::of_token(&huge), None);
}
