//! [`Verifier`]: token text in, verified [`Claims`] out, through the cache.

use crate::cache::TokenCache;
use crate::claims::Claims;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::keys::{Footer, KeyId, KeySet, TrustedKey, TrustedKeys};
use crate::paseto::{UntrustedPublicToken, MAX_TOKEN_LEN};
use crate::policy::{authorize, AuthContext};
use std::fmt;
use std::sync::Arc;

/// Checks tokens against a set of [`TrustedKeys`], caching the result.
///
/// A token is accepted when it is a `v2.public` (or `v4.public`) PASETO token no longer
/// than [`MAX_TOKEN_LEN`], its footer is `{"kid":"k2.pid.…"}` (`k4.pid` for v4) naming a
/// key that is trusted and inside its validity window at `now`, the signature verifies
/// with that key, the payload parses as [`Claims`] and its `aud` is [`Claims::AUDIENCE`].
/// Tokens without a `kid` are refused: every token identity issues has one, and it bounds
/// the work per token to one signature check.
///
/// Verification does not look at `exp`, `nbf` or revocation; [`authorize`] does, on every
/// request, cached or not.
pub struct Verifier {
    keys: Arc<TrustedKeys>,
    cache: TokenCache,
}

impl Verifier {
    /// A reasonable cache size for one service: 16,384 tokens.
    pub const DEFAULT_CACHE_CAPACITY: usize = 16_384;

    /// A verifier trusting `keys` (shared, so the service can update them at runtime),
    /// caching up to `cache_capacity` verified tokens (rounded down to a multiple of 4; at
    /// least 4).
    pub fn new(keys: Arc<TrustedKeys>, cache_capacity: usize) -> Verifier {
        Verifier {
            keys,
            cache: TokenCache::new(cache_capacity),
        }
    }

    /// The trusted keys; update them through this handle or another clone of the `Arc`.
    pub fn keys(&self) -> &Arc<TrustedKeys> {
        &self.keys
    }

    /// Verifies `token` at `now`, from the cache when it was verified before.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<Claims>, Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::TokenTooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let keys = self.keys.snapshot();
        if let Some(claims) = self.cache.get(token, &keys, now) {
            return Ok(claims);
        }
        let (claims, kid, key) = verify_with(token, &keys, now)?;
        let claims = Arc::new(claims);
        self.cache.insert(
            token,
            Arc::clone(&claims),
            kid.as_str(),
            key,
            keys.generation,
        );
        Ok(claims)
    }

    /// Verifies `token` at `now` without reading or filling the cache (for
    /// `identity.introspect`, and to measure the uncached cost).
    pub fn verify_uncached(&self, token: &str, now: Timestamp) -> Result<Claims, Error> {
        let keys = self.keys.snapshot();
        verify_with(token, &keys, now).map(|(claims, _, _)| claims)
    }

    /// The whole per-request check: [`Verifier::verify`] at `ctx.now`, then [`authorize`]
    /// for `method`. Returns the claims (for the path prefix and handle binding).
    pub fn authorize_request(
        &self,
        token: &str,
        method: &str,
        ctx: &AuthContext<'_>,
    ) -> Result<Arc<Claims>, Error> {
        let claims = self.verify(token, ctx.now)?;
        authorize(&claims, method, ctx)?;
        Ok(claims)
    }

    /// Number of tokens in the cache. Walks the cache: for tests and metrics.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Most tokens the cache holds.
    pub fn cache_capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("cache_capacity", &self.cache.capacity())
            .finish()
    }
}

fn verify_with(
    token: &str,
    keys: &KeySet,
    now: Timestamp,
) -> Result<(Claims, KeyId, Arc<TrustedKey>), Error> {
    let untrusted = UntrustedPublicToken::parse(token)?;
    let kid = Footer::kid_of(untrusted.untrusted_footer())?;
    if kid.version() != untrusted.version() {
        return Err(Error::MalformedToken(
            "the footer's kid is for a different PASETO version than the token",
        ));
    }
    let key = keys.get(kid.as_str()).ok_or_else(|| Error::UnknownKey {
        kid: kid.to_string(),
    })?;
    if !key.is_valid_at(now) {
        return Err(Error::KeyNotValid {
            kid: kid.to_string(),
        });
    }
    let verified = untrusted.verify(key.key(), &[])?;
    let claims: Claims = serde_json::from_str(&verified.payload)
        .map_err(|e| Error::InvalidClaims(truncate(e.to_string(), 200)))?;
    if claims.aud != Claims::AUDIENCE {
        return Err(Error::InvalidClaims(format!(
            "aud is {:?}, not \"{}\"",
            truncate(claims.aud, 80),
            Claims::AUDIENCE
        )));
    }
    if let Some(expected) = key.bound_issuer() {
        if claims.iss != expected {
            return Err(Error::WrongIssuer {
                kid: kid.to_string(),
                expected: expected.to_owned(),
                got: truncate(claims.iss, 80),
            });
        }
    }
    Ok((claims, kid, Arc::clone(key)))
}

/// Cuts `s` to at most `max` bytes (on a character boundary), marking the cut.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}
