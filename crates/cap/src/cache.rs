//! The verified-token cache: lets a repeated token skip Ed25519 verification and JSON
//! parsing. It never skips policy: [`authorize`](crate::authorize) still checks expiry,
//! revocation and rate on every request.

use crate::claims::Claims;
use crate::clock::Timestamp;
use crate::keys::{KeySet, TrustedKey};
use crate::table::SetTable;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Bounded map from token text to its verified claims.
///
/// Keyed by a SipHash of the token under a per-process random key, and every hit compares
/// the full stored token, so a hash collision can only cause a miss, never hand out another
/// token's claims. A hit is honoured only if the signing key is still trusted and inside its
/// validity window.
pub(crate) struct TokenCache {
    table: SetTable<Entry, CACHE_WAYS>,
    hasher: RandomState,
}

const CACHE_WAYS: usize = 4;

struct Entry {
    hash: u64,
    token: Box<str>,
    claims: Arc<Claims>,
    kid: Box<str>,
    key: Arc<TrustedKey>,
    /// The key-set generation in which `key` was last confirmed to be trusted under `kid`.
    generation: u64,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            table: SetTable::new(capacity),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn clear(&self) {
        self.table.clear();
    }

    /// The cached claims for `token`, if it was verified before and its key is still
    /// trusted at `now` in `keys`.
    pub(crate) fn get(&self, token: &str, keys: &KeySet, now: Timestamp) -> Option<Arc<Claims>> {
        let hash = self.hasher.hash_one(token.as_bytes());
        let mut set = self.table.lock(hash);
        let is_this = |e: &Entry| e.hash == hash && *e.token == *token;
        let entry = set.find(is_this)?;
        if entry.generation != keys.generation {
            // The key set changed since this entry was confirmed; look the key up again.
            match keys.get(&entry.kid) {
                Some(current)
                    if current.key() == entry.key.key()
                        && current.bound_issuer() == entry.key.bound_issuer() =>
                {
                    entry.key = Arc::clone(current);
                    entry.generation = keys.generation;
                }
                _ => {
                    set.remove(is_this);
                    return None;
                }
            }
        }
        if !entry.key.is_valid_at(now) {
            // Let full verification report why.
            return None;
        }
        Some(Arc::clone(&entry.claims))
    }

    /// Remembers that `token` verified to `claims` with `key` (found under `kid` in the key
    /// set of `generation`).
    pub(crate) fn insert(
        &self,
        token: &str,
        claims: Arc<Claims>,
        kid: &str,
        key: Arc<TrustedKey>,
        generation: u64,
    ) {
        let hash = self.hasher.hash_one(token.as_bytes());
        let mut set = self.table.lock(hash);
        set.remove(|e| e.hash == hash && *e.token == *token);
        set.insert(Entry {
            hash,
            token: token.into(),
            claims,
            kid: kid.into(),
            key,
            generation,
        });
    }
}
