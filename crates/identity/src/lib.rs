//! The identity service: the only signer of capabilities.
//!
//! It owns the signing key (0600 in the state dir, created once and reused), issues tokens
//! to callers the issuance policy allows (judged by kernel peer credentials), lets any
//! holder delegate a weaker child, revokes durably, and feeds every verifier the trusted
//! keys and the revocation list through a long poll (`identity.revocations`).
//!
//! A revocation is answered only when it is durable (redb, fsync'd) and every connected
//! trusted verifier (of root, identity's own uid or an operator-listed `--verifier-uids`
//! uid) has acknowledged it by polling again past it (see `strata-guard`), or the
//! acknowledgement timeout passed: the answer's `confirmed`/`unconfirmed` say which.
//! Subscribers of other uids are fed, not waited for, so they cannot delay revocations.
//!
//! Not here: checking tokens for other services (each verifies locally with
//! `strata-guard`), and path resolution (fs).
//!
//! One file per job: [`issue`] (`identity.issue` and `identity.delegate`, one way to mint
//! both), `issued` (`identity.issued`, the admin's listing of live issuance records),
//! `revoke` (`identity.revoke`, with [`revoke_quota`]), `introspect`, `keys`
//! (`identity.keys`, `identity.rotate`, publishing `identity.pub`), [`feed`] (the
//! revocation feed and `identity.revocations`), `prune` (forgetting what expired),
//! [`cluster`] (etcd), `router` (the method table), [`issuance_log`] (group commit of
//! issuance records) and [`error`]. This file wires them:
//! the [`Identity`] state and its construction. Time comes from an injected
//! `strata_cap::Clock` (the binary passes the system clock; tests a manual one).

pub mod cluster;
pub mod error;
pub mod feed;
mod introspect;
pub mod issuance_log;
pub mod issue;
mod issued;
mod keys;
mod metrics;
pub mod mint_quota;
// The issuance policy lives in `strata-issuance-policy` (it builds without identity's
// runtime, for its fuzz target); re-exported under its old path.
pub use strata_issuance_policy as policy;
mod prune;
mod revoke;
pub mod revoke_quota;
mod router;
pub mod store;
#[cfg(test)]
mod testing;

pub use error::IdentityError;
pub use feed::ACK_TIMEOUT;
pub use issue::{DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS};
pub use keys::MAX_RETIRED_KEYS;
pub use router::router;

use policy::Policy;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::Store;
use strata_audit::Audit;
use strata_cap::{
    CapId, Claims, Clock, RevocationSet, SigningKey, Timestamp, TokenVersion, TrustedKeys, Verifier,
};
use strata_ipc::{Origin, PeerCred};
use strata_proto::methods::identity::KeyInfo;

/// Where identity keeps things and whom it trusts.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where `identity.sock` and `identity.pub` live.
    pub runtime_dir: PathBuf,
    /// Where identity keeps its signing key, store and audit log (`<state>/identity`).
    pub state_dir: PathBuf,
    /// This node's name; the issuer of its tokens is `identity@<node_id>`.
    pub node_id: String,
    /// Issuance policy file; `None` or a missing file means admins only.
    pub policy: Option<PathBuf>,
    /// How long revocations and issuance records are kept after their capability expired
    /// (see [`strata_cap::DEFAULT_REVOCATION_RETENTION`]).
    pub revocation_retention: Duration,
    /// How many live capabilities non-admins may make identity mint
    /// ([`mint_quota::MintLimits::default`] in production).
    pub mint_limits: mint_quota::MintLimits,
    /// Uids whose feed subscribers a revocation waits for, besides root and identity's own
    /// uid (`--verifier-uids`, e.g. the uids of the node's services). Subscribers of any
    /// other uid are fed but not waited for.
    pub verifier_uids: Vec<u32>,
}

/// The identity service's state: the signing key, the store, the revocation list and feed,
/// the policy and quotas. Its methods are the service's methods (see [`router`]).
pub struct Identity {
    node_id: String,
    own_uid: u32,
    key_path: PathBuf,
    pub_path: PathBuf,
    signer: RwLock<Arc<SigningKey>>,
    verifier: Verifier,
    revoked: RevocationSet,
    store: Arc<Store>,
    /// Issuance records, group-committed into `store` by their own thread.
    issuance: issuance_log::IssuanceLog,
    policy: Policy,
    clock: Arc<dyn Clock>,
    audit: Audit,
    /// The revocation feed: its position, subscribers and acknowledgements.
    feed: feed::Feed,
    /// Revocations made by non-admin callers, counted for their quota.
    quota: Mutex<revoke_quota::RevocationQuota>,
    /// Serialises rotations.
    rotating: tokio::sync::Mutex<()>,
    /// Cluster mode: the link to etcd (set once by [`Identity::join_cluster`]).
    cluster: std::sync::OnceLock<cluster::ClusterLink>,
    /// Cluster mode: the other nodes' keys from the trust bundle.
    remote_keys: RwLock<Vec<KeyInfo>>,
    /// Cluster mode: this node was removed (`strata-ctl cluster remove-node`); its own
    /// keys are no longer trusted and it issues nothing.
    removed: std::sync::atomic::AtomicBool,
    /// How long after expiry revocations and issuance records are kept.
    retention: Duration,
    /// Live capabilities minted for non-admins, per uid and lineage (issue and delegate).
    minted: mint_quota::MintQuota,
    /// Uids (besides admins) whose subscribers revocations wait for.
    verifier_uids: BTreeSet<u32>,
    /// What `sys.metrics` reports of identity's own work.
    metrics: metrics::IdentityMetrics,
}

