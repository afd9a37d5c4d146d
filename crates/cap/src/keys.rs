//! Keys: identity's [`SigningKey`] and its file, [`PublicKey`] and the `identity.pub`
//! encoding, [`KeyId`]s, and the verifiers' [`TrustedKeys`].

use crate::claims::Claims;
use crate::clock::Timestamp;
use crate::error::{quoted, Error};
use crate::paseto::{sign_public, TokenVersion};
use arc_swap::{ArcSwap, Guard};
use ct_codecs::{Base64, Base64UrlSafeNoPadding, Decoder, Encoder};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version2::V2;
use pasetors::version4::V4;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use zeroize::Zeroizing;

/// An Ed25519 public key, as published by identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key with these 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The PASERK id of this key for tokens of `version` (`k2.pid.…` or `k4.pid.…`): what
    /// the token footer's `kid` carries.
    pub fn kid(&self, version: TokenVersion) -> KeyId {
        let id = match version {
            TokenVersion::V2 => AsymmetricPublicKey::<V2>::from(&self.0).map(|k| Id::from(&k)),
            TokenVersion::V4 => AsymmetricPublicKey::<V4>::from(&self.0).map(|k| Id::from(&k)),
        }
        .expect("any 32 bytes are accepted as an Ed25519 public key by pasetors");
        let mut text = String::with_capacity(KeyId::LEN);
        id.fmt(&mut text).expect("writing to a String cannot fail");
        KeyId(text)
    }

    /// The `identity.pub` encoding: standard base64 (with padding) of the 32 raw bytes.
    pub fn to_base64(&self) -> String {
        Base64::encode_to_string(self.0).expect("32 bytes always encode")
    }

    /// Parses the `identity.pub` encoding; surrounding whitespace (a trailing newline) is
    /// ignored.
    pub fn from_base64(text: &str) -> Result<PublicKey, Error> {
        let text = text.trim_ascii();
        let invalid = || Error::InvalidValue {
            what: "public key",
            reason: format!(
                "{} is not standard base64 of a 32-byte Ed25519 key",
                quoted(text)
            ),
        };
        let bytes = Base64::decode_to_vec(text, None).map_err(|_| invalid())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
        Ok(PublicKey(bytes))
    }

    /// Reads an `identity.pub` file.
    pub fn read_file(path: &Path) -> Result<PublicKey, Error> {
        let text = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        PublicKey::from_base64(&text).map_err(|_| Error::KeyFileInvalid {
            path: path.to_owned(),
            reason: "expected standard base64 of a 32-byte Ed25519 public key",
        })
    }

    /// Writes an `identity.pub` file (mode 0644) atomically: a reader sees the old key or
    /// the new one, never a partial file.
    pub fn write_file(&self, path: &Path) -> Result<(), Error> {
        write_atomic(path, self.to_base64().as_bytes(), 0o644).map_err(|e| io_error(path, e))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A PASERK public-key id, `k2.pid.` or `k4.pid.` followed by 44 base64url characters.
/// Derived from the public key alone (a BLAKE2b hash, per the PASERK spec), so every
/// party computes the same id for the same key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Length of every key id, in bytes.
    pub const LEN: usize = 7 + 44;

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token version this id belongs to.
    pub fn version(&self) -> TokenVersion {
        if self.0.starts_with(TokenVersion::V4.kid_prefix()) {
            TokenVersion::V4
        } else {
            TokenVersion::V2
        }
    }
}

