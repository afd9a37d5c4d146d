//! `identity.keys` and `identity.rotate`: the keys verifiers should trust (this node's
//! current and retired keys and, in cluster mode, the other nodes'), rotation of the
//! signing key, and publishing `identity.pub`.

use crate::store::RetiredKey;
use crate::{Identity, IdentityError, MAX_TTL_SECONDS};
use serde_json::json;
use std::sync::Arc;
use strata_cap::{SigningKey, Timestamp, TokenVersion, TrustedKey};
use strata_ipc::PeerCred;
use strata_proto::methods::identity::{KeyInfo, KeysResult, RotateResult};

/// Most retired keys kept trusted at once (each for [`MAX_TTL_SECONDS`] after its
/// rotation): a rotation beyond is RESOURCE_EXHAUSTED, so the key list every verifier
/// loads (and every feed answer may carry) stays small.
pub const MAX_RETIRED_KEYS: usize = 256;
impl Identity {
    /// `identity.keys`.
    pub fn keys(&self) -> Result<KeysResult, IdentityError> {
        Ok(KeysResult {
            keys: self.key_infos()?,
            keys_epoch: self.feed.position().1,
        })
    }

    /// `identity.rotate` (admin): a new current key; the old one stays trusted for
    /// [`MAX_TTL_SECONDS`] so every token it signed runs its course.
    pub async fn rotate(&self, peer: &PeerCred) -> Result<RotateResult, IdentityError> {
        if !self.is_admin(peer) {
            return Err(self.deny(
                peer,
                "identity.rotate",
                "only admins may rotate the signing key".into(),
                None,
            ));
        }
        let _one = self.rotating.lock().await;
        let now = self.now().unix_seconds();
        let retired_in_window = self
            .store
            .retired_keys()?
            .iter()
            .filter(|(_, k)| k.not_after > now)
            .count();
        if retired_in_window >= MAX_RETIRED_KEYS {
            return Err(IdentityError::Exhausted(format!(
                "{MAX_RETIRED_KEYS} retired keys are still trusted (each for {} days after \
                 its rotation); no further rotation until the oldest lapses",
                MAX_TTL_SECONDS / 86_400
            )));
        }
        let old = self.signer();
        let old_kid = old.kid(TokenVersion::V2).to_string();
        let retired = RetiredKey {
            public_key: old.public_key().to_base64(),
            not_after: self.now().unix_seconds() + MAX_TTL_SECONDS,
        };
        // Retire the old key first: if we crash before the new key file is in place
        // (written atomically by `strata_files::write_atomic`), the old key is still
        // current and merely also listed as retired, which changes nothing.
        let epoch = self.store.retire_key(&old_kid, &retired)?;
        let next = SigningKey::create(&self.key_path)
            .map_err(|e| IdentityError::Internal(format!("cannot install the new key: {e}")))?;
        let kid = next.kid(TokenVersion::V2).to_string();
        *self.signer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.refresh_trusted_keys()?;
        self.publish_public_key()?;
        self.feed.keys_changed(epoch);
        if let Some(link) = self.cluster.get() {
            link.keys_changed();
        }
        self.feed.wait_for_acks(0, epoch).await;
        self.audit.record(
            "key.rotated",
            Some(peer),
            json!({"kid": kid, "retired": old_kid}),
        );
        Ok(RotateResult {
            kid,
            keys_epoch: epoch,
        })
    }

    /// Every key verifiers should trust: this node's own (unless it was removed from
    /// the cluster) and, in cluster mode, the other nodes' keys from the trust bundle.
    pub(crate) fn key_infos(&self) -> Result<Vec<KeyInfo>, IdentityError> {
        let mut keys = if self.is_removed() {
            Vec::new()
        } else {
            self.own_key_infos()?
        };
        keys.extend(
            self.remote_keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        Ok(keys)
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This node's current key and every retired key still within its window, each
    /// bound to this node's issuer name.
    pub(crate) fn own_key_infos(&self) -> Result<Vec<KeyInfo>, IdentityError> {
        let current = self.signer();
        let mut keys = vec![KeyInfo {
            kid: current.kid(TokenVersion::V2).to_string(),
            public_key: current.public_key().to_base64(),
            not_before: None,
            not_after: None,
            current: true,
            node: Some(self.node_id.clone()),
        }];
        let now = self.now().unix_seconds();
        for (kid, retired) in self.store.retired_keys()? {
            if retired.not_after > now && kid != keys[0].kid {
                keys.push(KeyInfo {
                    kid,
                    public_key: retired.public_key,
                    not_before: None,
                    not_after: Some(Timestamp::from_unix_seconds(retired.not_after).to_string()),
                    current: false,
                    node: Some(self.node_id.clone()),
                });
            }
        }
        Ok(keys)
    }

    pub(crate) fn refresh_trusted_keys(&self) -> Result<(), IdentityError> {
        let trusted = self
            .key_infos()?
            .iter()
            .map(TrustedKey::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.verifier.keys().replace(trusted);
        Ok(())
    }

    pub(crate) fn publish_public_key(&self) -> Result<(), IdentityError> {
        self.signer()
            .public_key()
            .write_file(&self.pub_path)
            .map_err(|e| IdentityError::Internal(format!("cannot write identity.pub: {e}")))
    }
}
