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
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use strata_files::{write_atomic, Overwrite};
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
        write_atomic(path, self.to_base64().as_bytes(), 0o644, Overwrite::Replace)
            .map_err(|e| io_error(path, e))
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

impl KeyId {
    /// The key id in `token`'s footer, if it has one naming a PASERK key id; the token is
    /// neither verified nor otherwise decoded, and one longer than [`MAX_TOKEN_LEN`] is not
    /// looked at. For reports about a token (`identity.introspect`'s `kid`) that echo
    /// nothing else of it; never for choosing whether to trust it.
    ///
    /// [`MAX_TOKEN_LEN`]: crate::MAX_TOKEN_LEN
    pub fn of_token(token: &str) -> Option<KeyId> {
        if token.len() > crate::paseto::MAX_TOKEN_LEN {
            return None;
        }
        let footer = token.splitn(4, '.').nth(3)?;
        let bytes = Base64UrlSafeNoPadding::decode_to_vec(footer, None).ok()?;
        Footer::kid_of(&bytes).ok()
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

impl Footer {
    /// The key id a (decoded, unverified) footer names: the one footer rule, for
    /// verification and for [`KeyId::of_token`].
    pub(crate) fn kid_of(footer: &[u8]) -> Result<KeyId, Error> {
        if footer.is_empty() {
            return Err(Error::MalformedToken(
                "the token has no footer naming its key (expected {\"kid\":\"k2.pid...\"})",
            ));
        }
        let footer: Footer = serde_json::from_slice(footer)
            .map_err(|_| Error::MalformedToken("the footer is not {\"kid\":\"...\"} JSON"))?;
        footer
            .kid
            .parse()
            .map_err(|_| Error::MalformedToken("the footer's kid is not a PASERK key id"))
    }
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
        write_atomic(
            path,
            text.as_bytes(),
            strata_files::PRIVATE,
            Overwrite::Replace,
        )
        .map_err(|e| io_error(path, e))?;
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
mod tests;