impl Identity {
    /// Open (or create) identity's key and store, load the revocations, and publish
    /// `identity.pub`. Identity reads the time from `clock` only (the binary passes
    /// [`SystemClock`](strata_cap::SystemClock)).
    pub fn open(config: &IdentityConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Identity> {
        use anyhow::Context;
        let dir = config.state_dir.join("identity");
        let state = &config.state_dir;
        std::fs::create_dir_all(state)
            .with_context(|| format!("cannot create state directory {}", state.display()))?;
        // Identity's own directory holds the signing key and the store: its user only.
        store::private_dir(&dir)
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        let key_path = dir.join("signing.key");
        let (signer, origin) = SigningKey::load_or_create(&key_path)?;
        tracing::info!(kid = %signer.kid(TokenVersion::V2), ?origin, "signing key ready");
        let store = Arc::new(Store::open(&dir.join("identity.redb"))?);
        let issuance = issuance_log::IssuanceLog::start(Arc::clone(&store))
            .context("cannot start the issuance commit thread")?;
        let policy = match &config.policy {
            Some(p) if p.exists() => Policy::load(p)?,
            Some(p) => {
                tracing::warn!(path = %p.display(), "no issuance policy file: only admins may issue");
                Policy::default()
            }
            None => Policy::default(),
        };
        let revoked = RevocationSet::new();
        let records = store.revocations_since(0)?;
        let quota = revoke_quota::RevocationQuota::from_records(&records);
        revoked.extend(records.into_iter().filter_map(|r| {
            let cap = r.cap_id.parse::<CapId>().ok()?;
            Some((cap, r.expires.map(Timestamp::from_unix_seconds)))
        }));
        let seq = store.last_seq()?;
        let epoch = store.keys_epoch()?;
        let audit = Audit::open(&config.state_dir, "identity")?;
        let identity = Identity {
            node_id: config.node_id.clone(),
            own_uid: PeerCred::current_process().uid,
            key_path,
            pub_path: config.runtime_dir.join("identity.pub"),
            verifier: Verifier::new(
                Arc::new(TrustedKeys::new([])),
                Verifier::DEFAULT_CACHE_CAPACITY,
            ),
            signer: RwLock::new(Arc::new(signer)),
            revoked,
            store,
            issuance,
            policy,
            feed: feed::Feed::new(seq, epoch, Arc::clone(&clock)),
            clock,
            audit,
            quota: Mutex::new(quota),
            rotating: tokio::sync::Mutex::new(()),
            cluster: std::sync::OnceLock::new(),
            remote_keys: RwLock::new(Vec::new()),
            removed: std::sync::atomic::AtomicBool::new(false),
            retention: config.revocation_retention,
            minted: mint_quota::MintQuota::new(config.mint_limits),
            verifier_uids: config.verifier_uids.iter().copied().collect(),
            metrics: metrics::IdentityMetrics::default(),
        };
        identity.count_live_minted()?;
        identity.refresh_trusted_keys()?;
        identity.publish_public_key()?;
        tracing::info!(
            revocations = identity.revoked.len(),
            seq,
            "revocation list loaded"
        );
        Ok(identity)
    }

    fn signer(&self) -> Arc<SigningKey> {
        Arc::clone(&self.signer.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Root or identity's own uid: the one admin rule, [`Origin::is_admin`].
    fn is_admin(&self, peer: &PeerCred) -> bool {
        Origin::Local(*peer).is_admin(self.own_uid)
    }

    /// Whether revocations wait for `peer`'s feed subscribers: admins and the operator's
    /// `verifier_uids`.
    fn is_trusted_verifier(&self, peer: &PeerCred) -> bool {
        self.is_admin(peer) || self.verifier_uids.contains(&peer.uid)
    }

    /// The last second identity keeps the issuance record (and any revocation) of a
    /// capability expiring at `expires`: pruning drops it after.
    fn kept_until(&self, expires: i64) -> i64 {
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        expires.saturating_add(retention)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Verify a presented token: signature, key, time window, and revocation of it and
    /// every ancestor.
    fn check_token(&self, token: &str) -> Result<Arc<Claims>, IdentityError> {
        self.cluster_ready()?;
        let now = self.now();
        let claims = self.verifier.verify(token, now)?;
        strata_cap::check_current(&claims, now, self.clock.max_skew(), &self.revoked)
            .map_err(|d| IdentityError::Unauthenticated(d.reason().to_owned()))?;
        Ok(claims)
    }

    fn deny(
        &self,
        peer: &PeerCred,
        method: &str,
        reason: String,
        cap: Option<&CapId>,
    ) -> IdentityError {
        self.metrics.denied.inc();
        self.audit.record(
            "auth.denied",
            Some(peer),
            json!({"method": method, "reason": reason, "cap_id": cap.map(|c| c.to_string())}),
        );
        IdentityError::Denied(reason)
    }
}
