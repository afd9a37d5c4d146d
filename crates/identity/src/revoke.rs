//! `identity.revoke`: durable first (redb, fsync'd), then enforced here, fed to this
//! node's verifiers and (in cluster mode) published to etcd; answered once the trusted
//! verifiers acknowledged it or [`ACK_TIMEOUT`](crate::ACK_TIMEOUT) passed. Non-admin
//! callers are held to the [`RevocationQuota`]. A non-admin may revoke the capability it
//! presents or a descendant of it: known from this node's issuance records or, for one
//! delegated on another node, from the lineage record that node signed in etcd
//! (`cluster::lineage`).

use crate::revoke_quota::RevocationQuota;
use crate::{store, Identity, IdentityError};
use serde_json::json;
use strata_cap::{CapId, Timestamp};
use strata_ipc::{Call, PeerCred};
use strata_proto::methods::identity::{RevokeParams, RevokeResult};

impl Identity {
    /// `identity.revoke`: durable, then acknowledged by the trusted verifiers (admins' and
    /// `verifier_uids`'); the answer says how many confirmed and how many did not in time.
    pub async fn revoke(
        &self,
        call: &Call,
        p: RevokeParams,
    ) -> Result<RevokeResult, IdentityError> {
        let peer = &crate::router::local_caller(call)?;
        let cap: CapId = p.cap_id.parse().map_err(|_| {
            IdentityError::invalid("cap_id", "must be a capability id (32 hex digits)")
        })?;
        let known = self.store.cap(&cap)?;
        // Who is held to the revocation quota for this one: `None` for an admin.
        let mut by = None;
        // The expiry of a holder's own token, from its verified claims: the revocation
        // then lapses with it even when identity has no record of the capability (a root
        // issue lost in a crash, or a capability another node issued).
        let mut own_expiry = None;
        // The expiry from the lineage another node recorded in etcd, when that is what
        // authorized a holder of an ancestor.
        let mut shared_expiry = None;
        if !self.is_admin(peer) {
            let Some(token) = call.token() else {
                return Err(self.deny(
                    peer,
                    "identity.revoke",
                    "revoking needs admin credentials, or the capability or an ancestor of it in `auth.token`".into(),
                    Some(&cap),
                ));
            };
            let holder = self.check_token(token)?;
            let is_self = holder.jti == cap;
            let holder_id = holder.jti.to_string();
            let mut is_ancestor = known
                .as_ref()
                .is_some_and(|k| k.parents.contains(&holder_id));
            // Only the issuing node delegates, so every descendant of a token issued here
            // is in this node's store: etcd is read only for another node's token, and a
            // record counts only from the node that issued the holder's token (a node
            // vouches for the lineage of its own tokens alone).
            let holder_node = holder.iss.strip_prefix("identity@");
            if !is_self && known.is_none() && holder_node.is_some_and(|n| n != self.node_id) {
                // Delegated on another node: its lineage as that node recorded it in etcd.
                if let Some(shared) = self.shared_lineage(&cap).await? {
                    if Some(shared.node.as_str()) == holder_node
                        && shared.parents.contains(&holder_id)
                    {
                        is_ancestor = true;
                        shared_expiry = Some(shared.expires);
                    }
                }
            }
            if !is_self && !is_ancestor {
                return Err(self.deny(
                    peer,
                    "identity.revoke",
                    "the presented token is neither this capability nor an ancestor of it".into(),
                    Some(&cap),
                ));
            }
            if is_self {
                own_expiry = Some(holder.exp.unix_seconds());
            }
            by = Some(store::Revoker {
                uid: peer.uid,
                lineage: holder.parents.first().unwrap_or(&holder.jti).to_string(),
                own: is_self,
            });
        }
        let expires = known.map(|k| k.expires).or(shared_expiry).or(own_expiry);
        let record = self.record_revocation(peer, &cap, expires, by)?;
        self.revoked
            .insert(cap, expires.map(Timestamp::from_unix_seconds));
        self.feed.revoked_up_to(record.seq);
        // This node's verifiers and etcd, at the same time.
        let ((confirmed, unconfirmed), published) =
            tokio::join!(self.feed.wait_for_acks(record.seq, 0), async {
                match self.cluster.get() {
                    None => Ok(()),
                    Some(link) => link.publish_revocation(&record).await,
                }
            });
        self.audit.record(
            "cap.revoked",
            Some(peer),
            json!({"cap_id": cap.to_string(), "seq": record.seq,
                   "verifiers_acknowledged": confirmed, "verifiers_unconfirmed": unconfirmed,
                   "cluster": match &published { Ok(()) => "recorded".to_owned(), Err(e) => format!("not recorded: {e}") }}),
        );
        if let Err(e) = published {
            // The detail (etcd endpoints, its errors) is in the log and the audit record,
            // not in the answer.
            tracing::warn!(cap_id = %cap, error = %e, "revocation not yet recorded in etcd");
            return Err(IdentityError::Unavailable(format!(
                "revoked and enforced on node `{}`, but NOT yet cluster-wide: etcd did not \
                 record it. It will be published when etcd is reachable again; repeat the \
                 revocation to confirm",
                self.node_id
            )));
        }
        Ok(RevokeResult {
            status: "revoked".to_owned(),
            confirmed: confirmed as u64,
            unconfirmed: unconfirmed as u64,
        })
    }

    /// Records the revocation of `cap` durably, within the quota of `by` (a non-admin
    /// caller). Revoking what is already revoked is answered with the existing record and
    /// costs no quota.
    fn record_revocation(
        &self,
        peer: &PeerCred,
        cap: &CapId,
        expires: Option<i64>,
        by: Option<store::Revoker>,
    ) -> Result<store::RevocationRecord, IdentityError> {
        // Held across the check and the write, so two revocations cannot both take the
        // last unit of a quota.
        let mut quota = self.lock_quota();
        if let Some(existing) = self.store.revocation_of(cap)? {
            return Ok(existing);
        }
        if let Some(by) = &by {
            if let Err(reason) = quota.admit(by) {
                drop(quota);
                self.audit.record(
                    "revoke.quota_exceeded",
                    Some(peer),
                    json!({"cap_id": cap.to_string(), "lineage": by.lineage}),
                );
                return Err(IdentityError::Exhausted(reason));
            }
        }
        let record = self
            .store
            .revoke(cap, expires, self.now().unix_seconds(), by)?;
        // Only a new record made by this call carries `by` (one learnt from the cluster
        // in between does not).
        if let Some(by) = &record.by {
            quota.add(by);
        }
        Ok(record)
    }

    pub(crate) fn lock_quota(&self) -> std::sync::MutexGuard<'_, RevocationQuota> {
        self.quota.lock().unwrap_or_else(|p| p.into_inner())
    }
}