impl FromStr for KeyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyId, Error> {
        let body = s
            .strip_prefix(TokenVersion::V2.kid_prefix())
            .or_else(|| s.strip_prefix(TokenVersion::V4.kid_prefix()));
        let valid = body.is_some_and(|b| {
            b.len() == 44
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
        if !valid {
            return Err(Error::InvalidValue {
                what: "key id",
                reason: format!("{} is not a k2.pid or k4.pid PASERK id", quoted(s)),
            });
        }
        Ok(KeyId(s.to_owned()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// The token footer: `{"kid":"k2.pid.…"}`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Footer {
    pub(crate) kid: String,
}

/// Where [`SigningKey::load_or_create`] got the key from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// An existing key file was loaded.
    Loaded,
    /// There was no key file; a new key was generated and saved.
    Created,
}

/// Identity's Ed25519 signing key. Only identity holds one (SPEC §1, invariant 2).
///
/// The secret never appears in `Debug` output or error messages, and its bytes are zeroed
/// when the key is dropped.
pub struct SigningKey {
    v2: AsymmetricSecretKey<V2>,
    v4: AsymmetricSecretKey<V4>,
    public: PublicKey,
    kid_v2: KeyId,
    kid_v4: KeyId,
}

impl SigningKey {
    /// Largest key file accepted, in bytes; a PASERK secret key is about 100.
    const MAX_FILE_LEN: u64 = 1024;

    /// A new random key.
    pub fn generate() -> Result<SigningKey, Error> {
        let pair = AsymmetricKeyPair::<V2>::generate().map_err(|_| Error::Random)?;
        SigningKey::from_v2(pair.secret).map_err(|_| Error::Random)
    }

    /// The key from its 64 raw bytes (32-byte seed, then the 32-byte public key), the form
    /// used by libsodium and the PASETO test vectors. Fails if the halves do not match.
    pub fn from_keypair_bytes(bytes: &[u8; 64]) -> Result<SigningKey, Error> {
        let invalid = |reason: &str| Error::InvalidValue {
            what: "signing key",
            reason: reason.to_owned(),
        };
        // ed25519-compact panics on an all-zero seed; refuse it first.
        if bytes[..32].iter().all(|&b| b == 0) {
            return Err(invalid("the seed is all zeros"));
        }
        let v2 = AsymmetricSecretKey::<V2>::from(bytes)
            .map_err(|_| invalid("the public half does not match the seed"))?;
        SigningKey::from_v2(v2)
    }

    fn from_v2(v2: AsymmetricSecretKey<V2>) -> Result<SigningKey, Error> {
        let invalid = || Error::InvalidValue {
            what: "signing key",
            reason: "not a valid Ed25519 key pair".into(),
        };
        let v4 = AsymmetricSecretKey::<V4>::from(v2.as_bytes()).map_err(|_| invalid())?;
        let public: [u8; 32] = v2.as_bytes()[32..].try_into().map_err(|_| invalid())?;
        let public = PublicKey(public);
        Ok(SigningKey {
            kid_v2: public.kid(TokenVersion::V2),
            kid_v4: public.kid(TokenVersion::V4),
            v2,
            v4,
            public,
        })
    }

    /// The public half, to publish as `identity.pub`.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The key id put in the footer of `version` tokens.
    pub fn kid(&self, version: TokenVersion) -> &KeyId {
        match version {
            TokenVersion::V2 => &self.kid_v2,
            TokenVersion::V4 => &self.kid_v4,
        }
    }

    /// Signs `claims` as a `v2.public` token with a `{"kid":…}` footer.
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        self.sign_as(claims, TokenVersion::V2)
    }

    /// Signs `claims` as a token of `version` with a `{"kid":…}` footer.
    pub fn sign_as(&self, claims: &Claims, version: TokenVersion) -> Result<String, Error> {
        let payload = serde_json::to_vec(claims).map_err(|_| Error::Signing)?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid(version).as_str().to_owned(),
        })
        .map_err(|_| Error::Signing)?;
        sign_public(self, version, &payload, &footer, &[])
    }

    pub(crate) fn v2_secret(&self) -> &AsymmetricSecretKey<V2> {
        &self.v2
    }

    pub(crate) fn v4_secret(&self) -> &AsymmetricSecretKey<V4> {
        &self.v4
    }

    /// Loads the key at `path`, or, if there is no file there, generates one and saves it.
    ///
    /// The parent directory is created (mode 0700) if missing. See [`SigningKey::load`] and
    /// [`SigningKey::create`]. Only one process should manage a given key file.
    pub fn load_or_create(path: &Path) -> Result<(SigningKey, KeyOrigin), Error> {
        match SigningKey::load(path) {
            Ok(key) => Ok((key, KeyOrigin::Loaded)),
            Err(Error::KeyFileIo { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok((SigningKey::create(path)?, KeyOrigin::Created))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the key file at `path`: one line holding a `k2.secret.` PASERK.
    ///
    /// Refuses a file that group or others may read (the key may have leaked), anything
    /// but a regular file, and anything that is not a valid key.
    pub fn load(path: &Path) -> Result<SigningKey, Error> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        // Check the file we opened, not the path, so a swap between check and read is moot.
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        let invalid = |reason| Error::KeyFileInvalid {
            path: path.to_owned(),
            reason,
        };
        if !meta.is_file() {
            return Err(invalid("it is not a regular file"));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFileExposed {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > SigningKey::MAX_FILE_LEN {
            return Err(invalid("it is far larger than a key file"));
        }
        // Sized up front so the buffer never reallocates and leaves a copy behind.
        let mut contents =
            Zeroizing::new(Vec::with_capacity(SigningKey::MAX_FILE_LEN as usize + 1));
        (&file)
            .take(SigningKey::MAX_FILE_LEN + 1)
            .read_to_end(&mut contents)
            .map_err(|e| io_error(path, e))?;
        let text = std::str::from_utf8(&contents)
            .map_err(|_| invalid("expected one line holding a k2.secret PASERK"))?
            .trim_ascii();
        let Some(encoded) = text.strip_prefix("k2.secret.") else {
            return Err(invalid("expected one line holding a k2.secret PASERK"));
        };
        // Decoded here rather than by pasetors, which panics on an all-zero seed.
        let mut pair = Zeroizing::new([0u8; 64]);
        let decoded_len = Base64UrlSafeNoPadding::decode(&mut pair[..], encoded, None)
            .map(|bytes| bytes.len())
            .map_err(|_| invalid("the k2.secret PASERK is not base64url of a 64-byte key pair"))?;
        if decoded_len != 64 {
            return Err(invalid(
                "the k2.secret PASERK is not base64url of a 64-byte key pair",
            ));
        }
        SigningKey::from_keypair_bytes(&pair)
            .map_err(|_| invalid("the k2.secret PASERK does not hold a valid Ed25519 key pair"))
    }

    /// Generates a key and saves it at `path` with mode 0600, atomically (temporary file,
    /// fsync, rename, fsync of the directory), creating the directory (0700) if missing.
    /// An existing file at `path` is replaced.
    pub fn create(path: &Path) -> Result<SigningKey, Error> {
        let key = SigningKey::generate()?;
        let mut text = Zeroizing::new(String::with_capacity(128));
        key.v2.fmt(&mut *text).map_err(|_| Error::Signing)?;
        text.push('\n');
        if let Some(dir) = parent_dir(path) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(dir, e))?;
        }
        write_atomic(path, text.as_bytes(), 0o600).map_err(|e| io_error(path, e))?;
        Ok(key)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid_v2.as_str())
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::KeyFileIo {
        path: path.to_owned(),
        source,
    }
}

fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part:
/// a temporary file in the same directory, created with `mode` (never wider), is written
/// and fsynced, renamed over `path`, and the directory is fsynced so the rename survives a
/// crash.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| io::Error::other("random number generator failed"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{:016x}", u64::from_ne_bytes(suffix)));
    let tmp: PathBuf = dir.join(tmp_name);

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    drop(file);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// A public key a verifier accepts, with an optional validity window.
///
/// The window is checked against the verifier's clock on every request (cached tokens
/// too): use it to phase out an old key after rotation, e.g. `not_after` = rotation time +
/// the longest token lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    key: PublicKey,
    not_before: Option<Timestamp>,
    not_after: Option<Timestamp>,
    /// When set, tokens signed with this key must carry exactly this `iss`.
    issuer: Option<String>,
}

/// A key as identity publishes it (`identity.keys`, `identity.revocations`): the one
/// conversion every verifier uses.
impl TryFrom<&strata_proto::methods::identity::KeyInfo> for TrustedKey {
    type Error = Error;

    fn try_from(info: &strata_proto::methods::identity::KeyInfo) -> Result<TrustedKey, Error> {
        let mut key = TrustedKey::new(PublicKey::from_base64(&info.public_key)?);
        if let Some(t) = &info.not_before {
            key = key.not_before(t.parse()?);
        }
        if let Some(t) = &info.not_after {
            key = key.not_after(t.parse()?);
        }
        if let Some(node) = &info.node {
            key = key.issuer(format!("identity@{node}"));
        }
        Ok(key)
    }
}

impl TrustedKey {
    /// Trust `key` at all times.
    pub fn new(key: PublicKey) -> TrustedKey {
        TrustedKey {
            key,
            not_before: None,
            not_after: None,
            issuer: None,
        }
    }

    /// Accept tokens signed with this key only when their `iss` is `issuer` (a node's
    /// identity, `identity@<node>`): one node's key cannot speak for another node.
    pub fn issuer(mut self, issuer: String) -> TrustedKey {
        self.issuer = Some(issuer);
        self
    }

    /// The `iss` tokens signed with this key must carry, if bound to one.
    pub fn bound_issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Trust the key only from `t` on.
    pub fn not_before(mut self, t: Timestamp) -> TrustedKey {
        self.not_before = Some(t);
        self
    }

    /// Trust the key only before `t`.
    pub fn not_after(mut self, t: Timestamp) -> TrustedKey {
        self.not_after = Some(t);
        self
    }

    /// The key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// Start of the window, if any.
    pub fn valid_from(&self) -> Option<Timestamp> {
        self.not_before
    }

    /// End of the window (exclusive), if any.
    pub fn valid_until(&self) -> Option<Timestamp> {
        self.not_after
    }

    /// Whether the key may be used to verify at `now`.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        let started = match self.not_before {
            Some(t) => now >= t,
            None => true,
        };
        let ended = match self.not_after {
            Some(t) => now >= t,
            None => false,
        };
        started && !ended
    }
}

/// One immutable version of the trusted key set.
pub(crate) struct KeySet {
    /// Bumped on every change; lets the token cache tell cheaply that nothing changed.
    pub(crate) generation: u64,
    /// Each key under both its `k2.pid` and its `k4.pid` id.
    by_kid: HashMap<String, Arc<TrustedKey>>,
    keys: Vec<Arc<TrustedKey>>,
}

impl KeySet {
    fn build(generation: u64, keys: impl IntoIterator<Item = TrustedKey>) -> KeySet {
        let mut unique: Vec<Arc<TrustedKey>> = Vec::new();
        for key in keys {
            // A later entry for the same public key replaces the earlier one.
            unique.retain(|k| k.key != key.key);
            unique.push(Arc::new(key));
        }
        let mut by_kid = HashMap::with_capacity(unique.len() * 2);
        for key in &unique {
            for version in [TokenVersion::V2, TokenVersion::V4] {
                by_kid.insert(key.key.kid(version).0, Arc::clone(key));
            }
        }
        KeySet {
            generation,
            by_kid,
            keys: unique,
        }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&Arc<TrustedKey>> {
        self.by_kid.get(kid)
    }

    fn list(&self) -> Vec<TrustedKey> {
        self.keys.iter().map(|k| TrustedKey::clone(k)).collect()
    }
}

/// The public keys a verifier accepts, looked up by the `kid` in a token's footer.
///
/// Readers get a lock-free snapshot (`arc-swap`); updates (identity rotated its key, a
/// new `identity.pub` appeared) copy the small set and swap it in, so a service can follow
/// key changes at runtime without restarting (SPEC §5.5).
pub struct TrustedKeys {
    current: ArcSwap<KeySet>,
}

impl TrustedKeys {
    /// A set holding `keys`.
    pub fn new(keys: impl IntoIterator<Item = TrustedKey>) -> TrustedKeys {
        TrustedKeys {
            current: ArcSwap::from_pointee(KeySet::build(0, keys)),
        }
    }

    /// Replaces the whole set.
    pub fn replace(&self, keys: impl IntoIterator<Item = TrustedKey>) {
        let keys: Vec<TrustedKey> = keys.into_iter().collect();
        self.current
            .rcu(|old| KeySet::build(old.generation + 1, keys.iter().cloned()));
    }

    /// Adds `key`, or updates the window of a key already present.
    pub fn insert(&self, key: TrustedKey) {
        self.current.rcu(|old| {
            let mut keys = old.list();
            keys.push(key.clone());
            KeySet::build(old.generation + 1, keys)
        });
    }

    /// Stops trusting `key`. Returns whether it was trusted. Tokens it signed, cached or
    /// not, are refused from now on.
    pub fn remove(&self, key: &PublicKey) -> bool {
        let old = self.current.rcu(|old| {
            let keys = old.list().into_iter().filter(|k| k.key != *key);
            KeySet::build(old.generation + 1, keys)
        });
        old.keys.iter().any(|k| k.key == *key)
    }

    /// The trusted key with id `kid` (either its `k2.pid` or `k4.pid` form), if any.
    pub fn get(&self, kid: &str) -> Option<TrustedKey> {
        self.current.load().get(kid).map(|k| TrustedKey::clone(k))
    }

    /// Every trusted key.
    pub fn keys(&self) -> Vec<TrustedKey> {
        self.current.load().list()
    }

    pub(crate) fn snapshot(&self) -> Guard<Arc<KeySet>> {
        self.current.load()
    }
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
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
            write_atomic(&path, contents.as_bytes(), 0o600).unwrap();
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
}
